"""Physics formulas written once for numpy, JAX and torch arrays: mass and inertia, the contact
info the reward reads, and upstream's empty scene.

Each function takes its array module from its arguments (:func:`namespace`), so the reference
engine runs it under ``jax.jit`` while the level generator, the level validator and the env run it
on torch tensors. Leading dimensions are free (one shape, a batch of levels, ...).

The operation order is upstream Jax2D 1.0.1's, down to the primitives: where Jax2D takes a dot
product, a norm (reductions) or a matrix product, so do :func:`dot`, :func:`norm` and
:func:`matvec` on JAX arrays, never a hand-expanded ``a0 b0 + a1 b1``, which XLA fuses into
multiply-adds and rounds differently; the reference engine then rounds as upstream does.
"""

from __future__ import annotations

import math

import numpy as np

from .params import StaticEnvParams
from .schema import BLUE, GREEN, RED, allocate
from .topology import collision_matrix

__all__ = [
    "namespace",
    "dot",
    "norm",
    "cross",
    "nonzero",
    "matvec",
    "rotation_matrix",
    "polygon_inverse_mass",
    "polygon_inverse_inertia",
    "circle_inverse_mass",
    "circle_inverse_inertia",
    "recalculate_polygons",
    "recalculate_circles",
    "contact_info",
    "empty_scene",
]


# --- array module helpers -------------------------------------------------------------------------


def namespace(x):
    """The array module of ``x``: torch, jax.numpy (also for tracers) or numpy (python numbers)."""
    if type(x).__module__.partition(".")[0] == "torch":
        import torch

        return torch
    get = getattr(x, "__array_namespace__", None)
    return get() if get is not None else np


def _is_torch(xp) -> bool:
    return xp.__name__ == "torch"


def dot(a, b):
    """Dot product over the last axis (length 2), as a reduction (Jax2D's ``jnp.dot`` of two
    vectors). Torch rounds the expanded form the same way (it never fuses multiply-adds) and runs
    it faster."""
    if _is_torch(namespace(a)):
        return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1]
    return (a * b).sum(-1)


def norm(v):
    """Euclidean length over the last axis (Jax2D's ``jnp.linalg.norm``: square root of a sum)."""
    return namespace(v).sqrt((v * v).sum(-1))


def cross(a, b):
    """z of the cross product of 2D vectors (``jnp.cross``: ``a0 b1 - a1 b0``)."""
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def nonzero(x):
    """``x`` with exact zeros replaced by one (Jax2D's ``zero_to_one``): a safe divisor for
    masked-out entries."""
    return namespace(x).where(x == 0, 1.0, x)


def matvec(matrix, v):
    """``matrix @ v`` over leading dims (``(..., 2, 2)`` by ``(..., 2)``), as a matrix product
    (expanded on torch, where tiny batched matrix products are slow)."""
    xp = namespace(v)
    if _is_torch(xp):
        x, y = v[..., 0], v[..., 1]
        first = matrix[..., 0, 0] * x + matrix[..., 0, 1] * y
        second = matrix[..., 1, 0] * x + matrix[..., 1, 1] * y
        return xp.stack([first, second], -1)
    return (matrix @ v[..., None])[..., 0]


def rotation_matrix(angle):
    """``[[cos, -sin], [sin, cos]]`` of ``angle`` (a float32 array), shape ``(..., 2, 2)``."""
    xp = namespace(angle)
    c, s = xp.cos(angle), xp.sin(angle)
    return xp.stack([xp.stack([c, -s], -1), xp.stack([s, c], -1)], -2)


def _first(count, size: int):
    """``(..., size)`` bool: True at positions ``i < count`` (``count``: ``(...)`` integers)."""
    return namespace(count).stack([count > i for i in range(size)], -1)


def _as_float(x, like):
    xp = namespace(like)
    return x.to(like.dtype) if _is_torch(xp) else xp.asarray(x, dtype=like.dtype)


# --- mass and inertia (Jax2D's engine.calc_inverse_* and recalculate_mass_and_inertia) -------------


