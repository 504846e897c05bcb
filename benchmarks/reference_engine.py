"""Physics steps per second of the reference JAX engine, side by side with upstream Jax2D.

One *step* is one engine step (``dt``) of one environment, so a call on a batch of ``B`` states
counts as ``B`` steps. For every env size, device and batch size this script:

1. loads the golden random-level initial states (``<golden>/random/<size>/seed_*.init.npz``),
   advances them ``--warm-steps`` engine steps with zero actions (so that contacts exist) and
   tiles them to the batch size;
2. draws fixed random actions: motors uniform in [-1, 1], then thrusters uniform in [0, 1];
3. compiles the batched step ahead of time (timed and reported separately), then times a plain
   Python loop of calls that feeds each output state back in, with ``block_until_ready`` at the
   end, for at least ``--min-seconds``; the median of ``--repeats`` such runs is reported;
4. when upstream ``jax2d`` is importable, does the same for ``jax2d.engine.PhysicsEngine.step``
   under ``jax.jit(jax.vmap(...))`` on the very same states and actions, and checks that one step
   of both engines from those states gives the same polygon positions.

Only numpy, jax and the torch-free modules of ``kinetix_torch`` (params, schema, reference_jax)
are imported, so it runs in a virtualenv that has upstream Jax2D but no torch::

    python benchmarks/reference_engine.py --sizes s m l --device cpu
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import gc
import importlib.metadata
import importlib.util
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from kinetix_torch.params import EnvParams, StaticEnvParams, static_params_for_size
from kinetix_torch.reference_jax.engine import param_values, step_batch
from kinetix_torch.schema import SIM_KEYS, flatten, nest

# Upstream Jax2D is optional, looked up only if importable: without it only our engine is timed.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import upstream_kit  # noqa: E402

upstream_kit.enable()  # on the GPU machine: the carried upstream kit
if importlib.util.find_spec("jax2d") is not None:
    upstream_engine = importlib.import_module("jax2d.engine")
    upstream_state = importlib.import_module("jax2d.sim_state")
    PhysicsEngine = upstream_engine.PhysicsEngine
    UPSTREAM_VERSION = importlib.metadata.version("jax2d")
else:
    upstream_state = PhysicsEngine = UPSTREAM_VERSION = None

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BATCH_SIZES = (1, 4, 16, 64, 256, 1024, 4096, 16384)
MOTOR_RANGE = (-1.0, 1.0)
THRUSTER_RANGE = (0.0, 1.0)


# --------------------------------------------------------------------------------------------- #
# Options
# --------------------------------------------------------------------------------------------- #


def default_golden() -> Path:
    """``$KINETIX_SHARED/golden``, else ``../shared/golden`` beside the repository."""
    return Path(os.environ.get("KINETIX_SHARED", REPO.parent / "shared")) / "golden"


@dataclass(frozen=True)
class Options:
    sizes: tuple[str, ...] = ("s", "m", "l")
    """Env sizes to benchmark (the S/M/L presets)."""
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    """Environments stepped together by one call."""
    device: str = "cpu"
    """``cpu``, ``cuda`` or ``all`` (CPU, plus CUDA when jax sees a GPU)."""
    golden: Path = dataclasses.field(default_factory=default_golden)
    """Folder of upstream's golden data (holds ``random/<size>/seed_*.init.npz``)."""
    csv: Path | None = None
    """CSV output; default ``benchmarks/results/reference_engine_<device>.csv``."""
    min_seconds: float = 1.0
    """Each timed run repeats calls until at least this long has elapsed."""
    repeats: int = 3
    """Timed runs per measurement; the median is reported."""
    warm_steps: int = 20
    """Zero-action engine steps applied to the golden states before timing, so contacts exist."""
    max_call_seconds: float = 20.0
    """Skip a batch size (and larger ones) when a single call of an engine takes longer than this."""
    seed: int = 0
    """Seed of the random actions."""
    tolerance: float = 1e-3
    """Largest allowed |ours - upstream| of polygon.position after one step."""
    upstream: bool = True
    """Also time upstream Jax2D when it is importable."""

    def csv_path(self) -> Path:
        return self.csv or REPO / "benchmarks" / "results" / f"reference_engine_{self.device}.csv"


