"""The state schema: golden files match it, and numpy <-> TensorDict <-> JAX conversions are exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kinetix_torch import schema
from kinetix_torch.params import EnvParams, StaticEnvParams, static_params_for_size


@pytest.mark.parametrize("size", ["s", "m", "l"])
def test_golden_init_states_match_the_schema(golden_dir, size):
    files = sorted((golden_dir / "random" / size).glob("*.init.npz"))
    assert files
    for f in files[:4]:
        flat = dict(np.load(f))
        schema.validate(flat, static_params_for_size(size), where=str(f))
        assert set(flat) == set(schema.FIELD_BY_KEY)


def test_round_trip_numpy_tensordict_jax(golden_dir):
    flat = dict(np.load(golden_dir / "random/l/seed_0000.init.npz"))
    batched = {k: np.stack([v, v]) for k, v in flat.items()}
    td = schema.to_tensordict(batched, (2,))
    assert td.batch_size == torch.Size([2])
    assert td["polygon", "position"].shape == (2, 12, 2)
    back = schema.tensordict_to_numpy(schema.jax_to_torch(schema.to_jax(td), (2,)))
    for key, value in batched.items():
        assert back[key].dtype == value.dtype, key
        np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_validate_names_the_bad_field():
    static = static_params_for_size("s")
    flat = schema.allocate(static)
    flat["joint.a_index"] = np.zeros(3, np.int32)
    with pytest.raises(ValueError, match=r"'joint.a_index' has shape \(3,\), expected \(1,\)"):
        schema.validate(flat, static)
    flat = schema.allocate(static)
    flat["polygon.active"] = flat["polygon.active"].astype(np.int32)
    with pytest.raises(ValueError, match="'polygon.active' has dtype int32, expected bool"):
        schema.validate(flat, static)
    del flat["gravity"]
    with pytest.raises(ValueError, match=r"missing field\(s\) \['gravity'\]"):
        schema.validate(flat, static)


def test_params_hash_and_compare_by_value():
    assert static_params_for_size("m") == StaticEnvParams(num_polygons=6, num_circles=3, num_joints=2, num_thrusters=2, frame_skip=2)
    assert hash(EnvParams()) == hash(EnvParams(dt=1 / 60))
    assert EnvParams(dt=0.01) != EnvParams()
    with pytest.raises(ValueError, match="unknown parameter"):
        EnvParams.from_dict({"dtt": 0.1})
    with pytest.raises(ValueError, match="unknown env size"):
        static_params_for_size("xl")
