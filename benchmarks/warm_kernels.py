"""Compile every fused-kernel variant the GPU suite launches, in parallel processes, into Triton's
on-disk cache (``$TRITON_CACHE_DIR``), so the later stages only load them.

A variant is one (size, substeps per launch, launch configuration). Compiling one takes a minute
or more, most of it in ptxas, which is single-threaded: the GPU machine's 16 cores compile them side
by side. Each process launches the kernel once on a tiny batch of the variant's size (on the CPU
with ``--device cpu``: through the interpreter, which compiles nothing and only proves the path).

    python benchmarks/warm_kernels.py --device cuda --sweep
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

SIZES = ("s", "m", "l")


def compile_one(size: str, frame_skip: int, config_name: str, device: str) -> tuple[str, float]:
    """Launch the variant once on 32 environments; returns (label, seconds)."""
    if device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    import torch

    from kinetix_torch import schema
    from kinetix_torch.kernels import step as kernels
    from kinetix_torch.params import EnvParams, static_params_for_size

    static = static_params_for_size(size).replace(frame_skip=frame_skip)
    batch = 32
    start = time.perf_counter()
    state = schema.to_tensordict(schema.allocate(static, (batch,)), (batch,), device=device)
    actions = torch.zeros((batch, static.action_dim), device=device)
    config = kernels.SWEEP_CONFIGS[config_name]
    with kernels.launch_config(config):
        kernels.env_step(state, actions, EnvParams(), static, interpret=device == "cpu")
    if device == "cuda":
        torch.cuda.synchronize()
    return f"{size} frame_skip {frame_skip} {config_name}", time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=SIZES)
    parser.add_argument("--sweep", action="store_true", help="also the launch configs benchmarks/launch_sweep.py times")
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    from kinetix_torch.kernels.precompile import suite_variants

    todo = suite_variants(args.sweep, args.sizes)
    if args.device == "cpu":  # the interpreter compiles nothing: one variant proves the path
        todo = todo[:1]
    print(f"compiling {len(todo)} variants on {args.workers} processes", flush=True)
    start, failed = time.perf_counter(), 0
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=get_context("spawn")) as pool:
        jobs = {pool.submit(compile_one, *variant, args.device): variant for variant in todo}
        for job in as_completed(jobs):
            try:
                label, seconds = job.result()
                print(f"  {label}: {seconds:.1f} s", flush=True)
            except Exception as error:  # report every variant, then fail
                failed += 1
                print(f"  {jobs[job]}: FAILED {type(error).__name__}: {error}", flush=True)
    print(f"all variants in {time.perf_counter() - start:.1f} s, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
