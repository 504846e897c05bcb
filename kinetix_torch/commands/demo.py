"""``kinetix-torch demo``, the README's main job: train PPO on a small shipped level, on the CPU, in
a few minutes; evaluate the agent and random actions; draw the learning curve and a GIF.

The level, ``glide_to_blue`` (size S, designed here, shipped as
``kinetix_torch/assets/levels/glide_to_blue.json``): a green block starts in the air just above a
red ball and carries a thruster that pushes up and to the right with 1.6 times the block's weight.
A blue ball floats at mid-height on the right. Without thrust the block drops onto the red ball;
thrusting throughout climbs past the blue ball into the top-right corner; the agent must climb away
from the red ball and then ease off so that it glides into the blue one. Random actions (thrust
half the time) mostly sink onto the red ball or the floor and rarely reach blue.

Training runs in chunks of a few PPO updates, each resuming the run, and stops once the training
solve rate stays high (or at ``--total-frames``). Everything lands in ``--out`` (default
``runs/demo``; a rerun replaces it):

* ``train/``: the training run (``kinetix-torch train``'s layout: ``checkpoint/``, ``metrics.jsonl``, ``tb/``);
* ``eval.json`` / ``eval.csv``: the trained policy, ``--attempts`` stochastic attempts;
* ``eval_random.json`` / ``eval_random.csv``: random actions on the same level, for comparison;
* ``episode.gif``: the trained agent playing the level (its first solved attempt);
* ``learning_curve.png``: training solve rate and episode return against frames;
* ``summary.json``: wall time, frames, solve rates.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..levels import Level
from ..params import EnvParams, static_params_for_size
from ..plots import PALETTE, Panel, Series, draw_panels, finite
from ..schema import BLUE, GREEN, RED
from .render import save_episode

LEVELS_DIR = Path(__file__).resolve().parents[1] / "assets" / "levels"
DEMO_LEVEL = LEVELS_DIR / "glide_to_blue.json"
"""The shipped level (written by :func:`glide_to_blue_level`)."""


@dataclass
class Args:
    """Train PPO on the shipped glide_to_blue level (size S) on the CPU, evaluate the agent against
    random actions, and write the checkpoint, metrics, eval tables, a GIF and the learning curve."""

    out: Path = Path("runs/demo")
    """Output folder (a rerun replaces what it holds)."""
    level: Path = DEMO_LEVEL
    """Level to train and evaluate on."""
    total_frames: int = 300_000
    """Most env steps to train for, over all envs (training stops earlier once solved, see stop_solve_rate)."""
    num_envs: int = 64
    """Environments stepped together."""
    num_steps: int = 64
    """Steps per environment per rollout."""
    update_epochs: int = 4
    """Passes over each rollout."""
    num_minibatches: int = 4
    """Minibatches per pass."""
    lr: float = 3e-4
    """Adam learning rate."""
    stop_solve_rate: float | None = 0.97
    """Stop training once the training solve rate reaches this in each of the last stop_window
    updates (checked every check_every updates); None trains for total_frames."""
    stop_window: int = 4
    """Updates the stop rule looks back over."""
    check_every: int = 2
    """Updates between checks of the stop rule (each check ends a chunk; the next resumes the run)."""
    attempts: int = 20
    """Evaluation attempts (episodes) of the trained policy and of random actions."""
    gif_tries: int = 5
    """Attempts recorded at most while looking for a solved one to put in the GIF."""
    seed: int = 0
    """Seed of training, evaluation and the GIF's attempts."""
    device: str = "cpu"
    """Torch device (the demo is meant for the CPU)."""
    progress: bool = True
    """Print a line of training progress every check_every updates."""


# --------------------------------------------------------------------------------------------------
# The level

FLOOR_TOP = 0.4
"""Height of the empty scene's floor surface."""


def _box(width: float, height: float) -> list[list[float]]:
    """A centred rectangle's vertices in upstream's (clockwise) order."""
    w, h = width / 2, height / 2
    return [[-w, h], [w, h], [w, -h], [-w, -h]]


