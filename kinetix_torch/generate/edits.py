"""Level edits, batched: the one set of functions that both the random level generator
(:mod:`.sampling`) and the ACCEL mutators (:mod:`.mutators`) change levels with.

Two layers, on flat dicts (:mod:`.batch`), each row of a batch with its own random choices:

* **writes** that put a new entity into a level: :func:`place_shape`, :func:`attach_joint`,
  :func:`attach_thruster`, and :func:`set_role`. Each checks, per level, that the result is
  structurally sound (a free slot, joint ends two different active shapes, a thruster on an active
  shape, a role on an active shape) and leaves a level unchanged where it is not; shapes get their
  mass and inertia, joints their collision matrix.
* **edits**, upstream's ``mutate_*`` functions, ``fn(flat, draws, ctx, ...) -> flat``: add a shape,
  a connected shape or a thruster, remove a shape, joint or thruster, swap roles, toggle fixation,
  resize, turn or move a shape, change gravity. Each leaves a level unchanged where the edit is
  impossible (no free slot, nothing to remove), as upstream does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import engine, formulas
from ..bodies import Flat, dynamic_mask, recalculate_mass_and_inertia, shape_field, shape_roles
from ..params import EnvParams, StaticEnvParams
from ..schema import BLUE, GREEN, RED
from . import geometry
from .batch import (
    Draws,
    first_free,
    gather_slot,
    merge,
    num_free,
    select_shape,
    to_levels,
    without_contacts,
    write,
    write_shape,
)
from .params import UEDParams

__all__ = [
    "Context",
    "place_shape",
    "attach_joint",
    "attach_thruster",
    "set_role",
    "add_shape",
    "add_connected_shape",
    "add_thruster",
    "remove_shape",
    "remove_joint",
    "remove_thruster",
    "swap_role",
    "toggle_fixture",
    "change_gravity",
    "change_shape_size",
    "change_shape_rotation",
    "change_shape_location",
]

MIN_RECT_HALF_SIZE, MIN_CIRCLE_RADIUS = 0.05, 0.1
FLOOR_TOP = 0.4
"""Top edge of upstream's floor (:func:`kinetix_torch.formulas.empty_scene`), as its edits hardcode it."""
RECT_SIGNS = ((1.0, 1.0), (1.0, -1.0), (-1.0, -1.0), (-1.0, 1.0))
"""Corners of upstream's boxes, in its (clockwise) vertex order."""
SETTLE_STEPS = 5
"""Physics steps without contacts or gravity that let joints pull resized/rotated shapes back."""


@dataclass(frozen=True)
class Context:
    """What every edit reads besides the levels."""

    static: StaticEnvParams
    env_params: EnvParams
    ued: UEDParams

    @property
    def world_size(self) -> tuple[float, float]:
        return tuple(d / self.env_params.pixels_per_unit for d in self.static.screen_dim)


# --- writes -------------------------------------------------------------------------------------


def place_shape(flat: Flat, index: torch.Tensor, body: dict, where: torch.Tensor) -> Flat:
    """A new shape ``body`` (every body field, and ``role``) in slot ``index[b]`` (global index) of
    each level with ``where[b]`` whose slot is free; mass, inertia and centre of mass then follow
    from geometry and density (Jax2D's ``recalculate_mass_and_inertia``)."""
    where = where & ~gather_slot(shape_field(flat, "active"), index)
    out = dict(flat)
    write_shape(out, index, body, where)
    recalculate_mass_and_inertia(out)
    return merge(where, out, flat)


def attach_joint(flat: Flat, slot: torch.Tensor, joint: dict, binding, where, static: StaticEnvParams) -> Flat:
    """A new joint (every ``joint.*`` field, without the prefix) with motor binding ``binding`` in
    joint slot ``slot[b]`` of each level with ``where[b]`` whose slot is free and whose joint ends
    are two different active shapes; the collision matrix follows the joints."""
    active = shape_field(flat, "active")
    a_index, b_index = joint["a_index"], joint["b_index"]
    ends_live = gather_slot(active, a_index) & gather_slot(active, b_index) & (a_index != b_index)
    where = where & ~gather_slot(flat["joint.active"], slot) & ends_live
    out = dict(flat)
    for name, value in joint.items():
        write(out, f"joint.{name}", slot, value, where)
    write(out, "motor_bindings", slot, binding, where)
    geometry.recalculate_collision_matrix(out, static)
    return merge(where, out, flat)


