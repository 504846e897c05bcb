"""Joint and actuator stages: motors, thrusters, joint warm starting and the joint constraint.

A joint pins anchor ``a_relative_pos`` on body a to ``b_relative_pos`` on body b. Revolute joints
may have a motor and angle limits on ``rot_b - rot_a - rotation``; fixed joints also hold that angle
at zero. Every function takes single bodies ``a``, ``b`` and one joint (dicts of scalars) and
returns velocity changes that the caller scatter-adds; everything is zero when the joint is not
live (inactive, a body inactive, or both bodies static).
"""

import jax.numpy as jnp

from .bodies import both_static, zero_unless
from .math2d import cross, norm, nonzero, rotate, spin_velocity


def _live(a, b, joint):
    return joint["active"] & ~both_static(a, b) & a["active"] & b["active"]


def motor(a, b, joint, action, p):
    """Torque impulse of a revolute motor driven at ``action`` in [-1, 1].

    The torque is ``tanh(speed error * decay)`` times the motor's power and the pair's axial mass;
    it fades linearly over the last ``motor_joint_limit`` radians before a joint limit unless it
    pushes away from that limit. Returns ``(dw_a, dw_b)``.
    """
    live = _live(a, b, joint) & joint["motor_on"] & (action != 0) & ~joint["is_fixed_joint"]
    axial_mass = 1.0 / nonzero(a["inverse_inertia"] + b["inverse_inertia"])
    power = p["base_motor_power"] * joint["motor_power"] * p["dt"] * axial_mass
    speed_error = (
        b["angular_velocity"] - a["angular_velocity"] - joint["motor_speed"] * action * p["base_motor_speed"]
    )
    torque = jnp.tanh(speed_error * p["motor_decay_coefficient"])

    relative = b["rotation"] - a["rotation"] - joint["rotation"]
    allowed = jnp.clip(
        relative, joint["min_rotation"] + p["motor_joint_limit"], joint["max_rotation"] - p["motor_joint_limit"]
    )
    overshoot = relative - allowed
    fade = jnp.where(
        (overshoot == 0) | ~joint["motor_has_joint_limits"],
        1.0,
        jnp.maximum(0.0, 1.0 - jnp.abs(overshoot) / p["motor_joint_limit"]),
    )
    power = power * jnp.maximum(fade, (jnp.sign(overshoot) != jnp.sign(action)).astype(fade.dtype))
    return zero_unless(live, (power * torque * a["inverse_inertia"], -power * torque * b["inverse_inertia"]))


def warm_start(a, b, joint):
    """Re-apply last step's accumulated joint impulses. Returns ``(dv_a, dv_b, dw_a, dw_b)``."""
    impulse, angular = joint["acc_impulse"], joint["acc_r_impulse"]
    arm_a = rotate(a["rotation"], joint["a_relative_pos"])
    arm_b = rotate(b["rotation"], joint["b_relative_pos"])
    dw_a = a["inverse_inertia"] * cross(arm_a, impulse) + angular * a["inverse_inertia"]
    dw_b = -b["inverse_inertia"] * cross(arm_b, impulse) - angular * b["inverse_inertia"]
    return zero_unless(_live(a, b, joint), (impulse * a["inverse_mass"], -impulse * b["inverse_mass"], dw_a, dw_b))


def anchor_points(a, b, joint):
    """World anchors on a and b, their arms, and the joint point: the inverse-mass-weighted blend
    of the two anchors, or the anchor on the immovable body if there is one."""
    arm_a = rotate(a["rotation"], joint["a_relative_pos"])
    arm_b = rotate(b["rotation"], joint["b_relative_pos"])
    point_a = a["position"] + arm_a
    point_b = b["position"] + arm_b
    im_a, im_b = nonzero(a["inverse_mass"]), nonzero(b["inverse_mass"])
    blend = (point_a / im_a + point_b / im_b) / ((1 / im_a) + (1 / im_b))
    point = jnp.where(a["inverse_mass"] == 0, point_a, jnp.where(b["inverse_mass"] == 0, point_b, blend))
    return point, point_a, point_b, arm_a, arm_b


