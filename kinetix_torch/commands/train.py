"""``kinetix-torch train``: PPO on levels (see :mod:`kinetix_torch.train.ppo`).

    kinetix-torch train --levels PATH [PATH ...] --env-size s --obs symbolic_flat \\
        --action multi_discrete --total-frames N --num-envs E --seed K --out RUN_DIR

writes ``RUN_DIR/checkpoint/``, ``RUN_DIR/metrics.jsonl`` and ``RUN_DIR/tb/``. ``--resume RUN_DIR``
continues a stopped run with its saved options; flags given with it may change only how the run
is watched and how long it goes (:data:`~kinetix_torch.train.config.RESUMABLE_CHANGES`).
"""

from __future__ import annotations

import argparse
import sys

from ..models.checkpoint import read_checkpoint_config
from ..train.checkpoint import CheckpointError, latest_checkpoint
from ..train.config import RESUMABLE_CHANGES, TrainConfig
from .args import add_dataclass_arguments, dataclass_from_namespace

Args = TrainConfig
"""The command's flags: every field of :class:`~kinetix_torch.train.config.TrainConfig`."""


def parse_args(argv) -> Args:
    """Flags -> config; with ``--resume RUN_DIR``, the run's saved config with the given flags on top."""
    parser = argparse.ArgumentParser(prog="kinetix-torch train", description=(Args.__doc__ or "").strip())
    add_dataclass_arguments(parser, Args)
    given = parser.parse_args(argv)
    if given.resume is None:
        return dataclass_from_namespace(Args, given)
    checkpoint = latest_checkpoint(given.resume)
    saved = read_checkpoint_config(checkpoint).get("train_config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{checkpoint}: not written by kinetix-torch train (no train_config); use --init-from")
    saved_config = Args.from_json_dict(saved, where=f"{checkpoint}/config.json: train_config")
    merged = parser.parse_args(argv, namespace=argparse.Namespace(**vars(saved_config)))
    changed = [
        name for name in vars(merged)
        if name not in RESUMABLE_CHANGES | {"out"} and getattr(merged, name) != getattr(saved_config, name)
    ]
    if changed:
        flags = ", ".join(f"--{n.replace('_', '-')} (saved {getattr(saved_config, n)!r})" for n in changed)
        raise ValueError(f"--resume continues the saved run; these flags would change it: {flags}")
    return dataclass_from_namespace(Args, merged, out=given.resume)


def main(argv=None) -> int:
    from ..train.ppo import train

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        config = parse_args(argv)
        result = train(config)
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"kinetix-torch train: error: {error}", file=sys.stderr)
        return 2
    state = "stopped (resume with --resume)" if result.interrupted else "done"
    print(f"{state}: {result.updates} updates, {result.frames} frames; checkpoint {result.checkpoint}")
    return 0
