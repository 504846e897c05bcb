"""One validator at every way in: each broken input class is rejected, with the same message, by
JSON load and save, bank save and load (.pt and .npz), the env's levels TensorDict and the env's
sampler output; every legitimate level (handmade, upstream's random and mutated, ours) passes."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from kinetix_torch import schema
from kinetix_torch.env import KinetixEnv
from kinetix_torch.generate import load_bank, sample_levels, save_bank
from kinetix_torch.levels import ENTITY_LISTS, LevelFormatError, load_level, save_level, validate_level
from kinetix_torch.params import EnvParams, StaticEnvParams, static_params_for_size
from kinetix_torch.validation import BOUNDS, check_levels, level_problems

STATIC_S = static_params_for_size("s")
BANK_LEVELS = ("h0_weak_thrust", "h1_thrust_over_ball", "h3_point_the_thruster", "h4_thrust_aim")
BROKEN = 2
"""Index of the broken level in every bank; it is built from ``s/h3_point_the_thruster``: polygon 4
and circle 0 joined by joint 0, circle 0 carrying thruster 0, every shape active."""


def _set(key, index, value):
    def edit(state):
        state[key][index] = value

    return edit


def _edits(*edits):
    def edit(state):
        for e in edits:
            e(state)

    return edit


def _reverse_live_vertices(state):
    state["polygon.vertices"][4, :4] = state["polygon.vertices"][4, 3::-1].copy()


def _collinear_triangle(state):
    state["polygon.n_vertices"][4] = 3
    state["polygon.vertices"][4, :3] = [[-0.2, -0.2], [0.0, 0.0], [0.2, 0.2]]


CASES = {
    "nan position": (
        _set("circle.position", (1, 1), np.nan), r"circle\.position\[1, 1\] = nan: expected a finite number"
    ),
    "joint index out of range": (
        _set("joint.b_index", 0, 7),
        r"joint\.b_index\[0\] = 7: expected the index of an active shape, in \[0, 7\) \(num_shapes\)",
    ),
    "n_vertices 9": (_set("polygon.n_vertices", 4, 9), r"polygon\.n_vertices\[4\] = 9: expected in \[3, 5\)"),
    "role 7": (
        _set("circle_shape_roles", 1, 7), r"circle_shape_roles\[1\] = 7: expected in \[0, 4\) \(num_shape_roles"
    ),
    "1e30 position": (
        _set("polygon.position", (4, 0), 1e30),
        r"polygon\.position\[4, 0\] = 1e\+30: expected in \[-30, 30\] \(±2·clip_position\)",
    ),
    "1e30 vertex": (
        _set("polygon.vertices", (4, 2, 1), 1e30),
        r"polygon\.vertices\[4, 2, 1\] = 1e\+30: expected in \[-2, 2\] \(±max_shape_size\)",
    ),
    "1e30 friction": (_set("circle.friction", 1, 1e30), r"circle\.friction\[1\] = 1e\+30: expected in \[0, 10\]"),
    "repeated vertex": (
        lambda state: _set("polygon.vertices", (4, 2), state["polygon.vertices"][4, 1])(state),
        r"polygon\.vertices\[4\] = \[.*\]: expected its n_vertices = 4 live vertices in clockwise order",
    ),
    "collinear vertices": (
        _collinear_triangle,
        r"polygon\.vertices\[4\] = \[.*\]: expected its n_vertices = 3 live vertices in clockwise order",
    ),
    "counter-clockwise polygon": (
        _reverse_live_vertices,
        r"polygon\.vertices\[4\] = \[.*\]: expected its n_vertices = 4 live vertices in clockwise order",
    ),
    "joint to an inactive shape": (
        _set("polygon.active", 4, False),
        r"joint\.a_index\[0\] = 4: expected the index of an active shape",
    ),
    "joint to itself": (
        _set("joint.b_index", 0, 4), r"joint\.b_index\[0\] = 4: expected a shape other than joint\.a_index = 4"
    ),
    "thruster on an inactive shape": (
        _edits(_set("joint.active", 0, False), _set("polygon.active", 4, False), _set("thruster.object_index", 0, 4)),
        r"thruster\.object_index\[0\] = 4: expected the index of an active shape",
    ),
}


@pytest.fixture(scope="module")
def bank_levels(levels_dir):
    """The four S levels of every bank, as flat numpy states."""
    return [load_level(levels_dir / "s" / f"{name}.json") for name in BANK_LEVELS]


def broken_state(bank_levels, case) -> dict:
    state = {k: v.copy() for k, v in bank_levels[BROKEN].state.items()}
    CASES[case][0](state)
    return state


def bank_of(states):
    return schema.to_tensordict({k: np.stack([s[k] for s in states]) for k in states[0]}, (len(states),))


def broken_bank(bank_levels, case):
    states = [level.state for level in bank_levels]
    states[BROKEN] = broken_state(bank_levels, case)
    return bank_of(states)


def _json_value(array: np.ndarray):
    return {str(i): _json_value(v) for i, v in enumerate(array)} if array.ndim else array.item()


def broken_json(levels_dir, bank_levels, case) -> dict:
    """The level file of the broken level, with the broken fields written in (bypassing save's checks)."""
    data = json.loads((levels_dir / "s" / f"{BANK_LEVELS[BROKEN]}.json").read_text())
    original, state = bank_levels[BROKEN].state, broken_state(bank_levels, case)
    changed = {k for k in state if not np.array_equal(state[k], original[k], equal_nan=True)}
    assert changed
    for entity in ENTITY_LISTS:
        for json_key, flat_key in entity.keys.items():
            if flat_key in changed:
                for row, entry in enumerate(data["env_state"][entity.name]):
                    entry[json_key] = _json_value(state[flat_key][row])
                changed.discard(flat_key)
    assert not changed, f"no level-file key for {changed}"
    return data


# --------------------------------------------------------------------------------------------------
# Every broken input class, through every way in


@pytest.mark.parametrize("case", list(CASES))
def test_json_load_and_save_reject(levels_dir, bank_levels, tmp_path, case):
    pattern = CASES[case][1]
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken_json(levels_dir, bank_levels, case)))
    with pytest.raises(LevelFormatError, match=rf"^{re.escape(str(path))}: {pattern}"):
        load_level(path)
    level = bank_levels[BROKEN]
    with pytest.raises(LevelFormatError, match=rf"^state to save: {pattern}"):
        save_level(tmp_path / "never.json", broken_state(bank_levels, case), level.static, level.env_params)
    assert not (tmp_path / "never.json").exists()


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
@pytest.mark.parametrize("case", list(CASES))
def test_bank_save_and_load_reject(bank_levels, tmp_path, case, suffix):
    pattern = CASES[case][1]
    path = tmp_path / f"bank{suffix}"
    bad = broken_bank(bank_levels, case)
    with pytest.raises(LevelFormatError, match=rf"^bank {re.escape(str(path))} level {BROKEN}: {pattern}"):
        save_bank(path, bad, STATIC_S)
    assert not path.exists()
    # A bank file written by something else: a good bank with the broken level patched in.
    save_bank(path, bank_of([level.state for level in bank_levels]), STATIC_S)
    if suffix == ".pt":
        payload = torch.load(path, weights_only=True)
        payload["levels"] = schema.tensordict_to_flat_tensors(bad)
        torch.save(payload, path)
    else:
        with np.load(path) as stored:
            arrays = dict(stored)
        arrays.update(schema.tensordict_to_numpy(bad))
        np.savez(path, **arrays)
    with pytest.raises(LevelFormatError, match=rf"^bank {re.escape(str(path))} level {BROKEN}: {pattern}"):
        load_bank(path)


