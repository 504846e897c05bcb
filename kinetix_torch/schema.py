"""The one table of Kinetix state fields, shared by every engine.

A state is a mapping from upstream's dotted field names (``polygon.position``,
``joint.a_index``, ``acc_rr_manifolds.acc_impulse_normal``, ``thruster_bindings``, ...) to
arrays whose shape is ``batch_shape + field shape``. The field shapes are written with symbolic
dimensions, resolved from a :class:`~kinetix_torch.params.StaticEnvParams`:

=====  ==========================================================
``P``  polygons                ``C``   circles
``J``  joints                  ``T``   thrusters
``V``  max polygon vertices    ``N``   shapes in the global index (P + C)
``RR`` polygon-polygon pairs   ``CR``  circle-polygon pairs
``CC`` circle-circle pairs
=====  ==========================================================

Three containers hold the same fields, and the functions below convert between them without
per-field code:

* a *flat* dict ``{"polygon.position": array}`` (numpy, the golden files, levels),
* a nested dict ``{"polygon": {"position": array}}`` (the JAX pytree the reference engine runs on),
* a :class:`tensordict.TensorDict` with nested keys (the canonical state on the PyTorch side).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from .params import StaticEnvParams

__all__ = [
    "Field",
    "FIELDS",
    "FIELD_BY_KEY",
    "SIM_KEYS",
    "dims_of",
    "field_shape",
    "allocate",
    "validate",
    "nest",
    "flatten",
    "to_tensordict",
    "tensordict_to_numpy",
    "to_jax",
    "jax_to_torch",
]


@dataclass(frozen=True)
class Field:
    key: str
    """Dotted upstream name, also the key in golden ``.npz`` files."""
    dims: tuple
    """Symbolic shape (see the module docstring); ints are literal sizes."""
    dtype: np.dtype
    """numpy dtype: float32, int32 or bool."""
    doc: str
    sim: bool = True
    """Part of the physics state (``SimState``); the env-only fields pass through the engine."""


F32, I32, BOOL = np.dtype(np.float32), np.dtype(np.int32), np.dtype(np.bool_)

GREEN, BLUE, RED = 1, 2, 3
"""Shape roles (``*_shape_roles``; 0 = none): a green shape must touch a blue one, never a red one."""

MANIFOLD_PREFIXES = {"rr": "acc_rr_manifolds", "cr": "acc_cr_manifolds", "cc": "acc_cc_manifolds"}
"""State key prefix of the warm-start manifolds of each contact pair kind: polygon-polygon,
circle-polygon, circle-circle."""


def _body_fields(kind: str, n: str) -> list[Field]:
    return [
        Field(f"{kind}.position", (n, 2), F32, "centroid, world units"),
        Field(f"{kind}.rotation", (n,), F32, "rad, never wrapped"),
        Field(f"{kind}.velocity", (n, 2), F32, "units/s"),
        Field(f"{kind}.angular_velocity", (n,), F32, "rad/s"),
        Field(f"{kind}.inverse_mass", (n,), F32, "0 = infinite mass (fixated)"),
        Field(f"{kind}.inverse_inertia", (n,), F32, "0 = infinite inertia"),
        Field(f"{kind}.friction", (n,), F32, "per-shape coefficient, scaled by base_friction"),
        Field(f"{kind}.restitution", (n,), F32, "bounciness"),
        Field(f"{kind}.collision_mode", (n,), I32, "0 touches only mode 2, 1 normal, 2 touches all"),
        Field(f"{kind}.active", (n,), BOOL, "slot in use"),
        Field(f"{kind}.n_vertices", (n,), I32, "3 or 4 for polygons, 0 for circles"),
        Field(f"{kind}.vertices", (n, "V", 2), F32, "local-frame vertices relative to the centroid"),
        Field(f"{kind}.radius", (n,), F32, "circle radius, 0 for polygons"),
    ]


def _manifold_fields(kind: str, dims: tuple) -> list[Field]:
    return [
        Field(f"{kind}.normal", dims + (2,), F32, "unit normal from the first shape to the second"),
        Field(f"{kind}.penetration", dims, F32, "overlap depth, > 0 when overlapping"),
        Field(f"{kind}.collision_point", dims + (2,), F32, "world contact point"),
        Field(f"{kind}.active", dims, BOOL, "contact exists (collision_matrix not consulted)"),
        Field(f"{kind}.acc_impulse_normal", dims, F32, "accumulated normal impulse (warm start)"),
        Field(f"{kind}.acc_impulse_tangent", dims, F32, "accumulated friction impulse (warm start)"),
        Field(f"{kind}.restitution_velocity_target", dims, F32, "normal velocity x min restitution"),
    ]


FIELDS: tuple[Field, ...] = tuple(
    _body_fields("polygon", "P")
    + _body_fields("circle", "C")
    + [
        Field("joint.a_index", ("J",), I32, "global index of body a"),
        Field("joint.b_index", ("J",), I32, "global index of body b"),
        Field("joint.a_relative_pos", ("J", 2), F32, "anchor in a's local frame"),
        Field("joint.b_relative_pos", ("J", 2), F32, "anchor in b's local frame"),
        Field("joint.global_position", ("J", 2), F32, "world anchor written by the joint solver"),
        Field("joint.active", ("J",), BOOL, "slot in use"),
        Field("joint.acc_impulse", ("J", 2), F32, "accumulated linear impulse (warm start)"),
        Field("joint.acc_r_impulse", ("J",), F32, "accumulated angular impulse of fixed joints"),
        Field("joint.motor_speed", ("J",), F32, "multiplier of base_motor_speed"),
        Field("joint.motor_power", ("J",), F32, "multiplier of base_motor_power"),
        Field("joint.motor_on", ("J",), BOOL, "joint has a motor"),
        Field("joint.motor_has_joint_limits", ("J",), BOOL, "revolute joint has angle limits"),
        Field("joint.min_rotation", ("J",), F32, "rad, on rot_b - rot_a - rotation"),
        Field("joint.max_rotation", ("J",), F32, "rad, on rot_b - rot_a - rotation"),
        Field("joint.is_fixed_joint", ("J",), BOOL, "weld instead of revolute"),
        Field("joint.rotation", ("J",), F32, "reference relative angle rot_b - rot_a"),
        Field("thruster.object_index", ("T",), I32, "global index of the parent shape"),
        Field("thruster.relative_position", ("T", 2), F32, "mount point in the parent's frame"),
        Field("thruster.rotation", ("T",), F32, "thrust direction in the parent's frame, rad"),
        Field("thruster.power", ("T",), F32, "multiplier of base_thruster_power"),
        Field("thruster.global_position", ("T", 2), F32, "cached world mount point"),
        Field("thruster.active", ("T",), BOOL, "slot in use"),
        Field("collision_matrix", ("N", "N"), BOOL, "False on the diagonal and for joint-connected pairs"),
    ]
    + _manifold_fields(MANIFOLD_PREFIXES["rr"], ("RR", 2))
    + _manifold_fields(MANIFOLD_PREFIXES["cr"], ("CR",))
    + _manifold_fields(MANIFOLD_PREFIXES["cc"], ("CC",))
    + [
        Field("gravity", (2,), F32, "units/s^2"),
        Field("thruster_bindings", ("T",), I32, "thruster action slot of each thruster", sim=False),
        Field("motor_bindings", ("J",), I32, "motor action slot of each joint", sim=False),
        Field("motor_auto", ("J",), BOOL, "motor always driven at +1", sim=False),
        Field("polygon_shape_roles", ("P",), I32, "0 default, 1 green, 2 blue, 3 red", sim=False),
        Field("circle_shape_roles", ("C",), I32, "0 default, 1 green, 2 blue, 3 red", sim=False),
        Field("polygon_highlighted", ("P",), BOOL, "editor only", sim=False),
        Field("circle_highlighted", ("C",), BOOL, "editor only", sim=False),
        Field("polygon_densities", ("P",), F32, "density behind inverse_mass / inverse_inertia", sim=False),
        Field("circle_densities", ("C",), F32, "density behind inverse_mass / inverse_inertia", sim=False),
        Field("timestep", (), I32, "env steps taken", sim=False),
        Field("last_distance", (), F32, "green-blue distance of the last env step, -1 unset", sim=False),
    ]
)

FIELD_BY_KEY: dict[str, Field] = {f.key: f for f in FIELDS}
SIM_KEYS: tuple[str, ...] = tuple(f.key for f in FIELDS if f.sim)


def dims_of(static: StaticEnvParams) -> dict[str, int]:
    """Values of the symbolic dimensions for these sizes."""
    return {
        "P": static.num_polygons,
        "C": static.num_circles,
        "J": static.num_joints,
        "T": static.num_thrusters,
        "V": static.max_polygon_vertices,
        "N": static.num_shapes,
        "RR": static.num_rr_pairs,
        "CR": static.num_cr_pairs,
        "CC": static.num_cc_pairs,
    }


def field_shape(field: Field | str, static: StaticEnvParams) -> tuple[int, ...]:
    field = FIELD_BY_KEY[field] if isinstance(field, str) else field
    dims = dims_of(static)
    return tuple(d if isinstance(d, int) else dims[d] for d in field.dims)


def allocate(static: StaticEnvParams, batch_shape: tuple[int, ...] = (), keys: Iterable[str] | None = None):
    """Zero-filled flat numpy state (``last_distance`` = -1, densities = 1, as upstream's empty env)."""
    out = {}
    for f in FIELDS if keys is None else (FIELD_BY_KEY[k] for k in keys):
        out[f.key] = np.zeros(tuple(batch_shape) + field_shape(f, static), dtype=f.dtype)
    if "last_distance" in out:
        out["last_distance"][...] = -1.0
    for k in ("polygon_densities", "circle_densities"):
        if k in out:
            out[k][...] = 1.0
    return out


def validate(
    flat: Mapping[str, Any],
    static: StaticEnvParams,
    batch_shape: tuple[int, ...] = (),
    keys: Iterable[str] | None = None,
    where: str = "state",
) -> None:
    """Raise ``ValueError`` naming the field when a key is missing, unknown, mis-shaped or mis-typed."""
    wanted = list(FIELD_BY_KEY if keys is None else keys)
    missing = [k for k in wanted if k not in flat]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}")
    unknown = sorted(set(flat) - set(FIELD_BY_KEY))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}")
    for k in wanted:
        f = FIELD_BY_KEY[k]
        arr = flat[k]
        expected = tuple(batch_shape) + field_shape(f, static)
        if tuple(arr.shape) != expected:
            raise ValueError(f"{where}: field {k!r} has shape {tuple(arr.shape)}, expected {expected}")
        dtype = np.dtype(str(arr.dtype).replace("torch.", ""))
        if dtype != f.dtype:
            raise ValueError(f"{where}: field {k!r} has dtype {dtype}, expected {f.dtype}")


