"""Curricula in the training loop (the level sources themselves are :mod:`kinetix_torch.curricula`).

``--curriculum dr``: the training env draws fresh random levels from the DR source whenever an
episode ends, as upstream's PPO on random levels does.

``--curriculum plr|accel|sfl``: the trainer hands out levels in batches, as upstream's UED loop
does (:class:`LevelBatches`):

1. every ``source.updates_per_batch`` updates, ``source.levels(num_envs)`` gives one level per
   env; every env starts its level with a fresh carry (``is_init``, zero recurrent state, episode
   counters) and replays it whenever an episode ends (the env's ``restart="same"``);
2. every update computes GAE, and takes gradients only when ``source.train_mask`` is set (robust
   PLR plays new levels to score them, without training on them); its frames count either way;
3. after the batch's last update, a scored source (PLR, ACCEL) scores the batch from its rollouts
   joined along time (``[N, k x T]``: done, reward, value, advantage).

SFL's scoring rollouts are :class:`PolicySolveRates`: the current stochastic policy plays each
candidate level in a second env of its own.
"""

from __future__ import annotations

import dataclasses

import torch
from tensordict import TensorDictBase
from torchrl.envs.utils import ExplorationType, set_exploration_type, step_mdp

from ..curricula import KIND_NAMES, SFL, LevelBuffer, LevelSource, ScoredLevelSource, make_level_source, solve_rates
from ..env import KinetixEnv
from ..models import ActorCritic
from ..params import EnvParams, StaticEnvParams
from .config import TrainConfig
from .distributed import Shard
from .rollout import start_episodes, start_levels

__all__ = ["BATCHED_CURRICULA", "SOURCE_SEED_OFFSET", "make_source", "LevelBatches", "PolicySolveRates"]

BATCHED_CURRICULA = ("plr", "accel", "sfl")
"""Curricula whose levels the trainer hands out in batches (DR's come from the env)."""

SOURCE_SEED_OFFSET = 1000
"""A rank's level source is seeded with the rank's seed plus this (apart from its env's seeds)."""


def make_source(config: TrainConfig, static: StaticEnvParams, env_params: EnvParams, device, shard: Shard = Shard(),
                solve_rates=None) -> LevelSource:
    """This rank's level source for ``config.curriculum``. Under torchrun each rank has its own, and
    SFL's ``sfl_scale`` is divided by the number of ranks, so that together they score and keep
    as many levels as one process would."""
    options = config.curriculum_config
    if config.curriculum == "sfl":
        if options.scoring_steps < env_params.max_timesteps:
            raise ValueError(
                f"--scoring-steps ({options.scoring_steps}) must be at least the episode length "
                f"(--max-timesteps, {env_params.max_timesteps}), so that every scored level finishes an episode"
            )
        options = dataclasses.replace(options, sfl_scale=options.sfl_scale / shard.world_size)
    return make_level_source(config.curriculum, options, static, env_params=env_params, device=device,
                             seed=shard.seed(config.seed) + SOURCE_SEED_OFFSET, solve_rates=solve_rates)