def solve(a, b, joint, p):
    """One Gauss-Seidel visit of a joint.

    Linear part: the impulse that cancels the relative anchor velocity plus a Baumgarte velocity
    bias on the anchor gap ``d = point_b - point_a``, divided by the effective mass along the
    relative velocity and scaled by ``joint_stiffness``; plus a direct position correction
    ``baumgarte_coefficient_joints_p * d`` shared by inverse mass.
    Angular part: a fixed joint cancels relative angular velocity plus a bias on its angle error;
    a revolute joint past a limit does the same with the limit bias, only when the relative
    angular velocity is not already correcting it.

    Returns the velocity and position changes, the joint point, and the accumulated impulses.
    """
    sum_im = nonzero(a["inverse_mass"] + b["inverse_mass"])
    sum_ii = nonzero(a["inverse_inertia"] + b["inverse_inertia"])
    point, point_a, point_b, arm_a, arm_b = anchor_points(a, b, joint)
    gap = point_b - point_a

    relative_velocity = (b["velocity"] + spin_velocity(b["angular_velocity"], point - b["position"])) - (
        a["velocity"] + spin_velocity(a["angular_velocity"], point - a["position"])
    )
    direction = relative_velocity / nonzero(norm(relative_velocity))
    impulse = relative_velocity + p["baumgarte_coefficient_joints_v"] * gap
    impulse = impulse / nonzero(
        sum_im
        + (
            jnp.square(cross(arm_a, direction)) * a["inverse_inertia"]
            + jnp.square(cross(arm_b, direction)) * b["inverse_inertia"]
        )
    )
    impulse = impulse * p["joint_stiffness"]
    dv_a = a["inverse_mass"] * impulse
    dv_b = -b["inverse_mass"] * impulse
    dw_a = cross(arm_a, impulse) * a["inverse_inertia"]
    dw_b = -cross(arm_b, impulse) * b["inverse_inertia"]
    dp_a = (gap / sum_im) * a["inverse_mass"] * p["baumgarte_coefficient_joints_p"]
    dp_b = -(gap / sum_im) * b["inverse_mass"] * p["baumgarte_coefficient_joints_p"]

    angle = b["rotation"] - a["rotation"] - joint["rotation"]
    limited = jnp.clip(angle, joint["min_rotation"], joint["max_rotation"])
    limit_bias = (angle - limited) * p["baumgarte_coefficient_rjoint_limit_av"]
    fixed_bias = (b["rotation"] - a["rotation"] - joint["rotation"]) * p["baumgarte_coefficient_fjoint_av"]
    spin = b["angular_velocity"] + dw_b - a["angular_velocity"] - dw_a
    not_correcting = (jnp.sign(spin) == jnp.sign(limit_bias)).astype(spin.dtype)
    angular_error = jnp.where(joint["is_fixed_joint"], spin + fixed_bias, not_correcting * (spin + limit_bias))
    applies = joint["is_fixed_joint"] | (joint["motor_has_joint_limits"] & (limited != angle))
    angular_impulse = angular_error / sum_ii * applies.astype(spin.dtype)
    dw_a = dw_a + angular_impulse * a["inverse_inertia"]
    dw_b = dw_b - angular_impulse * b["inverse_inertia"]
    # Limits do not accumulate: only fixed joints carry an angular impulse to the next step.
    acc_r = jnp.where(joint["is_fixed_joint"], angular_impulse + joint["acc_r_impulse"], 0.0)

    out = {
        "dv_a": dv_a,
        "dv_b": dv_b,
        "dw_a": dw_a,
        "dw_b": dw_b,
        "dp_a": dp_a,
        "dp_b": dp_b,
        "global_position": point,
        "acc_impulse": impulse + joint["acc_impulse"],
        "acc_r_impulse": acc_r,
    }
    return zero_unless(_live(a, b, joint), out)


def thruster(parent, thr, action, p):
    """Impulse of one thruster on its parent: ``power * action * base_thruster_power * dt`` along
    the thruster's world direction, applied at its mount point. Returns ``(dv, dw)``."""
    arm = rotate(parent["rotation"], thr["relative_position"])
    angle = thr["rotation"] + parent["rotation"]
    direction = jnp.stack([jnp.cos(angle), jnp.sin(angle)])
    force = thr["power"] * thr["active"] * p["base_thruster_power"] * action * p["dt"]
    dw = parent["inverse_inertia"] * cross(arm, direction) * force
    dv = parent["inverse_mass"] * direction * force
    return dv, dw
