"""The rules every level obeys, checked batched on the levels' device at every way in.

Every level that enters the project passes :func:`check_levels`: JSON load and save
(:func:`kinetix_torch.levels.validate_level` runs it on a batch of one), bank save and load
(:func:`kinetix_torch.levels.save_bank` / ``load_bank``), and the levels and the sampler output a
:class:`~kinetix_torch.env.KinetixEnv` is given. An error names the source, the level, the field
and slot, its value and what was expected::

    bank runs/levels.pt level 12: polygon.position[5, 0] = 1e+30: expected in [-30, 30] (±2·clip_position)

:func:`level_problems` is the one rule table, as ``(B,)`` bools per rule. A rule rejects what
breaks every episode, or what neither upstream's editor nor its generator can make; every
handmade level and every random and mutated level of upstream's and of ours passes.

* **Structure** (active slots): joint ends and thruster parents index active shapes, a joint joins
  two different shapes, roles, bindings and collision modes are in range, polygons have
  3..``max_polygon_vertices`` live vertices, and the ``num_static_fixated_polys`` scene pieces
  (floor, walls, ceiling) are active and immovable.
* **Finite**: every float of every slot, active or not. Upstream ends an episode at any NaN in the
  state, and inactive bodies are still integrated.
* **Magnitudes** (active slots, :data:`BOUNDS`). Where physics gives no limit, the range is that
  of upstream's editor sliders widened :data:`EDITOR_WIDENING` (10) times either way; upstream's
  generator stays well inside.

  - velocity and angular velocity within ``±clip_velocity`` and ``±clip_angular_velocity``, and
    position within ``±2 clip_position``. The engine clamps all three to ``±clip_*`` after every
    step, so no state it makes lies outside; upstream's generator, though, may join a shape to the
    top of the ceiling, just beyond ``clip_position`` (the engine clips it on the first step).
  - rotations of shapes and thrusters, joint reference angles and limits: within ``±1e4`` rad
    (:data:`ANGLE_LIMIT`). Angles are never wrapped, and beyond this float32 rounds a step's turn
    away.
  - live vertices of non-scene polygons within ``±max_shape_size`` of the centre, radii in
    ``(0, max_shape_size]``: the editor keeps vertices within ``max_shape_size`` and radii within
    half of it, the generator both within half; a disc of radius 0 has no mass.
  - vertices of the scene pieces, joint anchors and thruster mounts within ``±2 sqrt(2)
    clip_position``, the diagonal of the engine's ``±clip_position`` box: an anchor lies on its
    body, and no body outgrows the world (the scene pieces reach 10 units from their centres).
  - friction ``[0, 10]`` (editor ``[0.02, 1]``; a negative coefficient pushes along the slide),
    restitution ``[0, 1]`` (editor ``[0, 0.8]``; above 1 a bounce creates energy), density
    ``[0.01, 50]`` (editor ``[0.1, 5]``), motor speed ``[-30, 30]`` (editor ``[-3, 3]``), motor and
    thruster power ``[0, 30]`` (editor ``[0, 3]``; a negative power pushes backwards), gravity
    ``[-200, 200]`` per component (editor: y in ``[-20, 0]``).
* **Polygons** (active): convex, with the live vertices in clockwise order, distinct and not
  collinear (every corner turns clockwise by more than ``asin(1e-3)``, and once round in all).
  Jax2D documents clockwise vertices, and its separating-axis test takes each edge's left-hand
  normal as the outward one, so any other order breaks every contact.
* **Joint limits**: ``min_rotation <= max_rotation`` where a joint has limits: otherwise no angle
  satisfies both, and the two limit impulses fight every step (the editor swaps them).
* **Derived data**: the collision matrix equals the one the active joints imply, and movable
  shapes' inverse mass and inertia follow from their geometry and density (fixated: both zero).

Warm-start impulses, contact manifolds, cached joint and thruster world positions and
``last_distance`` only need to be finite: the engine rewrites them every step (the JSON loader
zeroes the manifolds). ``dt`` and the other parameters are checked where
:class:`~kinetix_torch.params.EnvParams` is built.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from . import schema
from .bodies import at_shapes, dynamic_mask, recalculate_mass_and_inertia, shape_field, to_flat
from .formulas import cross
from .params import EnvParams, StaticEnvParams
from .topology import collision_matrix

__all__ = ["LevelFormatError", "Bound", "BOUNDS", "level_problems", "check_levels"]


class LevelFormatError(ValueError):
    """A level file or state is malformed; the message names the source (file, bank, ...), the
    level, the field and what was expected."""


# --------------------------------------------------------------------------------------------------
# Magnitudes

EDITOR_WIDENING = 10.0
"""Coefficients with no physical limit may exceed the range of upstream's editor sliders by this
factor either way."""

ANGLE_LIMIT = 1e4
"""Angles are never wrapped; float32 resolves about 1e-3 rad at 1e4 rad, and beyond that one
step's turn (``angular_velocity * dt``) is lost to rounding."""

