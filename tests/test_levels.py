"""Level JSON loading, saving, validation, padding and banks (stacked levels and bank files),
against upstream's golden data."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from kinetix_torch import schema
from kinetix_torch.generate import sample_levels
from kinetix_torch.levels import (
    Level,
    LevelFormatError,
    level_bank_to_tensordict,
    level_from_json_dict,
    level_to_json_dict,
    load_bank,
    load_level,
    load_level_json,
    load_levels_dir,
    pad_state,
    save_bank,
    save_level,
    save_level_json,
    stack_levels,
    validate_level,
)
from kinetix_torch.params import EnvParams, StaticEnvParams, static_params_for_size
from kinetix_torch.topology import collision_matrix

SIZES = ("s", "m", "l")
BASE_LEVEL = "s/h0_weak_thrust.json"


@pytest.fixture(scope="module")
def level_files(levels_dir) -> list[Path]:
    files = sorted(levels_dir.glob("*/*.json"))
    assert {f.parent.name for f in files} == set(SIZES), f"expected levels of every size under {levels_dir}"
    return files


@pytest.fixture(scope="module")
def loaded(level_files) -> dict[str, Level]:
    """Every shared level, loaded once, keyed by ``<size>/<name>``."""
    return {f"{f.parent.name}/{f.stem}": load_level(f) for f in level_files}


@pytest.fixture
def base_dict(levels_dir) -> dict:
    return json.loads((levels_dir / BASE_LEVEL).read_text())


def assert_states_equal(a: dict, b: dict, context: str) -> None:
    assert set(a) == set(b), f"{context}: keys differ: {sorted(set(a) ^ set(b))}"
    for key in a:
        assert a[key].dtype == b[key].dtype, f"{context}: {key} dtype {a[key].dtype} != {b[key].dtype}"
        assert np.array_equal(a[key], b[key]), f"{context}: {key} differs"


# --------------------------------------------------------------------------------------------------
# Loading and saving the shared levels


def test_load_equals_golden_init(golden_dir, levels_dir):
    sidecars = sorted(golden_dir.glob("handmade/*/*.json"))
    assert sidecars, f"no handmade golden cases under {golden_dir}"
    for sidecar in sidecars:
        meta = json.loads(sidecar.read_text())
        level = load_level(levels_dir / meta["level_file"])
        with np.load(sidecar.with_name(sidecar.stem + ".init.npz")) as golden:
            assert_states_equal(level.state, dict(golden), meta["case"])
        assert level.env_params == EnvParams.from_dict(meta["env_params"]), meta["case"]
        assert level.static == StaticEnvParams.from_dict(meta["static_env_params"]), meta["case"]


def test_loaded_levels_validate_and_match_presets(loaded):
    for name, level in loaded.items():
        assert level.static == static_params_for_size(name.split("/")[0]), name
        assert level.env_params.max_timesteps == 256
        schema.validate(level.state, level.static, where=name)


def test_save_writes_the_editor_format(loaded, levels_dir):
    """Saving a loaded shared level reproduces its file's JSON object exactly (those files hold no
    highlighted flags, manifolds or stale collision matrices that loading would drop)."""
    for name, level in loaded.items():
        original = json.loads((levels_dir / f"{name}.json").read_text())
        assert level_to_json_dict(level.state, level.static, level.env_params) == original, name


def test_load_save_load_round_trip(loaded, tmp_path):
    for name, level in loaded.items():
        path = tmp_path / f"{name.replace('/', '_')}.json"
        save_level(path, level.state, level.static, level.env_params)
        again = load_level(path)
        assert_states_equal(again.state, level.state, name)
        assert again.static == level.static and again.env_params == level.env_params, name
    assert not list(tmp_path.glob(".*.tmp")), "atomic save left temporary files behind"


def test_round_trip_keeps_nondefault_values(loaded):
    level = loaded["s/h0_weak_thrust"]
    state = {k: v.copy() for k, v in level.state.items()}
    state["polygon.friction"][4] = np.float32(1 / 3)
    state["polygon_highlighted"][4] = True
    params = level.env_params.replace(dense_reward_scale=0.25, max_timesteps=100)
    static = level.static.replace(frame_skip=1, screen_dim=(600, 400))
    data = level_to_json_dict(state, static, params)
    assert data["env_state"]["polygon"][4]["highlighted"] is True
    again = level_from_json_dict(data)
    assert again.state["polygon.friction"][4] == np.float32(1 / 3)
    assert not again.state["polygon_highlighted"].any(), "highlighted must be dropped on load"
    assert again.env_params == params.replace(max_timesteps=256)
    assert again.static == static
    data["static_env_params"]["screen_dim"] = [600, 400]  # a plain list is accepted too
    assert level_from_json_dict(data).static == static


def test_load_ignores_stored_manifolds_and_collision_matrix(base_dict, loaded):
    env_state = base_dict["env_state"]
    env_state["acc_cr_manifolds"][3]["penetration"] = 0.5
    env_state["acc_rr_manifolds"][1]["active"] = True
    env_state["collision_matrix"]["0"]["1"] = False
    env_state["polygon"][4]["highlighted"] = True
    assert_states_equal(level_from_json_dict(base_dict).state, loaded["s/h0_weak_thrust"].state, "mutated")
    for entity in ("polygon", "circle"):
        for item in env_state[entity]:
            del item["highlighted"]
    assert_states_equal(level_from_json_dict(base_dict).state, loaded["s/h0_weak_thrust"].state, "no highlighted")


def test_load_does_not_modify_its_input(base_dict):
    snapshot = copy.deepcopy(base_dict)
    level_from_json_dict(base_dict)
    assert base_dict == snapshot


# --------------------------------------------------------------------------------------------------
# Padding


def test_pad_every_s_level_into_l(loaded, levels_dir):
    small, large = static_params_for_size("s"), static_params_for_size("l")
    added_polygons = large.num_polygons - small.num_polygons
    old_dims, new_dims = schema.dims_of(small), schema.dims_of(large)
    for name, level in loaded.items():
        if not name.startswith("s/"):
            continue
        padded = load_level(levels_dir / f"{name}.json", static=large)
        assert padded.static == large
        assert_states_equal(padded.state, pad_state(level.state, small, large), name)
        validate_level(padded.state, large, where=name)
        for f in schema.FIELDS:
            new, old = padded.state[f.key], level.state[f.key]
            if f.key in ("joint.a_index", "joint.b_index", "thruster.object_index"):
                shifted = np.where(old >= small.num_polygons, old + added_polygons, old)
                assert np.array_equal(new[: len(old)], shifted), f"{name}: {f.key}"
                assert not new[len(old) :].any(), f"{name}: {f.key} added slots"
            elif f.dims[:1] and f.dims[0] in ("P", "C", "J", "T"):
                n = old_dims[f.dims[0]]
                assert np.array_equal(new[:n], old), f"{name}: {f.key} live slots"
                assert not new[n : new_dims[f.dims[0]]].any(), f"{name}: {f.key} added slots not zero"
            elif f.key.startswith("acc_"):
                assert not new.any(), f"{name}: {f.key}"
            elif f.key != "collision_matrix":
                assert np.array_equal(new, old), f"{name}: {f.key}"
        expected_cm = collision_matrix(
            padded.state["joint.a_index"],
            padded.state["joint.b_index"],
            padded.state["joint.active"],
            large.num_shapes,
            np,
        )
        assert np.array_equal(padded.state["collision_matrix"], expected_cm), name
        # The shape each joint / thruster refers to is the same body after padding.
        for key in ("joint.a_index", "joint.b_index", "thruster.object_index"):
            live = padded.state[key.split(".")[0] + ".active"]
            for old_index, new_index in zip(
                level.state[key][live[: len(level.state[key])]], padded.state[key][live], strict=True
            ):
                assert _shape_position(level.state, small, old_index) == _shape_position(padded.state, large, new_index)


def _shape_position(state, static, index) -> tuple:
    kind, i = ("polygon", index) if index < static.num_polygons else ("circle", index - static.num_polygons)
    return tuple(state[f"{kind}.position"][i])


def test_pad_state_with_batch_dim(loaded):
    small, large = static_params_for_size("s"), static_params_for_size("l")
    levels = [loaded["s/h0_weak_thrust"], loaded["s/h6_unicycle_right"]]
    batch = {k: np.stack([lvl.state[k] for lvl in levels]) for k in levels[0].state}
    padded = pad_state(batch, small, large)
    validate_level(padded, large)
    for i, level in enumerate(levels):
        assert_states_equal({k: v[i] for k, v in padded.items()}, pad_state(level.state, small, large), level.name)


def test_padding_m_into_s_fails(levels_dir):
    path = levels_dir / "m" / "h0_unicycle.json"
    with pytest.raises(ValueError, match=r"h0_unicycle\.json.*num_polygons 6 > 5.*num_circles 3 > 2") as info:
        load_level(path, static=static_params_for_size("s"))
    assert "num_polygons=5" in str(info.value), "the message names the target"


def test_pad_rejects_different_vertex_count(loaded):
    with pytest.raises(ValueError, match="max_polygon_vertices"):
        pad_state(
            loaded["s/h0_weak_thrust"].state,
            static_params_for_size("s"),
            static_params_for_size("m", max_polygon_vertices=6),
        )


# --------------------------------------------------------------------------------------------------
# Errors


def _set(path: str, value):
    """A mutation that sets ``data[path]``; path like ``env_state.joint.0.active``."""

    def mutate(data):
        *parents, leaf = path.split(".")
        node = data
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[int(leaf) if isinstance(node, list) else leaf] = value

    return mutate


def _delete(path: str):
    def mutate(data):
        *parents, leaf = path.split(".")
        node = data
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        del node[int(leaf) if isinstance(node, list) else leaf]

    return mutate


def _both(*mutations):
    def mutate(data):
        for m in mutations:
            m(data)

    return mutate


ERROR_CASES = {
    "missing top-level key": (_delete("env_params"), r"top-level key 'env_params': missing"),
    "top-level key wrong type": (_set("env_state", []), r"'env_state': expected an object"),
    "unknown static param": (_set("static_env_params.num_wheels", 3), r"static_env_params.*unknown.*num_wheels"),
    "bad env param": (_set("env_params.dt", "fast"), r"env_params\.dt"),
    "too few polygons": (
        _delete("env_state.polygon.4"),
        r"env_state\.polygon has 4 entries, static_env_params\.num_polygons is 5",
    ),
    "missing entity list": (_delete("env_state.thruster"), r"env_state\.thruster: missing"),
    "too few rr manifolds": (
        _delete("env_state.acc_rr_manifolds.0"),
        r"env_state\.acc_rr_manifolds has 7 entries, 2 x num_rr_pairs is 8",
    ),
    "missing key in entity": (
        _delete("env_state.joint.0.motor_binding"),
        r"env_state\.joint\[0\]: missing 'motor_binding'",
    ),
    "missing role": (_delete("env_state.circle.1.role"), r"env_state\.circle\[1\]: missing 'role'"),
    "unknown key in entity": (_set("env_state.thruster.0.colour", 1), r"env_state\.thruster\[0\]: unknown key.*colour"),
    "extra vector component": (
        _set("env_state.polygon.0.position.2", 1.0),
        r"env_state\.polygon\[0\]\.position: expected 2 components, got 3",
    ),
    "missing vertex": (
        _delete("env_state.polygon.4.vertices.3"),
        r"env_state\.polygon\[4\]\.vertices: expected 4 components, got 3",
    ),
    "scalar for vector": (_set("env_state.gravity", 9.81), r"env_state\.gravity: expected a vector of 2 components"),
    "collision matrix shape": (
        _delete("env_state.collision_matrix.6"),
        r"env_state\.collision_matrix: expected 7 components",
    ),
    "string for number": (
        _set("env_state.polygon.1.rotation", "0.5"),
        r"env_state\.polygon\[1\]\.rotation: expected a number, got str",
    ),
    "float for int": (
        _set("env_state.polygon.1.collision_mode", 1.5),
        r"env_state\.polygon\[1\]\.collision_mode: expected a 32-bit integer",
    ),
    "int for bool": (_set("env_state.joint.0.active", 1), r"env_state\.joint\[0\]\.active: expected true/false"),
    "joint index out of range": (
        _both(_set("env_state.joint.0.active", True), _set("env_state.joint.0.a_index", 6),
              _set("env_state.joint.0.b_index", 7)),
        r"joint\.b_index\[0\] = 7: expected the index of an active shape, in \[0, 7\)",
    ),
    "thruster index negative": (_set("env_state.thruster.0.object_index", -1), r"thruster\.object_index\[0\] = -1"),
    "two-vertex polygon": (_set("env_state.polygon.0.n_vertices", 2), r"polygon\.n_vertices\[0\] = 2.*\[3, 5\)"),
    "role out of range": (_set("env_state.circle.0.role", 4), r"circle_shape_roles\[0\] = 4.*num_shape_roles"),
    "motor binding out of range": (
        _both(_set("env_state.joint.0.active", True), _set("env_state.joint.0.a_index", 6),
              _set("env_state.joint.0.motor_binding", 4)),
        r"motor_bindings\[0\] = 4.*num_motor_bindings",
    ),
    "thruster binding out of range": (_set("env_state.thruster.0.thruster_binding", 2), r"thruster_bindings\[0\] = 2"),
    "nan": (_set("env_state.polygon.4.friction", float("nan")), r"polygon\.friction\[4\] = nan: expected a finite"),
    "inf": (_set("env_state.circle.0.velocity.1", float("inf")), r"circle\.velocity\[0, 1\] = inf: expected a finite"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_malformed_dict_names_the_field(base_dict, case):
    mutate, pattern = ERROR_CASES[case]
    mutate(base_dict)
    with pytest.raises(LevelFormatError, match=r"^<dict>: .*" + pattern):
        load_level(base_dict)


def test_inactive_slots_are_not_range_checked(base_dict):
    _set("env_state.thruster.0.active", False)(base_dict)
    _set("env_state.thruster.0.thruster_binding", 3)(base_dict)  # as in some shared M levels
    state = load_level(base_dict).state
    assert not state["thruster.active"][0] and state["thruster_bindings"][0] == 3, "the stored slot is kept as is"


def test_malformed_file_names_the_file(tmp_path, levels_dir, base_dict):
    broken = tmp_path / "broken.json"
    broken.write_text('{"env_state": ')
    with pytest.raises(LevelFormatError, match=rf"^{re.escape(str(broken))}: not valid JSON"):
        load_level(broken)
    mutated = tmp_path / "mutated.json"
    _delete("env_state.joint.0.motor_binding")(base_dict)
    mutated.write_text(json.dumps(base_dict))
    with pytest.raises(
        LevelFormatError, match=rf"^{re.escape(str(mutated))}: env_state\.joint\[0\]: missing 'motor_binding'"
    ):
        load_level(mutated)
    nan_file = tmp_path / "nan.json"
    nan_file.write_text((levels_dir / BASE_LEVEL).read_text().replace('"friction": 1.0', '"friction": NaN', 1))
    with pytest.raises(
        LevelFormatError, match=rf"^{re.escape(str(nan_file))}: polygon\.friction\[0\] = nan: expected a finite"
    ):
        load_level(nan_file)


def test_validate_level_in_memory(loaded):
    level = loaded["m/h0_unicycle"]
    state = {k: v.copy() for k, v in level.state.items()}
    validate_level(state, level.static)
    with pytest.raises(LevelFormatError, match=r"^gen: .*polygon\.position.*shape"):
        validate_level({**state, "polygon.position": state["polygon.position"][:3]}, level.static, where="gen")
    with pytest.raises(LevelFormatError, match=r"joint\.a_index.*dtype"):
        validate_level({**state, "joint.a_index": state["joint.a_index"].astype(np.int64)}, level.static)
    with pytest.raises(LevelFormatError, match=r"missing.*motor_auto"):
        validate_level({k: v for k, v in state.items() if k != "motor_auto"}, level.static)
    state["polygon_shape_roles"][state["polygon.active"].argmax()] = 9
    with pytest.raises(LevelFormatError, match=r"polygon_shape_roles"):
        validate_level(state, level.static)
    with pytest.raises(LevelFormatError, match=r"polygon_shape_roles"):
        save_level("/nonexistent/never_written.json", state, level.static, level.env_params)


# --------------------------------------------------------------------------------------------------
# Banks


def test_stack_mixed_s_and_m_into_m(loaded, levels_dir):
    names = ["s/h0_weak_thrust", "m/h0_unicycle", "s/h2_one_wheel_car", "m/arm_left"]
    levels = [loaded[n] for n in names]
    flat, static = stack_levels(levels)
    assert static == static_params_for_size("m")
    validate_level(flat, static)
    assert flat["timestep"].shape == (len(names),)
    for i, name in enumerate(names):
        expected = load_level(levels_dir / f"{name}.json", static=static).state
        assert_states_equal({k: v[i] for k, v in flat.items()}, expected, name)
    with pytest.raises(ValueError, match=r"h0_unicycle.*num_polygons 6 > 5"):
        stack_levels(levels, static=static_params_for_size("s"))


def test_stack_levels_default_size_and_errors(loaded, levels_dir):
    path = levels_dir / BASE_LEVEL
    small = static_params_for_size("s")
    more_circles = load_level(path, static=small.replace(num_circles=4))
    more_polygons = load_level(path, static=small.replace(num_polygons=6))
    assert stack_levels([loaded["s/h0_weak_thrust"], more_circles])[1] == more_circles.static
    with pytest.raises(ValueError, match=r"no level's sizes hold all the others"):
        stack_levels([more_circles, more_polygons])
    level = loaded["s/h0_weak_thrust"]
    one_frame = Level(level.state, level.static.replace(frame_skip=1), level.env_params, "one_frame")
    with pytest.raises(ValueError, match=r"one_frame.*frame_skip 1 vs 2"):
        stack_levels([level, one_frame])
    with pytest.raises(ValueError, match="no levels"):
        stack_levels([])


def test_level_bank_to_tensordict(loaded):
    levels = [loaded["s/h0_weak_thrust"], loaded["l/h17_unicycle"]]
    td, static = level_bank_to_tensordict(levels, device="cpu")
    assert static == static_params_for_size("l")
    assert td.batch_size == torch.Size([2])
    assert td["polygon", "position"].shape == (2, static.num_polygons, 2)
    assert td["joint", "a_index"].dtype == torch.int32 and td["collision_matrix"].dtype == torch.bool


def test_load_levels_dir(levels_dir):
    levels = load_levels_dir(levels_dir / "s", "m")
    assert [lvl.name for lvl in levels] == sorted(f.stem for f in (levels_dir / "s").glob("*.json"))
    assert all(lvl.static == static_params_for_size("m") for lvl in levels)


# --------------------------------------------------------------------------------------------------
# Bank files and single levels of a TensorDict batch

RANDOM_ENV = EnvParams(dense_reward_scale=0.2)


@pytest.fixture(scope="module")
def random_bank():
    """Random M levels of a larger batch, and their size."""
    static = static_params_for_size("m")
    return sample_levels(12, static, generator=torch.Generator().manual_seed(2), env_params=RANDOM_ENV), static


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_bank_round_trip(random_bank, tmp_path, suffix):
    levels, static = random_bank
    path = tmp_path / f"bank{suffix}"
    save_bank(path, levels, static, RANDOM_ENV)
    loaded, loaded_static, loaded_env = load_bank(path)
    assert loaded_static == static and loaded_env == RANDOM_ENV
    assert loaded.batch_size == levels.batch_size and (loaded == levels).all()
    assert os.listdir(tmp_path) == [path.name], "a temporary file was left behind"


def test_bank_of_a_slice_stores_only_the_slice(random_bank, tmp_path):
    levels, static = random_bank
    save_bank(tmp_path / "slice.pt", levels[:2], static)
    stored = torch.load(tmp_path / "slice.pt", weights_only=True)["levels"]
    oversized = [k for k, v in stored.items() if v.untyped_storage().nbytes() != v.numel() * v.element_size()]
    assert oversized == [], f"fields stored with the whole batch behind them: {oversized}"


def test_bank_refuses_unknown_suffix_and_missing_file(random_bank, tmp_path):
    levels, static = random_bank
    with pytest.raises(ValueError, match=rf"^bank {re.escape(str(tmp_path / 'bank.h5'))}: unknown suffix '.h5'"):
        save_bank(tmp_path / "bank.h5", levels, static)
    assert os.listdir(tmp_path) == []
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_bank(tmp_path / "missing.npz")


def test_bank_errors_name_the_file_and_field(random_bank, tmp_path):
    levels, static = random_bank
    pt, npz = tmp_path / "bank.pt", tmp_path / "bank.npz"
    save_bank(pt, levels, static)
    payload = torch.load(pt, weights_only=True)
    del payload["levels"]
    torch.save(payload, pt)
    with pytest.raises(LevelFormatError, match=rf"^bank {re.escape(str(pt))}: missing \['levels'\]"):
        load_bank(pt)

    save_bank(npz, levels, static)
    with np.load(npz) as stored:
        arrays = dict(stored)
    del arrays["circle.radius"]
    np.savez(npz, **arrays)
    with pytest.raises(LevelFormatError, match=rf"^bank {re.escape(str(npz))}: missing field\(s\) \['circle.radius'\]"):
        load_bank(npz)
    arrays["circle.radius"] = np.zeros((len(levels), static.num_circles), np.float64)
    np.savez(npz, **arrays)
    with pytest.raises(LevelFormatError, match=rf"^bank {re.escape(str(npz))}: field 'circle.radius' has dtype float64"):
        load_bank(npz)
    arrays["circle.radius"] = arrays["circle.radius"].astype(np.float32)
    arrays["__env_params__"] = np.array("{not json")
    np.savez(npz, **arrays)
    with pytest.raises(LevelFormatError, match=rf"^bank {re.escape(str(npz))}: __env_params__ is not JSON"):
        load_bank(npz)


def test_single_level_json_round_trip(random_bank, tmp_path):
    levels, static = random_bank
    path = tmp_path / "level.json"
    save_level_json(path, levels, 7, static, RANDOM_ENV)
    loaded, loaded_static, _ = load_level_json(path)
    assert loaded_static == static and loaded.batch_size == torch.Size([1])
    assert (loaded == levels[7:8]).all()
    with pytest.raises(IndexError, match="index 12 out of range for a batch of 12"):
        save_level_json(tmp_path / "never.json", levels, 12, static)
    assert os.listdir(tmp_path) == ["level.json"]