def attach_thruster(flat: Flat, slot: torch.Tensor, thruster: dict, binding, where) -> Flat:
    """A new thruster (every ``thruster.*`` field, without the prefix) with thruster binding
    ``binding`` in thruster slot ``slot[b]`` of each level with ``where[b]`` whose slot is free and
    whose parent shape ``object_index`` is active."""
    parent_live = gather_slot(shape_field(flat, "active"), thruster["object_index"])
    where = where & ~gather_slot(flat["thruster.active"], slot) & parent_live
    out = dict(flat)
    for name, value in thruster.items():
        write(out, f"thruster.{name}", slot, value, where)
    write(out, "thruster_bindings", slot, binding, where)
    return out


def set_role(flat: Flat, index: torch.Tensor, role, where: torch.Tensor) -> Flat:
    """Shape ``index[b]`` (global index) takes ``role[b]`` in each level with ``where[b]`` where
    that shape is active."""
    out = dict(flat)
    write_shape(out, index, {"role": role}, where & gather_slot(shape_field(flat, "active"), index))
    return out


# --- random geometry ----------------------------------------------------------------------------


def sample_dimensions(draws: Draws, is_polygon, max_shape_size, ctx: Context):
    """A box ``(B, V, 2)`` and a radius for each level (both drawn; the caller keeps one).

    Half-sizes are uniform in [0.05, max/(2 sqrt 2)], one of them doubled with
    ``large_rect_dim_chance``; radii uniform in [0.1, max/2 x circle_max_size_coeff]. As upstream,
    a circle still gets a minimal box and a polygon a minimal radius."""
    ued = ctx.ued
    max_shape_size = torch.as_tensor(max_shape_size, device=draws.device, dtype=torch.float32)
    cap_rect = (max_shape_size / 2.0 / math.sqrt(2.0))[..., None]
    half = torch.where(is_polygon[:, None], draws.uniform(2), 0.0) * (cap_rect - MIN_RECT_HALF_SIZE)
    half = half + MIN_RECT_HALF_SIZE
    scaled_dim = draws.integers(2)
    large = draws.bernoulli(ued.large_rect_dim_chance)
    scale = torch.where(large, ued.large_rect_dim_scale, 1.0)[:, None]
    half = half * torch.where(torch.arange(2, device=draws.device) == scaled_dim[:, None], scale, 1.0)
    signs = torch.tensor(RECT_SIGNS, device=draws.device)
    vertices = torch.zeros((draws.batch, ctx.static.max_polygon_vertices, 2), device=draws.device)
    vertices[:, :4] = half[:, None, :] * signs
    cap_circle = max_shape_size / 2.0 * ued.circle_max_size_coeff
    radius = torch.where(is_polygon, 0.0, draws.uniform()) * (cap_circle - MIN_CIRCLE_RADIUS) + MIN_CIRCLE_RADIUS
    return vertices, half, radius


def sample_n_vertices(draws: Draws, ctx: Context) -> torch.Tensor:
    three_or_four = 3 + draws.integers(2)
    return three_or_four if ctx.ued.generate_triangles else torch.full_like(three_or_four, 4)


def random_point_in_polygon(draws: Draws, vertices, n_vertices):
    """Uniform point in the bounding box of a 4-gon, or in the triangle of vertices 0-2."""
    f1, f2 = draws.uniform(), draws.uniform()
    v = vertices[:, :4]
    triangle = v[:, 0] + f1.sqrt()[:, None] * (v[:, 1] - v[:, 0] + f2[:, None] * (v[:, 2] - v[:, 1]))
    low, high = v.amin(1), v.amax(1)
    box = low + torch.stack([f1, f2], -1) * (high - low)
    return torch.where((n_vertices <= 3)[:, None], triangle, box)


def random_point_in_circle(draws: Draws, radius, on_centre_chance: float):
    on_centre = draws.bernoulli(on_centre_chance)
    theta, r = draws.angle(), draws.uniform() * radius
    point = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], -1)
    return torch.where(on_centre[:, None], 0.0, point)


