"""Physics steps per second: the fused Triton kernel vs the JAX reference (and upstream Jax2D).

One *physics step* is one substep (``dt``) of one environment. For each size (S, M, L) and batch
size, on one device, in one run:

* ``triton``: the fused kernel on the state kept in its packed layout, ``frame_skip`` substeps per
  launch (how an env steps it), timed with CUDA events over repeated launches;
* ``triton_td``: the same through :func:`kinetix_torch.engine.step` on a TensorDict (includes
  packing and unpacking);
* ``reference``: ``reference_jax.engine.step_batch`` (one substep per call), on the same device when
  JAX sees a GPU, else on the CPU (the ``reference_device`` column says which);
* ``upstream``: upstream Jax2D's step the same way, when it is importable.

States are the golden random levels advanced a few steps (so contacts exist), tiled to the batch;
actions are fixed random motor/thruster values (the helpers of ``benchmarks/reference_engine.py``).
The *floor* columns put the time in perspective: the least memory traffic of a step (the packed
state read and written once per launch) and an analytic count of its float operations, over the
device's bandwidth and FP32 rate (measured by ``gpu_info.py`` with ``--ceilings``, else the
datasheet's). Writes a CSV row by row (``--plot``: a PNG with matplotlib) and prints ratios.

    python benchmarks/engine.py                       # CUDA: everything; CPU-only: reference only
    python benchmarks/engine.py --sizes s --batch-sizes 1 256 4096
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_engine as bench  # noqa: E402  (the shared golden-scene and timing helpers)

from kinetix_torch import engine, schema  # noqa: E402
from kinetix_torch.kernels import step as kernels  # noqa: E402
from kinetix_torch.kernels.layout import layout_for  # noqa: E402
from kinetix_torch.kernels.packed import PackedState  # noqa: E402
from kinetix_torch.params import EnvParams, StaticEnvParams, static_params_for_size  # noqa: E402

DEFAULT_BATCHES = (1, 16, 256, 1024, 4096, 16384, 65536)
PEAKS = {"H100": (3.35e12, 67e12), "H200": (4.8e12, 67e12)}
"""Device name fragment -> (HBM bytes/s, FP32 non-tensor FLOP/s), from NVIDIA's SXM datasheets."""


@dataclass
class Row:
    size: str
    batch: int
    device: str
    reference_device: str
    triton: float | None
    triton_td: float | None
    reference: float | None
    upstream: float | None
    floor_bytes_per_step: float
    floor_flops_per_step: float
    max_position_diff: float | None


def flops_per_step(static: StaticEnvParams) -> float:
    """Approximate FP32 operations of one physics step, counted from the kernel's stages:
    polygon pairs ~400 (two separating-axis tests and clipping), circle-polygon ~160,
    circle-circle ~30 per pair; per solver iteration ~90 per contact point and ~130 per joint;
    motors, thrusters, warm start, integration and contact info ~60 per body or joint."""
    layout = layout_for(static)
    rr, cr, cc = layout.counts["rr"] // 2, layout.counts["cr"], layout.counts["cc"]
    manifolds = 400 * rr + 160 * cr + 30 * cc
    solver = static.num_solver_iterations * (90 * (2 * rr + cr + cc) + 130 * static.num_joints)
    return manifolds + solver + 60 * (static.num_shapes + 2 * static.num_joints + static.num_thrusters + rr + cr + cc)


def bytes_per_step(static: StaticEnvParams) -> float:
    """Least DRAM traffic of one physics step: the packed state in and out once per launch."""
    return 2 * 4 * layout_for(static).state_rows / static.frame_skip