CORNER_SINE = 1e-3
"""Every polygon corner turns clockwise with ``sin(turn) > CORNER_SINE`` (about 0.06 degrees)."""

_Limit = Callable[[StaticEnvParams, EnvParams], float]


@dataclass(frozen=True)
class Bound:
    """Values of ``keys`` in the slots of ``slots`` lie in ``[low, high]`` (``(low, high]`` with
    ``open_low``)."""

    rule: str
    keys: tuple[str, ...]
    low: _Limit
    high: _Limit
    range_name: str
    """What the message says the range is."""
    slots: str = "active"
    """``active``: the entity's active slots; ``live_vertices`` / ``scene_vertices``: the live
    vertices of active non-scene polygons / of the scene pieces; ``all``: every slot."""
    open_low: bool = False


def _both(name: str) -> tuple[str, str]:
    return f"polygon.{name}", f"circle.{name}"


def _symmetric(limit: _Limit) -> tuple[_Limit, _Limit]:
    return (lambda s, p: -limit(s, p)), limit


def _box_diagonal(s: StaticEnvParams, p: EnvParams) -> float:
    return 2 * math.sqrt(2) * p.clip_position


BOUNDS: tuple[Bound, ...] = (
    Bound("position", _both("position"), *_symmetric(lambda s, p: 2 * p.clip_position), "±2·clip_position"),
    Bound("velocity", _both("velocity"), *_symmetric(lambda s, p: p.clip_velocity), "±clip_velocity"),
    Bound("angular_velocity", _both("angular_velocity"), *_symmetric(lambda s, p: p.clip_angular_velocity),
          "±clip_angular_velocity"),
    Bound("angle", (*_both("rotation"), "joint.rotation", "joint.min_rotation", "joint.max_rotation",
                    "thruster.rotation"), *_symmetric(lambda s, p: ANGLE_LIMIT), "±ANGLE_LIMIT rad"),
    Bound("shape_size", ("polygon.vertices",), *_symmetric(lambda s, p: s.max_shape_size), "±max_shape_size",
          slots="live_vertices"),
    Bound("shape_size", ("circle.radius",), lambda s, p: 0.0, lambda s, p: s.max_shape_size, "max_shape_size",
          open_low=True),
    Bound("offset", ("polygon.vertices",), *_symmetric(_box_diagonal), "the diagonal of the ±clip_position box",
          slots="scene_vertices"),
    Bound("offset", ("joint.a_relative_pos", "joint.b_relative_pos", "thruster.relative_position"),
          *_symmetric(_box_diagonal), "the diagonal of the ±clip_position box"),
    Bound("friction", _both("friction"), lambda s, p: 0.0, lambda s, p: 1.0 * EDITOR_WIDENING,
          "the editor's [0.02, 1], widened"),
    Bound("restitution", _both("restitution"), lambda s, p: 0.0, lambda s, p: 1.0, "above 1 a bounce creates energy"),
    Bound("density", ("polygon_densities", "circle_densities"), lambda s, p: 0.1 / EDITOR_WIDENING,
          lambda s, p: 5.0 * EDITOR_WIDENING, "the editor's [0.1, 5], widened"),
    Bound("motor_speed", ("joint.motor_speed",), *_symmetric(lambda s, p: 3.0 * EDITOR_WIDENING),
          "the editor's [-3, 3], widened"),
    Bound("motor_power", ("joint.motor_power",), lambda s, p: 0.0, lambda s, p: 3.0 * EDITOR_WIDENING,
          "the editor's [0, 3], widened"),
    Bound("thruster_power", ("thruster.power",), lambda s, p: 0.0, lambda s, p: 3.0 * EDITOR_WIDENING,
          "the editor's [0, 3], widened"),
    Bound("gravity", ("gravity",), *_symmetric(lambda s, p: 20.0 * EDITOR_WIDENING), "the editor's [-20, 0], widened",
          slots="all"),
)
"""The ranges of the float fields that mean more than a finite number (reasons: module docstring)."""