def role_counts(flat: Flat, static: StaticEnvParams, include_scene=True) -> torch.Tensor:
    """``(B, 4)``: active shapes of each role (optionally without the static scene pieces)."""
    active = dynamic_mask(flat, static) if not include_scene else shape_field(flat, "active")
    roles = shape_roles(flat)
    return torch.stack([((roles == r) & active).sum(1) for r in range(4)], 1)


def draw_role(draws: Draws, flat: Flat, static: StaticEnvParams, weights=None) -> torch.Tensor:
    """Upstream's ``get_role``: green, then blue, until both exist; afterwards default, or red
    (weight 1/3) while there is none; never a second green or blue."""
    missing = role_counts(flat, static) == 0
    both_present = ~missing[:, GREEN] & ~missing[:, BLUE]
    p = torch.stack([both_present, missing[:, GREEN], missing[:, BLUE], both_present & missing[:, RED]], 1).float()
    p = p * torch.tensor([1.0, 1.0, 1.0, 1.0 / 3.0], device=p.device)
    return draws.choice(p if weights is None else p * weights)


def _body(position, rotation, inverse_mass, inverse_inertia, vertices, n_vertices, radius, role):
    """Every body field of a new shape (upstream writes the same body into either kind of slot)."""
    return {
        "position": position,
        "velocity": 0.0,
        "inverse_mass": inverse_mass,
        "inverse_inertia": inverse_inertia,
        "rotation": rotation,
        "angular_velocity": 0.0,
        "radius": radius,
        "active": True,
        "friction": 1.0,
        "vertices": vertices,
        "n_vertices": n_vertices,
        "collision_mode": 1,
        "restitution": 0.0,
        "role": role,
    }


def _unit_density_mass(is_polygon, vertices, n_vertices, radius):
    polygon_mass = formulas.polygon_inverse_mass(vertices, n_vertices, 1.0)[0]
    inverse_mass = torch.where(is_polygon, polygon_mass, formulas.circle_inverse_mass(radius, 1.0))
    polygon_inertia = formulas.polygon_inverse_inertia(vertices, n_vertices, 1.0)
    inverse_inertia = torch.where(is_polygon, polygon_inertia, formulas.circle_inverse_inertia(radius, 1.0))
    return inverse_mass, inverse_inertia


def _free_slots(flat: Flat):
    polygon_active, circle_active = flat["polygon.active"], flat["circle.active"]
    space = num_free(polygon_active) > 0, num_free(circle_active) > 0
    return space + (first_free(polygon_active), first_free(circle_active))


# --- adding -------------------------------------------------------------------------------------


def add_shape(flat: Flat, draws: Draws, ctx: Context, force_no_fixate) -> tuple[Flat, torch.Tensor]:
    """Upstream's ``mutate_add_shape``: a free-standing box or circle with a role, placed anywhere
    above the floor (green on the left / blue on the right half the time), fixated with a chance
    growing with its mass unless ``force_no_fixate``. Returns the levels and the new shape's
    global index."""
    static, ued = ctx.static, ctx.ued
    width, height = ctx.world_size
    polygon_space, circle_space, polygon_slot, circle_slot = _free_slots(flat)
    possible = polygon_space | circle_space
    is_polygon = draws.choice(torch.stack([polygon_space, circle_space], 1)) == 0
    role = draw_role(draws, flat, static)
    size_factor = torch.tensor([1.0, ued.goal_body_size_factor, ued.goal_body_size_factor, 1.0], device=draws.device)
    vertices, half, radius = sample_dimensions(draws, is_polygon, size_factor[role] * ued.max_shape_size, ctx)
    n_vertices = sample_n_vertices(draws, ctx)
    largest = torch.maximum((half * math.sqrt(2)).amax(1), radius)
    min_x, max_x, min_y, max_y = largest, width - largest, largest + FLOOR_TOP, height - largest
    opposite_side = draws.bernoulli(ued.goal_body_opposide_side_chance)
    max_x = torch.where(opposite_side & (role == GREEN), max_x - width / 2, max_x)
    min_x = torch.where(opposite_side & (role == BLUE), min_x + width / 2, min_x)
    position = draws.uniform(2) * torch.stack([max_x - min_x, max_y - min_y], 1) + torch.stack([min_x, min_y], 1)
    rotation = draws.angle()
    inverse_mass, inverse_inertia = _unit_density_mass(is_polygon, vertices, n_vertices, radius)
    fixate_chance = (ued.fixate_chance_min + ued.fixate_chance_scale / inverse_mass).clamp(max=ued.fixate_chance_max)
    fixated = draws.bernoulli(fixate_chance) & ~force_no_fixate
    movable = (~fixated).float()
    bottom_bias = ued.fixate_shape_bottom_bias + ued.fixate_shape_bottom_bias_special_role * (role != 0).float()
    to_bottom = fixated & draws.bernoulli(bottom_bias) & (position[:, 1] >= height / 2)
    position = position - torch.stack([torch.zeros_like(radius), to_bottom * (height / 2)], 1)
    inverse_mass, inverse_inertia = inverse_mass * movable, inverse_inertia * movable
    index = torch.where(is_polygon, polygon_slot, circle_slot + static.num_polygons)
    body = _body(position, rotation, inverse_mass, inverse_inertia, vertices, n_vertices, radius, role)
    return place_shape(flat, index, body, possible), index


