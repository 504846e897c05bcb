"""PLR's level buffer (jaxued's ``LevelSampler`` with rank prioritisation), batched on the device.

Slots ``0 .. size-1`` hold levels with a score, the id the curriculum gave them, the best return
seen on them (MaxMC) and a timestamp: the episode count when the level was last inserted or
replayed. Every replayed level and every insertion attempt counts one episode.

Replay weights mix score ranks and staleness::

    P = (1 - staleness_coeff) * P_score + staleness_coeff * P_stale
    P_score(i) ∝ (1 / rank(i)) ** (1 / temperature)       rank 1 = highest score
    P_stale(i) ∝ episode_count - timestamp(i)             (uniform while all are 0)

Batched where jaxued loops over a batch one level at a time: a batch of replays is drawn from the
weights at its start (jaxued re-weights after each draw, which changes only staleness), and a
batch of candidates meets the buffer in one step: the k-th best candidate replaces the k-th
lowest-weight entry (empty slots first) where its score is higher (jaxued: each candidate in turn
against the current lowest-weight entry). Timestamps and episode counts end as jaxued's.
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase

from .source import cpu_copy, levels_from_state, levels_state

__all__ = ["LevelBuffer"]


class LevelBuffer:
    def __init__(self, capacity: int, staleness_coeff: float, temperature: float, device="cpu"):
        self.capacity, self.staleness_coeff, self.temperature = capacity, staleness_coeff, temperature
        self.device = torch.device(device)
        self.levels: TensorDictBase | None = None  # allocated by the first insertion
        self.scores = torch.full((capacity,), -torch.inf, device=self.device)
        self.max_returns = torch.full((capacity,), -torch.inf, device=self.device)
        self.ids = torch.full((capacity,), -1, dtype=torch.int64, device=self.device)
        self.timestamps = torch.zeros(capacity, dtype=torch.int64, device=self.device)
        self.size = torch.zeros((), dtype=torch.int64, device=self.device)
        self.episode_count = torch.zeros((), dtype=torch.int64, device=self.device)

    def valid(self) -> torch.Tensor:
        return torch.arange(self.capacity, device=self.device) < self.size

    def score_weights(self) -> torch.Tensor:
        valid = self.valid()
        order = torch.sort(torch.where(valid, self.scores, -torch.inf), descending=True, stable=True).indices
        ranks = torch.empty_like(order)
        ranks[order] = torch.arange(1, self.capacity + 1, device=self.device)
        weights = torch.where(valid, (1.0 / ranks) ** (1.0 / self.temperature), 0.0)
        return weights / weights.sum().clamp(min=torch.finfo(weights.dtype).tiny)

    def staleness_weights(self) -> torch.Tensor:
        valid = self.valid()
        staleness = torch.where(valid, self.episode_count - self.timestamps, 0).float()
        total = staleness.sum()
        return torch.where(total > 0, staleness / total.clamp(min=1), valid / self.size.clamp(min=1))

    def weights(self) -> torch.Tensor:
        """Replay probability of every slot ``[capacity]`` (0 for empty slots)."""
        return (1 - self.staleness_coeff) * self.score_weights() + self.staleness_coeff * self.staleness_weights()

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` slots drawn with replacement by :meth:`weights`; they become the freshest."""
        slots = torch.multinomial(self.weights(), n, replacement=True, generator=generator)
        stamps = self.episode_count + torch.arange(1, n + 1, device=self.device)
        self.timestamps.scatter_reduce_(0, slots, stamps, reduce="amax", include_self=False)
        self.episode_count += n
        return slots

    def insert(self, levels: TensorDictBase, ids: torch.Tensor, scores: torch.Tensor,
               max_returns: torch.Tensor) -> torch.Tensor:
        """Offer ``m`` candidate levels; returns which were inserted (bool ``[m]``)."""
        m = scores.shape[0]
        k = min(m, self.capacity)
        if self.levels is None:
            self.levels = levels[torch.zeros(self.capacity, dtype=torch.int64, device=self.device)]
        valid = self.valid()
        slots = torch.sort(torch.where(valid, self.weights(), -1.0), stable=True).indices[:k]
        chosen = torch.sort(scores, descending=True, stable=True).indices[:k]
        replace = scores[chosen] > self.scores[slots]
        new_values = (
            (self.scores, scores[chosen]),
            (self.max_returns, max_returns[chosen]),
            (self.ids, ids[chosen]),
            (self.timestamps, self.episode_count + chosen + 1),
        )
        for store, new in new_values:
            store[slots] = torch.where(replace, new, store[slots])
        self.levels[slots] = torch.where(replace, levels[chosen], self.levels[slots])
        self.size = (self.size + (replace & ~valid[slots]).sum()).clamp(max=self.capacity)
        self.episode_count += m
        inserted = torch.zeros(m, dtype=torch.bool, device=self.device)
        inserted[chosen] = replace
        return inserted

    def update(self, slots: torch.Tensor, scores: torch.Tensor, max_returns: torch.Tensor) -> None:
        """New scores of replayed slots (the last of repeated slots wins); best returns only grow."""
        position = torch.arange(slots.shape[0], device=self.device)
        winner = torch.full((self.capacity,), -1, dtype=torch.int64, device=self.device)
        winner = winner.scatter_reduce(0, slots, position, reduce="amax")
        hit, pick = winner >= 0, winner.clamp(min=0)
        self.scores = torch.where(hit, scores[pick], self.scores)
        self.max_returns = torch.where(hit, torch.maximum(self.max_returns, max_returns[pick]), self.max_returns)

    def stats(self) -> dict[str, torch.Tensor]:
        """Logging: size, episode count, mean / max / replay-weighted score (tensors)."""
        valid = self.valid()
        scores = torch.where(valid, self.scores, 0.0)
        return {
            "size": self.size,
            "episode_count": self.episode_count,
            "mean_score": scores.sum() / self.size.clamp(min=1),
            "max_score": self.scores.max(),
            "weighted_score": (scores * self.weights()).sum(),
        }

    def state_dict(self) -> dict:
        state = {name: cpu_copy(getattr(self, name)) for name in _TENSORS}
        return state | {"levels": levels_state(self.levels)}

    def load_state_dict(self, state: dict) -> None:
        for name in _TENSORS:
            setattr(self, name, state[name].to(self.device))
        self.levels = levels_from_state(state["levels"], self.device)


_TENSORS = ("scores", "max_returns", "ids", "timestamps", "size", "episode_count")
