"""Contact manifolds: polygon-polygon (up to two points), circle-polygon and circle-circle.

Written once for JAX and torch arrays (the module comes from the arguments, see
:mod:`kinetix_torch.formulas`): the reference engine runs these functions under ``jax.vmap``, one
pair per call, and the level generator runs them on torch batches to count the contacts of its
placement proposals, as upstream's generator asks its engine. Leading dimensions are free; this
module imports no JAX.

Two layers per pair kind: ``*_contact(a, b)`` is the geometry (``active``, ``normal``,
``penetration``, ``point``) and ``polygon_polygon`` / ``circle_polygon`` / ``circle_circle`` add
the warm-start impulses and the restitution target of a full manifold. Bodies are mappings of
the state's body fields (see ``bodies.py``).

Conventions: the normal points from the first shape to the second; ``penetration`` is positive
when the shapes overlap; ``restitution_velocity_target`` is the relative normal velocity at the
contact point times the smaller restitution, fixed for the whole step. A manifold that is not
active is all zeros; accumulated impulses carry over from the previous step only where the contact
was active then and is active now (warm starting).

Operation order is Jax2D 1.0.1's, primitives included (rotations as matrix products, dot products
and norms as reductions), so that XLA rounds the reference exactly as it rounds upstream.
"""

from __future__ import annotations

import math

import numpy as np

from kinetix_torch.formulas import dot, matvec, namespace, nonzero, norm, rotation_matrix

# Reference-face hysteresis: the second body's face is only chosen as the reference when its
# separation beats the first body's by this much, which stops the contact points flip-flopping.
REFERENCE_FACE_BIAS = 0.01
# Sentinel separation below any real one: no axis has been tested yet.
NO_SEPARATION = -99999.0
# The clip box of the incident face in reference space is unbounded along the face normal.
CLIP_NORMAL_MIN, CLIP_NORMAL_MAX = -99999.0, 999999.0
# Turns an edge into its outward normal: the rotation by +90 degrees in float32
# (cos is -4.37e-8, not 0), as upstream builds it.
_TURN_LEFT = rotation_matrix(np.float32(math.pi / 2))
_VECTOR_FIELDS = ("normal", "collision_point", "point")
"""Manifold and contact fields with a trailing axis of 2."""


# --- array-module helpers -----------------------------------------------------------------------


def _constant(array: np.ndarray, like):
    """A numpy constant as an array of ``like``'s module (and device)."""
    xp = namespace(like)
    if xp.__name__ == "torch":
        return xp.as_tensor(array, device=like.device)
    return xp.asarray(array)


def _take(values, index):
    """``values[..., index[...], :]``: one row of ``(..., K, D)`` per leading position."""
    xp = namespace(values)
    rows = index[..., None, None]
    if xp.__name__ == "torch":
        return xp.take_along_dim(values, rows.long(), dim=-2)[..., 0, :]
    return xp.take_along_axis(values, rows, axis=-2)[..., 0, :]


def _clip(x, low, high):
    """``x`` clipped to ``[low, high]`` (numbers or arrays), as ``jnp.clip``: max, then min."""
    xp = namespace(x)
    if xp.__name__ == "torch":
        low, high = (b if isinstance(b, xp.Tensor) else xp.full_like(x, b) for b in (low, high))
    return xp.minimum(xp.maximum(x, low), high)


def _stable_argsort(values):
    xp = namespace(values)
    if xp.__name__ == "torch":
        return xp.argsort(values, dim=-1, stable=True)
    if xp.__name__ == "numpy":
        return np.argsort(values, axis=-1, kind="stable")
    return xp.argsort(values, axis=-1, stable=True)


def _transpose(matrix):
    return matrix.swapaxes(-1, -2)


def _next_vertices(body):
    """Each vertex's successor around the polygon (the last live vertex wraps to vertex 0)."""
    xp = namespace(body["vertices"])
    vertices = body["vertices"]
    slots = vertices.shape[-2]
    rolled = vertices[..., [(i + 1) % slots for i in range(slots)], :]
    last = xp.stack([body["n_vertices"] - 1 == i for i in range(slots)], -1)
    return xp.where(last[..., None], vertices[..., :1, :], rolled)


