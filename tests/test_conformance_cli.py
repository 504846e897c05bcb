"""The conformance command on small golden folders: it passes on upstream's data and fails on a
perturbed copy."""

from __future__ import annotations

import shutil

import numpy as np

from kinetix_torch import conformance

CASE = "handmade/s/h2_one_wheel_car"


def _copy_case(golden_dir, target):
    source = golden_dir / CASE
    target.mkdir(parents=True)
    for f in source.parent.glob(source.name + ".*"):
        shutil.copy(f, target / f.name)
    return target


def test_cli_passes_on_upstream_data(golden_dir, tmp_path, capsys):
    folder = _copy_case(golden_dir, tmp_path / "golden" / "s")
    assert conformance.main(["--golden", str(folder.parent)]) == 0
    out = capsys.readouterr().out
    assert "s/h2_one_wheel_car" in out and "100.0% of 1" in out


def test_cli_fails_on_a_perturbed_output(golden_dir, tmp_path, capsys):
    folder = _copy_case(golden_dir, tmp_path / "golden" / "s")
    path = folder / "h2_one_wheel_car.engine.npz"
    data = dict(np.load(path))
    data["output.polygon.position"] = data["output.polygon.position"] + 1e-2
    np.savez(path, **data)
    assert conformance.main(["--golden", str(folder.parent), "--no-trajectories"]) == 1
    assert "FAIL (polygon.position)" in capsys.readouterr().out


def test_cli_rejects_a_missing_folder(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit):
        conformance.main(["--golden", str(tmp_path / "nowhere")])
    assert "no such folder" in capsys.readouterr().err


def test_cli_checks_the_triton_kernels(golden_dir, tmp_path, capsys):
    folder = _copy_case(golden_dir, tmp_path / "golden" / "s")
    args = ["--golden", str(folder.parent), "--engine", "triton-interpret", "--no-trajectories"]
    assert conformance.main(args) == 0
    assert "s/h2_one_wheel_car" in capsys.readouterr().out


def _nan_positions(physics):
    def patched(self, flat_state, actions, static, params):
        state, manifolds = physics(self, flat_state, actions, static, params)
        state["polygon.position"] = np.full_like(state["polygon.position"], np.nan)
        return state, manifolds

    return patched


def test_cli_fails_an_engine_that_returns_nan(golden_dir, tmp_path, capsys, monkeypatch):
    folder = _copy_case(golden_dir, tmp_path / "golden" / "s")
    monkeypatch.setattr(conformance.NumpyEngine, "physics", _nan_positions(conformance.NumpyEngine.physics))
    assert conformance.main(["--golden", str(folder.parent), "--no-trajectories"]) == 1
    assert "FAIL (polygon.position: NaN/inf)" in capsys.readouterr().out


def test_trajectories_diverge_on_nan(golden_dir, tmp_path, monkeypatch):
    folder = _copy_case(golden_dir, tmp_path / "golden" / "s")
    env = conformance.NumpyEngine.env

    def nan_env(self, flat_state, actions, static, params):
        state, info = env(self, flat_state, actions, static, params)
        state["circle.velocity"] = np.full_like(state["circle.velocity"], np.nan)
        return state, info

    monkeypatch.setattr(conformance.NumpyEngine, "env", nan_env)
    report = conformance.run(folder.parent)
    assert report.cases[0].trajectories and all(t.first_divergence == 1 for t in report.cases[0].trajectories)


def test_cli_fails_on_nan_in_golden_data(golden_dir, tmp_path, capsys):
    folder = _copy_case(golden_dir, tmp_path / "golden" / "s")
    path = folder / "h2_one_wheel_car.engine.npz"
    data = dict(np.load(path))
    data["output.circle.position"] = np.full_like(data["output.circle.position"], np.nan)
    np.savez(path, **data)
    assert conformance.main(["--golden", str(folder.parent), "--no-trajectories"]) == 1
    assert "non-finite golden value" in capsys.readouterr().out


def test_cli_checks_the_manifest(golden_dir, tmp_path, capsys):
    import hashlib
    import json

    folder = _copy_case(golden_dir, tmp_path / "golden" / "s")
    root = folder.parent
    files = {str(f.relative_to(root)): {"sha256": hashlib.sha256(f.read_bytes()).hexdigest()} for f in folder.iterdir()}
    (root / "MANIFEST.json").write_text(json.dumps({"files": files}))
    assert conformance.main(["--golden", str(root), "--no-trajectories"]) == 0
    target = folder / "h2_one_wheel_car.json"
    target.write_text(target.read_text() + " ")
    assert conformance.main(["--golden", str(root), "--no-trajectories"]) == 2
    assert "h2_one_wheel_car.json: sha256" in capsys.readouterr().err


def test_cli_unusable_folders_exit_2(golden_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert conformance.main(["--golden", str(empty)]) == 2
    assert "no golden cases" in capsys.readouterr().err
    folder = _copy_case(golden_dir, tmp_path / "golden" / "s")
    assert conformance.main(["--golden", str(folder.parent), "--cases", "no_such_case"]) == 2
    assert "matching 'no_such_case'" in capsys.readouterr().err
    (folder / "h2_one_wheel_car.engine.npz").write_bytes(b"PK\x03\x04 damaged")
    assert conformance.main(["--golden", str(folder.parent)]) == 2
    assert "h2_one_wheel_car.engine.npz: not a readable .npz" in capsys.readouterr().err


def test_cli_triton_without_cuda_says_so(golden_dir, tmp_path):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only machine's message")
    with pytest.raises(conformance.BackendUnavailable, match="needs a CUDA GPU"):
        conformance.main(["--golden", str(golden_dir), "--engine", "triton"])


def test_one_mismatched_contact_event_fails_by_default(golden_dir, tmp_path, capsys):
    folder = _copy_case(golden_dir, tmp_path / "golden" / "s")
    path = folder / "h2_one_wheel_car.traj.multi_discrete.npz"
    data = dict(np.load(path))
    data["terminal_step"] = np.array(3)  # claim upstream's episode ended with +1 at env step 3
    data["reward"] = data["reward"].copy()
    data["reward"][3] = 1.0
    np.savez(path, **data)
    assert conformance.main(["--golden", str(folder.parent)]) == 1
    assert "EVENT None vs (3, 1)" in capsys.readouterr().out
