"""Level scores from a rollout, batched: every function takes per-step tensors of shape ``[B, T]``
(one row per environment, time second, as the trainer's rollouts are laid out; a trailing
singleton ``[B, T, 1]`` is accepted) and returns one value per environment ``[B]``.

``done[b, t]`` marks the last step of an episode. Only episodes that end inside the rollout count;
the steps after an environment's last ``done`` are ignored. These are upstream's (jaxued's, after
minimax) scores:

* :func:`max_returns`: the best undiscounted return of a finished episode, at least 0;
* :func:`max_mc` (MaxMC): per episode the mean of ``max_return - value`` over its steps, averaged
  over episodes;
* :func:`positive_value_loss` (PVL): per episode the mean of ``max(advantage, 0)``, averaged over
  episodes;
* :func:`solve_rates`: the share of finished episodes that reach the goal, and
  :func:`learnability` ``p (1 - p)`` of it (SFL).

MaxMC and PVL are ``-inf`` for an environment without a finished episode, so such a level never
enters a PLR buffer; a solve rate is then NaN.
"""

from __future__ import annotations

import torch

__all__ = ["episode_sums", "max_returns", "max_mc", "positive_value_loss", "solve_rates", "learnability"]


def _per_step(x: torch.Tensor) -> torch.Tensor:
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x.squeeze(-1)
    if x.ndim != 2:
        raise ValueError(f"expected per-step values of shape [B, T] or [B, T, 1], got {list(x.shape)}")
    return x


def episode_sums(done: torch.Tensor, x: torch.Tensor):
    """Per environment and episode ``k`` (``k < T``, in order): the sum of ``x`` over the episode's
    steps, its length, and whether it ended inside the rollout; each ``[B, T]``."""
    done, x = _per_step(done).bool(), _per_step(x).float()
    if done.shape != x.shape:
        raise ValueError(f"done {list(done.shape)} and values {list(x.shape)} must have the same shape")
    steps = done.shape[1]
    episode = done.long().cumsum(1) - done.long()  # episodes finished before each step
    sums = torch.zeros_like(x).scatter_add_(1, episode, x)
    lengths = torch.zeros_like(x).scatter_add_(1, episode, torch.ones_like(x))
    finished = torch.arange(steps, device=done.device) < done.sum(1, keepdim=True)
    return sums, lengths, finished


def _mean_over_episodes(per_episode: torch.Tensor, finished: torch.Tensor, empty: float) -> torch.Tensor:
    count = finished.sum(1)
    total = torch.where(finished, per_episode, 0.0).sum(1)
    return torch.where(count > 0, total / count.clamp(min=1), empty)


def max_returns(done: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
    """Best return of a finished episode, floored at 0 (upstream starts its maximum at 0)."""
    sums, _, finished = episode_sums(done, reward)
    return torch.where(finished, sums, 0.0).amax(1)


def max_mc(done: torch.Tensor, value: torch.Tensor, max_return: torch.Tensor) -> torch.Tensor:
    """MaxMC regret: ``max_return`` ``[B]`` (the level's best return seen) minus the value estimate."""
    sums, lengths, finished = episode_sums(done, max_return[:, None] - _per_step(value))
    return _mean_over_episodes(sums / lengths.clamp(min=1), finished, -torch.inf)


def positive_value_loss(done: torch.Tensor, advantage: torch.Tensor) -> torch.Tensor:
    """Positive value loss: the mean positive GAE advantage."""
    sums, lengths, finished = episode_sums(done, _per_step(advantage).clamp(min=0))
    return _mean_over_episodes(sums / lengths.clamp(min=1), finished, -torch.inf)


def solve_rates(done: torch.Tensor, goal_reached: torch.Tensor) -> torch.Tensor:
    """Share of finished episodes that reach the goal (``goal_reached`` marks the goal step; NaN
    without a finished episode)."""
    sums, _, finished = episode_sums(done, goal_reached)
    return _mean_over_episodes(sums, finished, torch.nan)


def learnability(solve_rate: torch.Tensor) -> torch.Tensor:
    """SFL's learnability ``p (1 - p)``: highest for levels solved half the time."""
    return solve_rate * (1 - solve_rate)