def _with_triangle_slot(columns, triangle, value_if_triangle):
    """Stack per-slot ``columns`` with the fourth replaced where the polygon is a triangle."""
    xp = namespace(columns[0])
    return xp.stack([*columns[:3], xp.where(triangle, value_if_triangle, columns[3])], -1)


# --- manifolds ------------------------------------------------------------------------------------


def should_collide(a, b):
    """Collision modes allow contact: either shape has mode 2, or both are non-zero."""
    return (a["collision_mode"] == 2) | (b["collision_mode"] == 2) | (a["collision_mode"] * b["collision_mode"] > 0)


def _spin_velocity(w, r):
    """Velocity of a point at offset ``r`` on a body spinning at ``w`` rad/s: ``w x r``."""
    return namespace(r).stack([-w * r[..., 1], w * r[..., 0]], -1)


def _relative_normal_velocity(a, b, point, normal):
    va = a["velocity"] + _spin_velocity(a["angular_velocity"], point - a["position"])
    vb = b["velocity"] + _spin_velocity(b["angular_velocity"], point - b["position"])
    return dot(vb - va, normal)


def _manifold(a, b, previous, contact):
    """One contact point's manifold from its geometry; zero everywhere when inactive."""
    xp = namespace(contact["normal"])
    active = contact["active"]
    carry = previous["active"] & active
    fields = {
        "normal": contact["normal"],
        "penetration": contact["penetration"],
        "collision_point": contact["point"],
        "active": active,
        "acc_impulse_normal": xp.where(carry, previous["acc_impulse_normal"], 0.0),
        "acc_impulse_tangent": xp.where(carry, previous["acc_impulse_tangent"], 0.0),
        "restitution_velocity_target": _relative_normal_velocity(a, b, contact["point"], contact["normal"])
        * xp.minimum(a["restitution"], b["restitution"]),
    }
    return {
        k: xp.where(active[..., None] if k in _VECTOR_FIELDS else active, v, xp.zeros_like(v))
        for k, v in fields.items()
    }


# --- circle - circle ----------------------------------------------------------------------------


def circle_circle_contact(a, b):
    """Contact when the centres are closer than the radii; the normal joins the centres."""
    offset = b["position"] - a["position"]
    distance = norm(offset)
    radii = a["radius"] + b["radius"]
    active = (distance < radii) & a["active"] & b["active"] & should_collide(a, b)
    normal = offset / nonzero(distance)[..., None]  # arbitrary (zero) for coincident centres
    point = a["position"] + normal * a["radius"][..., None]
    return {"active": active, "normal": normal, "penetration": radii - distance, "point": point}


def circle_circle(a, b, previous):
    return _manifold(a, b, previous, circle_circle_contact(a, b))


# --- circle - polygon (the circle is the first shape) -------------------------------------------