@pytest.mark.parametrize("case", list(CASES))
def test_env_levels_tensordict_rejects(bank_levels, case):
    with pytest.raises(LevelFormatError, match=rf"^levels TensorDict level {BROKEN}: {CASES[case][1]}"):
        KinetixEnv(broken_bank(bank_levels, case), num_envs=4, observation_type="blind", static_env_params=STATIC_S)


@pytest.mark.parametrize("case", list(CASES))
def test_env_sampler_output_rejects(bank_levels, case):
    bank = broken_bank(bank_levels, case)
    env = KinetixEnv(
        sampler=lambda n: bank[torch.arange(n) % len(bank)], num_envs=4, observation_type="blind",
        static_env_params=STATIC_S,
    )
    with pytest.raises(LevelFormatError, match=rf"^level sampler output level {BROKEN}: {CASES[case][1]}"):
        env.reset()


def test_list_of_levels_names_the_level(bank_levels):
    broken = bank_levels[BROKEN]
    levels = list(bank_levels)
    levels[BROKEN] = type(broken)(broken_state(bank_levels, "1e30 friction"), broken.static, broken.env_params, "mine")
    with pytest.raises(LevelFormatError, match=r"^mine: circle\.friction\[1\] = 1e\+30"):
        KinetixEnv(levels, num_envs=4, observation_type="blind")


@pytest.mark.parametrize("dt", [0.0, -0.01, float("nan"), True])
def test_bad_dt_is_rejected_at_every_way_in(levels_dir, bank_levels, tmp_path, dt):
    data = json.loads((levels_dir / "s" / f"{BANK_LEVELS[0]}.json").read_text())
    data["env_params"]["dt"] = dt
    path = tmp_path / "dt.json"
    path.write_text(json.dumps(data))
    with pytest.raises(LevelFormatError, match=rf"^{re.escape(str(path))}: env_params.*dt"):
        load_level(path)
    bank = tmp_path / "bank.pt"
    save_bank(bank, bank_of([level.state for level in bank_levels]), STATIC_S)
    payload = torch.load(bank, weights_only=True)
    payload["env_params"]["dt"] = dt
    torch.save(payload, bank)
    with pytest.raises(ValueError, match=rf"^bank {re.escape(str(bank))}: env_params.*dt"):
        load_bank(bank)
    with pytest.raises(ValueError, match="dt"):
        EnvParams(dt=dt)


