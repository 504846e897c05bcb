"""Ahead-of-time compilation of the fused kernel for NVIDIA targets, without a GPU.

``python -m kinetix_torch.kernels.aot [--sizes s m l custom] [--archs 80 90] [--json]`` compiles
every size variant for each architecture and prints, per variant, the registers per thread, the
spill stores and loads (from ``ptxas -v``) and the shared memory per block (Triton's metadata).
Run it in a process without ``TRITON_INTERPRET=1``: the interpreter replaces ``@triton.jit``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from kinetix_torch.params import StaticEnvParams, static_params_for_size

from .layout import layout_for
from .step import FP_FUSION, GPU_BLOCK, GPU_WARPS, MAX_REGISTERS

CUSTOM_SIZE = StaticEnvParams(num_polygons=7, num_circles=5, num_joints=3, num_thrusters=3, frame_skip=1)
"""A size between the presets, with a circle-circle pair count that is not a power of two."""

SIZES = {"s": static_params_for_size("s"), "m": static_params_for_size("m"), "l": static_params_for_size("l"),
         "custom": CUSTOM_SIZE}

SIGNATURE = {"state": "*fp32", "actions": "*fp32", "params": "*fp32", "pairs": "*i32", "info": "*fp32", "stride": "i32"}


@dataclass
class Variant:
    size: str
    arch: int
    registers: int
    spill_stores: int
    spill_loads: int
    shared_bytes: int
    compile_seconds: float


def _ptxas_usage(ptx: str, arch: int) -> tuple[int, int, int]:
    """Registers per thread, spill store and load bytes, as ``ptxas -v`` reports them."""
    from triton.backends.nvidia.compiler import get_ptxas

    ptxas = get_ptxas(arch).path
    gpu = f"sm_{arch}a" if arch == 90 else f"sm_{arch}"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "kernel.ptx"
        src.write_text(ptx)
        out = subprocess.run([ptxas, "-v", f"--gpu-name={gpu}", str(src), "-o", str(Path(tmp) / "kernel.cubin")],
                             capture_output=True, text=True, check=True)
    report = out.stdout + out.stderr
    registers = int(re.search(r"Used (\d+) registers", report).group(1))
    stores, loads = (int(x) for x in re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report).groups())
    return registers, stores, loads


def compile_variant(size: str, arch: int) -> Variant:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from .physics import fused_env_step_kernel

    static = SIZES[size]
    constexprs = dict(FRAME_SKIP=static.frame_skip, BLOCK=GPU_BLOCK, **layout_for(static).constexprs)
    src = ASTSource(fused_env_step_kernel, SIGNATURE | {k: "constexpr" for k in constexprs}, constexprs=constexprs)
    start = time.perf_counter()
    options = {"num_warps": GPU_WARPS, "enable_fp_fusion": FP_FUSION, "maxnreg": MAX_REGISTERS}
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
    seconds = time.perf_counter() - start
    registers, stores, loads = _ptxas_usage(compiled.asm["ptx"], arch)
    return Variant(size, arch, registers, stores, loads, int(compiled.metadata.shared), seconds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kinetix_torch.kernels.aot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--archs", nargs="+", type=int, default=[80, 90])
    parser.add_argument("--json", action="store_true", help="one JSON object per variant instead of a table")
    args = parser.parse_args(argv)
    print(f"{'size':>6} {'arch':>5} {'regs':>5} {'spill st':>9} {'spill ld':>9} {'smem B':>7} {'compile s':>9}",
          file=sys.stderr)
    for size in args.sizes:
        for arch in args.archs:
            v = compile_variant(size, arch)
            print(json.dumps(asdict(v)) if args.json else
                  f"{v.size:>6} {v.arch:>5} {v.registers:>5} {v.spill_stores:>9} {v.spill_loads:>9} "
                  f"{v.shared_bytes:>7} {v.compile_seconds:>9.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
