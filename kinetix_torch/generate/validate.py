"""The rules of upstream's level generator, batched: one ``(B,)`` bool per rule, all on device.

The rules every level obeys (wherever it comes from) are :mod:`kinetix_torch.validation`'s.
"""

from __future__ import annotations

import torch

from ..bodies import at_shapes, dynamic_mask, shape_field, shape_roles, to_flat
from ..params import StaticEnvParams
from ..schema import BLUE, GREEN, RED

__all__ = ["generator_rule_problems"]


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
    a_coloured = at_shapes(coloured, flat["joint.a_index"])
    b_coloured = at_shapes(coloured, flat["joint.b_index"])
    parent_mass = at_shapes(shape_field(flat, "inverse_mass"), flat["thruster.object_index"])
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
