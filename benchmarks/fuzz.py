"""Fuzz the env: random levels, random actions, auto-reset; count NaN terminations and exceptions.

For every size and every action type, a ``KinetixEnv`` of ``--batch`` environments starts each
episode on a fresh level of :class:`kinetix_torch.generate.RandomLevelSampler` and is driven by
uniformly random actions from its action spec, resetting finished episodes with ``_reset`` masks as
TorchRL's ``step_and_maybe_reset`` does. ``--steps`` env steps in all are split evenly over
sizes x action types; one env step is one ``env.step`` of one environment.

Counted per (size, action type): env steps, episodes ended by the goal, by a red shape, by NaN
(a NaN anywhere in the state ends the episode as terminated: those are told apart by reading the
state after the step, before the reset) and by the time limit; exceptions (the env is reset after
one and the run goes on); and checks that must stay at zero: NaN states the env did not terminate,
non-finite rewards or observations. The state and action of each NaN step are saved (``torch.save``)
so the step can be replayed.

When upstream kinetix-env is importable, both envs also run ``--compare-steps`` env steps per size
and action type on one shared bank of ``--compare-levels`` random levels (same seed), and their NaN
terminations per million env steps are compared. Upstream's step is ``step_env`` (no auto-reset),
so NaN is read from its state as here, then finished episodes restart from the bank.

Writes ``<out>.csv`` (one row per run) and ``<out>.json`` (options, machine, rows, exceptions)::

    .venv/bin/python benchmarks/fuzz.py --steps 100000 --sizes s m l --batch 256
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import importlib.util
import io
import json
import os
import platform
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kinetix_torch import schema
from kinetix_torch.actions import ACTION_TYPES
from kinetix_torch.atomic import atomic_write, atomic_write_text
from kinetix_torch.commands.args import parse_dataclass
from kinetix_torch.env import KinetixEnv
from kinetix_torch.env import _has_nan as state_has_nan  # the env's own test: NaN means what ends an episode
from kinetix_torch.generate import RandomLevelSampler, sample_levels
from kinetix_torch.observations import OBSERVATION_TYPES
from kinetix_torch.params import EnvParams, StaticEnvParams, static_params_for_size

sys.path.insert(0, str(Path(__file__).resolve().parent))
import upstream_kit  # noqa: E402

upstream_kit.enable()  # on the GPU machine: the carried upstream kit
# Upstream kinetix-env is optional, looked up only if importable (as benchmarks/env.py does).
if importlib.util.find_spec("kinetix") is not None:
    import jax
    import jax.numpy as jnp

    from reference_engine import to_sim_state  # noqa: E402

    upstream_env = importlib.import_module("kinetix.environment.env")
    upstream_spaces = importlib.import_module("kinetix.environment.spaces")
    upstream_state = importlib.import_module("kinetix.environment.env_state")
else:
    upstream_env = upstream_spaces = upstream_state = None

REPO = Path(__file__).resolve().parents[1]
MAX_EXCEPTIONS_KEPT = 20
"""Tracebacks kept in the JSON per run (all are counted)."""
MAX_EXCEPTIONS = 1000
"""A run stops after this many exceptions."""


@dataclass
class Options:
    """Fuzz the Kinetix env with random levels and random actions (see the module docstring)."""

    steps: int = 100_000
    """env steps in all, split evenly over sizes x action types (each run rounded up to whole batches)"""
    sizes: list[str] = field(default_factory=lambda: ["s", "m", "l"])
    """env sizes to fuzz (s, m, l)"""
    action_types: list[str] = field(default_factory=lambda: list(ACTION_TYPES))
    """action types to fuzz"""
    batch: int = 256
    """environments stepped together"""
    seed: int = 0
    """seed of the levels, the env's level draws and the random actions"""
    observation_type: str = "symbolic_flat"
    """observation computed at every step"""
    device: str = "cpu"
    """torch device of the env"""
    compare_levels: int = 256
    """upstream comparison: random levels in the shared bank"""
    compare_steps: int = 100_000
    """upstream comparison: env steps per size and action type for each env (0 turns it off)"""
    torch_threads: int = 1
    """torch intra-op threads"""
    out: Path | None = None
    """output path without suffix (default: benchmarks/results/fuzz_<device>)"""


