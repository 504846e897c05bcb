"""The kernels' data layout: one float32 matrix per batch, rows = state components, batch innermost.

Why this layout. The fused step gives each GPU lane one environment. Most of its memory accesses
name the same component for every lane at once (body 3's velocity, pair 17's normal): with the
batch innermost, such a load is one contiguous, fully coalesced row segment per warp. The
solver's sorted contact order differs between environments, so its loads are gathers, but still
within the lane's own column. Every component is stored as float32 (integers and flags are small
and exact in float32), so one pointer and one row stride address the whole state, and the
kernels need no per-field arguments.

A *table* is a set of entities with the same columns (bodies, joints, thrusters, contact slots,
...). Component ``column`` of entity ``e`` of a table starting at row ``start`` with ``count``
entities lives in row ``start + column * count + e``. A column of width ``w`` (a 2-vector, the 4
vertices) takes ``w`` consecutive column numbers. Tables come in the order of :data:`TABLES`,
followed by the kernels' scratch rows (``workspace``). The batch is padded to a whole number of
kernel programs so lanes need no masks.

The state matrix holds every float field of the state, the env-only ones too (densities,
``last_distance``), and the integer and bool fields the kernels read. So "a NaN in any float field
of an environment's state" (the env's termination rule) is "a NaN in the environment's column of
the state rows", which the kernel checks itself. Integer and bool fields also live, typed, in two
small side matrices (``int32`` and ``bool``, one field after the other, C order), so the env can
hand out every field as a typed view.

Every field has a :class:`Place` in each matrix that holds it: a first row and a row step per
field dimension, so ``field[b, i, j] = matrix[row + i * steps[0] + j * steps[1], b]``. A field is
then a strided view of its matrix (:func:`field_view`), and :func:`pack`, :func:`pack_typed`,
:func:`unpack` and :func:`state_views` convert between the TensorDict state (batch leading, one
tensor per field, upstream names) and the matrices through these views alone.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from kinetix_torch import schema
from kinetix_torch.params import StaticEnvParams
from kinetix_torch.topology import pair_tables

VERTICES = 4
"""Vertex slots per polygon the kernels are written for (upstream's ``max_polygon_vertices``)."""


@dataclass(frozen=True)
class Column:
    name: str
    sources: tuple[str, ...]
    """State fields concatenated along the entity axis (polygons then circles for bodies)."""


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    entity_dims: int
    """Leading field dimensions that enumerate entities (2 for polygon-pair points and the
    collision matrix, 0 for gravity)."""


def _table(name: str, prefix: str, fields: tuple[str, ...], entity_dims: int = 1) -> Table:
    return Table(name, tuple(Column(f, (f"{prefix}{f}",)) for f in fields), entity_dims)


_BODY_FIELDS = tuple(f.key.split(".", 1)[1] for f in schema.FIELDS if f.key.startswith("polygon."))
_MANIFOLD_FIELDS = tuple(f.key.split(".", 1)[1] for f in schema.FIELDS if f.key.startswith("acc_cc_manifolds."))

TABLES: tuple[Table, ...] = (
    Table(
        "body",
        tuple(Column(f, (f"polygon.{f}", f"circle.{f}")) for f in _BODY_FIELDS)
        + (
            Column("role", ("polygon_shape_roles", "circle_shape_roles")),
            Column("density", ("polygon_densities", "circle_densities")),
        ),
        1,
    ),
    _table("joint", "joint.", tuple(f.key[6:] for f in schema.FIELDS if f.key.startswith("joint."))),
    _table("thruster", "thruster.", tuple(f.key[9:] for f in schema.FIELDS if f.key.startswith("thruster."))),
    _table("rr", "acc_rr_manifolds.", _MANIFOLD_FIELDS, entity_dims=2),
    _table("cr", "acc_cr_manifolds.", _MANIFOLD_FIELDS),
    _table("cc", "acc_cc_manifolds.", _MANIFOLD_FIELDS),
    Table("collision", (Column("may_touch", ("collision_matrix",)),), 2),
    Table("globals", (Column("gravity", ("gravity",)),), 0),
    Table("env", (Column("last_distance", ("last_distance",)),), 0),
)
TABLE_BY_NAME = {t.name: t for t in TABLES}

STATE_KEYS = tuple(key for table in TABLES for col in table.columns for key in col.sources)
"""Fields with rows in the state matrix."""
TYPED_KEYS = {
    dtype: tuple(f.key for f in schema.FIELDS if f.dtype == np.dtype(dtype)) for dtype in ("int32", "bool")
}
"""Fields of each side matrix, by dtype name."""
_missing = [f.key for f in schema.FIELDS if f.dtype == schema.F32 and f.key not in STATE_KEYS]
assert not _missing, f"float fields without rows in the state matrix: {_missing}"

ENV_ONLY_KEYS = tuple(k for k in STATE_KEYS if not schema.FIELD_BY_KEY[k].sim and schema.FIELD_BY_KEY[k].dtype == schema.F32)
"""Float fields the kernels never read (densities, ``last_distance``): :func:`pack` writes zeros
for them when a state has none (an engine caller's physics-only state)."""

WRITTEN_KEYS = (
    tuple(f"{kind}.{f}" for kind in ("polygon", "circle") for f in ("position", "rotation", "velocity", "angular_velocity"))
    + ("joint.global_position", "joint.acc_impulse", "joint.acc_r_impulse", "thruster.global_position")
    + tuple(f.key for f in schema.FIELDS if f.key.startswith("acc_"))
)
"""State fields the fused step changes; every other field passes through untouched."""
WRITTEN_FLAG_KEYS = tuple(k for k in WRITTEN_KEYS if schema.FIELD_BY_KEY[k].dtype != schema.F32)
"""Written fields that are not float (the manifolds' ``active``): their typed copies follow the
state matrix after every step (:func:`refresh_flags`)."""


def _field_dims(key: str, static: StaticEnvParams, entity_dims: int) -> tuple[int, int]:
    shape = schema.field_shape(key, static)
    return math.prod(shape[:entity_dims]), math.prod(shape[entity_dims:])


def _c_steps(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Element steps of a C-ordered array of ``shape``."""
    steps, step = [], 1
    for size in reversed(shape):
        steps.append(step)
        step *= size
    return tuple(reversed(steps))


def column_starts(table_name: str) -> dict[str, int]:
    """First column number of each column of a table (sizes of the S preset; widths do not
    depend on the sizes once ``max_polygon_vertices`` is :data:`VERTICES`)."""
    table, static, start, out = TABLE_BY_NAME[table_name], StaticEnvParams(), 0, {}
    for col in table.columns:
        out[col.name] = start
        start += _field_dims(col.sources[0], static, table.entity_dims)[1]
    return out


@dataclass(frozen=True)
class Place:
    """Where a field lives in one matrix: ``field[b, i, j, ...] = matrix[row + i * steps[0] + j *
    steps[1] + ..., b]``."""

    row: int
    steps: tuple[int, ...]


@dataclass(frozen=True)
class Layout:
    """Row numbers of every table, field and scratch row for one :class:`StaticEnvParams`."""

    static: StaticEnvParams
    starts: dict
    """First row of each table."""
    counts: dict
    """Entities of each table."""
    widths: dict
    """Columns of each table."""
    places: dict
    """:class:`Place` of each field of :data:`STATE_KEYS` in the state matrix."""
    typed_places: dict
    """:class:`Place` of each integer / bool field in its side matrix."""
    typed_rows: dict
    """Rows of each side matrix, by dtype name."""
    state_rows: int
    delta_rows: int
    order_rows: int
    total_rows: int

    @property
    def constexprs(self) -> dict[str, int]:
        """The sizes and row offsets the kernels take as compile-time constants."""
        s = self.static
        return dict(
            N=s.num_shapes,
            J=s.num_joints,
            T=s.num_thrusters,
            RR=self.counts["rr"] // 2,
            CR=self.counts["cr"],
            CC=self.counts["cc"],
            JOINTS=self.starts["joint"],
            THRUSTERS=self.starts["thruster"],
            RR_SLOTS=self.starts["rr"],
            CR_SLOTS=self.starts["cr"],
            CC_SLOTS=self.starts["cc"],
            COLLISION=self.starts["collision"],
            GLOBALS=self.starts["globals"],
            STATE_ROWS=self.state_rows,
            DELTA=self.delta_rows,
            ORDER=self.order_rows,
            ITERATIONS=s.num_solver_iterations,
            SOLVER_BATCH=s.solver_batch_size,
            WARM_START=bool(s.do_warm_starting),
        )


@functools.lru_cache(maxsize=None)
def layout_for(static: StaticEnvParams) -> Layout:
    if static.max_polygon_vertices != VERTICES:
        raise ValueError(
            f"the Triton kernels are written for max_polygon_vertices={VERTICES}, got {static.max_polygon_vertices}"
        )
    starts, counts, widths, places, row = {}, {}, {}, {}, 0
    for table in TABLES:
        dims = [_field_dims(k, static, table.entity_dims) for k in table.columns[0].sources]
        count = counts[table.name] = sum(d[0] for d in dims)
        starts[table.name] = row
        for col in table.columns:
            first_entity = 0
            for key in col.sources:
                shape = schema.field_shape(key, static)
                entities, within = shape[: table.entity_dims], shape[table.entity_dims :]
                steps = _c_steps(entities) + tuple(s * count for s in _c_steps(within))
                places[key] = Place(row + first_entity, steps)
                first_entity += math.prod(entities)
            row += count * _field_dims(col.sources[0], static, table.entity_dims)[1]
        widths[table.name] = sum(_field_dims(c.sources[0], static, table.entity_dims)[1] for c in table.columns)
    typed_places, typed_rows = {}, {}
    for dtype, keys in TYPED_KEYS.items():
        typed_row = 0
        for key in keys:
            shape = schema.field_shape(key, static)
            typed_places[key] = Place(typed_row, _c_steps(shape))
            typed_row += math.prod(shape)
        typed_rows[dtype] = typed_row
    assert all(places[k].steps == typed_places[k].steps for k in WRITTEN_FLAG_KEYS), "refresh_flags copies row blocks"
    pairs = sum(len(v) for v in pair_tables(static).values())
    delta = row
    order = delta + 3 * static.num_shapes
    return Layout(static, starts, counts, widths, places, typed_places, typed_rows, row, delta, order, order + pairs)


def field_view(matrix, place: Place, shape: tuple[int, ...], batch: int):
    """The ``(batch, *shape)`` strided view of one field in a row-major ``(rows, padded)`` matrix."""
    stride = matrix.shape[1]
    return matrix.as_strided(
        (batch,) + tuple(shape), (1,) + tuple(s * stride for s in place.steps), matrix.storage_offset() + place.row * stride
    )


def _views(matrix, places: dict, keys, static: StaticEnvParams, batch: int) -> dict:
    return {key: field_view(matrix, places[key], schema.field_shape(key, static), batch) for key in keys}


def pair_index_tensor(static: StaticEnvParams, device):
    """All contact pairs as one ``(RR + CR + CC, 2)`` int32 tensor of global body indices."""
    import torch

    tables = pair_tables(static)
    return torch.from_numpy(np.concatenate([tables[k] for k in ("rr", "cr", "cc")]).astype(np.int32)).to(device)


def _field(state, key: str):
    return state.get(tuple(key.split(".")), None)


def write_state(packed, state, static: StaticEnvParams) -> None:
    """Write the fields of the TensorDict ``state`` (batch ``B``) into columns ``[0, B)`` of the
    state matrix ``packed``. A missing env-only float field (:data:`ENV_ONLY_KEYS`) is left as is."""
    (batch,) = state.batch_size
    for key, view in _views(packed, layout_for(static).places, STATE_KEYS, static, batch).items():
        value = _field(state, key)
        if value is None and key not in ENV_ONLY_KEYS:
            raise ValueError(f"pack: the state has no field {key!r}, which the Triton kernels read")
        if value is not None:
            view.copy_(value)


def write_typed(typed: dict, state, static: StaticEnvParams) -> None:
    """Write the integer and bool fields of ``state`` into columns ``[0, B)`` of the side matrices."""
    (batch,) = state.batch_size
    for dtype, keys in TYPED_KEYS.items():
        for key, view in _views(typed[dtype], layout_for(static).typed_places, keys, static, batch).items():
            value = _field(state, key)
            if value is None:
                raise ValueError(f"pack: the state has no field {key!r}")
            view.copy_(value)


def pack(state, static: StaticEnvParams, padded_batch: int, device):
    """The TensorDict ``state`` (batch ``B``) as a ``(total_rows, padded_batch)`` float32 matrix
    (scratch rows, padding columns and missing env-only fields zero)."""
    import torch

    packed = torch.zeros((layout_for(static).total_rows, padded_batch), dtype=torch.float32, device=device)
    write_state(packed, state, static)
    return packed


def pack_typed(state, static: StaticEnvParams, padded_batch: int, device) -> dict:
    """The integer and bool fields of ``state`` as side matrices ``{"int32": (rows, padded_batch),
    "bool": (rows, padded_batch)}``."""
    import torch

    rows = layout_for(static).typed_rows
    typed = {dtype: torch.zeros((rows[dtype], padded_batch), dtype=getattr(torch, dtype), device=device)
             for dtype in TYPED_KEYS}
    write_typed(typed, state, static)
    return typed


def unpack(packed, state, static: StaticEnvParams, keys=WRITTEN_KEYS) -> dict:
    """The fields ``keys`` of a packed matrix, shaped as in ``state`` (batch leading): float fields
    are views of ``packed`` (no copy), the others new tensors of their own dtype."""
    views = _views(packed, layout_for(static).places, keys, static, state.batch_size[0])
    return {key: view if schema.FIELD_BY_KEY[key].dtype == schema.F32 else _typed(view, key) for key, view in views.items()}


def _typed(view, key: str):
    import torch

    dtype = getattr(torch, str(schema.FIELD_BY_KEY[key].dtype))
    return view != 0 if dtype == torch.bool else view.to(dtype)


def state_views(packed, typed: dict, static: StaticEnvParams, batch: int):
    """The state as a TensorDict of views (batch ``[batch]``): float fields view the state matrix
    ``packed``, integer and bool fields their side matrix in ``typed``. Writes to either side
    show in the other only where the caller copies them (see :func:`refresh_flags`)."""
    from tensordict import TensorDict

    layout = layout_for(static)
    fields = _views(packed, layout.places, [k for k in STATE_KEYS if schema.FIELD_BY_KEY[k].dtype == schema.F32],
                    static, batch)
    for dtype, keys in TYPED_KEYS.items():
        fields.update(_views(typed[dtype], layout.typed_places, keys, static, batch))
    out = TensorDict({}, batch_size=[batch], device=packed.device)
    for field in schema.FIELDS:
        out.set(tuple(field.key.split(".")), fields[field.key])
    return out


def refresh_flags(packed, typed: dict, static: StaticEnvParams) -> None:
    """Copy the kernel-written bool fields (:data:`WRITTEN_FLAG_KEYS`) from the state matrix to
    their typed side matrix: one elementwise op per field, over all columns."""
    import torch

    layout = layout_for(static)
    for key in WRITTEN_FLAG_KEYS:
        size = math.prod(schema.field_shape(key, static))
        source, target = layout.places[key].row, layout.typed_places[key].row
        torch.ne(packed[source : source + size], 0, out=typed["bool"][target : target + size])