def nest(flat: Mapping[str, Any]) -> dict:
    """``{"a.b": x}`` -> ``{"a": {"b": x}}``."""
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def flatten(nested: Mapping[str, Any], prefix: str = "") -> dict:
    """``{"a": {"b": x}}`` -> ``{"a.b": x}`` (also accepts a TensorDict)."""
    out = {}
    for key in nested.keys():
        value = nested[key]
        name = f"{prefix}{key}"
        if hasattr(value, "keys"):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def to_tensordict(flat: Mapping[str, Any], batch_shape: tuple[int, ...] = (), device=None):
    """Flat mapping of arrays -> nested :class:`TensorDict` (dtypes kept, no copy for numpy input on CPU)."""
    import torch
    from tensordict import TensorDict

    td = TensorDict({}, batch_size=list(batch_shape), device=device)
    for key, value in flat.items():
        if not isinstance(value, torch.Tensor):
            value = np.ascontiguousarray(value)
            tensor = torch.from_numpy(value if value.flags.writeable else value.copy())
        else:
            tensor = value
        td.set(tuple(key.split(".")), tensor.to(device) if device is not None else tensor)
    return td


def tensordict_to_numpy(td) -> dict:
    """Nested TensorDict -> flat dict of numpy arrays (copied to the host)."""
    return {k: v.detach().cpu().numpy() for k, v in tensordict_to_flat_tensors(td).items()}


