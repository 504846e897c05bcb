"""Frames per second of the pixel observation renderer (:func:`kinetix_torch.observations.pixels.render_pixels`).

One *frame* is the observation of one environment, so a call on a batch of ``B`` states counts as
``B`` frames. For every env size, device and batch size: the golden random-level initial states
(``<golden>/random/<size>/seed_*.init.npz``) are tiled to the batch and moved to the device; after
two warm-up calls, a loop of calls runs for at least ``--min-seconds`` (synchronising CUDA at the
end); the median of ``--repeats`` such runs is reported and written to
``benchmarks/results/pixels_<device>.csv``::

    python benchmarks/pixels.py --sizes s m l --batch-sizes 1 16 256 1024 --device cpu --threads 1
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from kinetix_torch import schema
from kinetix_torch.observations.pixels import render_pixels
from kinetix_torch.params import EnvParams, static_params_for_size

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def default_golden() -> Path:
    """``$KINETIX_SHARED/golden``, else ``../shared/golden`` beside the repository."""
    return Path(os.environ.get("KINETIX_SHARED", REPO.parent / "shared")) / "golden"


def initial_states(golden: Path, size: str, batch: int, device: str):
    """The golden random-level initial states of ``size``, tiled to ``batch``, as a TensorDict."""
    files = sorted((golden / "random" / size).glob("seed_*.init.npz"))
    if not files:
        raise SystemExit(f"no initial states in {golden / 'random' / size}")
    loaded = [np.load(f) for f in files]
    rows = np.arange(batch) % len(loaded)
    flat = {k: np.stack([loaded[r][k] for r in rows]) for k in loaded[0].files}
    return schema.to_tensordict(flat, (batch,), device=device)


def frames_per_second(state, static, params, min_seconds: float, repeats: int, device: str) -> float:
    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(2):
        render_pixels(state, static, params)
    sync()
    rates = []
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while True:
            render_pixels(state, static, params)
            calls += 1
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        rates.append(calls * state.batch_size[0] / elapsed)
    return statistics.median(rates)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["s", "m", "l"], choices=["s", "m", "l"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 16, 256, 1024])
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--golden", type=Path, default=default_golden())
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    params = EnvParams()
    rows = []
    for size in args.sizes:
        static = static_params_for_size(size)
        for batch in args.batch_sizes:
            state = initial_states(args.golden, size, batch, args.device)
            rate = frames_per_second(state, static, params, args.min_seconds, args.repeats, args.device)
            rows.append(
                {"size": size, "device": args.device, "threads": torch.get_num_threads(), "batch": batch, "frames_per_s": round(rate, 1)}
            )
            print(f"{size} {args.device} batch {batch:>6}: {rate:12,.0f} frames/s", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"pixels_{args.device.replace(':', '')}.csv"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