def _joint_extents(vertices):
    """Half width and height of each polygon's vertex box (over every vertex slot, as upstream)."""
    return (vertices.amax(-2) - vertices.amin(-2)) / 2.0


def _both_shapes_visible(flat: Flat, ctx: Context, index_1, index_2, anchor_1, anchor_2):
    """Upstream's check that two joined shapes can both show whatever the joint angle (neither
    can hide inside the other); two circles never pass."""
    P, margin = ctx.static.num_polygons, ctx.ued.connect_visibility_min
    extents = _joint_extents(flat["polygon.vertices"])
    radius = flat["circle.radius"]

    def inner_distance(index, anchor):  # anchor to the nearest side of a box
        half = gather_slot(extents, index)
        return torch.minimum(half[:, 0] - anchor[:, 0].abs(), half[:, 1] - anchor[:, 1].abs())

    def outer_distance(index, anchor):  # anchor to the farthest corner of a box
        half = gather_slot(extents, index)
        far = torch.maximum((half - anchor).abs(), (-half - anchor).abs())
        return torch.sqrt((far * far).sum(-1))

    def shows(small, big, small_anchor, big_anchor):
        small_polygon, big_polygon = small < P, big < P
        big_radius, small_radius = gather_slot(radius, big - P), gather_slot(radius, small - P)
        polygons = outer_distance(small, small_anchor) > inner_distance(big, big_anchor) + margin
        polygon_in_circle = outer_distance(small, small_anchor) > big_radius + margin
        circle_on_polygon = inner_distance(big, big_anchor) + margin < small_radius
        return torch.where(
            small_polygon,
            torch.where(big_polygon, polygons, polygon_in_circle),
            big_polygon & circle_on_polygon,
        )

    return shows(index_1, index_2, anchor_1, anchor_2) & shows(index_2, index_1, anchor_2, anchor_1)