def to_jax(state) -> dict:
    """TensorDict or flat/nested mapping -> nested dict of JAX arrays.

    Torch tensors travel by DLPack (zero copy where the devices agree); numpy arrays are copied.
    """
    import jax.numpy as jnp

    flat = tensordict_to_flat_tensors(state) if _is_tensordict(state) else flatten(state)
    out = {}
    for key, value in flat.items():
        if hasattr(value, "__dlpack__") and not isinstance(value, np.ndarray):
            import jax.dlpack

            out[key] = jax.dlpack.from_dlpack(value.contiguous())
        else:
            out[key] = jnp.asarray(value)
    return nest(out)


def jax_to_torch(tree, batch_shape: tuple[int, ...] = (), device=None):
    """Nested dict of JAX arrays -> TensorDict, by DLPack (zero copy on the same device)."""
    import torch

    flat = {k: torch.from_dlpack(v) for k, v in flatten(tree).items()}
    return to_tensordict(flat, batch_shape, device)


def tensordict_to_flat_tensors(td) -> dict:
    """Nested TensorDict -> ``{"a.b": tensor}`` (no copy)."""
    return {
        k if isinstance(k, str) else ".".join(k): v for k, v in td.items(include_nested=True, leaves_only=True)
    }


def _is_tensordict(obj) -> bool:
    return type(obj).__name__ in ("TensorDict", "LazyStackedTensorDict") or hasattr(obj, "batch_size")