def circle_polygon_contact(circle, polygon):
    """Clip the circle centre (in the polygon's frame) onto every edge; the nearest clip is the
    contact. A centre inside the polygon (inner side of every edge) is pushed out through the
    nearest edge: the normal is then the centre-to-edge direction reversed."""
    xp = namespace(circle["position"])
    turn = rotation_matrix(polygon["rotation"])
    centre = matvec(_transpose(turn), circle["position"] - polygon["position"])[..., None, :]
    starts = polygon["vertices"]
    ends = _next_vertices(polygon)

    # Signed area of (centre, start, end): negative when the centre is on the inner side.
    signed = (starts[..., 0] - centre[..., 0]) * (ends[..., 1] - centre[..., 1]) - (
        starts[..., 1] - centre[..., 1]
    ) * (ends[..., 0] - centre[..., 0])
    inner_side = signed < 0
    direction = (ends - starts) / nonzero(norm(ends - starts))[..., None]
    along = _clip(dot(direction, centre - starts), 0.0, norm(ends - starts))
    clipped = starts + along[..., None] * direction
    clip_distance = norm(clipped - centre)

    triangle = polygon["n_vertices"] == 3
    columns = [clip_distance[..., i] for i in range(4)]
    clip_distance = _with_triangle_slot(columns, triangle, xp.amax(clip_distance[..., :3], -1) + 1)
    closest = _take(clipped, clip_distance.argmin(-1))
    inside = inner_side[..., 0] & inner_side[..., 1] & inner_side[..., 2] & (inner_side[..., 3] | triangle)

    local_normal = centre[..., 0, :] - closest
    distance = norm(local_normal)
    radius = circle["radius"]
    active = ((distance <= radius) | inside) & circle["active"] & polygon["active"] & should_collide(polygon, circle)

    normal = matvec(turn, local_normal) * xp.where(inside, -1.0, 1.0)[..., None]
    normal = -normal / nonzero(norm(normal))[..., None]
    point = matvec(turn, closest) + polygon["position"]
    penetration = xp.where(inside, radius, radius - distance)
    return {"active": active, "normal": normal, "penetration": penetration, "point": point}


def circle_polygon(circle, polygon, previous):
    return _manifold(circle, polygon, previous, circle_polygon_contact(circle, polygon))


# --- polygon - polygon: separating axes, then reference/incident face clipping ------------------


def _edge_normals(body):
    """Outward unit normals of each edge, in the body frame (the edge turned by +90 degrees)."""
    edge = _next_vertices(body) - body["vertices"]
    return matvec(_constant(_TURN_LEFT, edge), edge) / nonzero(norm(edge))[..., None]


def _world_vertices(body):
    turn = rotation_matrix(body["rotation"])[..., None, :, :]
    return matvec(turn, body["vertices"]) + body["position"][..., None, :]


def _least_penetration_axis(a, normals, b, b_world):
    """Best separating axis among ``a``'s edge ``normals`` against ``b`` (world vertices
    ``b_world``).

    Returns the separation along it (negative = overlap), the edge index (-1 when none beats
    :data:`NO_SEPARATION`) and the two vertices of ``b`` (world frame) deepest along it, the
    incident face. On equal separations the first axis wins; a NaN separation propagates.
    """
    xp = namespace(a["vertices"])
    to_a = _transpose(rotation_matrix(a["rotation"]))[..., None, :, :]
    b_in_a = matvec(to_a, b_world - a["position"][..., None, :])
    a_proj = dot(normals[..., :, None, :], a["vertices"][..., None, :, :])  # (..., axis, vertex)
    b_proj = dot(normals[..., :, None, :], b_in_a[..., None, :, :])
    # A triangle's unused 4th vertex must not move the extremes.
    a_triangle, b_triangle = (a["n_vertices"] == 3)[..., None], (b["n_vertices"] == 3)[..., None]
    a_proj = _with_triangle_slot([a_proj[..., i] for i in range(4)], a_triangle, xp.amin(a_proj[..., :3], -1) - 1)
    b_proj = _with_triangle_slot([b_proj[..., i] for i in range(4)], b_triangle, xp.amax(b_proj[..., :3], -1) + 1)
    separation = xp.amin(b_proj, -1) - xp.amax(a_proj, -1)
    incident = _stable_argsort(b_proj)[..., :2]

    best_separation = xp.zeros_like(separation[..., 0]) + NO_SEPARATION
    best_axis = xp.zeros_like(a["n_vertices"]) - 1
    best_incident = xp.zeros_like(incident[..., 0, :])
    for axis in range(a["vertices"].shape[-2]):
        better = (separation[..., axis] > best_separation) & (axis < a["n_vertices"])
        # A blend, not a select, as upstream: a NaN separation on any axis poisons the result.
        weight = xp.where(better, 1.0, 0.0)
        best_separation = weight * separation[..., axis] + (1 - weight) * best_separation
        best_axis = xp.where(better, axis, best_axis)
        best_incident = xp.where(better[..., None], incident[..., axis, :], best_incident)
    incident_face = xp.stack([_take(b_world, best_incident[..., 0]), _take(b_world, best_incident[..., 1])], -2)
    return best_separation, best_axis, incident_face


