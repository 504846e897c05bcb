"""Launcher of the fused step: TensorDict state in, TensorDict state and contact info out.

The kernels are compiled for the GPU, or run by Triton's CPU interpreter when the process starts
with ``TRITON_INTERPRET=1`` (the tests); :func:`interpreted` tells which. How a launch is shaped
(environments per program, warps, register cap, fp fusion) is a :class:`LaunchConfig`, looked up
per size by :func:`launch_config_for` and overridable with :func:`launch_config`.

Nothing here synchronises with the host: sizes come from the static parameters, the physics
parameters and pair tables are cached on the device, and the launch grid depends only on the
batch size.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from dataclasses import dataclass

import torch
import triton

from kinetix_torch.params import PHYSICS_PARAM_NAMES, EnvParams, StaticEnvParams

from . import layout
from .layout import WRITTEN_KEYS, layout_for, pair_index_tensor

MAX_ELEMENTS = 2**31
"""Row offsets are int32: rows x padded batch must stay below this."""


@dataclass(frozen=True)
class LaunchConfig:
    """How the fused kernel is launched: one environment per lane, ``block`` per program."""

    block: int = 32
    """Environments per program (a power of two); the batch is padded to a multiple of it. In the
    interpreter, at most this many (it pays per operation, not per lane)."""
    num_warps: int = 1
    """Warps per program; ``block = 32 * num_warps`` gives each thread one environment."""
    max_registers: int | None = 255
    """Registers per thread ptxas may use (``maxnreg``); ``None`` leaves ptxas's own limit."""
    fp_fusion: bool = True
    """Let the compiler fuse multiply-adds (as XLA does on GPUs); set explicitly, Triton's default
    is changing."""

    def __post_init__(self):
        if self.block < 1 or self.block & (self.block - 1):
            raise ValueError(f"LaunchConfig.block must be a power of two, got {self.block}")
        if self.num_warps not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"LaunchConfig.num_warps must be a power of two in 1..32, got {self.num_warps}")
        if self.max_registers is not None and not 16 <= self.max_registers <= 255:
            raise ValueError(f"LaunchConfig.max_registers must be None or in 16..255, got {self.max_registers}")


SWEEP_CONFIGS: dict[str, LaunchConfig] = {
    "w1-r255": LaunchConfig(block=32, num_warps=1, max_registers=255),
    "w1-ptxas": LaunchConfig(block=32, num_warps=1, max_registers=None),
    "w2-r255": LaunchConfig(block=64, num_warps=2, max_registers=255),
    "w4-r128": LaunchConfig(block=128, num_warps=4, max_registers=128),
}
"""Configurations the GPU suite times side by side (``benchmarks/launch_sweep.py``). ``w1-r255``:
one warp with 255 registers per thread, which removes most spills on sm_80/sm_90 at the cost of
occupancy; ``w1-ptxas``: ptxas's own register limit; wider programs trade the other way."""

GPU_CONFIG_BY_SHAPES: tuple[tuple[int, str], ...] = ((2**31, "w1-r255"),)
"""``(largest num_shapes, SWEEP_CONFIGS name)`` rows, first match wins: the GPU's configuration
per size. One row until the GPU suite's sweep has measured a winner per size."""
INTERPRETER_CONFIG = LaunchConfig(block=4096, max_registers=None)
"""The interpreter: as many environments per program as fit (compiler options are ignored)."""

_override: contextvars.ContextVar[LaunchConfig | None] = contextvars.ContextVar("launch_config", default=None)


def default_launch_config_name(static: StaticEnvParams) -> str:
    """Name (in :data:`SWEEP_CONFIGS`) of the GPU configuration for these sizes."""
    return next(name for shapes, name in GPU_CONFIG_BY_SHAPES if static.num_shapes <= shapes)


def launch_config_for(static: StaticEnvParams, interpret: bool) -> LaunchConfig:
    """The configuration for these sizes: the table's on the GPU, :data:`INTERPRETER_CONFIG` in
    the interpreter."""
    return INTERPRETER_CONFIG if interpret else SWEEP_CONFIGS[default_launch_config_name(static)]


@contextlib.contextmanager
def launch_config(config: LaunchConfig):
    """Launches inside the ``with`` block (this thread / task) use ``config`` instead of
    :func:`launch_config_for`'s: for benchmarks that sweep configurations. Environments keep the
    configuration they were allocated with (see :class:`~kinetix_torch.kernels.packed.PackedState`)."""
    token = _override.set(config)
    try:
        yield config
    finally:
        _override.reset(token)


def current_launch_config(static: StaticEnvParams, interpret: bool) -> LaunchConfig:
    """The :func:`launch_config` override if one is active, else :func:`launch_config_for`."""
    return _override.get() or launch_config_for(static, interpret)


def interpreted() -> bool:
    """Whether the kernels run in Triton's CPU interpreter: Triton decides once per process, from
    ``TRITON_INTERPRET=1`` in the environment when it is first imported."""
    from triton.runtime.interpreter import InterpretedFunction

    from . import physics

    return isinstance(physics.fused_env_step_kernel, InterpretedFunction)


