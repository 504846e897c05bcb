"""The Jax2D physics step as one fused Triton kernel: ``frame_skip`` substeps per launch.

Mapping: one GPU lane = one environment; a program holds ``BLOCK`` environments. The state is the
row-major ``(rows, batch)`` float32 matrix of :mod:`.layout` (batch innermost: a load of "body 3's
velocity" is coalesced across the warp). ``rec = state + env`` points at each lane's column; row
``r`` of it is ``rec + r * stride``. Entity indices are scalars when every lane visits the same
entity (the static pair tables) and per-lane tensors when they come from the state (joint ends,
the solver's sorted contact order).

Stages, each a small ``@triton.jit`` function, in the reference's order (``reference_jax``):

1. ``_apply_gravity``;
2. ``_generate_contacts``: polygon-polygon (separating axes + face clipping, two points),
   circle-polygon, circle-circle manifolds, with last step's impulses carried where the contact
   persists;
3. ``_apply_motors`` (all joints from the same state: deltas, then applied), ``_apply_thrusters``;
4. ``_warm_start``: contact impulses, then joint impulses;
5. ``ITERATIONS`` x (``_solve_joints`` one by one, then ``_solve_contact_set`` for polygon-polygon
   point 0, point 1, circle-polygon, circle-circle);
6. ``_integrate`` (explicit Euler, clipping), ``_place_thrusters``;
7. ``_contact_info``: what the env's reward needs from this substep.

Contact sets are solved as upstream batches them: contacts sorted inactive-first (stable) and
dealt round-robin into batches of ``SOLVER_BATCH``; inside a batch every contact reads the
velocities of the batch start (its velocity changes go to the scratch rows ``DELTA`` and are added
after the batch); a batch with padding slots zeroes the last contact's accumulated impulses.

Units: positions in world units, angles in radians, velocities per second, impulses in mass x
velocity. Physics parameters are read from a small float32 tensor (``params``, in the order of
``PHYSICS_PARAM_NAMES``), so new values never recompile and can change under a CUDA graph.
"""

from __future__ import annotations

import math

import numpy as np
import triton
import triton.language as tl

from kinetix_torch.params import PHYSICS_PARAM_NAMES
from kinetix_torch.reference_jax import collision as reference
from kinetix_torch.schema import BLUE, GREEN, RED

from .layout import column_starts

# ---------------------------------------------------------------------------------------------
# Compile-time column numbers (see layout.py) and parameter slots
# ---------------------------------------------------------------------------------------------

_B, _J, _T, _M = (column_starts(t) for t in ("body", "joint", "thruster", "rr"))
POSITION, ROTATION, VELOCITY = tl.constexpr(_B["position"]), tl.constexpr(_B["rotation"]), tl.constexpr(_B["velocity"])
ANGULAR_VELOCITY, INVERSE_MASS = tl.constexpr(_B["angular_velocity"]), tl.constexpr(_B["inverse_mass"])
INVERSE_INERTIA, FRICTION = tl.constexpr(_B["inverse_inertia"]), tl.constexpr(_B["friction"])
RESTITUTION, COLLISION_MODE = tl.constexpr(_B["restitution"]), tl.constexpr(_B["collision_mode"])
BODY_ACTIVE, N_VERTICES = tl.constexpr(_B["active"]), tl.constexpr(_B["n_vertices"])
VERTICES, RADIUS, ROLE = tl.constexpr(_B["vertices"]), tl.constexpr(_B["radius"]), tl.constexpr(_B["role"])

A_INDEX, B_INDEX = tl.constexpr(_J["a_index"]), tl.constexpr(_J["b_index"])
A_RELATIVE_POS, B_RELATIVE_POS = tl.constexpr(_J["a_relative_pos"]), tl.constexpr(_J["b_relative_pos"])
JOINT_POSITION, JOINT_ACTIVE = tl.constexpr(_J["global_position"]), tl.constexpr(_J["active"])
ACC_IMPULSE, ACC_R_IMPULSE = tl.constexpr(_J["acc_impulse"]), tl.constexpr(_J["acc_r_impulse"])
MOTOR_SPEED, MOTOR_POWER, MOTOR_ON = tl.constexpr(_J["motor_speed"]), tl.constexpr(_J["motor_power"]), tl.constexpr(_J["motor_on"])
HAS_LIMITS, MIN_ROTATION = tl.constexpr(_J["motor_has_joint_limits"]), tl.constexpr(_J["min_rotation"])
MAX_ROTATION, IS_FIXED = tl.constexpr(_J["max_rotation"]), tl.constexpr(_J["is_fixed_joint"])
JOINT_ROTATION = tl.constexpr(_J["rotation"])

OBJECT_INDEX, THRUSTER_OFFSET = tl.constexpr(_T["object_index"]), tl.constexpr(_T["relative_position"])
THRUSTER_ROTATION, THRUSTER_POWER = tl.constexpr(_T["rotation"]), tl.constexpr(_T["power"])
THRUSTER_POSITION, THRUSTER_ACTIVE = tl.constexpr(_T["global_position"]), tl.constexpr(_T["active"])

NORMAL, PENETRATION, CONTACT_POINT = tl.constexpr(_M["normal"]), tl.constexpr(_M["penetration"]), tl.constexpr(_M["collision_point"])
CONTACT_ACTIVE, ACC_NORMAL = tl.constexpr(_M["active"]), tl.constexpr(_M["acc_impulse_normal"])
ACC_TANGENT, RESTITUTION_TARGET = tl.constexpr(_M["acc_impulse_tangent"]), tl.constexpr(_M["restitution_velocity_target"])

_P = {name: tl.constexpr(i) for i, name in enumerate(PHYSICS_PARAM_NAMES)}
DT, CLIP_POSITION, CLIP_VELOCITY = _P["dt"], _P["clip_position"], _P["clip_velocity"]
CLIP_ANGULAR_VELOCITY, BASE_FRICTION = _P["clip_angular_velocity"], _P["base_friction"]
BAUMGARTE_COLLISION, BAUMGARTE_JOINTS_V = _P["baumgarte_coefficient_collision"], _P["baumgarte_coefficient_joints_v"]
BAUMGARTE_JOINTS_P, BAUMGARTE_FIXED_AV = _P["baumgarte_coefficient_joints_p"], _P["baumgarte_coefficient_fjoint_av"]
BAUMGARTE_LIMIT_AV, JOINT_STIFFNESS = _P["baumgarte_coefficient_rjoint_limit_av"], _P["joint_stiffness"]
SLOP, MOTOR_DECAY = _P["slop"], _P["motor_decay_coefficient"]
MOTOR_JOINT_LIMIT, BASE_MOTOR_SPEED = _P["motor_joint_limit"], _P["base_motor_speed"]
BASE_MOTOR_POWER, BASE_THRUSTER_POWER = _P["base_motor_power"], _P["base_thruster_power"]

# Geometry constants of the reference (float32 values where the reference rounds them).
REFERENCE_FACE_BIAS = tl.constexpr(reference.REFERENCE_FACE_BIAS)
"""The second polygon's face becomes the reference only if it separates better by this much."""
NO_SEPARATION = tl.constexpr(reference.NO_SEPARATION)
CLIP_DEPTH_MIN, CLIP_DEPTH_MAX = tl.constexpr(reference.CLIP_NORMAL_MIN), tl.constexpr(reference.CLIP_NORMAL_MAX)
COS_HALF_PI = tl.constexpr(float(np.cos(np.float32(math.pi / 2))))
"""cos(pi/2) in float32 (-4.37e-8, not 0): edge normals are the edges turned by this rotation."""
PI = tl.constexpr(float(np.float32(math.pi)))
HALF_PI = tl.constexpr(float(np.float32(math.pi / 2)))
QUARTER_PI = tl.constexpr(float(np.float32(math.pi / 4)))
TAN_EIGHTH_PI = tl.constexpr(0.41421356)
"""Above this ratio, atan is reduced around pi/4 (Cephes' atanf)."""
TANH_SERIES_LIMIT = tl.constexpr(0.1)
"""Below this |x|, tanh uses its Taylor series (the exp form loses digits to cancellation)."""
GREEN_BLUE, GREEN_RED = tl.constexpr(float(GREEN * BLUE)), tl.constexpr(float(GREEN * RED))
"""Role products (:mod:`kinetix_torch.schema` roles) of a rewarded and of a penalised contact."""
BODIES = tl.constexpr(0)
"""First row of the body table (layout.py): ``_get(rec, stride, BODIES, N, column, i)``."""


# ---------------------------------------------------------------------------------------------
# Rows and small math
# ---------------------------------------------------------------------------------------------


@triton.jit
def _get(rec, stride, start: tl.constexpr, count: tl.constexpr, column: tl.constexpr, index):
    """Column ``column`` of entity ``index`` of the table at row ``start`` with ``count`` entities."""
    return tl.load(rec + (start + column * count + index) * stride)


