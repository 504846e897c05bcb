"""The fused kernel's launch, bound and compiled for a GPU on a machine without one.

Triton's launcher binds a launch's arguments and specialises them (types, 16-byte alignment,
integers divisible by 16) before it compiles. This module stands in a compile-only CUDA driver for
a target architecture, so that path runs here without a GPU:

* :func:`bind_launch` binds the real launch arguments and stops before compiling: a cheap check
  that a launch would get past Triton's launcher (the interpreter never binds; a kernel argument
  named ``params`` once broke every GPU launch this way);
* :func:`compile_launch` also compiles, into Triton's on-disk cache (``$TRITON_CACHE_DIR``) under
  the key a real launch on that GPU computes, so a GPU machine with the same Triton loads the
  kernel instead of compiling it (a minute or more per variant, most of it in ptxas).

Run it without ``TRITON_INTERPRET=1``::

    python -m kinetix_torch.kernels.precompile --sweep --arch 90           # fill the cache
    python -m kinetix_torch.kernels.precompile --bind-only                 # check the binding
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

import torch

from kinetix_torch.params import EnvParams, StaticEnvParams, static_params_for_size

from . import step
from .layout import layout_for


class CompileOnlyDriver:
    """Just what Triton's launcher asks of its driver before a launch: a device, a stream and the
    target. Launching through it is impossible; warm-up (compile only) works."""

    def __init__(self, arch: int):
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", arch, 32)

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device=None) -> int:
        return 0

    def get_current_target(self):
        return self.target


@contextlib.contextmanager
def compile_only(arch: int):
    """Triton's active driver is a :class:`CompileOnlyDriver` for ``sm_<arch>`` inside the block."""
    from triton.runtime.driver import driver

    previous = driver._active  # reset_active() would build the real driver, which needs a GPU
    driver.set_active(CompileOnlyDriver(arch))
    try:
        yield
    finally:
        driver._active = previous


def _warm_up(static: StaticEnvParams, frame_skip: int, config: step.LaunchConfig, bind_only: bool):
    """The launch :func:`~.step.run_packed` makes, as a Triton warm-up on CPU tensors of the real
    shapes and dtypes; with ``bind_only`` a cache hook stops it right after binding."""
    from triton import knobs

    from .physics import fused_env_step_kernel

    if step.interpreted():
        raise RuntimeError("precompile needs compiled kernels: run it without TRITON_INTERPRET=1")
    padded = step.padded_batch(config.block, False, config)
    plan = layout_for(static)
    physics, pairs = step._device_constants(static, EnvParams(), torch.device("cpu"))
    kwargs = step.kernel_arguments(
        packed=torch.zeros((plan.total_rows, padded)), padded_actions=torch.zeros((static.action_dim, padded)),
        physics=physics, pairs=pairs, info=torch.zeros((step.info_rows(frame_skip), padded)),
        sizes=[int(v) for v in plan.constexprs.values()], frame_skip=frame_skip, launch=step.launch_list(config),
    )
    hook = knobs.runtime.jit_cache_hook
    knobs.runtime.jit_cache_hook = (lambda *args, **kw: True) if bind_only else hook
    try:
        return fused_env_step_kernel.warmup(grid=(padded // config.block,), **kwargs)
    finally:
        knobs.runtime.jit_cache_hook = hook


def bind_launch(static: StaticEnvParams, frame_skip: int, config: step.LaunchConfig, arch: int = 90) -> None:
    """Bind (not compile) the kernel's launch arguments as a launch on ``sm_<arch>`` would; raises
    what the launcher would raise."""
    with compile_only(arch):
        _warm_up(static, frame_skip, config, bind_only=True)


def compile_launch(static: StaticEnvParams, frame_skip: int, config: step.LaunchConfig, arch: int = 90):
    """Compile the variant into Triton's cache as a launch on ``sm_<arch>`` would. Returns
    ``(compiled kernel, seconds)`` (``.asm["ptx"]``, ``.metadata``: what the GPU would load)."""
    start = time.perf_counter()
    with compile_only(arch):
        compiled = _warm_up(static, frame_skip, config, bind_only=False)
    return compiled, time.perf_counter() - start


def suite_variants(sweep: bool, sizes=("s", "m", "l")) -> list[tuple[str, int, str]]:
    """(size, frame_skip, launch-config name) of every launch the GPU suite makes: each size's own
    configuration at 1 substep (single engine steps, the tests) and at the env's frame skip, plus
    with ``sweep`` every other :data:`~.step.SWEEP_CONFIGS` entry at the frame skip."""
    out = []
    for size in sizes:
        static = static_params_for_size(size)
        own = step.default_launch_config_name(static)
        out += [(size, 1, own), (size, static.frame_skip, own)]
        if sweep:
            out += [(size, static.frame_skip, name) for name in step.SWEEP_CONFIGS if name != own]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kinetix_torch.kernels.precompile",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["s", "m", "l"], choices=["s", "m", "l"])
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--sweep", action="store_true", help="also every launch config the GPU suite sweeps")
    parser.add_argument("--bind-only", action="store_true", help="bind the arguments, compile nothing")
    args = parser.parse_args(argv)
    for size, frame_skip, name in suite_variants(args.sweep, args.sizes):
        static, config = static_params_for_size(size), step.SWEEP_CONFIGS[name]
        if args.bind_only:
            bind_launch(static, frame_skip, config, args.arch)
            print(f"{size} frame_skip {frame_skip} {name}: binds", flush=True)
        else:
            _, seconds = compile_launch(static, frame_skip, config, args.arch)
            print(f"{size} frame_skip {frame_skip} {name} sm_{args.arch}: {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
