"""Domain randomisation: every batch is fresh random levels from upstream's generator."""

from __future__ import annotations

from dataclasses import dataclass

from .source import NEW, RandomLevelSource, constant, require

__all__ = ["DRConfig", "DomainRandomisation"]


@dataclass
class DRConfig:
    """Random levels (upstream's ``configs/learning/ppo-base.yaml`` level filter); every curriculum's
    fresh levels come from here."""

    noop_filter: bool = True
    """Prefer random levels that doing nothing does not solve (upstream's filter_levels)."""
    noop_filter_ratio: int = 2
    """Candidates drawn per kept level by the no-op filter (level_filter_sample_ratio)."""
    noop_filter_steps: int = 64
    """Env steps the no-op policy gets to solve a candidate (level_filter_n_steps)."""

    def validate(self) -> None:
        require(self.noop_filter_ratio >= 1, "noop_filter_ratio", ">= 1", self.noop_filter_ratio)
        require(self.noop_filter_steps >= 1, "noop_filter_steps", ">= 1", self.noop_filter_steps)


class DomainRandomisation(RandomLevelSource):
    """``levels(n)``: ``n`` new random levels, all trained on. Also a drop-in env level sampler:
    ``dr(n)`` returns the levels alone."""

    def levels(self, n: int):
        levels, ids = self.fresh(n)
        return self.hand_out(levels, ids, constant(n, NEW, self.device), constant(n, True, self.device))

    def __call__(self, n: int):
        return self.levels(n)[0]