@dataclass
class Counts:
    """What one run saw."""

    source: str
    size: str
    action_type: str
    levels: str
    first_batch: int = 0
    """env steps of the first batch step, which JAX compiles: left out of the rate"""
    env_steps: int = 0
    first_step_seconds: float = 0.0
    seconds: float = 0.0
    """the other steps"""
    goal: int = 0
    red: int = 0
    nan: int = 0
    truncated: int = 0
    exceptions: int = 0
    nan_not_terminated: int = 0
    nonfinite_reward_steps: int = 0
    nonfinite_observation_steps: int = 0
    exception_traces: list[str] = field(default_factory=list)
    nan_cases: list[str] = field(default_factory=list)

    @property
    def nan_per_million(self) -> float:
        return 1e6 * self.nan / max(self.env_steps, 1)

    @property
    def steps_per_second(self) -> float:
        return (self.env_steps - self.first_batch) / max(self.seconds, 1e-9)

    def step_done(self, batch: int, start: float) -> float:
        """Count a batch step that started at ``start``; returns the time now."""
        now = time.perf_counter()
        if self.env_steps == 0:
            self.first_batch, self.first_step_seconds = batch, now - start
        else:
            self.seconds += now - start
        self.env_steps += batch
        return now

    def running(self, steps: int) -> bool:
        return self.env_steps < steps and self.exceptions < MAX_EXCEPTIONS

    def record_exception(self) -> None:
        self.exceptions += 1
        if len(self.exception_traces) < MAX_EXCEPTIONS_KEPT:
            self.exception_traces.append(traceback.format_exc())


def nonfinite(values) -> torch.Tensor:
    """``(N,)``: a non-finite entry in a tensor or TensorDict of float tensors (batch leading)."""
    tensors = [values] if isinstance(values, torch.Tensor) else values.values(True, True)
    floats = [v.reshape(v.shape[0], -1) for v in tensors if v.is_floating_point()]
    return ~torch.cat(floats, dim=1).isfinite().all(-1)


def save_nan_case(path: Path, before, action: torch.Tensor, row: int, meta: dict) -> None:
    """The state before a NaN step and its action, for one environment (``torch.load`` to replay)."""
    case = {"state": before[row : row + 1].cpu().to_dict(), "action": action[row : row + 1].cpu(), **meta}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(case, tmp))


def fuzz_ours(env: KinetixEnv, counts: Counts, steps: int, nan_dir: Path, seed: int) -> Counts:
    """Drive ``env`` with random actions for ``steps`` env steps, resetting finished episodes."""
    torch.manual_seed(seed)  # the action spec draws from torch's global generator
    td = env.reset()
    start = time.perf_counter()
    while counts.running(steps):
        td["action"] = env.action_spec.rand()
        before = env.state.clone()
        try:
            td = env.step(td)
        except Exception:
            counts.record_exception()
            td = env.reset()
            start = time.perf_counter()
            continue
        out = td["next"]
        terminated, truncated = out["terminated"].reshape(-1), out["truncated"].reshape(-1)
        nan = state_has_nan(env.state)
        goal = out["goal_reached"].reshape(-1) & terminated & ~nan
        counts.goal += int(goal.sum())
        counts.red += int((terminated & ~goal & ~nan).sum())
        counts.nan += int((nan & terminated).sum())
        counts.nan_not_terminated += int((nan & ~terminated).sum())
        counts.truncated += int(truncated.sum())
        counts.nonfinite_reward_steps += int(nonfinite(out["reward"]).sum())
        counts.nonfinite_observation_steps += int(nonfinite(out["observation"]).sum())
        for row in nan.nonzero().flatten().tolist():
            path = nan_dir / f"{counts.size}_{counts.action_type}_step{counts.env_steps}_env{row}.pt"
            meta = {"size": counts.size, "action_type": counts.action_type, "seed": seed}
            save_nan_case(path, before, td["action"], row, meta)
            counts.nan_cases.append(str(path.relative_to(REPO) if path.is_relative_to(REPO) else path))
        try:
            td = env.maybe_reset(env.step_mdp(td))
        except Exception:
            counts.record_exception()
            td = env.reset()
        start = counts.step_done(env.num_envs, start)
    return counts


