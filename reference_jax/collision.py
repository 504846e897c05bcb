"""Contact manifolds: polygon-polygon (up to two points), circle-polygon and circle-circle.

Every function takes two single bodies (dicts of scalars / small arrays, see ``bodies.py``) and the
pair's manifold from the previous engine step, and returns a fresh manifold dict with the fields of
the state schema. A manifold that is not active is all zeros. Accumulated impulses carry over from
the previous step only where the contact was active then and is active now (warm starting).

Conventions: the normal points from the first shape to the second; ``penetration`` is positive
when the shapes overlap; ``restitution_velocity_target`` is the relative normal velocity at the
contact point times the smaller restitution, fixed for the whole step.
"""

import jax.numpy as jnp

from .math2d import HALF_PI, cross, dot, norm, nonzero, rotate, spin_velocity, unrotate

# Reference-face hysteresis: the second body's face is only chosen as the reference when its
# separation beats the first body's by this much, which stops the contact points flip-flopping.
REFERENCE_FACE_BIAS = 0.01
# Sentinel separation below any real one: no axis has been tested yet.
NO_SEPARATION = -99999.0
# The clip box of the incident face in reference space is unbounded along the face normal.
CLIP_NORMAL_MIN, CLIP_NORMAL_MAX = -99999.0, 999999.0


def should_collide(a, b):
    """Collision modes allow contact: either shape has mode 2, or both are non-zero."""
    return (a["collision_mode"] == 2) | (b["collision_mode"] == 2) | (a["collision_mode"] * b["collision_mode"] > 0)


def _relative_normal_velocity(a, b, point, normal):
    va = a["velocity"] + spin_velocity(a["angular_velocity"], point - a["position"])
    vb = b["velocity"] + spin_velocity(b["angular_velocity"], point - b["position"])
    return dot(vb - va, normal)


def _manifold(a, b, previous, active, normal, penetration, point):
    """Assemble one contact point; zero everywhere when inactive."""
    carry = previous["active"] & active
    m = {
        "normal": normal,
        "penetration": penetration,
        "collision_point": point,
        "active": active,
        "acc_impulse_normal": jnp.where(carry, previous["acc_impulse_normal"], 0.0),
        "acc_impulse_tangent": jnp.where(carry, previous["acc_impulse_tangent"], 0.0),
        "restitution_velocity_target": _relative_normal_velocity(a, b, point, normal)
        * jnp.minimum(a["restitution"], b["restitution"]),
    }
    return {k: jnp.where(active, v, jnp.zeros_like(v)) for k, v in m.items()}


# --------------------------------------------------------------------------------------------
# Circle - circle
# --------------------------------------------------------------------------------------------


def circle_circle(a, b, previous):
    offset = b["position"] - a["position"]
    distance = norm(offset)
    radii = a["radius"] + b["radius"]
    active = (distance < radii) & a["active"] & b["active"] & should_collide(a, b)
    normal = offset / nonzero(distance)  # arbitrary (zero) for coincident centres
    point = a["position"] + normal * a["radius"]
    return _manifold(a, b, previous, active, normal, radii - distance, point)


# --------------------------------------------------------------------------------------------
# Circle - polygon (the circle is the first shape)
# --------------------------------------------------------------------------------------------


def _next_vertices(body):
    """Each vertex's successor around the polygon (the last live vertex wraps to vertex 0)."""
    verts = body["vertices"]
    nxt = jnp.roll(verts, -1, axis=0)
    return nxt.at[body["n_vertices"] - 1].set(verts[0])


def circle_polygon(circle, polygon, previous):
    """Clip the circle centre (in the polygon's frame) onto every edge; the nearest clip is the
    contact. A centre inside the polygon (left of no edge) is pushed out through the nearest edge."""
    centre = unrotate(polygon["rotation"], circle["position"] - polygon["position"])
    starts = polygon["vertices"]
    ends = _next_vertices(polygon)

    # Signed area of (centre, start, end): negative when the centre is on the inner side.
    signed = (starts[:, 0] - centre[0]) * (ends[:, 1] - centre[1]) - (starts[:, 1] - centre[1]) * (
        ends[:, 0] - centre[0]
    )
    inner_side = signed < 0
    edge = ends - starts
    edge_length = norm(edge)
    direction = edge / nonzero(edge_length)[:, None]
    along = jnp.clip(dot(direction, centre[None, :] - starts), 0.0, edge_length)
    clipped = starts + along[:, None] * direction
    clip_distance = norm(clipped - centre[None, :])

    is_triangle = polygon["n_vertices"] == 3
    clip_distance = clip_distance.at[3].set(jnp.where(is_triangle, jnp.max(clip_distance[:3]) + 1, clip_distance[3]))
    closest = clipped[jnp.argmin(clip_distance)]
    inside = inner_side[0] & inner_side[1] & inner_side[2] & (inner_side[3] | is_triangle)

    local_normal = centre - closest
    distance = norm(local_normal)
    radius = circle["radius"]
    active = ((distance <= radius) | inside) & circle["active"] & polygon["active"] & should_collide(polygon, circle)

    normal = rotate(polygon["rotation"], local_normal) * jnp.where(inside, -1.0, 1.0)
    normal = -normal / nonzero(norm(normal))
    point = rotate(polygon["rotation"], closest) + polygon["position"]
    penetration = jnp.where(inside, radius, radius - distance)
    return _manifold(circle, polygon, previous, active, normal, penetration, point)