def parse_args(argv=None) -> Options:
    defaults = Options()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", default=list(defaults.sizes), choices=["s", "m", "l"])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=list(defaults.batch_sizes))
    p.add_argument("--device", default=defaults.device, choices=["cpu", "cuda", "all"])
    p.add_argument("--golden", type=Path, default=defaults.golden)
    p.add_argument("--csv", type=Path, default=None)
    p.add_argument("--min-seconds", type=float, default=defaults.min_seconds)
    p.add_argument("--repeats", type=int, default=defaults.repeats)
    p.add_argument("--warm-steps", type=int, default=defaults.warm_steps)
    p.add_argument("--max-call-seconds", type=float, default=defaults.max_call_seconds)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--tolerance", type=float, default=defaults.tolerance)
    p.add_argument("--no-upstream", dest="upstream", action="store_false", help="time our engine only")
    a = p.parse_args(argv)
    return Options(
        sizes=tuple(a.sizes),
        batch_sizes=tuple(a.batch_sizes),
        device=a.device,
        golden=a.golden,
        csv=a.csv,
        min_seconds=a.min_seconds,
        repeats=a.repeats,
        warm_steps=a.warm_steps,
        max_call_seconds=a.max_call_seconds,
        seed=a.seed,
        tolerance=a.tolerance,
        upstream=a.upstream,
    )


def devices(choice: str) -> list[tuple[str, jax.Device]]:
    """The requested devices as ``(name, device)``; CUDA only when jax sees a GPU."""
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        gpus = []
    out = [("cpu", jax.devices("cpu")[0])] if choice in ("cpu", "all") else []
    if choice in ("cuda", "all"):
        if gpus:
            out.append(("cuda", gpus[0]))
        else:
            print("note: jax sees no GPU, CUDA skipped", flush=True)
    return out


# --------------------------------------------------------------------------------------------- #
# Inputs: warmed golden scenes, tiled, and random actions
# --------------------------------------------------------------------------------------------- #


def load_scenes(golden: Path, size: str) -> dict[str, np.ndarray]:
    """The physics fields of every golden random level of this size, stacked: ``(K, ...)``."""
    files = sorted((golden / "random" / size).glob("seed_*.init.npz"))
    if not files:
        raise SystemExit(f"no golden initial states in {golden / 'random' / size}")
    scenes = [np.load(f) for f in files]
    return {k: np.stack([s[k] for s in scenes]) for k in SIM_KEYS}


def warm_scenes(flat: dict, static: StaticEnvParams, steps: int) -> dict[str, np.ndarray]:
    """Advance every scene ``steps`` engine steps with zero actions (our engine, on CPU).

    Scenes are warmed before tiling: every copy of a scene would follow the same trajectory.
    """
    params = param_values(EnvParams())
    state = nest({k: jnp.asarray(v) for k, v in flat.items()})
    actions = jnp.zeros((len(flat["gravity"]), static.action_dim), jnp.float32)
    for _ in range(steps):
        state, _ = step_batch(state, actions, params, static)
    return {k: np.asarray(v) for k, v in flatten(state).items()}


def tile(flat: dict, batch: int) -> dict[str, np.ndarray]:
    """``batch`` states cycling through the scenes: scene ``i % K`` in row ``i``."""
    rows = np.arange(batch) % len(flat["gravity"])
    return {k: v[rows] for k, v in flat.items()}


def random_actions(static: StaticEnvParams, batch: int, seed: int) -> np.ndarray:
    """``(batch, J + T)``: motor actions in [-1, 1], then thruster actions in [0, 1]."""
    rng = np.random.default_rng(seed)
    motors = rng.uniform(*MOTOR_RANGE, size=(batch, static.num_joints))
    thrusters = rng.uniform(*THRUSTER_RANGE, size=(batch, static.num_thrusters))
    return np.concatenate([motors, thrusters], axis=1).astype(np.float32)


