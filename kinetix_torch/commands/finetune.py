"""``kinetix-torch finetune``: PPO on one level from a pretrained agent, or from scratch to compare.

    kinetix-torch finetune --init-from runs/pretrain-s --level s/h4_thrust_aim --budget 1000000
    kinetix-torch finetune --init-from runs/pretrain-s --level s/h4_thrust_aim --budget 1000000 --from-scratch

Both train the checkpoint's network on the level (a file, or a handmade level by name) with the
checkpoint run's env and PPO options (observation, action, size, dense reward scale, envs, steps,
learning rate, ...; any train flag given here wins), the first from its weights, the second
(``--from-scratch``) from a fresh init of the same architecture. Both evaluate on the level before
the first update and every ``--eval-every`` updates (default: 20 points over the budget), writing
the solve-rate curve to ``eval.jsonl`` and TensorBoard. Runs go to ``runs/finetune-<level>`` and
``runs/scratch-<level>`` unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ..train import checkpoint as ckpt
from ..train.config import TrainConfig
from ..train.evaluate import resolve_level_paths, size_name
from ..train.logger import level_name
from .args import add_dataclass_arguments
from .train import config_from_namespace, make_parser, run_training

INHERITED = (
    "obs", "pixel_format", "action", "dense_reward_scale", "max_timesteps", "num_envs", "num_steps",
    "update_epochs", "num_minibatches", "full_minibatch_shuffle", "gamma", "gae_lambda", "clip_eps", "ent_coef",
    "vf_coef", "max_grad_norm", "lr", "adam_eps", "anneal_lr", "warmup_lr", "initial_lr", "peak_lr", "warmup_frac",
    "eval_attempts",
)
"""Train options a fine-tuning run takes from the checkpoint's run (unless given as flags)."""
EVAL_POINTS = 20
"""Evaluations over the budget when --eval-every is not given (plus one before training)."""


@dataclass
class Args:
    """Fine-tune a pretrained agent on one level, or train its architecture from scratch to compare."""

    init_from: Path | None = None
    """The pretrained agent (required): a run folder, its checkpoint/ or an upstream checkpoint folder."""
    level: str = ""
    """The level (required): a level file, or a handmade level by name (s/h4_thrust_aim)."""
    budget: int | None = None
    """Env frames to train for (required; sets --total-frames)."""
    from_scratch: bool = False
    """Train the checkpoint's architecture from a fresh init instead of from its weights."""


SKIPPED = ("levels", "curriculum", "env_size", "total_frames", "resume", "init_from", "model", "model_config",
           "width", "depth", "recurrent", "eval_levels", "eval_first")
"""Train flags this command sets itself."""


def build_parser() -> argparse.ArgumentParser:
    """The command's flags: this command's own and every train flag it does not set."""
    parser = make_parser("kinetix-torch finetune", (__doc__ or "").strip().splitlines()[0], skip=SKIPPED, curricula=())
    add_dataclass_arguments(parser, Args)
    return parser


def finetune_config(argv) -> TrainConfig:
    parser = build_parser()
    first = parser.parse_args(argv)
    if first.init_from is None or not first.level or first.budget is None or first.budget < 1:
        raise ValueError("--init-from CKPT, --level LEVEL and --budget FRAMES (>= 1) are required")
    checkpoint = ckpt.resolve_checkpoint(first.init_from)
    policy = ckpt.load_policy(checkpoint)
    env_size = size_name(policy.static_env_params)
    if env_size == "custom":
        raise ValueError(f"--init-from {first.init_from}: trained at a custom env size; fine-tuning needs s, m or l")
    inherited = {"obs": policy.observation_type, "action": policy.action_type}
    if policy.train_config is not None:
        inherited = {name: getattr(policy.train_config, name) for name in INHERITED}
    inherited["pixel_format"] = policy.config.get("pixel_format", inherited.get("pixel_format", "float_hwc"))
    (level,) = resolve_level_paths([first.level])
    stem = Path(level_name(level)).name
    parser.set_defaults(**inherited, out=Path(f"runs/{'scratch' if first.from_scratch else 'finetune'}-{stem}"),
                        eval_every=None)
    given = parser.parse_args(argv)
    start = dict(init_from=None, model_config=checkpoint / ckpt.CONFIG_FILE) if given.from_scratch else dict(
        init_from=checkpoint)
    updates = given.budget // (given.num_envs * given.num_steps)
    eval_every = given.eval_every or max(1, updates // EVAL_POINTS)
    return config_from_namespace(parser, given, curriculum="none", levels=[level], env_size=env_size,
                                 total_frames=given.budget, eval_levels=[level], eval_first=True,
                                 eval_every=eval_every, **start)


def main(argv=None) -> int:
    def finished(result) -> str:
        state = "stopped (resume with kinetix-torch train --resume)" if result.interrupted else "done"
        return f"{state}: {result.updates} updates, {result.frames} frames; eval curve {result.run_dir}/eval.jsonl"

    return run_training("finetune", finetune_config, argv, finished)