def add_connected_shape(flat: Flat, draws: Draws, ctx: Context, force_revolute):
    """Upstream's ``mutate_add_connected_shape``: a new box or circle joined to an existing
    non-scene shape (preferring movable shapes with few joints; circles take one joint, boxes
    two) by a revolute joint (motor, limits) or a fixed joint.

    Returns the levels, the new shape's global index, and upstream's visibility flag (False
    where nothing was added)."""
    static, ued = ctx.static, ctx.ued
    P, F = static.num_polygons, static.num_static_fixated_polys
    polygon_active, circle_active = flat["polygon.active"], flat["circle.active"]
    joint_active = flat["joint.active"]
    polygon_space, circle_space, polygon_slot, circle_slot = _free_slots(flat)
    possible = (polygon_space | circle_space) & dynamic_mask(flat, static).any(1) & (num_free(joint_active) > 0)

    def fixated_weight(inverse_mass):
        return torch.where(inverse_mass == 0, ued.connect_to_fixated_prob_coeff, 1.0)

    dynamic_polygon = polygon_active & (torch.arange(P, device=draws.device) >= F)
    polygon_weight = dynamic_polygon.float() * fixated_weight(flat["polygon.inverse_mass"])
    circle_weight = circle_active.float() * fixated_weight(flat["circle.inverse_mass"])
    connections = torch.zeros(polygon_active.shape[0], static.num_shapes, device=draws.device)
    for end in ("a_index", "b_index"):
        connections.scatter_add_(1, flat[f"joint.{end}"].long().clamp(0, static.num_shapes - 1), joint_active.float())
    polygon_weight = (polygon_weight * (2.0 - connections[:, :P]) / 2.0).clamp(min=0.0)
    circle_weight = circle_weight * (connections[:, P:] == 0)

    target_kind = torch.stack(
        [polygon_active.sum(1) > F, circle_active.any(1) & (circle_weight.sum(1) > 0)], 1
    )
    target_is_polygon = (draws.choice(target_kind) == 0) | ~polygon_space
    is_polygon = draws.choice(torch.stack([polygon_space, circle_space], 1)) == 0
    is_polygon = is_polygon | (~target_is_polygon & polygon_space)
    new_index = torch.where(is_polygon, polygon_slot, circle_slot + P)
    vertices, _, radius = sample_dimensions(draws, is_polygon, ued.max_shape_size, ctx)
    n_vertices = sample_n_vertices(draws, ctx)
    rotation = draws.angle()
    inverse_mass, inverse_inertia = _unit_density_mass(is_polygon, vertices, n_vertices, radius)

    revolute_count = (joint_active & ~flat["joint.is_fixed_joint"]).sum(1)
    revolute = draws.bernoulli(0.5) | force_revolute | (revolute_count < ued.min_rjoints_bias)
    joint_slot = first_free(joint_active)
    anchor_in_polygon = random_point_in_polygon(draws, vertices, n_vertices)
    anchor_in_circle = random_point_in_circle(draws, radius, on_centre_chance=1.0)
    anchor = torch.where(is_polygon[:, None], anchor_in_polygon, anchor_in_circle)

    polygon_weight = torch.where(polygon_weight.sum(1, keepdim=True) == 0, polygon_active.float(), polygon_weight)
    circle_weight = torch.where(circle_weight.sum(1, keepdim=True) == 0, circle_active.float(), circle_weight)
    target_polygon, target_circle = draws.choice(polygon_weight), draws.choice(circle_weight)
    target_index = torch.where(target_is_polygon, target_polygon, target_circle + P)
    target = select_shape(flat, target_index)
    target_anchor = torch.where(
        target_is_polygon[:, None],
        random_point_in_polygon(draws, target["vertices"], target["n_vertices"]),
        random_point_in_circle(draws, target["radius"], on_centre_chance=1.0),
    )
    world_anchor = target["position"] + geometry.rotate(target["rotation"], target_anchor)
    position = world_anchor - geometry.rotate(rotation, anchor)
    centre = torch.where(is_polygon[:, None], formulas.polygon_inverse_mass(vertices, n_vertices, 1.0)[1], 0.0)
    position, anchor, vertices = position + centre, anchor - centre, vertices - centre[:, None, :]

    target_role = gather_slot(shape_roles(flat), target_index)
    slots = torch.arange(4, device=draws.device)
    keep_for_goal_pair = (slots != 3 - target_role[:, None]) & (slots != RED)
    keep_for_red = (slots != GREEN) & (slots != BLUE)
    role_weights = torch.where(
        (target_role == 0)[:, None], True, torch.where((target_role <= BLUE)[:, None], keep_for_goal_pair, keep_for_red)
    ).float()
    role = draw_role(draws, flat, static, role_weights)

    swap = new_index > target_index  # joint ends are ordered a < b
    a_index, b_index = torch.minimum(new_index, target_index), torch.maximum(new_index, target_index)
    a_anchor = torch.where(swap[:, None], target_anchor, anchor)
    b_anchor = torch.where(swap[:, None], anchor, target_anchor)
    relative_rotation = torch.where(swap, rotation - target["rotation"], target["rotation"] - rotation)
    motor_on = draws.bernoulli(ued.motor_on_chance)
    binding = draws.integers(static.num_motor_bindings)
    speed = draws.uniform(low=ued.motor_min_speed, high=ued.motor_max_speed)
    power = draws.uniform(low=ued.motor_min_power, high=ued.motor_max_power)
    wheel_power = draws.uniform(low=ued.motor_min_power, high=ued.wheel_max_power)
    both_polygons = is_polygon & target_is_polygon
    power = torch.where(both_polygons, power, wheel_power)
    limits = draws.bernoulli(ued.joint_limit_chance) & both_polygons
    min_rotation = draws.uniform(low=-ued.joint_limit_max, high=0.0) * limits
    max_rotation = draws.uniform(low=0.0, high=ued.joint_limit_max) * limits

    body = _body(position, rotation, inverse_mass, inverse_inertia, vertices, n_vertices, radius, role)
    joint = {
        "a_index": a_index,
        "b_index": b_index,
        "a_relative_pos": a_anchor,
        "b_relative_pos": b_anchor,
        "global_position": world_anchor,
        "active": True,
        "acc_impulse": 0.0,
        "acc_r_impulse": 0.0,
        "is_fixed_joint": ~revolute,
        "rotation": torch.where(revolute, 0.0, relative_rotation),
        "motor_on": motor_on & revolute,
        "motor_speed": speed * revolute,
        "motor_power": power * revolute,
        "motor_has_joint_limits": limits & revolute,
        "min_rotation": min_rotation * revolute,
        "max_rotation": max_rotation * revolute,
    }
    out = place_shape(flat, new_index, body, possible)
    out = attach_joint(out, joint_slot, joint, binding, possible, static)
    # Upstream checks visibility with the anchors after the a < b ordering, whichever shape is new.
    visible = _both_shapes_visible(out, ctx, new_index, target_index, a_anchor, b_anchor)
    return out, new_index, visible & possible


