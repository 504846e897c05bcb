"""KinetixEnv: upstream's trajectories step by step, TorchRL specs and collectors, resets, bad input.

JAX compiles the engine once per (static sizes, batch size), which dominates the runtime here: every
env in this file runs with ``BATCH`` environments, so each size compiles once per process.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.collectors import Collector, MultiSyncCollector
from torchrl.envs.utils import check_env_specs

import kinetix_torch
from kinetix_torch import schema
from kinetix_torch.actions import ACTION_TYPES
from kinetix_torch.env import KinetixEnv
from kinetix_torch.levels import Level, LevelFormatError, load_level
from kinetix_torch.observations import OBSERVATION_TYPES, observe
from kinetix_torch.params import EnvParams, StaticEnvParams, static_params_for_size

BATCH = 32
STATIC_S = static_params_for_size("s")

SYNC_TOLERANCE = 1e-3
"""A trajectory is compared while every body position, rotation and velocity is within this of
upstream's; after that the physics has diverged (chaotic contacts) and the comparison stops."""
REWARD_ATOL = 1e-5
DISTANCE_ATOL = 2e-4
OBS_ATOL = 1e-3
"""Observation features move with the state, so they get the state's sync tolerance."""
MIN_COMPARED = 0.9
"""Share of recorded steps that must be compared (before divergence), so the test cannot pass empty."""

BODY_KEYS = [
    f"{body}.{field}"
    for body in ("polygon", "circle")
    for field in ("position", "rotation", "velocity", "angular_velocity")
]


# ------------------------------------------------------------------------------------------------
# Upstream trajectories


def _golden_group(golden_dir, group: str, size: str, action_type: str):
    sidecars = sorted((golden_dir / group / size).glob("*.json"))
    assert sidecars, f"no golden cases in {golden_dir / group / size}"
    meta = json.loads(sidecars[0].read_text())
    static = StaticEnvParams.from_dict(meta["static_env_params"])
    params = EnvParams.from_dict(meta["env_params"])
    trajs = [np.load(s.with_name(f"{s.stem}.traj.{action_type}.npz")) for s in sidecars]
    return [s.stem for s in sidecars], static, params, trajs


def _stacked(trajs, key: str, rows: int) -> np.ndarray:
    """``key`` of every trajectory, time axis padded (repeating the last row) to ``rows``: ``(K, rows, ...)``."""
    out = []
    for tr in trajs:
        value = tr[key]
        out.append(np.concatenate([value, np.repeat(value[-1:], rows - len(value), axis=0)]))
    return np.stack(out)


