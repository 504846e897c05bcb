"""Ahead-of-time compilation of the fused kernel for NVIDIA targets, without a GPU.

``python -m kinetix_torch.kernels.aot [--sizes s m l custom] [--archs 80 90] [--configs NAME ...]
[--json]`` compiles every size variant for each architecture under each launch configuration
(default: the one :func:`~kinetix_torch.kernels.step.launch_config_for` picks for the size; names
from :data:`~kinetix_torch.kernels.step.SWEEP_CONFIGS`, or ``all``) and prints, per variant, the
configuration, the registers per thread, the spill stores and loads (from ``ptxas -v``) and the
shared memory per block (Triton's metadata). Run it in a process without ``TRITON_INTERPRET=1``:
the interpreter replaces ``@triton.jit``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from kinetix_torch.params import StaticEnvParams, static_params_for_size

from .step import SWEEP_CONFIGS, LaunchConfig, default_launch_config_name

CUSTOM_SIZE = StaticEnvParams(num_polygons=7, num_circles=5, num_joints=3, num_thrusters=3, frame_skip=1)
"""A size between the presets, with a circle-circle pair count that is not a power of two."""

SIZES = {"s": static_params_for_size("s"), "m": static_params_for_size("m"), "l": static_params_for_size("l"),
         "custom": CUSTOM_SIZE}


@dataclass
class Variant:
    size: str
    arch: int
    config: str
    block: int
    num_warps: int
    max_registers: int | None
    fp_fusion: bool
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


def compile_variant(size: str, arch: int, config_name: str | None = None) -> Variant:
    """Compile one size for one architecture under the named configuration (default: the size's),
    through Triton's own launcher (:mod:`.precompile`): the kernel a launch on that GPU would
    compile, with the launch's argument binding and specialisation, left in Triton's cache."""
    from .precompile import compile_launch

    static = SIZES[size]
    config_name = config_name or default_launch_config_name(static)
    config: LaunchConfig = SWEEP_CONFIGS[config_name]
    compiled, seconds = compile_launch(static, static.frame_skip, config, arch)
    registers, stores, loads = _ptxas_usage(compiled.asm["ptx"], arch)
    return Variant(size, arch, config_name, **asdict(config), registers=registers, spill_stores=stores,
                   spill_loads=loads, shared_bytes=int(compiled.metadata.shared), compile_seconds=seconds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kinetix_torch.kernels.aot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--archs", nargs="+", type=int, default=[80, 90])
    parser.add_argument("--configs", nargs="+", choices=[*SWEEP_CONFIGS, "all"],
                        help="launch configurations to compile (default: each size's own; 'all': every sweep entry)")
    parser.add_argument("--json", action="store_true", help="one JSON object per variant instead of a table")
    args = parser.parse_args(argv)
    names = list(SWEEP_CONFIGS) if args.configs and "all" in args.configs else args.configs
    print(f"{'size':>6} {'arch':>5} {'config':>9} {'block':>5} {'warps':>5} {'maxnreg':>7} {'fma':>4} {'regs':>5} "
          f"{'spill st':>9} {'spill ld':>9} {'smem B':>7} {'compile s':>9}", file=sys.stderr)
    for size in args.sizes:
        for config_name in names or [default_launch_config_name(SIZES[size])]:
            for arch in args.archs:
                v = compile_variant(size, arch, config_name)
                print(json.dumps(asdict(v)) if args.json else
                      f"{v.size:>6} {v.arch:>5} {v.config:>9} {v.block:>5} {v.num_warps:>5} "
                      f"{v.max_registers or '-':>7} {'on' if v.fp_fusion else 'off':>4} {v.registers:>5} "
                      f"{v.spill_stores:>9} {v.spill_loads:>9} {v.shared_bytes:>7} {v.compile_seconds:>9.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