def glide_to_blue_level() -> Level:
    """Build the demo level (see the module docstring) with the reference engine's scene functions."""
    from .. import schema
    from ..reference_jax import scene

    static = static_params_for_size("s")
    params = EnvParams()
    state = scene.empty_scene(static)
    width, height = 0.4, 0.3
    state, block = scene.add_polygon(state, static, (1.0, 1.8), _box(width, height), role=GREEN)
    weight = width * height * 9.81  # density 1
    thrust = 1.6 * weight / params.base_thruster_power
    state, _ = scene.add_thruster(state, static, block, (0.0, 0.0), 1.1, power=thrust)  # 1.1 rad: up and right
    state, _ = scene.add_circle(state, static, (1.0, FLOOR_TOP + 0.5), 0.5, fixated=True, role=RED)
    state, _ = scene.add_circle(state, static, (4.2, 2.2), 0.45, fixated=True, role=BLUE)
    flat = {key: np.asarray(value) for key, value in schema.flatten(state).items()}
    return Level(flat, static, params, "glide_to_blue")


# --------------------------------------------------------------------------------------------------
# The job

MARKER = ".kinetix-demo"
"""File that marks a folder as a demo's output (so that a rerun may replace its training run)."""


def train_until_solved(args: Args, run_dir: Path):
    """PPO on the level in chunks of ``check_every`` updates (each chunk resumes the run), until the
    training solve rate reaches ``stop_solve_rate`` in each of the last ``stop_window`` updates or
    ``total_frames`` are spent. Returns the last chunk's :class:`~kinetix_torch.train.ppo.TrainResult`."""
    from ..train.config import TrainConfig
    from ..train.ppo import train

    config = TrainConfig(
        levels=[args.level],
        env_size="s",
        obs="symbolic_flat",
        action="multi_discrete",
        num_envs=args.num_envs,
        num_steps=args.num_steps,
        update_epochs=args.update_epochs,
        num_minibatches=args.num_minibatches,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        out=run_dir,
        checkpoint_every=args.check_every,
        progress=False,
    )
    chunk = args.check_every * config.frames_per_update
    result = train(replace(config, total_frames=min(chunk, args.total_frames)))
    _print_progress(args, result)
    while result.frames + config.frames_per_update <= args.total_frames and not _solved(run_dir, args):
        result = train(replace(config, total_frames=min(result.frames + chunk, args.total_frames), resume=run_dir))
        _print_progress(args, result)
    return result


def _print_progress(args: Args, result) -> None:
    metrics = result.last_metrics
    if args.progress and metrics:
        print(
            f"frames {metrics['frames']:>8,}  training solve rate {_text(metrics['solve_rate'])}  "
            f"return {_text(metrics['episode_return'])}  {metrics['fps']:.0f} frames/s",
            flush=True,
        )


def _solved(run_dir: Path, args: Args) -> bool:
    if args.stop_solve_rate is None:
        return False
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()[-args.stop_window :]
    rates = [json.loads(line)["solve_rate"] for line in lines]
    return len(rates) == args.stop_window and all(r is not None and r >= args.stop_solve_rate for r in rates)


def _text(value) -> str:
    return "  n/a" if value is None else f"{value:5.2f}"


def _prepare_out(out: Path) -> Path:
    """``out/train``, empty: an earlier demo's training run there is removed; anything else is an error."""
    run_dir = out / "train"
    if run_dir.exists():
        if not (out / MARKER).exists():
            raise FileExistsError(f"{run_dir} exists and is not a demo's output; pick another --out")
        shutil.rmtree(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).touch()
    return run_dir


