"""The level source seam between curricula and the trainer.

A :class:`LevelSource` hands out batches of levels, one batch per ``updates_per_batch`` PPO
updates (upstream's UED loop)::

    levels, level_ids = source.levels(num_envs)   # TensorDict [n] of schema fields, LongTensor [n]
    source.train_mask                             # bool [n]: take gradients on these envs
    source.kinds                                  # long [n]: NEW, REPLAY or EDITED

Each environment plays its level for the whole batch, restarting it when an episode ends (as
jaxued's ``AutoReplayWrapper``). A :class:`ScoredLevelSource` (PLR, ACCEL) then wants the batch
scored before the next one::

    scores, max_returns = source.score_rollout(done, reward, value, advantage)   # [n, T] each
    source.update(level_ids, scores, max_returns)

Level ids are unique per source: a new or edited level gets a fresh one, a replayed level keeps
its own. ``state_dict()`` / ``load_state_dict()`` restore a source exactly (RNG states included),
tensors on the CPU. Curricula import nothing from the env or the trainer.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from tensordict import TensorDict, TensorDictBase

from ..generate import RandomLevelSampler
from ..generate.params import UEDParams
from ..params import EnvParams, StaticEnvParams

__all__ = ["NEW", "REPLAY", "EDITED", "KIND_NAMES", "LevelSource", "ScoredLevelSource", "RandomLevelSource"]

NEW, REPLAY, EDITED = 0, 1, 2
"""What a level of a batch is: fresh from the generator, replayed from a buffer, or an edited
replay level (upstream's ``UpdateState`` DR, REPLAY, MUTATE)."""
KIND_NAMES = ("new", "replay", "edited")


@runtime_checkable
class LevelSource(Protocol):
    """Batches of levels for training (see the module docstring)."""

    static: StaticEnvParams
    """Sizes of the levels it makes."""
    updates_per_batch: int
    """PPO updates each batch of levels lasts."""
    train_mask: torch.Tensor | None
    """bool ``[n]`` for the last batch (None before the first): True where the trainer takes gradients."""
    kinds: torch.Tensor | None
    """int64 ``[n]`` for the last batch (None before the first): :data:`NEW`, :data:`REPLAY` or :data:`EDITED`."""

    def levels(self, n: int) -> tuple[TensorDictBase, torch.Tensor]:
        """The next batch: ``n`` levels (TensorDict, batch ``[n]``) and their ids (int64 ``[n]``)."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@runtime_checkable
class ScoredLevelSource(LevelSource, Protocol):
    """A level source that learns from the scores of the batches it hands out (PLR, ACCEL)."""

    def score_rollout(self, done, reward, value, advantage) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores, max_returns)`` ``[n]`` of the last batch from its rollout (``[n, T]`` each)."""

    def update(self, level_ids: torch.Tensor, scores: torch.Tensor, max_returns: torch.Tensor | None = None) -> None:
        """Score the last batch (``level_ids`` as :meth:`levels` returned them)."""


def levels_state(levels: TensorDictBase | None) -> dict | None:
    """A level batch as plain CPU tensors (a copy) for a state dict."""
    if levels is None:
        return None
    return {"batch": levels.batch_size[0], "fields": levels.cpu().clone().to_dict()}


def levels_from_state(state: dict | None, device) -> TensorDictBase | None:
    if state is None:
        return None
    return TensorDict(state["fields"], batch_size=[state["batch"]]).to(device)


def cpu_copy(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else x.detach().cpu().clone()


class RandomLevelSource:
    """What every curriculum shares: fresh random levels from upstream's generator (with the no-op
    filter when the config asks), the curriculum's own random generator, level ids and the last
    batch's kinds. Fresh levels draw from ``seed``, the curriculum's own choices from ``seed + 1``."""

    updates_per_batch = 1

    def __init__(self, config, static: StaticEnvParams | str, env_params: EnvParams | None = None,
                 generator_params: UEDParams | None = None, device="cpu", seed: int = 0):
        config.validate()
        self.config = config
        self.sampler = RandomLevelSampler(
            static, env_params, generator_params, device, seed, noop_filter=config.noop_filter,
            filter_ratio=config.noop_filter_ratio, filter_steps=config.noop_filter_steps,
        )
        self.static, self.env_params, self.device = self.sampler.static, self.sampler.env_params, self.sampler.device
        self.generator = torch.Generator(self.device).manual_seed(seed + 1)
        self.next_id = 0
        self.kinds: torch.Tensor | None = None
        self.train_mask: torch.Tensor | None = None

    def manual_seed(self, seed: int) -> None:
        """Reseed both generators (the env calls this from its ``set_seed``)."""
        self.sampler.generator.manual_seed(seed)
        self.generator.manual_seed(seed + 1)

    def fresh(self, n: int) -> tuple[TensorDictBase, torch.Tensor]:
        """``n`` new random levels and fresh ids."""
        return self.sampler(n), self.new_ids(n)

    def new_ids(self, n: int) -> torch.Tensor:
        ids = torch.arange(self.next_id, self.next_id + n, device=self.device)
        self.next_id += n
        return ids

    def hand_out(self, levels, ids, kinds: torch.Tensor, train: torch.Tensor):
        """Record the batch's kinds and gradient mask; return ``(levels, ids)``."""
        self.kinds, self.train_mask = kinds, train
        return levels, ids

    def state_dict(self) -> dict:
        return {
            "sampler_rng": self.sampler.generator.get_state(),
            "rng": self.generator.get_state(),
            "next_id": self.next_id,
            "kinds": cpu_copy(self.kinds),
            "train_mask": cpu_copy(self.train_mask),
        }

    def load_state_dict(self, state: dict) -> None:
        self.sampler.generator.set_state(state["sampler_rng"])
        self.generator.set_state(state["rng"])
        self.next_id = state["next_id"]
        for name in ("kinds", "train_mask"):
            setattr(self, name, None if state[name] is None else state[name].to(self.device))


def require(ok: bool, name: str, expected: str, value) -> None:
    """Raise ``ValueError`` naming the config field's flag when ``ok`` is false."""
    if not ok:
        raise ValueError(f"--{name.replace('_', '-')} must be {expected}, got {value!r}")


def constant(n: int, value, device) -> torch.Tensor:
    """``[n]`` of one kind (int64) or one gradient flag (bool)."""
    return torch.full((n,), value, device=device, dtype=torch.bool if isinstance(value, bool) else torch.int64)
