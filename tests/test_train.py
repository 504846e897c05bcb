"""PPO training: it learns (and does not without the policy gradient), runs are reproducible and
resume exactly after SIGTERM and SIGKILL, checkpoints load back, fine-tuning starts from upstream's
weights, and bad input gets a clear error.

Most runs train on ``lift``, a level built here: a green ball on the floor with an upward thruster
of 1.5 x its weight and a blue bar above it. Firing at random (half the time) keeps the ball down,
firing most of the time lifts it to the bar, so the solve rate separates a learning policy from a
random one within a few thousand frames.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchrl.modules import set_recurrent_mode
from torchrl.objectives import ClipPPOLoss

from kinetix_torch import cli
from kinetix_torch.commands.args import field_docs
from kinetix_torch.curricula import CURRICULA, PLRConfig, SFLConfig
from kinetix_torch.models import make_actor_critic
from kinetix_torch.train import checkpoint as ckpt
from kinetix_torch.train import ppo
from kinetix_torch.train.config import TrainConfig
from kinetix_torch.train.evaluate import evaluate
from kinetix_torch.train.logger import level_name

REPO = Path(__file__).resolve().parents[1]

# Small PPO for the lift level: 32 envs x 32 steps = 1024 frames per update.
LIFT_FLAGS = [
    "--env-size", "s", "--obs", "symbolic_flat", "--action", "multi_discrete", "--num-envs", "32",
    "--num-steps", "32", "--num-minibatches", "4", "--update-epochs", "4", "--lr", "1e-3",
    "--max-timesteps", "64", "--device", "cpu", "--num-threads", "1", "--no-progress",
]
LIFT_UPDATES = 8


@pytest.fixture(scope="module")
def lift_dir(tmp_path_factory) -> Path:
    """A folder holding the lift level (S)."""
    from kinetix_torch import levels, schema
    from kinetix_torch.params import EnvParams, static_params_for_size
    from kinetix_torch.reference_jax import scene
    from kinetix_torch.schema import BLUE, GREEN

    static = static_params_for_size("s")
    state = scene.empty_scene(static)
    state, ball = scene.add_circle(state, static, (2.5, 0.62), 0.2, role=GREEN)
    state, _ = scene.add_thruster(state, static, ball, (0.0, 0.0), np.pi / 2, power=0.19)
    bar = [[-0.6, 0.1], [0.6, 0.1], [0.6, -0.1], [-0.6, -0.1]]
    state, _ = scene.add_polygon(state, static, (2.5, 2.2), bar, fixated=True, role=BLUE)
    folder = tmp_path_factory.mktemp("levels")
    flat = {k: np.asarray(v) for k, v in schema.flatten(state).items()}
    levels.save_level(folder / "lift.json", flat, static, EnvParams(dense_reward_scale=1.0))
    return folder


def lift_config(lift_dir: Path, out: Path, **changes) -> TrainConfig:
    """The config the CLI builds from LIFT_FLAGS (for runs started from Python)."""
    values = dict(
        levels=[lift_dir], env_size="s", num_envs=32, num_steps=32, num_minibatches=4, update_epochs=4, lr=1e-3,
        max_timesteps=64, device="cpu", num_threads=1, progress=False, tensorboard=False,
        total_frames=LIFT_UPDATES * 1024, out=out,
    )
    return TrainConfig(**(values | changes))


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def late_solve_rate(run_dir: Path, last: int = 3) -> float:
    """Solved / finished episodes over the last ``last`` updates."""
    lines = read_metrics(run_dir)[-last:]
    episodes = sum(m["episodes"] for m in lines)
    assert episodes > 0
    return sum(m["solve_rate"] * m["episodes"] for m in lines if m["episodes"]) / episodes


def final_model(run_dir: Path) -> dict:
    return ckpt.read_training_state(ckpt.latest_checkpoint(run_dir))["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def lift_run(lift_dir, tmp_path_factory) -> Path:
    """The reference run, through the CLI's documented spelling (level given as a folder)."""
    out = tmp_path_factory.mktemp("runs") / "lift"
    argv = ["train", "--levels", str(lift_dir), *LIFT_FLAGS, "--total-frames", str(LIFT_UPDATES * 1024),
            "--seed", "0", "--out", str(out), "--checkpoint-every", "4", "--keep-checkpoints", "1",
            "--eval-every", "8", "--eval-levels", str(lift_dir), "--eval-attempts", "32"]
    assert cli.main(argv) == 0
    return out


