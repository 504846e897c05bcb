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
followed by the kernels' scratch rows (``workspace``). The batch is padded to a multiple of the
kernel block so lanes need no masks.

:func:`pack` and :func:`unpack` convert between the TensorDict state (batch leading, one tensor
per field, upstream names) and this matrix; they are the only place that knows both.
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
        + (Column("role", ("polygon_shape_roles", "circle_shape_roles")),),
        1,
    ),
    _table("joint", "joint.", tuple(f.key[6:] for f in schema.FIELDS if f.key.startswith("joint."))),
    _table("thruster", "thruster.", tuple(f.key[9:] for f in schema.FIELDS if f.key.startswith("thruster."))),
    _table("rr", "acc_rr_manifolds.", _MANIFOLD_FIELDS, entity_dims=2),
    _table("cr", "acc_cr_manifolds.", _MANIFOLD_FIELDS),
    _table("cc", "acc_cc_manifolds.", _MANIFOLD_FIELDS),
    Table("collision", (Column("may_touch", ("collision_matrix",)),), 2),
    Table("globals", (Column("gravity", ("gravity",)),), 0),
)
TABLE_BY_NAME = {t.name: t for t in TABLES}

WRITTEN_KEYS = (
    tuple(f"{kind}.{f}" for kind in ("polygon", "circle") for f in ("position", "rotation", "velocity", "angular_velocity"))
    + ("joint.global_position", "joint.acc_impulse", "joint.acc_r_impulse", "thruster.global_position")
    + tuple(f.key for f in schema.FIELDS if f.key.startswith("acc_"))
)
"""State fields the fused step changes; every other field passes through untouched."""


def _field_dims(key: str, static: StaticEnvParams, entity_dims: int) -> tuple[int, int]:
    shape = schema.field_shape(key, static)
    return math.prod(shape[:entity_dims]), math.prod(shape[entity_dims:])


def column_starts(table_name: str) -> dict[str, int]:
    """First column number of each column of a table (sizes of the S preset; widths do not
    depend on the sizes once ``max_polygon_vertices`` is :data:`VERTICES`)."""
    table, static, start, out = TABLE_BY_NAME[table_name], StaticEnvParams(), 0, {}
    for col in table.columns:
        out[col.name] = start
        start += _field_dims(col.sources[0], static, table.entity_dims)[1]
    return out


@dataclass(frozen=True)
class Layout:
    """Row numbers of every table and of the scratch rows for one :class:`StaticEnvParams`."""

    static: StaticEnvParams
    starts: dict
    """First row of each table."""
    counts: dict
    """Entities of each table."""
    widths: dict
    """Columns of each table."""
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
    starts, counts, widths, row = {}, {}, {}, 0
    for table in TABLES:
        dims = [_field_dims(k, static, table.entity_dims) for k in table.columns[0].sources]
        counts[table.name] = sum(d[0] for d in dims)
        widths[table.name] = sum(_field_dims(c.sources[0], static, table.entity_dims)[1] for c in table.columns)
        starts[table.name] = row
        row += counts[table.name] * widths[table.name]
    pairs = sum(len(v) for v in pair_tables(static).values())
    delta = row
    order = delta + 3 * static.num_shapes
    return Layout(static, starts, counts, widths, row, delta, order, order + pairs)


def pair_index_tensor(static: StaticEnvParams, device):
    """All contact pairs as one ``(RR + CR + CC, 2)`` int32 tensor of global body indices."""
    import torch

    tables = pair_tables(static)
    return torch.from_numpy(np.concatenate([tables[k] for k in ("rr", "cr", "cc")]).astype(np.int32)).to(device)


def pack(state, static: StaticEnvParams, padded_batch: int, device):
    """The TensorDict ``state`` (batch ``B``) as a ``(total_rows, padded_batch)`` float32 matrix."""
    import torch

    layout = layout_for(static)
    (batch,) = state.batch_size
    blocks = []
    for table in TABLES:
        for col in table.columns:
            parts = []
            for key in col.sources:
                entities, width = _field_dims(key, static, table.entity_dims)
                parts.append(state.get(tuple(key.split("."))).reshape(batch, entities, width))
            x = torch.cat(parts, dim=1).to(torch.float32)
            blocks.append(x.permute(2, 1, 0).reshape(-1, batch))
    packed = torch.zeros((layout.total_rows, padded_batch), dtype=torch.float32, device=device)
    packed[: layout.state_rows, :batch] = torch.cat(blocks)
    return packed


def unpack(packed, state, static: StaticEnvParams, keys=WRITTEN_KEYS) -> dict:
    """The fields ``keys`` of a packed matrix, shaped and typed as in ``state`` (batch leading)."""
    import torch

    layout = layout_for(static)
    (batch,) = state.batch_size
    wanted, out = set(keys), {}
    for table in TABLES:
        row, count = layout.starts[table.name], layout.counts[table.name]
        for col in table.columns:
            width = _field_dims(col.sources[0], static, table.entity_dims)[1]
            block = packed[row : row + width * count, :batch]
            row += width * count
            if not wanted.intersection(col.sources):
                continue
            values = block.reshape(width, count, batch).permute(2, 1, 0)
            offset = 0
            for key in col.sources:
                entities = _field_dims(key, static, table.entity_dims)[0]
                if key in wanted:
                    like = state.get(tuple(key.split(".")))
                    part = values[:, offset : offset + entities].reshape(like.shape)
                    out[key] = part != 0 if like.dtype == torch.bool else part.to(like.dtype)
                offset += entities
    return out