@triton.jit
def _put(rec, stride, start: tl.constexpr, count: tl.constexpr, column: tl.constexpr, index, value):
    tl.store(rec + (start + column * count + index) * stride, value)


@triton.jit
def _add(rec, stride, start: tl.constexpr, count: tl.constexpr, column: tl.constexpr, index, value):
    _put(rec, stride, start, count, column, index, _get(rec, stride, start, count, column, index) + value)


@triton.jit
def _rotate(c, s, x, y):
    """``R @ (x, y)`` for the rotation with cosine ``c`` and sine ``s``."""
    return c * x - s * y, s * x + c * y


@triton.jit
def _unrotate(c, s, x, y):
    """``R.T @ (x, y)``."""
    return c * x + s * y, c * y - s * x


@triton.jit
def _cross(ax, ay, bx, by):
    return ax * by - ay * bx


@triton.jit
def _norm(x, y):
    return tl.sqrt_rn(x * x + y * y)


@triton.jit
def _nonzero(x):
    """A safe divisor: exact zeros become one (they belong to masked-out entries)."""
    return tl.where(x == 0.0, 1.0, x)


@triton.jit
def _sign(x):
    return tl.where(x > 0.0, 1.0, tl.where(x < 0.0, -1.0, 0.0))


@triton.jit
def _tanh(x):
    """tanh to float32 accuracy: Taylor series near 0, ``(1 - e) / (1 + e)``, ``e = exp(-2|x|)`` else."""
    ax = tl.abs(x)
    x2 = x * x
    series = x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0))))
    e = tl.exp(-2.0 * ax)
    return tl.where(ax < TANH_SERIES_LIMIT, series, _sign(x) * (1.0 - e) / (1.0 + e))


@triton.jit
def _atan2(y, x):
    """float32 atan2 (Cephes atanf polynomial on [0, 1] after reduction), exact at the axes."""
    big = tl.maximum(tl.abs(x), tl.abs(y))
    ratio = tl.minimum(tl.abs(x), tl.abs(y)) / _nonzero(big)
    reduced = ratio > TAN_EIGHTH_PI
    z = tl.where(reduced, (ratio - 1.0) / (ratio + 1.0), ratio)
    z2 = z * z
    angle = (((8.05374449538e-2 * z2 - 1.38776856032e-1) * z2 + 1.99777106478e-1) * z2 - 3.33329491539e-1) * z2 * z + z
    angle = tl.where(reduced, angle + QUARTER_PI, angle)
    angle = tl.where(tl.abs(y) > tl.abs(x), HALF_PI - angle, angle)
    angle = tl.where(x < 0.0, PI - angle, angle)
    return tl.where(y < 0.0, -angle, angle)


@triton.jit
def _pick(values, index, COUNT: tl.constexpr):
    """``values[lane, index[lane]]`` of a ``(BLOCK, COUNT)`` tile."""
    slot = tl.arange(0, COUNT)[None, :]
    return tl.sum(tl.where(slot == index[:, None], values, 0.0), axis=1)


# ---------------------------------------------------------------------------------------------
# Bodies
# ---------------------------------------------------------------------------------------------


@triton.jit
def _motion(rec, stride, i, N: tl.constexpr):
    """Position, rotation, velocity, angular velocity, inverse mass and inertia of body ``i``."""
    px = _get(rec, stride, 0, N, POSITION, i)
    py = _get(rec, stride, 0, N, POSITION + 1, i)
    rot = _get(rec, stride, 0, N, ROTATION, i)
    vx = _get(rec, stride, 0, N, VELOCITY, i)
    vy = _get(rec, stride, 0, N, VELOCITY + 1, i)
    w = _get(rec, stride, 0, N, ANGULAR_VELOCITY, i)
    im = _get(rec, stride, 0, N, INVERSE_MASS, i)
    ii = _get(rec, stride, 0, N, INVERSE_INERTIA, i)
    return px, py, rot, vx, vy, w, im, ii


@triton.jit
def _add_velocity(rec, stride, i, N: tl.constexpr, dvx, dvy, dw):
    _add(rec, stride, 0, N, VELOCITY, i, dvx)
    _add(rec, stride, 0, N, VELOCITY + 1, i, dvy)
    _add(rec, stride, 0, N, ANGULAR_VELOCITY, i, dw)


@triton.jit
def _add_delta(rec, stride, DELTA: tl.constexpr, i, N: tl.constexpr, dvx, dvy, dw):
    """Accumulate a velocity change in the scratch rows (Jacobi stages)."""
    _add(rec, stride, DELTA, N, 0, i, dvx)
    _add(rec, stride, DELTA, N, 1, i, dvy)
    _add(rec, stride, DELTA, N, 2, i, dw)


@triton.jit
def _apply_deltas(rec, stride, DELTA: tl.constexpr, N: tl.constexpr):
    """Add the accumulated velocity changes to every body and clear them."""
    for i in range(N):
        dvx = _get(rec, stride, DELTA, N, 0, i)
        dvy = _get(rec, stride, DELTA, N, 1, i)
        dw = _get(rec, stride, DELTA, N, 2, i)
        _add_velocity(rec, stride, i, N, dvx, dvy, dw)
        _put(rec, stride, DELTA, N, 0, i, dvx * 0.0)
        _put(rec, stride, DELTA, N, 1, i, dvy * 0.0)
        _put(rec, stride, DELTA, N, 2, i, dw * 0.0)


@triton.jit
def _is_active(rec, stride, i, N: tl.constexpr):
    return _get(rec, stride, 0, N, BODY_ACTIVE, i) != 0.0


@triton.jit
def _should_collide(rec, stride, a, b, N: tl.constexpr):
    """Collision modes allow contact: either shape has mode 2, or both are non-zero."""
    mode_a = _get(rec, stride, 0, N, COLLISION_MODE, a)
    mode_b = _get(rec, stride, 0, N, COLLISION_MODE, b)
    return (mode_a == 2.0) | (mode_b == 2.0) | (mode_a * mode_b > 0.0)


@triton.jit
def _apply_gravity(rec, stride, params, N: tl.constexpr, GLOBALS: tl.constexpr):
    """``v += g dt`` for every body with finite mass."""
    dt = tl.load(params + DT)
    gx = _get(rec, stride, GLOBALS, 1, 0, 0)
    gy = _get(rec, stride, GLOBALS, 1, 1, 0)
    for i in range(N):
        movable = _get(rec, stride, 0, N, INVERSE_MASS, i) != 0.0
        _add(rec, stride, 0, N, VELOCITY, i, tl.where(movable, gx * dt, 0.0))
        _add(rec, stride, 0, N, VELOCITY + 1, i, tl.where(movable, gy * dt, 0.0))


# ---------------------------------------------------------------------------------------------
# Contact manifolds
# ---------------------------------------------------------------------------------------------


@triton.jit
def _relative_normal_velocity(rec, stride, a, b, N: tl.constexpr, cx, cy, nx, ny):
    """``(v_b + w_b x r_b - v_a - w_a x r_a) . n`` at the contact point ``(cx, cy)``."""
    pax, pay, _ra, vax, vay, wa, _ima, _iia = _motion(rec, stride, a, N)
    pbx, pby, _rb, vbx, vby, wb, _imb, _iib = _motion(rec, stride, b, N)
    dvx = vbx - wb * (cy - pby) - vax + wa * (cy - pay)
    dvy = vby + wb * (cx - pbx) - vay - wa * (cx - pax)
    return dvx * nx + dvy * ny


@triton.jit
def _write_contact(rec, stride, SLOTS: tl.constexpr, COUNT: tl.constexpr, slot, a, b, N: tl.constexpr,
                   active, nx, ny, penetration, cx, cy):
    """Store one contact point, zero where inactive; impulses carry over where the contact was
    active on the previous step too. The restitution target is the relative normal velocity at
    the point times the smaller restitution, fixed for the whole substep."""
    carry = active & (_get(rec, stride, SLOTS, COUNT, CONTACT_ACTIVE, slot) != 0.0)
    acc_normal = tl.where(carry, _get(rec, stride, SLOTS, COUNT, ACC_NORMAL, slot), 0.0)
    acc_tangent = tl.where(carry, _get(rec, stride, SLOTS, COUNT, ACC_TANGENT, slot), 0.0)
    restitution = tl.minimum(_get(rec, stride, BODIES, N, RESTITUTION, a),
                             _get(rec, stride, BODIES, N, RESTITUTION, b))
    target = _relative_normal_velocity(rec, stride, a, b, N, cx, cy, nx, ny) * restitution
    _put(rec, stride, SLOTS, COUNT, NORMAL, slot, tl.where(active, nx, 0.0))
    _put(rec, stride, SLOTS, COUNT, NORMAL + 1, slot, tl.where(active, ny, 0.0))
    _put(rec, stride, SLOTS, COUNT, PENETRATION, slot, tl.where(active, penetration, 0.0))
    _put(rec, stride, SLOTS, COUNT, CONTACT_POINT, slot, tl.where(active, cx, 0.0))
    _put(rec, stride, SLOTS, COUNT, CONTACT_POINT + 1, slot, tl.where(active, cy, 0.0))
    _put(rec, stride, SLOTS, COUNT, CONTACT_ACTIVE, slot, tl.where(active, 1.0, 0.0))
    _put(rec, stride, SLOTS, COUNT, ACC_NORMAL, slot, acc_normal)
    _put(rec, stride, SLOTS, COUNT, ACC_TANGENT, slot, acc_tangent)
    _put(rec, stride, SLOTS, COUNT, RESTITUTION_TARGET, slot, tl.where(active, target, 0.0))


