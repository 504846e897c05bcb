"""All shapes of one environment as a single set of arrays in the global index.

The state keeps polygons and circles apart (``polygon.*`` with P rows, ``circle.*`` with C rows).
The solver works on their concatenation, N = P + C rows, polygons first, so a joint, thruster or
contact pair addresses either kind with one integer.
"""

import jax
import jax.numpy as jnp

BODY_KEYS = (
    "position",
    "rotation",
    "velocity",
    "angular_velocity",
    "inverse_mass",
    "inverse_inertia",
    "friction",
    "restitution",
    "collision_mode",
    "active",
    "n_vertices",
    "vertices",
    "radius",
)
# What the solver changes; everything else in ``BODY_KEYS`` is read-only during a step.
MOVING_KEYS = ("position", "rotation", "velocity", "angular_velocity")


def gather_bodies(state):
    return {k: jnp.concatenate([state["polygon"][k], state["circle"][k]], axis=0) for k in BODY_KEYS}


def split_bodies(state, bodies, num_polygons: int):
    """Write the moving fields back into ``state["polygon"]`` / ``state["circle"]``."""
    polygon = dict(state["polygon"])
    circle = dict(state["circle"])
    for k in MOVING_KEYS:
        polygon[k] = bodies[k][:num_polygons]
        circle[k] = bodies[k][num_polygons:]
    return {**state, "polygon": polygon, "circle": circle}


def take(bodies, index):
    """One body (scalar index) or a stack of bodies (array index)."""
    return jax.tree.map(lambda x: x[index], bodies)


def both_static(a, b):
    """Neither body can move: no impulse between them has any effect."""
    return (a["inverse_mass"] == 0) & (b["inverse_mass"] == 0)


def add_velocity(bodies, index, dv, dw):
    """Scatter-add linear and angular velocity changes at ``index``."""
    return {
        **bodies,
        "velocity": bodies["velocity"].at[index].add(dv),
        "angular_velocity": bodies["angular_velocity"].at[index].add(dw),
    }


def add_pair_velocity(bodies, index_a, index_b, deltas):
    """Scatter-add the ``(dv_a, dv_b, dw_a, dw_b)`` of a set of pairs: all a's, then all b's."""
    dv_a, dv_b, dw_a, dw_b = deltas
    velocity = bodies["velocity"].at[index_a].add(dv_a).at[index_b].add(dv_b)
    angular = bodies["angular_velocity"].at[index_a].add(dw_a).at[index_b].add(dw_b)
    return {**bodies, "velocity": velocity, "angular_velocity": angular}


def zero_unless(condition, values):
    """Keep ``values`` (a pytree) where ``condition`` holds, zeros elsewhere."""
    return jax.tree.map(lambda x: jnp.where(condition, x, jnp.zeros_like(x)), values)


def zero_rows(keep, values):
    """Zero the rows (leading index) of every leaf of ``values`` where ``keep`` is False."""
    return jax.tree.map(lambda x: jnp.where(keep.reshape(keep.shape + (1,) * (x.ndim - 1)), x, 0), values)
