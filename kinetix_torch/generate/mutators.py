"""Upstream Kinetix's ACCEL mutators on TensorDict level batches, built on the edits of
:mod:`.edits` (the ones the random level generator uses).

* :data:`MUTATIONS`: upstream's mutator name -> ``f(levels, generator, static, ...)``, one edit
  on every level of a batch, each level with its own random choices;
* :data:`MUTATOR_WEIGHTS`: upstream's ACCEL mutator name -> relative weight;
* :func:`mutate_levels`: upstream's ``make_mutate_env``, ``n`` rounds of one weighted random edit
  per level.

An edited level starts without warm-start contacts (all-zero manifolds), the state upstream's level
loader gives every level. Upstream's edits keep the contacts of their settling steps (and any the
input had), which the observation's contact layer shows and a save and load would drop; here a
mutated level is the same level after a JSON round trip.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import torch

from ..bodies import Flat
from ..params import EnvParams, StaticEnvParams
from . import edits
from .batch import Draws, merge, to_levels, without_contacts
from .params import UEDParams

__all__ = ["MUTATIONS", "MUTATOR_WEIGHTS", "ACCEL_MUTATIONS", "mutate_levels"]


def _add_shape(flat: Flat, draws: Draws, ctx: edits.Context) -> Flat:
    """Upstream's ``mutate_add_shape``: :func:`.edits.add_shape`, the new shape possibly fixated."""
    return edits.add_shape(flat, draws, ctx, torch.zeros_like(flat["timestep"], dtype=torch.bool))[0]


def _add_connected_shape(flat: Flat, draws: Draws, ctx: edits.Context) -> Flat:
    """Upstream's ``mutate_add_connected_shape_proper``: :func:`.edits.add_connected_shape`, the
    joint revolute or fixed."""
    return edits.add_connected_shape(flat, draws, ctx, torch.zeros_like(flat["timestep"], dtype=torch.bool))[0]


_EDITS = {
    "mutate_add_shape": _add_shape,
    "mutate_add_connected_shape_proper": _add_connected_shape,
    "mutate_remove_joint": edits.remove_joint,
    "mutate_remove_shape": edits.remove_shape,
    "mutate_swap_role": edits.swap_role,
    "mutate_add_thruster": edits.add_thruster,
    "mutate_remove_thruster": edits.remove_thruster,
    "mutate_toggle_fixture": edits.toggle_fixture,
    "mutate_change_shape_size": edits.change_shape_size,
    "mutate_change_shape_location": edits.change_shape_location,
    "mutate_change_shape_rotation": edits.change_shape_rotation,
    "mutate_change_gravity": edits.change_gravity,
}

MUTATOR_WEIGHTS: dict[str, float] = {
    "mutate_add_shape": 1.0,
    "mutate_add_connected_shape_proper": 1.0,
    "mutate_remove_joint": 0.0,
    "mutate_remove_shape": 0.0,
    "mutate_swap_role": 1.0,
    "mutate_add_thruster": 1.0,
    "mutate_remove_thruster": 1.0,
    "mutate_toggle_fixture": 0.1,
    "mutate_change_shape_size": 1.0,
    "mutate_change_shape_location": 1.0,
    "mutate_change_shape_rotation": 1.0,
}
"""Upstream's ACCEL edits (``make_mutate_env``), in its order, with its relative weights. A level
draws an edit only where it is possible (:func:`_possible`); a weight-0 edit is never drawn."""

ACCEL_MUTATIONS = tuple(MUTATOR_WEIGHTS)
"""The edits ACCEL draws from, in upstream's order."""


def _possible(flat: Flat) -> dict[str, torch.Tensor]:
    """Upstream's ``can_do_*`` masks, ``(B,)`` per edit that needs one: adding needs a free slot,
    removing a thruster needs one. Other edits are always possible."""
    shape_left = (~flat["polygon.active"]).any(1) | (~flat["circle.active"]).any(1)
    return {
        "mutate_add_shape": shape_left,
        "mutate_add_connected_shape_proper": shape_left & (~flat["joint.active"]).any(1),
        "mutate_add_thruster": (~flat["thruster.active"]).any(1),
        "mutate_remove_thruster": flat["thruster.active"].any(1),
    }


def _checked_weights(weights: Mapping[str, float]) -> dict[str, float]:
    unknown = sorted(set(weights) - set(_EDITS))
    if unknown:
        raise ValueError(f"mutator weights: unknown mutator(s) {unknown}; expected names from {sorted(_EDITS)}")
    bad = {name: w for name, w in weights.items() if not (isinstance(w, numbers.Real) and math.isfinite(w) and w >= 0)}
    if bad:
        raise ValueError(f"mutator weights: expected finite numbers >= 0, got {bad}")
    if not any(w > 0 for w in weights.values()):
        raise ValueError(f"mutator weights: at least one weight must be positive, got {dict(weights)}")
    return {name: float(w) for name, w in weights.items()}


def _public(name: str):
    def mutate(levels, generator: torch.Generator, static: StaticEnvParams, env_params: EnvParams | None = None,
               ued_params: UEDParams | None = None):
        ctx = edits.Context(static, env_params or EnvParams(), ued_params or UEDParams())
        flat = without_contacts(levels)
        return to_levels(_EDITS[name](flat, Draws(generator, flat["timestep"].shape[0]), ctx), static)

    mutate.__name__ = name
    mutate.__doc__ = (
        f"Upstream's ``{name}`` on every level of ``levels`` (TensorDict, batch ``[B]``) with "
        f"random draws from ``generator``; returns a new TensorDict without warm-start contacts."
        f"\n\n{_EDITS[name].__doc__ or ''}"
    )
    return mutate


MUTATIONS = {name: _public(name) for name in _EDITS}
"""Upstream's mutator name -> ``f(levels, generator, static, env_params=None, ued_params=None)``."""


def mutate_levels(levels, generator: torch.Generator, static: StaticEnvParams, n: int = 1,
                  env_params: EnvParams | None = None, ued_params: UEDParams | None = None,
                  weights: Mapping[str, float] | None = None):
    """Upstream's ACCEL editor (``make_mutate_env``): ``n`` rounds, in each of which every level
    independently draws one edit with probability proportional to its weight among the edits
    possible for that level (adding needs a free slot, removing a thruster needs a thruster); a
    level with no possible edit of positive weight stays as it is.

    ``weights``: mutator name (a key of :data:`MUTATIONS`) -> relative weight, default
    :data:`MUTATOR_WEIGHTS`; names left out have weight 0. All candidate edits of positive weight
    run on the whole batch and each level keeps its own: no host synchronisation, no per-level
    branching. The returned levels have no warm-start contacts (see the module docstring)."""
    weights = _checked_weights(MUTATOR_WEIGHTS if weights is None else weights)
    names = list(weights)
    ctx = edits.Context(static, env_params or EnvParams(), ued_params or UEDParams())
    flat = without_contacts(levels)
    draws = Draws(generator, flat["timestep"].shape[0])
    base = torch.tensor(list(weights.values()), device=draws.device)
    always = torch.ones(draws.batch, dtype=torch.bool, device=draws.device)
    for _ in range(n):
        possible = _possible(flat)
        column_weights = base * torch.stack([possible.get(name, always).float() for name in names], 1)
        chosen = draws.choice(column_weights)
        any_possible = column_weights.sum(1) > 0
        result = flat
        for column, name in enumerate(names):
            if weights[name] > 0:
                result = merge(any_possible & (chosen == column), _EDITS[name](flat, draws, ctx), result)
        flat = result
    return to_levels(flat, static)