@triton.jit
def _circle_circle(rec, stride, a, b, slot, N: tl.constexpr, SLOTS: tl.constexpr, COUNT: tl.constexpr):
    """Contact when the centres are closer than the radii; the normal joins the centres."""
    pax, pay, _ra, _vax, _vay, _wa, _ima, _iia = _motion(rec, stride, a, N)
    pbx, pby, _rb, _vbx, _vby, _wb, _imb, _iib = _motion(rec, stride, b, N)
    radius_a = _get(rec, stride, BODIES, N, RADIUS, a)
    radii = radius_a + _get(rec, stride, BODIES, N, RADIUS, b)
    ox = pbx - pax
    oy = pby - pay
    distance = _norm(ox, oy)
    active = (distance < radii) & _is_active(rec, stride, a, N) & _is_active(rec, stride, b, N)
    active = active & _should_collide(rec, stride, a, b, N)
    nx = ox / _nonzero(distance)
    ny = oy / _nonzero(distance)
    _write_contact(rec, stride, SLOTS, COUNT, slot, a, b, N, active, nx, ny, radii - distance,
                   pax + nx * radius_a, pay + ny * radius_a)


@triton.jit
def _polygon(rec, stride, i, N: tl.constexpr):
    """Polygon ``i`` as ``(BLOCK, 4)`` tiles: local vertices, their successors around the polygon
    (the last live vertex wraps to vertex 0), world vertices and local outward edge normals;
    centre, and cosine and sine of the rotation, per lane."""
    k = tl.arange(0, 4)[None, :]
    col = rec[:, None]
    vx = tl.load(col + ((2 * k + VERTICES) * N + i) * stride)
    vy = tl.load(col + ((2 * k + VERTICES + 1) * N + i) * stride)
    after = (k + 1) % 4
    n_vertices = _get(rec, stride, BODIES, N, N_VERTICES, i).to(tl.int32)
    wraps = (k + 1 >= n_vertices[:, None]) & (n_vertices[:, None] != 0)
    v0x = _get(rec, stride, BODIES, N, VERTICES, i)[:, None]
    v0y = _get(rec, stride, BODIES, N, VERTICES + 1, i)[:, None]
    next_x = tl.where(wraps, v0x, tl.load(col + ((2 * after + VERTICES) * N + i) * stride))
    next_y = tl.where(wraps, v0y, tl.load(col + ((2 * after + VERTICES + 1) * N + i) * stride))

    px, py, rot, _vx, _vy, _w, _im, _ii = _motion(rec, stride, i, N)
    c = tl.cos(rot)
    s = tl.sin(rot)
    wx, wy = _rotate(c[:, None], s[:, None], vx, vy)
    wx += px[:, None]
    wy += py[:, None]
    # Outward normal: the edge turned by +90 degrees (the reference's float32 rotation), unit length.
    ex = next_x - vx
    ey = next_y - vy
    length = _nonzero(_norm(ex, ey))
    nx = ex * COS_HALF_PI - ey
    ny = ex + ey * COS_HALF_PI
    return px, py, c, s, vx, vy, next_x, next_y, n_vertices, wx, wy, nx / length, ny / length


@triton.jit
def _best_axis(apx, apy, ac, as_, avx, avy, an, anx, any_, bwx, bwy, bn):
    """Separating-axis test of polygon b against the edge normals of polygon a.

    Projecting both polygons on a normal of a, the separation is ``min(b) - max(a)`` (negative =
    overlap). The best axis is the first live one with the largest separation; the incident face
    is b's two deepest vertices along it (stable order). A triangle's unused 4th vertex is moved
    beyond its extremes. Axes are visited one by one, as in the reference, which keeps one
    ``(BLOCK, 4)`` projection per polygon live. Returns the separation, the axis (-1 if none) and
    the two world incident vertices.
    """
    bx, by = _unrotate(ac[:, None], as_[:, None], bwx - apx[:, None], bwy - apy[:, None])
    vert = tl.arange(0, 4)[None, :]
    a_triangle = (an == 3)[:, None]
    b_triangle = (bn == 3)[:, None]
    best_separation = tl.zeros_like(apx) + NO_SEPARATION
    best = tl.zeros_like(an) - 1
    first_vertex = tl.zeros_like(an)
    second_vertex = tl.zeros_like(an)
    for axis in tl.static_range(4):
        nx = _pick(anx, tl.zeros_like(an) + axis, COUNT=4)[:, None]
        ny = _pick(any_, tl.zeros_like(an) + axis, COUNT=4)[:, None]
        a_proj = nx * avx + ny * avy
        b_proj = nx * bx + ny * by
        a_low = tl.min(tl.where(vert < 3, a_proj, float("inf")), axis=1)
        b_high = tl.max(tl.where(vert < 3, b_proj, -float("inf")), axis=1)
        a_proj = tl.where((vert == 3) & a_triangle, a_low[:, None] - 1.0, a_proj)
        b_proj = tl.where((vert == 3) & b_triangle, b_high[:, None] + 1.0, b_proj)
        separation = tl.min(b_proj, axis=1) - tl.max(a_proj, axis=1)
        deepest = tl.argmin(b_proj, axis=1, tie_break_left=True)
        second = tl.argmin(tl.where(vert == deepest[:, None], float("inf"), b_proj), axis=1, tie_break_left=True)
        better = (separation > best_separation) & (an > axis)
        # A blend, not a select, as upstream: a NaN separation on any axis poisons the result.
        weight = tl.where(better, 1.0, 0.0)
        best_separation = weight * separation + (1.0 - weight) * best_separation
        best = tl.where(better, axis, best)
        first_vertex = tl.where(better, deepest, first_vertex)
        second_vertex = tl.where(better, second, second_vertex)
    return (best_separation, best, _pick(bwx, first_vertex, COUNT=4), _pick(bwy, first_vertex, COUNT=4),
            _pick(bwx, second_vertex, COUNT=4), _pick(bwy, second_vertex, COUNT=4))


