"""``kinetix-torch curves``: eval curves of several runs on one plot, their CSV, and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from kinetix_torch.commands import curves
from kinetix_torch.plots import PALETTE


def make_run(folder, solve_rates, num_envs=4, num_steps=8, level="s/h0"):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"num_envs": num_envs, "num_steps": num_steps}))
    rows = [{"updates": 2 * i, "levels": {level: {"solve_rate": rate}}, "mean": {"solve_rate": rate / 2}}
            for i, rate in enumerate(solve_rates)]
    (folder / "eval.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def test_two_runs_drawn_in_their_colours_with_frames_from_the_config(tmp_path, capsys):
    first = make_run(tmp_path / "finetune", [0.0, 0.5, 1.0])
    second = make_run(tmp_path / "scratch", [0.0, 0.0, 0.25], num_envs=2)
    png, csv = tmp_path / "curves.png", tmp_path / "curves.csv"
    code = curves.main(["--runs", str(first), str(second), "--labels", "pretrained", "scratch", "--level", "s/h0",
                        "--png", str(png), "--csv", str(csv)])
    assert code == 0
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB"))
    for colour in PALETTE[:2]:
        assert (pixels == colour).all(-1).sum() > 50, f"no {colour} line drawn"
    lines = csv.read_text().splitlines()
    assert lines[0] == "run,label,updates,frames,solve_rate"
    assert lines[3] == f"{first},pretrained,4,128,1.0"  # 4 updates x 4 envs x 8 steps
    assert lines[6] == f"{second},scratch,4,64,0.25"
    assert "pretrained: 3 evaluations, solve rate 0.00 at 0 frames -> 1.00 at 128" in capsys.readouterr().out
    assert curves.eval_curve(first) == [(0, 0, 0.0), (2, 64, 0.25), (4, 128, 0.5)]  # the mean without --level


@pytest.mark.parametrize("case, message", [
    ("not_a_run", "not a run folder with evaluations"),
    ("unknown_level", "level 's/h9' not evaluated"),
    ("labels", "--labels gives 1 labels for 2 runs"),
    ("no_png", "--png OUT.png are required"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case, message):
    run = make_run(tmp_path / "run", [0.0, 1.0])
    argv = {
        "not_a_run": ["--runs", str(tmp_path), "--png", str(tmp_path / "x.png")],
        "unknown_level": ["--runs", str(run), "--level", "s/h9", "--png", str(tmp_path / "x.png")],
        "labels": ["--runs", str(run), str(run), "--labels", "one", "--png", str(tmp_path / "x.png")],
        "no_png": ["--runs", str(run)],
    }[case]
    assert curves.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.png").exists()
