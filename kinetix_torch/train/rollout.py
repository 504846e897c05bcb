"""The rollout carry: what a policy needs besides the observation when episodes start.

A recurrent policy in TorchRL's recurrent mode reads ``is_init`` (the first step of an episode, as
:class:`~torchrl.envs.transforms.InitTracker` marks it) and a recurrent state that starts at zero
(as the model's :class:`~torchrl.envs.transforms.TensorDictPrimer` makes it). Training rollouts and
SFL's scoring rollouts both keep them here.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase

from ..env import KinetixEnv

__all__ = ["first_carry", "start_levels", "start_episodes"]


def first_carry(td: TensorDictBase, primer) -> TensorDictBase:
    """A reset's output as the carry of new episodes everywhere: ``is_init`` set, recurrent state zero."""
    td["is_init"] = torch.ones(td.shape + (1,), dtype=torch.bool, device=td.device)
    if primer is not None:
        td.update(primer.primers.zero(td.shape).to(td.device))
    return td


def start_levels(env: KinetixEnv, primer, levels: TensorDictBase, level_ids: torch.Tensor) -> TensorDictBase:
    """Every environment starts a new episode on its row of ``levels`` (ids ``level_ids`` ``[N]``)."""
    given = TensorDict({"level": levels, "level_id": level_ids.reshape(-1, 1)}, batch_size=env.batch_size,
                       device=env.device)
    return first_carry(env.reset(given).exclude("level"), primer)


def start_episodes(env: KinetixEnv, primer, td: TensorDictBase, done: torch.Tensor) -> TensorDictBase:
    """New episodes where ``done`` ``[N]`` (a fresh or the same level, as the env restarts), with
    ``is_init`` set and the recurrent state zeroed there, so that recurrent mode replays the rollout."""
    td = env.reset_where_done(td)
    td["is_init"] = done.unsqueeze(-1)
    if primer is not None:
        for key in primer.primers.keys(True, True):
            state = td.get(key)
            td.set(key, torch.where(done.reshape(-1, *[1] * (state.ndim - 1)), 0.0, state))
    return td