# --------------------------------------------------------------------------------------------------
# What the rules allow


def test_every_legitimate_level_passes(levels_dir, golden_dir):
    """All 74 handmade levels (loading checks them), upstream's random levels and its mutators'
    inputs and outputs, and a few hundred of our random levels per size."""
    handmade = sorted(levels_dir.glob("*/*.json"))
    assert len(handmade) == 74
    by_size = {}
    for path in handmade:
        by_size.setdefault(path.parent.name, []).append(load_level(path))
    for size, levels in by_size.items():
        static = static_params_for_size(size)
        flat = {k: torch.from_numpy(np.stack([lvl.state[k] for lvl in levels])) for k in levels[0].state}
        check_levels(flat, static, levels[0].env_params, names=[lvl.name for lvl in levels])
    upstream = 0
    for sidecar in sorted((golden_dir / "random").glob("*/seed_*.json")):
        meta = json.loads(sidecar.read_text())
        with np.load(sidecar.with_name(f"{sidecar.stem}.init.npz")) as init:
            state = dict(init)
        validate_level(state, StaticEnvParams.from_dict(meta["static_env_params"]), where=sidecar.stem)
        upstream += 1
    for size in ("s", "m", "l"):
        meta = json.loads((golden_dir / "mutators" / size / "mutators.json").read_text())
        static = StaticEnvParams.from_dict(meta["static_env_params"])
        for archive in sorted((golden_dir / "mutators" / size).glob("*.npz")):
            with np.load(archive) as data:
                for part in ("input.", "output."):
                    flat = {k[len(part):]: torch.from_numpy(data[k]) for k in data.files if k.startswith(part)}
                    check_levels(flat, static, where=f"{archive.name} {part}")
                    upstream += len(flat["timestep"])
    assert upstream == 96 + 3 * 13 * 2 * 8
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: one thread is several times faster
    try:
        for size in ("s", "m", "l"):
            levels = sample_levels(300, size, generator=torch.Generator().manual_seed(11))
            check_levels(levels, static_params_for_size(size), where=f"generated {size}")
    finally:
        torch.set_num_threads(threads)


def test_inactive_slots_need_only_be_finite(bank_levels):
    """Inactive slots hold whatever was left there (upstream writes 256 into unused joint
    anchors); only their floats' finiteness counts."""
    level = bank_levels[0]  # polygon 4 and joint 0 inactive
    state = {k: v.copy() for k, v in level.state.items()}
    assert not state["polygon.active"][4] and not state["joint.active"][0]
    state["polygon.position"][4] = 1e30
    state["polygon.n_vertices"][4] = 9
    state["joint.a_index"][0] = 99
    validate_level(state, level.static)
    state["polygon.velocity"][4, 0] = np.inf
    with pytest.raises(LevelFormatError, match=r"polygon\.velocity\[4, 0\] = inf: expected a finite number"):
        validate_level(state, level.static)


def test_bounds_follow_the_env_params(bank_levels):
    level = bank_levels[BROKEN]
    state = {k: v.copy() for k, v in level.state.items()}
    state["circle.velocity"][1, 0] = 150.0
    with pytest.raises(LevelFormatError, match=r"circle\.velocity\[1, 0\] = 150: expected in \[-100, 100\]"):
        validate_level(state, level.static, env_params=level.env_params)
    validate_level(state, level.static, env_params=level.env_params.replace(clip_velocity=200.0))


def test_level_problems_names_each_rule(bank_levels):
    """Every rule of the table reports the level that breaks it, and only that one."""
    static = STATIC_S
    for case, rule in [
        ("nan position", "non_finite"), ("joint index out of range", "joint_ends"), ("n_vertices 9", "n_vertices"),
        ("role 7", "role_range"), ("1e30 position", "position"), ("1e30 vertex", "shape_size"),
        ("1e30 friction", "friction"), ("counter-clockwise polygon", "polygon_shape"),
        ("joint to itself", "joint_joins_itself"), ("thruster on an inactive shape", "thruster_parent"),
    ]:
        problems = level_problems(broken_bank(bank_levels, case), static)
        assert problems[rule].tolist() == [i == BROKEN for i in range(len(BANK_LEVELS))], case
    good = level_problems(bank_of([bank_levels[BROKEN].state]), static)
    assert not any(bad.any() for bad in good.values())
    assert {b.rule for b in BOUNDS} <= set(good)
    assert math.isclose(next(b for b in BOUNDS if b.rule == "offset").high(static, EnvParams()), 30 * math.sqrt(2))
