"""Upstream Kinetix's random level distribution (``sample_kinetix_level``), batched in torch, and
:class:`RandomLevelSampler`, the env's reset source of fresh random levels.

A level is built the way upstream builds it, with the edits of :mod:`.edits` (the ones the ACCEL
mutators use): the empty scene with a coloured floor; a green and a blue shape (not both
fixated); a forced control (a motorised connected shape, a thruster, or both); ``P + C - 7`` more
rounds that add a connected shape, a free shape or nothing; ``T - 1`` chances of another thruster;
a random green/blue swap; and a random order of shapes, joints and thrusters. Each added shape is
the least-overlapping of ``add_shape_n_proposals`` candidates (one candidate for sizes with at most
7 shapes, where nothing is ever fixated, as upstream).

Every level of a batch runs the same code with its own random draws; only the fixed number of
rounds is a Python loop.
"""

from __future__ import annotations

import torch

from ..bodies import Flat
from ..params import EnvParams, StaticEnvParams, static_params_for_size
from ..schema import BLUE, GREEN
from . import edits, geometry
from .batch import Draws, empty_levels, merge, to_levels
from .noop_filter import filter_levels
from .params import UEDParams

__all__ = ["sample_levels", "resolve_static", "RandomLevelSampler"]

SMALL_LEVEL_SHAPES = 7
"""Sizes with at most this many shape slots use one proposal and never fixate (upstream)."""


def resolve_static(static: StaticEnvParams | str) -> StaticEnvParams:
    """Static params, or an S/M/L size name; the generator needs 4-vertex polygon slots."""
    static = static_params_for_size(static) if isinstance(static, str) else static
    if not isinstance(static, StaticEnvParams):
        raise TypeError(f"static: expected StaticEnvParams or 's'/'m'/'l', got {type(static).__name__}")
    if static.max_polygon_vertices != 4:
        raise ValueError(f"static.max_polygon_vertices must be 4 to generate levels, got {static.max_polygon_vertices}")
    free_shapes = static.num_shapes - static.num_static_fixated_polys
    if free_shapes < 3 or min(static.num_joints, static.num_thrusters) < 1:
        raise ValueError(
            "static: generated levels need room for 3 non-scene shapes, 1 joint and 1 thruster; got "
            f"{free_shapes} shapes, {static.num_joints} joints, "
            f"{static.num_thrusters} thrusters"
        )
    return static


def _least_overlapping(flat: Flat, draws: Draws, ctx: edits.Context, count: int, propose) -> Flat:
    """Upstream's ``_choose_proposal_with_least_collisions``: ``propose(flat, draws)`` returns
    ``(levels, new shape index, penalty)`` for ``count`` copies of every level, and the copy with
    the fewest contact points plus penalty wins (the first on ties)."""
    if count == 1:
        return propose(flat, draws)[0]
    batch = draws.batch
    copies = {k: v.repeat_interleave(count, dim=0) for k, v in flat.items()}
    proposals, index, penalty = propose(copies, Draws(draws.generator, batch * count))
    score = geometry.contacts_of_shape(proposals, index, ctx.static).float() + penalty
    rows = torch.arange(batch, device=draws.device) * count + score.reshape(batch, count).argmin(1)
    return {k: flat[k] if v is copies[k] else v[rows] for k, v in proposals.items()}