# --------------------------------------------------------------------------------------------
# Polygon - polygon: separating axes, then reference/incident face clipping
# --------------------------------------------------------------------------------------------


def _edge_normals(body):
    """Outward unit normals of each edge, in the body frame (edge direction turned by +90 deg)."""
    edge = _next_vertices(body) - body["vertices"]
    return rotate(jnp.float32(HALF_PI), edge) / nonzero(norm(edge))[:, None]


def _world_vertices(body):
    return rotate(body["rotation"], body["vertices"]) + body["position"]


def _least_penetration_axis(a, b):
    """Best separating axis among ``a``'s edge normals.

    Returns the separation along it (negative = overlap), the edge index, and the two vertices of
    ``b`` (world frame) deepest along it: the incident face.
    """
    b_world = _world_vertices(b)
    b_in_a = unrotate(a["rotation"], b_world - a["position"])
    normals = _edge_normals(a)
    a_proj = normals @ a["vertices"].T  # (axis, vertex)
    b_proj = normals @ b_in_a.T
    # A triangle's unused 4th vertex must not move the extremes.
    a_proj = a_proj.at[:, 3].set(jnp.where(a["n_vertices"] == 3, a_proj[:, :3].min(axis=1) - 1, a_proj[:, 3]))
    b_proj = b_proj.at[:, 3].set(jnp.where(b["n_vertices"] == 3, b_proj[:, :3].max(axis=1) + 1, b_proj[:, 3]))
    separation = b_proj.min(axis=1) - a_proj.max(axis=1)
    incident = jnp.argsort(b_proj, axis=1, stable=True)[:, :2]

    best_sep, best_axis, best_incident = jnp.float32(NO_SEPARATION), jnp.int32(-1), jnp.zeros(2, jnp.int32)
    for axis in range(a["vertices"].shape[0]):
        better = (separation[axis] > best_sep) & (axis < a["n_vertices"])
        best_sep = jnp.where(better, separation[axis], best_sep)
        best_axis = jnp.where(better, axis, best_axis)
        best_incident = jnp.where(better, incident[axis], best_incident)
    return best_sep, best_axis, b_world[best_incident]


def _face(body, world, index):
    return jnp.stack([world[index], world[(index + 1) % body["n_vertices"]]])


def polygon_polygon(a, b, previous):
    """Two contact points sharing one normal and penetration; the second exists only when both
    clipped incident points lie behind the reference face. ``previous`` has a leading axis of 2."""
    a_sep, a_axis, incident_on_b = _least_penetration_axis(a, b)
    b_sep, b_axis, incident_on_a = _least_penetration_axis(b, a)
    reference_on_b = a_sep + REFERENCE_FACE_BIAS < b_sep
    separation = jnp.maximum(a_sep, b_sep)
    colliding = (separation < 0) & a["active"] & b["active"] & should_collide(a, b)

    reference = jnp.where(reference_on_b, _face(b, _world_vertices(b), b_axis), _face(a, _world_vertices(a), a_axis))
    incident = jnp.where(reference_on_b, incident_on_a, incident_on_b)

    # Reference space: origin at reference[0], the face along +y (length face_length), so the
    # x coordinate measures depth behind the face.
    face = reference[0] - reference[1]
    to_reference = jnp.pi + jnp.arctan2(face[0], face[1])
    face_length = norm(face)
    incident_ref = rotate(to_reference, incident - reference[0])
    clipped = jnp.stack(
        [
            jnp.clip(incident_ref[:, 0], CLIP_NORMAL_MIN, CLIP_NORMAL_MAX),
            jnp.clip(incident_ref[:, 1], 0.0, face_length),
        ],
        axis=-1,
    )
    first = jnp.argmax(clipped[:, 0])
    both_behind = jnp.min(clipped[:, 0]) > 0
    points = unrotate(to_reference, clipped[jnp.stack([first, 1 - first])]) + reference[0]

    normal = jnp.where(
        reference_on_b,
        -rotate(b["rotation"], _edge_normals(b)[b_axis]),
        rotate(a["rotation"], _edge_normals(a)[a_axis]),
    )
    second_active = colliding & both_behind
    pick = lambda k: {key: value[k] for key, value in previous.items()}  # noqa: E731
    m0 = _manifold(a, b, pick(0), colliding, normal, -separation, points[0])
    m1 = _manifold(a, b, pick(1), second_active, normal, -separation, points[1])
    return {k: jnp.stack([m0[k], m1[k]]) for k in m0}