def _run_against_upstream(golden_dir, group: str, size: str, action_type: str) -> tuple[int, int]:
    """Drive an env (cases tiled to ``BATCH``) with upstream's recorded actions and compare every
    step of every case while in sync. Returns (steps compared, steps recorded)."""
    names, static, params, trajs = _golden_group(golden_dir, group, size, action_type)
    cases = len(trajs)
    tile = [i % cases for i in range(BATCH)]
    steps = np.array([int(t["num_steps"]) for t in trajs])
    horizon = int(steps.max())
    state_keys = [k for k in trajs[0].files if k.startswith("state.")]
    init = {k[len("state.") :]: np.stack([trajs[i][k][0] for i in tile]) for k in state_keys}
    init = schema.to_tensordict(init, (BATCH,))
    env = KinetixEnv(
        sampler=lambda n: init, num_envs=BATCH, observation_type="symbolic_entity", action_type=action_type,
        static_env_params=static, env_params=params,
    )
    td = env.reset()
    actions = torch.from_numpy(_stacked(trajs, "action", horizon)[tile])
    ref = {k: _stacked(trajs, k, horizon + 1) for k in trajs[0].files if k.startswith(("state.", "obs.symbolic"))}
    ref.update({k: _stacked(trajs, k, horizon) for k in ("reward", "done", "info.GoalR", "info.distance")})
    in_sync = np.ones(cases, bool)
    compared = 0
    for t in range(horizon):
        td["action"] = actions[:, t]
        out = env.step(td)["next"]
        td = out
        state = {k: v[:cases].numpy() for k, v in schema.tensordict_to_flat_tensors(env.state).items()}
        drift = [np.abs(state[k] - ref[f"state.{k}"][:, t + 1]).reshape(cases, -1) for k in BODY_KEYS]
        drift = np.concatenate(drift, axis=1).max(-1, initial=0.0)
        in_sync &= drift <= SYNC_TOLERANCE
        rows = in_sync & (t < steps)
        if not rows.any():
            continue
        compared += int(rows.sum())
        where = f"{group}/{size} {action_type} step {t}, cases {[names[i] for i in np.flatnonzero(rows)][:3]}..."

        def same(got, key, atol=None, row=None):
            got, expected = got[:cases][rows], ref[key][:, t + 1 if row is None else row][rows]
            if atol is None:
                np.testing.assert_array_equal(got, expected, err_msg=f"{where}: {key}")
            else:
                np.testing.assert_allclose(got, expected, rtol=0, atol=atol, err_msg=f"{where}: {key}")

        same(out["reward"][:, 0].numpy(), "reward", REWARD_ATOL, row=t)
        same(out["terminated"][:, 0].numpy(), "done", row=t)  # no time limit within 64 steps
        same(out["done"][:, 0].numpy(), "done", row=t)
        assert not out["truncated"].any(), where
        same(out["goal_reached"][:, 0].numpy(), "info.GoalR", row=t)
        same(out["distance"].numpy(), "info.distance", DISTANCE_ATOL, row=t)
        same(observe(env.state, static, params, "symbolic_flat").numpy(), "obs.symbolic_flat", OBS_ATOL)
        for key, value in out["observation"].items():
            value = value.numpy()
            same(value, f"obs.symbolic_entity.{key}", OBS_ATOL if value.dtype == np.float32 else None)
    return compared, int(steps.sum())


@pytest.mark.parametrize(
    "size, groups", [("s", ("handmade", "random")), ("m", ("handmade", "random")), ("l", ("random",))]
)
def test_env_follows_upstream_trajectories(golden_dir, size, groups):
    compared = recorded = 0
    for group in groups:
        for action_type in ("multi_discrete", "continuous"):
            c, r = _run_against_upstream(golden_dir, group, size, action_type)
            compared, recorded = compared + c, recorded + r
    assert compared >= MIN_COMPARED * recorded, f"only {compared} of {recorded} steps compared before divergence"


# ------------------------------------------------------------------------------------------------
# Specs and collectors


@pytest.fixture(scope="module")
def handmade_s(levels_dir):
    return [load_level(p) for p in sorted((levels_dir / "s").glob("*.json"))]


@pytest.mark.parametrize("observation_type", OBSERVATION_TYPES)
def test_check_env_specs(handmade_s, observation_type):
    for action_type in ACTION_TYPES:
        env = kinetix_torch.make_env(observation_type, action_type, "s", levels=handmade_s, num_envs=BATCH, seed=0)
        check_env_specs(env, seed=0)


def _short_episode_env(levels_dir):
    """Blind observations (one-hot timestep) and 3-step episodes: resets are visible in the data."""
    levels = sorted((levels_dir / "s").glob("*.json"))[:3]
    return kinetix_torch.make_env("blind", "discrete", "s", levels=levels, num_envs=BATCH, max_timesteps=3)


def _check_auto_reset(batch) -> None:
    timestep = batch["observation"].argmax(-1)
    next_timestep = batch["next", "observation"].argmax(-1)
    truncated, terminated = batch["next", "truncated"][..., 0], batch["next", "terminated"][..., 0]
    assert torch.equal(truncated, (next_timestep == 3) & ~terminated)
    assert torch.equal(batch["next", "done"][..., 0], truncated | terminated)
    assert torch.equal(next_timestep, timestep + 1)
    # After a truncated step the collector resets: the next row starts again at timestep 0.
    after = timestep.reshape(-1, BATCH)[1:][truncated.reshape(-1, BATCH)[:-1]]
    assert len(after) and (after == 0).all()


