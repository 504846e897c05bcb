"""Actor-critic networks: upstream's checkpoints and recorded outputs, parameter counts, the
multi-categorical policy, checkpoint round trips and bad files, and every observation x action type
on real env outputs."""

from __future__ import annotations

import itertools
import json
import math
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from tensordict import TensorDict
from torchrl.envs import Compose, InitTracker, TransformedEnv
from torchrl.modules import set_recurrent_mode

import kinetix_torch
from kinetix_torch.actions import ACTION_TYPES
from kinetix_torch.models import (
    ModelConfig,
    load_upstream_checkpoint,
    make_actor_critic,
    save_upstream_checkpoint,
)
from kinetix_torch.models.checkpoint import read_checkpoint_config, specs_from_config, upstream_state_dict
from kinetix_torch.models.conformance import main as conformance_main
from kinetix_torch.models.conformance import run_upstream_call
from kinetix_torch.models.distributions import MultiCategorical
from kinetix_torch.observations import OBSERVATION_TYPES

UPSTREAM_PARAMETERS = {
    "entity_transformer_multi_discrete": 786_369,
    "entity_transformer_multi_discrete_legacy": 786_369,
    "entity_transformer_continuous": 785_085,
    "flat_mlp_multi_discrete": 199_057,
    "perm_inv_mlp_multi_discrete": 221_521,
    "perm_inv_mlp_flat_padded_multi_discrete": 211_857,
    "pixels_cnn_discrete": 440_380,
    "flat_mlp_multi_discrete_rnn": 527_761,
}
"""Upstream's ``num_params`` per golden checkpoint (README §2 table)."""

SMALL = "flat_mlp_multi_discrete"
"""The smallest golden checkpoint, for tests that copy or damage one."""


@pytest.fixture(scope="module")
def models_dir(golden_dir):
    path = golden_dir / "models"
    assert path.is_dir(), f"golden model data not found at {path}"
    return path


def _copy_case(models_dir, tmp_path, name=SMALL):
    shutil.copytree(models_dir / name, tmp_path / name)
    for suffix in (".io.npz", ".io.json"):
        shutil.copy(models_dir / (name + suffix), tmp_path / (name + suffix))
    return tmp_path / name


def _first_steps(data, steps: int, batch: int) -> dict[str, np.ndarray]:
    """The inputs of a recorded call cut to its first ``steps`` x ``batch`` (carries: ``batch`` rows)."""
    inputs = {}
    for key in data.files:
        if key.startswith("carry_in."):
            inputs[key] = data[key][:batch]
        elif key.startswith("obs") or key in ("dones", "actions"):
            inputs[key] = data[key][:steps, :batch]
    return inputs


# ------------------------------------------------------------------------------------------------
# Upstream's checkpoints and outputs


def test_every_golden_file_matches_upstream(models_dir, capsys):
    assert conformance_main(["--golden", str(models_dir)]) == 0
    out = capsys.readouterr().out
    io_files = sorted(p.name for p in models_dir.glob("*.io.npz"))
    assert len(io_files) == 9
    for name in io_files:
        assert f"{name} (checkpoint" in out
    assert out.count(": PASS") == len(io_files) and "FAIL" not in out
    # the alternative calls (non-zero GRU carry, other log_std) and the S-size file are checked
    assert "alt.carry_out.0" in out and "alt.out.pi.scale_diag" in out
    assert "entity_transformer_multi_discrete_s.io.npz (checkpoint entity_transformer_multi_discrete)" in out


