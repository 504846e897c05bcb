"""Which launch configuration is fastest per size: the fused kernel on the packed state under each
of ``kinetix_torch.kernels.step.SWEEP_CONFIGS`` (environments per program, warps, register cap,
fp fusion), timed side by side on the same states, with the winner marked per (size, batch).

States are the golden random levels advanced a few steps, tiled to the batch (the helpers of
``benchmarks/reference_engine.py``). On the CPU (``--device cpu``, the suite's dry run) the
interpreter runs the first config once at a tiny batch: it checks the path, not speed.

    python benchmarks/launch_sweep.py --sizes s m l --batch-sizes 65536 --csv launch.csv
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_engine as bench  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--sizes", nargs="+", default=["s", "m", "l"], choices=["s", "m", "l"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[65536])
    parser.add_argument("--golden", type=Path, default=bench.default_golden())
    parser.add_argument("--min-seconds", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--csv", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
    from kinetix_torch import schema
    from kinetix_torch.kernels import step as kernels
    from kinetix_torch.params import EnvParams, static_params_for_size

    interpret = args.device == "cpu"
    rows = []
    for size in args.sizes:
        static = static_params_for_size(size)
        scenes = bench.warm_scenes(bench.load_scenes(args.golden, size), static, 5)
        for batch in args.batch_sizes:
            flat = schema.allocate(static, (batch,))
            flat.update(bench.tile(scenes, batch))
            state = schema.to_tensordict(flat, (batch,), device=args.device)
            actions = torch.from_numpy(bench.random_actions(static, batch, seed=0)).to(args.device)
            timed = []
            configs = list(kernels.SWEEP_CONFIGS.items())
            for name, config in configs[:1] if interpret else configs:
                with kernels.launch_config(config):
                    seconds = time_env_steps(kernels, state, actions, static, interpret, args)
                timed.append((name, config, seconds))
            best = min(timed, key=lambda t: t[2])[0]
            for name, config, seconds in timed:
                rows.append({"size": size, "batch": batch, "device": args.device, "config": name,
                             **dataclasses.asdict(config), "physics_steps_per_s": round(batch * static.frame_skip / seconds),
                             "best": name == best})
                print(rows[-1], flush=True)
            write(rows, args.csv)  # after every (size, batch), so partial results survive
    return 0


def time_env_steps(kernels, state, actions, static, interpret: bool, args) -> float:
    """Median seconds of one env step (``frame_skip`` substeps) on the packed state."""
    from kinetix_torch.params import EnvParams

    params = EnvParams()
    if interpret:
        start = time.perf_counter()
        kernels.env_step(state, actions, params, static, interpret=True)
        return time.perf_counter() - start
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from engine import packed_step_seconds

    return packed_step_seconds(state, actions, params, static, args.min_seconds, args.repeats)


def write(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    sys.exit(main())