def test_sync_collector_auto_resets(levels_dir):
    env = _short_episode_env(levels_dir)
    collector = Collector(env, None, frames_per_batch=8 * BATCH, total_frames=8 * BATCH)
    batches = list(collector)
    collector.shutdown()
    assert len(batches) == 1 and batches[0].shape == (BATCH, 8)
    _check_auto_reset(batches[0].transpose(0, 1))


def _make_collector_env():
    from conftest import require_shared

    return _short_episode_env(require_shared("levels"))


def test_multi_sync_collector(levels_dir):
    collector = MultiSyncCollector(
        [_make_collector_env, _make_collector_env],
        None,
        frames_per_batch=8 * BATCH,
        total_frames=16 * BATCH,
        cat_results="stack",
    )
    try:
        batches = list(collector)
    finally:
        collector.shutdown()
    assert len(batches) == 2
    for batch in batches:
        assert batch["next", "reward"].isfinite().all()
        assert batch["observation"].sum(-1).eq(1).all()


# ------------------------------------------------------------------------------------------------
# Resets


def test_partial_reset_touches_only_masked_envs(handmade_s):
    env = KinetixEnv(handmade_s, num_envs=BATCH, observation_type="blind", action_type="continuous", seed=1)
    env.reset()
    bank = env.level_bank
    assert bank.shape == (len(handmade_s),)
    env.rand_step(env.reset())
    before = env.state.clone()
    assert (before["timestep"] == 1).all()
    mask = torch.zeros(BATCH, 1, dtype=torch.bool)
    mask[::3] = True
    out = env.reset(TensorDict({"_reset": mask}, batch_size=[BATCH]))
    after = env.state
    reset_rows, kept_rows = mask[:, 0], ~mask[:, 0]
    assert (after["timestep"][reset_rows] == 0).all() and (after["timestep"][kept_rows] == 1).all()
    for key, value in schema.tensordict_to_flat_tensors(after).items():
        assert torch.equal(value[kept_rows], before.get(tuple(key.split(".")))[kept_rows]), key
    # Reset rows hold bank levels, drawn among all of them.
    positions = after["polygon", "position"][reset_rows]
    matches = (positions[:, None] == bank["polygon", "position"][None]).flatten(2).all(-1)
    assert matches.any(-1).all()
    assert out["observation"][reset_rows, 0].all()


def test_sampled_levels_go_to_reset_envs_only(handmade_s):
    bank = kinetix_torch.make_env("blind", "continuous", "s", levels=handmade_s).level_bank
    requested = []

    def sampler(count: int):
        requested.append(count)
        return bank[torch.arange(count) % bank.shape[0]]

    def reset(env, rows):
        mask = torch.zeros(BATCH, 1, dtype=torch.bool)
        mask[rows] = True
        env.reset(TensorDict({"_reset": mask}, batch_size=[BATCH]))

    # On demand: each reset asks for exactly the levels it needs.
    options = dict(num_envs=BATCH, observation_type="blind", action_type="continuous", static_env_params=STATIC_S)
    env = KinetixEnv(sampler=sampler, sampler_chunk=1, **options)
    env.rand_step(env.reset())
    reset(env, [3, 7])
    assert requested == [BATCH, 2]
    assert env.state["timestep"].tolist() == [0 if i in (3, 7) else 1 for i in range(BATCH)]
    # In chunks (default num_envs): later resets use the unused levels of the last call, each once.
    requested.clear()
    env = KinetixEnv(sampler=sampler, **options)
    env.rand_step(env.reset())
    reset(env, [3, 7])
    reset(env, [5])
    assert requested == [BATCH, BATCH]
    got = env.state["polygon", "position"]
    for row, level in ((3, 0), (7, 1), (5, 2)):
        assert torch.equal(got[row], bank["polygon", "position"][level])
    assert env.state["timestep"].tolist() == [0 if i in (3, 5, 7) else 1 for i in range(BATCH)]


