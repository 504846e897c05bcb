"""Robust prioritised level replay (PLR⊥, Jiang et al. 2021) and ACCEL (Parker-Holder et al. 2022),
as upstream Kinetix runs them through jaxued (``experiments/plr.py``, ``configs/ued/plr.yaml`` and
``accel.yaml``).

Every batch is one kind, decided when it is asked for:

* **replay** (chance ``replay_prob`` once the buffer is ``minimum_fill_ratio`` full): levels drawn
  from the buffer by :meth:`LevelBuffer.weights`; the trainer takes gradients; the scores
  replace the levels' buffer scores;
* **new**: fresh random levels, played and scored *without* gradients (robust PLR; upstream's
  configs set ``exploratory_grad_updates``, which trains on them too); they enter the buffer by
  score (:meth:`LevelBuffer.insert`);
* **edited** (ACCEL only, right after every replay batch): the replayed levels, each edited
  ``num_edits`` times by upstream's mutators, then scored and inserted like new levels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from tensordict import TensorDictBase

from ..generate import mutate_levels
from . import scores as score_fns
from .buffer import LevelBuffer
from .dr import DRConfig
from .source import (
    EDITED,
    NEW,
    REPLAY,
    RandomLevelSource,
    constant,
    cpu_copy,
    levels_from_state,
    levels_state,
    require,
)

__all__ = ["PLRConfig", "ACCELConfig", "PLR", "ACCEL"]


@dataclass
class PLRConfig(DRConfig):
    """Robust PLR (upstream's ``configs/ued/plr.yaml`` and ``learning/ppo-ued.yaml``)."""

    score_function: Literal["MaxMC", "pvl"] = "MaxMC"
    """Level score: MaxMC regret or positive value loss."""
    buffer_capacity: int = 4000
    """Levels the PLR buffer holds (level_buffer_capacity)."""
    replay_prob: float = 0.5
    """Chance that a batch replays buffer levels once the buffer is full enough."""
    staleness_coeff: float = 0.3
    """Weight of staleness against score rank in the replay probabilities."""
    temperature: float = 1.0
    """Rank temperature: replay weight (1 / rank) ** (1 / temperature)."""
    minimum_fill_ratio: float = 0.5
    """Share of the buffer that must be filled before the first replay."""
    exploratory_grad_updates: bool = False
    """Also train on new and edited levels (upstream's configs: true; robust PLR: false)."""
    outer_rollout_steps: int = 4
    """PPO updates per level batch; the batch is scored over all their steps (upstream: 4 x 64 steps)."""

    def validate(self) -> None:
        super().validate()
        require(self.buffer_capacity >= 1, "buffer_capacity", ">= 1", self.buffer_capacity)
        for name in ("replay_prob", "staleness_coeff", "minimum_fill_ratio"):
            value = getattr(self, name)
            require(0.0 <= value <= 1.0, name, "in [0, 1]", value)
        require(self.temperature > 0, "temperature", "> 0", self.temperature)
        require(self.outer_rollout_steps >= 1, "outer_rollout_steps", ">= 1", self.outer_rollout_steps)


@dataclass
class ACCELConfig(PLRConfig):
    """ACCEL: PLR plus edits of replayed levels (upstream's ``configs/ued/accel.yaml``)."""

    num_edits: int = 5
    """Mutator edits applied to each replayed level to make an edited one."""

    def validate(self) -> None:
        super().validate()
        require(self.num_edits >= 1, "num_edits", ">= 1", self.num_edits)


@dataclass
class _Batch:
    kind: int
    ids: torch.Tensor
    levels: TensorDictBase
    slots: torch.Tensor | None  # buffer slots of a replay batch
    scored: bool = False


class PLR(RandomLevelSource):
    """Robust PLR over upstream's random levels; see the module docstring."""

    def __init__(self, config: PLRConfig, static, env_params=None, generator_params=None, device="cpu", seed=0):
        super().__init__(config, static, env_params, generator_params, device, seed)
        self.updates_per_batch = config.outer_rollout_steps
        self.buffer = LevelBuffer(config.buffer_capacity, config.staleness_coeff, config.temperature, self.device)
        self._batch: _Batch | None = None

    def levels(self, n: int):
        if self._batch is not None and not self._batch.scored:
            raise RuntimeError(f"{type(self).__name__}: score the last batch with update() before asking for the next")
        kind = self._next_kind()
        slots = None
        if kind == REPLAY:
            slots = self.buffer.sample(n, self.generator)
            levels, ids = self.buffer.levels[slots], self.buffer.ids[slots]
        else:
            levels, ids = self._unscored_levels(kind, n)
        self._batch = _Batch(kind, ids, levels, slots)
        train = kind == REPLAY or self.config.exploratory_grad_updates
        return self.hand_out(levels, ids, constant(n, kind, self.device), constant(n, train, self.device))

    def _next_kind(self) -> int:
        """Upstream's replay decision: a coin with ``replay_prob`` once the buffer is full enough."""
        size = self.buffer.size
        filled = (size > 0) & (size / self.buffer.capacity >= self.config.minimum_fill_ratio)
        coin = torch.rand((), generator=self.generator, device=self.device) < self.config.replay_prob
        return REPLAY if bool(filled & coin) else NEW

    def _unscored_levels(self, kind: int, n: int):
        return self.fresh(n)

    def _last_batch(self) -> _Batch:
        if self._batch is None or self._batch.scored:
            raise RuntimeError(f"{type(self).__name__}: no unscored batch; call levels(n) first")
        return self._batch

    def score_rollout(self, done, reward, value, advantage):
        """``(scores, max_returns)`` of the last batch from its rollout (``[n, T]`` each, see
        :mod:`.scores`): the configured score, and the best return, which for replayed levels
        also counts the best seen before."""
        batch = self._last_batch()
        best = score_fns.max_returns(done, reward)
        if batch.slots is not None:
            best = torch.maximum(best, self.buffer.max_returns[batch.slots])
        if self.config.score_function == "MaxMC":
            return score_fns.max_mc(done, value, best), best
        return score_fns.positive_value_loss(done, advantage), best

    def update(self, level_ids: torch.Tensor, scores: torch.Tensor, max_returns: torch.Tensor | None = None) -> None:
        """Score the last batch: replayed levels get their new scores, new and edited levels are
        offered to the buffer. ``level_ids`` must be the batch's, in order (checked: one host sync)."""
        batch = self._last_batch()
        name = type(self).__name__
        ids = level_ids.to(self.device)
        if ids.shape != batch.ids.shape or not torch.equal(ids, batch.ids):
            raise ValueError(f"{name}.update: level_ids must be the last batch's {batch.ids.shape[0]} ids, in order")
        scores = scores.to(self.device)
        if scores.shape != ids.shape or bool(torch.isnan(scores).any()):
            raise ValueError(f"{name}.update: scores must be {list(ids.shape)} without NaN, got {list(scores.shape)}")
        if max_returns is None:
            max_returns = torch.full_like(scores, -torch.inf)
        if batch.kind == REPLAY:
            self.buffer.update(batch.slots, scores, max_returns.to(self.device))
        else:
            self.buffer.insert(batch.levels, batch.ids, scores, max_returns.to(self.device))
        batch.scored = True

    def state_dict(self) -> dict:
        batch = self._batch
        saved_batch = None if batch is None else {
            "kind": batch.kind, "ids": cpu_copy(batch.ids), "levels": levels_state(batch.levels),
            "slots": cpu_copy(batch.slots), "scored": batch.scored,
        }
        return super().state_dict() | {"buffer": self.buffer.state_dict(), "batch": saved_batch}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.buffer.load_state_dict(state["buffer"])
        saved = state["batch"]
        self._batch = None if saved is None else _Batch(
            saved["kind"], saved["ids"].to(self.device), levels_from_state(saved["levels"], self.device),
            None if saved["slots"] is None else saved["slots"].to(self.device), saved["scored"],
        )


class ACCEL(PLR):
    """PLR whose every replay batch is followed by a batch of its levels, edited."""

    config: ACCELConfig

    def _next_kind(self) -> int:
        kind = super()._next_kind()
        return EDITED if self._batch is not None and self._batch.kind == REPLAY else kind

    def _unscored_levels(self, kind: int, n: int):
        if kind == NEW:
            return self.fresh(n)
        parents = self._batch.levels
        if parents.batch_size[0] != n:
            raise ValueError(f"ACCEL: edits the last replay batch of {parents.batch_size[0]} levels, asked for {n}")
        edited = mutate_levels(parents, self.generator, self.static, self.config.num_edits, self.env_params,
                               self.sampler.generator_params)
        return edited, self.new_ids(n)
