"""Curricula in training: the env's level ids, given levels and replays; every curriculum trained
end to end through ``train``; exact resumes of curriculum runs; the pretrain and finetune presets.

Runs are tiny (size S, 8 envs x 8 steps, an MLP on ``symbolic_flat``, episodes of 16 steps) so that
episodes end, PLR batches span two updates and SFL refreshes every two updates.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict

from kinetix_torch import cli
from kinetix_torch.commands import finetune, pretrain
from kinetix_torch.curricula import SFLConfig
from kinetix_torch.env import KinetixEnv, make_env
from kinetix_torch.params import static_params_for_size
from kinetix_torch.train import checkpoint as ckpt
from kinetix_torch.train.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
STATIC_S = static_params_for_size("s")
N = 4  # envs of the env tests

TINY = [
    "--env-size", "s", "--obs", "symbolic_flat", "--num-envs", "8", "--num-steps", "8", "--num-minibatches", "2",
    "--update-epochs", "1", "--width", "32", "--depth", "1", "--max-timesteps", "16", "--device", "cpu",
    "--num-threads", "1", "--no-progress", "--no-tensorboard", "--no-noop-filter", "--checkpoint-every", "1",
]
UPDATES = 6
FRAMES_PER_UPDATE = 64
CURRICULUM_FLAGS = {
    "dr": [],
    "plr": ["--buffer-capacity", "8", "--minimum-fill-ratio", "0.25", "--outer-rollout-steps", "2"],
    "accel": ["--buffer-capacity", "8", "--minimum-fill-ratio", "0.25", "--outer-rollout-steps", "2",
              "--replay-prob", "0.9", "--num-edits", "2"],
    "sfl": ["--scoring-batch", "8", "--scoring-batches", "2", "--learnable-levels", "4", "--scoring-steps", "16",
            "--refresh-every", "2"],
}


def train_argv(name: str, out: Path, updates: int = UPDATES) -> list[str]:
    return ["train", "--curriculum", name, *TINY, *CURRICULUM_FLAGS[name], "--total-frames",
            str(updates * FRAMES_PER_UPDATE), "--out", str(out)]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def handmade_bank(levels_dir):
    """The S handmade levels stacked (``[K]``)."""
    return make_env("blind", "multi_discrete", "s", levels=sorted((levels_dir / "s").glob("*.json"))).level_bank


def env_options(**changes) -> dict:
    return dict(num_envs=N, observation_type="blind", action_type="multi_discrete", static_env_params=STATIC_S,
                max_timesteps=2, seed=0) | changes


def same_rows(state, levels) -> bool:
    return all(torch.equal(state[k], levels[k]) for k in levels.keys(True, True) if k != "timestep")


# --------------------------------------------------------------------------------------------------
# The env: level ids, given levels, replays


def test_level_id_is_in_the_spec_and_every_output(handmade_bank):
    env = KinetixEnv(handmade_bank, cycle_levels=True, **env_options())
    spec = env.observation_spec["level_id"]
    assert spec.dtype == torch.int64 and spec.shape == (N, 1)
    td = env.reset()
    assert td["level_id"].squeeze(-1).tolist() == list(range(N)), "bank index, cycled"
    step = env.rand_step(td)["next"]
    assert spec.is_in(step["level_id"]) and step["level_id"].squeeze(-1).tolist() == list(range(N))

    made = []

    def sampler(count):
        made.append(count)
        return handmade_bank[torch.arange(count) % handmade_bank.shape[0]]

    sampled = KinetixEnv(sampler=sampler, sampler_chunk=1, **env_options())
    assert sampled.reset()["level_id"].squeeze(-1).tolist() == [0, 1, 2, 3], "a sampler's levels get fresh ids"
    mask = torch.tensor([[False], [True], [False], [True]])
    out = sampled.reset(TensorDict({"_reset": mask}, batch_size=[N]))  # TorchRL pads the unmasked rows
    step = sampled.rand_step(out)["next"]
    assert step["level_id"].squeeze(-1).tolist() == [0, 4, 2, 5] and made == [N, 2]


def test_a_reset_starts_the_given_levels_where_masked(handmade_bank):
    env = KinetixEnv(handmade_bank[:1], **env_options())
    env.rand_step(env.reset())
    before = env.state.clone()
    given = handmade_bank[torch.tensor([3, 4, 5, 6])]
    mask = torch.tensor([[False], [True], [False], [True]])
    out = env.reset(TensorDict({"level": given, "level_id": torch.tensor([[30], [40], [50], [60]]), "_reset": mask},
                               batch_size=[N]))
    assert env.state["timestep"].tolist() == [1, 0, 1, 0]
    for row in range(N):
        expected = given[row] if mask[row] else before[row]
        assert same_rows(env.state[row], expected), row
    assert env.rand_step(out)["next", "level_id"].squeeze(-1).tolist() == [0, 40, 0, 60]
    unmasked = env.reset(TensorDict({"level": given}, batch_size=[N]))  # no mask: all; no ids: -1
    assert unmasked["level_id"].squeeze(-1).tolist() == [-1] * N and same_rows(env.state, given)
    with pytest.raises(ValueError, match="'level' must be a TensorDict of batch \\[4\\]"):
        env.reset(TensorDict({"level": torch.zeros(N, 3)}, batch_size=[N]))


def test_restart_same_replays_each_envs_level_and_survives_a_checkpoint(handmade_bank):
    with pytest.raises(ValueError, match="exactly one of levels= and sampler="):
        KinetixEnv(**env_options())  # restart="fresh" needs levels of its own
    env = KinetixEnv(restart="same", **env_options())
    with pytest.raises(ValueError, match="no level to start from"):
        env.reset()
    given = handmade_bank[torch.tensor([1, 2, 3, 4])]
    td = env.reset(TensorDict({"level": given, "level_id": torch.arange(7, 11)[:, None]}, batch_size=[N]))
    saved = env.checkpoint_state()
    for _ in range(2):  # max_timesteps 2: every episode ends on the second step
        td = env.rand_step(td)["next"]
    assert td["done"].all()
    td = env.reset_where_done(td)
    assert same_rows(env.state, given) and td["level_id"].squeeze(-1).tolist() == [7, 8, 9, 10]

    restored = KinetixEnv(restart="same", **env_options())
    restored.load_checkpoint_state(saved)
    out = restored.reset(TensorDict({"_reset": torch.ones(N, 1, dtype=torch.bool)}, batch_size=[N]))
    assert same_rows(restored.state, given), "the remembered levels come back from the checkpoint"
    assert out["level_id"].squeeze(-1).tolist() == [7, 8, 9, 10]

    fresh = KinetixEnv(handmade_bank, cycle_levels=True, **env_options())  # restart="fresh": the bank again
    td = fresh.reset(TensorDict({"level": given}, batch_size=[N]))
    for _ in range(2):
        td = fresh.rand_step(td)["next"]
    fresh.reset_where_done(td)
    assert same_rows(fresh.state, handmade_bank[torch.arange(N)])


# --------------------------------------------------------------------------------------------------
# Training with every curriculum


@pytest.fixture(scope="module")
def curriculum_runs(tmp_path_factory) -> dict[str, Path]:
    """One uninterrupted run of UPDATES updates per curriculum."""
    root = tmp_path_factory.mktemp("curricula")
    runs = {}
    for name in CURRICULUM_FLAGS:
        runs[name] = root / name
        assert cli.main(train_argv(name, runs[name])) == 0
    return runs


def kinds(line: dict) -> tuple:
    return tuple(line[f"curriculum/{kind}_share"] for kind in ("new", "replay", "edited"))


@pytest.mark.parametrize("name", list(CURRICULUM_FLAGS))
def test_every_curriculum_trains_end_to_end(curriculum_runs, name):
    run = curriculum_runs[name]
    lines = read_jsonl(run / "metrics.jsonl")
    assert [m["updates"] for m in lines] == list(range(1, UPDATES + 1))
    assert lines[-1]["frames"] == UPDATES * FRAMES_PER_UPDATE, "every update's frames count, trained or not"
    assert sum(m["episodes"] for m in lines) > 0
    saved = json.loads((run / "config.json").read_text())
    config = TrainConfig.from_json_dict(saved)
    assert config.curriculum == name and saved["curriculum_config"]["noop_filter"] is False
    assert TrainConfig.from_json_dict(json.loads(json.dumps(config.to_json_dict()))) == config
    state = ckpt.read_training_state(run / "checkpoint")["ranks"][0]
    if name == "dr":  # levels come from the env: fresh ones whenever an episode ends
        assert state["curriculum"] is None and not any(k.startswith("curriculum/") for k in lines[0])
        assert state["env"]["level_ids"].min().item() >= 8, "every env has moved on to a new level"
        return
    trained = [m["curriculum/trained"] for m in lines]
    for m in lines:  # an update without gradients logs no losses
        assert (m["loss_objective"] is None) == (m["curriculum/trained"] == 0.0)
    if name == "sfl":
        assert all(kinds(m) == (0.5, 0.5, 0.0) for m in lines) and trained == [1.0] * UPDATES
        assert all(0.0 <= m["curriculum/sampled_learnability"] <= 0.25 for m in lines)
        return
    batches = [kinds(m) for m in lines[::2]]  # two updates per batch
    assert [kinds(m) for m in lines[1::2]] == batches, "a batch's levels last two updates"
    assert batches[0] == (1.0, 0.0, 0.0) and trained[:2] == [0.0, 0.0], "robust PLR: new levels are only scored"
    assert (0.0, 1.0, 0.0) in batches, "the buffer is replayed"
    assert all(t == (kind == (0.0, 1.0, 0.0)) for t, kind in zip(trained, map(kinds, lines)))
    assert 0 < lines[-1]["curriculum/buffer_fill"] <= 1 and math.isfinite(lines[-1]["curriculum/buffer_max_score"])
    if name == "accel":
        replay = batches.index((0.0, 1.0, 0.0))
        assert batches[replay + 1] == (0.0, 0.0, 1.0), "a replay batch is followed by its edits"


@pytest.mark.parametrize("name", list(CURRICULUM_FLAGS))
def test_a_curriculum_run_resumes_exactly(curriculum_runs, name, tmp_path):
    """Stopped after update 3 (inside a PLR batch, between SFL refreshes) and resumed: the same
    weights and metrics as the uninterrupted run."""
    run = tmp_path / name
    assert cli.main(train_argv(name, run, updates=3)) == 0
    assert cli.main(["train", "--resume", str(run), "--total-frames", str(UPDATES * FRAMES_PER_UPDATE)]) == 0
    reference = curriculum_runs[name]
    ours = ckpt.read_training_state(run / "checkpoint")
    theirs = ckpt.read_training_state(reference / "checkpoint")
    for key, value in theirs["model"].items():
        assert torch.equal(ours["model"][key], value), key
    timing = {"wall_time", "fps"}
    for a, b in zip(read_jsonl(run / "metrics.jsonl"), read_jsonl(reference / "metrics.jsonl"), strict=True):
        assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}


def test_two_ranks_each_with_a_plr_curriculum_train_together(tmp_path):
    """torchrun, 2 ranks, a PLR per rank: on updates where one rank replays (trains) and the other
    scores new levels, both run the epochs without hanging, the gradients averaged over the
    training rank only; each rank's curriculum is in the checkpoint."""
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "kinetix_torch", *train_argv("plr", run, updates=8)]
    done = subprocess.run(argv, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = read_jsonl(run / "metrics.jsonl")
    trained = [m["curriculum/trained"] for m in lines]  # the mean over the ranks
    assert 0.5 in trained and 1.0 in trained, trained  # seed 0: the ranks' coins differ on some batches
    for m in lines:
        assert (m["grad_norm"] is None) == (m["curriculum/trained"] == 0.0)
    ranks = ckpt.read_training_state(run / "checkpoint")["ranks"]
    assert len(ranks) == 2 and all(rank["curriculum"]["source"]["buffer"]["size"] > 0 for rank in ranks)


def test_curriculum_flags_are_checked(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert cli.main(["train", "--curriculum", "sfl", *TINY, "--buffer-capacity", "8", "--out", out]) == 2
    assert "does not take --buffer-capacity" in capsys.readouterr().err
    assert cli.main(["train", "--curriculum", "plr", "--levels", out, *TINY, "--out", out]) == 2
    assert "leave out --levels" in capsys.readouterr().err
    assert cli.main(["train", "--curriculum", "sfl", *TINY, "--scoring-steps", "8", "--out", out]) == 2
    assert "--scoring-steps (8) must be at least the episode length" in capsys.readouterr().err


def test_curriculum_stats_go_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "sfl"
    argv = [arg for arg in train_argv("sfl", run, updates=1) if arg != "--no-tensorboard"]
    assert cli.main(argv) == 0
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/curriculum/replay_share", "train/curriculum/buffer_learnability",
            "train/curriculum/sampled_learnability"} <= tags


# --------------------------------------------------------------------------------------------------
# Presets


def test_pretrain_is_upstreams_sfl_setup_scaled_to_the_machine():
    config, scaled = pretrain.pretrain_config(["--size", "s", "--budget", "5000000", "--device", "cpu"])
    assert (config.curriculum, config.env_size, config.obs, config.action, config.model) == (
        "sfl", "s", "symbolic_entity", "multi_discrete", "tf-paper")
    assert (config.num_envs, config.num_steps, config.update_epochs, config.num_minibatches) == (64, 256, 8, 32)
    assert (config.lr, config.dense_reward_scale, config.eval_every, config.eval_attempts) == (5e-5, 0.2, 128, 20)
    assert config.total_frames == 5_000_000 and config.out == Path("runs/pretrain-s")
    sfl = config.curriculum_config
    assert sfl == SFLConfig(sfl_scale=64 / 2048) and sfl.noop_filter
    assert (sfl.scaled(sfl.scoring_batch), sfl.scaled(sfl.learnable_levels)) == (128, 32)
    assert any("num_envs 2048 -> 64" in line for line in scaled)
    wider, _ = pretrain.pretrain_config(["--budget", "1000", "--device", "cpu", "--num-envs", "128", "--obs",
                                         "symbolic_flat"])
    assert wider.curriculum_config.sfl_scale == 128 / 2048 and wider.obs == "symbolic_flat"
    chosen, _ = pretrain.pretrain_config(["--budget", "1000", "--device", "cpu", "--sfl-scale", "0.5"])
    assert chosen.curriculum_config.sfl_scale == 0.5
    with pytest.raises(ValueError, match="--budget"):
        pretrain.pretrain_config(["--size", "s"])
    with pytest.raises(SystemExit):  # PLR's options are no pretrain flags
        pretrain.pretrain_config(["--budget", "1000", "--buffer-capacity", "8"])


def test_pretrain_then_finetune_and_from_scratch(levels_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("KINETIX_LEVELS", str(levels_dir))
    with pytest.raises(ValueError, match="--init-from CKPT, --level LEVEL and --budget FRAMES"):
        finetune.finetune_config(["--level", "s/h4_thrust_aim", "--budget", "64"])
    tiny = [arg for arg in TINY if arg not in ("--env-size", "s")]
    pretrained = tmp_path / "pretrain"
    assert cli.main(["pretrain", "--size", "s", "--budget", "128", *tiny, "--scoring-batches", "1",
                     "--scoring-steps", "16", "--out", str(pretrained)]) == 0
    saved = ckpt.load_policy(pretrained)
    assert saved.train_config.curriculum == "sfl" and saved.train_config.dense_reward_scale == 0.2
    runs = {}
    for name, extra in (("finetune", []), ("scratch", ["--from-scratch", "--seed", "1"])):
        runs[name] = tmp_path / name
        argv = ["finetune", "--init-from", str(pretrained), "--level", "s/h4_thrust_aim", "--budget", "64",
                "--num-envs", "4", "--eval-attempts", "2", "--no-progress", "--out", str(runs[name]), *extra]
        assert cli.main(argv) == 0
        config = TrainConfig.from_json_dict(json.loads((runs[name] / "config.json").read_text()))
        assert (config.curriculum, config.env_size, config.obs, config.num_steps) == ("none", "s", "symbolic_flat", 8)
        assert config.dense_reward_scale == 0.2 and config.levels[0].name == "h4_thrust_aim.json"
        scratch = name == "scratch"
        assert (config.init_from is None) == scratch and (config.model_config is None) == (not scratch)
        curve = read_jsonl(runs[name] / "eval.jsonl")
        assert [line["updates"] for line in curve] == [0, 1, 2], "an eval before training, then every update"
        assert list(curve[0]["levels"]) == ["s/h4_thrust_aim"] and curve[0]["mean"]["attempts"] == 2
        shapes = {k: v.shape for k, v in ckpt.load_policy(runs[name]).actor_critic.state_dict().items()}
        assert shapes == {k: v.shape for k, v in saved.actor_critic.state_dict().items()}, "the same network"
    # Four Adam steps of lr 5e-5 move the pretrained weights by < 1e-3; a fresh init (another seed
    # than the pretraining's) is elsewhere.
    start = saved.actor_critic.state_dict()
    for name, run in runs.items():
        final = ckpt.read_training_state(ckpt.latest_checkpoint(run))["model"]
        distance = max((final[k] - start[k]).abs().max().item() for k in start)
        assert (distance < 1e-3) == (name == "finetune"), (name, distance)