# --------------------------------------------------------------------------------------------- #
# The two engines behind one interface
# --------------------------------------------------------------------------------------------- #


@dataclass
class Engine:
    name: str
    convert: Callable[[dict], object]
    """Flat numpy state (on ``device``) -> the engine's state pytree."""
    compile: Callable[[object, jax.Array], Callable]
    """(state, actions) -> compiled ``step(state, actions) -> state``."""
    positions: Callable[[object], jax.Array]
    """The engine's state -> ``polygon.position``."""


def to_device(flat: dict, device: jax.Device) -> dict:
    return {k: jax.device_put(v, device) for k, v in flat.items()}


def ours(static: StaticEnvParams, device: jax.Device) -> Engine:
    params = jax.device_put(param_values(EnvParams()), device)

    def compile_step(state, actions):
        compiled = step_batch.lower(state, actions, params, static=static).compile()
        return lambda s, a: compiled(s, a, params)[0]

    return Engine(
        name="ours",
        convert=lambda flat: nest(to_device(flat, device)),
        compile=compile_step,
        positions=lambda state: state["polygon"]["position"],
    )


def upstream_static(static: StaticEnvParams):
    return upstream_state.StaticSimParams(
        num_polygons=static.num_polygons,
        num_circles=static.num_circles,
        num_joints=static.num_joints,
        num_thrusters=static.num_thrusters,
        max_polygon_vertices=static.max_polygon_vertices,
        num_solver_iterations=static.num_solver_iterations,
        solver_batch_size=static.solver_batch_size,
        do_warm_starting=static.do_warm_starting,
        num_static_fixated_polys=static.num_static_fixated_polys,
    )


def to_sim_state(flat: dict):
    """Flat dict of (batched) arrays -> upstream ``SimState``; dotted keys' leaves are the kwargs."""
    n = nest(flat)
    u = upstream_state
    return u.SimState(
        polygon=u.RigidBody(**n["polygon"]),
        circle=u.RigidBody(**n["circle"]),
        joint=u.Joint(**n["joint"]),
        thruster=u.Thruster(**n["thruster"]),
        collision_matrix=n["collision_matrix"],
        acc_rr_manifolds=u.CollisionManifold(**n["acc_rr_manifolds"]),
        acc_cr_manifolds=u.CollisionManifold(**n["acc_cr_manifolds"]),
        acc_cc_manifolds=u.CollisionManifold(**n["acc_cc_manifolds"]),
        gravity=n["gravity"],
    )


def upstream(static: StaticEnvParams, device: jax.Device) -> Engine:
    """Upstream Jax2D: one ``PhysicsEngine`` and one jitted step per size (it recompiles per instance)."""
    engine = PhysicsEngine(upstream_static(static))
    batched = jax.jit(jax.vmap(engine.step, in_axes=(0, None, 0)))
    params = upstream_state.SimParams()

    def compile_step(state, actions):
        compiled = batched.lower(state, params, actions).compile()
        return lambda s, a: compiled(s, params, a)[0]

    return Engine(
        name="upstream",
        convert=lambda flat: to_sim_state(to_device(flat, device)),
        compile=compile_step,
        positions=lambda state: state.polygon.position,
    )


# --------------------------------------------------------------------------------------------- #
# Timing
# --------------------------------------------------------------------------------------------- #


@dataclass
class Measurement:
    compile_s: float | None = None
    """Ahead-of-time lowering + compilation, seconds."""
    call_s: float | None = None
    """Median seconds per call (one engine step of the whole batch)."""
    steps_per_s: float | None = None
    """Median env-steps per second: batch / call_s."""
    calls: int = 0
    """Calls per timed run."""
    step: Callable | None = None
    """The compiled step, kept for the agreement check."""
    note: str = ""
    """Why the measurement is missing, if it is."""


