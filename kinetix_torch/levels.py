"""Level files: Kinetix JSON levels (load, save, validate, pad to a larger size, stack) and level
bank files (many levels of one size as TensorDicts, ``.pt`` or ``.npz``).

The JSON format is the one the Kinetix editors write::

    {"env_state": {...}, "env_params": {...}, "static_env_params": {...}}

``env_state`` holds entity lists (``polygon``, ``circle``, ``joint``, ``thruster`` and the three
warm-start manifold lists), the ``collision_matrix`` and ``gravity``. Vectors are objects with
string index keys (``{"0": x, "1": y}``). Each entity's keys are the schema fields under its prefix
(``polygon.position`` -> ``"position"``) plus a few env-level per-entity fields (``role``,
``density``, ``highlighted``, ``motor_binding``, ``thruster_binding``); :data:`ENTITY_LISTS` is the
single table that drives both the reader and the writer.

Loading reproduces upstream's ``kinetix.util.saving.load_from_json_file``: ``highlighted`` flags are
dropped, ``max_timesteps`` is reset to its default, the collision matrix is recomputed from the
joints, and warm-start manifolds start at zero. Unlike upstream, ``screen_dim`` and ``downscale``
are taken from the file rather than reset to their defaults (every shared level uses the defaults).

A bank file holds every schema field of a batch of levels (batch first) and the static and env
params they belong to. ``.pt`` is a ``torch.save`` of plain tensors and dicts, loadable with
``weights_only=True``; ``.npz`` is a compressed numpy archive with the params as JSON strings.
Every write is atomic (:mod:`kinetix_torch.atomic`), and every level read or written passes
:func:`kinetix_torch.validation.check_levels`.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import schema
from .atomic import atomic_write, atomic_write_text
from .bodies import to_flat
from .params import EnvParams, StaticEnvParams, static_params_for_size
from .topology import collision_matrix
from .validation import LevelFormatError, check_levels

__all__ = [
    "LevelFormatError",
    "Level",
    "EntityList",
    "ENTITY_LISTS",
    "SIZE_NAMES",
    "load_level",
    "level_from_json_dict",
    "level_to_json_dict",
    "save_level",
    "validate_level",
    "pad_state",
    "stack_levels",
    "level_bank_to_tensordict",
    "load_levels_dir",
    "save_bank",
    "load_bank",
    "save_level_json",
    "load_level_json",
]

SIZE_NAMES = ("num_polygons", "num_circles", "num_joints", "num_thrusters")
"""The static params that padding may grow; every other static param must match to share a bank."""

_TOP_LEVEL_KEYS = ("env_state", "env_params", "static_env_params")
_INDEX_FIELDS = ("joint.a_index", "joint.b_index", "thruster.object_index")
_PADDED_DIMS = ("P", "C", "J", "T")


# --------------------------------------------------------------------------------------------------
# The table of entity lists


@dataclass(frozen=True)
class EntityList:
    """One ``env_state`` list of objects and the flat state fields its keys map to."""

    name: str
    """Key in ``env_state`` (also the schema prefix)."""
    count: Callable[[StaticEnvParams], int]
    """Number of list entries for these sizes."""
    count_name: str
    """How the expected count is described in error messages."""
    extras: dict = field(default_factory=dict)
    """Entity key -> flat field outside the prefix (``role`` -> ``polygon_shape_roles``)."""
    optional: frozenset = frozenset()
    """Entity keys that may be absent on input."""
    row_dims: int = 1
    """Leading field dims enumerated by the list (2 for polygon-polygon manifolds: pair, point)."""

    @property
    def keys(self) -> dict[str, str]:
        """Entity key -> flat field key, in schema order, then the extras."""
        own = {k.split(".", 1)[1]: k for k in schema.FIELD_BY_KEY if k.startswith(self.name + ".")}
        return {**own, **self.extras}


def _body(kind: str, count_attr: str) -> EntityList:
    return EntityList(
        kind,
        lambda s: getattr(s, count_attr),
        f"static_env_params.{count_attr}",
        extras={"role": f"{kind}_shape_roles", "density": f"{kind}_densities", "highlighted": f"{kind}_highlighted"},
        optional=frozenset({"highlighted"}),
    )


ENTITY_LISTS: tuple[EntityList, ...] = (
    _body("polygon", "num_polygons"),
    _body("circle", "num_circles"),
    EntityList("joint", lambda s: s.num_joints, "static_env_params.num_joints", {"motor_binding": "motor_bindings"}),
    EntityList(
        "thruster",
        lambda s: s.num_thrusters,
        "static_env_params.num_thrusters",
        {"thruster_binding": "thruster_bindings"},
    ),
    EntityList(schema.MANIFOLD_PREFIXES["rr"], lambda s: 2 * s.num_rr_pairs, "2 x num_rr_pairs", row_dims=2),
    EntityList(schema.MANIFOLD_PREFIXES["cr"], lambda s: s.num_cr_pairs, "num_cr_pairs"),
    EntityList(schema.MANIFOLD_PREFIXES["cc"], lambda s: s.num_cc_pairs, "num_cc_pairs"),
)
"""Every list in ``env_state``; the reader and the writer are driven by this table alone."""

_STATE_ARRAYS = ("collision_matrix", "gravity")
"""``env_state`` entries that are a single (index-object) array."""

_IGNORED_ON_LOAD = frozenset(
    {"collision_matrix", "polygon_highlighted", "circle_highlighted"}
    | {k for k in schema.FIELD_BY_KEY if k.split(".")[0] in schema.MANIFOLD_PREFIXES.values()}
)
"""Fields read (and checked) from a file but reset as upstream's loader does."""


