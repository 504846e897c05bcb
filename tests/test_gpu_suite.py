"""The one-shot GPU suite's dry run: every stage of ``benchmarks/gpu_suite.sh`` runs at tiny sizes
on the CPU, ends with exit code 0 within its budget, and leaves the results the device tool brings
back (at most 8 files), so the script cannot rot between the rare GPU windows."""

from __future__ import annotations

import csv
import os
import subprocess

import pytest

from conftest import REPO, shared_dir

pytestmark = pytest.mark.slow  # developers' fast subset: pytest -m 'not slow'

STAGES = ["info", "install", "warm", "tests", "engine", "env", "train", "launch"]
RESULT_CSVS = ["engine.csv", "env.csv", "train.csv", "launch.csv"]


def test_dry_run_runs_every_stage(tmp_path, golden_dir):
    out = tmp_path / "out"
    env = {**os.environ, "KINETIX_SHARED": str(shared_dir())}
    env.pop("OUT", None)
    result = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "--dry-run", "--out", str(out)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=1800)
    log = (out / "suite.log").read_text() if (out / "suite.log").exists() else result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    with open(out / "stages.csv") as f:
        stages = list(csv.DictReader(f))
    assert [s["stage"] for s in stages] == STAGES, log[-4000:]
    failed = [s for s in stages if s["exit_code"] != "0"]
    assert not failed, f"stages failed: {failed}\n{log[-6000:]}"
    for name in RESULT_CSVS:
        with open(out / name) as f:
            assert list(csv.DictReader(f)), f"{name} has no rows"
    assert "passed" in (out / "tests.log").read_text() or "skipped" in (out / "tests.log").read_text()
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8, f"the device tool brings back at most 8 files: {sorted(p.name for p in files)}"