@contextlib.contextmanager
def _patch_language_once():
    """Speed-up for the interpreter: it re-patches ``triton.language`` on every device-function
    call (about 40% of interpreted time here), although the kernel launch has already patched it
    and every device function of :mod:`.physics` shares the kernel's globals. During our launch,
    the first patch per module is made, and all are undone when the launch ends."""
    from triton.runtime import interpreter

    original = getattr(interpreter, "_patch_lang", None)
    if original is None:  # another Triton version: nothing to speed up
        yield
        return
    scopes: dict = {}

    def patch_once(fn):
        # Functions of one module (and Triton's own library modules) share what must be patched.
        key = fn.__module__
        if key not in scopes:
            scopes[key] = original(fn)
        return scopes[key]

    interpreter._patch_lang = patch_once
    try:
        yield
    finally:
        interpreter._patch_lang = original
        for scope in reversed(list(scopes.values())[1:]):
            scope.restore()


@functools.lru_cache(maxsize=64)
def _device_constants(static: StaticEnvParams, params: EnvParams, device: torch.device):
    values = params.physics_values()
    physics = torch.tensor([values[n] for n in PHYSICS_PARAM_NAMES], dtype=torch.float32, device=device)
    return physics, pair_index_tensor(static, device)


CONSTEXPR_NAMES = tuple(layout_for(StaticEnvParams()).constexprs)
"""Order of the kernel's size constants when they travel as a list (the custom op's argument)."""


def info_rows(frame_skip: int) -> int:
    """Rows of the kernel's ``info`` output: touches blue, touches red and green-blue distance per
    substep, then 1.0 where the environment's state holds a NaN after the last substep."""
    return 3 * frame_skip + 1


