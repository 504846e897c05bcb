"""Contact constraints: warm starting and the batched sequential-impulse solve.

A *contact set* is one kind of pair (polygon-polygon point 0, polygon-polygon point 1,
circle-polygon, circle-circle): ``K`` manifolds (dicts of ``(K, ...)`` arrays) and their static
``(K, 2)`` table of global body indices.

Solving order (upstream's): the contacts of a set are split into batches of
``solver_batch_size``. Contacts in one batch are solved together from the same velocities
(Jacobi), batches one after the other (Gauss-Seidel). To spread active contacts over the batches,
contacts are sorted inactive-first (stable) and dealt out round-robin: batch ``k`` holds sorted
positions ``k, k + n_batches, k + 2 n_batches, ...``. Slots past ``K`` are padding.

Padding quirk kept from upstream: a padding slot aliases the *last* contact of the set and writes
its zero result after the real one, so the last contact's accumulated impulses are zero after any
batch that contains padding.
"""

import math

import jax
import jax.numpy as jnp

from .bodies import add_pair_velocity, both_static, take, zero_rows, zero_unless
from .math2d import cross, dot, nonzero, spin_velocity, tangent_of

IMPULSE_KEYS = ("acc_impulse_normal", "acc_impulse_tangent")


def _live(a, b, m, may_touch):
    """Impulses are exchanged only by active contacts between live, movable, non-jointed bodies."""
    return m["active"] & ~both_static(a, b) & may_touch & a["active"] & b["active"]


def warm_start(a, b, m, may_touch):
    """Re-apply a contact's accumulated normal and friction impulse. ``(dv_a, dv_b, dw_a, dw_b)``."""
    arm_a = m["collision_point"] - a["position"]
    arm_b = m["collision_point"] - b["position"]
    impulse = m["acc_impulse_normal"] * m["normal"] + m["acc_impulse_tangent"] * tangent_of(m["normal"])
    deltas = (
        -impulse * a["inverse_mass"],
        impulse * b["inverse_mass"],
        -a["inverse_inertia"] * cross(arm_a, impulse),
        b["inverse_inertia"] * cross(arm_b, impulse),
    )
    return zero_unless(_live(a, b, m, may_touch), deltas)


def _effective_inverse_mass(a, b, arm_a, arm_b, axis):
    """``1/m_a + 1/m_b + (r_a x axis)^2 / I_a + (r_b x axis)^2 / I_b``, written with dot products."""
    ra, rb = dot(arm_a, axis), dot(arm_b, axis)
    return (
        a["inverse_mass"]
        + b["inverse_mass"]
        + a["inverse_inertia"] * (dot(arm_a, arm_a) - ra * ra)
        + b["inverse_inertia"] * (dot(arm_b, arm_b) - rb * rb)
    )


def solve(a, b, m, may_touch, p):
    """One visit of a contact point.

    Normal: the impulse that brings the relative normal velocity ``vn`` to the Baumgarte bias
    ``beta/dt * max(0, penetration - slop)`` minus the restitution target, clamped so that the
    accumulated normal impulse stays >= 0.
    Friction: the impulse that cancels the tangential velocity after the normal impulse, with the
    accumulated friction clamped to ``mu * accumulated normal``,
    ``mu = sqrt((f_a * base_friction)^2 + (f_b * base_friction)^2)``.

    Returns ``(dv_a, dv_b, dw_a, dw_b, acc_normal, acc_tangent)``.
    """
    normal = m["normal"]
    arm_a = m["collision_point"] - a["position"]
    arm_b = m["collision_point"] - b["position"]
    va = a["velocity"] + spin_velocity(a["angular_velocity"], arm_a)
    vb = b["velocity"] + spin_velocity(b["angular_velocity"], arm_b)
    vn = dot(vb - va, normal)

    bias = -p["baumgarte_coefficient_collision"] / p["dt"] * jnp.minimum(0.0, -m["penetration"] + p["slop"])
    step_normal = (-vn + bias - m["restitution_velocity_target"]) / nonzero(
        _effective_inverse_mass(a, b, arm_a, arm_b, normal)
    )
    acc_normal = jnp.maximum(m["acc_impulse_normal"] + step_normal, 0.0)
    impulse = (acc_normal - m["acc_impulse_normal"]) * normal
    dv_a = -a["inverse_mass"] * impulse
    dv_b = b["inverse_mass"] * impulse
    dw_a = -a["inverse_inertia"] * cross(arm_a, impulse)
    dw_b = b["inverse_inertia"] * cross(arm_b, impulse)

    tangent = tangent_of(normal)
    dv = (
        (b["velocity"] + dv_b)
        + spin_velocity(b["angular_velocity"] + dw_b, arm_b)
        - (a["velocity"] + dv_a)
        - spin_velocity(a["angular_velocity"] + dw_a, arm_a)
    )
    vt = dot(dv, tangent)
    mu = jnp.sqrt(jnp.square(a["friction"] * p["base_friction"]) + jnp.square(b["friction"] * p["base_friction"]))
    step_tangent = -vt / nonzero(_effective_inverse_mass(a, b, arm_a, arm_b, tangent))
    max_friction = mu * acc_normal
    acc_tangent = jnp.clip(m["acc_impulse_tangent"] + step_tangent, -max_friction, max_friction)
    impulse = (acc_tangent - m["acc_impulse_tangent"]) * tangent
    dv_a = dv_a - a["inverse_mass"] * impulse
    dw_a = dw_a - a["inverse_inertia"] * cross(arm_a, impulse)
    dv_b = dv_b + b["inverse_mass"] * impulse
    dw_b = dw_b + b["inverse_inertia"] * cross(arm_b, impulse)

    return zero_unless(_live(a, b, m, may_touch), (dv_a, dv_b, dw_a, dw_b, acc_normal, acc_tangent))