# --------------------------------------------------------------------------------------------------
# Learning


def test_ppo_learns_the_lift_level(lift_run):
    lines = read_metrics(lift_run)
    assert [m["updates"] for m in lines] == list(range(1, LIFT_UPDATES + 1))
    assert lines[-1]["frames"] == LIFT_UPDATES * 1024
    assert late_solve_rate(lift_run) >= 0.9
    (evaluation,) = [json.loads(line) for line in (lift_run / "eval.jsonl").read_text().splitlines()]
    assert evaluation["updates"] == LIFT_UPDATES and evaluation["mean"]["attempts"] == 32
    assert evaluation["mean"]["solve_rate"] >= 0.9


def test_without_the_policy_gradient_it_does_not_learn(lift_dir, tmp_path, monkeypatch):
    forward = ClipPPOLoss.forward

    def without_policy_gradient(self, tensordict):
        out = forward(self, tensordict)
        out["loss_objective"] = out["loss_objective"].detach()
        return out

    monkeypatch.setattr(ClipPPOLoss, "forward", without_policy_gradient)
    ppo.train(lift_config(lift_dir, tmp_path / "run"))
    assert late_solve_rate(tmp_path / "run") <= 0.3


# --------------------------------------------------------------------------------------------------
# Run folder and checkpoints


def test_run_folder_holds_config_metrics_tensorboard_and_checkpoints(lift_run):
    assert json.loads((lift_run / "config.json").read_text())["num_envs"] == 32
    assert list((lift_run / "tb").iterdir())
    assert sorted(p.name for p in (lift_run / "checkpoints").iterdir()) == ["update-00000008"]  # --keep-checkpoints 1
    folder = lift_run / "checkpoint"
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "manifest.json", "params.safetensors", "training_state.pt"
    ]
    config = json.loads((folder / "config.json").read_text())
    assert (config["observation_type"], config["action_type"], config["env_size_name"]) == (
        "symbolic_flat", "multi_discrete", "s"
    )
    assert config["static_env_params"]["num_polygons"] == 5
    assert config["env_params"]["max_timesteps"] == 64
    assert config["train_config"]["num_envs"] == 32
    assert set(config["model"]) >= {"actor_width", "recurrent_model"}
    state = ckpt.read_training_state(folder)
    assert (state["updates"], state["frames"]) == (LIFT_UPDATES, LIFT_UPDATES * 1024)
    assert {"optimizer", "model", "ranks"} <= set(state) and len(state["ranks"]) == 1  # one process
    assert {"rng", "env", "carry", "episode_return", "episode_length"} <= set(state["ranks"][0])


def test_a_checkpoint_of_format_1_resumes(lift_run, lift_dir):
    """Format 1 (before data-parallel runs) kept the one process's state at the top level."""
    state = ckpt.read_training_state(lift_run / "checkpoint")
    (process,) = state.pop("ranks")
    config = lift_config(lift_dir, lift_run)
    env = ppo.make_training_env(config, torch.device("cpu"))
    actor_critic = make_actor_critic(env.observation_spec["observation"], env.action_spec,
                                     ppo.model_config_from_flags(config))
    learner = ppo.PPO(config, env, actor_critic)
    learner.load_training_state(state | process | {"format": 1})
    assert learner.updates == LIFT_UPDATES
    assert torch.equal(learner.carry["observation"], process["carry"]["observation"])
    assert torch.equal(learner.episode_length, process["episode_length"])