# --------------------------------------------------------------------------------------------------
# The rule table


@dataclass
class _Finding:
    """One rule applied to one field: where it is broken, and what the message says."""

    rule: str
    key: str
    bad: torch.Tensor
    """``(B, *slot dims)``: True where broken; the slot dims are a prefix of the field's."""
    expected: str
    """What the slot should hold; a ``{}`` is filled from ``expected_values`` at the slot."""
    expected_values: torch.Tensor | None = None


def _outside(values, active, low: int, high: int):
    return active & ((values < low) | (values >= high))


def _structure(flat, static: StaticEnvParams, env_params: EnvParams) -> list[_Finding]:
    N, F = static.num_shapes, static.num_static_fixated_polys
    active = shape_field(flat, "active")
    joint_active, thruster_active = flat["joint.active"], flat["thruster.active"]
    shape_index = f"the index of an active shape, in [0, {N}) (num_shapes)"

    def not_an_active_shape(key, slot_active):
        index = flat[key]
        return slot_active & ~((index >= 0) & (index < N) & at_shapes(active, index))

    def in_range(rule, key, slot_active, low, high, high_name):
        bad = _outside(flat[key], slot_active, low, high)
        return _Finding(rule, key, bad, f"in [{low}, {high}) ({high_name})")

    findings = [
        _Finding("joint_ends", key, not_an_active_shape(key, joint_active), shape_index)
        for key in ("joint.a_index", "joint.b_index")
    ]
    a, b = flat["joint.a_index"], flat["joint.b_index"]
    findings += [
        _Finding("joint_joins_itself", "joint.b_index", joint_active & (a == b),
                 "a shape other than joint.a_index = {}", a),
        _Finding("thruster_parent", "thruster.object_index",
                 not_an_active_shape("thruster.object_index", thruster_active), shape_index),
        in_range("motor_binding", "motor_bindings", joint_active, 0, static.num_motor_bindings,
                 f"num_motor_bindings = {static.num_motor_bindings}"),
        in_range("thruster_binding", "thruster_bindings", thruster_active, 0, static.num_thruster_bindings,
                 f"num_thruster_bindings = {static.num_thruster_bindings}"),
    ]
    for kind in ("polygon", "circle"):
        kind_active = flat[f"{kind}.active"]
        findings += [
            in_range("role_range", f"{kind}_shape_roles", kind_active, 0, env_params.num_shape_roles,
                     f"num_shape_roles = {env_params.num_shape_roles}"),
            in_range("collision_mode", f"{kind}.collision_mode", kind_active, 0, 3,
                     "0: touches mode 2 only, 1: normal, 2: touches all"),
        ]
    findings.append(in_range("n_vertices", "polygon.n_vertices", flat["polygon.active"], 3,
                             static.max_polygon_vertices + 1,
                             f"max_polygon_vertices + 1 = {static.max_polygon_vertices + 1}"))
    scene = torch.arange(static.num_polygons, device=active.device) < F
    piece = f"polygons 0..{F - 1} are the floor, walls and ceiling"
    findings += [
        _Finding("scene_pieces", "polygon.active", scene & ~flat["polygon.active"], f"True ({piece})"),
        _Finding("scene_pieces", "polygon.inverse_mass", scene & (flat["polygon.inverse_mass"] != 0),
                 f"0 ({piece}, immovable)"),
        _Finding("scene_pieces", "polygon.inverse_inertia", scene & (flat["polygon.inverse_inertia"] != 0),
                 f"0 ({piece}, immovable)"),
    ]
    return findings


