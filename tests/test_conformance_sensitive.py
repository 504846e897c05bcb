"""Conformance on ill-conditioned cases: a miss that a few-ulp nudge of the input reproduces is
listed as *sensitive*, not failed; a wrong engine and a NaN still fail.

The two constructed cases are the classes found on the held-back golden set: a polygon pair whose
reference face is a near-tie (the contact normal turns by a right angle) and a circle whose centre
lies just inside a small box (the normal normalises a near-zero vector). Their "upstream" output is
this project's own engine on a slightly different rounding of the input (draws independent of the
tool's nudges), as upstream's own rounding would give, so no test depends on exact output values.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from kinetix_torch import conformance, schema
from kinetix_torch.params import EnvParams, static_params_for_size
from kinetix_torch.reference_jax import scene

STATIC = static_params_for_size("m")  # two free polygon slots beside the four scene pieces
PARAMS = EnvParams()
ATOL = RTOL = 1e-4
"""The tool's default tolerances."""
WELL_CONDITIONED = "handmade/m/h0_unicycle"
"""A golden case whose output no nudge moves past the tolerance."""


def _box(half: float) -> list[tuple[float, float]]:
    return [(half, half), (half, -half), (-half, -half), (-half, half)]


def _turn(angle: float, v) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _engine_input(state: dict) -> dict[str, np.ndarray]:
    """One scene as a batch of one engine input (sim fields only)."""
    flat = schema.flatten(state)
    return {k: np.asarray(flat[k])[None] for k in schema.SIM_KEYS}


def near_tie_polygons(rotation=0.3, half=0.25, overlap=0.05) -> dict:
    """Two equal boxes, the second's corner pushed into the first's along its diagonal: the first
    box's right and top faces overlap it equally, so either can be the reference face."""
    state = scene.empty_scene(STATIC)
    position = np.array([2.5, 2.0])
    depth = 2 * half - overlap
    state, _ = scene.add_polygon(state, STATIC, position, _box(half), rotation=rotation)
    state, _ = scene.add_polygon(state, STATIC, position + _turn(rotation, (depth, depth)), _box(half), rotation=rotation)
    return _engine_input(state)


def circle_centre_inside_box(rotation=0.3, half=0.05, depth=2e-6, radius=0.1) -> dict:
    """A small box and a circle whose centre lies ``depth`` inside its right face."""
    state = scene.empty_scene(STATIC)
    position = np.array([2.5, 2.0])
    state, _ = scene.add_polygon(state, STATIC, position, _box(half), rotation=rotation)
    state, _ = scene.add_circle(state, STATIC, position + _turn(rotation, (half - depth, 0.3 * half)), radius)
    return _engine_input(state)


def _step(inputs: dict, engine=None):
    engine = engine or conformance.NumpyEngine("jax")
    return engine.physics(inputs, np.zeros((1, STATIC.action_dim), np.float32), STATIC, PARAMS)


def _normal_moves(inputs: dict, key: str, nudged_inputs: dict) -> float:
    """How far the contact normals ``key`` move (largest component) between two inputs."""
    return float(np.abs(_step(nudged_inputs)[0][key] - _step(inputs)[0][key]).max())


def _other_rounding(inputs: dict, key: str) -> dict:
    """The input re-rounded by up to 2 ulps (draws unlike the tool's) such that the contact
    normals ``key`` move past the tolerance: the stand-in for upstream's own rounding."""
    floats = [k for k, v in inputs.items() if v.dtype.kind == "f"]
    for seed in range(100, 108):
        rng = np.random.default_rng(seed)
        rounded = {**inputs, **{k: conformance.nudge(inputs[k], rng.integers(-2, 3, inputs[k].shape)) for k in floats}}
        if _normal_moves(inputs, key, rounded) > ATOL + RTOL:
            return rounded
    raise AssertionError(f"no re-rounding moves {key}: the constructed case is not ill-conditioned")