@triton.jit
def _polygon_polygon(rec, stride, a, b, pair, N: tl.constexpr, SLOTS: tl.constexpr, COUNT: tl.constexpr):
    """Up to two contact points sharing one normal and penetration.

    The reference face is the best separating face (a's unless b's beats it by the bias); the
    incident face of the other polygon is clipped to the reference face's extent in "reference
    space" (origin at the face's first vertex, y along the face, x = depth behind it). Point 0 is
    the deeper clipped point; point 1 exists only if both clipped points are behind the face.
    """
    apx, apy, ac, as_, avx, avy, _anx_, _any_, an, awx, awy, anx, any_ = _polygon(rec, stride, a, N)
    bpx, bpy, bc, bs, bvx, bvy, _bnx_, _bny_, bn, bwx, bwy, bnx, bny = _polygon(rec, stride, b, N)
    a_sep, a_axis, on_b0x, on_b0y, on_b1x, on_b1y = _best_axis(apx, apy, ac, as_, avx, avy, an, anx, any_, bwx, bwy, bn)
    b_sep, b_axis, on_a0x, on_a0y, on_a1x, on_a1y = _best_axis(bpx, bpy, bc, bs, bvx, bvy, bn, bnx, bny, awx, awy, an)
    on_b = a_sep + REFERENCE_FACE_BIAS < b_sep
    separation = tl.maximum(a_sep, b_sep)
    colliding = (separation < 0.0) & _is_active(rec, stride, a, N) & _is_active(rec, stride, b, N)
    colliding = colliding & _should_collide(rec, stride, a, b, N)

    ref_axis = tl.where(on_b, b_axis, a_axis)
    ref_n = tl.where(on_b, bn, an)
    ref_wx = tl.where(on_b[:, None], bwx, awx)
    ref_wy = tl.where(on_b[:, None], bwy, awy)
    ref_next = (ref_axis + 1) % tl.maximum(ref_n, 1)
    r0x = _pick(ref_wx, ref_axis, COUNT=4)
    r0y = _pick(ref_wy, ref_axis, COUNT=4)
    r1x = _pick(ref_wx, ref_next, COUNT=4)
    r1y = _pick(ref_wy, ref_next, COUNT=4)
    i0x = tl.where(on_b, on_a0x, on_b0x)
    i0y = tl.where(on_b, on_a0y, on_b0y)
    i1x = tl.where(on_b, on_a1x, on_b1x)
    i1y = tl.where(on_b, on_a1y, on_b1y)

    # Reference space: rotated by pi + atan2(fx, fy), which maps the face f = r0 - r1 onto -y.
    # Computed through the angle, as the reference does, so that exactly tied clipped depths (a
    # box flat on the floor) break the same way.
    fx = r0x - r1x
    fy = r0y - r1y
    face_length = _norm(fx, fy)
    to_reference = _atan2(fx, fy) + PI
    c = tl.cos(to_reference)
    s = tl.sin(to_reference)
    x0, y0 = _rotate(c, s, i0x - r0x, i0y - r0y)
    x1, y1 = _rotate(c, s, i1x - r0x, i1y - r0y)
    x0 = tl.minimum(tl.maximum(x0, CLIP_DEPTH_MIN), CLIP_DEPTH_MAX)
    x1 = tl.minimum(tl.maximum(x1, CLIP_DEPTH_MIN), CLIP_DEPTH_MAX)
    y0 = tl.minimum(tl.maximum(y0, 0.0), face_length)
    y1 = tl.minimum(tl.maximum(y1, 0.0), face_length)
    swap = x1 > x0
    both_behind = tl.minimum(x0, x1) > 0.0
    p0x, p0y = _unrotate(c, s, tl.where(swap, x1, x0), tl.where(swap, y1, y0))
    p1x, p1y = _unrotate(c, s, tl.where(swap, x0, x1), tl.where(swap, y0, y1))

    # Normal from a towards b: the reference face's world normal (negated when it is b's).
    a_nx, a_ny = _rotate(ac, as_, _pick(anx, a_axis, COUNT=4), _pick(any_, a_axis, COUNT=4))
    b_nx, b_ny = _rotate(bc, bs, _pick(bnx, b_axis, COUNT=4), _pick(bny, b_axis, COUNT=4))
    nx = tl.where(on_b, -b_nx, a_nx)
    ny = tl.where(on_b, -b_ny, a_ny)
    _write_contact(rec, stride, SLOTS, COUNT, 2 * pair, a, b, N, colliding, nx, ny, -separation, p0x + r0x, p0y + r0y)
    _write_contact(rec, stride, SLOTS, COUNT, 2 * pair + 1, a, b, N, colliding & both_behind, nx, ny, -separation,
                   p1x + r0x, p1y + r0y)


@triton.jit
def _circle_polygon(rec, stride, circle, polygon, slot, N: tl.constexpr, SLOTS: tl.constexpr, COUNT: tl.constexpr):
    """The circle centre, in the polygon's frame, clipped onto every edge; the nearest clip is the
    contact. A centre inside the polygon (inner side of every edge) is pushed out through it."""
    px, py, c, s, vx, vy, ex, ey, n_vertices, _wx, _wy, _nx, _ny = _polygon(rec, stride, polygon, N)
    qx, qy, _r, _vx, _vy, _w, _im, _ii = _motion(rec, stride, circle, N)
    cx, cy = _unrotate(c, s, qx - px, qy - py)
    cx2 = cx[:, None]
    cy2 = cy[:, None]
    k = tl.arange(0, 4)[None, :]
    # Edge k runs from vertex k to its successor (ex, ey); signed area < 0: centre on its inner side.
    signed = (vx - cx2) * (ey - cy2) - (vy - cy2) * (ex - cx2)
    inner = signed < 0.0
    dx = ex - vx
    dy = ey - vy
    edge_length = _norm(dx, dy)
    ux = dx / _nonzero(edge_length)
    uy = dy / _nonzero(edge_length)
    along = tl.minimum(tl.maximum(ux * (cx2 - vx) + uy * (cy2 - vy), 0.0), edge_length)
    clip_x = vx + along * ux
    clip_y = vy + along * uy
    clip_distance = _norm(clip_x - cx2, clip_y - cy2)
    triangle = n_vertices == 3
    first_three = tl.max(tl.where(k < 3, clip_distance, -float("inf")), axis=1)
    clip_distance = tl.where((k == 3) & triangle[:, None], first_three[:, None] + 1.0, clip_distance)
    nearest = tl.argmin(clip_distance, axis=1, tie_break_left=True)
    closest_x = _pick(clip_x, nearest, COUNT=4)
    closest_y = _pick(clip_y, nearest, COUNT=4)
    inner_count = tl.sum(tl.where(inner | ((k == 3) & triangle[:, None]), 1, 0), axis=1)
    inside = inner_count == 4

    lx = cx - closest_x
    ly = cy - closest_y
    distance = _norm(lx, ly)
    radius = _get(rec, stride, BODIES, N, RADIUS, circle)
    active = ((distance <= radius) | inside) & _is_active(rec, stride, circle, N) & _is_active(rec, stride, polygon, N)
    active = active & _should_collide(rec, stride, polygon, circle, N)
    wnx, wny = _rotate(c, s, lx, ly)
    flip = tl.where(inside, 1.0, -1.0)
    wnx = wnx * flip
    wny = wny * flip
    length = _nonzero(_norm(wnx, wny))
    pointx, pointy = _rotate(c, s, closest_x, closest_y)
    _write_contact(rec, stride, SLOTS, COUNT, slot, circle, polygon, N, active, wnx / length, wny / length,
                   tl.where(inside, radius, radius - distance), pointx + px, pointy + py)


@triton.jit
def _generate_contacts(rec, stride, pairs, N: tl.constexpr, RR: tl.constexpr, CR: tl.constexpr, CC: tl.constexpr,
                       RR_SLOTS: tl.constexpr, CR_SLOTS: tl.constexpr, CC_SLOTS: tl.constexpr):
    """Fresh manifolds of every pair of the static pair tables (``pairs``: rr, cr, cc rows)."""
    for p in range(RR):
        _polygon_polygon(rec, stride, tl.load(pairs + 2 * p), tl.load(pairs + 2 * p + 1), p, N=N, SLOTS=RR_SLOTS,
                         COUNT=2 * RR)
    for p in range(CR):
        q = RR + p
        _circle_polygon(rec, stride, tl.load(pairs + 2 * q), tl.load(pairs + 2 * q + 1), p, N=N, SLOTS=CR_SLOTS,
                        COUNT=CR)
    for p in range(CC):
        q = RR + CR + p
        _circle_circle(rec, stride, tl.load(pairs + 2 * q), tl.load(pairs + 2 * q + 1), p, N=N, SLOTS=CC_SLOTS,
                       COUNT=CC)


# ---------------------------------------------------------------------------------------------
# Joints, motors and thrusters
# ---------------------------------------------------------------------------------------------


@triton.jit
def _joint_ends(rec, stride, j, JOINTS: tl.constexpr, J: tl.constexpr, N: tl.constexpr):
    """Body indices of joint ``j`` and whether it is live (active, both ends active, not both static)."""
    a = _get(rec, stride, JOINTS, J, A_INDEX, j).to(tl.int32)
    b = _get(rec, stride, JOINTS, J, B_INDEX, j).to(tl.int32)
    movable = (_get(rec, stride, 0, N, INVERSE_MASS, a) != 0.0) | (_get(rec, stride, 0, N, INVERSE_MASS, b) != 0.0)
    live = (_get(rec, stride, JOINTS, J, JOINT_ACTIVE, j) != 0.0) & movable
    return a, b, live & _is_active(rec, stride, a, N) & _is_active(rec, stride, b, N)


@triton.jit
def _joint_arms(rec, stride, j, rot_a, rot_b, JOINTS: tl.constexpr, J: tl.constexpr):
    """World offsets of the joint's anchors from the centres of a and b."""
    ax, ay = _rotate(tl.cos(rot_a), tl.sin(rot_a), _get(rec, stride, JOINTS, J, A_RELATIVE_POS, j),
                     _get(rec, stride, JOINTS, J, A_RELATIVE_POS + 1, j))
    bx, by = _rotate(tl.cos(rot_b), tl.sin(rot_b), _get(rec, stride, JOINTS, J, B_RELATIVE_POS, j),
                     _get(rec, stride, JOINTS, J, B_RELATIVE_POS + 1, j))
    return ax, ay, bx, by


