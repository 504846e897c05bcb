"""A reset source for the TorchRL env: ``sampler(num_levels) -> TensorDict`` of fresh random levels."""

from __future__ import annotations

import torch

from ..params import EnvParams, StaticEnvParams
from .noop_filter import filter_levels
from .params import UEDParams
from .sampler import resolve_static, sample_levels

__all__ = ["RandomLevelSampler"]


class RandomLevelSampler:
    """Callable ``sampler(num_levels)``: a TensorDict (batch ``[num_levels]``, on ``device``, every
    schema state field for ``static``) of levels from upstream's random distribution.

    With ``noop_filter``, each call samples ``filter_ratio x num_levels`` candidates and keeps
    ``num_levels`` of them, down-weighting those the no-op policy solves within ``filter_steps``
    env steps (upstream's ``filter_levels`` option, ratio 2 and 64 steps in its configs)."""

    def __init__(self, static: StaticEnvParams | str, env_params: EnvParams | None = None,
                 generator_params: UEDParams | None = None, device="cpu", seed: int = 0, noop_filter: bool = False,
                 filter_ratio: int = 2, filter_steps: int = 64):
        self.static = resolve_static(static)
        self.env_params = env_params or EnvParams()
        self.generator_params = generator_params or UEDParams()
        self.device = torch.device(device)
        self.generator = torch.Generator(self.device).manual_seed(seed)
        if filter_ratio < 1 or filter_steps < 1:
            raise ValueError(f"filter_ratio and filter_steps must be >= 1, got {filter_ratio}, {filter_steps}")
        self.noop_filter, self.filter_ratio, self.filter_steps = noop_filter, filter_ratio, filter_steps

    def __call__(self, num_levels: int):
        count = num_levels * (self.filter_ratio if self.noop_filter else 1)
        levels = sample_levels(count, self.static, self.generator_params, self.generator, self.env_params)
        if not self.noop_filter:
            return levels
        return filter_levels(levels, num_levels, self.static, self.env_params, self.generator, self.filter_steps)[0]

    def __repr__(self) -> str:
        s = self.static
        size = f"P={s.num_polygons}, C={s.num_circles}, J={s.num_joints}, T={s.num_thrusters}"
        return f"RandomLevelSampler({size}, device={self.device}, noop_filter={self.noop_filter})"