class LevelBatches:
    """The trainer's side of a batched level source (see the module docstring)."""

    def __init__(self, source: LevelSource, num_envs: int, device):
        self.source, self.num_envs, self.device = source, num_envs, torch.device(device)
        self.updates_done = 0
        """Updates done on the current batch (0: the next update starts a new one)."""
        self.level_ids: torch.Tensor | None = None
        self.train = True
        """Whether the current batch's updates take gradients."""
        self.rollout: dict[str, torch.Tensor] | None = None
        """The current batch's done, reward, value and advantage so far, ``[N, t]`` each (scored sources)."""

    @property
    def starts_batch(self) -> bool:
        return self.updates_done == 0

    def next_levels(self) -> tuple[TensorDictBase, torch.Tensor]:
        """The next batch's levels and ids, one per env."""
        levels, ids = self.source.levels(self.num_envs)
        mask = self.source.train_mask
        self.train = bool(mask.any())
        if self.train and not bool(mask.all()):
            raise ValueError(f"{type(self.source).__name__}: its train_mask mixes trained and untrained envs in one "
                             "batch; the trainer takes gradients on whole batches")
        self.level_ids = ids
        return levels, ids

    def record(self, batch: TensorDictBase) -> None:
        """After an update's GAE: keep what scoring needs, and score the batch after its last update."""
        self.updates_done += 1
        if isinstance(self.source, ScoredLevelSource):
            parts = {"done": batch["next", "done"], "reward": batch["next", "reward"],
                     "value": batch["state_value"], "advantage": batch["advantage"]}
            parts = {name: value.reshape(self.num_envs, -1) for name, value in parts.items()}
            if self.rollout is not None:
                parts = {name: torch.cat([self.rollout[name], value], dim=1) for name, value in parts.items()}
            self.rollout = parts
        if self.updates_done == self.source.updates_per_batch:
            if self.rollout is not None:
                scores, max_returns = self.source.score_rollout(**self.rollout)
                self.source.update(self.level_ids, scores, max_returns)
            self.updates_done, self.rollout = 0, None

    def stats(self) -> dict[str, torch.Tensor]:
        """The update's curriculum metrics (scalar tensors): whether it trained, the share of each
        kind of level in the batch, and the state of the source's buffer."""
        source = self.source
        stats = {"curriculum/trained": torch.tensor(float(self.train), device=self.device)}
        for kind, name in enumerate(KIND_NAMES):
            stats[f"curriculum/{name}_share"] = (source.kinds == kind).float().mean()
        buffer = getattr(source, "buffer", None)
        if isinstance(buffer, LevelBuffer):
            held = buffer.stats()
            stats["curriculum/buffer_fill"] = held["size"].float() / buffer.capacity
            for name in ("mean_score", "max_score", "weighted_score"):
                stats[f"curriculum/buffer_{name}"] = held[name].float()
        if isinstance(source, SFL) and source.buffer_learnability is not None:
            stats["curriculum/buffer_learnability"] = source.buffer_learnability.mean()
            stats["curriculum/sampled_learnability"] = source.scored_learnability.mean()
        return stats

    def state_dict(self) -> dict:
        """The source's state and the current batch's progress, tensors on the CPU."""
        return {
            "source": self.source.state_dict(),
            "updates_done": self.updates_done,
            "level_ids": None if self.level_ids is None else self.level_ids.cpu(),
            "train": self.train,
            "rollout": None if self.rollout is None else {k: v.cpu() for k, v in self.rollout.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        device = self.device
        self.source.load_state_dict(state["source"])
        self.updates_done, self.train = state["updates_done"], state["train"]
        self.level_ids = None if state["level_ids"] is None else state["level_ids"].to(device)
        self.rollout = None if state["rollout"] is None else {k: v.to(device) for k, v in state["rollout"].items()}


class PolicySolveRates:
    """SFL's ``solve_rates(levels, steps)`` for the trainer's current policy: each of the ``B``
    levels plays in an env of its own (``B`` envs like ``like``, replaying their level), the
    stochastic policy acts for ``steps`` steps, and each level's solve rate is its share of
    finished episodes that reached the goal."""

    def __init__(self, actor_critic: ActorCritic, like: KinetixEnv):
        self.actor_critic, self.like = actor_critic, like
        self.primer = actor_critic.make_primer()
        self.env: KinetixEnv | None = None

    def _env(self, count: int) -> KinetixEnv:
        if self.env is None or self.env.num_envs != count:
            like = self.like
            self.env = KinetixEnv(
                num_envs=count, restart="same", static_env_params=like.static_env_params, env_params=like.env_params,
                observation_type=like.observation_type, action_type=like.action_type, pixel_format=like.pixel_format,
                device=like.device, backend=like.backend, seed=0,
            )
        return self.env

    @torch.no_grad()
    def __call__(self, levels: TensorDictBase, steps: int) -> torch.Tensor:
        count = levels.batch_size[0]
        env, policy = self._env(count), self.actor_critic.policy
        td = start_levels(env, self.primer, levels, torch.arange(count, device=env.device))
        done, goal_reached = [], []
        with set_exploration_type(ExplorationType.RANDOM):
            for _ in range(steps):
                td = env.step(policy(td))
                done.append(td["next", "done"].squeeze(-1))
                goal_reached.append(td["next", "goal_reached"].squeeze(-1))
                td = start_episodes(env, self.primer, step_mdp(td, keep_other=False, exclude_action=True), done[-1])
        return solve_rates(torch.stack(done, dim=1), torch.stack(goal_reached, dim=1))