def _face(world, n_vertices, axis):
    """World start and end of edge ``axis`` (an index of -1 takes the last slot, as upstream)."""
    slots = world.shape[-2]
    n_vertices = namespace(world).where(n_vertices > 0, n_vertices, 1)
    return _take(world, axis % slots), _take(world, (axis + 1) % n_vertices)


def polygon_polygon_contact(a, b):
    """Two contact points sharing one normal and penetration (every field has a point axis of 2
    after the leading dimensions); the second exists only when both clipped incident points lie
    behind the reference face."""
    xp = namespace(a["vertices"])
    a_world, b_world = _world_vertices(a), _world_vertices(b)
    a_normals, b_normals = _edge_normals(a), _edge_normals(b)
    a_separation, a_axis, incident_on_b = _least_penetration_axis(a, a_normals, b, b_world)
    b_separation, b_axis, incident_on_a = _least_penetration_axis(b, b_normals, a, a_world)
    reference_on_b = a_separation + REFERENCE_FACE_BIAS < b_separation
    separation = xp.maximum(a_separation, b_separation)
    colliding = (separation < 0) & a["active"] & b["active"] & should_collide(a, b)

    a_start, a_end = _face(a_world, a["n_vertices"], a_axis)
    b_start, b_end = _face(b_world, b["n_vertices"], b_axis)
    on_b = reference_on_b[..., None]
    start, end = xp.where(on_b, b_start, a_start), xp.where(on_b, b_end, a_end)
    incident = xp.where(on_b[..., None], incident_on_a, incident_on_b)

    # Reference space: origin at the face start, the face along +y (length face_length), so the
    # x coordinate measures depth behind the face.
    face = start - end
    to_reference = rotation_matrix(math.pi + xp.arctan2(face[..., 0], face[..., 1]))
    face_length = norm(face)
    incident_ref = matvec(to_reference[..., None, :, :], incident - start[..., None, :])
    depth = _clip(incident_ref[..., 0], CLIP_NORMAL_MIN, CLIP_NORMAL_MAX)
    across = _clip(incident_ref[..., 1], 0.0, face_length[..., None])
    clipped = xp.stack([depth, across], -1)
    deeper = depth.argmax(-1)
    both_behind = xp.amin(depth, -1) > 0
    from_reference = _transpose(to_reference)
    first = matvec(from_reference, _take(clipped, deeper)) + start
    second = matvec(from_reference, _take(clipped, 1 - deeper)) + start

    slots = a_normals.shape[-2]
    a_normal = matvec(rotation_matrix(a["rotation"]), _take(a_normals, a_axis % slots))
    b_normal = matvec(rotation_matrix(b["rotation"]), _take(b_normals, b_axis % slots))
    normal = xp.where(on_b, -b_normal, a_normal)
    return {
        "active": xp.stack([colliding, colliding & both_behind], -1),
        "normal": xp.stack([normal, normal], -2),
        "penetration": xp.stack([-separation, -separation], -1),
        "point": xp.stack([first, second], -2),
    }


def polygon_polygon(a, b, previous):
    """Both contact points' manifolds; ``previous`` and the result have a point axis of 2 after
    the leading dimensions."""
    xp = namespace(a["vertices"])
    contact = polygon_polygon_contact(a, b)

    def point(fields, k):
        return {key: value[..., k, :] if key in _VECTOR_FIELDS else value[..., k]
                for key, value in fields.items()}

    first, second = (_manifold(a, b, point(previous, k), point(contact, k)) for k in (0, 1))
    return {k: xp.stack([first[k], second[k]], -2 if k in _VECTOR_FIELDS else -1) for k in first}
