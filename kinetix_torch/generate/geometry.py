"""Batched torch geometry for level generation: the collision matrix, and contact counts of one
shape against a scene (which placement proposals are ranked by). Mass and inertia live in
:mod:`kinetix_torch.bodies` (shared with the level validator).

Contacts follow the reference engine's manifold generators (:mod:`..reference_jax.collision`):
separating axes with reference/incident faces for polygon pairs (one or two contact points),
edge clipping for circle-polygon, centre distance for circle pairs.
"""

from __future__ import annotations

import math

import torch

from ..bodies import (  # noqa: F401 (mass and inertia are used through this module by the generator)
    Flat,
    circle_inverse_inertia,
    circle_inverse_mass,
    polygon_inverse_inertia,
    polygon_inverse_mass,
    recalculate_mass_and_inertia,
    shape_field,
)
from ..bodies import cross as _cross
from ..bodies import nonzero as _nonzero
from ..bodies import norm as _norm
from ..params import StaticEnvParams
from ..topology import collision_matrix

REFERENCE_FACE_BIAS = 0.01


def rotate(angle, v):
    """``R(angle) @ v`` over leading dims (``angle`` broadcasts against ``v[..., 0]``)."""
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], dim=-1)


def unrotate(angle, v):
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([c * v[..., 0] + s * v[..., 1], -s * v[..., 0] + c * v[..., 1]], dim=-1)


def recalculate_collision_matrix(flat: Flat, static: StaticEnvParams) -> None:
    """``collision_matrix`` from the active joints (shared with the rest of the project)."""
    flat["collision_matrix"] = collision_matrix(
        flat["joint.a_index"].long(), flat["joint.b_index"].long(), flat["joint.active"], static.num_shapes, xp=torch
    )


# --- contacts -----------------------------------------------------------------------------------


def _next_vertices(vertices, n_vertices):
    """Each vertex's successor around the polygon (the last live vertex wraps to vertex 0)."""
    rolled = torch.roll(vertices, -1, dims=-2)
    last = torch.arange(vertices.shape[-2], device=vertices.device) == (n_vertices - 1)[..., None]
    return torch.where(last[..., None], vertices[..., :1, :], rolled)


def _world_vertices(body):
    return rotate(body["rotation"][..., None], body["vertices"]) + body["position"][..., None, :]


def _should_collide(a, b):
    ma, mb = a["collision_mode"], b["collision_mode"]
    return (ma == 2) | (mb == 2) | (ma * mb > 0)


def _best_axis(a, b_world, b_n):
    """Separation along ``a``'s best edge normal, that edge, and ``b``'s two deepest vertices."""
    edges = _next_vertices(a["vertices"], a["n_vertices"]) - a["vertices"]
    normals = torch.stack([-edges[..., 1], edges[..., 0]], -1) / _nonzero(_norm(edges))[..., None]
    b_local = unrotate(a["rotation"][..., None], b_world - a["position"][..., None, :])
    a_proj = normals @ a["vertices"].transpose(-1, -2)  # (..., axis, vertex)
    b_proj = normals @ b_local.transpose(-1, -2)
    a_tri = (a["n_vertices"] == 3)[..., None]
    b_tri = (b_n == 3)[..., None]
    a_last = torch.where(a_tri, a_proj[..., :3].amin(-1) - 1, a_proj[..., 3])
    b_last = torch.where(b_tri, b_proj[..., :3].amax(-1) + 1, b_proj[..., 3])
    a_proj = torch.cat([a_proj[..., :3], a_last[..., None]], -1)
    b_proj = torch.cat([b_proj[..., :3], b_last[..., None]], -1)
    separation = b_proj.amin(-1) - a_proj.amax(-1)
    live_axis = torch.arange(separation.shape[-1], device=separation.device) < a["n_vertices"][..., None]
    separation = torch.where(live_axis, separation, -torch.inf)
    axis = separation.argmax(-1)
    best = separation.gather(-1, axis[..., None])[..., 0]
    axis_proj = b_proj.gather(-2, axis[..., None, None].expand(axis.shape + (1, b_proj.shape[-1])))[..., 0, :]
    deepest = torch.sort(axis_proj, dim=-1, stable=True).indices[..., :2]
    incident = b_world.gather(-2, deepest[..., None].expand(deepest.shape + (2,)))
    return best, axis, incident


def _face_start_end(world, n_vertices, axis):
    start = world.gather(-2, axis[..., None, None].expand(axis.shape + (1, 2)))[..., 0, :]
    nxt = (axis + 1) % n_vertices.clamp(min=1)
    end = world.gather(-2, nxt[..., None, None].expand(nxt.shape + (1, 2)))[..., 0, :]
    return start, end


