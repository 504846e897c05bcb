"""Sampling for learnability (SFL, Rutherford et al. 2024), the Kinetix paper's curriculum, as
upstream runs it (``experiments/sfl.py``, ``configs/ued/sfl.yaml``).

Every ``refresh_every`` batches (from the first), the current policy plays
``scoring_batches x scoring_batch`` fresh random levels for ``scoring_steps`` steps each; each
level's learnability ``p (1 - p)`` of its solve rate ``p`` (plus ``0.001 p``, upstream's tie-break
towards solvable levels) ranks it, and the ``learnable_levels`` best make the buffer. Each batch is
then ``buffer_fraction`` of levels drawn uniformly from the buffer (with replacement) after fresh
random levels; all are trained on.

The rollout belongs to the trainer: it hands SFL a ``solve_rates(levels, steps) -> FloatTensor``
callable (see :data:`SolveRates`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tensordict import TensorDictBase

from .dr import DRConfig
from .scores import learnability
from .source import NEW, REPLAY, RandomLevelSource, cpu_copy, levels_from_state, levels_state, require

__all__ = ["SFLConfig", "SFL", "SolveRates"]

SolveRates = Callable[[TensorDictBase, int], torch.Tensor]
"""``solve_rates(levels, steps)``: the current policy (stochastic) plays each of the ``B`` levels
for ``steps`` env steps, restarting the level when an episode ends; returns each level's share of
finished episodes that reached the goal, float ``[B]`` in [0, 1] on the levels' device
(:func:`kinetix_torch.curricula.scores.solve_rates` of the rollout)."""

SOLVABLE_TIE_BREAK = 0.001
"""Upstream adds this x the solve rate to learnability before ranking."""


@dataclass
class SFLConfig(DRConfig):
    """SFL (upstream's ``configs/ued/sfl.yaml``)."""

    buffer_fraction: float = 0.5
    """Share of each batch's envs that play buffer levels (sampled_envs_ratio)."""
    scoring_batch: int = 4096
    """Random levels scored per scoring rollout (batch_size)."""
    scoring_batches: int = 3
    """Scoring rollouts per refresh (num_batches): 3 x 4096 = 12,288 levels."""
    scoring_steps: int = 512
    """Env steps of each scoring rollout (rollout_steps)."""
    learnable_levels: int = 1024
    """Most learnable levels kept in the buffer (num_to_save)."""
    refresh_every: int = 128
    """Batches (PPO updates) between buffer refreshes (buffer_update_frequency)."""
    sfl_scale: float = 1.0
    """Multiplies scoring_batch and learnable_levels (e.g. num_envs / 2048 to keep upstream's ratios)."""

    def validate(self) -> None:
        super().validate()
        require(0.0 <= self.buffer_fraction <= 1.0, "buffer_fraction", "in [0, 1]", self.buffer_fraction)
        for name in ("scoring_batch", "scoring_batches", "scoring_steps", "learnable_levels", "refresh_every"):
            require(getattr(self, name) >= 1, name, ">= 1", getattr(self, name))
        require(self.sfl_scale > 0, "sfl_scale", "> 0", self.sfl_scale)
        require(self.scaled(self.learnable_levels) <= self.scaled(self.scoring_batch) * self.scoring_batches,
                "learnable_levels", "at most the levels scored (scoring_batch x scoring_batches, scaled)",
                self.learnable_levels)

    def scaled(self, count: int) -> int:
        return max(1, round(count * self.sfl_scale))


class SFL(RandomLevelSource):
    """SFL over upstream's random levels; see the module docstring."""

    def __init__(self, config: SFLConfig, static, solve_rates: SolveRates, env_params=None, generator_params=None,
                 device="cpu", seed=0):
        super().__init__(config, static, env_params, generator_params, device, seed)
        self.solve_rates = solve_rates
        self.batches = 0
        self.buffer_levels: TensorDictBase | None = None
        self.buffer_ids: torch.Tensor | None = None
        self.buffer_learnability: torch.Tensor | None = None
        self.scored_learnability: torch.Tensor | None = None  # of all levels of the last refresh

    def refresh(self) -> None:
        """Score fresh random levels with the current policy and keep the most learnable."""
        config = self.config
        batch = config.scaled(config.scoring_batch)
        levels, rates = [], []
        for _ in range(config.scoring_batches):
            candidates = self.sampler(batch)
            rate = self.solve_rates(candidates, config.scoring_steps)
            if tuple(rate.shape) != (batch,):
                raise ValueError(f"SFL: solve_rates returned shape {list(rate.shape)} for {batch} levels")
            levels.append(candidates)
            rates.append(rate.to(self.device))
        rate = torch.cat(rates)
        if not bool(((rate >= 0) & (rate <= 1)).all()):  # NaN included: a level without a finished episode
            raise ValueError(
                "SFL: solve_rates must lie in [0, 1] for every level; NaN means no episode finished "
                f"(make --scoring-steps ({config.scoring_steps}) at least the episode length)"
            )
        score = learnability(rate) + SOLVABLE_TIE_BREAK * rate
        keep = torch.sort(score, stable=True).indices[-config.scaled(config.learnable_levels):]
        self.buffer_levels = torch.cat(levels)[keep]
        self.buffer_ids = self.new_ids(keep.shape[0])
        self.buffer_learnability = learnability(rate[keep])
        self.scored_learnability = learnability(rate)

    def levels(self, n: int):
        from_buffer = int(n * self.config.buffer_fraction)
        if from_buffer and (self.buffer_ids is None or self.batches % self.config.refresh_every == 0):
            self.refresh()
        self.batches += 1
        parts = []
        if n - from_buffer:
            parts.append((*self.fresh(n - from_buffer), NEW))
        if from_buffer:
            pick = torch.randint(self.buffer_ids.shape[0], (from_buffer,), generator=self.generator, device=self.device)
            parts.append((self.buffer_levels[pick], self.buffer_ids[pick], REPLAY))
        levels = torch.cat([p[0] for p in parts])
        ids = torch.cat([p[1] for p in parts])
        kinds = torch.cat([torch.full_like(p[1], p[2]) for p in parts])
        return self.hand_out(levels, ids, kinds, torch.ones(n, dtype=torch.bool, device=self.device))

    def state_dict(self) -> dict:
        return super().state_dict() | {
            "batches": self.batches,
            "buffer_levels": levels_state(self.buffer_levels),
            **{name: cpu_copy(getattr(self, name)) for name in _TENSORS},
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.batches = state["batches"]
        self.buffer_levels = levels_from_state(state["buffer_levels"], self.device)
        for name in _TENSORS:
            setattr(self, name, None if state[name] is None else state[name].to(self.device))


_TENSORS = ("buffer_ids", "buffer_learnability", "scored_learnability")