def polygon_inverse_mass(vertices, n_vertices, density):
    """``(inverse mass, vertex mean)`` of polygons ``vertices`` ``(..., V, 2)`` with ``n_vertices``
    live vertices at ``density``.

    The area is a fan of triangles from vertex 0, each its base length times the height of its
    third vertex over the base line, halved. The vertex mean divides by ``n_vertices`` as upstream
    (a polygon without vertices gets NaN).
    """
    max_vertices = vertices.shape[-2]
    fan = list(range(max_vertices - 2))
    v0 = vertices[..., [0] * len(fan), :]
    v1 = vertices[..., [i + 1 for i in fan], :]
    v2 = vertices[..., [i + 2 for i in fan], :]
    width = norm(v1 - v0)
    along = (v1 - v0) / nonzero(width)[..., None]
    foot = v0 + dot(v2 - v0, along)[..., None] * along
    triangle_areas = width * norm(v2 - foot) / 2.0
    area = (triangle_areas * _first(n_vertices - 2, len(fan))).sum(-1)
    live = _first(n_vertices, max_vertices)[..., None]
    centre = (vertices * live).sum(-2) / _as_float(n_vertices, vertices)[..., None]
    return 1 / nonzero(area * density), centre


def polygon_inverse_inertia(vertices, n_vertices, density):
    """Inverse moment of inertia about the local origin of polygons at ``density``: the sum of the
    absolute moments of the origin-edge triangles.

    As upstream, edge ``i`` ends at vertex ``(i + 1) % V`` of the ``V`` vertex *slots*, so a
    triangle's closing edge runs to its unused fourth slot instead of back to vertex 0.
    """
    max_vertices = vertices.shape[-2]
    p1 = vertices[..., [(i + 1) % max_vertices for i in range(max_vertices)], :]
    p2 = vertices
    twice_area = cross(p1, p2)
    x_terms = p1[..., 0] * p1[..., 0] + p2[..., 0] * p1[..., 0] + p2[..., 0] * p2[..., 0]
    y_terms = p1[..., 1] * p1[..., 1] + p2[..., 1] * p1[..., 1] + p2[..., 1] * p2[..., 1]
    moments = abs((0.25 * twice_area / 3.0) * (x_terms + y_terms))
    inertia = (moments * _first(n_vertices, max_vertices)).sum(-1) * density
    return 1 / nonzero(inertia)


def circle_inverse_mass(radius, density):
    """Inverse mass of discs of ``radius`` at ``density``."""
    return 1 / nonzero(radius * radius * math.pi * density)


def circle_inverse_inertia(radius, density):
    """Inverse moment of inertia of discs of ``radius`` about their centres at ``density``.

    ``radius**4`` is taken as ``(radius * radius)**2``, the squarings XLA does for upstream's
    ``jnp.pow(radius, 4)`` (torch's ``pow`` would round differently)."""
    return 1 / nonzero(math.pi * (radius * radius) ** 2 / 4 * density)


def recalculate_polygons(polygon, density):
    """The polygon half of Jax2D's ``recalculate_mass_and_inertia``: new fields of ``polygon``
    (mapping with ``position``, ``vertices``, ``n_vertices``, ``inverse_mass``,
    ``inverse_inertia``) at ``density``.

    Movable polygons (``inverse_mass != 0``) are first re-centred on their vertex mean; the shift
    is added to ``position`` unrotated, as upstream. Zero inverse masses and inertias stay zero.
    Returns ``position``, ``vertices``, ``inverse_mass`` and ``inverse_inertia``.
    """
    xp = namespace(polygon["vertices"])
    inverse_mass, centre = polygon_inverse_mass(polygon["vertices"], polygon["n_vertices"], density)
    shift = xp.where((polygon["inverse_mass"] == 0)[..., None], 0.0, centre)
    vertices = polygon["vertices"] - shift[..., None, :]
    inverse_inertia = polygon_inverse_inertia(vertices, polygon["n_vertices"], density)
    return {
        "position": polygon["position"] + shift,
        "vertices": vertices,
        "inverse_mass": inverse_mass * (polygon["inverse_mass"] != 0),
        "inverse_inertia": inverse_inertia * (polygon["inverse_inertia"] != 0),
    }


def recalculate_circles(circle, density):
    """The circle half of Jax2D's ``recalculate_mass_and_inertia``: ``inverse_mass`` and
    ``inverse_inertia`` of ``circle`` (mapping with ``radius``, ``inverse_mass``) at ``density``;
    both stay zero where ``inverse_mass`` is zero."""
    movable = circle["inverse_mass"] != 0
    return {
        "inverse_mass": circle_inverse_mass(circle["radius"], density) * movable,
        "inverse_inertia": circle_inverse_inertia(circle["radius"], density) * movable,
    }