def test_checkpoint_loads_back_with_identical_outputs(lift_run, lift_dir):
    trained = final_model(lift_run)
    env = ppo.make_training_env(lift_config(lift_dir, lift_run), torch.device("cpu"))
    observation = env.reset()
    for path in (lift_run, lift_run / "checkpoint", lift_run / "checkpoints" / "update-00000008"):
        policy = ckpt.load_policy(path)
        assert (policy.observation_type, policy.action_type) == ("symbolic_flat", "multi_discrete")
        assert policy.static_env_params == env.static_env_params
        assert policy.env_params.max_timesteps == 64
        assert policy.train_config.num_envs == 32
        assert_same_weights(policy.actor_critic.state_dict(), trained)
        reference = make_actor_critic(env.observation_spec["observation"], env.action_spec, policy.actor_critic.config)
        reference.load_state_dict(trained)
        with torch.no_grad():
            for module in ("policy", "value"):
                key = "logits" if module == "policy" else "state_value"
                ours = getattr(policy.actor_critic, module)(observation.clone())[key]
                assert torch.equal(ours, getattr(reference, module)(observation.clone())[key])


def test_same_seed_same_weights_other_seed_other_weights(lift_dir, tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        ppo.train(lift_config(lift_dir, tmp_path / name, seed=seed, total_frames=2048))
    assert_same_weights(final_model(tmp_path / "a"), final_model(tmp_path / "b"))
    a, c = final_model(tmp_path / "a"), final_model(tmp_path / "c")
    assert any(not torch.equal(a[k], c[k]) for k in a)


def _start(argv: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "kinetix_torch", *argv], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, env=env, cwd=REPO)


def _wait_for(path: Path, process: subprocess.Popen, log: Path, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"training exited early:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {path} after {timeout} s:\n{log.read_text()}"
        time.sleep(0.02)


def test_sigterm_then_sigkill_then_resume_gives_the_uninterrupted_weights(lift_run, lift_dir, tmp_path):
    run, log = tmp_path / "run", tmp_path / "log.txt"
    argv = ["train", "--levels", str(lift_dir), *LIFT_FLAGS, "--total-frames", str(LIFT_UPDATES * 1024),
            "--seed", "0", "--out", str(run), "--checkpoint-every", "2", "--no-tensorboard"]
    # SIGTERM (sent to this process once the first checkpoint exists): the run writes a checkpoint
    # after the current update and returns normally.
    def terminate_after_first_checkpoint():
        while not (run / "checkpoints" / "update-00000002").exists():
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_after_first_checkpoint, daemon=True).start()
    assert cli.main(argv) == 0
    stopped_at = ckpt.read_training_state(run / "checkpoint")["updates"]
    assert 2 <= stopped_at < LIFT_UPDATES
    assert [m["updates"] for m in read_metrics(run)] == list(range(1, stopped_at + 1))
    # SIGKILL between checkpoints of the resumed run (a subprocess): it loses what followed the last one.
    resumed = _start(["train", "--resume", str(run)], log)
    next_checkpoint = stopped_at + 2 - stopped_at % 2
    _wait_for(run / "checkpoints" / f"update-{next_checkpoint:08d}", resumed, log)
    resumed.kill()
    resumed.wait(timeout=60)
    assert ckpt.read_training_state(ckpt.latest_checkpoint(run))["updates"] >= next_checkpoint
    # Resume to the end, in this process. The reference run also evaluated: that changed nothing.
    assert cli.main(["train", "--resume", str(run)]) == 0
    assert_same_weights(final_model(run), final_model(lift_run))
    ours, reference = read_metrics(run), read_metrics(lift_run)
    assert [m["updates"] for m in ours] == list(range(1, LIFT_UPDATES + 1))
    timing = {"wall_time", "fps"}
    for a, b in zip(ours, reference):
        assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}


