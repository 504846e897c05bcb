"""Batched torch geometry for level generation: rotations, the collision matrix, and contact
counts of one shape against its level (which placement proposals are ranked by).

Contacts come from the reference engine's own manifold generators
(:mod:`kinetix_torch.reference_jax.collision`, written for torch and JAX alike), as upstream's
generator asks its engine; mass and inertia from :mod:`kinetix_torch.formulas`.
"""

from __future__ import annotations

import torch

from ..bodies import Flat, shape_field
from ..params import StaticEnvParams
from ..reference_jax.collision import circle_circle_contact, circle_polygon_contact, polygon_polygon_contact
from ..topology import collision_matrix


def rotate(angle, v):
    """``R(angle) @ v`` over leading dims (``angle`` broadcasts against ``v[..., 0]``)."""
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], dim=-1)


def recalculate_collision_matrix(flat: Flat, static: StaticEnvParams) -> None:
    """``collision_matrix`` from the active joints (shared with the rest of the project)."""
    flat["collision_matrix"] = collision_matrix(
        flat["joint.a_index"].long(), flat["joint.b_index"].long(), flat["joint.active"], static.num_shapes, xp=torch
    )


# --- contacts -----------------------------------------------------------------------------------

_BODY_NAMES = ("position", "rotation", "vertices", "n_vertices", "radius", "active", "collision_mode")


def contacts_of_shape(flat: Flat, index: torch.Tensor, static: StaticEnvParams) -> torch.Tensor:
    """``(B,)``: active contact points between shape ``index[b]`` (global index) and the rest of
    its level, counted as upstream counts the engine's manifolds (two points per polygon pair at
    most; no pairs of two static scene pieces).

    Ranking placement proposals by this is the same as ranking by all contacts of the level,
    since the proposals differ only in that shape. Each pair keeps the engine's orientation: the
    lower polygon index first, the circle first against a polygon, the lower circle first."""
    P, F = static.num_polygons, static.num_static_fixated_polys
    polygons = {name: flat[f"polygon.{name}"] for name in _BODY_NAMES}  # (B, P, ...)
    circles = {name: flat[f"circle.{name}"] for name in _BODY_NAMES}  # (B, C, ...)
    me = {name: _gather(shape_field(flat, name), index) for name in _BODY_NAMES}  # (B, 1, ...)
    me_polygon = index < P

    def like(others):
        return {k: v.expand_as(others[k]) for k, v in me.items()}

    def ordered(others, me_first):
        """``(first, second)`` of me paired with each of ``others``, by ``me_first`` ``(B, K)``."""
        mine = like(others)
        pick = {k: me_first.reshape(me_first.shape + (1,) * (v.ndim - 2)) for k, v in others.items()}
        first = {k: torch.where(pick[k], mine[k], v) for k, v in others.items()}
        second = {k: torch.where(pick[k], v, mine[k]) for k, v in others.items()}
        return first, second

    polygon_ids = torch.arange(P, device=index.device)
    circle_ids = torch.arange(circles["radius"].shape[1], device=index.device) + P
    scene_pair = (index[:, None] < F) & (polygon_ids < F)
    rr = polygon_polygon_contact(*ordered(polygons, index[:, None] < polygon_ids))["active"].sum(-1)
    rr = rr * ((polygon_ids != index[:, None]) & ~scene_pair)
    circles_on_me = circle_polygon_contact(circles, like(circles))["active"]
    me_on_polygons = circle_polygon_contact(like(polygons), polygons)["active"]
    cc = circle_circle_contact(*ordered(circles, index[:, None] < circle_ids))["active"]
    cc = cc & (circle_ids != index[:, None])
    as_polygon = rr.sum(1) + circles_on_me.sum(1)
    as_circle = me_on_polygons.sum(1) + cc.sum(1)
    return torch.where(me_polygon, as_polygon, as_circle)


def _gather(values, index):
    return values.gather(1, index.reshape((-1, 1) + (1,) * (values.ndim - 2)).expand((-1, 1) + values.shape[2:]))
