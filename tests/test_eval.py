"""Evaluation, its CLI and rendering: level specs, attempt counting, exploration modes, reports,
GIFs with the outcome banner, and one-line errors for bad input.

JAX compiles the engine once per (sizes, batch size), which dominates the runtime: the batched
evaluations here all run ``BATCH`` environments (levels x attempts) and recordings one.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import asdict

import numpy as np
import pytest
import torch
from PIL import Image
from tensordict.nn import TensorDictModule

from kinetix_torch.commands import eval as eval_cli
from kinetix_torch.commands import render as render_cli
from kinetix_torch.env import make_env
from kinetix_torch.models import make_actor_critic
from kinetix_torch.params import EnvParams, static_params_for_size
from kinetix_torch.train.evaluate import (
    OUTCOMES,
    EvalError,
    EvalReport,
    LevelResult,
    evaluate,
    load_eval_levels,
    record_episode,
    resolve_level_paths,
)

FALLS_ON_RED = "h5_rotate_fall.json"
"""Under no-op actions its green shape falls onto red within a few dozen steps."""
TIMES_OUT = "h2_one_wheel_car.json"
"""Under no-op actions nothing reaches blue or red: the episode runs to the time limit (256)."""
BATCH = 4
ENV = dict(observation_type="symbolic_flat", action_type="multi_discrete", env_size="s")


@pytest.fixture(scope="module")
def s_levels(levels_dir):
    return levels_dir / "s"


def _noop_policy() -> TensorDictModule:
    """Always the multi-discrete no-op (all slots 0)."""
    return TensorDictModule(
        lambda obs: torch.zeros(obs.shape[0], 6, dtype=torch.int64), in_keys=["observation"], out_keys=["action"]
    )


def _network_policy(level):
    """A freshly initialised (seeded) actor-critic for S-size symbolic_flat / multi_discrete."""
    env = make_env(ENV["observation_type"], ENV["action_type"], "s", levels=[level], num_envs=1)
    torch.manual_seed(0)
    return make_actor_critic(env.observation_spec["observation"], env.action_spec).policy


# --------------------------------------------------------------------------------------------------
# Level specs


def test_resolve_files_folders_and_sets(s_levels, tmp_path, monkeypatch):
    folder = tmp_path / "mine"
    folder.mkdir()
    for name in ("b.json", "a.json"):
        shutil.copy(s_levels / TIMES_OUT, folder / name)
    (folder / "notes.txt").write_text("not a level")
    file = s_levels / FALLS_ON_RED
    assert resolve_level_paths([file]) == [file]
    assert resolve_level_paths([folder, file, folder / "a.json"]) == [folder / "a.json", folder / "b.json", file]
    expected = sorted(s_levels.glob("*.json"))
    assert len(expected) == 10
    assert resolve_level_paths(["s"], levels_root=s_levels.parent) == expected
    monkeypatch.setenv("KINETIX_LEVELS", str(s_levels.parent))
    assert resolve_level_paths(["S"]) == expected
    assert resolve_level_paths(["s/h4_thrust_aim", "s/h4_thrust_aim.json"]) == [s_levels / "h4_thrust_aim.json"]
    with pytest.raises(EvalError, match="'s/no_such_level' not found; looked in"):
        resolve_level_paths(["s/no_such_level"])


@pytest.mark.parametrize(
    "spec, words",
    [
        ("no/such/level.json", ["no/such/level.json", "does not exist"]),
        ("xl", ["'xl'", "set name"]),
        ("empty", ["holds no *.json"]),
    ],
)
def test_resolve_bad_specs(tmp_path, spec, words):
    (tmp_path / "empty").mkdir()
    spec = str(tmp_path / spec) if spec == "empty" else spec
    with pytest.raises(EvalError) as error:
        resolve_level_paths([spec])
    assert all(word in str(error.value) for word in words), str(error.value)


def test_missing_set_names_where_it_looked(tmp_path):
    with pytest.raises(EvalError, match=f"looked in {tmp_path / 'm'}"):
        resolve_level_paths(["m"], levels_root=tmp_path)


# --------------------------------------------------------------------------------------------------
# Attempts


def test_each_attempt_is_the_first_episode_of_one_env(s_levels):
    """The short episodes keep restarting while the long ones run; only each env's first counts."""
    short, long = s_levels / FALLS_ON_RED, s_levels / TIMES_OUT
    report = evaluate(_noop_policy(), [short, long], attempts=BATCH // 2, **ENV)
    alone = record_episode(_noop_policy(), short, **ENV, scale=1)
    assert alone.outcome == "touched red" and alone.length < 100
    first = report.results[str(short)]
    assert first.attempts == BATCH // 2
    assert (first.solve_rate, first.mean_length) == (0.0, alone.length)
    assert first.mean_return == pytest.approx(alone.total_return, abs=1e-5)
    assert (report.results[str(long)].mean_length, report.results[str(long)].solve_rate) == (256, 0.0)


def test_deterministic_takes_the_mode_and_stochastic_samples(s_levels):
    level = s_levels / TIMES_OUT
    policy = _network_policy(level)
    short_episodes = EnvParams(max_timesteps=24)
    rng_before = torch.get_rng_state()

    def run(deterministic, seed):
        return evaluate(
            policy, [level], attempts=BATCH, deterministic=deterministic, seed=seed, env_params=short_episodes, **ENV
        ).results[str(level)]

    mode_a, mode_b = run(True, 0), run(True, 1)
    assert mode_a == mode_b and mode_a.mean_length == 24
    sampled_a, sampled_a_again, sampled_b = run(False, 0), run(False, 0), run(False, 1)
    assert sampled_a == sampled_a_again
    assert sampled_a.mean_return != sampled_b.mean_return != mode_a.mean_return
    assert torch.equal(torch.get_rng_state(), rng_before), "evaluate must not move the caller's RNG"


def test_report_means_per_size(s_levels, levels_dir):
    s_level, m_level = s_levels / FALLS_ON_RED, sorted((levels_dir / "m").glob("*.json"))[0]
    sizes = [size for _, size in load_eval_levels([s_level, m_level], static_params_for_size("m"))]
    assert sizes == ["s", "m"]
    results = {
        "a.json": LevelResult(solve_rate=1.0, mean_return=2.0, mean_length=10.0, attempts=4),
        "b.json": LevelResult(solve_rate=0.5, mean_return=0.0, mean_length=30.0, attempts=4),
        "c.json": LevelResult(solve_rate=0.0, mean_return=-1.0, mean_length=50.0, attempts=4),
    }
    report = EvalReport(results, sizes={"a.json": "s", "b.json": "m", "c.json": "s"})
    data = report.to_dict()
    assert list(data) == ["a.json", "b.json", "c.json", "mean", "mean_s", "mean_m"]
    assert data["mean_s"] == {"solve_rate": 0.5, "mean_return": 0.5, "mean_length": 30.0, "attempts": 4, "levels": 2}
    assert data["mean_m"] == {**asdict(results["b.json"]), "levels": 1}
    assert data["mean"]["solve_rate"] == 0.5 and data["mean"]["levels"] == 3
    lines = report.table().splitlines()
    names = [line.split()[0] for line in lines[2:5] + lines[6:]]
    assert names == ["a.json", "b.json", "c.json", "mean_s", "mean_m", "mean"]
    assert set(lines[5]) == {"-"}
    assert lines[-1].split() == ["mean", "all", "0.500", "0.333", "30.0"]


# --------------------------------------------------------------------------------------------------
# The eval command


def test_eval_cli_writes_json_and_csv(s_levels, tmp_path, capsys):
    levels = [s_levels / FALLS_ON_RED, s_levels / TIMES_OUT]
    out_json, out_csv = tmp_path / "eval.json", tmp_path / "eval.csv"
    argv = ["--policy", "random", "--levels", *map(str, levels), "--attempts", str(BATCH // 2)]
    assert eval_cli.main(argv + ["--json", str(out_json), "--csv", str(out_csv)]) == 0
    data = json.loads(out_json.read_text())
    assert set(data) == {str(levels[0]), str(levels[1]), "mean", "mean_s"}
    for entry in data.values():
        assert 0.0 <= entry["solve_rate"] <= 1.0
        assert entry["attempts"] == BATCH // 2
        assert {"mean_return", "mean_length"} <= set(entry)
    rows = list(csv.DictReader(out_csv.open()))
    assert [row["level"] for row in rows] == [str(levels[0]), str(levels[1]), "mean_s", "mean"]
    assert float(rows[0]["solve_rate"]) == data[str(levels[0])]["solve_rate"]
    assert "solve rate" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--policy", "random", "--levels", "missing.json"], ["missing.json", "does not exist"]),
        (["--policy", "random", "--levels", "xl"], ["'xl'"]),
        (["--policy", "random", "--levels", "LEVEL_M", "--env-size", "s"], ["LEVEL_M", "too large", "env size s"]),
        (["--levels", "LEVEL_S"], ["--checkpoint", "--policy random"]),
        (["--checkpoint", "TMP/nothing", "--levels", "LEVEL_S"], ["TMP/nothing"]),
        (["--policy", "random", "--deterministic", "--levels", "LEVEL_S"], ["--deterministic"]),
    ],
)
def test_eval_cli_bad_input_is_one_line(levels_dir, tmp_path, capsys, argv, words):
    values = {
        "LEVEL_M": str(sorted((levels_dir / "m").glob("*.json"))[0]),
        "LEVEL_S": str(levels_dir / "s" / FALLS_ON_RED),
        "TMP": str(tmp_path),
    }

    def fill(text):
        for key, value in values.items():
            text = text.replace(key, value)
        return text

    assert eval_cli.main([fill(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kinetix-torch eval: error: ") and err.count("\n") == 1, err
    assert all(fill(word) in err for word in words), err


# --------------------------------------------------------------------------------------------------
# Rendering


def _gif_frames(path) -> list[np.ndarray]:
    with Image.open(path) as gif:
        frames = []
        for i in range(gif.n_frames):
            gif.seek(i)
            frames.append(np.asarray(gif.convert("RGB")))
    return frames


def _banner_colour(frame: np.ndarray) -> np.ndarray:
    """The banner's background: its right-most pixels, right of any text."""
    return frame[2 : render_cli.BANNER_HEIGHT - 2, -3:].reshape(-1, 3).mean(0)


def test_render_gif_has_a_frame_per_state_and_the_outcome_banner(s_levels, tmp_path, capsys):
    level = s_levels / FALLS_ON_RED
    out = tmp_path / "fall.gif"
    assert render_cli.main(["--policy", "random", "--level", str(level), "--out", str(out), "--scale", "1"]) == 0
    episode = record_episode(None, level, **ENV, scale=1)
    frames = _gif_frames(out)
    assert episode.outcome in OUTCOMES and episode.outcome != "stopped"
    assert len(frames) == episode.length + 1
    height, width = episode.frames.shape[1:3]
    assert frames[0].shape == (render_cli.BANNER_HEIGHT + height, width, 3)
    np.testing.assert_array_equal(frames[-1][render_cli.BANNER_HEIGHT :], episode.frames[-1])
    outcome_colour = np.array(render_cli.BANNER_COLOURS[episode.outcome])
    playing_colour = np.array(render_cli.BANNER_COLOURS["playing"])
    assert np.abs(_banner_colour(frames[-1]) - outcome_colour).max() < 8
    assert all(np.abs(_banner_colour(f) - playing_colour).max() < 8 for f in frames[:-1])
    assert episode.outcome.upper() in render_cli.banner_text(episode, episode.length)
    assert f"{episode.length + 1} frames" in capsys.readouterr().out


def test_render_stops_at_max_steps(s_levels):
    episode = record_episode(None, s_levels / TIMES_OUT, **ENV, max_steps=5, scale=1)
    assert (episode.outcome, episode.length, len(episode.frames), len(episode.returns)) == ("stopped", 5, 6, 6)


@pytest.mark.parametrize(
    "out, words", [("x.avi", ["x.avi", ".gif"]), ("x.mp4", ["x.mp4", "ffmpeg"])]
)
def test_render_cli_bad_output_is_one_line(s_levels, tmp_path, capsys, out, words):
    if out.endswith(".mp4") and render_cli.importlib.util.find_spec("imageio_ffmpeg") is not None:
        words = None
    level = str(s_levels / FALLS_ON_RED)
    argv = ["--policy", "random", "--level", level, "--out", str(tmp_path / out), "--max-steps", "2"]
    code = render_cli.main(argv)
    if words is None:
        assert code == 0 and (tmp_path / out).stat().st_size > 0
        return
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and all(w in err for w in words), err
