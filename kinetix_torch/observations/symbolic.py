"""Symbolic observations of kinetix-env, batched in torch: flat, flat padded, entity and blind.

Every function takes the batched state TensorDict (batch leading) and returns tensors on its
device. Feature rows (per entity, as upstream lays them out):

* shape base (16): ``position(2), velocity(2), inverse_mass, inverse_inertia, density,
  tanh(angular_velocity / 10), one_hot(role, num_shape_roles), sin(rotation), cos(rotation),
  friction, restitution``;
* polygon (26): base, ``0``, ``vertices`` (unused slots -1), ``n_vertices <= 3``;
* circle (18): base, ``radius``, ``1``;
* joint (22): ``active, is_fixed, from_pos(2), to_pos(2), sin(rotation), cos(rotation)`` then, zero
  for fixed joints, ``motor_speed, motor_power, motor_on, has_limits, one_hot(motor_binding)``,
  sin/cos of min and max rotation and ``min - rotation``, ``max - rotation`` (limit terms times
  ``has_limits``). The first J rows look from b to a (``from_pos = b_relative_pos``), the next J
  from a to b;
* thruster (8): ``active, relative_position(2), one_hot(thruster_binding), sin, cos, power``.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict

from ..params import EnvParams, StaticEnvParams
from ..schema import MANIFOLD_PREFIXES
from ..topology import pair_index_tensors

__all__ = [
    "symbolic_flat",
    "symbolic_flat_padded",
    "symbolic_entity",
    "blind",
    "flat_size",
    "padded_shape",
    "POLYGON_FEATURES",
    "CIRCLE_FEATURES",
    "JOINT_FEATURES",
    "THRUSTER_FEATURES",
]

POLYGON_FEATURES, CIRCLE_FEATURES, JOINT_FEATURES, THRUSTER_FEATURES = 26, 18, 22, 8
OBJECT_TYPES = 4
"""Padded rows end with a one-hot of the object type (polygon, circle, joint, thruster) and gravity."""


def _one_hot(index: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Float32 one-hot that, like JAX's, is all zeros for an index outside ``[0, num_classes)``."""
    return (index.unsqueeze(-1) == torch.arange(num_classes, device=index.device)).to(torch.float32)


def _column(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32).unsqueeze(-1)


def _shape_rows(body, roles, densities, params: EnvParams) -> torch.Tensor:
    rotation = body["rotation"]
    return torch.cat(
        [
            body["position"],
            body["velocity"],
            _column(body["inverse_mass"]),
            _column(body["inverse_inertia"]),
            _column(densities),
            _column(torch.tanh(body["angular_velocity"] / 10)),
            _one_hot(roles, params.num_shape_roles),
            _column(torch.sin(rotation)),
            _column(torch.cos(rotation)),
            _column(body["friction"]),
            _column(body["restitution"]),
        ],
        dim=-1,
    )


def polygon_rows(state, params: EnvParams) -> torch.Tensor:
    """``(B, P, 26)`` polygon features."""
    polygon = state["polygon"]
    vertices = polygon["vertices"]
    slot = torch.arange(vertices.shape[-2], device=vertices.device)
    used = (slot < polygon["n_vertices"].unsqueeze(-1)).unsqueeze(-1)
    vertices = torch.where(used, vertices, torch.full_like(vertices, -1.0))
    base = _shape_rows(polygon, state["polygon_shape_roles"], state["polygon_densities"], params)
    return torch.cat(
        [base, torch.zeros_like(base[..., :1]), vertices.flatten(-2), _column(polygon["n_vertices"] <= 3)], dim=-1
    )


def circle_rows(state, params: EnvParams) -> torch.Tensor:
    """``(B, C, 18)`` circle features."""
    circle = state["circle"]
    base = _shape_rows(circle, state["circle_shape_roles"], state["circle_densities"], params)
    return torch.cat([base, _column(circle["radius"]), torch.ones_like(base[..., :1])], dim=-1)


def joint_rows(state, static: StaticEnvParams) -> torch.Tensor:
    """``(B, 2J, 22)`` joint features: rows ``0..J-1`` from b to a, rows ``J..2J-1`` from a to b."""
    joint = state["joint"]
    limits = joint["motor_has_joint_limits"].to(torch.float32)
    rotation, low, high = joint["rotation"], joint["min_rotation"], joint["max_rotation"]
    revolute = torch.cat(
        [
            _column(joint["motor_speed"]),
            _column(joint["motor_power"]),
            _column(joint["motor_on"]),
            _column(limits),
            _one_hot(state["motor_bindings"], static.num_motor_bindings),
            _column(torch.sin(low) * limits),
            _column(torch.cos(low) * limits),
            _column(torch.sin(high) * limits),
            _column(torch.cos(high) * limits),
            _column((low - rotation) * limits),
            _column((high - rotation) * limits),
        ],
        dim=-1,
    ) * (1.0 - _column(joint["is_fixed_joint"]))
    head = [_column(joint["active"]), _column(joint["is_fixed_joint"])]
    tail = [_column(torch.sin(rotation)), _column(torch.cos(rotation)), revolute]
    b_to_a = torch.cat(head + [joint["b_relative_pos"], joint["a_relative_pos"]] + tail, dim=-1)
    a_to_b = torch.cat(head + [joint["a_relative_pos"], joint["b_relative_pos"]] + tail, dim=-1)
    return torch.cat([b_to_a, a_to_b], dim=-2)