def _non_finite(flat) -> list[_Finding]:
    return [
        _Finding("non_finite", f.key, ~torch.isfinite(flat[f.key]), "a finite number")
        for f in schema.FIELDS
        if f.dtype.kind == "f"
    ]


def _slot_masks(flat, static: StaticEnvParams) -> dict[str, dict[str, torch.Tensor]]:
    """``slots`` name -> key prefix -> ``(B, *slot dims)`` mask of the slots a bound covers."""
    polygon_active = flat["polygon.active"]
    max_vertices = flat["polygon.vertices"].shape[2]
    live = torch.arange(max_vertices, device=polygon_active.device) < flat["polygon.n_vertices"][..., None]
    scene = torch.arange(static.num_polygons, device=polygon_active.device) < static.num_static_fixated_polys
    live = live & polygon_active[..., None]
    return {
        "active": {kind: flat[f"{kind}.active"] for kind in ("polygon", "circle", "joint", "thruster")},
        "live_vertices": {"polygon": live & ~scene[:, None]},
        "scene_vertices": {"polygon": live & scene[:, None]},
        "all": {"gravity": torch.ones_like(flat["gravity"], dtype=torch.bool)},
    }


def _magnitudes(flat, static: StaticEnvParams, env_params: EnvParams) -> list[_Finding]:
    masks = _slot_masks(flat, static)
    findings = []
    for bound in BOUNDS:
        low, high = bound.low(static, env_params), bound.high(static, env_params)
        for key in bound.keys:
            value = flat[key]
            slots = masks[bound.slots][key.split(".")[0].split("_")[0]]  # polygon_densities -> polygon
            slots = slots.reshape(slots.shape + (1,) * (value.ndim - slots.ndim))
            below = (value <= low) if bound.open_low else (value < low)
            bracket = "(" if bound.open_low else "["
            expected = f"in {bracket}{low:.6g}, {high:.6g}] ({bound.range_name})"
            findings.append(_Finding(bound.rule, key, slots & (below | (value > high)), expected))
    return findings


def _polygon_shape(flat, static: StaticEnvParams) -> _Finding:
    """Active polygons whose live vertices do not run clockwise round a convex, non-degenerate shape."""
    vertices, n_vertices = flat["polygon.vertices"], flat["polygon.n_vertices"]
    max_vertices = vertices.shape[2]
    counted = flat["polygon.active"] & (n_vertices >= 3) & (n_vertices <= max_vertices)
    n = n_vertices.clamp(3, max_vertices)[..., None]
    slots = torch.arange(max_vertices, device=vertices.device)
    following = torch.where(slots + 1 < n, slots + 1, 0)  # (B, P, V): the next live vertex

    def successor(x):
        return x.gather(2, following[..., None].expand_as(x))

    edge = successor(vertices) - vertices
    next_edge = successor(edge)
    turn = cross(edge, next_edge)
    lengths = edge.norm(dim=-1) * next_edge.norm(dim=-1)
    live = slots < n
    sharp = (turn < -CORNER_SINE * lengths) | ~live
    turning = torch.where(live, torch.atan2(turn, (edge * next_edge).sum(-1)), 0.0).sum(-1)
    once_round = turning > -3 * math.pi  # -2 pi for a simple polygon, -4 pi for a pentagram
    bad = counted & ~(sharp.all(-1) & once_round)
    return _Finding(
        "polygon_shape", "polygon.vertices", bad,
        "its n_vertices = {} live vertices in clockwise order round a convex polygon, distinct and not collinear",
        n_vertices,
    )


def _close(x, y):
    return (x - y).abs() <= 1e-4 * y.abs() + 1e-6


