"""Batched structural checks of level TensorDicts: one ``(B,)`` bool per rule, all on device."""

from __future__ import annotations

import torch

from .. import schema
from ..params import EnvParams, StaticEnvParams
from . import geometry
from .batch import dynamic_mask, shape_field, shape_roles, to_flat

__all__ = ["level_problems", "generator_rule_problems", "check_levels"]

GREEN, BLUE, RED = 1, 2, 3


def _at(per_shape, index):
    """``per_shape[b, index[b, k]]`` for ``(B, N)`` values and ``(B, K)`` shape indices (clamped)."""
    return per_shape.gather(1, index.long().clamp(0, per_shape.shape[1] - 1))


def _index_ok(index, active, num_shapes, shape_active):
    """In range and pointing at an active shape, wherever ``active``."""
    in_range = (index >= 0) & (index < num_shapes)
    return ~active | (in_range & _at(shape_active, index))


def level_problems(levels, static: StaticEnvParams, env_params: EnvParams | None = None) -> dict[str, torch.Tensor]:
    """Rule name -> ``(B,)`` bool, True where a level breaks the rule:

    joint ends and thruster parents in range and active, joints joining two different shapes,
    bindings and roles in range, 3..V live vertices, scene pieces present and immovable, every
    float finite, the collision matrix equal to the one implied by the joints, and movable
    shapes' inverse mass and inertia as their geometry and density imply (fixated: both zero)."""
    env_params = env_params or EnvParams()
    flat = to_flat(levels)
    N, F = static.num_shapes, static.num_static_fixated_polys
    active = shape_field(flat, "active")
    joint_active, thruster_active = flat["joint.active"], flat["thruster.active"]
    a, b = flat["joint.a_index"], flat["joint.b_index"]
    roles = shape_roles(flat)
    problems = {
        "joint_ends": ~(_index_ok(a, joint_active, N, active) & _index_ok(b, joint_active, N, active)).all(1),
        "joint_joins_itself": (joint_active & (a == b)).any(1),
        "thruster_parent": ~_index_ok(flat["thruster.object_index"], thruster_active, N, active).all(1),
        "motor_binding": _outside(flat["motor_bindings"], joint_active, 0, static.num_motor_bindings),
        "thruster_binding": _outside(flat["thruster_bindings"], thruster_active, 0, static.num_thruster_bindings),
        "role_range": _outside(roles, active, 0, env_params.num_shape_roles),
        "n_vertices": _outside(flat["polygon.n_vertices"], flat["polygon.active"], 3, static.max_polygon_vertices + 1),
        "scene_pieces": ~(flat["polygon.active"][:, :F].all(1) & (flat["polygon.inverse_mass"][:, :F] == 0).all(1)),
    }
    finite = torch.ones_like(problems["joint_ends"], dtype=torch.bool)
    for f in schema.FIELDS:
        if f.dtype.kind == "f":
            finite &= torch.isfinite(flat[f.key]).reshape(finite.shape[0], -1).all(1)
    problems["non_finite"] = ~finite
    expected = dict(flat)
    geometry.recalculate_collision_matrix(expected, static)
    problems["collision_matrix"] = (expected["collision_matrix"] != flat["collision_matrix"]).reshape(-1, N * N).any(1)
    geometry.recalculate_mass_and_inertia(expected)
    dynamic = dynamic_mask(flat, static)
    for name in ("inverse_mass", "inverse_inertia"):
        problems[name] = (dynamic & ~_close(shape_field(expected, name), shape_field(flat, name))).any(1)
    fixated_mismatch = (shape_field(flat, "inverse_mass") == 0) != (shape_field(flat, "inverse_inertia") == 0)
    problems["fixation"] = (dynamic & fixated_mismatch).any(1)
    return problems


def _outside(values, active, low: int, high: int) -> torch.Tensor:
    """``(B,)``: some active slot holds a value outside ``[low, high)``."""
    return (active & ((values < low) | (values >= high))).any(1)


def _close(x, y):
    return (x - y).abs() <= 1e-4 * y.abs() + 1e-6


def generator_rule_problems(levels, static: StaticEnvParams) -> dict[str, torch.Tensor]:
    """The role and joint rules upstream's generator enforces (mutators may break them):
    exactly one green and one blue shape and at most one red (the floor included), no joint
    joining two coloured shapes, thrusters only on movable shapes, no fixation in sizes with
    at most 7 shapes, revolute joints with reference angle 0 and fixed joints without motors."""
    flat = to_flat(levels)
    active = shape_field(flat, "active")
    roles = torch.where(active, shape_roles(flat), 0)
    count = lambda role: (roles == role).sum(1)  # noqa: E731
    joint_active = flat["joint.active"]
    coloured = roles != 0
    a_coloured = _at(coloured, flat["joint.a_index"])
    b_coloured = _at(coloured, flat["joint.b_index"])
    parent_mass = _at(shape_field(flat, "inverse_mass"), flat["thruster.object_index"])
    fixed = flat["joint.is_fixed_joint"]
    motorised = flat["joint.motor_on"] | flat["joint.motor_has_joint_limits"]
    problems = {
        "green_count": count(GREEN) != 1,
        "blue_count": count(BLUE) != 1,
        "red_count": count(RED) > 1,
        "joint_between_coloured": (joint_active & a_coloured & b_coloured).any(1),
        "thruster_on_fixated": (flat["thruster.active"] & (parent_mass == 0)).any(1),
        "revolute_reference_angle": (joint_active & ~fixed & (flat["joint.rotation"] != 0)).any(1),
        "fixed_joint_motor": (joint_active & fixed & motorised).any(1),
    }
    if static.num_shapes <= 7:
        fixated = shape_field(flat, "inverse_mass") == 0
        problems["fixated_in_small_level"] = (dynamic_mask(flat, static) & fixated).any(1)
    return problems


def check_levels(levels, static: StaticEnvParams, env_params: EnvParams | None = None) -> None:
    """Raise ``ValueError`` naming the first broken rule and the first level breaking it."""
    for name, bad in level_problems(levels, static, env_params).items():
        if bool(bad.any()):
            first = int(bad.nonzero()[0, 0])
            raise ValueError(f"level {first} breaks the rule {name!r} ({int(bad.sum())} levels do)")
