"""An env's state kept in the kernels' layout between steps (the Triton backends).

:class:`PackedState` owns the matrices of :mod:`.layout` for ``batch`` environments: the float32
state matrix the fused kernel advances in place, the typed side matrices of the integer and bool
fields, and the padded action buffer. Its :attr:`~PackedState.view` is the state as a TensorDict
of strided views into them, so observations, rewards and the user read live data without copies.
Resets copy columns from :class:`PackedLevels` (a bank or a sampler chunk, packed once) with
device-side masks. A step is a fixed handful of operations whatever the number of fields: the
action copy, the kernel, and one bool conversion per manifold kind.
"""

from __future__ import annotations

import torch

from kinetix_torch.params import EnvParams, StaticEnvParams

from . import layout
from .step import LaunchConfig, check_batch, contact_info, has_nan, padded_batch, run_packed


class PackedLevels:
    """Starting states (a TensorDict of batch ``[K]``), packed once: the source of resets."""

    def __init__(self, levels, static: StaticEnvParams, device):
        (self.count,) = levels.batch_size
        rows = layout.layout_for(static).state_rows
        typed = layout.pack_typed(levels, static, self.count, device)
        self.matrices = (layout.pack(levels, static, self.count, device)[:rows], typed["int32"], typed["bool"])
        """The state rows, then the int32 and bool side matrices, ``(rows, K)`` each."""


class PackedState:
    """``batch`` environments in the kernels' layout on ``device``, advanced in place.

    Args:
        config: the launch configuration, fixed for the life of the state (it decides the padding).
        interpret: run the kernel in Triton's CPU interpreter.
    """

    def __init__(self, static: StaticEnvParams, batch: int, device, config: LaunchConfig, interpret: bool):
        self.static, self.batch, self.config, self.interpret = static, batch, config, interpret
        plan = layout.layout_for(static)
        padded = padded_batch(batch, interpret, config)
        check_batch(batch, padded, static)
        self.packed = torch.zeros((plan.total_rows, padded), dtype=torch.float32, device=device)
        self.typed = {dtype: torch.zeros((plan.typed_rows[dtype], padded), dtype=getattr(torch, dtype), device=device)
                      for dtype in layout.TYPED_KEYS}
        self.actions = torch.zeros((static.action_dim, padded), dtype=torch.float32, device=device)
        self.view = layout.state_views(self.packed, self.typed, static, batch)
        """Every state field as a view (batch ``[batch]``); it follows every step and reset."""
        self._live = (self.packed[: plan.state_rows, :batch], self.typed["int32"][:, :batch],
                      self.typed["bool"][:, :batch])

    def reset(self, levels: PackedLevels, picks: torch.Tensor | None, mask: torch.Tensor | None = None) -> None:
        """Environment ``i`` starts from level ``picks[i]`` of ``levels`` where ``mask`` (every
        environment when ``None``); ``picks`` may be ``None`` for a single level. No host sync."""
        for live, source in zip(self._live, levels.matrices):
            fresh = source if levels.count == 1 else source.index_select(1, picks)
            if mask is None:
                live.copy_(fresh)
            else:
                torch.where(mask, fresh, live, out=live)

    def reset_rows(self, rows: torch.Tensor, levels: PackedLevels, first: int) -> None:
        """Environments ``rows`` start from levels ``first, first + 1, ...`` of ``levels``."""
        for live, source in zip(self._live, levels.matrices):
            live.index_copy_(1, rows, source[:, first : first + len(rows)])

    def load(self, state) -> None:
        """Overwrite every environment with the TensorDict ``state`` (batch ``[batch]``)."""
        layout.write_state(self.packed, state, self.static)
        layout.write_typed(self.typed, state, self.static)

    def unshared(self, tensors):
        """``tensors`` (a tensor or TensorDict) with every entry that shares memory with this state
        cloned: what the env hands out (an observation's masks, say) must not change when the
        state changes in place later."""
        storages = {m.untyped_storage().data_ptr() for m in (self.packed, *self.typed.values())}

        def own(tensor):
            return tensor.clone() if tensor.untyped_storage().data_ptr() in storages else tensor

        return own(tensors) if isinstance(tensors, torch.Tensor) else tensors.apply(own)

    def step(self, actions: torch.Tensor, params: EnvParams):
        """One env step (``frame_skip`` substeps) with processed ``actions`` ``(batch, J + T)``.
        Returns ``(info, nan)``: the contact info as :func:`kinetix_torch.engine.step` gives it
        and ``(batch,)`` bool, a NaN in the environment's state after the step."""
        frame_skip = self.static.frame_skip
        self.actions[:, : self.batch].copy_(actions.T)
        info = run_packed(self.packed, self.actions, params, self.static, frame_skip, self.interpret, self.config)
        layout.refresh_flags(self.packed, self.typed, self.static)
        return contact_info(info, self.batch, frame_skip), has_nan(info, self.batch, frame_skip)