def test_truncation_at_max_timesteps(handmade_s):
    env = kinetix_torch.make_env("blind", "multi_discrete", "s", levels=handmade_s[:1], num_envs=BATCH, max_timesteps=2)
    td = env.reset()
    for step in (1, 2):
        td["action"] = torch.zeros(BATCH, 6, dtype=torch.int64)
        out = env.step(td)["next"]
        assert out["truncated"].all() == (step == 2) and out["done"].all() == (step == 2)
        td = out
    assert (env.state["last_distance"] == -1).all(), "a done step leaves last_distance unset, as upstream"


def test_nan_state_terminates_without_crashing(handmade_s):
    bank = kinetix_torch.make_env("blind", "continuous", "s", levels=handmade_s).level_bank.clone()
    options = dict(observation_type="symbolic_flat", action_type="continuous", static_env_params=STATIC_S, seed=0)
    env = KinetixEnv(bank, num_envs=BATCH, **options)
    env.level_bank["polygon", "velocity"][0, 4] = float("nan")  # past the level checks, which reject NaN
    env.reset()
    nan_rows = env.state["polygon", "velocity"].isnan().flatten(1).any(-1)
    assert nan_rows.any() and not nan_rows.all()
    out = env.rand_step()["next"]
    assert torch.equal(out["terminated"][:, 0][nan_rows], torch.ones(int(nan_rows.sum()), dtype=torch.bool))
    assert out["reward"].isfinite().all() and out["observation"].isfinite().all()
    collector = Collector(env, None, frames_per_batch=4 * BATCH, total_frames=4 * BATCH)
    batch = next(iter(collector))
    collector.shutdown()
    assert batch["next", "terminated"].any() and batch["next", "reward"].isfinite().all()


# ------------------------------------------------------------------------------------------------
# Bad input


def test_bad_actions_are_rejected(handmade_s):
    env = kinetix_torch.make_env("blind", "multi_discrete", "s", levels=handmade_s, num_envs=BATCH)
    td = env.reset()
    for action, message in [
        (torch.zeros(BATCH, 5, dtype=torch.int64), r"shape \(32, 5\), expected \(32, 6\)"),
        (torch.zeros(BATCH, 6), "expected an integer dtype"),
        (torch.full((BATCH, 6), 3), "out of range"),
    ]:
        td["action"] = action
        with pytest.raises(ValueError, match=message):
            env.step(td)


def test_bad_levels_are_rejected(levels_dir, handmade_s):
    with pytest.raises(ValueError, match="non-size static params: frame_skip"):
        other = handmade_s[1]
        KinetixEnv([handmade_s[0], Level(other.state, other.static.replace(frame_skip=1), other.env_params, "other")])
    big = load_level(sorted((levels_dir / "m").glob("*.json"))[0])
    with pytest.raises(LevelFormatError, match="level too large"):
        KinetixEnv([handmade_s[0], big], static_env_params=STATIC_S)
    bank = kinetix_torch.make_env("blind", "continuous", "m", levels=[big]).level_bank
    with pytest.raises(ValueError, match="field 'polygon.position' has shape"):
        KinetixEnv(bank, static_env_params=STATIC_S)
    env = KinetixEnv(sampler=lambda n: bank.expand(n), num_envs=2, static_env_params=STATIC_S)
    with pytest.raises(ValueError, match="level sampler output"):
        env.reset()
    with pytest.raises(ValueError, match="exactly one of levels= and sampler="):
        KinetixEnv()
    with pytest.raises(ValueError, match="unknown observation_type"):
        kinetix_torch.make_env("rgb", levels=handmade_s)


def test_make_env_uses_upstream_option_names(handmade_s):
    env = kinetix_torch.make_env(
        observation_type="symbolic_flat_padded", action_type="discrete", env_size="m", levels=handmade_s,
        num_envs=4, dense_reward_scale=0.0, frame_skip=1,
    )
    assert env.static_env_params == static_params_for_size("m").replace(frame_skip=1)
    assert env.env_params.dense_reward_scale == 0.0
    assert env.action_spec.space.n == 11 and env.batch_size == (4,)