def fuzz_upstream(bank: dict, static: StaticEnvParams, params: EnvParams, opts: Options, counts: Counts,
                  steps: int, seed: int) -> Counts:
    """Upstream kinetix-env on the same bank: ``step_env``, NaN read from the state, then finished
    episodes restart from a uniformly drawn bank level."""
    env_fields = [f.key for f in schema.FIELDS if not f.sim]
    sim = to_sim_state({k: jnp.asarray(bank[k]) for k in schema.SIM_KEYS})
    levels = upstream_state.EnvState(**sim.__dict__, **{k: jnp.asarray(bank[k]) for k in env_fields})
    count = len(bank["timestep"])
    up_params = upstream_state.EnvParams(**params.to_dict())
    up_static = upstream_state.StaticEnvParams(**{**static.to_dict(), "screen_dim": tuple(static.screen_dim)})

    def draw_level(key):
        return jax.tree.map(lambda x: x[jax.random.randint(key, (), 0, count)], levels)

    env = upstream_env.make_kinetix_env(
        upstream_spaces.ActionType.from_string(counts.action_type),
        upstream_spaces.ObservationType.from_string(opts.observation_type),
        draw_level,
        up_params,
        up_static,
    )

    def one_step(key, state):
        action_key, step_key, reset_key = jax.random.split(key, 3)
        action = env.action_type.random_action(action_key)
        _, after, _, done, _ = env.step_env(step_key, state, action, up_params)
        floats = [jnp.isnan(x).any() for x in jax.tree.leaves(after) if jnp.issubdtype(x.dtype, jnp.floating)]
        nan = jnp.any(jnp.stack(floats))
        fresh = draw_level(reset_key)
        return jax.tree.map(lambda a, b: jnp.where(done, a, b), fresh, after), (done, nan)

    step = jax.jit(jax.vmap(one_step))
    key = jax.random.PRNGKey(seed)
    state = jax.vmap(draw_level)(jax.random.split(key, opts.batch))
    start = time.perf_counter()
    while counts.running(steps):
        key, sub = jax.random.split(key)
        try:
            state, (done, nan) = step(jax.random.split(sub, opts.batch), state)
            done, nan = jax.device_get((done, nan))
        except Exception:
            counts.record_exception()
            start = time.perf_counter()
            continue
        counts.nan += int((done & nan).sum())
        counts.nan_not_terminated += int((nan & ~done).sum())
        start = counts.step_done(opts.batch, start)
    return counts


def make_env(static: StaticEnvParams, params: EnvParams, opts: Options, action_type: str, seed: int, **source):
    return KinetixEnv(num_envs=opts.batch, observation_type=opts.observation_type, action_type=action_type,
                      static_env_params=static, env_params=params, device=opts.device, seed=seed, **source)


CSV_FIELDS = ("source", "size", "action_type", "levels", "env_steps", "first_step_seconds", "seconds",
              "steps_per_second", "goal", "red",
              "nan", "nan_per_million", "truncated", "exceptions", "nan_not_terminated", "nonfinite_reward_steps",
              "nonfinite_observation_steps")


def row_of(counts: Counts) -> dict:
    values = dataclasses.asdict(counts) | {"steps_per_second": counts.steps_per_second,
                                           "nan_per_million": counts.nan_per_million}
    return {k: values[k] for k in CSV_FIELDS}


def describe(counts: Counts) -> str:
    return (f"{counts.source:>8s} {counts.size} {counts.action_type:14s} {counts.env_steps:>11,d} steps "
            f"{counts.steps_per_second:>9,.0f}/s  goal {counts.goal} red {counts.red} nan {counts.nan} "
            f"({counts.nan_per_million:.2f}/M) truncated {counts.truncated} exceptions {counts.exceptions} "
            f"nan-not-terminated {counts.nan_not_terminated} nonfinite reward/obs "
            f"{counts.nonfinite_reward_steps}/{counts.nonfinite_observation_steps}")