def joint_indexes(state) -> torch.Tensor:
    """Int32 ``(B, 2J, 2)``: ``(b, a)`` rows then ``(a, b)`` rows; ``(0, 0)`` for inactive joints."""
    joint = state["joint"]
    a, b = joint["a_index"], joint["b_index"]
    rows = torch.cat([torch.stack([b, a], dim=-1), torch.stack([a, b], dim=-1)], dim=-2)
    active = torch.cat([joint["active"], joint["active"]], dim=-1).unsqueeze(-1)
    return torch.where(active, rows, torch.zeros_like(rows)).to(torch.int32)


def thruster_rows(state, static: StaticEnvParams) -> torch.Tensor:
    """``(B, T, 8)`` thruster features."""
    thruster = state["thruster"]
    return torch.cat(
        [
            _column(thruster["active"]),
            thruster["relative_position"],
            _one_hot(state["thruster_bindings"], static.num_thruster_bindings),
            _column(torch.sin(thruster["rotation"])),
            _column(torch.cos(thruster["rotation"])),
            _column(thruster["power"]),
        ],
        dim=-1,
    )


def _gravity_feature(state) -> torch.Tensor:
    """``(B, 1)``: ``gravity_y / 10``."""
    return state["gravity"][..., 1:2] / 10


def _flat_parts(state, static: StaticEnvParams, params: EnvParams) -> list[torch.Tensor]:
    """Masked rows of the flat observations: polygons (without walls and ceiling), circles,
    joints (b to a, then one-hots of b and a) and thrusters (then a one-hot of the parent)."""
    N, J = static.num_shapes, static.num_joints
    F = static.num_static_fixated_polys

    def kept(polygon_values):  # the floor (0) and the non-static polygons: slices, no host data (CUDA graphs)
        return torch.cat([polygon_values[:, :1], polygon_values[:, F:]], dim=1)

    polygons = kept(polygon_rows(state, params))
    indexes = joint_indexes(state)[:, :J]
    joints = [joint_rows(state, static)[:, :J], _one_hot(indexes[..., 0], N), _one_hot(indexes[..., 1], N)]
    joints = torch.cat(joints, dim=-1)
    thrusters = torch.cat([thruster_rows(state, static), _one_hot(state["thruster", "object_index"], N)], dim=-1)
    rows = [
        (polygons, kept(state["polygon", "active"])),
        (circle_rows(state, params), state["circle", "active"]),
        (joints, state["joint", "active"]),
        (thrusters, state["thruster", "active"]),
    ]
    return [torch.where(mask.unsqueeze(-1), part, torch.zeros_like(part)) for part, mask in rows]


