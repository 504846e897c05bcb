"""Upstream Kinetix's reward, batched in torch.

Per physics substep, roles multiply over every contact pair (inactive shapes count as role 0): an
active contact with product 2 is green touching blue (+1), product 3 green touching red (-1, which
wins). The green-blue ``distance`` sums the centre distances of all green-blue pairs
(:func:`kinetix_torch.formulas.contact_info`). :func:`kinetix_torch.engine.step` reports these per
substep (``touches_blue``, ``touches_red``, ``distance``, each ``(batch, frame_skip)``);
:func:`green_blue_distance` computes the distance of a state (an episode's first).
:func:`combine_substeps` and :func:`dense_shaping` turn them into the env step's reward as upstream
does.
"""

from __future__ import annotations

import torch

from . import formulas
from .params import StaticEnvParams
from .topology import pair_index_tensors

__all__ = ["green_blue_distance", "substep_rewards", "combine_substeps", "dense_shaping"]


def green_blue_distance(state, static: StaticEnvParams) -> torch.Tensor:
    """Float32 ``(batch,)``: summed centre-to-centre distance of live green-blue pairs (NaN
    positions give NaN, as upstream), the ``distance`` of :func:`formulas.contact_info`."""
    live_roles = torch.cat(
        [
            state["polygon_shape_roles"] * state["polygon", "active"],
            state["circle_shape_roles"] * state["circle", "active"],
        ],
        dim=-1,
    )
    positions = torch.cat([state["polygon", "position"], state["circle", "position"]], dim=-2)
    return formulas.contact_info(live_roles, positions, None, pair_index_tensors(static, positions.device))[2]


def _reward(touches_red: torch.Tensor, touches_blue: torch.Tensor) -> torch.Tensor:
    return torch.where(touches_red, -1.0, torch.where(touches_blue, 1.0, 0.0)).to(torch.float32)


def substep_rewards(info) -> torch.Tensor:
    """Float32 ``(batch, frame_skip)`` contact reward of each substep of an :func:`engine.step` info."""
    return _reward(info["touches_red"], info["touches_blue"])


def combine_substeps(info) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fold an :func:`engine.step` info into the env step's ``(reward, distance, ended)``, each ``(batch,)``.

    The first substep with a nonzero reward ends the episode and gives the step's reward and
    distance; without one the reward is the (zero) sum and the distance the last substep's.
    """
    rewards = substep_rewards(info)
    ended_at = rewards != 0
    ended = ended_at.any(-1)
    first = ended_at.to(torch.uint8).argmax(-1)
    chosen = torch.where(ended, first, rewards.shape[-1] - 1)[:, None]
    reward = torch.where(ended, rewards.gather(-1, chosen)[:, 0], rewards.sum(-1))
    return reward, info["distance"].gather(-1, chosen)[:, 0], ended


def dense_shaping(distance: torch.Tensor, last_distance: torch.Tensor, scale: float) -> torch.Tensor:
    """Upstream's dense term ``-(distance - last_distance) * scale``: 0 when ``last_distance`` is -1
    (unset) or ``scale`` is 0, and NaN or infinite values become 0."""
    delta = torch.nan_to_num(-(distance - last_distance) * scale, nan=0.0, posinf=0.0, neginf=0.0)
    return torch.where((last_distance == -1) | (scale == 0.0), torch.zeros_like(delta), delta)
