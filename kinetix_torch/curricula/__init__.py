"""Curricula: level sources for training (see :mod:`.source` for the protocol the trainer uses).

``train --curriculum dr|plr|accel|sfl`` picks one of :data:`CURRICULA`; each has a config
dataclass (one flag per field, names unique across the four) and is built by
:func:`make_level_source`.
"""

from __future__ import annotations

from .buffer import LevelBuffer
from .dr import DomainRandomisation, DRConfig
from .plr import ACCEL, PLR, ACCELConfig, PLRConfig
from .scores import learnability, max_mc, max_returns, positive_value_loss, solve_rates
from .sfl import SFL, SFLConfig, SolveRates
from .source import EDITED, KIND_NAMES, NEW, REPLAY, LevelSource, ScoredLevelSource

__all__ = [
    "LevelSource",
    "ScoredLevelSource",
    "NEW",
    "REPLAY",
    "EDITED",
    "KIND_NAMES",
    "DRConfig",
    "DomainRandomisation",
    "PLRConfig",
    "PLR",
    "ACCELConfig",
    "ACCEL",
    "SFLConfig",
    "SFL",
    "SolveRates",
    "LevelBuffer",
    "CURRICULA",
    "make_level_source",
    "max_returns",
    "max_mc",
    "positive_value_loss",
    "solve_rates",
    "learnability",
]

CURRICULA = {
    "dr": (DRConfig, DomainRandomisation),
    "plr": (PLRConfig, PLR),
    "accel": (ACCELConfig, ACCEL),
    "sfl": (SFLConfig, SFL),
}
"""``--curriculum`` name -> (config dataclass, level source class)."""


def make_level_source(name: str, config, static, *, env_params=None, generator_params=None, device="cpu",
                      seed: int = 0, solve_rates: SolveRates | None = None) -> LevelSource:
    """The curriculum ``name`` with ``config`` (an instance of its config class). SFL needs the
    trainer's ``solve_rates`` callable; the others take none."""
    if name not in CURRICULA:
        raise ValueError(f"--curriculum must be one of {sorted(CURRICULA)}, got {name!r}")
    config_class, source_class = CURRICULA[name]
    if not isinstance(config, config_class):
        raise TypeError(f"curriculum {name!r} takes a {config_class.__name__}, got {type(config).__name__}")
    if (name == "sfl") != (solve_rates is not None):
        raise ValueError("solve_rates: SFL needs the trainer's solve_rates(levels, steps); the others take none")
    options = dict(env_params=env_params, generator_params=generator_params, device=device, seed=seed)
    if name == "sfl":
        return SFL(config, static, solve_rates, **options)
    return source_class(config, static, **options)