def add_thruster(flat: Flat, draws: Draws, ctx: Context) -> Flat:
    """Upstream's ``mutate_add_thruster``: on a random movable shape, at a random point, mostly
    pointing through (or away from) the shape's centre, with power proportional to its mass."""
    static, ued = ctx.static, ctx.ued
    movable = shape_field(flat, "active") & (shape_field(flat, "inverse_mass") != 0)
    thruster_active = flat["thruster.active"]
    possible = movable.any(1) & (num_free(thruster_active) > 0)
    shape_index = draws.choice(movable)
    slot = first_free(thruster_active)
    shape = select_shape(flat, shape_index)
    mount = torch.where(
        (shape_index < static.num_polygons)[:, None],
        random_point_in_polygon(draws, shape["vertices"], shape["n_vertices"]),
        random_point_in_circle(draws, shape["radius"], on_centre_chance=0.0),
    )
    direction = torch.where(draws.uniform()[:, None] > 0.5, mount, -mount)
    fallback = torch.tensor([1.0, 0.0], device=draws.device)
    direction = torch.where((direction.norm(dim=1) == 0)[:, None], fallback, direction)
    aligned = draws.bernoulli(ued.thruster_align_com_prob)
    angle = torch.where(aligned, torch.atan2(direction[:, 1], direction[:, 0]), draws.angle())
    power_draw = draws.uniform() * 1.5 + 0.5
    mass = 1.0 / torch.where(shape["inverse_mass"] == 0, 1.0, shape["inverse_mass"])
    thruster = {
        "object_index": shape_index,
        "active": True,
        "relative_position": mount,
        "rotation": angle,
        "power": mass * ued.thruster_power_multiplier * power_draw,
        "global_position": shape["position"] + geometry.rotate(shape["rotation"], mount),
    }
    return attach_thruster(flat, slot, thruster, draws.integers(static.num_thruster_bindings), possible)


# --- removing and changing ----------------------------------------------------------------------


def _random_non_scene_shape(flat: Flat, draws: Draws, static: StaticEnvParams):
    """A random active non-scene shape per level (global index), and whether the level has one."""
    candidates = dynamic_mask(flat, static)
    return draws.choice(candidates), candidates.any(1)


def remove_shape(flat: Flat, draws: Draws, ctx: Context) -> Flat:
    """Upstream's ``mutate_remove_shape``: a random non-scene shape with its joints and thrusters."""
    index, possible = _random_non_scene_shape(flat, draws, ctx.static)
    out = dict(flat)
    write_shape(out, index, {"active": False}, possible)
    attached = (flat["joint.a_index"] == index[:, None]) | (flat["joint.b_index"] == index[:, None])
    out["joint.active"] = flat["joint.active"] & ~(attached & possible[:, None])
    mounted = flat["thruster.object_index"] == index[:, None]
    out["thruster.active"] = flat["thruster.active"] & ~(mounted & possible[:, None])
    geometry.recalculate_collision_matrix(out, ctx.static)
    return merge(possible, out, flat)


