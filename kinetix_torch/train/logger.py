"""Where a training run reports: ``metrics.jsonl`` always, TensorBoard by default, W&B on request,
and a progress bar.

Each update appends one JSON line to ``metrics.jsonl``, each evaluation one to ``eval.jsonl``. A
resumed run first cuts both back to the updates its checkpoint holds, so no update shows twice;
TensorBoard purges the same steps.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from ..atomic import atomic_write_text
from .evaluate import EvalReport

__all__ = ["RunLogger", "level_name", "METRICS_FILE", "EVAL_FILE", "TENSORBOARD_DIR"]

METRICS_FILE, EVAL_FILE, TENSORBOARD_DIR = "metrics.jsonl", "eval.jsonl", "tb"


class RunLogger:
    """Writes each update's metrics (a flat dict of numbers, ``None`` for "no episode ended") to
    the JSONL file, TensorBoard and W&B, and shows them on a tqdm bar counting frames."""

    def __init__(
        self,
        run_dir: Path,
        *,
        total_frames: int,
        start_frames: int,
        start_updates: int,
        tensorboard: bool,
        wandb: bool,
        wandb_project: str,
        wandb_config: dict,
        progress: bool,
    ):
        self.wandb = _start_wandb(run_dir, wandb_project, wandb_config) if wandb else None
        for name in (METRICS_FILE, EVAL_FILE):
            _truncate_lines(Path(run_dir) / name, start_updates)
        self.run_dir = Path(run_dir)
        self.file = open(self.run_dir / METRICS_FILE, "a", encoding="utf-8")
        self.tensorboard = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(Path(run_dir) / TENSORBOARD_DIR), purge_step=start_updates + 1)
        self.bar = tqdm(
            total=total_frames, initial=start_frames, unit="frame", unit_scale=True, dynamic_ncols=True,
            disable=not progress, smoothing=0.1,
        )

    def log(self, metrics: dict) -> None:
        self.file.write(json.dumps(metrics) + "\n")
        self.file.flush()
        step = metrics["updates"]
        numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.tensorboard is not None:
            for key, value in numbers.items():
                if key != "updates" and math.isfinite(value):
                    self.tensorboard.add_scalar(f"train/{key}", value, step)
        if self.wandb is not None:
            self.wandb.log({f"train/{k}": v for k, v in numbers.items()}, step=step)
        self.bar.update(metrics["frames"] - self.bar.n)
        self.bar.set_postfix_str(_postfix(metrics), refresh=False)

    def log_eval(self, updates: int, report: EvalReport) -> None:
        """An evaluation: one ``eval.jsonl`` line ``{"updates", "levels": {name: result}, "mean":
        result, "mean_<size>": result, ...}`` (a level's name is ``<folder>/<file stem>``, e.g.
        ``s/h4_thrust_aim``); TensorBoard and W&B get every mean's numbers and each level's solve rate."""
        levels = {level_name(path): asdict(result) for path, result in report.results.items()}
        means = {group: asdict(result) for group, result in report.means.items()}
        with open(self.run_dir / EVAL_FILE, "a", encoding="utf-8") as file:
            file.write(json.dumps({"updates": updates, "levels": levels, **means}) + "\n")
        flat = {f"eval/{group}/{key}": v for group, r in means.items() for key, v in r.items()}
        flat |= {f"eval/level/{name}/solve_rate": r["solve_rate"] for name, r in levels.items()}
        if self.tensorboard is not None:
            for key, value in flat.items():
                self.tensorboard.add_scalar(key, value, updates)
        if self.wandb is not None:
            self.wandb.log(flat, step=updates)
        self.bar.write(f"update {updates}: eval solve rate {means['mean']['solve_rate']:.3f}")

    def close(self) -> None:
        self.bar.close()
        self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


def level_name(path: str | os.PathLike) -> str:
    """``<folder>/<file stem>`` of a level file: ``s/h4_thrust_aim`` for a handmade level."""
    path = Path(path)
    return f"{path.parent.name}/{path.stem}"


def _postfix(metrics: dict) -> str:
    parts = [f"fps {metrics['fps']:.0f}"]
    if metrics.get("episode_return") is not None:
        parts.append(f"return {metrics['episode_return']:.2f}")
        parts.append(f"solved {metrics['solve_rate']:.2f}")
    return " ".join(parts)


def _truncate_lines(path: Path, updates: int) -> None:
    """Keep only the lines of updates ``<= updates`` (all of them for a fresh run: 0 removes the file)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True) if _update_of(line) <= updates]
    atomic_write_text(path, "".join(kept))


def _update_of(line: str) -> float:
    try:
        return json.loads(line)["updates"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf  # a line cut short by a kill: dropped


def _start_wandb(run_dir: Path, project: str, config: dict):
    try:
        import wandb
    except ImportError:
        raise ImportError("--wandb needs the wandb package: pip install wandb (or leave out --wandb)") from None
    run_id_path = Path(run_dir) / "wandb_run_id"
    run_id = run_id_path.read_text().strip() if run_id_path.exists() else wandb.util.generate_id()
    atomic_write_text(run_id_path, run_id + "\n")
    return wandb.init(
        project=project, id=run_id, resume="allow", dir=os.fspath(run_dir), config=config, name=Path(run_dir).name
    )