@pytest.mark.parametrize("damage", ["perturbed", "nan"])
def test_conformance_fails_on_damaged_weights(models_dir, tmp_path, capsys, damage):
    folder = _copy_case(models_dir, tmp_path)
    params = load_file(folder / "params.safetensors")
    key = "params/GeneralActorCriticRNN_0/Dense_1/bias"
    params[key] = params[key] + 1e-3 if damage == "perturbed" else torch.full_like(params[key], float("nan"))
    save_file(params, folder / "params.safetensors")
    assert conformance_main(["--golden", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    value_line = next(line for line in out.splitlines() if line.strip().startswith("out.value"))
    assert "FAIL" in value_line and (("NaN/inf" in value_line) == (damage == "nan"))


def test_conformance_exit_codes_for_empty_and_unreadable_folders(models_dir, tmp_path, capsys):
    assert conformance_main(["--golden", str(tmp_path)]) == 2
    folder = _copy_case(models_dir, tmp_path)
    data = (folder / "params.safetensors").read_bytes()
    (folder / "params.safetensors").write_bytes(data[: len(data) // 2])
    assert conformance_main(["--golden", str(tmp_path)]) == 1
    assert str(folder / "params.safetensors") in capsys.readouterr().out


def test_io_file_pairs_with_the_checkpoint_its_sidecar_names(models_dir, tmp_path, capsys):
    """A renamed io file still finds its checkpoint through the sidecar; without one, by prefix."""
    _copy_case(models_dir, tmp_path)
    for suffix in (".io.npz", ".io.json"):
        (tmp_path / (SMALL + suffix)).rename(tmp_path / ("renamed_case" + suffix))
    shutil.copy(models_dir / (SMALL + ".io.npz"), tmp_path / (SMALL + "_copy.io.npz"))
    assert conformance_main(["--golden", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"renamed_case.io.npz (checkpoint {SMALL})" in out
    assert f"{SMALL}_copy.io.npz (checkpoint {SMALL})" in out


def test_legacy_entity_id_changes_the_outputs(models_dir):
    """The legacy file only passes with the flag: the flag must reach the network."""
    actor_critic, _ = load_upstream_checkpoint(models_dir / "entity_transformer_multi_discrete_legacy")
    assert actor_critic.config.legacy_entity_id
    data = dict(np.load(models_dir / "entity_transformer_multi_discrete_legacy.io.npz"))
    actor_critic.torso.polygon_id = 1.0
    torso = run_upstream_call(actor_critic, data)["out.torso"]
    assert (torso - torch.as_tensor(data["out.torso"])).abs().max() > 1e-3


def test_parameter_counts_equal_upstreams(models_dir):
    for name, expected in UPSTREAM_PARAMETERS.items():
        actor_critic, config = load_upstream_checkpoint(models_dir / name)
        counts = actor_critic.parameter_counts()
        assert counts["total"] == expected == config["num_params"], name
        assert counts["total"] == counts["torso"] + counts["recurrent"] + counts["actor"] + counts["critic"]
        assert f"{expected:,}" in actor_critic.summary()


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"permutation_invariant_mlp": True},
        {"transformer_ffn": True, "multilayer_joint_thruster_mixing": True, "aggregate_mode": "dummy"},
        {"aggregate_mode": "mean", "full_attention_mask": True, "activation": "relu", "recurrent_model": True},
    ],
)
def test_every_parameter_has_an_upstream_name_and_survives_a_round_trip(tmp_path, models_dir, options):
    """Save -> load gives the same parameters and outputs, for non-default architectures too."""
    config = read_checkpoint_config(models_dir / "entity_transformer_continuous")
    obs_spec, action_spec = specs_from_config(config)
    torch.manual_seed(0)
    actor_critic = make_actor_critic(obs_spec, action_spec, ModelConfig(**options))
    with torch.no_grad():
        for param in actor_critic.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    # torch's GRU has hidden biases for r and z that upstream has not (folded on save)
    extra = 2 * 256 if actor_critic.recurrent else 0
    assert sum(p.numel() for p in actor_critic.parameters()) == actor_critic.parameter_counts()["total"] + extra
    save_upstream_checkpoint(tmp_path / "ckpt", actor_critic, config)
    loaded, saved_config = load_upstream_checkpoint(tmp_path / "ckpt")
    assert saved_config["model"] == ModelConfig(**options).to_upstream()
    data = _first_steps(np.load(models_dir / "entity_transformer_continuous.io.npz"), steps=4, batch=4)
    before, after = run_upstream_call(actor_critic, data), run_upstream_call(loaded, data)
    # exact, except that folding the GRU's r/z hidden biases into the input biases rounds differently
    tolerance = 1e-5 if actor_critic.recurrent else 0.0
    for key in before:
        torch.testing.assert_close(after[key], before[key], atol=tolerance, rtol=tolerance, msg=key)
    saved = upstream_state_dict(loaded)
    for key, tensor in upstream_state_dict(actor_critic).items():
        torch.testing.assert_close(saved[key], tensor, atol=0, rtol=0, msg=key)


def test_resaving_an_upstream_checkpoint_is_byte_identical(models_dir, tmp_path):
    actor_critic, config = load_upstream_checkpoint(models_dir / SMALL)
    save_upstream_checkpoint(tmp_path, actor_critic, config)
    assert (tmp_path / "params.safetensors").read_bytes() == (models_dir / SMALL / "params.safetensors").read_bytes()
    assert json.loads((tmp_path / "config.json").read_text()) == config


def test_bad_checkpoints_raise_clear_errors(models_dir, tmp_path):
    folder = _copy_case(models_dir, tmp_path)
    params = folder / "params.safetensors"
    params.write_bytes(params.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable safetensors file") as error:
        load_upstream_checkpoint(folder)
    assert str(params) in str(error.value)
    shutil.copy(models_dir / SMALL / "params.safetensors", params)
    config = json.loads((folder / "config.json").read_text())
    for key, value, message in [
        ("observation_type", "symbolic_3d", "unknown observation_type 'symbolic_3d'"),
        ("action_type", "hybrid", "unknown action_type 'hybrid'"),
    ]:
        (folder / "config.json").write_text(json.dumps({**config, key: value}))
        with pytest.raises(ValueError, match=message) as error:
            load_upstream_checkpoint(folder)
        assert str(folder / "config.json") in str(error.value)
    (folder / "config.json").write_text(json.dumps({**config, "model": {**config["model"], "actor_width": 64}}))
    with pytest.raises(ValueError, match="shape") as error:
        load_upstream_checkpoint(folder)
    assert str(params) in str(error.value)


# ------------------------------------------------------------------------------------------------
# The multi-categorical policy


def test_multi_categorical_matches_a_brute_force_joint_distribution():
    torch.manual_seed(1)
    nvec = [3, 2, 4]
    logits = torch.randn(5, sum(nvec)) * 2
    dist = MultiCategorical(logits, nvec)
    per_slot = [torch.softmax(part, -1) for part in logits.split(nvec, -1)]
    joint_entropy = torch.zeros(5)
    best = torch.full((5,), -1.0)
    mode = torch.zeros(5, len(nvec), dtype=torch.long)
    for combo in itertools.product(*(range(n) for n in nvec)):
        action = torch.tensor(combo).expand(5, -1)
        prob = math.prod(p[:, c] for p, c in zip(per_slot, combo))
        torch.testing.assert_close(dist.log_prob(action), prob.log(), atol=1e-6, rtol=1e-6)
        joint_entropy -= prob * prob.log()
        better = prob > best
        best = torch.where(better, prob, best)
        mode[better] = torch.tensor(combo)
    torch.testing.assert_close(dist.entropy(), joint_entropy, atol=1e-5, rtol=1e-6)
    assert torch.equal(dist.mode, mode) and torch.equal(dist.deterministic_sample, mode)
    samples = dist.sample((4000,))
    assert samples.shape == (4000, 5, 3) and samples.dtype == torch.int64
    assert ((samples >= 0) & (samples < torch.tensor(nvec))).all()
    frequency = (samples[:, :, 0] == 0).float().mean(0)
    torch.testing.assert_close(frequency, per_slot[0][:, 0], atol=0.05, rtol=0)
    with pytest.raises(ValueError, match="nvec"):
        MultiCategorical(logits, [3, 3])


# ------------------------------------------------------------------------------------------------
# Specs only, on real env outputs


@pytest.fixture(scope="module")
def levels_m(levels_dir):
    return [levels_dir / "m" / "h5_angry_birds.json", levels_dir / "m" / "h0_unicycle.json"]


@pytest.mark.parametrize("observation_type", OBSERVATION_TYPES)
def test_networks_from_specs_run_on_env_outputs(observation_type, levels_m, models_dir):
    for action_type in ACTION_TYPES:
        env = kinetix_torch.make_env(observation_type, action_type, "m", levels=levels_m, num_envs=3)
        options = [{}, {"permutation_invariant_mlp": True}] if observation_type == "symbolic_entity" else [{}]
        for option in options:
            config = ModelConfig(**option)
            actor_critic = make_actor_critic(env.observation_spec["observation"], env.action_spec, config)
            td = actor_critic.policy(env.reset())
            assert td["action"].shape == env.action_spec.shape
            if action_type == "continuous":  # unsquashed, as upstream: the env clips
                assert td["action"].dtype == torch.float32
            else:
                assert env.action_spec.is_in(td["action"])
            dist = actor_critic.policy.get_dist(td.clone())
            torch.testing.assert_close(dist.log_prob(td["action"]), td["action_log_prob"])
            value = actor_critic.value(td)["state_value"]
            assert value.shape == (3, 1) and value.isfinite().all() and td["action_log_prob"].isfinite().all()
    if observation_type == "symbolic_entity":  # the golden files use the env's field names and widths
        golden = np.load(models_dir / "entity_transformer_multi_discrete.io.npz")
        observation = env.reset()["observation"]
        assert {f"obs.{key}" for key in observation.keys()} == {k for k in golden.files if k.startswith("obs.")}
        for key in observation.keys():
            assert tuple(observation[key].shape[1:]) == golden[f"obs.{key}"].shape[2:], key


def test_recurrent_steps_match_one_recurrent_mode_pass(models_dir):
    """Step-by-step policy calls (GRU state threaded, zeroed at is_init as the env's primer does)
    give the log-probs and values of one recurrent-mode pass over the [B, T] sequence."""
    actor_critic, _ = load_upstream_checkpoint(models_dir / "flat_mlp_multi_discrete_rnn")
    assert actor_critic.make_primer() is not None and set(actor_critic.policy.in_keys) == {
        "observation",
        "is_init",
        "recurrent_state",
    }
    data = np.load(models_dir / "flat_mlp_multi_discrete_rnn.io.npz")
    observation = torch.as_tensor(data["obs"]).transpose(0, 1)[:, :12]
    batch, steps = observation.shape[:2]
    is_init = torch.zeros(batch, steps, 1, dtype=torch.bool)
    is_init[:, 0] = is_init[::3, 5] = is_init[1::4, 9] = True
    state = torch.rand(batch, 1, 256)  # overwritten at t = 0 (is_init)
    steps_td = []
    with torch.no_grad():
        for t in range(steps):
            state = torch.where(is_init[:, t, :, None], 0.0, state)
            td = TensorDict(
                {"observation": observation[:, t], "is_init": is_init[:, t], "recurrent_state": state}, [batch]
            )
            td = actor_critic.policy(td)
            td["state_value"] = actor_critic.value(td.clone())["state_value"]
            steps_td.append(td)
            state = td["next", "recurrent_state"]
        rollout = torch.stack(steps_td, 1)
        with set_recurrent_mode(True):
            log_prob = actor_critic.policy.get_dist(rollout.clone()).log_prob(rollout["action"])
            values = actor_critic.value(rollout.clone())["state_value"]
    torch.testing.assert_close(log_prob, rollout["action_log_prob"], atol=1e-5, rtol=0)
    torch.testing.assert_close(values, rollout["state_value"], atol=1e-5, rtol=0)
    # the reset matters: without it the sequence pass differs
    with torch.no_grad(), set_recurrent_mode(True):
        no_reset = rollout.clone()
        no_reset["is_init"][:, 1:] = False
        changed = actor_critic.value(no_reset)["state_value"]
    assert (changed - values).abs().max() > 1e-4


def test_recurrent_policy_drives_the_env(levels_dir):
    """InitTracker + the primer make a recurrent policy usable in env.rollout (no steps: reset only)."""
    env = kinetix_torch.make_env(
        "symbolic_flat", "multi_discrete", "s", levels=levels_dir / "s" / "h4_thrust_aim.json", num_envs=2
    )
    actor_critic = make_actor_critic(
        env.observation_spec["observation"], env.action_spec, ModelConfig(recurrent_model=True)
    )
    env = TransformedEnv(env, Compose(InitTracker(), actor_critic.make_primer()))
    td = actor_critic.policy(env.reset())
    assert td["is_init"].all() and td["recurrent_state"].shape == (2, 1, 256)
    assert td["next", "recurrent_state"].abs().sum() > 0