def remove_joint(flat: Flat, draws: Draws, ctx: Context) -> Flat:
    """Upstream's ``mutate_remove_joint``: a random active joint."""
    possible = flat["joint.active"].any(1)
    out = dict(flat)
    write(out, "joint.active", draws.choice(flat["joint.active"]), False, possible)
    geometry.recalculate_collision_matrix(out, ctx.static)
    return merge(possible, out, flat)


def remove_thruster(flat: Flat, draws: Draws, ctx: Context) -> Flat:
    """Upstream's ``mutate_remove_thruster``: a random active thruster."""
    out = dict(flat)
    write(out, "thruster.active", draws.choice(flat["thruster.active"]), False, flat["thruster.active"].any(1))
    return out


def swap_role(flat: Flat, draws: Draws, ctx: Context) -> Flat:
    """Upstream's ``mutate_swap_role``: two non-scene shapes of different roles swap roles."""
    static = ctx.static
    possible = (role_counts(flat, static, include_scene=False) > 0).sum(1) > 1
    candidates = dynamic_mask(flat, static).float()
    roles = shape_roles(flat)
    first = draws.choice(candidates)
    first_role = gather_slot(roles, first)
    second = draws.choice(torch.where(roles == first_role[:, None], 0.0, candidates))
    second_role = gather_slot(roles, second)
    return set_role(set_role(flat, first, second_role, possible), second, first_role, possible)


def toggle_fixture(flat: Flat, draws: Draws, ctx: Context) -> Flat:
    """Upstream's ``mutate_toggle_fixture``: a random non-scene shape becomes fixated, or movable."""
    index, possible = _random_non_scene_shape(flat, draws, ctx.static)
    now_movable = (gather_slot(shape_field(flat, "inverse_inertia"), index) == 0).float()
    out = dict(flat)
    write_shape(out, index, {"inverse_mass": now_movable, "inverse_inertia": now_movable}, possible)
    recalculate_mass_and_inertia(out)
    return merge(possible, out, flat)


def change_gravity(flat: Flat, draws: Draws, ctx: Context) -> Flat:
    """Upstream's ``mutate_change_gravity``: (0, -9.8) or (0, uniform[-9.8, 0]), half and half."""
    standard = draws.bernoulli(0.5)
    down = torch.where(standard, -9.8, draws.uniform(low=-9.8, high=0.0))
    return {**flat, "gravity": torch.stack([torch.zeros_like(down), down], 1)}


def _settle(flat: Flat, ctx: Context) -> Flat:
    """Upstream's ``do_dummy_step`` x 5: physics steps with no contacts, gravity or actions, each
    followed by zeroed velocities, so that joints pull edited shapes back into place. The contacts
    the steps find are dropped; the joints keep their warm-start impulses, as upstream."""
    static = ctx.static
    levels = to_levels(flat, static)
    gravity, matrix = levels["gravity"], levels["collision_matrix"]
    actions = torch.zeros((levels.batch_size[0], static.action_dim), device=gravity.device)
    for _ in range(SETTLE_STEPS):
        levels.set("gravity", torch.zeros_like(gravity))
        levels.set("collision_matrix", torch.zeros_like(matrix))
        levels, _ = engine.physics_step(levels, actions, ctx.env_params, static)
        levels.set("gravity", gravity)
        levels.set("collision_matrix", matrix)
        for kind in ("polygon", "circle"):
            levels.set((kind, "velocity"), torch.zeros_like(levels[kind, "velocity"]))
            levels.set((kind, "angular_velocity"), torch.zeros_like(levels[kind, "angular_velocity"]))
    return without_contacts(levels)


