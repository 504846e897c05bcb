"""Upstream Kinetix's reward, batched in torch.

Per physics substep, roles multiply over every contact pair (inactive shapes count as role 0): an
active contact with product 2 is green touching blue (+1), product 3 green touching red (-1, which
wins). The green-blue ``distance`` sums the centre distances of all green-blue pairs.
:func:`kinetix_torch.engine.step` reports these per substep (``touches_blue``, ``touches_red``,
``distance``, each ``(batch, frame_skip)``); :func:`contact_reward` / :func:`green_blue_distance`
compute them from one :func:`kinetix_torch.engine.physics_step` instead. :func:`combine_substeps`
and :func:`dense_shaping` turn them into the env step's reward as upstream does.
"""

from __future__ import annotations

import functools

import torch

from .params import StaticEnvParams
from .schema import BLUE, GREEN, RED
from .topology import MANIFOLD_KINDS, pair_tables

__all__ = ["contact_reward", "green_blue_distance", "substep_rewards", "combine_substeps", "dense_shaping"]


@functools.lru_cache(maxsize=None)
def _pairs(static: StaticEnvParams, device: torch.device) -> tuple[torch.Tensor, tuple[str, ...]]:
    """All contact pairs ``(K, 2)`` in the global shape index (rr, cr, cc order) and the kinds present."""
    tables = pair_tables(static)
    kinds = tuple(k for k in MANIFOLD_KINDS if len(tables[k]))
    pairs = [torch.as_tensor(tables[k], dtype=torch.long) for k in kinds]
    pairs = torch.cat(pairs) if pairs else torch.zeros((0, 2), dtype=torch.long)
    return pairs.to(device), kinds


def _role_products(state, static: StaticEnvParams) -> torch.Tensor:
    """``(batch, K)`` product of the two live roles of every contact pair."""
    roles = torch.cat(
        [
            state["polygon_shape_roles"] * state["polygon", "active"],
            state["circle_shape_roles"] * state["circle", "active"],
        ],
        dim=-1,
    )
    pairs, _ = _pairs(static, roles.device)
    return roles[:, pairs[:, 0]] * roles[:, pairs[:, 1]]


def _reward(touches_red: torch.Tensor, touches_blue: torch.Tensor) -> torch.Tensor:
    return torch.where(touches_red, -1.0, torch.where(touches_blue, 1.0, 0.0)).to(torch.float32)


def contact_reward(state, manifolds, static: StaticEnvParams) -> torch.Tensor:
    """Float32 ``(batch,)`` reward of one physics substep from the state it produced and its
    manifolds (``manifold.active``, as upstream: the collision matrix is not consulted)."""
    product = _role_products(state, static)
    _, kinds = _pairs(static, product.device)
    if not kinds:
        return torch.zeros(product.shape[:1], dtype=torch.float32, device=product.device)
    active = torch.cat([manifolds[kind, "active"] for kind in kinds], dim=-1)
    return _reward((active & (product == GREEN * RED)).any(-1), (active & (product == GREEN * BLUE)).any(-1))


def green_blue_distance(state, static: StaticEnvParams) -> torch.Tensor:
    """Float32 ``(batch,)``: summed centre-to-centre distance of live green-blue pairs (NaN
    positions give NaN, as upstream)."""
    positions = torch.cat([state["polygon", "position"], state["circle", "position"]], dim=-2)
    pairs, _ = _pairs(static, positions.device)
    gaps = torch.linalg.vector_norm(positions[:, pairs[:, 0]] - positions[:, pairs[:, 1]], dim=-1)
    is_green_blue = (_role_products(state, static) == GREEN * BLUE).to(torch.float32)
    return (is_green_blue * gaps).sum(-1)


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
