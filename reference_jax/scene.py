"""Building scenes for the reference engine: the empty Kinetix scene, derived quantities, and
adding shapes, joints and thrusters.

Every function takes and returns ONE environment's state, the nested dict of
:mod:`kinetix_torch.schema` including the env-only fields (roles, densities, bindings). All are
pure; all but :func:`empty_scene` (a constant) are jit-compiled with :class:`StaticEnvParams` as a
static argument, every other argument being traced data, so new values never recompile.

The ``add_*`` functions fill the first free slot and return ``(state, index)``; when every slot is
taken they return the state unchanged and index -1.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from kinetix_torch import formulas
from kinetix_torch.params import StaticEnvParams
from kinetix_torch.schema import flatten, nest
from kinetix_torch.topology import collision_matrix

from .math2d import rotate

__all__ = [
    "empty_scene",
    "recompute_mass_and_inertia",
    "recompute_collision_matrix",
    "add_polygon",
    "add_circle",
    "add_revolute_joint",
    "add_fixed_joint",
    "add_thruster",
]

_jit = functools.partial(jax.jit, static_argnames=("static",))


def empty_scene(static: StaticEnvParams, floor_offset: float = 0.2, scene_size: float = 5.0) -> dict:
    """Upstream Kinetix's empty env (:func:`kinetix_torch.formulas.empty_scene`): floor, two side
    walls and ceiling as immovable polygons 0-3."""
    flat = formulas.empty_scene(static, floor_offset, scene_size)
    return nest({key: jnp.asarray(value) for key, value in flat.items()})


# --- derived quantities ----------------------------------------------------------------------


@_jit
def recompute_mass_and_inertia(state: dict, static: StaticEnvParams) -> dict:
    """Inverse masses and inertias of every shape from ``polygon_densities`` / ``circle_densities``
    (immovable shapes stay immovable), re-centring movable polygons on their vertex mean
    (:mod:`kinetix_torch.formulas`)."""
    return {
        **state,
        "polygon": {**state["polygon"], **formulas.recalculate_polygons(state["polygon"], state["polygon_densities"])},
        "circle": {**state["circle"], **formulas.recalculate_circles(state["circle"], state["circle_densities"])},
    }


@_jit
def recompute_collision_matrix(state: dict, static: StaticEnvParams) -> dict:
    """``collision_matrix`` from the active joints (see :mod:`kinetix_torch.topology`)."""
    joint = state["joint"]
    matrix = collision_matrix(joint["a_index"], joint["b_index"], joint["active"], static.num_shapes, jnp)
    return {**state, "collision_matrix": matrix}


# --- adding entities --------------------------------------------------------------------------


def _fill_first_free_slot(state, active_key, values, first_slot=0, finish=None):
    """Write ``values`` (dotted field name -> value of one slot) into the first inactive slot of
    ``active_key`` at index >= ``first_slot`` and mark it active; then apply ``finish``.

    Returns ``(state, slot)``, or the unchanged state and -1 when no slot is free.
    """
    flat = flatten(state)
    taken = flat[active_key] | (jnp.arange(flat[active_key].shape[0]) < first_slot)
    if taken.shape[0] == 0:
        return state, jnp.int32(-1)
    slot = jnp.argmin(taken).astype(jnp.int32)
    free = ~taken[slot]
    for key, value in {**values, active_key: True}.items():
        flat[key] = flat[key].at[slot].set(value)
    new_state = nest(flat)
    if finish is not None:
        new_state = finish(new_state)
    chosen = jax.tree.map(lambda new, old: jnp.where(free, new, old), new_state, state)
    return chosen, jnp.where(free, slot, -1)


def _body_values(kind, position, rotation, velocity, angular_velocity, friction, restitution, collision_mode, role):
    """Slot values shared by polygons and circles (``kind``), as dotted field names."""
    return {
        f"{kind}.position": position,
        f"{kind}.rotation": rotation,
        f"{kind}.velocity": velocity,
        f"{kind}.angular_velocity": angular_velocity,
        f"{kind}.friction": friction,
        f"{kind}.restitution": restitution,
        f"{kind}.collision_mode": collision_mode,
        f"{kind}_shape_roles": role,
        f"{kind}_highlighted": False,
    }


@_jit
def add_polygon(
    state: dict,
    static: StaticEnvParams,
    position,
    vertices,
    n_vertices=None,
    rotation=0.0,
    velocity=0.0,
    angular_velocity=0.0,
    density=1.0,
    friction=1.0,
    restitution=0.0,
    collision_mode=1,
    fixated=False,
    role=0,
):
    """Add a polygon in the first free slot after the static scene pieces.

    ``vertices``: ``(k, 2)`` with k <= ``max_polygon_vertices``, in the polygon's frame relative to
    ``position``, in upstream's (clockwise) order; ``n_vertices`` defaults to k. Mass and inertia
    come from ``density`` as in :func:`recompute_mass_and_inertia` (which may re-centre the
    polygon); ``fixated`` makes it immovable. Returns ``(state, polygon index)``.
    """
    vertices = jnp.asarray(vertices, jnp.float32)
    n_vertices = vertices.shape[0] if n_vertices is None else n_vertices
    padded = jnp.zeros((static.max_polygon_vertices, 2), jnp.float32).at[: vertices.shape[0]].set(vertices)
    movable = jnp.where(fixated, 0.0, 1.0)
    shape = formulas.recalculate_polygons(
        {
            "position": jnp.asarray(position, jnp.float32),
            "vertices": padded,
            "n_vertices": jnp.asarray(n_vertices, jnp.int32),
            "inverse_mass": movable,
            "inverse_inertia": movable,
        },
        density,
    )
    values = _body_values(
        "polygon", shape["position"], rotation, velocity, angular_velocity, friction, restitution, collision_mode, role
    )
    values.update(
        {
            "polygon.vertices": shape["vertices"],
            "polygon.n_vertices": n_vertices,
            "polygon.inverse_mass": shape["inverse_mass"],
            "polygon.inverse_inertia": shape["inverse_inertia"],
            "polygon.radius": 0.0,
            "polygon_densities": density,
        }
    )
    return _fill_first_free_slot(state, "polygon.active", values, first_slot=static.num_static_fixated_polys)


@_jit
def add_circle(
    state: dict,
    static: StaticEnvParams,
    position,
    radius,
    rotation=0.0,
    velocity=0.0,
    angular_velocity=0.0,
    density=1.0,
    friction=1.0,
    restitution=0.0,
    collision_mode=1,
    fixated=False,
    role=0,
):
    """Add a circle in the first free circle slot. Returns ``(state, global index)`` (P + slot)."""
    movable = jnp.where(fixated, 0.0, 1.0)
    shape = formulas.recalculate_circles({"radius": jnp.asarray(radius, jnp.float32), "inverse_mass": movable}, density)
    values = _body_values(
        "circle", position, rotation, velocity, angular_velocity, friction, restitution, collision_mode, role
    )
    values.update(
        {
            "circle.radius": radius,
            "circle.inverse_mass": shape["inverse_mass"],
            "circle.inverse_inertia": shape["inverse_inertia"],
            "circle.n_vertices": 0,
            "circle.vertices": 0.0,
            "circle_densities": density,
        }
    )
    state, slot = _fill_first_free_slot(state, "circle.active", values)
    return state, jnp.where(slot < 0, -1, slot + static.num_polygons)


def _shape_frames(state):
    """Positions and rotations of all shapes in the global index (polygons, then circles)."""
    position = jnp.concatenate([state["polygon"]["position"], state["circle"]["position"]])
    rotation = jnp.concatenate([state["polygon"]["rotation"], state["circle"]["rotation"]])
    return position, rotation


def _add_joint(state, static, a_index, b_index, a_relative_pos, b_relative_pos, kind_values):
    """Common part of the joint adders; ``kind_values``: the revolute- or fixed-specific fields."""
    position, rotation = _shape_frames(state)
    a_relative_pos = jnp.asarray(a_relative_pos, jnp.float32)
    values = {
        "joint.a_index": a_index,
        "joint.b_index": b_index,
        "joint.a_relative_pos": a_relative_pos,
        "joint.b_relative_pos": b_relative_pos,
        "joint.rotation": rotation[b_index] - rotation[a_index],
        "joint.global_position": position[a_index] + rotate(rotation[a_index], a_relative_pos),
        "joint.acc_impulse": 0.0,
        "joint.acc_r_impulse": 0.0,
        **kind_values,
    }
    finish = functools.partial(recompute_collision_matrix, static=static)
    return _fill_first_free_slot(state, "joint.active", values, finish=finish)


@_jit
def add_revolute_joint(
    state: dict,
    static: StaticEnvParams,
    a_index,
    b_index,
    a_relative_pos,
    b_relative_pos,
    motor_on=False,
    motor_speed=1.0,
    motor_power=1.0,
    has_joint_limits=False,
    min_rotation=-math.pi,
    max_rotation=math.pi,
    motor_binding=0,
    motor_auto=False,
):
    """Pin anchor ``a_relative_pos`` of shape ``a_index`` to ``b_relative_pos`` of ``b_index``
    (global indices, anchors in each shape's frame), leaving them free to turn.

    The reference angle is the shapes' current relative rotation; limits are measured from it.
    ``motor_binding`` picks the motor action slot. Returns ``(state, joint index)``.
    """
    return _add_joint(
        state,
        static,
        a_index,
        b_index,
        a_relative_pos,
        b_relative_pos,
        {
            "joint.is_fixed_joint": False,
            "joint.motor_on": motor_on,
            "joint.motor_speed": motor_speed,
            "joint.motor_power": motor_power,
            "joint.motor_has_joint_limits": has_joint_limits,
            "joint.min_rotation": min_rotation,
            "joint.max_rotation": max_rotation,
            "motor_bindings": motor_binding,
            "motor_auto": motor_auto,
        },
    )


@_jit
def add_fixed_joint(state: dict, static: StaticEnvParams, a_index, b_index, a_relative_pos, b_relative_pos):
    """Weld shape ``a_index`` to ``b_index`` at the given anchors, holding their current relative
    rotation. Returns ``(state, joint index)``."""
    return _add_joint(
        state,
        static,
        a_index,
        b_index,
        a_relative_pos,
        b_relative_pos,
        {"joint.is_fixed_joint": True, "joint.motor_on": False, "joint.motor_has_joint_limits": False},
    )


@_jit
def add_thruster(
    state: dict, static: StaticEnvParams, object_index, relative_position, rotation, power=1.0, thruster_binding=0
):
    """Mount a thruster on shape ``object_index`` (global index) at ``relative_position`` in its
    frame, pushing along ``rotation`` (in its frame). Returns ``(state, thruster index)``."""
    position, body_rotation = _shape_frames(state)
    relative_position = jnp.asarray(relative_position, jnp.float32)
    values = {
        "thruster.object_index": object_index,
        "thruster.relative_position": relative_position,
        "thruster.rotation": rotation,
        "thruster.power": power,
        "thruster.global_position": position[object_index] + rotate(body_rotation[object_index], relative_position),
        "thruster_bindings": thruster_binding,
    }
    return _fill_first_free_slot(state, "thruster.active", values)
