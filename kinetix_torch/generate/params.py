"""Parameters of the random level generator and the ACCEL mutators.

Field names and defaults are upstream Kinetix's ``UEDParams`` (including its spelling
``goal_body_opposide_side_chance``), so configs written for upstream carry over unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

__all__ = ["UEDParams"]


@dataclass(frozen=True)
class UEDParams:
    """Generator and mutator settings. Frozen: hashes and compares by value."""

    max_shape_size: float = 1.0
    """Largest shape extent (world units) the generator draws."""
    goal_body_opposide_side_chance: float = 0.5
    """Chance that a green shape is placed in the left half and a blue one in the right half."""
    goal_body_size_factor: float = 1.0
    """Size multiplier for green and blue shapes."""
    min_rjoints_bias: int = 2
    """Joints are forced revolute while a level has fewer revolute joints than this."""
    large_rect_dim_chance: float = 0.3
    """Chance that one half-dimension of a new shape is multiplied by ``large_rect_dim_scale``."""
    large_rect_dim_scale: float = 2.0
    generate_triangles: bool = False
    """Draw 3 or 4 live vertices per polygon instead of always 4."""
    thruster_power_multiplier: float = 2.0
    """Thruster power is this x parent mass x uniform[0.5, 2]."""
    thruster_align_com_prob: float = 0.8
    """Chance that a thruster points through (or away from) its parent's centre."""
    motor_on_chance: float = 0.8
    motor_min_speed: float = 0.4
    motor_max_speed: float = 3.0
    motor_min_power: float = 1.0
    motor_max_power: float = 3.0
    wheel_max_power: float = 1.0
    """Upper motor power of joints involving a circle (uniform from ``motor_min_power``)."""
    joint_limit_chance: float = 0.4
    """Chance of angle limits on a polygon-polygon revolute joint."""
    joint_limit_max: float = math.pi
    joint_fixed_chance: float = 0.1
    """Unused by upstream's generator (kept for config compatibility)."""
    fixate_chance_min: float = 0.02
    fixate_chance_max: float = 1.0
    fixate_chance_scale: float = 4.0
    """Fixation chance grows by this x the shape's mass."""
    fixate_shape_bottom_bias: float = 0.0
    fixate_shape_bottom_bias_special_role: float = 0.6
    """Extra chance that a fixated green/blue/red shape is moved into the bottom half."""
    circle_max_size_coeff: float = 0.8
    connect_to_fixated_prob_coeff: float = 0.05
    """Relative weight of fixated shapes as targets of a new connected shape."""
    connect_visibility_min: float = 0.05
    connect_no_visibility_bias: float = 10.0
    """Collision-count penalty of a connected-shape proposal whose shapes would hide each other."""
    add_shape_chance: float = 0.35
    add_connected_shape_chance: float = 0.35
    add_no_shape_chance: float = 0.3
    add_thruster_chance: float = 0.3
    add_shape_n_proposals: int = 8
    """Candidate placements per added shape; the one with the fewest contacts wins."""
    floor_prob_normal: float = 0.9
    floor_prob_green: float = 0.0
    floor_prob_blue: float = 0.02
    floor_prob_red: float = 0.08

    def replace(self, **changes) -> "UEDParams":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