def timed_run(step, state, actions, calls: int):
    """``calls`` chained calls, blocking once at the end. Returns (seconds, final state)."""
    start = time.perf_counter()
    for _ in range(calls):
        state = step(state, actions)
    jax.block_until_ready(state)
    return time.perf_counter() - start, state


def measure(engine: Engine, state, actions, batch: int, opts: Options) -> Measurement:
    start = time.perf_counter()
    step = engine.compile(state, actions)
    m = Measurement(compile_s=time.perf_counter() - start, step=step)

    first_s, state = timed_run(step, state, actions, 1)
    if first_s > opts.max_call_seconds:
        m.note = f"one call took {first_s:.1f} s > {opts.max_call_seconds:g} s"
        return m

    calls = max(1, int(np.ceil(opts.min_seconds / first_s)))
    durations = []
    while len(durations) < opts.repeats:
        seconds, state = timed_run(step, state, actions, calls)
        if seconds < opts.min_seconds:  # the first call misjudged the speed: run longer
            calls = max(calls + 1, int(np.ceil(calls * opts.min_seconds / seconds * 1.1)))
            continue
        durations.append(seconds / calls)
    m.calls = calls
    m.call_s = statistics.median(durations)
    m.steps_per_s = batch / m.call_s
    return m


# --------------------------------------------------------------------------------------------- #
# Driver
# --------------------------------------------------------------------------------------------- #


@dataclass
class Row:
    size: str
    device: str
    batch: int
    ours: Measurement
    upstream: Measurement | None
    max_position_diff: float | None


CSV_FIELDS = (
    "size",
    "device",
    "batch",
    "ours_steps_per_s",
    "upstream_steps_per_s",
    "ratio_ours_over_upstream",
    "ours_ms_per_call",
    "upstream_ms_per_call",
    "ours_calls_per_run",
    "upstream_calls_per_run",
    "ours_compile_s",
    "upstream_compile_s",
    "max_abs_position_diff",
    "note",
)


def ratio(row: Row) -> float | None:
    if row.upstream is None or not row.ours.steps_per_s or not row.upstream.steps_per_s:
        return None
    return row.ours.steps_per_s / row.upstream.steps_per_s


def csv_record(row: Row) -> dict:
    up = row.upstream or Measurement()
    ms = lambda m: m.call_s * 1e3 if m.call_s else None  # noqa: E731
    notes = [f"{name}: {m.note}" for name, m in (("ours", row.ours), ("upstream", up)) if m.note]
    return dict(
        size=row.size,
        device=row.device,
        batch=row.batch,
        ours_steps_per_s=row.ours.steps_per_s,
        upstream_steps_per_s=up.steps_per_s,
        ratio_ours_over_upstream=ratio(row),
        ours_ms_per_call=ms(row.ours),
        upstream_ms_per_call=ms(up),
        ours_calls_per_run=row.ours.calls or None,
        upstream_calls_per_run=up.calls or None,
        ours_compile_s=row.ours.compile_s,
        upstream_compile_s=up.compile_s,
        max_abs_position_diff=row.max_position_diff,
        note="; ".join(notes),
    )