def test_recurrent_mode_replays_the_rollout_exactly(lift_dir):
    """Minibatches of whole trajectories in recurrent mode give the rollout's log-probs and values."""
    config = lift_config(lift_dir, Path("unused"), recurrent=True, num_steps=40)
    env = ppo.make_training_env(config, torch.device("cpu"))
    actor_critic = make_actor_critic(
        env.observation_spec["observation"], env.action_spec, ppo.model_config_from_flags(config)
    )
    assert actor_critic.recurrent
    learner = ppo.PPO(config, env, actor_critic)
    learner.collect()
    batch, stats = learner.collect()  # 80 steps > 64: every env started a new episode inside it
    assert batch["is_init"][:, 1:].any() and stats["episodes"] > 0
    with torch.no_grad(), set_recurrent_mode(True):
        replay = batch.exclude("logits", "action_log_prob", "state_value")
        log_prob = actor_critic.policy.get_dist(replay.clone()).log_prob(batch["action"])
        value = actor_critic.value(replay.clone())["state_value"]
    assert torch.allclose(log_prob, batch["action_log_prob"], atol=1e-5)
    assert value.shape == (32, 40, 1)
    learner.learn(batch)  # one recurrent update runs


# --------------------------------------------------------------------------------------------------
# Evaluation during training


def test_evaluation_during_training_logs_each_level_and_each_size(lift_dir, levels_dir, tmp_path):
    """Training at size M, evaluated on an S level padded up and an M level: every level's results
    and each size's mean go to eval.jsonl and TensorBoard, and they are :func:`evaluate`'s (one
    batched env, stochastic policy, the training env's params)."""
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    m_level = sorted((levels_dir / "m").glob("*.json"))[0]
    shutil.copy(lift_dir / "lift.json", eval_dir)
    shutil.copy(m_level, eval_dir)
    run = tmp_path / "run"
    config = lift_config(lift_dir, run, env_size="m", num_envs=8, num_steps=8, num_minibatches=2, update_epochs=1,
                         total_frames=64, eval_every=1, eval_levels=[eval_dir], eval_attempts=4, tensorboard=True)
    ppo.train(config)
    (logged,) = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    names = ["eval/lift", f"eval/{m_level.stem}"]
    assert logged["updates"] == 1 and sorted(logged["levels"]) == sorted(names)
    assert logged["mean_s"] == {**logged["levels"]["eval/lift"], "attempts": 4}
    assert logged["mean_m"] == {**logged["levels"][f"eval/{m_level.stem}"], "attempts": 4}
    policy = ckpt.load_policy(run)
    paths = sorted(eval_dir.glob("*.json"))  # as --eval-levels FOLDER orders them
    report = evaluate(policy.actor_critic.policy, paths, observation_type="symbolic_flat",
                      action_type="multi_discrete", env_size=policy.static_env_params, attempts=4, seed=0,
                      env_params=policy.env_params)
    for path in paths:
        assert logged["levels"][level_name(path)] == dataclasses.asdict(report.results[str(path)])
    assert logged["mean"] == dataclasses.asdict(report.means["mean"])
    tensorboard = EventAccumulator(str(run / "tb"))
    tensorboard.Reload()
    tags = set(tensorboard.Tags()["scalars"])
    assert {f"eval/level/{name}/solve_rate" for name in names} | {"eval/mean_s/solve_rate", "eval/mean_m/solve_rate",
                                                                   "eval/mean/solve_rate"} <= tags


def test_evaluation_levels_default_to_the_handmade_sets_up_to_the_training_size(levels_dir, lift_dir):
    static_m = ppo.make_training_env(lift_config(lift_dir, Path("unused"), env_size="m"), "cpu").static_env_params
    config = TrainConfig(env_size="m", eval_every=10)
    assert TrainConfig(env_size="s").eval_level_specs == ["s"] and config.eval_level_specs == ["s", "m"]
    names = [level_name(path) for path in ppo._eval_level_paths(config, static_m)]
    expected = [f"{size}/{p.stem}" for size in ("s", "m") for p in sorted((levels_dir / size).glob("*.json"))]
    assert names == expected and len(names) == 34
    assert TrainConfig(env_size="l").eval_level_specs == ["s", "m", "l"]


# --------------------------------------------------------------------------------------------------
# Fine-tuning