def polygon_polygon_points(a, b):
    """Active contact points (0, 1 or 2) of polygon pairs; ``a`` is the lower-index polygon."""
    a_world, b_world = _world_vertices(a), _world_vertices(b)
    a_sep, a_axis, incident_on_b = _best_axis(a, b_world, b["n_vertices"])
    b_sep, b_axis, incident_on_a = _best_axis(b, a_world, a["n_vertices"])
    reference_on_b = a_sep + REFERENCE_FACE_BIAS < b_sep
    colliding = (torch.maximum(a_sep, b_sep) < 0) & a["active"] & b["active"] & _should_collide(a, b)
    a_start, a_end = _face_start_end(a_world, a["n_vertices"], a_axis)
    b_start, b_end = _face_start_end(b_world, b["n_vertices"], b_axis)
    flip = reference_on_b[..., None]
    start, end = torch.where(flip, b_start, a_start), torch.where(flip, b_end, a_end)
    incident = torch.where(flip[..., None], incident_on_a, incident_on_b)
    face = start - end
    to_reference = math.pi + torch.atan2(face[..., 0], face[..., 1])
    offset = incident - start[..., None, :]
    depth = torch.cos(to_reference)[..., None] * offset[..., 0] - torch.sin(to_reference)[..., None] * offset[..., 1]
    both_behind = depth.amin(-1) > 0
    return colliding.int() * (1 + both_behind.int())


def circle_polygon_active(circle, polygon):
    """Contact between circles and polygons (the reference's clip of the centre onto each edge)."""
    centre = unrotate(polygon["rotation"], circle["position"] - polygon["position"])[..., None, :]
    starts = polygon["vertices"]
    ends = _next_vertices(starts, polygon["n_vertices"])
    inner = _cross(starts - centre, ends - centre) < 0
    edges = ends - starts
    length = _norm(edges)
    direction = edges / _nonzero(length)[..., None]
    along = torch.minimum(((centre - starts) * direction).sum(-1).clamp(min=0.0), length)
    clipped = starts + along[..., None] * direction
    distance = _norm(clipped - centre)
    triangle = polygon["n_vertices"] == 3
    fourth = torch.where(triangle, distance[..., :3].amax(-1) + 1, distance[..., 3])  # no 4th edge
    distance = torch.cat([distance[..., :3], fourth[..., None]], -1)
    closest = clipped.gather(-2, distance.argmin(-1)[..., None, None].expand(distance.shape[:-1] + (1, 2)))[..., 0, :]
    inside = inner[..., 0] & inner[..., 1] & inner[..., 2] & (inner[..., 3] | triangle)
    touching = (_norm(centre[..., 0, :] - closest) <= circle["radius"]) | inside
    return touching & circle["active"] & polygon["active"] & _should_collide(polygon, circle)


def circle_circle_active(a, b):
    distance = _norm(b["position"] - a["position"])
    return (distance < a["radius"] + b["radius"]) & a["active"] & b["active"] & _should_collide(a, b)


_BODY_NAMES = ("position", "rotation", "vertices", "n_vertices", "radius", "active", "collision_mode")


def contacts_of_shape(flat: Flat, index: torch.Tensor, static: StaticEnvParams) -> torch.Tensor:
    """``(B,)``: active contact points between shape ``index[b]`` (global index) and the rest of
    its level, counted as upstream counts manifolds (two points per polygon pair at most).

    Ranking placement proposals by this is the same as ranking by all contacts of the level,
    since the proposals differ only in that shape."""
    P, F = static.num_polygons, static.num_static_fixated_polys
    polygons = {name: flat[f"polygon.{name}"] for name in _BODY_NAMES}  # (B, P, ...)
    circles = {name: flat[f"circle.{name}"] for name in _BODY_NAMES}  # (B, C, ...)
    me = {name: _gather(shape_field(flat, name), index) for name in _BODY_NAMES}  # (B, 1, ...)
    me_polygon = index < P

    polygon_ids = torch.arange(P, device=index.device)
    me_first = index[:, None] < polygon_ids  # the lower index decides the reference face
    as_polygons = {k: v.expand_as(polygons[k]) for k, v in me.items()}
    first = {k: torch.where(_bcast(me_first, v), as_polygons[k], v) for k, v in polygons.items()}
    second = {k: torch.where(_bcast(me_first, v), v, as_polygons[k]) for k, v in polygons.items()}
    scene_pair = (index[:, None] < F) & (polygon_ids < F)
    rr = polygon_polygon_points(first, second) * ((polygon_ids != index[:, None]) & ~scene_pair)
    me_on_polygons = circle_polygon_active(as_polygons, polygons)  # me as the circle
    circles_on_me = circle_polygon_active(circles, {k: v.expand_as(circles[k]) for k, v in me.items()})
    circle_ids = torch.arange(circles["radius"].shape[1], device=index.device) + P
    cc = circle_circle_active({k: v.expand_as(circles[k]) for k, v in me.items()}, circles)
    cc = cc & (circle_ids != index[:, None])
    as_polygon = rr.sum(1) + circles_on_me.sum(1)
    as_circle = me_on_polygons.sum(1) + cc.sum(1)
    return torch.where(me_polygon, as_polygon, as_circle)


def _gather(values, index):
    return values.gather(1, index.reshape((-1, 1) + (1,) * (values.ndim - 2)).expand((-1, 1) + values.shape[2:]))


def _bcast(mask, like):
    """``(B, K)`` mask reshaped to broadcast against ``like`` ``(B, K, ...)``."""
    return mask.reshape(mask.shape + (1,) * (like.ndim - 2))