def write_results(out: Path, opts: Options, runs: list[Counts], started: str) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(row_of(c) for c in runs)
    atomic_write_text(out.with_suffix(".csv"), buffer.getvalue())
    report = {
        "started": started,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(opts).items()},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
        "upstream_importable": upstream_env is not None,
        "runs": [row_of(c) | {"exception_traces": c.exception_traces, "nan_cases": c.nan_cases} for c in runs],
    }
    atomic_write_text(out.with_suffix(".json"), json.dumps(report, indent=1) + "\n")


def check_options(opts: Options) -> None:
    for name in ("steps", "batch", "compare_levels", "torch_threads"):
        if getattr(opts, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')}: expected a positive int, got {getattr(opts, name)}")
    if opts.compare_steps < 0:
        raise SystemExit(f"--compare-steps: expected >= 0, got {opts.compare_steps}")
    for name, values, allowed in (("sizes", opts.sizes, ("s", "m", "l")), ("action-types", opts.action_types,
                                                                            ACTION_TYPES)):
        unknown = sorted(set(values) - set(allowed))
        if unknown or not values:
            raise SystemExit(f"--{name}: unknown {unknown or 'empty list'}; expected some of {list(allowed)}")
    if opts.observation_type not in OBSERVATION_TYPES:
        raise SystemExit(f"--observation-type: expected one of {list(OBSERVATION_TYPES)}")


def main(argv=None) -> int:
    opts = parse_dataclass(Options, argv, prog="benchmarks/fuzz.py")
    check_options(opts)
    torch.set_num_threads(opts.torch_threads)
    out = opts.out or REPO / "benchmarks" / "results" / f"fuzz_{opts.device}"
    nan_dir = out.parent / f"{out.name}_nan_cases"
    out.parent.mkdir(parents=True, exist_ok=True)
    compare = upstream_env is not None and opts.compare_steps > 0
    started = datetime.datetime.now().isoformat(timespec="seconds")
    print(f"{started}  torch {torch.__version__}  device {opts.device}  batch {opts.batch}  seed {opts.seed}  "
          f"upstream {'compared' if compare else 'not importable' if upstream_env is None else 'off'}", flush=True)
    params = EnvParams(dense_reward_scale=0.2)
    per_run = -(-opts.steps // (len(opts.sizes) * len(opts.action_types)))
    runs: list[Counts] = []
    for size in opts.sizes:
        static = static_params_for_size(size)
        for action_type in opts.action_types:
            sampler = RandomLevelSampler(static, params, device=opts.device, seed=opts.seed)
            env = make_env(static, params, opts, action_type, opts.seed, sampler=sampler)
            counts = Counts("ours", size, action_type, "random")
            runs.append(fuzz_ours(env, counts, per_run, nan_dir, opts.seed))
            print(describe(runs[-1]), flush=True)
            write_results(out, opts, runs, started)  # after every run, so partial results survive
            if not compare:
                continue
            generator = torch.Generator(opts.device).manual_seed(opts.seed)
            bank = sample_levels(opts.compare_levels, static, generator=generator, env_params=params)
            label = f"bank of {opts.compare_levels}"
            env = make_env(static, params, opts, action_type, opts.seed, levels=bank)
            runs.append(fuzz_ours(env, Counts("ours", size, action_type, label), opts.compare_steps, nan_dir,
                                  opts.seed))
            flat = schema.tensordict_to_numpy(bank)
            runs.append(fuzz_upstream(flat, static, params, opts, Counts("upstream", size, action_type, label),
                                      opts.compare_steps, opts.seed))
            print(describe(runs[-2]) + "\n" + describe(runs[-1]), flush=True)
            write_results(out, opts, runs, started)
    total = sum(c.env_steps for c in runs if c.levels == "random")
    nans = sum(c.nan for c in runs if c.levels == "random")
    print(f"random levels: {total:,d} env steps, {nans} NaN terminations ({1e6 * nans / max(total, 1):.3f} per "
          f"million), {sum(c.exceptions for c in runs)} exceptions\nCSV: {out.with_suffix('.csv')}  "
          f"JSON: {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
