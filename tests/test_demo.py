"""The README's main job at a tiny budget: every artefact is written; the shipped level is the one
the demo's builder makes; the learning curve draws from a run's metrics.

The real run (solve rate >= 0.9 in under 10 minutes on 2 CPU cores) is measured by hand and
recorded in docs/results.md; here the budget is one PPO update, so nothing is learned.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from kinetix_torch.commands import demo
from kinetix_torch.levels import load_level
from kinetix_torch.schema import BLUE, GREEN, RED


def test_shipped_level_is_the_builders():
    shipped, built = load_level(demo.DEMO_LEVEL), demo.glide_to_blue_level()
    assert shipped.static == built.static and shipped.env_params == built.env_params
    for key, value in built.state.items():
        np.testing.assert_array_equal(shipped.state[key], value, err_msg=key)
    roles = np.concatenate(
        [shipped.state["polygon_shape_roles"][shipped.state["polygon.active"]],
         shipped.state["circle_shape_roles"][shipped.state["circle.active"]]]
    )
    assert {GREEN, BLUE, RED} <= set(roles.tolist())
    assert shipped.state["thruster.active"].any()


def test_demo_writes_every_artefact_at_a_tiny_budget(tmp_path):
    out = tmp_path / "demo"
    args = demo.Args(
        out=out, total_frames=256, num_envs=2, num_steps=128, update_epochs=1, num_minibatches=2, check_every=1,
        attempts=2, gif_tries=1, progress=False,  # 2 envs everywhere: the engine compiles for batch 2 and 1 only
    )
    outcome = demo.run_demo(args)
    summary = json.loads((out / "summary.json").read_text())
    assert summary == outcome["summary"]
    assert (summary["frames"], summary["updates"], summary["attempts"]) == (256, 1, 2)
    assert 0.0 <= summary["solve_rate"] <= 1.0 and 0.0 <= summary["random_solve_rate"] <= 1.0

    assert (out / "train" / "checkpoint" / "config.json").is_file()
    assert len((out / "train" / "metrics.jsonl").read_text().splitlines()) == 1
    for name in ("eval", "eval_random"):
        table = json.loads((out / f"{name}.json").read_text())
        assert set(table) == {str(args.level), "mean", "mean_s"}
        assert table[str(args.level)]["attempts"] == 2
        rows = list(csv.DictReader((out / f"{name}.csv").open()))
        assert [row["level"] for row in rows] == [str(args.level), "mean_s", "mean"]
    assert json.loads((out / "eval.json").read_text())["mean"]["solve_rate"] == summary["solve_rate"]
    with Image.open(out / "episode.gif") as gif:
        assert gif.n_frames >= 2
    with Image.open(out / "learning_curve.png") as png:
        assert png.format == "PNG" and png.width > 0

    # A rerun into the same folder replaces the training run; a foreign train/ folder is left alone.
    assert not demo._prepare_out(out).exists()
    foreign = tmp_path / "foreign"
    (foreign / "train").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not a demo's output"):
        demo._prepare_out(foreign)


def test_learning_curve_skips_updates_without_episodes(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    rows = [
        {"updates": 1, "frames": 100, "solve_rate": None, "episode_return": None},
        {"updates": 2, "frames": 200, "solve_rate": 0.25, "episode_return": -0.5},
        {"updates": 3, "frames": 300, "solve_rate": 1.0, "episode_return": 1.2},
    ]
    metrics.write_text("".join(json.dumps(row) + "\n" for row in rows))
    png = tmp_path / "curve.png"
    demo.draw_learning_curve(metrics, png, note="note")
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB"))
    for _, _, colour in demo.CURVES:
        assert (pixels == colour).all(-1).sum() > 50, f"no {colour} line drawn"
