"""One seed makes an env reproducible: level draws from a bank, a level sampler, random actions."""

from __future__ import annotations

import torch

from kinetix_torch import make_env
from kinetix_torch.generate import RandomLevelSampler
from kinetix_torch.params import static_params_for_size

STEPS = 6


def _bank_env(levels_dir):
    files = sorted((levels_dir / "s").glob("*.json"))[:4]
    return make_env("symbolic_flat", "multi_discrete", "s", levels=files, num_envs=8, max_timesteps=3)


def _sampler_env():
    sampler = RandomLevelSampler(static_params_for_size("s"), seed=123)
    return make_env("symbolic_flat", "continuous", "s", sampler=sampler, num_envs=4, max_timesteps=3)


def _rollout(env, seed):
    env.set_seed(seed)
    return env.rollout(STEPS, break_when_any_done=False)


def _equal(a, b):
    return all(torch.equal(a.get(k), b.get(k)) for k in a.keys(True, True))


def test_same_seed_same_rollout_with_a_bank(levels_dir):
    env = _bank_env(levels_dir)
    first, again, other = _rollout(env, 7), _rollout(env, 7), _rollout(env, 8)
    assert _equal(first, again)
    assert not torch.equal(first["action"], other["action"])


def test_same_seed_same_rollout_with_a_sampler():
    env = _sampler_env()
    first = _rollout(env, 3)
    env.rollout(2)  # consume levels and randomness in between
    again = _rollout(env, 3)
    assert _equal(first, again)
    other = _rollout(env, 4)
    assert not torch.equal(first["observation"], other["observation"])


def test_random_actions_respect_the_spec(levels_dir):
    env = _bank_env(levels_dir)
    for _ in range(20):
        assert env.action_spec.is_in(env.rand_action()["action"])


def test_goal_reached_and_the_outcome_reward_are_shaped_like_done(levels_dir):
    files = [levels_dir / "s" / "h4_thrust_aim.json"]
    env = make_env("symbolic_flat", "multi_discrete", "s", levels=files, num_envs=16, dense_reward_scale=0.0, seed=0)
    out = env.rollout(40, break_when_any_done=False)
    assert out["next", "goal_reached"].shape == out["next", "done"].shape == out["next", "outcome_reward"].shape
    outcome = out["next", "outcome_reward"]
    assert set(outcome.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert torch.equal(out["next", "goal_reached"], outcome > 0)
    assert torch.equal(out["next", "reward"], outcome)  # no shaping: the reward is the outcome


def test_bad_reset_masks_and_closed_envs_are_refused(levels_dir):
    import pytest
    from tensordict import TensorDict

    env = _bank_env(levels_dir)
    env.reset()
    with pytest.raises(ValueError, match="'_reset' must be a bool tensor of 8 entries"):
        env.reset(TensorDict({"_reset": torch.ones(8, 1)}, batch_size=[8]))
    td = env.rand_action(env.reset())
    env.close()
    with pytest.raises(RuntimeError, match="closed; call reset"):
        env.step(td)
    env.step(env.rand_action(env.reset()))  # reset starts it again, as TorchRL's batched envs


def test_max_timesteps_must_be_a_positive_int(levels_dir):
    import pytest

    files = sorted((levels_dir / "s").glob("*.json"))[:1]
    for bad in (-3, 2.5, 0):
        with pytest.raises(ValueError, match="max_timesteps"):
            make_env("symbolic_flat", "multi_discrete", "s", levels=files, num_envs=2, max_timesteps=bad)


def test_a_sampler_of_another_size_is_refused_at_construction():
    import pytest

    sampler = RandomLevelSampler(static_params_for_size("m"), seed=0)
    with pytest.raises(ValueError, match="level sampler makes levels of 6 polygons"):
        make_env("symbolic_flat", "continuous", "s", sampler=sampler, num_envs=4)
