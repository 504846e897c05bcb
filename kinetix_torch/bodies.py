"""Batched rigid bodies in torch: body fields over the global shape index, and mass and inertia.

A batch of levels is a *flat* dict ``{"polygon.position": (B, P, 2), ...}`` (the keys of
:mod:`kinetix_torch.schema`). The global shape index puts the ``P`` polygons first, then the
``C`` circles, as joints and thrusters address them.

Mass and inertia come from :mod:`kinetix_torch.formulas` (shared with the reference engine).
"""

from __future__ import annotations

import torch

from . import formulas, schema
from .params import StaticEnvParams

__all__ = [
    "Flat",
    "to_flat",
    "shape_field",
    "at_shapes",
    "shape_roles",
    "dynamic_mask",
    "recalculate_mass_and_inertia",
]

Flat = dict  # {dotted schema key: tensor with a leading batch dim}


def to_flat(levels) -> Flat:
    """TensorDict (batch ``[B]``) or flat mapping -> flat dict (no copies)."""
    if hasattr(levels, "batch_size"):
        return schema.tensordict_to_flat_tensors(levels)
    return dict(levels)


def shape_field(flat: Flat, name: str) -> torch.Tensor:
    """``(B, N, ...)``: a body field over the global shape index (polygons, then circles)."""
    polygon, circle = flat[f"polygon.{name}"], flat[f"circle.{name}"]
    return torch.cat([polygon, circle.to(polygon.dtype)], dim=1)


def at_shapes(per_shape: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``per_shape[b, index[b, k]]`` for ``(B, N)`` values and ``(B, K)`` shape indices (clamped)."""
    return per_shape.gather(1, index.long().clamp(0, per_shape.shape[1] - 1))


def shape_roles(flat: Flat) -> torch.Tensor:
    return torch.cat([flat["polygon_shape_roles"], flat["circle_shape_roles"]], dim=1)


def dynamic_mask(flat: Flat, static: StaticEnvParams) -> torch.Tensor:
    """``(B, N)``: active shapes other than the static scene pieces."""
    active = shape_field(flat, "active")
    return active & (torch.arange(static.num_shapes, device=active.device) >= static.num_static_fixated_polys)


# --- mass and inertia ---------------------------------------------------------------------------


def recalculate_mass_and_inertia(flat: Flat) -> None:
    """Jax2D's ``recalculate_mass_and_inertia`` on every level (:mod:`kinetix_torch.formulas`):
    movable polygons are re-centred on their vertex mean, then inverse masses and inertias are
    recomputed from the densities; zero (fixated) values stay zero. Replaces entries of ``flat``."""
    for kind, recalculate in (("polygon", formulas.recalculate_polygons), ("circle", formulas.recalculate_circles)):
        fields = {name: flat[f"{kind}.{name}"] for name in ("position", "vertices", "n_vertices", "radius",
                                                             "inverse_mass", "inverse_inertia")}
        for name, value in recalculate(fields, flat[f"{kind}_densities"]).items():
            flat[f"{kind}.{name}"] = value
