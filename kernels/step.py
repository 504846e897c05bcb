"""Launcher of the fused step: TensorDict state in, TensorDict state and contact info out.

The kernels are compiled for the GPU, or run by Triton's CPU interpreter when the process starts
with ``TRITON_INTERPRET=1`` (the tests); :func:`interpreted` tells which.

Nothing here synchronises with the host: sizes come from the static parameters, the physics
parameters and pair tables are cached on the device, and the launch grid depends only on the
batch size.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import triton

from kinetix_torch.params import PHYSICS_PARAM_NAMES, EnvParams, StaticEnvParams

from .layout import WRITTEN_KEYS, layout_for, pack, pair_index_tensor, unpack

GPU_BLOCK = 32
"""Environments per program on the GPU: one warp, one environment per lane."""
GPU_WARPS = 1
INTERPRETER_BLOCK = 4096
"""Environments per program in the interpreter, which pays per operation, not per lane."""
FP_FUSION = True
"""Let the compiler fuse multiply-adds (as XLA does on GPUs); set explicitly, Triton's default is changing."""
MAX_REGISTERS = 255
"""Registers per thread ptxas may use. Its default for one-warp programs stops at 168 on sm_80 and
spills a few hundred bytes per lane; 255 removes most spills at the cost of occupancy (to be
settled by a GPU benchmark)."""
MAX_ELEMENTS = 2**31
"""Row offsets are int32: rows x padded batch must stay below this."""


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


@torch.library.custom_op("kinetix_torch::fused_substeps", mutates_args=("packed",))
def fused_substeps(
    packed: torch.Tensor,
    padded_actions: torch.Tensor,
    physics: torch.Tensor,
    pairs: torch.Tensor,
    sizes: list[int],
    frame_skip: int,
    interpret: bool,
) -> torch.Tensor:
    """The fused kernel as an opaque PyTorch op (``torch.compile`` does not trace into it):
    ``frame_skip`` substeps on the packed state in place; returns the contact info."""
    from .physics import fused_env_step_kernel

    padded = packed.shape[1]
    block = _block(padded, interpret)
    info = torch.empty((3 * frame_skip, padded), dtype=torch.float32, device=packed.device)
    with _patch_language_once() if interpret else contextlib.nullcontext():
        fused_env_step_kernel[(padded // block,)](
            packed, padded_actions, physics, pairs, info, padded,
            FRAME_SKIP=frame_skip, BLOCK=block, num_warps=GPU_WARPS, enable_fp_fusion=FP_FUSION, maxnreg=MAX_REGISTERS,
            **dict(zip(CONSTEXPR_NAMES, sizes)),
        )
    return info


@fused_substeps.register_fake
def _fused_substeps_shape(packed, padded_actions, physics, pairs, sizes, frame_skip, interpret):
    return packed.new_empty((3 * frame_skip, packed.shape[1]))


def run_packed(packed, padded_actions, params: EnvParams, static: StaticEnvParams, frame_skip: int, interpret: bool):
    """``frame_skip`` substeps on an already packed ``(rows, padded)`` state, in place, in one
    launch. ``padded_actions``: ``(J + T, padded)``. Returns the ``(3 * frame_skip, padded)``
    contact info (touches blue, touches red, distance per substep). Under CUDA graph capture, run
    it once before capturing: the parameter and pair tables are copied to the device on first use."""
    physics, pairs = _device_constants(static, params, packed.device)
    sizes = [int(v) for v in layout_for(static).constexprs.values()]
    return fused_substeps(packed, padded_actions, physics, pairs, sizes, frame_skip, interpret)


def _block(batch: int, interpret: bool) -> int:
    """Environments per program: a warp on the GPU, as many as fit one program in the interpreter."""
    return min(triton.next_power_of_2(max(batch, 1)), INTERPRETER_BLOCK) if interpret else GPU_BLOCK


def padded_batch(batch: int, interpret: bool) -> int:
    """The batch rounded up to whole programs (every lane has a column)."""
    block = _block(batch, interpret)
    return triton.cdiv(batch, block) * block


def launch(state, actions, params: EnvParams, static: StaticEnvParams, frame_skip: int, interpret: bool):
    """Pack ``state``, run ``frame_skip`` substeps in one launch. Returns ``(packed, info)``:
    the updated ``(rows, padded)`` matrix and the ``(3 * frame_skip, padded)`` contact info."""
    (batch,) = state.batch_size
    padded = padded_batch(batch, interpret)
    if layout_for(static).total_rows * padded >= MAX_ELEMENTS:
        raise ValueError(f"batch {batch} too large for one launch at this size: split it (rows x batch >= 2^31)")
    packed = pack(state, static, padded, actions.device)
    padded_actions = torch.zeros((static.action_dim, padded), dtype=torch.float32, device=actions.device)
    padded_actions[:, :batch] = actions.T
    return packed, run_packed(packed, padded_actions, params, static, frame_skip, interpret)


def _updated_state(state, packed, static):
    out = state.copy()
    for key, value in unpack(packed, state, static, WRITTEN_KEYS).items():
        out.set(tuple(key.split(".")), value)
    return out


def env_step(state, actions, params: EnvParams, static: StaticEnvParams, interpret: bool = False):
    """One env step (``static.frame_skip`` substeps). Returns ``(state, info)`` as
    :func:`kinetix_torch.engine.step` documents."""
    from tensordict import TensorDict

    packed, info = launch(state, actions, params, static, static.frame_skip, interpret)
    batch = state.batch_size[0]
    per_substep = info[:, :batch].T.reshape(batch, static.frame_skip, 3)
    contact = TensorDict(
        {
            "touches_blue": per_substep[..., 0] != 0,
            "touches_red": per_substep[..., 1] != 0,
            "distance": per_substep[..., 2].contiguous(),
        },
        batch_size=state.batch_size,
        device=actions.device,
    )
    return _updated_state(state, packed, static), contact


def physics_step(state, actions, params: EnvParams, static: StaticEnvParams, interpret: bool = False):
    """One physics substep. Returns ``(state, manifolds)`` as
    :func:`kinetix_torch.engine.physics_step` documents."""
    from tensordict import TensorDict

    packed, _info = launch(state, actions, params, static, 1, interpret)
    out = _updated_state(state, packed, static)
    layout = layout_for(static)
    manifolds = {}
    for kind in ("rr", "cr", "cc"):
        if layout.counts[kind]:
            fields = out.get(f"acc_{kind}_manifolds")
            manifolds[kind] = fields.apply(lambda x: x[:, :, 0]) if kind == "rr" else fields.clone()
    return out, TensorDict(manifolds, batch_size=state.batch_size, device=actions.device)