@torch.library.custom_op("kinetix_torch::fused_substeps", mutates_args=("packed",))
def fused_substeps(
    packed: torch.Tensor,
    padded_actions: torch.Tensor,
    physics: torch.Tensor,
    pairs: torch.Tensor,
    sizes: list[int],
    frame_skip: int,
    launch: list[int],
    interpret: bool,
) -> torch.Tensor:
    """The fused kernel as an opaque PyTorch op (``torch.compile`` does not trace into it):
    ``frame_skip`` substeps on the packed state in place; returns the ``info`` matrix
    (:func:`info_rows`). ``launch``: the :class:`LaunchConfig` as ``[block, num_warps,
    max_registers (0: ptxas's), fp_fusion]``."""
    from .physics import fused_env_step_kernel

    info = torch.empty((info_rows(frame_skip), packed.shape[1]), dtype=torch.float32, device=packed.device)
    kwargs = kernel_arguments(packed, padded_actions, physics, pairs, info, sizes, frame_skip, launch)
    with _patch_language_once() if interpret else contextlib.nullcontext():
        fused_env_step_kernel[(packed.shape[1] // launch[0],)](**kwargs)
    return info


def launch_list(config: LaunchConfig) -> list[int]:
    """``config`` as the custom op's ``launch`` argument: ``[block, num_warps, max_registers (0:
    ptxas's), fp_fusion]``."""
    return [config.block, config.num_warps, config.max_registers or 0, int(config.fp_fusion)]


def kernel_arguments(packed, padded_actions, physics, pairs, info, sizes: list[int], frame_skip: int,
                     launch: list[int]) -> dict:
    """Every argument of one launch of the fused kernel, by name: the tensors and the row stride,
    the size constants, and the compiler options of the ``launch`` list (:func:`launch_list`).
    One source for the real launch and :mod:`.precompile`'s compile-only one."""
    block, num_warps, max_registers, fp_fusion = launch
    kwargs = dict(
        # Tensors: the packed state (updated in place), actions, physics parameters, pair table, info out.
        state=packed, actions=padded_actions, physics=physics, pairs=pairs, info=info,
        # The padded batch: the row length of every matrix.
        stride=packed.shape[1],
        # Size constants: substeps per launch, environments per program, the layout's sizes and offsets.
        FRAME_SKIP=frame_skip, BLOCK=block, **dict(zip(CONSTEXPR_NAMES, sizes)),
        # Compiler options.
        num_warps=num_warps, enable_fp_fusion=bool(fp_fusion),
    )
    if max_registers:
        kwargs["maxnreg"] = max_registers
    return kwargs


@fused_substeps.register_fake
def _fused_substeps_shape(packed, padded_actions, physics, pairs, sizes, frame_skip, launch, interpret):
    return packed.new_empty((info_rows(frame_skip), packed.shape[1]))


def _block(batch: int, config: LaunchConfig, interpret: bool) -> int:
    """Environments per program: the configuration's, but no more than the batch needs in the
    interpreter."""
    return min(triton.next_power_of_2(max(batch, 1)), config.block) if interpret else config.block


def padded_batch(batch: int, interpret: bool, config: LaunchConfig | None = None,
                 static: StaticEnvParams | None = None) -> int:
    """The batch rounded up to whole programs (every lane has a column) under ``config`` (default:
    :func:`current_launch_config` for ``static``, or for the default sizes)."""
    config = config or current_launch_config(static or StaticEnvParams(), interpret)
    block = _block(batch, config, interpret)
    return triton.cdiv(batch, block) * block


def run_packed(packed, padded_actions, params: EnvParams, static: StaticEnvParams, frame_skip: int, interpret: bool,
               config: LaunchConfig | None = None):
    """``frame_skip`` substeps on an already packed ``(rows, padded)`` state, in place, in one
    launch under ``config`` (default :func:`current_launch_config`). ``padded_actions``: ``(J + T,
    padded)``. Returns the ``(info_rows(frame_skip), padded)`` info (see :func:`info_rows`). Under
    CUDA graph capture, run it once before capturing: the parameter and pair tables are copied to
    the device on first use, and the kernel compiles on its first launch."""
    config = config or current_launch_config(static, interpret)
    padded = packed.shape[1]
    block = _block(padded, config, interpret)
    if padded % block:
        raise ValueError(f"run_packed: padded batch {padded} is not a multiple of the launch block {block} "
                         f"({config}): allocate with padded_batch(batch, interpret, config)")
    physics, pairs = _device_constants(static, params, packed.device)
    sizes = [int(v) for v in layout_for(static).constexprs.values()]
    launch = [block, *launch_list(config)[1:]]
    return fused_substeps(packed, padded_actions, physics, pairs, sizes, frame_skip, launch, interpret)


def check_batch(batch: int, padded: int, static: StaticEnvParams) -> None:
    """Refuse a batch whose packed matrix would overflow the kernels' int32 offsets."""
    if layout_for(static).total_rows * padded >= MAX_ELEMENTS:
        raise ValueError(f"batch {batch} too large for one launch at this size: split it (rows x batch >= 2^31)")


def launch(state, actions, params: EnvParams, static: StaticEnvParams, frame_skip: int, interpret: bool):
    """Pack ``state``, run ``frame_skip`` substeps in one launch. Returns ``(packed, info)``:
    the updated ``(rows, padded)`` matrix and the ``(info_rows(frame_skip), padded)`` info."""
    (batch,) = state.batch_size
    config = current_launch_config(static, interpret)
    padded = padded_batch(batch, interpret, config)
    check_batch(batch, padded, static)
    packed = layout.pack(state, static, padded, actions.device)
    padded_actions = torch.zeros((static.action_dim, padded), dtype=torch.float32, device=actions.device)
    padded_actions[:, :batch] = actions.T
    return packed, run_packed(packed, padded_actions, params, static, frame_skip, interpret, config)


def contact_info(info, batch: int, frame_skip: int):
    """The contact part of a kernel ``info`` matrix as :func:`kinetix_torch.engine.step` returns it:
    ``touches_blue``, ``touches_red`` (bool) and ``distance``, each ``(batch, frame_skip)``."""
    from tensordict import TensorDict

    per_substep = info[: 3 * frame_skip, :batch].T.reshape(batch, frame_skip, 3)
    return TensorDict(
        {
            "touches_blue": per_substep[..., 0] != 0,
            "touches_red": per_substep[..., 1] != 0,
            "distance": per_substep[..., 2].contiguous(),
        },
        batch_size=[batch],
        device=info.device,
    )


def has_nan(info, batch: int, frame_skip: int):
    """``(batch,)`` bool from a kernel ``info`` matrix: a NaN in the environment's state."""
    return info[3 * frame_skip, :batch] != 0


def _updated_state(state, packed, static):
    """``state`` with the kernel-written fields from ``packed``: float fields as views of it."""
    out = state.copy()
    for key, value in layout.unpack(packed, state, static, WRITTEN_KEYS).items():
        out.set(tuple(key.split(".")), value)
    return out


def env_step(state, actions, params: EnvParams, static: StaticEnvParams, interpret: bool = False):
    """One env step (``static.frame_skip`` substeps). Returns ``(state, info)`` as
    :func:`kinetix_torch.engine.step` documents; the written float fields of the new state are
    views of this step's packed matrix."""
    packed, info = launch(state, actions, params, static, static.frame_skip, interpret)
    return _updated_state(state, packed, static), contact_info(info, state.batch_size[0], static.frame_skip)


def physics_step(state, actions, params: EnvParams, static: StaticEnvParams, interpret: bool = False):
    """One physics substep. Returns ``(state, manifolds)`` as
    :func:`kinetix_torch.engine.physics_step` documents."""
    from tensordict import TensorDict

    packed, _info = launch(state, actions, params, static, 1, interpret)
    out = _updated_state(state, packed, static)
    manifolds = {}
    for kind in ("rr", "cr", "cc"):
        if layout_for(static).counts[kind]:
            fields = out.get(f"acc_{kind}_manifolds")
            manifolds[kind] = fields.apply(lambda x: x[:, :, 0]) if kind == "rr" else fields.clone()
    return out, TensorDict(manifolds, batch_size=state.batch_size, device=actions.device)
