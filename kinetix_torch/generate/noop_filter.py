"""Upstream's training-time level filter: prefer levels that doing nothing does not solve.

``ratio x n`` candidate levels are rolled out with the no-op action for ``steps`` env steps on
the batched engine; a level counts as solved by no-op when its first terminating substep has
reward +1 (green touched blue). Solved levels get weight ``solved_weight`` (upstream: 1/1000),
the rest 1, and ``n`` levels are drawn without replacement with those weights (Gumbel top-k),
all on the levels' device.
"""

from __future__ import annotations

import torch

from .. import engine, rewards
from ..actions import noop_actions, process_actions
from ..params import EnvParams, StaticEnvParams

__all__ = ["noop_solved", "draw_indices", "filter_levels"]

SOLVED_WEIGHT = 0.001


def noop_solved(levels, static: StaticEnvParams, env_params: EnvParams, steps: int = 64,
                action_type: str = "multi_discrete") -> torch.Tensor:
    """``(B,)`` bool: the no-op policy's episode ends with green touching blue within ``steps``
    env steps (``frame_skip`` substeps each), ending at the first substep with a nonzero reward."""
    batch = levels.batch_size[0]
    device = levels.device
    actions = process_actions(noop_actions(batch, static, action_type, device), levels, static, action_type)
    state = levels
    outcome = torch.zeros(batch, device=device)  # reward of the first terminating substep, 0 if none yet
    for _ in range(steps):
        state, info = engine.step(state, actions, env_params, static)
        reward, _, ended = rewards.combine_substeps(info)
        outcome = torch.where((outcome == 0) & ended, reward, outcome)
    return outcome > 0.5


def draw_indices(solved: torch.Tensor, n: int, generator: torch.Generator, solved_weight: float = SOLVED_WEIGHT):
    """``n`` distinct indices into ``solved`` ``(M,)``, drawn without replacement with weight
    ``solved_weight`` for solved entries and 1 for the rest (Gumbel top-k, as ``jax.random.choice``
    with ``replace=False``)."""
    total = solved.shape[0]
    if not 1 <= n <= total:
        raise ValueError(f"n must be in [1, {total}] (the number of candidates), got {n}")
    weight = torch.where(solved, solved_weight, 1.0)
    u = torch.rand(total, generator=generator, device=generator.device).clamp_min(torch.finfo(torch.float32).tiny)
    return torch.topk(weight.log() - torch.log(-torch.log(u)), n).indices


def filter_levels(candidates, n: int, static: StaticEnvParams, env_params: EnvParams,
                  generator: torch.Generator, steps: int = 64, solved_weight: float = SOLVED_WEIGHT):
    """Draw ``n`` of the ``candidates`` (TensorDict, batch ``[M]``, ``M >= n``) without replacement,
    down-weighting the no-op-solved ones by ``solved_weight``. Returns ``(levels, solved)`` where
    ``solved`` flags the chosen levels that no-op solves."""
    solved = noop_solved(candidates, static, env_params, steps)
    chosen = draw_indices(solved, n, generator, solved_weight)
    return candidates[chosen], solved[chosen]