def solver_batches(active, batch_size: int):
    """``(n_batches, batch_size)`` int32 contact indices, -1 for padding (see the module doc)."""
    count = active.shape[0]
    n_batches = math.ceil(count / batch_size)
    order = jnp.argsort(active.astype(jnp.int32), stable=True).astype(jnp.int32)
    slots = jnp.full(n_batches * batch_size, -1, jnp.int32).at[:count].set(order)
    return slots.reshape(batch_size, n_batches).T


def warm_start_set(bodies, manifolds, pairs, may_touch):
    """Apply the warm-start impulses of every contact of a set at once (one contact per row; a
    polygon pair's two points are given as a leading axis of 2 and summed)."""
    a, b = take(bodies, pairs[:, 0]), take(bodies, pairs[:, 1])
    if manifolds["active"].ndim == 2:  # polygon-polygon: both points, from the same positions
        per_point = jax.vmap(jax.vmap(warm_start, (None, None, 0, None)), (0, 0, 0, 0))
        deltas = jax.tree.map(lambda x: x.sum(axis=1), per_point(a, b, manifolds, may_touch))
    else:
        deltas = jax.vmap(warm_start)(a, b, manifolds, may_touch)
    return add_pair_velocity(bodies, pairs[:, 0], pairs[:, 1], deltas)


def solve_set(bodies, manifolds, pairs, may_touch, batches, p):
    """One pass over a contact set, batch after batch. Returns bodies and updated manifolds."""
    count = pairs.shape[0]
    last = count - 1
    pairs = jnp.asarray(pairs)

    def one_batch(carry, slots):
        bodies, impulses = carry
        padded = slots < 0
        index = jnp.where(padded, last, slots)
        m = {**take(manifolds, index), **take(impulses, index)}
        a, b = take(bodies, pairs[index, 0]), take(bodies, pairs[index, 1])
        *deltas, acc_normal, acc_tangent = jax.vmap(solve, (0, 0, 0, 0, None))(a, b, m, may_touch[index], p)
        deltas = zero_rows(~padded, deltas)
        bodies = add_pair_velocity(bodies, pairs[index, 0], pairs[index, 1], deltas)
        write = jnp.where(padded, count, slots)  # out of range: dropped
        clobber_last = jnp.any(padded)
        impulses = {
            key: jnp.where(
                clobber_last & (jnp.arange(count) == last),
                0.0,
                impulses[key].at[write].set(new, mode="drop"),
            )
            for key, new in zip(IMPULSE_KEYS, (acc_normal, acc_tangent))
        }
        return (bodies, impulses), None

    impulses = {k: manifolds[k] for k in IMPULSE_KEYS}
    (bodies, impulses), _ = jax.lax.scan(one_batch, (bodies, impulses), batches)
    return bodies, {**manifolds, **impulses}
