"""Batched level states as flat dicts of tensors, the slot writes every edit is made of, and the
random draws the generator makes.

Inside the generator a batch of levels is a *flat* dict ``{"polygon.position": (B, P, 2), ...}``
(the keys of :mod:`kinetix_torch.schema`). Every edit is functional: it replaces dict entries
with new tensors and never writes into a tensor it was given, so callers' levels stay intact.
Edits take a per-level ``where`` mask instead of branching, so one code path serves every level.

Random draws all come from one :class:`torch.Generator` on the levels' device and are drawn for
every level whether or not it uses them: the stream (and so the levels) depends only on the seed,
the batch size and the device.
"""

from __future__ import annotations

import functools
import math

import torch

from .. import formulas, schema
from ..bodies import Flat, shape_field, to_flat
from ..params import StaticEnvParams

ROLE_KEYS = {"polygon": "polygon_shape_roles", "circle": "circle_shape_roles"}


# --- conversion ---------------------------------------------------------------------------------


def to_levels(flat: Flat, static: StaticEnvParams):
    """Flat dict -> TensorDict with nested keys and batch ``[B]``, in schema order. Fields the
    generator leaves out (the warm-start manifolds) are zeros."""
    ref = flat["timestep"]
    batch = ref.shape[0]
    ordered = {}
    for f in schema.FIELDS:
        value = flat.get(f.key)
        if value is None:
            shape = (batch,) + schema.field_shape(f, static)
            value = torch.zeros(shape, dtype=getattr(torch, str(f.dtype)), device=ref.device)
        ordered[f.key] = value
    return schema.to_tensordict(ordered, (batch,), device=ref.device)


def without_contacts(levels) -> Flat:
    """The levels as a flat dict without their warm-start manifolds (which :func:`to_levels`
    writes back as zeros)."""
    return {k: v for k, v in to_flat(levels).items() if k.split(".")[0] not in schema.MANIFOLD_PREFIXES.values()}


_empty_scene_numpy = functools.lru_cache(maxsize=None)(formulas.empty_scene)
"""Upstream's empty env (floor, walls, ceiling) as numpy arrays, built once per size."""


def empty_levels(n: int, static: StaticEnvParams, device) -> Flat:
    """``n`` copies of upstream's empty env on ``device``, without the (zero) warm-start manifolds."""
    return {
        k: torch.tensor(v, device=device).expand((n,) + v.shape).clone()
        for k, v in _empty_scene_numpy(static).items()
        if k.split(".")[0] not in schema.MANIFOLD_PREFIXES.values()
    }


def merge(where: torch.Tensor, new: Flat, old: Flat) -> Flat:
    """Per level: ``new`` where ``where``, else ``old`` (entries that are the same tensor in both
    are shared, not recomputed)."""
    out = dict(old)
    for key, value in old.items():
        if new[key] is not value:
            out[key] = torch.where(where.reshape((-1,) + (1,) * (value.ndim - 1)), new[key], value)
    return out


# --- slot edits ---------------------------------------------------------------------------------


def slot_mask(index: torch.Tensor, size: int, where: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, size)`` bool: True at ``index[b]`` (and only where ``where[b]``)."""
    mask = torch.arange(size, device=index.device) == index[:, None]
    return mask if where is None else mask & where[:, None]


def write(flat: Flat, key: str, index: torch.Tensor, value, where: torch.Tensor) -> None:
    """``flat[key][b, index[b]] = value[b]`` for levels with ``where[b]`` (replaces the entry)."""
    old = flat[key]
    value = torch.as_tensor(value, device=old.device).to(old.dtype)
    if value.ndim == 0 or value.shape[0] != old.shape[0]:
        value = value.expand((old.shape[0],) + old.shape[2:])
    mask = slot_mask(index, old.shape[1], where)
    mask = mask.reshape(mask.shape + (1,) * (old.ndim - 2))
    flat[key] = torch.where(mask, value[:, None], old)


def write_shape(flat: Flat, index: torch.Tensor, values: dict, where: torch.Tensor) -> None:
    """Write fields of shape ``index[b]`` (global index: polygons, then circles) for levels with
    ``where[b]``. ``values``: body field name without prefix (``position``, ``radius``, ...) or
    ``role`` -> ``(B, ...)`` value or scalar."""
    P = flat["polygon.active"].shape[1]
    for kind, slot, chosen in (("polygon", index, index < P), ("circle", index - P, index >= P)):
        for name, value in values.items():
            key = ROLE_KEYS[kind] if name == "role" else f"{kind}.{name}"
            write(flat, key, slot, value, where & chosen)


def gather_slot(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[b, index[b]]`` for ``values`` of shape ``(B, S, ...)``."""
    index = index.long().clamp(0, values.shape[1] - 1)
    index = index.reshape((-1, 1) + (1,) * (values.ndim - 2)).expand((-1, 1) + values.shape[2:])
    return values.gather(1, index)[:, 0]


def select_shape(flat: Flat, index: torch.Tensor, names=("position", "rotation", "inverse_mass", "vertices",
                                                       "n_vertices", "radius", "active")) -> dict:
    """Body fields of shape ``index[b]`` (global index) of every level."""
    return {name: gather_slot(shape_field(flat, name), index) for name in names}


def first_free(active: torch.Tensor) -> torch.Tensor:
    """Index of the first inactive slot (0 when all are taken), as upstream's ``argmin(active)``."""
    return torch.argmin(active.to(torch.uint8), dim=1)


def num_free(active: torch.Tensor) -> torch.Tensor:
    return (~active).sum(dim=1)


# --- random draws -------------------------------------------------------------------------------


class Draws:
    """Batched random draws from one generator, on its device."""

    def __init__(self, generator: torch.Generator, batch: int):
        self.generator, self.batch, self.device = generator, batch, generator.device

    def uniform(self, *shape, low=0.0, high=1.0) -> torch.Tensor:
        u = torch.rand((self.batch,) + shape, generator=self.generator, device=self.device)
        return u if (low, high) == (0.0, 1.0) else low + u * (high - low)

    def bernoulli(self, p) -> torch.Tensor:
        return self.uniform() < p

    def integers(self, high: int) -> torch.Tensor:
        return torch.randint(high, (self.batch,), generator=self.generator, device=self.device)

    def angle(self) -> torch.Tensor:
        return self.uniform() * (2 * math.pi)

    def choice(self, weights: torch.Tensor) -> torch.Tensor:
        """Index drawn with probability proportional to ``weights[b]`` ``(B, K)``.

        As upstream (``jax.random.choice``): inverse CDF at ``total * (1 - u)``, so zero-weight
        entries are never drawn, and an all-zero row gives index 0.
        """
        weights = weights.to(torch.float32)
        cdf = torch.cumsum(weights, dim=1)
        r = cdf[:, -1:] * (1.0 - self.uniform()[:, None])
        return (cdf < r).sum(dim=1).clamp(max=weights.shape[1] - 1)

    def permutation(self, n: int) -> torch.Tensor:
        """``(B, n)``: an independent random permutation per level."""
        return torch.argsort(self.uniform(n), dim=1)
