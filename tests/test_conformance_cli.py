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