@triton.jit
def _apply_motors(rec, stride, actions, params, N: tl.constexpr, J: tl.constexpr, JOINTS: tl.constexpr,
                  DELTA: tl.constexpr):
    """Revolute motors: torque impulse ``tanh(speed error * decay) * power * axial mass``, fading
    over the last ``motor_joint_limit`` radians before a limit unless it pushes away from it.
    All joints read the same state (changes collected, then applied)."""
    dt = tl.load(params + DT)
    limit_zone = tl.load(params + MOTOR_JOINT_LIMIT)
    for j in range(J):
        a, b, live = _joint_ends(rec, stride, j, JOINTS, J, N)
        action = tl.load(actions + j * stride)
        _pax, _pay, rot_a, _vax, _vay, w_a, _ima, ii_a = _motion(rec, stride, a, N)
        _pbx, _pby, rot_b, _vbx, _vby, w_b, _imb, ii_b = _motion(rec, stride, b, N)
        live = live & (_get(rec, stride, JOINTS, J, MOTOR_ON, j) != 0.0) & (action != 0.0)
        live = live & (_get(rec, stride, JOINTS, J, IS_FIXED, j) == 0.0)
        axial_mass = 1.0 / _nonzero(ii_a + ii_b)
        power = tl.load(params + BASE_MOTOR_POWER) * _get(rec, stride, JOINTS, J, MOTOR_POWER, j) * dt * axial_mass
        target = _get(rec, stride, JOINTS, J, MOTOR_SPEED, j) * action * tl.load(params + BASE_MOTOR_SPEED)
        torque = _tanh((w_b - w_a - target) * tl.load(params + MOTOR_DECAY))
        relative = rot_b - rot_a - _get(rec, stride, JOINTS, J, JOINT_ROTATION, j)
        low = _get(rec, stride, JOINTS, J, MIN_ROTATION, j) + limit_zone
        high = _get(rec, stride, JOINTS, J, MAX_ROTATION, j) - limit_zone
        overshoot = relative - tl.minimum(tl.maximum(relative, low), high)
        no_fade = (overshoot == 0.0) | (_get(rec, stride, JOINTS, J, HAS_LIMITS, j) == 0.0)
        fade = tl.where(no_fade, 1.0, tl.maximum(0.0, 1.0 - tl.abs(overshoot) / limit_zone))
        away = tl.where(_sign(overshoot) != _sign(action), 1.0, 0.0)
        power = power * tl.maximum(fade, away)
        _add_delta(rec, stride, DELTA, a, N, 0.0, 0.0, tl.where(live, power * torque * ii_a, 0.0))
        _add_delta(rec, stride, DELTA, b, N, 0.0, 0.0, tl.where(live, -power * torque * ii_b, 0.0))
    _apply_deltas(rec, stride, DELTA, N)


@triton.jit
def _apply_thrusters(rec, stride, actions, params, N: tl.constexpr, J: tl.constexpr, T: tl.constexpr,
                     THRUSTERS: tl.constexpr):
    """Impulse ``power * action * base_thruster_power * dt`` along each thruster's world
    direction, at its mount point on the parent."""
    scale = tl.load(params + BASE_THRUSTER_POWER) * tl.load(params + DT)
    for t in range(T):
        parent = _get(rec, stride, THRUSTERS, T, OBJECT_INDEX, t).to(tl.int32)
        _px, _py, rot, _vx, _vy, _w, im, ii = _motion(rec, stride, parent, N)
        arm_x, arm_y = _rotate(tl.cos(rot), tl.sin(rot), _get(rec, stride, THRUSTERS, T, THRUSTER_OFFSET, t),
                               _get(rec, stride, THRUSTERS, T, THRUSTER_OFFSET + 1, t))
        angle = _get(rec, stride, THRUSTERS, T, THRUSTER_ROTATION, t) + rot
        dx = tl.cos(angle)
        dy = tl.sin(angle)
        force = _get(rec, stride, THRUSTERS, T, THRUSTER_POWER, t) * _get(rec, stride, THRUSTERS, T, THRUSTER_ACTIVE, t)
        force = force * scale * tl.load(actions + (J + t) * stride)
        _add_velocity(rec, stride, parent, N, im * dx * force, im * dy * force, ii * _cross(arm_x, arm_y, dx, dy) * force)


@triton.jit
def _warm_start_joints(rec, stride, N: tl.constexpr, J: tl.constexpr, JOINTS: tl.constexpr):
    """Re-apply each live joint's accumulated linear and (fixed-joint) angular impulse."""
    for j in range(J):
        a, b, live = _joint_ends(rec, stride, j, JOINTS, J, N)
        _pax, _pay, rot_a, _vax, _vay, _wa, im_a, ii_a = _motion(rec, stride, a, N)
        _pbx, _pby, rot_b, _vbx, _vby, _wb, im_b, ii_b = _motion(rec, stride, b, N)
        arm_ax, arm_ay, arm_bx, arm_by = _joint_arms(rec, stride, j, rot_a, rot_b, JOINTS, J)
        ix = _get(rec, stride, JOINTS, J, ACC_IMPULSE, j)
        iy = _get(rec, stride, JOINTS, J, ACC_IMPULSE + 1, j)
        angular = _get(rec, stride, JOINTS, J, ACC_R_IMPULSE, j)
        dw_a = ii_a * _cross(arm_ax, arm_ay, ix, iy) + angular * ii_a
        dw_b = -ii_b * _cross(arm_bx, arm_by, ix, iy) - angular * ii_b
        _add_velocity(rec, stride, a, N, tl.where(live, ix * im_a, 0.0), tl.where(live, iy * im_a, 0.0),
                      tl.where(live, dw_a, 0.0))
        _add_velocity(rec, stride, b, N, tl.where(live, -ix * im_b, 0.0), tl.where(live, -iy * im_b, 0.0),
                      tl.where(live, dw_b, 0.0))


@triton.jit
def _solve_joints(rec, stride, params, N: tl.constexpr, J: tl.constexpr, JOINTS: tl.constexpr):
    """One Gauss-Seidel pass over the joints, positions corrected too.

    Linear: the impulse cancelling the anchors' relative velocity plus a Baumgarte bias on the
    anchor gap ``d``, over the effective mass along that velocity, times the stiffness; plus a
    direct position correction ``beta_p * d`` shared by inverse mass. Angular: a fixed joint
    cancels relative spin plus a bias on its angle error; a revolute joint past a limit does the
    same with the limit bias unless the spin already corrects it.
    """
    for j in range(J):
        a, b, live = _joint_ends(rec, stride, j, JOINTS, J, N)
        pax, pay, rot_a, vax, vay, w_a, im_a, ii_a = _motion(rec, stride, a, N)
        pbx, pby, rot_b, vbx, vby, w_b, im_b, ii_b = _motion(rec, stride, b, N)
        arm_ax, arm_ay, arm_bx, arm_by = _joint_arms(rec, stride, j, rot_a, rot_b, JOINTS, J)
        sum_im = _nonzero(im_a + im_b)
        sum_ii = _nonzero(ii_a + ii_b)
        anchor_ax = pax + arm_ax
        anchor_ay = pay + arm_ay
        anchor_bx = pbx + arm_bx
        anchor_by = pby + arm_by
        # Joint point: inverse-mass-weighted blend of the anchors, or the immovable body's anchor.
        nz_a = _nonzero(im_a)
        nz_b = _nonzero(im_b)
        total_mass = 1.0 / nz_a + 1.0 / nz_b
        blend_x = (anchor_ax / nz_a + anchor_bx / nz_b) / total_mass
        blend_y = (anchor_ay / nz_a + anchor_by / nz_b) / total_mass
        point_x = tl.where(im_a == 0.0, anchor_ax, tl.where(im_b == 0.0, anchor_bx, blend_x))
        point_y = tl.where(im_a == 0.0, anchor_ay, tl.where(im_b == 0.0, anchor_by, blend_y))
        gap_x = anchor_bx - anchor_ax
        gap_y = anchor_by - anchor_ay

        rvx = vbx - w_b * (point_y - pby) - vax + w_a * (point_y - pay)
        rvy = vby + w_b * (point_x - pbx) - vay - w_a * (point_x - pax)
        speed = _nonzero(_norm(rvx, rvy))
        dir_x = rvx / speed
        dir_y = rvy / speed
        beta_v = tl.load(params + BAUMGARTE_JOINTS_V)
        arm_a_dir = _cross(arm_ax, arm_ay, dir_x, dir_y)
        arm_b_dir = _cross(arm_bx, arm_by, dir_x, dir_y)
        effective = _nonzero(sum_im + (arm_a_dir * arm_a_dir * ii_a + arm_b_dir * arm_b_dir * ii_b))
        stiffness = tl.load(params + JOINT_STIFFNESS)
        ix = (rvx + beta_v * gap_x) / effective * stiffness
        iy = (rvy + beta_v * gap_y) / effective * stiffness
        dw_a = _cross(arm_ax, arm_ay, ix, iy) * ii_a
        dw_b = -_cross(arm_bx, arm_by, ix, iy) * ii_b
        beta_p = tl.load(params + BAUMGARTE_JOINTS_P)

        fixed = _get(rec, stride, JOINTS, J, IS_FIXED, j) != 0.0
        angle = rot_b - rot_a - _get(rec, stride, JOINTS, J, JOINT_ROTATION, j)
        limited = tl.minimum(tl.maximum(angle, _get(rec, stride, JOINTS, J, MIN_ROTATION, j)),
                             _get(rec, stride, JOINTS, J, MAX_ROTATION, j))
        limit_bias = (angle - limited) * tl.load(params + BAUMGARTE_LIMIT_AV)
        fixed_bias = angle * tl.load(params + BAUMGARTE_FIXED_AV)
        spin = w_b + dw_b - w_a - dw_a
        not_correcting = tl.where(_sign(spin) == _sign(limit_bias), 1.0, 0.0)
        angular_error = tl.where(fixed, spin + fixed_bias, not_correcting * (spin + limit_bias))
        applies = fixed | ((_get(rec, stride, JOINTS, J, HAS_LIMITS, j) != 0.0) & (limited != angle))
        angular = tl.where(applies, angular_error / sum_ii, 0.0)
        dw_a += angular * ii_a
        dw_b -= angular * ii_b
        # Limits do not accumulate: only fixed joints carry an angular impulse to the next step.
        acc_r = tl.where(fixed, angular + _get(rec, stride, JOINTS, J, ACC_R_IMPULSE, j), 0.0)

        _add_velocity(rec, stride, a, N, tl.where(live, im_a * ix, 0.0), tl.where(live, im_a * iy, 0.0),
                      tl.where(live, dw_a, 0.0))
        _add_velocity(rec, stride, b, N, tl.where(live, -im_b * ix, 0.0), tl.where(live, -im_b * iy, 0.0),
                      tl.where(live, dw_b, 0.0))
        _add(rec, stride, 0, N, POSITION, a, tl.where(live, gap_x / sum_im * im_a * beta_p, 0.0))
        _add(rec, stride, 0, N, POSITION + 1, a, tl.where(live, gap_y / sum_im * im_a * beta_p, 0.0))
        _add(rec, stride, 0, N, POSITION, b, tl.where(live, -(gap_x / sum_im) * im_b * beta_p, 0.0))
        _add(rec, stride, 0, N, POSITION + 1, b, tl.where(live, -(gap_y / sum_im) * im_b * beta_p, 0.0))
        _put(rec, stride, JOINTS, J, JOINT_POSITION, j, tl.where(live, point_x, 0.0))
        _put(rec, stride, JOINTS, J, JOINT_POSITION + 1, j, tl.where(live, point_y, 0.0))
        _put(rec, stride, JOINTS, J, ACC_IMPULSE, j, tl.where(live, ix + _get(rec, stride, JOINTS, J, ACC_IMPULSE, j), 0.0))
        _put(rec, stride, JOINTS, J, ACC_IMPULSE + 1, j,
             tl.where(live, iy + _get(rec, stride, JOINTS, J, ACC_IMPULSE + 1, j), 0.0))
        _put(rec, stride, JOINTS, J, ACC_R_IMPULSE, j, tl.where(live, acc_r, 0.0))


