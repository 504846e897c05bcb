"""``kinetix-torch curves``: evaluation solve rate against frames of several runs, as one PNG and a CSV.

    kinetix-torch curves --runs runs/finetune-h0 runs/scratch-h0 --labels pretrained scratch --png h0.png

Reads each run's ``eval.jsonl`` (written by ``--eval-every``; ``finetune`` always writes one) and
its ``config.json`` (frames per update = ``num_envs`` x ``num_steps``), and draws the mean solve
rate (or ``--level``'s) of every run on one plot. ``--csv`` writes the points: run, label,
updates, frames, solve_rate. A run without evaluations, or a level a run never evaluated, is one
line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import atomic_write_text
from ..plots import PALETTE, Panel, Series, draw_panels
from ..train.logger import EVAL_FILE
from .args import parse_dataclass


class CurvesError(ValueError):
    """A run folder that has no evaluation curve to draw."""


@dataclass
class Args:
    """Plot evaluation solve rate against frames for several runs on one axis."""

    runs: list[Path] = field(default_factory=list)
    """Run folders (each with eval.jsonl and config.json) (required)."""
    labels: list[str] = field(default_factory=list)
    """A legend label per run (default: the folders' names)."""
    level: str | None = None
    """Plot this level's solve rate (its eval name, e.g. s/h0_weak_thrust) instead of the mean."""
    png: Path | None = None
    """Write the plot here (required)."""
    csv: Path | None = None
    """Also write the points as CSV here."""
    title: str = "evaluation solve rate"
    """Title above the plot."""


def eval_curve(run_dir: Path, level: str | None = None) -> list[tuple[int, int, float]]:
    """``(updates, frames, solve_rate)`` of each evaluation of a run, in order."""
    eval_path, config_path = Path(run_dir) / EVAL_FILE, Path(run_dir) / "config.json"
    if not eval_path.is_file() or not config_path.is_file():
        raise CurvesError(f"{run_dir}: not a run folder with evaluations (needs {EVAL_FILE} and config.json)")
    config = json.loads(config_path.read_text())
    frames_per_update = config["num_envs"] * config["num_steps"]
    points = []
    for number, line in enumerate(eval_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if level is None:
            result = row["mean"]
        elif level in row["levels"]:
            result = row["levels"][level]
        else:
            raise CurvesError(f"{eval_path}:{number}: level {level!r} not evaluated (has {sorted(row['levels'])})")
        points.append((row["updates"], row["updates"] * frames_per_update, result["solve_rate"]))
    if not points:
        raise CurvesError(f"{eval_path}: no evaluations")
    return points


def draw_curves(args: Args) -> list[str]:
    """Draw the PNG (and CSV) for ``args``; returns one summary line per run."""
    if not args.runs or args.png is None:
        raise CurvesError("--runs RUN [RUN ...] and --png OUT.png are required")
    labels = args.labels or [Path(run).name for run in args.runs]
    if len(labels) != len(args.runs):
        raise CurvesError(f"--labels gives {len(labels)} labels for {len(args.runs)} runs")
    curves = [eval_curve(run, args.level) for run in args.runs]
    series = [Series(label, [(frames, rate) for _, frames, rate in curve], PALETTE[i % len(PALETTE)])
              for i, (label, curve) in enumerate(zip(labels, curves))]
    title = f"{args.title}: {args.level}" if args.level else args.title
    draw_panels([Panel(title, series, y_range=(0.0, 1.0), guide=0.9)], args.png, panel_height=320)
    if args.csv is not None:
        rows = ["run,label,updates,frames,solve_rate"] + [
            f"{run},{label},{updates},{frames},{rate}"
            for run, label, curve in zip(args.runs, labels, curves) for updates, frames, rate in curve]
        atomic_write_text(args.csv, "\n".join(rows) + "\n")
    return [f"{label}: {len(curve)} evaluations, solve rate {curve[0][2]:.2f} at {curve[0][1]:,} frames -> "
            f"{curve[-1][2]:.2f} at {curve[-1][1]:,}" for label, curve in zip(labels, curves)]


def main(argv=None) -> int:
    args = parse_dataclass(Args, argv, "kinetix-torch curves")
    try:
        lines = draw_curves(args)
    except (CurvesError, KeyError, json.JSONDecodeError) as error:
        print(f"kinetix-torch curves: {error}", file=sys.stderr)
        return 2
    print("\n".join(lines + [f"wrote {args.png}"] + ([f"wrote {args.csv}"] if args.csv else [])))
    return 0