def test_init_from_an_upstream_checkpoint_starts_from_its_weights(golden_dir, levels_dir, tmp_path):
    upstream = golden_dir / "models" / "flat_mlp_multi_discrete"
    golden = ckpt.load_policy(upstream).actor_critic.state_dict()
    config = TrainConfig(
        levels=[levels_dir / "m" / sorted(p.name for p in (levels_dir / "m").glob("*.json"))[0]], env_size="m",
        num_envs=8, num_steps=8, num_minibatches=2, update_epochs=1, lr=1e-12, total_frames=64, init_from=upstream,
        out=tmp_path / "run", device="cpu", progress=False, tensorboard=False,
    )
    ppo.train(config)
    tuned = final_model(tmp_path / "run")
    assert tuned.keys() == golden.keys()
    for key in golden:  # one update at lr 1e-12 moves nothing visibly
        assert torch.allclose(tuned[key], golden[key], atol=1e-8), key
    assert ckpt.load_policy(tmp_path / "run").actor_critic.config == ckpt.load_policy(upstream).actor_critic.config


# --------------------------------------------------------------------------------------------------
# Bad input


def _error_of(argv: list[str], capsys) -> str:
    assert cli.main(argv) == 2
    return capsys.readouterr().err


def test_init_from_a_checkpoint_that_does_not_fit_the_env(golden_dir, lift_dir, tmp_path, capsys):
    upstream = golden_dir / "models" / "flat_mlp_multi_discrete"  # M, symbolic_flat, multi_discrete
    base = ["train", "--levels", str(lift_dir), "--init-from", str(upstream), "--num-envs", "4",
            "--num-minibatches", "1", "--no-progress", "--device", "cpu"]
    error = _error_of([*base, "--env-size", "s", "--out", str(tmp_path / "a")], capsys)
    assert "env size" in error and "polygons=6" in error and "polygons=5" in error
    error = _error_of([*base, "--env-size", "m", "--obs", "blind", "--out", str(tmp_path / "b")], capsys)
    assert "symbolic_flat" in error and "blind" in error