# ---------------------------------------------------------------------------------------------
# Contact constraints
# ---------------------------------------------------------------------------------------------


@triton.jit
def _contact_live(rec, stride, a, b, active, N: tl.constexpr, COLLISION: tl.constexpr):
    """Impulses flow only through active contacts of live, not-both-static, non-jointed bodies."""
    movable = (_get(rec, stride, BODIES, N, INVERSE_MASS, a) != 0.0) | (
        _get(rec, stride, BODIES, N, INVERSE_MASS, b) != 0.0)
    may_touch = tl.load(rec + (COLLISION + a * N + b) * stride) != 0.0
    return active & movable & may_touch & _is_active(rec, stride, a, N) & _is_active(rec, stride, b, N)


@triton.jit
def _contact(rec, stride, a, b, slot, N: tl.constexpr, SLOTS: tl.constexpr, COUNT: tl.constexpr,
             COLLISION: tl.constexpr):
    """A contact point: whether impulses flow through it, normal, world point, accumulated impulses."""
    active = _get(rec, stride, SLOTS, COUNT, CONTACT_ACTIVE, slot) != 0.0
    live = _contact_live(rec, stride, a, b, active, N, COLLISION)
    nx = _get(rec, stride, SLOTS, COUNT, NORMAL, slot)
    ny = _get(rec, stride, SLOTS, COUNT, NORMAL + 1, slot)
    cx = _get(rec, stride, SLOTS, COUNT, CONTACT_POINT, slot)
    cy = _get(rec, stride, SLOTS, COUNT, CONTACT_POINT + 1, slot)
    acc_n = _get(rec, stride, SLOTS, COUNT, ACC_NORMAL, slot)
    acc_t = _get(rec, stride, SLOTS, COUNT, ACC_TANGENT, slot)
    return live, nx, ny, cx, cy, acc_n, acc_t


@triton.jit
def _warm_start_contact(rec, stride, a, b, slot, N: tl.constexpr, SLOTS: tl.constexpr, COUNT: tl.constexpr,
                        COLLISION: tl.constexpr):
    """Re-apply a contact's accumulated normal and friction impulse."""
    live, nx, ny, cx, cy, acc_n, acc_t = _contact(rec, stride, a, b, slot, N, SLOTS, COUNT, COLLISION)
    # Tangent = normal turned clockwise: (ny, -nx).
    ix = acc_n * nx + acc_t * ny
    iy = acc_n * ny - acc_t * nx
    pax, pay, _ra, _vax, _vay, _wa, im_a, ii_a = _motion(rec, stride, a, N)
    pbx, pby, _rb, _vbx, _vby, _wb, im_b, ii_b = _motion(rec, stride, b, N)
    _add_velocity(rec, stride, a, N, tl.where(live, -ix * im_a, 0.0), tl.where(live, -iy * im_a, 0.0),
                  tl.where(live, -ii_a * _cross(cx - pax, cy - pay, ix, iy), 0.0))
    _add_velocity(rec, stride, b, N, tl.where(live, ix * im_b, 0.0), tl.where(live, iy * im_b, 0.0),
                  tl.where(live, ii_b * _cross(cx - pbx, cy - pby, ix, iy), 0.0))


@triton.jit
def _warm_start(rec, stride, pairs, N: tl.constexpr, J: tl.constexpr, RR: tl.constexpr, CR: tl.constexpr,
                CC: tl.constexpr, RR_SLOTS: tl.constexpr, CR_SLOTS: tl.constexpr, CC_SLOTS: tl.constexpr,
                JOINTS: tl.constexpr, COLLISION: tl.constexpr):
    """Warm starting in the reference's order: polygon pairs (both points), circle-polygon,
    circle-circle, joints. Impulses depend on positions only, so applying them one by one equals
    applying them together."""
    for p in range(RR):
        a = tl.load(pairs + 2 * p)
        b = tl.load(pairs + 2 * p + 1)
        _warm_start_contact(rec, stride, a, b, 2 * p, N=N, SLOTS=RR_SLOTS, COUNT=2 * RR, COLLISION=COLLISION)
        _warm_start_contact(rec, stride, a, b, 2 * p + 1, N=N, SLOTS=RR_SLOTS, COUNT=2 * RR, COLLISION=COLLISION)
    for p in range(CR):
        q = RR + p
        _warm_start_contact(rec, stride, tl.load(pairs + 2 * q), tl.load(pairs + 2 * q + 1), p, N=N, SLOTS=CR_SLOTS,
                            COUNT=CR, COLLISION=COLLISION)
    for p in range(CC):
        q = RR + CR + p
        _warm_start_contact(rec, stride, tl.load(pairs + 2 * q), tl.load(pairs + 2 * q + 1), p, N=N, SLOTS=CC_SLOTS,
                            COUNT=CC, COLLISION=COLLISION)
    _warm_start_joints(rec, stride, N, J, JOINTS)


@triton.jit
def _effective_inverse_mass(im_a, ii_a, im_b, ii_b, rax, ray, rbx, rby, ax, ay):
    """``1/m_a + 1/m_b + (r_a x axis)^2 / I_a + (r_b x axis)^2 / I_b`` via dot products."""
    da = rax * ax + ray * ay
    db = rbx * ax + rby * ay
    return im_a + im_b + ii_a * (rax * rax + ray * ray - da * da) + ii_b * (rbx * rbx + rby * rby - db * db)