def _write_case(folder, name: str, inputs: dict, upstream_inputs: dict, samples: int = 1) -> None:
    """A golden-format case of ``samples`` equal samples: ``inputs`` stepped by "upstream", played
    by our engine on ``upstream_inputs``."""
    state, manifolds = _step(upstream_inputs)
    arrays = {f"input.{k}": v for k, v in inputs.items()}
    arrays |= {f"output.{k}": state[k] for k in schema.SIM_KEYS}
    arrays |= {f"manifolds.{k}": v for k, v in manifolds.items()}
    arrays = {k: np.concatenate([v] * samples) for k, v in arrays.items()}
    arrays["action"] = np.zeros((samples, STATIC.action_dim), np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / f"{name}.engine.npz", **arrays)
    sidecar = {"static_env_params": STATIC.to_dict(), "env_params": PARAMS.to_dict()}
    (folder / f"{name}.json").write_text(json.dumps(sidecar))


def _copy_golden(golden_dir, case: str, target) -> None:
    source = golden_dir / case
    target.mkdir(parents=True, exist_ok=True)
    for suffix in ("json", "engine.npz"):
        shutil.copy(source.parent / f"{source.name}.{suffix}", target / f"{source.name}.{suffix}")


@pytest.fixture(scope="module")
def golden(golden_dir, tmp_path_factory):
    """constructed/near_tie (two equal samples) and constructed/centre_inside (one), both
    sensitive; well/<case> (ok); broken/<case> (its upstream positions moved by 1e-2: a real miss)."""
    root = tmp_path_factory.mktemp("golden")
    tie, inside = near_tie_polygons(), circle_centre_inside_box()
    _write_case(root / "constructed", "near_tie", tie, _other_rounding(tie, "acc_rr_manifolds.normal"), samples=2)
    _write_case(root / "constructed", "centre_inside", inside, _other_rounding(inside, "acc_cr_manifolds.normal"))
    _copy_golden(golden_dir, WELL_CONDITIONED, root / "well")
    _copy_golden(golden_dir, WELL_CONDITIONED, root / "broken")
    path = root / "broken" / f"{WELL_CONDITIONED.rsplit('/', 1)[1]}.engine.npz"
    data = dict(np.load(path))
    data["output.polygon.position"] = data["output.polygon.position"] + 1e-2
    np.savez(path, **data)
    return root


def _case(report: conformance.Report, name: str) -> conformance.CaseReport:
    return next(c for c in report.cases if c.case.name.endswith(name))


def test_near_tie_normal_turns_under_a_nudge():
    """The constructed tie really is one: some 4-ulp nudge turns the contact normal by a right
    angle (a change of about sqrt(2) in the unit vector), far past the tolerance."""
    inputs = near_tie_polygons()
    assert _step(inputs)[0]["acc_rr_manifolds.active"].any()
    moves = [_normal_moves(inputs, "acc_rr_manifolds.normal", n) for n in conformance.nudged_inputs(inputs, 4).values()]
    assert max(moves) > 1.0, moves


def test_centre_inside_normal_moves_under_a_nudge():
    """The circle's centre is inside the box, and a 4-ulp nudge moves the contact normal past the
    tolerance, though by far less than a flip."""
    inputs = circle_centre_inside_box()
    state, manifolds = _step(inputs)
    assert state["acc_cr_manifolds.active"].sum() == 1
    assert np.isclose(manifolds["cr.penetration"][manifolds["cr.active"]], 0.1)  # inside: penetration = radius
    moves = [_normal_moves(inputs, "acc_cr_manifolds.normal", n) for n in conformance.nudged_inputs(inputs, 4).values()]
    assert ATOL + RTOL < max(moves) < 0.1, moves


@pytest.mark.parametrize("name, samples", [("near_tie", [0, 1]), ("centre_inside", [0])])
def test_constructed_miss_is_sensitive_not_failed(golden, name, samples):
    report = conformance.run(golden / "constructed", trajectories=False, pattern=name)
    case = report.cases[0]
    assert not case.engine.ok  # out of tolerance against "upstream"...
    assert case.status == "sensitive"  # ...but the engine's own output jumps under a nudge
    s = case.sensitivity
    assert s.samples == samples and s.excess > 1 and s.jump > 0 and s.field
    assert report.failed == [] and report.sensitive == [case]