def write_csv(rows: list[Row], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in csv_record(row).items()})


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[Row]) -> None:
    print(
        "| size | device | batch | ours steps/s | upstream steps/s | ours/upstream "
        "| ours compile s | upstream compile s | max abs dpos | note |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        r = csv_record(row)
        print(
            f"| {row.size} | {row.device} | {row.batch} | {fmt(r['ours_steps_per_s'], ',.0f')} "
            f"| {fmt(r['upstream_steps_per_s'], ',.0f')} | {fmt(r['ratio_ours_over_upstream'], '.2f')} "
            f"| {fmt(r['ours_compile_s'], '.1f')} | {fmt(r['upstream_compile_s'], '.1f')} "
            f"| {fmt(r['max_abs_position_diff'], '.1e')} | {r['note']} |"
        )


def max_position_diff(a: Engine, step_a, b: Engine, step_b, flat: dict, actions) -> float:
    """max |polygon.position| difference after one step of both engines from the same states."""
    pos_a = a.positions(step_a(a.convert(flat), actions))
    pos_b = b.positions(step_b(b.convert(flat), actions))
    return float(jnp.max(jnp.abs(pos_a - pos_b)))


def run_size(size: str, device_name: str, device: jax.Device, opts: Options, rows: list[Row]) -> list[str]:
    """Every batch size of one env size on one device; appends to ``rows``, returns failed checks."""
    static = static_params_for_size(size)
    t0 = time.perf_counter()
    scenes = warm_scenes(load_scenes(opts.golden, size), static, opts.warm_steps)
    print(f"[{size}/{device_name}] {len(scenes['gravity'])} scenes warmed in {time.perf_counter() - t0:.1f} s", flush=True)

    engines = [ours(static, device)]
    if opts.upstream and PhysicsEngine is not None:
        engines.append(upstream(static, device))
    too_slow = set()  # engines that hit --max-call-seconds: larger batches are skipped
    failures = []

    for batch in opts.batch_sizes:
        flat = tile(scenes, batch)
        actions = jax.device_put(random_actions(static, batch, opts.seed), device)
        results = {}
        for engine in engines:
            if engine.name in too_slow:
                results[engine.name] = Measurement(note="skipped: a smaller batch exceeded --max-call-seconds")
                continue
            try:
                results[engine.name] = measure(engine, engine.convert(flat), actions, batch, opts)
            except Exception as e:  # e.g. out of memory: record it and skip larger batches
                results[engine.name] = Measurement(note=f"error: {type(e).__name__}: {str(e)[:120]}")
            if results[engine.name].steps_per_s is None:
                too_slow.add(engine.name)

        diff = None
        if len(engines) == 2 and all(results[e.name].step is not None for e in engines):
            (a, b) = engines
            diff = max_position_diff(a, results[a.name].step, b, results[b.name].step, flat, actions)
            if not diff < opts.tolerance:
                failures.append(f"{size}/{device_name}/batch {batch}: max |dpos| {diff:.2e} >= {opts.tolerance:g}")
        # Free this batch's executables: XLA:CPU maps ~1000 memory regions per executable and jax's
        # caches keep them alive; dozens of them exhaust vm.max_map_count and crash LLVM.
        for m in results.values():
            m.step = None
        gc.collect()
        jax.clear_caches()
        row = Row(size, device_name, batch, results["ours"], results.get("upstream"), diff)
        rows.append(row)
        r = csv_record(row)
        print(
            f"[{size}/{device_name}] batch {batch:>6}: ours {fmt(r['ours_steps_per_s'], ',.0f')} steps/s "
            f"(compile {fmt(r['ours_compile_s'], '.1f')} s), upstream {fmt(r['upstream_steps_per_s'], ',.0f')} "
            f"steps/s (compile {fmt(r['upstream_compile_s'], '.1f')} s), ratio {fmt(r['ratio_ours_over_upstream'], '.2f')}, "
            f"max |dpos| {fmt(diff, '.1e')} {r['note']}",
            flush=True,
        )
        write_csv(rows, opts.csv_path())  # after every row, so partial results survive
    return failures


def main(argv=None) -> int:
    opts = parse_args(argv)
    print(
        f"{datetime.datetime.now().isoformat(timespec='seconds')}  jax {jax.__version__}  "
        f"backend {jax.default_backend()}  upstream jax2d "
        f"{UPSTREAM_VERSION if opts.upstream and UPSTREAM_VERSION else 'not timed'}",
        flush=True,
    )
    if opts.upstream and PhysicsEngine is None:
        print("note: jax2d is not importable, only our engine is timed", flush=True)
    rows: list[Row] = []
    failures = []
    for device_name, device in devices(opts.device):
        for size in opts.sizes:
            failures += run_size(size, device_name, device, opts, rows)
    print()
    print_table(rows)
    write_csv(rows, opts.csv_path())
    print(f"\nCSV: {opts.csv_path()}")
    if failures:
        print("ENGINES DISAGREE:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