@triton.jit
def _solve_contact(rec, stride, params, a, b, slot, N: tl.constexpr, SLOTS: tl.constexpr, COUNT: tl.constexpr,
                   COLLISION: tl.constexpr, DELTA: tl.constexpr):
    """One visit of a contact point (sequential impulses).

    Normal: the impulse that brings the relative normal velocity ``vn`` to the Baumgarte bias
    ``beta/dt * max(0, penetration - slop)`` minus the restitution target, clamped so the
    accumulated normal impulse stays >= 0. Friction: the impulse cancelling the tangential
    velocity after it, accumulated within ``+-mu * normal impulse``,
    ``mu = sqrt((f_a mu0)^2 + (f_b mu0)^2)``. Velocity changes go to the batch's scratch rows.
    """
    live, nx, ny, cx, cy, old_n, old_t = _contact(rec, stride, a, b, slot, N, SLOTS, COUNT, COLLISION)
    pax, pay, _ra, vax, vay, w_a, im_a, ii_a = _motion(rec, stride, a, N)
    pbx, pby, _rb, vbx, vby, w_b, im_b, ii_b = _motion(rec, stride, b, N)
    rax = cx - pax
    ray = cy - pay
    rbx = cx - pbx
    rby = cy - pby
    vn = (vbx - w_b * rby - vax + w_a * ray) * nx + (vby + w_b * rbx - vay - w_a * rax) * ny

    dt = tl.load(params + DT)
    penetration = _get(rec, stride, SLOTS, COUNT, PENETRATION, slot)
    bias = -tl.load(params + BAUMGARTE_COLLISION) / dt * tl.minimum(0.0, tl.load(params + SLOP) - penetration)
    target = _get(rec, stride, SLOTS, COUNT, RESTITUTION_TARGET, slot)
    step_n = (bias - vn - target) / _nonzero(_effective_inverse_mass(im_a, ii_a, im_b, ii_b, rax, ray, rbx, rby, nx, ny))
    acc_n = tl.maximum(old_n + step_n, 0.0)
    ix = (acc_n - old_n) * nx
    iy = (acc_n - old_n) * ny
    dvax = -im_a * ix
    dvay = -im_a * iy
    dvbx = im_b * ix
    dvby = im_b * iy
    dwa = -ii_a * _cross(rax, ray, ix, iy)
    dwb = ii_b * _cross(rbx, rby, ix, iy)

    tx = ny
    ty = -nx
    ux = (vbx + dvbx) - (w_b + dwb) * rby - (vax + dvax) + (w_a + dwa) * ray
    uy = (vby + dvby) + (w_b + dwb) * rbx - (vay + dvay) - (w_a + dwa) * rax
    vt = ux * tx + uy * ty
    mu0 = tl.load(params + BASE_FRICTION)
    fa = _get(rec, stride, BODIES, N, FRICTION, a) * mu0
    fb = _get(rec, stride, BODIES, N, FRICTION, b) * mu0
    max_friction = tl.sqrt_rn(fa * fa + fb * fb) * acc_n
    step_t = -vt / _nonzero(_effective_inverse_mass(im_a, ii_a, im_b, ii_b, rax, ray, rbx, rby, tx, ty))
    acc_t = tl.minimum(tl.maximum(old_t + step_t, -max_friction), max_friction)
    jx = (acc_t - old_t) * tx
    jy = (acc_t - old_t) * ty
    dvax -= im_a * jx
    dvay -= im_a * jy
    dwa -= ii_a * _cross(rax, ray, jx, jy)
    dvbx += im_b * jx
    dvby += im_b * jy
    dwb += ii_b * _cross(rbx, rby, jx, jy)

    _add_delta(rec, stride, DELTA, a, N, tl.where(live, dvax, 0.0), tl.where(live, dvay, 0.0), tl.where(live, dwa, 0.0))
    _add_delta(rec, stride, DELTA, b, N, tl.where(live, dvbx, 0.0), tl.where(live, dvby, 0.0), tl.where(live, dwb, 0.0))
    _put(rec, stride, SLOTS, COUNT, ACC_NORMAL, slot, tl.where(live, acc_n, 0.0))
    _put(rec, stride, SLOTS, COUNT, ACC_TANGENT, slot, tl.where(live, acc_t, 0.0))


@triton.jit
def _sort_contacts(rec, stride, ORDER: tl.constexpr, K: tl.constexpr, SLOTS: tl.constexpr, POINTS: tl.constexpr):
    """Write the set's pair numbers to rows ``ORDER ..`` sorted inactive-first (stable), by the
    activity of each pair's first point."""
    inactive_total = tl.zeros_like(_get(rec, stride, SLOTS, K * POINTS, CONTACT_ACTIVE, 0)).to(tl.int32)
    for p in range(K):
        inactive_total += tl.where(_get(rec, stride, SLOTS, K * POINTS, CONTACT_ACTIVE, p * POINTS) == 0.0, 1, 0)
    inactive_seen = inactive_total * 0
    active_seen = inactive_total * 0
    for p in range(K):
        active = _get(rec, stride, SLOTS, K * POINTS, CONTACT_ACTIVE, p * POINTS) != 0.0
        rank = tl.where(active, inactive_total + active_seen, inactive_seen)
        tl.store(rec + (ORDER + rank) * stride, tl.zeros_like(rank).to(tl.float32) + p)
        active_seen += tl.where(active, 1, 0)
        inactive_seen += tl.where(active, 0, 1)


@triton.jit
def _solve_contact_set(rec, stride, params, pairs, point, PAIRS: tl.constexpr, K: tl.constexpr, SLOTS: tl.constexpr,
                       POINTS: tl.constexpr, ORDER: tl.constexpr, N: tl.constexpr, COLLISION: tl.constexpr,
                       DELTA: tl.constexpr, SOLVER_BATCH: tl.constexpr):
    """One pass over a contact set (point ``point`` of each of its ``K`` pairs), batch by batch.

    Batch ``b`` holds sorted positions ``b, b + n, b + 2n, ...`` (``n`` batches); positions past
    ``K`` are padding, which upstream aliases to the last pair: a padded batch ends with the last
    pair's accumulated impulses zeroed."""
    batches: tl.constexpr = (K + SOLVER_BATCH - 1) // SOLVER_BATCH  # annotated: Triton 3.6's interpreter needs it
    for batch in range(batches):
        for position in range(batch, K, batches):
            pair = tl.load(rec + (ORDER + position) * stride).to(tl.int32)
            a = tl.load(pairs + 2 * (PAIRS + pair))
            b = tl.load(pairs + 2 * (PAIRS + pair) + 1)
            _solve_contact(rec, stride, params, a, b, pair * POINTS + point, N=N, SLOTS=SLOTS, COUNT=K * POINTS,
                           COLLISION=COLLISION, DELTA=DELTA)
        _apply_deltas(rec, stride, DELTA, N)
        if (SOLVER_BATCH - 1) * batches + batch >= K:
            last = (K - 1) * POINTS + point
            zero = tl.zeros_like(_get(rec, stride, SLOTS, K * POINTS, ACC_NORMAL, last))
            _put(rec, stride, SLOTS, K * POINTS, ACC_NORMAL, last, zero)
            _put(rec, stride, SLOTS, K * POINTS, ACC_TANGENT, last, zero)


# ---------------------------------------------------------------------------------------------
# Integration and contact info
# ---------------------------------------------------------------------------------------------


@triton.jit
def _integrate(rec, stride, params, N: tl.constexpr):
    """Explicit Euler on positions (clipped) and rotations, then velocity clipping."""
    dt = tl.load(params + DT)
    clip_p = tl.load(params + CLIP_POSITION)
    clip_v = tl.load(params + CLIP_VELOCITY)
    clip_w = tl.load(params + CLIP_ANGULAR_VELOCITY)
    for i in range(N):
        px, py, rot, vx, vy, w, _im, _ii = _motion(rec, stride, i, N)
        _put(rec, stride, 0, N, POSITION, i, tl.minimum(tl.maximum(px + vx * dt, -clip_p), clip_p))
        _put(rec, stride, 0, N, POSITION + 1, i, tl.minimum(tl.maximum(py + vy * dt, -clip_p), clip_p))
        _put(rec, stride, 0, N, ROTATION, i, rot + w * dt)
        _put(rec, stride, 0, N, VELOCITY, i, tl.minimum(tl.maximum(vx, -clip_v), clip_v))
        _put(rec, stride, 0, N, VELOCITY + 1, i, tl.minimum(tl.maximum(vy, -clip_v), clip_v))
        _put(rec, stride, 0, N, ANGULAR_VELOCITY, i, tl.minimum(tl.maximum(w, -clip_w), clip_w))


@triton.jit
def _place_thrusters(rec, stride, N: tl.constexpr, T: tl.constexpr, THRUSTERS: tl.constexpr):
    """Cache each thruster's world position on its parent."""
    for t in range(T):
        parent = _get(rec, stride, THRUSTERS, T, OBJECT_INDEX, t).to(tl.int32)
        px, py, rot, _vx, _vy, _w, _im, _ii = _motion(rec, stride, parent, N)
        ox, oy = _rotate(tl.cos(rot), tl.sin(rot), _get(rec, stride, THRUSTERS, T, THRUSTER_OFFSET, t),
                         _get(rec, stride, THRUSTERS, T, THRUSTER_OFFSET + 1, t))
        _put(rec, stride, THRUSTERS, T, THRUSTER_POSITION, t, px + ox)
        _put(rec, stride, THRUSTERS, T, THRUSTER_POSITION + 1, t, py + oy)


