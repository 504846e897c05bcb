"""Env steps per second of KinetixEnv against upstream kinetix-env, per observation type and batch size.

One *env step* is one ``env.step`` of one environment (``frame_skip`` physics substeps, reward,
observation, auto-reset), so a call on ``B`` environments counts as ``B`` env steps. For every size,
observation type and batch size, in one process on one device:

* **ours**: ``KinetixEnv`` driven the way TorchRL collectors drive it (``step_and_maybe_reset`` with
  a fixed random action), resetting to the 32 golden random levels of the size as a level bank;
* **ours, random resets** (``--random-resets``): the same, resetting to fresh levels of
  ``kinetix_torch.generate.RandomLevelSampler`` (``random_over_bank``: its share of the bank's rate);
* **engine**: :func:`kinetix_torch.engine.step` alone on the same states and processed actions,
  which gives the env's overhead beyond the physics: ``1 - engine time / env time``;
* **upstream** (when ``kinetix`` is importable): ``jax.jit(jax.vmap(KinetixEnv.step))`` of
  kinetix-env with ``auto_reset`` and a reset function drawing from the same 32 levels (upstream
  has no blind observation in ``make_kinetix_env``).

Each figure is the median of ``--repeats`` timed runs of at least ``--min-seconds`` each, after three
warm-up calls (compilation is excluded); the runs of ours, engine and upstream alternate. Torch
runs ``--torch-threads`` intra-op threads (default 1: on a small CPU the JAX engine needs the cores).
Run it where upstream is installed, for example::

    /work/upstream_venv/bin/python benchmarks/env.py --sizes m --batch-sizes 1 16 256 1024
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np
import torch
from reference_engine import default_golden, to_sim_state

from kinetix_torch import engine, schema
from kinetix_torch.actions import process_actions
from kinetix_torch.env import KinetixEnv
from kinetix_torch.observations import OBSERVATION_TYPES
from kinetix_torch.params import EnvParams, static_params_for_size

# Upstream kinetix-env is optional, looked up only if importable.
if importlib.util.find_spec("kinetix") is not None:
    upstream_env = importlib.import_module("kinetix.environment.env")
    upstream_spaces = importlib.import_module("kinetix.environment.spaces")
    upstream_state = importlib.import_module("kinetix.environment.env_state")
else:
    upstream_env = upstream_spaces = upstream_state = None

REPO = Path(__file__).resolve().parents[1]
ENV_FIELDS = [f.key for f in schema.FIELDS if not f.sim]
WARMUP_CALLS = 3


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", default=["m"], choices=["s", "m", "l"])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 16, 256, 1024])
    p.add_argument("--observation-types", nargs="+", default=list(OBSERVATION_TYPES), choices=OBSERVATION_TYPES)
    p.add_argument("--action-type", default="multi_discrete", choices=["continuous", "discrete", "multi_discrete"])
    p.add_argument("--device", default="cpu", help="torch device of our env (cpu or cuda)")
    p.add_argument("--random-resets", action="store_true", help="also time resets to random levels (see above)")
    p.add_argument("--golden", type=Path, default=default_golden())
    p.add_argument("--min-seconds", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads (see above)")
    p.add_argument("--no-upstream", dest="upstream", action="store_false")
    p.add_argument("--csv", type=Path, default=None, help="default: benchmarks/results/env_<device>.csv")
    return p.parse_args(argv)


def golden_bank(golden: Path, size: str) -> dict[str, np.ndarray]:
    """Every field of the golden random levels of this size, stacked ``(K, ...)``."""
    files = sorted((golden / "random" / size).glob("seed_*.init.npz"))
    if not files:
        raise SystemExit(f"no golden initial states in {golden / 'random' / size}")
    levels = [np.load(f) for f in files]
    return {f.key: np.stack([lvl[f.key] for lvl in levels]) for f in schema.FIELDS}


def seconds_per_call(timed: dict, min_seconds: float, repeats: int) -> dict[str, float]:
    """Median seconds per call of each ``name: (call, sync)``: after ``WARMUP_CALLS`` untimed calls
    (compilation, first-use allocations), ``repeats`` rounds that time each callable in turn for at
    least ``min_seconds``. Interleaving makes drifts of the machine's load hit all of them alike."""
    for call, sync in timed.values():
        for _ in range(WARMUP_CALLS):
            call()
        sync()
    counts = dict.fromkeys(timed, 1)
    runs = {name: [] for name in timed}
    while min(len(r) for r in runs.values()) < repeats:
        for name, (call, sync) in timed.items():
            start = time.perf_counter()
            for _ in range(counts[name]):
                call()
            sync()
            elapsed = time.perf_counter() - start
            if elapsed < min_seconds:
                counts[name] = max(counts[name] + 1, int(counts[name] * min_seconds / max(elapsed, 1e-9) * 1.1))
            else:
                runs[name].append(elapsed / counts[name])
    return {name: statistics.median(r) for name, r in runs.items()}


def torch_sync(device: torch.device):
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def env_stepper(env: KinetixEnv):
    """``step()`` as TorchRL collectors drive the env: ``step_and_maybe_reset`` with a fixed random action."""
    td = env.reset()
    action = env.action_spec.rand()

    def step():
        nonlocal td
        td["action"] = action
        _, td = env.step_and_maybe_reset(td)

    return step, action