def check_args(args: Args) -> None:
    """Raise ``ValueError`` naming the first flag out of range (the training options are checked by
    :meth:`~kinetix_torch.train.config.TrainConfig.validate`)."""
    for name in ("stop_window", "check_every", "attempts", "gif_tries"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.stop_solve_rate is not None and not 0.0 < args.stop_solve_rate <= 1.0:
        raise ValueError(f"--stop-solve-rate must lie in (0, 1], got {args.stop_solve_rate}")
    if not args.level.is_file():
        raise FileNotFoundError(f"level file {args.level} does not exist")


def run_demo(args: Args) -> dict:
    """Train, evaluate, render and plot; returns the summary written to ``summary.json``."""
    check_args(args)
    from ..train.checkpoint import load_policy
    from ..train.evaluate import evaluate, record_episode

    start = time.perf_counter()
    out = args.out
    run_dir = _prepare_out(out)
    result = train_until_solved(args, run_dir)
    train_seconds = time.perf_counter() - start

    trained = load_policy(result.checkpoint, device=args.device)
    common = dict(
        observation_type=trained.observation_type,
        action_type=trained.action_type,
        env_size=trained.static_env_params,
        env_params=trained.env_params,
        device=args.device,
    )
    policy, primer = trained.actor_critic.policy, trained.actor_critic.make_primer()
    eval_seed = args.seed + 1  # not the seed of any training rollout
    report = evaluate(
        policy, [args.level], attempts=args.attempts, seed=eval_seed, primer=primer, policy_name="trained policy",
        **common,
    )
    baseline = evaluate(None, [args.level], attempts=args.attempts, seed=eval_seed, **common)
    for name, table in (("eval", report), ("eval_random", baseline)):
        table.write_json(out / f"{name}.json")
        table.write_csv(out / f"{name}.csv")

    for attempt in range(args.gif_tries):
        episode = record_episode(policy, args.level, seed=eval_seed + attempt, primer=primer, **common)
        if episode.outcome == "solved":
            break
    save_episode(episode, out / "episode.gif", frame_ms=1000 * episode.seconds_per_step)
    solve_rate = report.means["mean"].solve_rate
    draw_learning_curve(
        run_dir / "metrics.jsonl",
        out / "learning_curve.png",
        note=f"after training: solve rate {solve_rate:.2f} over {args.attempts} attempts",
    )

    summary = {
        "level": str(args.level),
        "frames": result.frames,
        "updates": result.updates,
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "solve_rate": solve_rate,
        "mean_return": report.means["mean"].mean_return,
        "random_solve_rate": baseline.means["mean"].solve_rate,
        "random_mean_return": baseline.means["mean"].mean_return,
        "attempts": args.attempts,
        "gif_outcome": episode.outcome,
        "checkpoint": str(result.checkpoint),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return {"summary": summary, "table": report.table(), "random_table": baseline.table()}


# --------------------------------------------------------------------------------------------------
# The learning curve


CURVES = (("solve_rate", "training solve rate", PALETTE[0]), ("episode_return", "episode return", PALETTE[1]))
"""(metrics key, panel title, line colour) of each panel, top to bottom."""


def draw_learning_curve(metrics_path: Path, png_path: Path, note: str = "") -> None:
    """Plot each of :data:`CURVES` against frames from a run's ``metrics.jsonl`` into a PNG, with a
    dotted line at a solve rate of 0.9 and ``note`` under the plots."""
    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    panels = [
        Panel(title, [Series(title, [(row["frames"], row[key]) for row in rows if finite(row.get(key))], colour)],
              y_range=(0.0, 1.0) if key == "solve_rate" else None, guide=0.9 if key == "solve_rate" else None)
        for key, title, colour in CURVES
    ]
    draw_panels(panels, png_path, note=note)


def main(argv=None) -> int:
    from .args import parse_dataclass

    args = parse_dataclass(Args, argv, "kinetix-torch demo")
    logging.getLogger("torchrl").setLevel(logging.WARNING)  # one progress line per chunk is enough
    try:
        outcome = run_demo(args)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"kinetix-torch demo: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    summary = outcome["summary"]
    print(outcome["table"])
    print(outcome["random_table"])
    print(
        f"demo: {summary['frames']} frames in {summary['wall_seconds']:.0f} s; solve rate "
        f"{summary['solve_rate']:.2f} (random actions {summary['random_solve_rate']:.2f}) "
        f"over {summary['attempts']} attempts; wrote {args.out}/"
    )
    return 0