def _add_free_shape(flat, draws, ctx, no_fixate, count):
    small = ctx.static.num_shapes <= SMALL_LEVEL_SHAPES

    def propose(levels, d):
        flags = (no_fixate | small).repeat_interleave(d.batch // no_fixate.shape[0])
        out, index = edits.add_shape(levels, d, ctx, flags)
        return out, index, 0.0

    return _least_overlapping(flat, draws, ctx, count, propose)


def _add_joined_shape(flat, draws, ctx, force_revolute: bool, count):
    def propose(levels, d):
        flags = torch.full((d.batch,), force_revolute, device=d.device)
        out, index, visible = edits.add_connected_shape(levels, d, ctx, flags)
        return out, index, (~visible).float() * ctx.ued.connect_no_visibility_bias

    return _least_overlapping(flat, draws, ctx, count, propose)


def _swap_green_and_blue(flat: Flat, swap: torch.Tensor) -> None:
    for key in ("polygon_shape_roles", "circle_shape_roles"):
        roles = flat[key]
        swapped = torch.where(roles == GREEN, BLUE, torch.where(roles == BLUE, GREEN, roles))
        flat[key] = torch.where(swap[:, None], swapped, roles)


def _permute(flat: Flat, draws: Draws, static: StaticEnvParams) -> Flat:
    """Upstream's ``permute_state``: shuffle circles, non-scene polygons, joints and thrusters,
    re-pointing joint ends and thruster parents."""
    P, F = static.num_polygons, static.num_static_fixated_polys
    batch, device = draws.batch, draws.device
    circle_order = draws.permutation(static.num_circles)
    polygon_order = torch.cat(
        [torch.arange(F, device=device).expand(batch, F), draws.permutation(P - F) + F], 1
    )
    joint_order = draws.permutation(static.num_joints)
    thruster_order = draws.permutation(static.num_thrusters)
    new_position_of = torch.argsort(torch.cat([polygon_order, circle_order + P], 1), dim=1)

    def reorder(value, order):
        return value.gather(1, order.reshape(order.shape + (1,) * (value.ndim - 2)).expand_as(value))

    groups = {
        "polygon": polygon_order,
        "circle": circle_order,
        "joint": joint_order,
        "thruster": thruster_order,
        "motor_bindings": joint_order,
        "motor_auto": joint_order,
        "thruster_bindings": thruster_order,
    }
    out = dict(flat)
    for key in ("joint.a_index", "joint.b_index", "thruster.object_index"):
        out[key] = new_position_of.gather(1, flat[key].long()).to(flat[key].dtype)
    for key, value in list(out.items()):
        head = key.split(".")[0]
        order = groups.get(next((kind for kind in ("polygon", "circle") if head.startswith(kind)), head))
        if order is not None:
            out[key] = reorder(value, order)
    geometry.recalculate_collision_matrix(out, static)
    return out


def sample_levels(n: int, static: StaticEnvParams | str, params: UEDParams | None = None,
                  generator: torch.Generator | None = None, env_params: EnvParams | None = None):
    """``n`` random levels of upstream's distribution as a TensorDict (batch ``[n]``, every state
    field of :mod:`kinetix_torch.schema`) on ``generator``'s device.

    ``static``: :class:`StaticEnvParams` or ``"s"``/``"m"``/``"l"``; ``params``: generator
    settings (upstream's ``UEDParams`` defaults); ``env_params`` gives the screen size in world
    units (``pixels_per_unit``). The same seed gives the same levels on the same device.
    """
    static = resolve_static(static)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    ctx = edits.Context(static, env_params or EnvParams(), params or UEDParams())
    ued = ctx.ued
    draws = Draws(generator, n)
    count = 1 if static.num_shapes <= SMALL_LEVEL_SHAPES else ued.add_shape_n_proposals
    no = torch.zeros(n, dtype=torch.bool, device=draws.device)

    flat = empty_levels(n, static, draws.device)
    floor_weights = torch.tensor(
        [ued.floor_prob_normal, ued.floor_prob_green, ued.floor_prob_blue, ued.floor_prob_red], device=draws.device
    )
    floor_role = draws.choice(floor_weights.expand(n, 4))
    flat = edits.set_role(flat, torch.zeros_like(floor_role), floor_role, ~no)

    green_movable = draws.bernoulli(0.5) | (floor_role == BLUE)
    flat = _add_free_shape(flat, draws, ctx, green_movable, count)
    flat = _add_free_shape(flat, draws, ctx, ~green_movable, count)

    control = draws.integers(3)  # 0: motor, 1: thruster, 2: both
    with_motor = _add_joined_shape(flat, draws, ctx, True, count)
    without_motor = _add_free_shape(flat, draws, ctx, no, count)
    flat = merge(control != 1, with_motor, without_motor)
    flat = merge(control != 0, edits.add_thruster(flat, draws, ctx), flat)

    for _ in range(static.num_shapes - 3 - static.num_static_fixated_polys):
        kind = draws.choice(
            torch.tensor([ued.add_connected_shape_chance, ued.add_shape_chance, ued.add_no_shape_chance],
                         device=draws.device).expand(n, 3)
        )
        joined = _add_joined_shape(flat, draws, ctx, False, count)
        free = _add_free_shape(flat, draws, ctx, no, count)
        flat = merge(kind == 0, joined, merge(kind == 1, free, flat))

    for _ in range(static.num_thrusters - 1):
        flat = merge(draws.bernoulli(ued.add_thruster_chance), edits.add_thruster(flat, draws, ctx), flat)

    _swap_green_and_blue(flat, draws.bernoulli(0.5) & (flat["polygon_shape_roles"][:, 0] == 0))
    return to_levels(_permute(flat, draws, static), static)


class RandomLevelSampler:
    """Callable ``sampler(num_levels)``: a TensorDict (batch ``[num_levels]``, on ``device``, every
    schema state field for ``static``) of levels from upstream's random distribution.

    With ``noop_filter``, each call samples ``filter_ratio x num_levels`` candidates and keeps
    ``num_levels`` of them, down-weighting those the no-op policy solves within ``filter_steps``
    env steps (upstream's ``filter_levels`` option, ratio 2 and 64 steps in its configs)."""

    def __init__(self, static: StaticEnvParams | str, env_params: EnvParams | None = None,
                 generator_params: UEDParams | None = None, device="cpu", seed: int = 0, noop_filter: bool = False,
                 filter_ratio: int = 2, filter_steps: int = 64):
        self.static = resolve_static(static)
        self.env_params = env_params or EnvParams()
        self.generator_params = generator_params or UEDParams()
        self.device = torch.device(device)
        self.generator = torch.Generator(self.device).manual_seed(seed)
        if filter_ratio < 1 or filter_steps < 1:
            raise ValueError(f"filter_ratio and filter_steps must be >= 1, got {filter_ratio}, {filter_steps}")
        self.noop_filter, self.filter_ratio, self.filter_steps = noop_filter, filter_ratio, filter_steps

    def __call__(self, num_levels: int):
        count = num_levels * (self.filter_ratio if self.noop_filter else 1)
        levels = sample_levels(count, self.static, self.generator_params, self.generator, self.env_params)
        if not self.noop_filter:
            return levels
        return filter_levels(levels, num_levels, self.static, self.env_params, self.generator, self.filter_steps)[0]

    def __repr__(self) -> str:
        s = self.static
        size = f"P={s.num_polygons}, C={s.num_circles}, J={s.num_joints}, T={s.num_thrusters}"
        return f"RandomLevelSampler({size}, device={self.device}, noop_filter={self.noop_filter})"