def ours(args, static, params, bank, observation_type: str, batch: int) -> dict:
    """``(call, sync)`` of our env step from the level bank, of the engine step alone on the same
    states and, with ``--random-resets``, of the env resetting to random levels."""
    device = torch.device(args.device)
    options = dict(num_envs=batch, observation_type=observation_type, action_type=args.action_type,
                   static_env_params=static, env_params=params, device=device, check_action_range=False, seed=0)
    env = KinetixEnv(bank, **options)
    env_step, action = env_stepper(env)
    state = env.state
    processed = process_actions(action, state, static, args.action_type)

    def engine_step():
        nonlocal state
        state, _ = engine.step(state, processed, params, static)

    sync = torch_sync(device)
    timed = {"env": (env_step, sync), "engine": (engine_step, sync)}
    if args.random_resets:
        from kinetix_torch.generate import RandomLevelSampler

        sampler = RandomLevelSampler(static, params, device=device, seed=0)
        timed["env_random"] = (env_stepper(KinetixEnv(sampler=sampler, **options))[0], sync)
    return timed


def upstream(args, static, params, flat_bank, observation_type: str, batch: int) -> dict:
    """``(call, sync)`` of upstream's jitted, vmapped ``KinetixEnv.step`` with auto-reset from the bank."""
    bank = to_sim_state({k: jax.numpy.asarray(flat_bank[k]) for k in schema.SIM_KEYS})
    bank = upstream_state.EnvState(**bank.__dict__, **{k: jax.numpy.asarray(flat_bank[k]) for k in ENV_FIELDS})
    count = len(flat_bank["timestep"])

    def reset_fn(rng):
        pick = jax.random.randint(rng, (), 0, count)
        return jax.tree.map(lambda x: x[pick], bank)

    env = upstream_env.make_kinetix_env(
        upstream_spaces.ActionType.from_string(args.action_type),
        upstream_spaces.ObservationType.from_string(observation_type),
        reset_fn,
        upstream_state.EnvParams(**params.to_dict()),
        upstream_state.StaticEnvParams(**{**static.to_dict(), "screen_dim": tuple(static.screen_dim)}),
    )
    up_params = upstream_state.EnvParams(**params.to_dict())
    keys = jax.random.split(jax.random.PRNGKey(0), batch)
    _, state = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(keys, up_params)
    actions = jax.vmap(env.action_type.random_action)(keys)
    step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
    box = {"state": state, "out": None}

    def call():
        box["out"] = step(keys, box["state"], actions, up_params)
        box["state"] = box["out"][1]

    return {"upstream": (call, lambda: jax.block_until_ready(box["out"]))}


CSV_FIELDS = (
    "size",
    "device",
    "observation_type",
    "action_type",
    "batch",
    "ours_env_steps_per_s",
    "engine_steps_per_s",
    "env_overhead",
    "random_reset_env_steps_per_s",
    "random_over_bank",
    "upstream_env_steps_per_s",
    "ours_over_upstream",
    "note",
)


def describe(row: dict) -> str:
    shown = {k: v for k, v in row.items() if k not in ("device", "action_type") and v != ""}
    return ", ".join(f"{k} {v:,.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items())


def main(argv=None) -> int:
    args = parse_args(argv)
    path = args.csv or REPO / "benchmarks" / "results" / f"env_{args.device}.csv"
    torch.set_num_threads(args.torch_threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    compare = args.upstream and upstream_env is not None
    print(
        f"{datetime.datetime.now().isoformat(timespec='seconds')}  torch {torch.__version__}  device {args.device}  "
        f"torch threads {args.torch_threads}  upstream {'kinetix-env' if compare else 'not timed'}",
        flush=True,
    )
    rows = []
    for size in args.sizes:
        static = static_params_for_size(size)
        params = EnvParams(dense_reward_scale=0.2)
        flat = golden_bank(args.golden, size)
        bank = schema.to_tensordict(flat, (len(flat["timestep"]),), device=args.device)
        for observation_type in args.observation_types:
            for batch in args.batch_sizes:
                row = dict(size=size, device=args.device, observation_type=observation_type)
                row.update(action_type=args.action_type, batch=batch, note="")
                timed = ours(args, static, params, bank, observation_type, batch)
                if compare and observation_type != "blind":
                    timed.update(upstream(args, static, params, flat, observation_type, batch))
                elif compare:
                    row["note"] = "upstream make_kinetix_env has no blind observation"
                seconds = seconds_per_call(timed, args.min_seconds, args.repeats)
                env_s, engine_s = seconds["env"], seconds["engine"]
                row.update(ours_env_steps_per_s=batch / env_s, engine_steps_per_s=batch / engine_s)
                row["env_overhead"] = 1 - engine_s / env_s
                if "env_random" in seconds:
                    random_s = seconds["env_random"]
                    row.update(random_reset_env_steps_per_s=batch / random_s, random_over_bank=env_s / random_s)
                if "upstream" in seconds:
                    upstream_s = seconds["upstream"]
                    row.update(upstream_env_steps_per_s=batch / upstream_s, ours_over_upstream=upstream_s / env_s)
                rows.append(row)
                print(describe(row), flush=True)
                with open(path, "w", newline="") as f:  # after every row, so partial results survive
                    writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
                    writer.writeheader()
                    writer.writerows([{k: r.get(k, "") for k in CSV_FIELDS} for r in rows])
    print(f"CSV: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