def _finish(obs: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(obs.clamp(-10.0, 10.0))


def symbolic_flat(state, static: StaticEnvParams, params: EnvParams) -> torch.Tensor:
    """``(B, F)`` float32 (``ObservationType.SYMBOLIC_FLAT``): the masked rows flattened, then
    ``gravity_y / 10``; clipped to [-10, 10], NaN to 0."""
    parts = [part.flatten(1) for part in _flat_parts(state, static, params)]
    return _finish(torch.cat(parts + [_gravity_feature(state)], dim=-1))


def symbolic_flat_padded(state, static: StaticEnvParams, params: EnvParams) -> torch.Tensor:
    """``(B, rows, width + 5)`` float32 (``SYMBOLIC_FLAT_PADDED``): the masked rows zero-padded to
    one width, each followed by a one-hot of its object type and ``gravity_y / 10``."""
    parts = _flat_parts(state, static, params)
    width = max(part.shape[-1] for part in parts)
    rows = torch.cat([torch.nn.functional.pad(part, (0, width - part.shape[-1])) for part in parts], dim=-2)
    types = torch.cat([torch.full((part.shape[-2],), kind, device=rows.device) for kind, part in enumerate(parts)])
    kind_columns = _one_hot(types, OBJECT_TYPES).expand(rows.shape[0], -1, -1)
    gravity = _gravity_feature(state).unsqueeze(-1).expand(-1, rows.shape[-2], 1)
    return _finish(torch.cat([rows, kind_columns, gravity], dim=-1))


def flat_size(static: StaticEnvParams) -> int:
    """Length ``F`` of the symbolic flat observation."""
    N = static.num_shapes
    polygons = static.num_polygons - static.num_static_fixated_polys + 1
    return (
        polygons * POLYGON_FEATURES
        + static.num_circles * CIRCLE_FEATURES
        + static.num_joints * (JOINT_FEATURES + 2 * N)
        + static.num_thrusters * (THRUSTER_FEATURES + N)
        + 1
    )


def padded_shape(static: StaticEnvParams) -> tuple[int, int]:
    """``(rows, width)`` of the symbolic flat padded observation."""
    N = static.num_shapes
    polygons = static.num_polygons - static.num_static_fixated_polys + 1
    rows = polygons + static.num_circles + static.num_joints + static.num_thrusters
    width = max(POLYGON_FEATURES, CIRCLE_FEATURES, JOINT_FEATURES + 2 * N, THRUSTER_FEATURES + N)
    return rows, width + OBJECT_TYPES + 1


_FINITE_GROUPS = ("polygon", "circle", "joint", "thruster", "gravity", "polygon_densities", "circle_densities")


def _attention_masks(state, static: StaticEnvParams, indexes: torch.Tensor) -> torch.Tensor:
    """Bool ``(B, 4, N, N)``: all live pairs; not ``collision_matrix``; joint-connected (from
    ``indexes``, ``(0, 0)`` cleared); pairs with an active warm-start manifold at ``[first, second]``.
    Every layer is masked to live shapes on both axes."""
    N = static.num_shapes
    live = torch.cat([state["polygon", "active"], state["circle", "active"]], dim=-1)
    live_pair = live.unsqueeze(-1) & live.unsqueeze(-2)
    batch = live.shape[0]
    shape_ids = torch.arange(N, device=live.device)
    ends = [(indexes[..., k].unsqueeze(-1) == shape_ids).to(torch.float32) for k in (0, 1)]
    connected = torch.einsum("brn,brm->bnm", ends[0], ends[1]) > 0
    connected[:, 0, 0].fill_(False)  # fill_, not "= False": no host scalar tensor
    touching = torch.zeros(batch, N, N, dtype=torch.bool, device=live.device)
    for kind, pairs in pair_index_tensors(static, live.device).items():
        if len(pairs):
            active = state[MANIFOLD_PREFIXES[kind], "active"]
            touching[:, pairs[:, 0], pairs[:, 1]] = active.any(-1) if kind == "rr" else active
    layers = torch.stack([torch.ones_like(live_pair), ~state["collision_matrix"], connected, touching], dim=1)
    return layers & live_pair.unsqueeze(1)


def symbolic_entity(state, static: StaticEnvParams, params: EnvParams) -> TensorDict:
    """``SYMBOLIC_ENTITY`` observation as a TensorDict of batch ``[B]`` (NaNs in the state read as 0,
    no clipping, inactive rows kept): ``polygons (P, 27)``, ``circles (C, 19)`` (rows plus
    ``gravity_y / 10``), ``joints (2J, 22)``, ``thrusters (T, 8)``, int32 ``joint_indexes (2J, 2)``
    and ``thruster_indexes (T,)``, bool ``polygon_mask``, ``circle_mask``, ``joint_mask (2J,)``,
    ``thruster_mask`` and ``attention_mask (4, N, N)``."""
    finite = state.select(*_FINITE_GROUPS).apply(lambda x: torch.nan_to_num(x) if x.is_floating_point() else x)
    state = state.exclude(*_FINITE_GROUPS).update(finite)
    gravity = _gravity_feature(state).unsqueeze(-1)
    polygons = polygon_rows(state, params)
    circles = circle_rows(state, params)
    indexes = joint_indexes(state)
    return TensorDict(
        {
            "polygons": torch.cat([polygons, gravity.expand(-1, polygons.shape[1], 1)], dim=-1),
            "circles": torch.cat([circles, gravity.expand(-1, circles.shape[1], 1)], dim=-1),
            "joints": joint_rows(state, static),
            "thrusters": thruster_rows(state, static),
            "joint_indexes": indexes,
            "thruster_indexes": state["thruster", "object_index"].to(torch.int32),
            "polygon_mask": state["polygon", "active"],
            "circle_mask": state["circle", "active"],
            "joint_mask": torch.cat([state["joint", "active"]] * 2, dim=-1),
            "thruster_mask": state["thruster", "active"],
            "attention_mask": _attention_masks(state, static, indexes),
        },
        batch_size=state.batch_size,
        device=state.device,
    )


def blind(state, static: StaticEnvParams, params: EnvParams) -> torch.Tensor:
    """``(B, max_timesteps + 1)`` float32 one-hot of ``timestep`` (``BLIND``)."""
    return _one_hot(state["timestep"], params.max_timesteps + 1)