# --- contact info (what the reward reads after each physics substep) ------------------------------


def contact_info(live_roles, positions, active, pair_tables):
    """Upstream Kinetix's ``compute_reward_info``: ``(touches_blue, touches_red, distance)``.

    ``live_roles``: ``(..., N)`` integer roles, zero for inactive shapes (``role * active``);
    ``positions``: ``(..., N, 2)``; ``active``: ``{kind: (..., K) bool}`` contact activity of the
    pairs of ``pair_tables[kind]`` (``(K, 2)`` global indices, first point for polygon pairs), or
    ``None`` for the distance alone (both flags then False). A contact joins green and blue when
    the roles multiply to ``GREEN * BLUE``, green and red for ``GREEN * RED``; ``distance`` sums
    the centre distances of all green-blue pairs, one sum per pair kind as upstream (NaN positions
    give NaN).
    """
    xp = namespace(positions)
    touches_blue = touches_red = xp.zeros_like(live_roles[..., 0], dtype=xp.bool)
    distance = xp.zeros_like(positions[..., 0, 0])
    for kind, pairs in pair_tables.items():
        if len(pairs) == 0:
            continue
        first, second = pairs[:, 0], pairs[:, 1]
        product = live_roles[..., first] * live_roles[..., second]
        if active is not None:
            touches_blue = touches_blue | (active[kind] & (product == GREEN * BLUE)).any(-1)
            touches_red = touches_red | (active[kind] & (product == GREEN * RED)).any(-1)
        gap = norm(positions[..., first, :] - positions[..., second, :])
        distance = distance + ((product == GREEN * BLUE) * gap).sum(-1)
    return touches_blue, touches_red, distance


# --- the empty scene ------------------------------------------------------------------------------


def empty_scene(static: StaticEnvParams, floor_offset: float = 0.2, scene_size: float = 5.0) -> dict:
    """Upstream Kinetix's empty env as a flat numpy state (:func:`kinetix_torch.schema.allocate`
    keys): floor, two side walls and ceiling as immovable polygons 0-3, every polygon slot with 4
    vertices, friction 1, collision mode 2 for the scene pieces and 1 elsewhere, gravity.

    The floor's top edge is at ``floor_offset * 2`` (0.4) and the walls frame x in [0, scene_size].
    """
    flat = allocate(static)
    s, off, half = scene_size, floor_offset, scene_size / 2
    pieces = [
        ((half, off - s), [(half, s + off), (half, -s - off), (-half, -s - off), (-half, s + off)]),  # floor
        ((0.0, 0.0), [(-s, s), (0.0, s), (0.0, 0.0), (-s, 0.0)]),  # left wall
        ((0.0, 0.0), [(s, s), (2 * s, s), (2 * s, 0.0), (s, 0.0)]),  # right wall
        # Ceiling. Upstream's first vertex has x = s where s/2 would make a box; kept for parity.
        ((half, off + 2 * s), [(s, s + off), (half, -s - off), (-half, -s - off), (-half, s + off)]),
    ][: static.num_polygons]
    n = len(pieces)
    flat["polygon.position"][:n] = [position for position, _ in pieces]
    flat["polygon.vertices"][:n, :4] = [vertices for _, vertices in pieces]
    flat["polygon.active"][:n] = True
    flat["polygon.n_vertices"][:] = 4
    flat["polygon.collision_mode"][:] = np.where(np.arange(static.num_polygons) < static.num_static_fixated_polys, 2, 1)
    flat["polygon.friction"][:] = 1.0
    flat["circle.friction"][:] = 1.0
    flat["circle.collision_mode"][:] = 1
    flat["joint.global_position"][:] = 256.0
    flat["gravity"][:] = (0.0, -9.81)
    flat["collision_matrix"] = collision_matrix(
        flat["joint.a_index"], flat["joint.b_index"], flat["joint.active"], static.num_shapes, np
    )
    polygon = {k[len("polygon."):]: v for k, v in flat.items() if k.startswith("polygon.")}
    circle = {k[len("circle."):]: v for k, v in flat.items() if k.startswith("circle.")}
    for name, value in recalculate_polygons(polygon, flat["polygon_densities"]).items():
        flat[f"polygon.{name}"] = value
    for name, value in recalculate_circles(circle, flat["circle_densities"]).items():
        flat[f"circle.{name}"] = value
    return flat
