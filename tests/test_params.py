"""Parameters parse by their declared types, and every valid value that saves also loads back."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from kinetix_torch import levels, schema
from kinetix_torch.generate import load_bank, save_bank
from kinetix_torch.params import EnvParams, StaticEnvParams


def _changed_value(value):
    """A valid value of the same declared type that differs from ``value`` (non-integral floats)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, tuple):
        return tuple(v + 4 for v in value)
    if isinstance(value, int):
        return value + 1
    return value * 1.37 + 0.123


ENV_FIELDS = [f.name for f in dataclasses.fields(EnvParams)]
STATIC_FIELDS = [f.name for f in dataclasses.fields(StaticEnvParams)]


@pytest.mark.parametrize("name", ENV_FIELDS)
def test_env_param_saves_and_loads_back(name, levels_dir, tmp_path):
    level = levels.load_level(levels_dir / "s" / "h4_thrust_aim.json")
    params = level.env_params.replace(**{name: _changed_value(getattr(level.env_params, name))})
    levels.save_level(tmp_path / "level.json", level.state, level.static, params)
    # A level file's episode length is not the level's to set: the loader keeps the default (as upstream).
    assert levels.load_level(tmp_path / "level.json").env_params == params.replace(max_timesteps=EnvParams().max_timesteps)
    bank = schema.to_tensordict({k: torch.as_tensor(v)[None] for k, v in level.state.items()}, (1,))
    for suffix in (".pt", ".npz"):
        save_bank(tmp_path / f"bank{suffix}", bank, level.static, params)
        assert load_bank(tmp_path / f"bank{suffix}")[2] == params


@pytest.mark.parametrize("name", STATIC_FIELDS)
def test_static_param_round_trips_through_json(name):
    static = StaticEnvParams()
    changed = static.replace(**{name: _changed_value(getattr(static, name))})
    assert StaticEnvParams.from_dict(json.loads(json.dumps(changed.to_dict()))) == changed


def test_float_params_accept_non_integral_values():
    parsed = EnvParams.from_dict({"clip_position": 12.5, "clip_velocity": 99.9, "clip_angular_velocity": 3.25})
    assert (parsed.clip_position, parsed.clip_velocity, parsed.clip_angular_velocity) == (12.5, 99.9, 3.25)
    assert isinstance(EnvParams.from_dict({"clip_position": 15}).clip_position, float)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"dt": 0}, "dt must be a finite number"),
        ({"dt": -0.1}, "dt must be a finite number"),
        ({"dt": math.nan}, "dt must be a finite number"),
        ({"dt": True}, "env_params.dt: expected a float"),
        ({"max_timesteps": 2.5}, "max_timesteps: expected a int"),
        ({"max_timesteps": -3}, "max_timesteps must be an int >= 1"),
        ({"pixels_per_unit": 0}, "pixels_per_unit must be > 0"),
    ],
)
def test_bad_env_params_are_rejected(values, message):
    with pytest.raises(ValueError, match=message):
        EnvParams.from_dict(values, where="level.json: env_params")


@pytest.mark.parametrize(
    "values, message",
    [
        ({"frame_skip": 0}, "frame_skip must be >= 1"),
        ({"downscale": 0}, "downscale must be >= 1"),
        ({"screen_dim": (0, 500)}, "screen_dim must be two sizes >= 1"),
    ],
)
def test_bad_static_params_are_rejected_at_construction(values, message):
    with pytest.raises(ValueError, match=message):
        StaticEnvParams(**values)