def _derived(flat, static: StaticEnvParams) -> list[_Finding]:
    P = static.num_polygons
    joint_active = flat["joint.active"]
    limited = joint_active & flat["joint.motor_has_joint_limits"]
    low, high = flat["joint.min_rotation"], flat["joint.max_rotation"]
    findings = [
        _Finding("joint_limits", "joint.min_rotation", limited & (low > high), "at most joint.max_rotation = {}", high)
    ]
    implied = collision_matrix(flat["joint.a_index"].long(), flat["joint.b_index"].long(), joint_active,
                               static.num_shapes, xp=torch)
    findings.append(_Finding("collision_matrix", "collision_matrix", implied != flat["collision_matrix"],
                             "{} (True unless active joints connect the two shapes)", implied))
    expected = dict(flat)
    recalculate_mass_and_inertia(expected)
    dynamic = dynamic_mask(flat, static)
    for kind, movable in (("polygon", dynamic[:, :P]), ("circle", dynamic[:, P:])):
        density = f"{kind}_densities"
        for name in ("inverse_mass", "inverse_inertia"):
            key = f"{kind}.{name}"
            findings.append(_Finding(name, key, movable & ~_close(expected[key], flat[key]),
                                     f"{{}} (from the shape's geometry and {density}; 0 when fixated)", expected[key]))
        fixated_mismatch = (flat[f"{kind}.inverse_mass"] == 0) != (flat[f"{kind}.inverse_inertia"] == 0)
        findings.append(_Finding("fixation", f"{kind}.inverse_inertia", movable & fixated_mismatch,
                                 "zero exactly when inverse_mass (here {}) is zero: a fixated shape has both zero",
                                 flat[f"{kind}.inverse_mass"]))
    return findings


def _findings(levels, static: StaticEnvParams, env_params: EnvParams | None) -> list[_Finding]:
    """Every rule on every field, in the order errors are reported."""
    env_params = env_params or EnvParams()
    flat = to_flat(levels)
    return (
        _structure(flat, static, env_params)
        + _non_finite(flat)
        + _magnitudes(flat, static, env_params)
        + [_polygon_shape(flat, static)]
        + _derived(flat, static)
    )


def level_problems(levels, static: StaticEnvParams, env_params: EnvParams | None = None) -> dict[str, torch.Tensor]:
    """Rule name -> ``(B,)`` bool, True where a level breaks the rule (see the module docstring).
    ``levels``: a TensorDict of batch ``[B]`` or a flat dict of ``(B, ...)`` tensors."""
    problems: dict[str, torch.Tensor] = {}
    for finding in _findings(levels, static, env_params):
        bad = _per_level(finding.bad)
        problems[finding.rule] = problems[finding.rule] | bad if finding.rule in problems else bad
    return problems


# --------------------------------------------------------------------------------------------------
# Errors


def check_levels(
    levels,
    static: StaticEnvParams,
    env_params: EnvParams | None = None,
    where: str = "levels",
    names: Sequence[str] | None = None,
) -> None:
    """Raise :class:`LevelFormatError` for the first broken rule (fields, shapes and dtypes first).

    ``levels``: a TensorDict of batch ``[B]`` or a flat dict of ``(B, ...)`` tensors. Messages start
    with ``names[i]`` when given (one name per level), else ``"{where} level {i}"``. On the levels'
    device; a valid batch costs one host synchronisation.
    """
    flat = to_flat(levels)
    batch = tuple(flat["timestep"].shape) if "timestep" in flat else ()
    try:
        schema.validate(flat, static, batch, where=where)
    except ValueError as e:
        raise LevelFormatError(str(e)) from None
    if len(batch) != 1:
        raise LevelFormatError(f"{where}: expected one batch dim, got batch shape {list(batch)}")
    findings = _findings(flat, static, env_params)
    broken = torch.stack([_per_level(f.bad) for f in findings]).any(1).tolist()
    if True not in broken:
        return
    finding = findings[broken.index(True)]
    slot = tuple(int(i) for i in finding.bad.nonzero()[0].tolist())
    level, index = slot[0], list(slot[1:])
    value = flat[finding.key][slot]
    expected = finding.expected
    if finding.expected_values is not None:
        expected = expected.format(_show(finding.expected_values[slot]))
    source = names[level] if names is not None else f"{where} level {level}"
    raise LevelFormatError(f"{source}: {finding.key}{index if index else ''} = {_show(value)}: expected {expected}")


def _per_level(bad: torch.Tensor) -> torch.Tensor:
    """``(B, ...)`` -> ``(B,)``: any slot."""
    return bad.flatten(1).any(1) if bad.ndim > 1 else bad


def _show(value: torch.Tensor) -> str:
    if value.ndim:
        return "[" + ", ".join(_show(v) for v in value) + "]"
    item = value.item()
    return f"{item:.7g}" if isinstance(item, float) else str(item)
