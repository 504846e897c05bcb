"""Random levels per second: our batched torch sampler, with and without the no-op filter, against
batch size, its cost relative to an env step, and upstream Kinetix's sampler when importable.

For each size and batch size B (after one untimed warm-up call of the same shape, so compile
time is excluded), the median wall time of ``--repeats`` calls of:

* ``sample_levels(B)``: our sampler on the CPU (torch threads: ``--threads``);
* ``RandomLevelSampler(noop_filter=True)(B)``: 2B candidates, 64 no-op env steps, draw B
  (``--filter-batch-sizes``; slow on the CPU reference engine);
* one env step (``kinetix_torch.engine.step``, frame skip 2) of B levels with no-op actions: the
  share of a step that resetting every env costs is ``sample / step``, and at a reset rate r per
  env step (episodes of 1/r steps) it is ``r x sample / step``;
* upstream's ``sample_kinetix_level`` under ``jax.jit(jax.vmap(...))``, when ``kinetix`` is
  importable (run this script with /work/upstream_venv/bin/python for that).

    python benchmarks/levels.py --sizes s m l --batch-sizes 16 64 256 1024 --csv benchmarks/results/levels_cpu.csv
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib
import importlib.util
import os
import platform
import statistics
import time

import torch

from kinetix_torch import engine
from kinetix_torch.actions import noop_actions, process_actions
from kinetix_torch.generate import RandomLevelSampler, UEDParams, sample_levels
from kinetix_torch.params import EnvParams, static_params_for_size

ENV_PARAMS = EnvParams(dense_reward_scale=0.2)
RESET_RATE = 1 / 64
COLUMNS = ("size", "batch", "ours_levels_per_s", "filtered_levels_per_s", "env_step_ms", "reset_all_share",
           "share_at_reset_rate", "upstream_levels_per_s", "ours_over_upstream")


def timed(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def upstream_sampler(size: str, batch: int):
    """A zero-argument callable timing upstream's sampler on ``batch`` keys, or None."""
    if importlib.util.find_spec("kinetix") is None:
        return None
    jax = importlib.import_module("jax")
    distributions = importlib.import_module("kinetix.environment.ued.distributions")
    env_state = importlib.import_module("kinetix.environment.env_state")
    utils = importlib.import_module("kinetix.environment.utils")
    ued_state = importlib.import_module("kinetix.environment.ued.ued_state")
    engine_module = importlib.import_module("jax2d.engine")
    static = utils.static_env_params_from_size(size)
    physics = engine_module.PhysicsEngine(static)
    params = env_state.EnvParams(dense_reward_scale=0.2)
    ued = ued_state.UEDParams()
    sample = jax.jit(jax.vmap(lambda key: distributions.sample_kinetix_level(key, physics, params, static, ued)))
    keys = jax.random.split(jax.random.PRNGKey(0), batch)
    return lambda: jax.block_until_ready(sample(keys))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["s", "m", "l"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[16, 64, 256, 1024])
    parser.add_argument("--filter-batch-sizes", nargs="*", type=int, default=[16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--csv", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = open(args.csv, "w", newline="") if args.csv else None
    writer = csv.DictWriter(out, COLUMNS) if out else None
    if writer:
        writer.writeheader()
    now = datetime.datetime.now(datetime.timezone.utc)
    has_upstream = importlib.util.find_spec("kinetix") is not None
    print(f"# {now:%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{args.threads} thread(s), upstream importable: {has_upstream}")
    print("size  batch  ours lv/s  filtered lv/s  step ms  reset-all share  share@1/64  upstream lv/s  ours/upstream")
    for size in args.sizes:
        static = static_params_for_size(size)
        for batch in args.batch_sizes:
            generator = torch.Generator().manual_seed(0)
            ours = timed(lambda: sample_levels(batch, static, UEDParams(), generator, ENV_PARAMS), args.repeats)
            levels = sample_levels(batch, static, UEDParams(), generator, ENV_PARAMS)
            actions = process_actions(noop_actions(batch, static, "multi_discrete"), levels, static, "multi_discrete")
            step = timed(lambda: engine.step(levels, actions, ENV_PARAMS, static), args.repeats)
            filtered = None
            if batch in args.filter_batch_sizes:
                sampler = RandomLevelSampler(static, ENV_PARAMS, device="cpu", seed=0, noop_filter=True)
                filtered = timed(lambda: sampler(batch), 1)
            upstream_call = upstream_sampler(size, batch)
            upstream = timed(upstream_call, args.repeats) if upstream_call else None
            row = {
                "size": size, "batch": batch, "ours_levels_per_s": batch / ours,
                "filtered_levels_per_s": batch / filtered if filtered else None,
                "env_step_ms": step * 1e3,
                "reset_all_share": ours / step,
                "share_at_reset_rate": RESET_RATE * ours / step,
                "upstream_levels_per_s": batch / upstream if upstream else None,
                "ours_over_upstream": upstream / ours if upstream else None,
            }
            if writer:  # row by row, so an interrupted run keeps what it measured
                writer.writerow(row)
                out.flush()
            fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
            print(f"{size:4}  {batch:5}  {row['ours_levels_per_s']:9.0f}  {fmt(row['filtered_levels_per_s'], '13.1f')}  "
                  f"{row['env_step_ms']:7.1f}  {row['reset_all_share']:15.2f}  {row['share_at_reset_rate']:10.3f}  "
                  f"{fmt(row['upstream_levels_per_s'], '13.0f')}  {fmt(row['ours_over_upstream'], '13.2f')}", flush=True)
    if out:
        out.close()


if __name__ == "__main__":
    main()
