"""Batched rigid bodies in torch: body fields over the global shape index, and mass and inertia.

A batch of levels is a *flat* dict ``{"polygon.position": (B, P, 2), ...}`` (the keys of
:mod:`kinetix_torch.schema`). The global shape index puts the ``P`` polygons first, then the
``C`` circles, as joints and thrusters address them.

Mass and inertia follow Jax2D exactly as :mod:`kinetix_torch.reference_jax.scene` documents:
polygon area as a fan of triangles from vertex 0 (each base x height / 2), centre at the vertex
mean, inertia as the sum of the |moments| of origin-edge triangles where edge i runs to vertex
``(i + 1) % V`` of the V vertex *slots*; discs ``pi r^2`` and ``pi r^4 / 4``.
"""

from __future__ import annotations

import math

import torch

from . import schema
from .params import StaticEnvParams

__all__ = [
    "Flat",
    "to_flat",
    "shape_field",
    "at_shapes",
    "shape_roles",
    "dynamic_mask",
    "polygon_inverse_mass",
    "polygon_inverse_inertia",
    "circle_inverse_mass",
    "circle_inverse_inertia",
    "recalculate_mass_and_inertia",
]

Flat = dict  # {dotted schema key: tensor with a leading batch dim}


def to_flat(levels) -> Flat:
    """TensorDict (batch ``[B]``) or flat mapping -> flat dict (no copies)."""
    if hasattr(levels, "batch_size"):
        return schema.tensordict_to_flat_tensors(levels)
    return dict(levels)


def shape_field(flat: Flat, name: str) -> torch.Tensor:
    """``(B, N, ...)``: a body field over the global shape index (polygons, then circles)."""
    polygon, circle = flat[f"polygon.{name}"], flat[f"circle.{name}"]
    return torch.cat([polygon, circle.to(polygon.dtype)], dim=1)


def at_shapes(per_shape: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``per_shape[b, index[b, k]]`` for ``(B, N)`` values and ``(B, K)`` shape indices (clamped)."""
    return per_shape.gather(1, index.long().clamp(0, per_shape.shape[1] - 1))


def shape_roles(flat: Flat) -> torch.Tensor:
    return torch.cat([flat["polygon_shape_roles"], flat["circle_shape_roles"]], dim=1)


def dynamic_mask(flat: Flat, static: StaticEnvParams) -> torch.Tensor:
    """``(B, N)``: active shapes other than the static scene pieces."""
    active = shape_field(flat, "active")
    return active & (torch.arange(static.num_shapes, device=active.device) >= static.num_static_fixated_polys)


# --- 2D vector helpers --------------------------------------------------------------------------


def nonzero(x):
    """``x`` with zeros replaced by ones (a safe divisor, as Jax2D's ``zero_to_one``)."""
    return torch.where(x == 0, torch.ones_like(x), x)


def cross(a, b):
    """z component of ``a x b`` over the last dim."""
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def norm(v):
    return torch.sqrt((v * v).sum(-1))


# --- mass and inertia ---------------------------------------------------------------------------


def polygon_inverse_mass(vertices, n_vertices, density):
    """``(inverse mass, vertex-mean centre)`` of polygons ``(..., V, 2)`` at ``density``."""
    max_vertices = vertices.shape[-2]
    v0 = vertices[..., 0, :]
    area = torch.zeros(vertices.shape[:-2], dtype=vertices.dtype, device=vertices.device)
    for i in range(max_vertices - 2):
        base = vertices[..., i + 1, :] - v0
        width = norm(base)
        along = base / nonzero(width)[..., None]
        apex = vertices[..., i + 2, :]
        foot = v0 + ((apex - v0) * along).sum(-1, keepdim=True) * along
        area = area + torch.where(i < n_vertices - 2, width * norm(apex - foot) / 2.0, 0.0)
    live = (torch.arange(max_vertices, device=vertices.device) < n_vertices[..., None])[..., None]
    centre = (vertices * live).sum(-2) / n_vertices[..., None].to(vertices.dtype)
    return 1.0 / nonzero(area * density), centre


def polygon_inverse_inertia(vertices, n_vertices, density):
    max_vertices = vertices.shape[-2]
    total = torch.zeros(vertices.shape[:-2], dtype=vertices.dtype, device=vertices.device)
    for i in range(max_vertices):
        p0, p1 = vertices[..., i, :], vertices[..., (i + 1) % max_vertices, :]
        moment = (0.25 * cross(p1, p0) / 3.0) * ((p1 * p1).sum(-1) + (p0 * p1).sum(-1) + (p0 * p0).sum(-1))
        total = total + torch.where(i < n_vertices, moment.abs(), 0.0)
    return 1.0 / nonzero(total * density)


def circle_inverse_mass(radius, density):
    return 1.0 / nonzero(radius * radius * math.pi * density)


def circle_inverse_inertia(radius, density):
    return 1.0 / nonzero(math.pi * radius**4 / 4 * density)


def recalculate_mass_and_inertia(flat: Flat) -> None:
    """Jax2D's ``recalculate_mass_and_inertia`` on every level: movable polygons are re-centred on
    their vertex mean, then inverse masses and inertias are recomputed from the densities; zero
    (fixated) values stay zero. Replaces the entries of ``flat``."""
    vertices, n_vertices = flat["polygon.vertices"], flat["polygon.n_vertices"]
    movable = flat["polygon.inverse_mass"] != 0
    inverse_mass, centre = polygon_inverse_mass(vertices, n_vertices, flat["polygon_densities"])
    shift = torch.where(movable[..., None], centre, 0.0)
    flat["polygon.position"] = flat["polygon.position"] + shift
    flat["polygon.vertices"] = vertices - shift[..., None, :]
    flat["polygon.inverse_mass"] = inverse_mass * movable
    inertia = polygon_inverse_inertia(flat["polygon.vertices"], n_vertices, flat["polygon_densities"])
    flat["polygon.inverse_inertia"] = inertia * (flat["polygon.inverse_inertia"] != 0)
    circle_movable = flat["circle.inverse_mass"] != 0
    radius, density = flat["circle.radius"], flat["circle_densities"]
    flat["circle.inverse_mass"] = circle_inverse_mass(radius, density) * circle_movable
    flat["circle.inverse_inertia"] = circle_inverse_inertia(radius, density) * circle_movable