def test_damaged_checkpoints_are_named(lift_run, tmp_path, capsys):
    for name, damage in (("params.safetensors", "truncate"), ("training_state.pt", "truncate"),
                         ("params.safetensors", "flip")):
        run = tmp_path / f"{name}-{damage}"
        shutil.copytree(lift_run, run)
        folder = ckpt.latest_checkpoint(run)
        path = folder / name
        data = bytearray(path.read_bytes())
        path.write_bytes(data[: len(data) // 2] if damage == "truncate" else data[:-1] + bytes([data[-1] ^ 1]))
        with pytest.raises(ckpt.CheckpointError, match=name):
            ckpt.load_policy(run) if name == "params.safetensors" else ckpt.read_training_state(folder)
        assert name in _error_of(["train", "--resume", str(run)], capsys)
    # An upstream-format folder has no manifest: a truncated weights file is still named.
    upstream = tmp_path / "upstream"
    shutil.copytree(lift_run / "checkpoint", upstream)
    (upstream / "manifest.json").unlink()
    (upstream / "params.safetensors").write_bytes((upstream / "params.safetensors").read_bytes()[:1000])
    with pytest.raises(ckpt.CheckpointError, match="params.safetensors"):
        ckpt.load_policy(upstream)


def test_missing_level_path_and_empty_run_folders_are_named(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "level.json"
    error = _error_of(["train", "--levels", str(missing), "--out", str(tmp_path / "run"), "--no-progress"], capsys)
    assert str(missing) in error
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no checkpoint" in _error_of(["train", "--resume", str(empty)], capsys)
    with pytest.raises(ckpt.CheckpointError, match="not found"):
        ckpt.load_policy(tmp_path / "absent")


def test_wandb_without_the_package_is_a_clear_error(lift_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now fails, installed or not
    argv = ["train", "--levels", str(lift_dir), *LIFT_FLAGS, "--wandb", "--out", str(tmp_path / "run")]
    assert "pip install wandb" in _error_of(argv, capsys)


def test_resume_refuses_flags_that_change_the_run_and_fresh_runs_refuse_used_folders(lift_run, capsys):
    assert "--num-envs" in _error_of(["train", "--resume", str(lift_run), "--num-envs", "64"], capsys)
    error = _error_of(["train", "--levels", str(lift_run), "--out", str(lift_run), "--no-progress"], capsys)
    assert "already holds a run" in error


# --------------------------------------------------------------------------------------------------
# Config


def test_every_config_field_is_a_documented_flag_and_round_trips_through_json(tmp_path, capsys):
    docs = field_docs(TrainConfig)
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for name in TrainConfig.__dataclass_fields__:
        assert docs.get(name), f"TrainConfig.{name} has no docstring"
        if name != "curriculum_config":  # its fields are the flags, below
            assert f"--{name.replace('_', '-')}" in help_text and docs[name][:30] in help_text
    for config_class, _ in CURRICULA.values():
        for name, doc in field_docs(config_class).items():
            assert f"--{name.replace('_', '-')}" in help_text and doc[:30] in help_text
    config = TrainConfig(levels=[tmp_path / "a.json"], width=64, eval_levels=[tmp_path / "b"])
    assert TrainConfig.from_json_dict(json.loads(json.dumps(config.to_json_dict()))) == config
    sfl = TrainConfig(curriculum="sfl", curriculum_config=SFLConfig(sfl_scale=0.25, noop_filter=False))
    assert TrainConfig.from_json_dict(json.loads(json.dumps(sfl.to_json_dict()))) == sfl
    assert TrainConfig(curriculum="plr").curriculum_config == PLRConfig(), "a curriculum's defaults by default"
    with pytest.raises(ValueError, match="unknown plr curriculum option"):
        TrainConfig.from_json_dict({"curriculum": "plr", "curriculum_config": {"sfl_scale": 1.0}})
    defaults = TrainConfig()
    assert (defaults.num_envs, defaults.num_steps, defaults.update_epochs, defaults.num_minibatches) == (
        2048, 64, 8, 32
    )
    assert (defaults.gamma, defaults.gae_lambda, defaults.clip_eps, defaults.ent_coef, defaults.vf_coef) == (
        0.995, 0.9, 0.2, 0.01, 0.5
    )
    assert (defaults.max_grad_norm, defaults.lr, defaults.adam_eps) == (1.0, 5e-5, 1e-5)


def test_model_options_preset_file_then_flags(tmp_path):
    tf_s = ppo.model_config_from_flags(TrainConfig(model="tf-s"))
    assert (tf_s.actor_depth, tf_s.actor_width, tf_s.transformer_ffn, tf_s.recurrent_model) == (3, 256, True, False)
    (tmp_path / "model.json").write_text(json.dumps({"model": {"activation": "relu", "actor_width": 32}}))
    config = TrainConfig(model="tf-s", model_config=tmp_path / "model.json", depth=2, recurrent=True)
    model = ppo.model_config_from_flags(config)
    assert (model.actor_depth, model.critic_depth, model.activation, model.recurrent_model) == (2, 2, "relu", True)
    assert model.actor_width == 256  # the preset's override_model_width still applies over the file's actor_width
    assert ppo.model_config_from_flags(TrainConfig(width=64)).critic_width == 64


def test_learning_rate_schedules():
    config = TrainConfig(num_envs=1, num_steps=1, total_frames=100, lr=1.0)
    assert ppo.learning_rate(config, 0) == ppo.learning_rate(config, 99) == 1.0
    anneal = TrainConfig(num_envs=1, num_steps=1, total_frames=100, lr=1.0, anneal_lr=True)
    assert ppo.learning_rate(anneal, 0) == 1.0 and ppo.learning_rate(anneal, 50) == 0.5
    warm = TrainConfig(num_envs=1, num_steps=1, total_frames=100, warmup_lr=True, initial_lr=0.1, peak_lr=1.0,
                       warmup_frac=0.1)
    assert ppo.learning_rate(warm, 0) == 0.1 and ppo.learning_rate(warm, 5) == pytest.approx(0.55)
    assert ppo.learning_rate(warm, 10) == 1.0 and ppo.learning_rate(warm, 55) == pytest.approx(0.5)