def test_wrong_engine_still_fails_on_a_well_conditioned_case(golden, monkeypatch):
    physics = conformance.NumpyEngine.physics

    def off_by_1e_2(self, flat_state, actions, static, params):
        state, manifolds = physics(self, flat_state, actions, static, params)
        state["polygon.position"] = state["polygon.position"] + 1e-2
        return state, manifolds

    monkeypatch.setattr(conformance.NumpyEngine, "physics", off_by_1e_2)
    case = conformance.run(golden / "well", trajectories=False).cases[0]
    assert case.status == "fail" and case.engine.worst_field == "polygon.position"
    assert case.sensitivity is not None and case.sensitivity.excess < 1  # nudges move it within tolerance


def test_nan_fails_even_on_a_sensitive_case(golden, monkeypatch):
    physics = conformance.NumpyEngine.physics

    def nan_positions(self, flat_state, actions, static, params):
        state, manifolds = physics(self, flat_state, actions, static, params)
        state["circle.position"] = np.full_like(state["circle.position"], np.nan)
        return state, manifolds

    monkeypatch.setattr(conformance.NumpyEngine, "physics", nan_positions)
    case = conformance.run(golden / "constructed", trajectories=False, pattern="centre_inside").cases[0]
    assert case.status == "fail" and "NaN" in case.engine.worst_field and case.sensitivity is None


def test_nan_under_a_nudge_is_not_sensitivity(golden, monkeypatch):
    """An engine that turns NaN on a nudged input (here in one of the two failing samples)
    fails the case."""
    physics = conformance.NumpyEngine.physics
    calls = []

    def nan_when_rerun(self, flat_state, actions, static, params):
        state, manifolds = physics(self, flat_state, actions, static, params)
        calls.append(1)
        if len(calls) > 1:
            state["polygon.velocity"][1] = np.nan
        return state, manifolds

    monkeypatch.setattr(conformance.NumpyEngine, "physics", nan_when_rerun)
    case = conformance.run(golden / "constructed", trajectories=False, pattern="near_tie").cases[0]
    assert case.status == "fail" and math.isinf(case.sensitivity.excess)
    assert len(calls) == 1 + len(conformance.nudged_inputs(near_tie_polygons(), 4))


def test_summary_counts_table_and_json(golden, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert conformance.main(["--golden", str(golden), "--no-trajectories", "--json", str(out)]) == 1
    text = capsys.readouterr().out
    assert text.count("SENSITIVE") >= 2 and "FAIL (polygon.position)" in text
    assert "sensitive (ill-conditioned, not failures): 2; failed: 1" in text
    assert "constructed/near_tie  SENSITIVE:" in text and "under " in text
    report = json.loads(out.read_text())
    assert report["summary"] == {"cases": 4, "within_tolerance": 1, "sensitive": 2, "failed": 1, "event_match_fraction": 1.0}
    assert sorted(report["sensitive"]) == ["constructed/centre_inside", "constructed/near_tie"]
    assert report["failed"] == [f"broken/{WELL_CONDITIONED.rsplit('/', 1)[1]}"]
    by_name = {c["case"]: c for c in report["cases"]}
    tie = by_name["constructed/near_tie"]["sensitivity"]
    assert tie["samples"] == [0, 1] and tie["excess"] > 1 and tie["nudge"]
    assert report["settings"]["nudge_ulps"] == conformance.NUDGE_ULPS

    # Sensitive cases alone pass the run; without the nudge they fail.
    assert conformance.main(["--golden", str(golden / "constructed"), "--no-trajectories"]) == 0
    assert "sensitive (ill-conditioned, not failures): 2; failed: 0" in capsys.readouterr().out
    assert conformance.main(["--golden", str(golden / "constructed"), "--no-trajectories", "--nudge-ulps", "0"]) == 1
    assert "sensitive (ill-conditioned, not failures): 0; failed: 2" in capsys.readouterr().out


def test_nudge_moves_nonzero_floats_by_whole_ulps():
    values = np.array([1.0, -2.5, 0.0, 3e-30], np.float32)
    up = conformance.nudge(values, 3)
    assert up.dtype == np.float32 and up[2] == 0.0
    steps = (up.view(np.int32) - values.view(np.int32)) * np.sign(values)
    assert steps[[0, 1, 3]].tolist() == [3, 3, 3]
    assert np.array_equal(conformance.nudge(up, -3), values)
