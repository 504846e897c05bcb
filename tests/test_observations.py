"""Symbolic observations against upstream's recorded observations of the same states, and specs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tensordict import TensorDictBase

from kinetix_torch import schema
from kinetix_torch.observations import OBSERVATION_TYPES, observation_spec, observe
from kinetix_torch.observations.symbolic import flat_size, padded_shape
from kinetix_torch.params import EnvParams, StaticEnvParams, static_params_for_size

FEATURE_ATOL = 1e-5
"""Float features: sin/cos/tanh of float32 inputs in torch vs XLA differ by an ulp or two."""


def _recorded(golden_dir, size: str):
    """Every recorded state row of every golden trajectory of one size, with upstream's observations."""
    states, flat, entity, static = [], [], {}, None
    for sidecar in sorted(golden_dir.glob(f"[hr]*/{size}/*.json")):
        static = StaticEnvParams.from_dict(json.loads(sidecar.read_text())["static_env_params"])
        for action_type in ("multi_discrete", "continuous"):
            data = np.load(sidecar.with_name(f"{sidecar.stem}.traj.{action_type}.npz"))
            states.append({k[len("state.") :]: data[k] for k in data.files if k.startswith("state.")})
            flat.append(data["obs.symbolic_flat"])
            for k in data.files:
                if k.startswith("obs.symbolic_entity."):
                    entity.setdefault(k[len("obs.symbolic_entity.") :], []).append(data[k])
    assert states, f"no golden trajectories of size {size} under {golden_dir}"
    stacked = {k: np.concatenate([s[k] for s in states]) for k in states[0]}
    rows = len(stacked["timestep"])
    state = schema.to_tensordict(stacked, (rows,))
    return state, static, np.concatenate(flat), {k: np.concatenate(v) for k, v in entity.items()}


@pytest.mark.parametrize("size", ["s", "m", "l"])
def test_symbolic_flat_and_entity_equal_upstream(golden_dir, size):
    state, static, flat, entity = _recorded(golden_dir, size)
    params = EnvParams()
    got = observe(state, static, params, "symbolic_flat")
    assert got.shape == flat.shape and flat.shape[1] == flat_size(static)
    np.testing.assert_allclose(got.numpy(), flat, rtol=0, atol=FEATURE_ATOL)
    got = observe(state, static, params, "symbolic_entity")
    assert sorted(got.keys()) == sorted(entity)
    for key, expected in entity.items():
        value = got[key].numpy()
        assert value.dtype == expected.dtype and value.shape == expected.shape, key
        if expected.dtype == np.float32:
            np.testing.assert_allclose(value, expected, rtol=0, atol=FEATURE_ATOL, err_msg=key)
        else:
            np.testing.assert_array_equal(value, expected, err_msg=key)
    assert entity["attention_mask"][:, 3].any(), "no active manifold in the data: the manifold layer is untested"


def test_flat_padded_rows_are_the_flat_rows(golden_dir):
    """Padded rows = the flat observation's entity rows (zero-padded), a one-hot object type, gravity / 10."""
    state, static, flat, _ = _recorded(golden_dir, "m")
    padded = observe(state, static, EnvParams(), "symbolic_flat_padded").numpy()
    rows, width = padded_shape(static)
    assert padded.shape == (len(flat), rows, width)
    N, J, T, C = static.num_shapes, static.num_joints, static.num_thrusters, static.num_circles
    P = static.num_polygons - static.num_static_fixated_polys + 1
    sizes = [(P, 26), (C, 18), (J, 22 + 2 * N), (T, 8 + N)]
    start, row = 0, 0
    for kind, (count, features) in enumerate(sizes):
        block = flat[:, start : start + count * features].reshape(len(flat), count, features)
        np.testing.assert_allclose(padded[:, row : row + count, :features], block, atol=FEATURE_ATOL)
        assert not padded[:, row : row + count, features : width - 5].any()
        kind_columns = padded[:, row : row + count, width - 5 : width - 1]
        np.testing.assert_array_equal(kind_columns, np.broadcast_to(np.eye(4)[kind], kind_columns.shape))
        start, row = start + count * features, row + count
    np.testing.assert_allclose(padded[:, :, -1], np.repeat(flat[:, -1:], rows, axis=1), atol=FEATURE_ATOL)


def test_blind_is_a_timestep_one_hot():
    static = static_params_for_size("s")
    state = schema.to_tensordict(schema.allocate(static, (3,)), (3,))
    state["timestep"] = torch.tensor([0, 5, 300], dtype=torch.int32)
    got = observe(state, static, EnvParams(max_timesteps=10), "blind")
    expected = torch.zeros(3, 11)
    expected[0, 0] = expected[1, 5] = 1.0  # beyond max_timesteps: all zeros, as jax.nn.one_hot
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_nan_state_gives_finite_observations(golden_dir):
    state, static, _, _ = _recorded(golden_dir, "s")
    state = state[:4].clone()
    state["polygon", "position"][0, 4] = float("nan")
    state["circle", "angular_velocity"][1, 0] = float("inf")
    for observation_type in ("symbolic_flat", "symbolic_flat_padded", "symbolic_entity"):
        obs = observe(state, static, EnvParams(), observation_type)
        leaves = obs.values(True, True) if isinstance(obs, TensorDictBase) else [obs]
        assert all(torch.isfinite(v.float()).all() for v in leaves), observation_type


@pytest.mark.parametrize("observation_type", OBSERVATION_TYPES)
def test_observations_fit_their_spec(golden_dir, observation_type):
    state, static, _, _ = _recorded(golden_dir, "s")
    state = state[:8]
    spec = observation_spec(observation_type, static, EnvParams(), (8,))
    obs = observe(state, static, EnvParams(), observation_type)
    assert spec.is_in(obs), f"{observation_type} observation outside its spec"
    assert spec.zero().shape == obs.shape


def test_unknown_observation_type():
    with pytest.raises(ValueError, match="unknown observation_type 'rgb'"):
        observe(None, static_params_for_size("s"), EnvParams(), "rgb")