def time_cuda(fn, min_seconds: float, repeats: int) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` runs of at least ``min_seconds``."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    calls, durations = 1, []
    while len(durations) < repeats:
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1e3
        if seconds < min_seconds:
            calls = max(calls + 1, int(calls * min_seconds / max(seconds, 1e-6) * 1.1))
            continue
        durations.append(seconds / calls)
    return statistics.median(durations)


def packed_step_seconds(state, actions, params, static: StaticEnvParams, min_seconds: float, repeats: int) -> float:
    """Median seconds of one env step on the state kept packed, as an env on the Triton backend
    holds it (:class:`~kinetix_torch.kernels.packed.PackedState`: action copy, one launch of
    ``frame_skip`` substeps, flag refresh), under the current launch configuration."""
    batch = state.batch_size[0]
    packed = PackedState(static, batch, actions.device, kernels.current_launch_config(static, False), False)
    packed.load(state)
    return time_cuda(lambda: packed.step(actions, params), min_seconds, repeats)


def triton_rates(flat: dict, actions: np.ndarray, static: StaticEnvParams, opts) -> tuple[float, float, np.ndarray]:
    """Physics steps/s of the packed kernel and of ``engine.step``; positions after one step."""
    batch = len(actions)
    params = EnvParams()
    state = schema.to_tensordict(flat, (batch,), device="cuda")
    torch_actions = torch.from_numpy(actions).cuda()
    steps = batch * static.frame_skip
    packed_s = packed_step_seconds(state, torch_actions, params, static, opts.min_seconds, opts.repeats)
    td_s = time_cuda(lambda: engine.step(state, torch_actions, params, static, backend="triton"),
                     opts.min_seconds, opts.repeats)
    one = static.replace(frame_skip=1)
    after, _ = engine.step(state, torch_actions, params, one, backend="triton")
    return steps / packed_s, steps / td_s, after.get(("polygon", "position")).cpu().numpy()


def jax_rate(make_engine, flat: dict, actions: np.ndarray, static, device, opts) -> tuple[float | None, np.ndarray]:
    eng = make_engine(static, device)
    state = eng.convert(flat)
    m = bench.measure(eng, state, bench.to_device({"a": actions}, device)["a"], len(actions), opts)
    positions = np.asarray(eng.positions(m.step(state, bench.to_device({"a": actions}, device)["a"])))
    return m.steps_per_s, positions


def run(opts, out: Path, peaks: tuple[float, float] | None) -> list[Row]:
    """Every (batch, size) point, batch-major so that a run cut short still covers every size;
    the CSV is rewritten after every row."""
    import jax

    has_cuda = torch.cuda.is_available()
    device_name = torch.cuda.get_device_name() if has_cuda else "cpu"
    jax_device = next((d for d in jax.devices() if d.platform == "gpu"), jax.devices("cpu")[0])
    upstream_ok = opts.upstream and bench.PhysicsEngine is not None
    scenes = {}
    rows = []
    for batch in opts.batch_sizes:
        for size in opts.sizes:
            static = static_params_for_size(size)
            if size not in scenes:
                scenes[size] = bench.warm_scenes(bench.load_scenes(opts.golden, size), static, opts.warm_steps)
            flat = schema.allocate(static, (batch,))
            flat.update(bench.tile(scenes[size], batch))
            actions = bench.random_actions(static, batch, seed=0)
            triton_s = triton_td = positions = None
            if has_cuda:
                triton_s, triton_td, positions = triton_rates(flat, actions, static, opts)
            sim = {k: flat[k] for k in schema.SIM_KEYS}
            reference, ref_positions = jax_rate(bench.ours, sim, actions, static, jax_device, opts)
            upstream = jax_rate(bench.upstream, sim, actions, static, jax_device, opts)[0] if upstream_ok else None
            diff = None if positions is None else float(np.abs(positions - ref_positions).max())
            rows.append(Row(size, batch, device_name, jax_device.platform, triton_s, triton_td, reference, upstream,
                            bytes_per_step(static), flops_per_step(static), diff))
            print_row(rows[-1], peaks)
            write(rows, out)
    return rows


def print_row(r: Row, peak: tuple[float, float] | None) -> None:
    fmt = lambda x: "-" if x is None else f"{x:,.0f}"  # noqa: E731
    ratio = "-" if r.triton is None or not r.reference else f"{r.triton / r.reference:.1f}x"
    floor = ""
    if peak and r.triton:
        floor_s = max(r.floor_bytes_per_step / peak[0], r.floor_flops_per_step / peak[1])
        floor = f" floor {1 / floor_s:,.0f}/s ({r.triton * floor_s:.1%} of it)"
    print(f"{r.size} batch {r.batch:>6}: triton {fmt(r.triton)} td {fmt(r.triton_td)} reference[{r.reference_device}] "
          f"{fmt(r.reference)} upstream {fmt(r.upstream)} steps/s; triton/reference {ratio}{floor}", flush=True)


def write(rows: list[Row], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)


def plot(rows: list[Row], out: Path) -> None:
    """Steps/s against batch, one panel per size (matplotlib, ``pip install 'kinetix-torch[bench]'``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r.size for r in rows}, key="sml".index)
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        mine = sorted((r for r in rows if r.size == size), key=lambda r: r.batch)
        for key in ("triton", "triton_td", "reference", "upstream"):
            points = [(r.batch, getattr(r, key)) for r in mine if getattr(r, key)]
            if points:
                ax.loglog(*zip(*points), marker="o", label=key)
        ax.set(title=f"size {size.upper()}", xlabel="batch", ylabel="physics steps / s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def measured_peaks(info: Path | None, device_name: str) -> tuple[float, float] | None:
    """(bytes/s, FP32 FLOP/s): measured by ``gpu_info.py`` when its JSON is given, else the datasheet's."""
    if info is not None:
        ceilings = json.loads(info.read_text()).get("ceilings")
        if ceilings:
            return ceilings["copy_bytes_per_s"], ceilings["fp32_flops_per_s"]
    return next((v for k, v in PEAKS.items() if k in device_name), None)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", default=["s", "m", "l"], choices=["s", "m", "l"])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=list(DEFAULT_BATCHES))
    p.add_argument("--golden", type=Path, default=bench.default_golden())
    p.add_argument("--min-seconds", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warm-steps", type=int, default=20)
    p.add_argument("--out", type=Path, default=None, help="CSV path (default benchmarks/results/engine_<device>.csv)")
    p.add_argument("--no-upstream", dest="upstream", action="store_false", help="time ours only")
    p.add_argument("--ceilings", type=Path, default=None,
                   help="gpu_info.py's JSON: measured bandwidth and FP32 rate for the floor (default: datasheet)")
    p.add_argument("--plot", type=Path, default=None, help="also write this PNG")
    a = p.parse_args(argv)
    opts = bench.Options(sizes=tuple(a.sizes), batch_sizes=tuple(a.batch_sizes), golden=a.golden,
                         min_seconds=a.min_seconds, repeats=a.repeats, warm_steps=a.warm_steps, upstream=a.upstream)
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    out = a.out or bench.REPO / "benchmarks" / "results" / f"engine_{name.split()[-1].lower()}.csv"
    print(f"{datetime.date.today()} {name}")
    rows = run(opts, out, measured_peaks(a.ceilings, name))
    if a.plot:
        plot(rows, a.plot)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