def change_shape_size(flat: Flat, draws: Draws, ctx: Context) -> Flat:
    """Upstream's ``mutate_change_shape_size``: a random non-scene shape is rescaled to a newly
    drawn size (a box keeps its proportions per axis), joint anchors on it move with it, and
    the joints settle."""
    static = ctx.static
    P = static.num_polygons
    index, possible = _random_non_scene_shape(flat, draws, static)
    is_polygon = index < P
    vertices, _, radius = sample_dimensions(draws, is_polygon, ctx.ued.max_shape_size, ctx)
    old_vertices = gather_slot(flat["polygon.vertices"], index)

    def top_left(v):  # the vertex minimising 100 x + y
        corner = torch.argmin(v[..., 0] * 100 + v[..., 1], dim=1)
        return gather_slot(v, corner)

    polygon_scale = top_left(vertices) / top_left(old_vertices)
    circle_scale = radius / gather_slot(flat["circle.radius"], index - P)
    scale = torch.where(is_polygon[:, None], polygon_scale, circle_scale[:, None])
    out = dict(flat)
    for end in ("a", "b"):
        on_shape = ((flat[f"joint.{end}_index"] == index[:, None]) & flat["joint.active"])[..., None]
        key = f"joint.{end}_relative_pos"
        out[key] = torch.where(on_shape, flat[key] * scale[:, None], flat[key])
    write(out, "polygon.vertices", index, old_vertices * polygon_scale[:, None], possible & is_polygon)
    write(out, "circle.radius", index - P, radius, possible & ~is_polygon)
    out = _settle(out, ctx)
    recalculate_mass_and_inertia(out)
    return merge(possible, out, flat)


def change_shape_rotation(flat: Flat, draws: Draws, ctx: Context) -> Flat:
    """Upstream's ``mutate_change_shape_rotation``: a random non-scene shape turns by up to 90
    degrees, fixed joints on it keep their relative angle, and the joints settle."""
    index, possible = _random_non_scene_shape(flat, draws, ctx.static)
    delta = draws.uniform() * (math.pi / 2)
    fixed = flat["joint.is_fixed_joint"] & flat["joint.active"]
    on_a = (flat["joint.a_index"] == index[:, None]) & fixed
    on_b = (flat["joint.b_index"] == index[:, None]) & fixed
    out = dict(flat)
    rotation = flat["joint.rotation"]
    turned = torch.where(on_b, rotation + delta[:, None], rotation)
    out["joint.rotation"] = torch.where(on_a, rotation - delta[:, None], turned)
    write_shape(out, index, {"rotation": gather_slot(shape_field(flat, "rotation"), index) + delta}, possible)
    out = _settle(out, ctx)
    recalculate_mass_and_inertia(out)
    return merge(possible, out, flat)


def change_shape_location(flat: Flat, draws: Draws, ctx: Context) -> Flat:
    """Upstream's ``mutate_change_shape_location``: a random non-scene shape and everything
    joined to it move by up to 0.5 per axis, shifted back inside the walls, floor and ceiling
    (measured on unrotated vertex boxes, as upstream)."""
    static = ctx.static
    P, F = static.num_polygons, static.num_static_fixated_polys
    width, height = ctx.world_size
    index, possible = _random_non_scene_shape(flat, draws, static)
    delta = draws.uniform(2) - 0.5
    moves = ~gather_slot(flat["collision_matrix"], index)
    moves = moves & (torch.arange(static.num_shapes, device=draws.device) >= F)
    positions = shape_field(flat, "position") + delta[:, None, :] * moves[..., None]
    live_vertex = torch.arange(static.max_polygon_vertices, device=draws.device) < flat["polygon.n_vertices"][..., None]
    vertices = flat["polygon.vertices"]
    low_vertex = torch.where(live_vertex[..., None], vertices, torch.inf).amin(-2).clamp(max=0.0)
    high_vertex = torch.where(live_vertex[..., None], vertices, -torch.inf).amax(-2).clamp(min=0.0)
    radius = flat["circle.radius"][..., None]
    low = torch.cat([positions[:, :P] + low_vertex, positions[:, P:] - radius], 1)
    high = torch.cat([positions[:, :P] + high_vertex, positions[:, P:] + radius], 1)
    counted = dynamic_mask(flat, static)[..., None]
    low = torch.where(counted, low, torch.inf).amin(1)
    high = torch.where(counted, high, -torch.inf).amax(1)
    push = torch.stack(
        [
            (-low[:, 0]).clamp(min=0) - (high[:, 0] - width).clamp(min=0),
            (FLOOR_TOP - low[:, 1]).clamp(min=0) - (high[:, 1] - height).clamp(min=0),
        ],
        1,
    )
    positions = positions + push[:, None, :] * moves[..., None]
    out = {**flat, "polygon.position": positions[:, :P], "circle.position": positions[:, P:]}
    recalculate_mass_and_inertia(out)
    return merge(possible, out, flat)