@triton.jit
def _role(rec, stride, i, N: tl.constexpr):
    return _get(rec, stride, BODIES, N, ROLE, i) * _get(rec, stride, BODIES, N, BODY_ACTIVE, i)


@triton.jit
def _set_touches(rec, stride, pairs, PAIRS: tl.constexpr, K: tl.constexpr, SLOTS: tl.constexpr, POINTS: tl.constexpr,
                 N: tl.constexpr, blue, red, distance):
    """Fold one contact set into the contact info: green-blue / green-red contacts (first point
    of polygon pairs) and the summed centre distance of green-blue pairs."""
    for p in range(K):
        a = tl.load(pairs + 2 * (PAIRS + p))
        b = tl.load(pairs + 2 * (PAIRS + p) + 1)
        product = _role(rec, stride, a, N) * _role(rec, stride, b, N)
        active = _get(rec, stride, SLOTS, K * POINTS, CONTACT_ACTIVE, p * POINTS) != 0.0
        blue = blue | (active & (product == GREEN_BLUE))
        red = red | (active & (product == GREEN_RED))
        pax, pay, _ra, _vax, _vay, _wa, _ima, _iia = _motion(rec, stride, a, N)
        pbx, pby, _rb, _vbx, _vby, _wb, _imb, _iib = _motion(rec, stride, b, N)
        # A product, as upstream: NaN positions give a NaN distance.
        distance += tl.where(product == GREEN_BLUE, 1.0, 0.0) * _norm(pax - pbx, pay - pby)
    return blue, red, distance


@triton.jit
def _contact_info(rec, stride, pairs, info, N: tl.constexpr, RR: tl.constexpr, CR: tl.constexpr, CC: tl.constexpr,
                  RR_SLOTS: tl.constexpr, CR_SLOTS: tl.constexpr, CC_SLOTS: tl.constexpr):
    """Rows ``info[0..2]``: green touches blue, green touches red, green-blue distance."""
    distance = tl.zeros_like(_get(rec, stride, BODIES, N, ROLE, 0))
    blue = distance != 0.0
    red = blue
    blue, red, distance = _set_touches(rec, stride, pairs, PAIRS=0, K=RR, SLOTS=RR_SLOTS, POINTS=2, N=N,
                                       blue=blue, red=red, distance=distance)
    blue, red, distance = _set_touches(rec, stride, pairs, PAIRS=RR, K=CR, SLOTS=CR_SLOTS, POINTS=1, N=N,
                                       blue=blue, red=red, distance=distance)
    blue, red, distance = _set_touches(rec, stride, pairs, PAIRS=RR + CR, K=CC, SLOTS=CC_SLOTS, POINTS=1, N=N,
                                       blue=blue, red=red, distance=distance)
    tl.store(info, tl.where(blue, 1.0, 0.0))
    tl.store(info + stride, tl.where(red, 1.0, 0.0))
    tl.store(info + 2 * stride, distance)


# ---------------------------------------------------------------------------------------------
# The fused kernel
# ---------------------------------------------------------------------------------------------


NAN_SCAN_ROWS = tl.constexpr(16)
"""State rows the NaN check loads per iteration (a ``(16, BLOCK)`` tile)."""


@triton.jit
def fused_env_step_kernel(
    state,  # (rows, stride) float32, updated in place
    actions,  # (J + T, stride) float32 processed actions
    physics,  # (len(PHYSICS_PARAM_NAMES),) float32 physics parameters (not "params": Triton's launcher reserves that name)
    pairs,  # (RR + CR + CC, 2) int32 global body indices
    info,  # (3 * FRAME_SKIP + 1, stride) float32 out: touches blue, touches red, distance per substep; NaN flag
    stride,  # padded batch: the row length of every matrix
    FRAME_SKIP: tl.constexpr, N: tl.constexpr, J: tl.constexpr, T: tl.constexpr,
    RR: tl.constexpr, CR: tl.constexpr, CC: tl.constexpr,
    JOINTS: tl.constexpr, THRUSTERS: tl.constexpr, RR_SLOTS: tl.constexpr, CR_SLOTS: tl.constexpr,
    CC_SLOTS: tl.constexpr, COLLISION: tl.constexpr, GLOBALS: tl.constexpr, STATE_ROWS: tl.constexpr,
    DELTA: tl.constexpr, ORDER: tl.constexpr, ITERATIONS: tl.constexpr, SOLVER_BATCH: tl.constexpr,
    WARM_START: tl.constexpr, BLOCK: tl.constexpr,
):
    """``FRAME_SKIP`` physics substeps of ``BLOCK`` environments, one per lane; then whether each
    environment's state holds a NaN."""
    env = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    rec = state + env
    act = actions + env
    for substep in range(FRAME_SKIP):
        _apply_gravity(rec, stride, params=physics, N=N, GLOBALS=GLOBALS)
        _generate_contacts(rec, stride, pairs, N=N, RR=RR, CR=CR, CC=CC, RR_SLOTS=RR_SLOTS, CR_SLOTS=CR_SLOTS,
                           CC_SLOTS=CC_SLOTS)
        _apply_motors(rec, stride, act, params=physics, N=N, J=J, JOINTS=JOINTS, DELTA=DELTA)
        _apply_thrusters(rec, stride, act, params=physics, N=N, J=J, T=T, THRUSTERS=THRUSTERS)
        if WARM_START:
            _warm_start(rec, stride, pairs, N=N, J=J, RR=RR, CR=CR, CC=CC, RR_SLOTS=RR_SLOTS, CR_SLOTS=CR_SLOTS,
                        CC_SLOTS=CC_SLOTS, JOINTS=JOINTS, COLLISION=COLLISION)
        _sort_contacts(rec, stride, ORDER=ORDER, K=RR, SLOTS=RR_SLOTS, POINTS=2)
        _sort_contacts(rec, stride, ORDER=ORDER + RR, K=CR, SLOTS=CR_SLOTS, POINTS=1)
        _sort_contacts(rec, stride, ORDER=ORDER + RR + CR, K=CC, SLOTS=CC_SLOTS, POINTS=1)
        for _iteration in range(ITERATIONS):
            _solve_joints(rec, stride, params=physics, N=N, J=J, JOINTS=JOINTS)
            _solve_contact_set(rec, stride, physics, pairs, point=0, PAIRS=0, K=RR, SLOTS=RR_SLOTS, POINTS=2,
                               ORDER=ORDER, N=N, COLLISION=COLLISION, DELTA=DELTA, SOLVER_BATCH=SOLVER_BATCH)
            _solve_contact_set(rec, stride, physics, pairs, point=1, PAIRS=0, K=RR, SLOTS=RR_SLOTS, POINTS=2,
                               ORDER=ORDER, N=N, COLLISION=COLLISION, DELTA=DELTA, SOLVER_BATCH=SOLVER_BATCH)
            _solve_contact_set(rec, stride, physics, pairs, point=0, PAIRS=RR, K=CR, SLOTS=CR_SLOTS, POINTS=1,
                               ORDER=ORDER + RR, N=N, COLLISION=COLLISION, DELTA=DELTA, SOLVER_BATCH=SOLVER_BATCH)
            _solve_contact_set(rec, stride, physics, pairs, point=0, PAIRS=RR + CR, K=CC, SLOTS=CC_SLOTS, POINTS=1,
                               ORDER=ORDER + RR + CR, N=N, COLLISION=COLLISION, DELTA=DELTA, SOLVER_BATCH=SOLVER_BATCH)
        _integrate(rec, stride, params=physics, N=N)
        _place_thrusters(rec, stride, N=N, T=T, THRUSTERS=THRUSTERS)
        _contact_info(rec, stride, pairs, info + env + 3 * substep * stride, N=N, RR=RR, CR=CR, CC=CC,
                      RR_SLOTS=RR_SLOTS, CR_SLOTS=CR_SLOTS, CC_SLOTS=CC_SLOTS)
    # The env's termination rule, a NaN in any float field of the state: the state rows hold every
    # float field (layout.py), so the lane's column of rows [0, STATE_ROWS) decides.
    rows = tl.arange(0, NAN_SCAN_ROWS)
    nans = tl.zeros((BLOCK,), dtype=tl.int32)
    for first in range(0, STATE_ROWS, NAN_SCAN_ROWS):
        row = first + rows
        values = tl.load(state + row[:, None] * stride + env[None, :], mask=row[:, None] < STATE_ROWS, other=0.0)
        nans += tl.sum((values != values).to(tl.int32), axis=0)
    tl.store(info + env + 3 * FRAME_SKIP * stride, tl.where(nans > 0, 1.0, 0.0))