# --------------------------------------------------------------------------------------------------
# Level objects


@dataclass(frozen=True, eq=False)
class Level:
    """One loaded level: a flat numpy state (no batch dim) with its params."""

    state: dict[str, np.ndarray]
    static: StaticEnvParams
    env_params: EnvParams
    name: str


# --------------------------------------------------------------------------------------------------
# Loading


def load_level(
    path_or_dict: str | os.PathLike | Mapping, static: StaticEnvParams | None = None, where: str | None = None
) -> Level:
    """Load a level from a JSON file or an already parsed dict.

    With ``static``, the level is padded into those sizes (see :func:`pad_state`) and the other
    static params come from ``static``. ``where`` names the source in error messages (default: the
    path, or ``"<dict>"``).
    """
    if isinstance(path_or_dict, Mapping):
        where = where or "<dict>"
        return level_from_json_dict(path_or_dict, static=static, where=where, name=where)
    path = Path(path_or_dict)
    where = where or str(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise LevelFormatError(f"{where}: not valid JSON: {e}") from None
    return level_from_json_dict(data, static=static, where=where, name=path.stem)


def level_from_json_dict(
    data: Mapping, static: StaticEnvParams | None = None, where: str = "<dict>", name: str | None = None
) -> Level:
    """Build a :class:`Level` from a parsed level JSON object (the input is not modified)."""
    if not isinstance(data, Mapping):
        raise LevelFormatError(f"{where}: expected a JSON object at the top level, got {type(data).__name__}")
    for key in _TOP_LEVEL_KEYS:
        if not isinstance(data.get(key), Mapping):
            problem = "missing" if key not in data else f"expected an object, got {type(data[key]).__name__}"
            raise LevelFormatError(f"{where}: top-level key {key!r}: {problem}")
    try:
        file_static = StaticEnvParams.from_dict(data["static_env_params"])
        env_params = EnvParams.from_dict(data["env_params"]).replace(max_timesteps=EnvParams().max_timesteps)
    except ValueError as e:
        raise LevelFormatError(f"{where}: {e}") from None

    parsed = _read_env_state(data["env_state"], file_static, where)
    state = schema.allocate(file_static)
    state.update({k: v for k, v in parsed.items() if k not in _IGNORED_ON_LOAD})
    state["collision_matrix"] = _collision_matrix_of(state, file_static)
    validate_level(state, file_static, where=where, env_params=env_params)
    if static is None:
        return Level(state, file_static, env_params, name or where)
    return Level(pad_state(state, file_static, static, where=where), static, env_params, name or where)


def _is_index_object(value) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(isinstance(k, str) and k.isdigit() for k in value)


def _read_env_state(env_state: Mapping, static: StaticEnvParams, where: str) -> dict[str, np.ndarray]:
    """Every field present in ``env_state``, as flat arrays of schema dtype and shape."""
    out = {}
    for entity in ENTITY_LISTS:
        out.update(_read_entity_list(env_state, entity, static, where))
    for key in _STATE_ARRAYS:
        if key not in env_state:
            raise LevelFormatError(f"{where}: env_state: missing {key!r}")
        out[key] = _to_array(env_state[key], key, static, f"{where}: env_state.{key}")
    return out


def _read_entity_list(env_state: Mapping, entity: EntityList, static: StaticEnvParams, where: str) -> dict:
    path = f"env_state.{entity.name}"
    entries = env_state.get(entity.name)
    if not isinstance(entries, list):
        problem = "missing" if entity.name not in env_state else f"expected a list, got {type(entries).__name__}"
        raise LevelFormatError(f"{where}: {path}: {problem}")
    expected = entity.count(static)
    if len(entries) != expected:
        raise LevelFormatError(f"{where}: {path} has {len(entries)} entries, {entity.count_name} is {expected}")
    keys = entity.keys
    columns: dict[str, list] = {flat_key: [] for flat_key in keys.values()}
    for i, entry in enumerate(entries):
        item = f"{path}[{i}]"
        if not isinstance(entry, Mapping):
            raise LevelFormatError(f"{where}: {item}: expected an object, got {type(entry).__name__}")
        unknown = sorted(set(entry) - set(keys))
        if unknown:
            raise LevelFormatError(f"{where}: {item}: unknown key(s) {unknown}; expected {sorted(keys)}")
        for key, flat_key in keys.items():
            dtype = schema.FIELD_BY_KEY[flat_key].dtype
            row_shape = schema.field_shape(flat_key, static)[entity.row_dims :]
            if key in entry:
                columns[flat_key].append(_parse(entry[key], row_shape, dtype, f"{where}: {item}.{key}"))
            elif key in entity.optional:
                columns[flat_key].append(np.zeros(row_shape, dtype).tolist())
            else:
                raise LevelFormatError(f"{where}: {item}: missing {key!r}")
    return {
        flat_key: np.array(rows, dtype=schema.FIELD_BY_KEY[flat_key].dtype).reshape(
            schema.field_shape(flat_key, static)
        )
        for flat_key, rows in columns.items()
    }


def _to_array(value, key: str, static: StaticEnvParams, path: str) -> np.ndarray:
    dtype = schema.FIELD_BY_KEY[key].dtype
    return np.array(_parse(value, schema.field_shape(key, static), dtype, path), dtype=dtype)


def _parse(value, shape: tuple[int, ...], dtype: np.dtype, path: str):
    """A JSON value (index-object or list for vectors) -> nested Python lists of checked scalars."""
    if not shape:
        return _parse_scalar(value, dtype, path)
    if _is_index_object(value):
        if set(value) != {str(i) for i in range(len(value))}:
            raise LevelFormatError(f"{path}: expected index keys '0'..'{len(value) - 1}', got {sorted(value, key=int)}")
        value = [value[str(i)] for i in range(len(value))]
    if not isinstance(value, list):
        raise LevelFormatError(f"{path}: expected a vector of {shape[0]} components, got {_describe(value)}")
    if len(value) != shape[0]:
        raise LevelFormatError(f"{path}: expected {shape[0]} components, got {len(value)}")
    return [_parse(v, shape[1:], dtype, f"{path}[{i}]") for i, v in enumerate(value)]


_INT32_RANGE = (-(2**31), 2**31 - 1)


def _parse_scalar(value, dtype: np.dtype, path: str):
    if dtype.kind == "b":
        if isinstance(value, bool):
            return value
        raise LevelFormatError(f"{path}: expected true/false, got {_describe(value)}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LevelFormatError(f"{path}: expected a number, got {_describe(value)}")
    if dtype.kind == "i":
        if not isinstance(value, int) or not _INT32_RANGE[0] <= value <= _INT32_RANGE[1]:
            raise LevelFormatError(f"{path}: expected a 32-bit integer, got {value!r}")
        return value
    return float(value)


def _describe(value) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, (Mapping, list)) else type(value).__name__


# --------------------------------------------------------------------------------------------------
# Saving


def level_to_json_dict(state: Mapping[str, np.ndarray], static: StaticEnvParams, env_params: EnvParams) -> dict:
    """The level JSON object of a flat state (no batch dim), in the editors' format."""
    validate_level(state, static, where="state to save", env_params=env_params)
    env_state = {}
    for entity in ENTITY_LISTS:
        rows = {
            key: np.asarray(state[flat_key]).reshape(
                (entity.count(static),) + schema.field_shape(flat_key, static)[entity.row_dims :]
            )
            for key, flat_key in entity.keys.items()
        }
        env_state[entity.name] = [
            {key: _to_json(column[i]) for key, column in rows.items()} for i in range(entity.count(static))
        ]
    for key in _STATE_ARRAYS:
        env_state[key] = _to_json(np.asarray(state[key]))
    static_dict = static.to_dict()
    static_dict["screen_dim"] = _to_json(np.asarray(static.screen_dim))
    return {"env_state": env_state, "env_params": env_params.to_dict(), "static_env_params": static_dict}


def _to_json(array: np.ndarray):
    """numpy array -> nested index-objects of Python scalars (float32 values round-trip exactly)."""
    return _index_objects(array.tolist())


def _index_objects(value):
    return {str(i): _index_objects(v) for i, v in enumerate(value)} if isinstance(value, list) else value


def save_level(
    path: str | os.PathLike, state: Mapping[str, np.ndarray], static: StaticEnvParams, env_params: EnvParams
) -> None:
    """Write a level JSON file atomically (see :mod:`kinetix_torch.atomic`)."""
    atomic_write_text(path, json.dumps(level_to_json_dict(state, static, env_params)))


# --------------------------------------------------------------------------------------------------
# Validation


def validate_level(
    state: Mapping[str, np.ndarray], static: StaticEnvParams, where: str = "state", env_params: EnvParams | None = None
) -> None:
    """Check a flat numpy state (optionally with leading batch dims) by the rules of
    :mod:`kinetix_torch.validation`: fields, shapes and dtypes, then every level rule. Errors start
    with ``where`` (with `` level i`` for batched states)."""
    batch_shape = tuple(np.shape(state["timestep"])) if "timestep" in state else ()
    try:
        schema.validate(state, static, batch_shape, where=where)
    except ValueError as e:
        raise LevelFormatError(str(e)) from None
    rows = int(np.prod(batch_shape))
    flat = {
        k: torch.tensor(np.asarray(v)).reshape((rows,) + schema.field_shape(k, static)) for k, v in state.items()
    }
    check_levels(flat, static, env_params, where=where, names=None if batch_shape else [where])


# --------------------------------------------------------------------------------------------------
# Padding


def pad_state(
    flat_state: Mapping[str, np.ndarray], from_static: StaticEnvParams, to_static: StaticEnvParams, where: str = "state"
) -> dict[str, np.ndarray]:
    """Pad a flat numpy state (optionally with leading batch dims) from one size into a larger one.

    Zero slots are appended to the polygon, circle, joint and thruster arrays (and their roles,
    densities, highlighted flags, bindings and ``motor_auto``); joint and thruster shape indices
    pointing at circles shift up by the number of added polygons; the collision matrix is recomputed
    from the joints and the warm-start manifolds are zeros, as upstream's ``expand_env_state``.
    """
    _check_fits(from_static, to_static, where)
    for name in ("max_polygon_vertices", "num_static_fixated_polys"):
        old, new = getattr(from_static, name), getattr(to_static, name)
        if old != new:
            raise LevelFormatError(f"{where}: cannot pad between different {name}: {old} -> {new}")
    batch_ndim = np.ndim(flat_state["timestep"])
    batch_shape = np.shape(flat_state["timestep"])
    old_dims, new_dims = schema.dims_of(from_static), schema.dims_of(to_static)
    out = schema.allocate(to_static, batch_shape)
    for f in schema.FIELDS:
        value = np.asarray(flat_state[f.key])
        if f.dims[:1] and f.dims[0] in _PADDED_DIMS:
            pad = [(0, 0)] * value.ndim
            pad[batch_ndim] = (0, new_dims[f.dims[0]] - old_dims[f.dims[0]])
            out[f.key] = np.pad(value, pad)
        elif f.key != "collision_matrix" and f.key.split(".")[0] not in schema.MANIFOLD_PREFIXES.values():
            out[f.key] = value.copy()
    added_polygons = to_static.num_polygons - from_static.num_polygons
    for key in _INDEX_FIELDS:
        out[key] = np.where(out[key] >= from_static.num_polygons, out[key] + added_polygons, out[key]).astype(np.int32)
    out["collision_matrix"] = _collision_matrix_of(out, to_static)
    return out


def _check_fits(from_static: StaticEnvParams, to_static: StaticEnvParams, where: str) -> None:
    too_large = [
        f"{n} {getattr(from_static, n)} > {getattr(to_static, n)}"
        for n in SIZE_NAMES
        if getattr(from_static, n) > getattr(to_static, n)
    ]
    if too_large:
        target = ", ".join(f"{n}={getattr(to_static, n)}" for n in SIZE_NAMES)
        raise LevelFormatError(f"{where}: level too large for the target sizes ({target}): {', '.join(too_large)}")


def _collision_matrix_of(state: Mapping[str, np.ndarray], static: StaticEnvParams) -> np.ndarray:
    return collision_matrix(
        state["joint.a_index"], state["joint.b_index"], state["joint.active"], static.num_shapes, xp=np
    ).astype(np.bool_)


# --------------------------------------------------------------------------------------------------
# Banks


def stack_levels(
    levels: Sequence[Level], static: StaticEnvParams | None = None
) -> tuple[dict[str, np.ndarray], StaticEnvParams]:
    """Pad every level to ``static`` and stack them along a new leading batch dim.

    ``static`` defaults to the static params of the level all others fit in. The levels must share
    every non-size static param (``frame_skip``, solver settings, ...).
    """
    if not levels:
        raise ValueError("stack_levels: no levels given")
    first = levels[0]
    reference = first.static.to_dict()
    for level in levels[1:]:
        diff = [
            f"{k} {v!r} vs {reference[k]!r}"
            for k, v in level.static.to_dict().items()
            if k not in SIZE_NAMES and v != reference[k]
        ]
        if diff:
            raise ValueError(
                f"stack_levels: level {level.name!r} differs from {first.name!r} in non-size static params: "
                + ", ".join(diff)
            )
    if static is None:
        static = next((lvl.static for lvl in levels if all(o.static.fits_in(lvl.static) for o in levels)), None)
        if static is None:
            raise ValueError("stack_levels: no level's sizes hold all the others; pass static= explicitly")
    padded = [pad_state(lvl.state, lvl.static, static, where=lvl.name) for lvl in levels]
    return {k: np.stack([p[k] for p in padded]) for k in padded[0]}, static


def level_bank_to_tensordict(levels: Sequence[Level], device=None, static: StaticEnvParams | None = None):
    """Stacked levels as a TensorDict of batch size ``[len(levels)]`` on ``device``; returns ``(td, static)``."""
    flat, static = stack_levels(levels, static)
    return schema.to_tensordict(flat, batch_shape=(len(levels),), device=device), static


def load_levels_dir(path: str | os.PathLike, size: str | StaticEnvParams | None = None) -> list[Level]:
    """Load every ``*.json`` level in a folder, sorted by file name, padded to ``size`` when given
    (an S/M/L name for :func:`static_params_for_size`, or explicit static params)."""
    files = sorted(Path(path).glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no *.json levels in {path}")
    static = static_params_for_size(size) if isinstance(size, str) else size
    return [load_level(f, static=static) for f in files]


# --------------------------------------------------------------------------------------------------
# Bank files, and single levels of a TensorDict batch

BANK_FORMAT_VERSION = 1
_BANK_SUFFIXES = (".pt", ".npz")
_NPZ_PARAM_KEYS = ("__static_env_params__", "__env_params__")
_PT_KEYS = ("format_version", "static_env_params", "env_params", "levels")


def save_bank(path, levels, static: StaticEnvParams, env_params: EnvParams | None = None) -> None:
    """Write a batch of levels (TensorDict, batch ``[B]``) to a bank file ``path`` (``.pt`` or
    ``.npz``), atomically, after checking them by :func:`kinetix_torch.validation.check_levels`."""
    path = Path(path)
    _check_bank_suffix(path)
    env_params = env_params or EnvParams()
    flat = {k: v.detach().to("cpu", copy=True) for k, v in to_flat(levels).items()}  # not views of a larger batch
    check_levels(flat, static, env_params, where=f"bank {path}")
    if path.suffix == ".pt":
        payload = {"format_version": BANK_FORMAT_VERSION, "static_env_params": static.to_dict(),
                   "env_params": env_params.to_dict(), "levels": flat}
        atomic_write(path, lambda tmp: torch.save(payload, tmp))
        return
    arrays = {k: v.numpy() for k, v in flat.items()}
    arrays.update({key: np.array(json.dumps(p.to_dict())) for key, p in zip(_NPZ_PARAM_KEYS, (static, env_params))})

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    atomic_write(path, write)


def load_bank(path, device=None):
    """Read a bank written by :func:`save_bank` and check its levels by
    :func:`kinetix_torch.validation.check_levels`. Returns ``(levels, static, env_params)``;
    errors name the file, and for a broken level its index, field and slot."""
    path = Path(path)
    _check_bank_suffix(path)
    if not path.exists():
        raise FileNotFoundError(f"bank {path}: no such file")
    where = f"bank {path}"
    flat, static_dict, env_dict = (_read_pt_bank if path.suffix == ".pt" else _read_npz_bank)(path, where)
    static = StaticEnvParams.from_dict(static_dict, where=f"{where}: static_env_params")
    env_params = EnvParams.from_dict(env_dict, where=f"{where}: env_params")
    check_levels(flat, static, env_params, where=where)
    ordered = {f.key: flat[f.key] for f in schema.FIELDS}
    return schema.to_tensordict(ordered, flat["timestep"].shape[:1], device=device), static, env_params


def _check_bank_suffix(path: Path) -> None:
    if path.suffix not in _BANK_SUFFIXES:
        raise ValueError(f"bank {path}: unknown suffix {path.suffix!r}; expected '.pt' or '.npz'")


def _read_pt_bank(path: Path, where: str):
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, zipfile.BadZipFile) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        problem = f"not a level bank written by save_bank (damaged or another format: {first_line})"
        raise LevelFormatError(f"{where}: {problem}") from None
    if not isinstance(payload, dict) or payload.get("format_version") != BANK_FORMAT_VERSION:
        raise LevelFormatError(f"{where}: not a level bank of format_version {BANK_FORMAT_VERSION}")
    missing = [k for k in _PT_KEYS if k not in payload]
    if missing:
        raise LevelFormatError(f"{where}: missing {missing}; not written by save_bank")
    levels = payload["levels"]
    if not isinstance(levels, dict) or not all(isinstance(v, torch.Tensor) for v in levels.values()):
        raise LevelFormatError(f"{where}: 'levels' must map field names to tensors")
    return levels, payload["static_env_params"], payload["env_params"]


def _read_npz_bank(path: Path, where: str):
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise LevelFormatError(f"{where}: not a readable .npz archive ({exc})") from None
    with data:
        missing = [k for k in _NPZ_PARAM_KEYS if k not in data.files]
        if missing:
            raise LevelFormatError(f"{where}: missing {missing}; not written by save_bank")
        try:
            arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise LevelFormatError(f"{where}: damaged .npz member ({exc})") from None
    params = []
    for key in _NPZ_PARAM_KEYS:
        try:
            params.append(json.loads(str(arrays.pop(key))))
        except json.JSONDecodeError as exc:
            raise LevelFormatError(f"{where}: {key} is not JSON ({exc})") from None
    return {k: torch.from_numpy(v) for k, v in arrays.items()}, *params


def save_level_json(path, levels, index: int, static: StaticEnvParams, env_params: EnvParams | None = None) -> None:
    """Write level ``index`` of a batch (TensorDict, batch ``[B]``) as a Kinetix JSON level file
    (atomically, after validation)."""
    batch = levels.batch_size[0]
    if not -batch <= index < batch:
        raise IndexError(f"save_level_json: index {index} out of range for a batch of {batch} levels")
    save_level(path, schema.tensordict_to_numpy(levels[index]), static, env_params or EnvParams())


def load_level_json(path, static: StaticEnvParams | None = None, device=None):
    """Read a Kinetix JSON level as a TensorDict batch of one (padded to ``static`` when given).
    Returns ``(levels, static, env_params)``."""
    level = load_level(path, static=static)
    batched = {k: np.asarray(v)[None] for k, v in level.state.items()}
    return schema.to_tensordict(batched, (1,), device=device), level.static, level.env_params
