"""``kinetix-torch train``: PPO on levels or a curriculum (see :mod:`kinetix_torch.train.ppo`).

    kinetix-torch train --levels PATH [PATH ...] --env-size s --obs symbolic_flat \\
        --action multi_discrete --total-frames N --num-envs E --seed K --out RUN_DIR
    kinetix-torch train --curriculum sfl --env-size s --sfl-scale 0.03125 ... --out RUN_DIR

writes ``RUN_DIR/checkpoint/``, ``RUN_DIR/metrics.jsonl`` and ``RUN_DIR/tb/``. ``--curriculum
dr|plr|accel|sfl`` trains on random levels of ``--env-size`` instead of ``--levels``; each field of
the curriculum's config (:mod:`kinetix_torch.curricula`) is a flag. ``--resume RUN_DIR`` continues
a stopped run with its saved options; flags given with it may change only how the run is watched
and how long it goes (:data:`~kinetix_torch.train.config.RESUMABLE_CHANGES`).

``torchrun --nproc-per-node N -m kinetix_torch train ...`` trains on N processes (across nodes too);
see :mod:`kinetix_torch.train.distributed`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field

from ..curricula import CURRICULA, ACCELConfig, SFLConfig
from ..models.checkpoint import read_checkpoint_config
from ..train.checkpoint import CheckpointError, latest_checkpoint
from ..train.config import RESUMABLE_CHANGES, CurriculumConfig, TrainConfig
from .args import add_dataclass_arguments, dataclass_from_namespace


@dataclass
class Args(ACCELConfig, SFLConfig, TrainConfig):
    """Train a PPO agent on Kinetix levels or on random levels through a curriculum. The flags: every
    option of :class:`~kinetix_torch.train.config.TrainConfig`, and every curriculum's options
    (ACCEL's hold PLR's and DR's) in place of its ``curriculum_config``."""

    curriculum_config: CurriculumConfig | None = field(default=None, init=False)
    """Made from the curriculum flags of --curriculum (not a flag itself)."""


CURRICULUM_FIELDS = {name: [f.name for f in dataclasses.fields(config_class)]
                     for name, (config_class, _) in CURRICULA.items()}
"""``--curriculum`` name -> the flags (field names) of its config."""


def make_parser(prog: str = "kinetix-torch train", description: str = "", skip: tuple[str, ...] = (),
                curricula: tuple[str, ...] = tuple(CURRICULA)) -> argparse.ArgumentParser:
    """The command's flags (the fields of :class:`Args`), less ``skip`` and the options of
    curricula other than ``curricula``."""
    parser = argparse.ArgumentParser(prog=prog, description=description or (Args.__doc__ or "").split(".")[0])
    kept = {name for curriculum in curricula for name in CURRICULUM_FIELDS[curriculum]}
    others = {name for names in CURRICULUM_FIELDS.values() for name in names} - kept
    add_dataclass_arguments(parser, Args, skip=(*skip, *others))
    return parser


def config_from_namespace(parser: argparse.ArgumentParser, given: argparse.Namespace, **overrides) -> TrainConfig:
    """The run's config from parsed flags; a curriculum option the chosen curriculum does not take,
    set away from its default, is an error."""
    curriculum = overrides["curriculum"] if "curriculum" in overrides else given.curriculum
    own = set(CURRICULUM_FIELDS.get(curriculum, ()))
    stray = sorted({name for names in CURRICULUM_FIELDS.values() for name in names} - own)
    stray = [name for name in stray if hasattr(given, name) and getattr(given, name) != parser.get_default(name)]
    if stray:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in stray)
        raise ValueError(f"--curriculum {curriculum} does not take {flags}")
    options = None if curriculum == "none" else dataclass_from_namespace(CURRICULA[curriculum][0], given)
    return dataclass_from_namespace(TrainConfig, given, curriculum_config=options, **overrides)


def flat_values(config: TrainConfig) -> dict:
    """The config as the flags' namespace holds it: curriculum options at the top level."""
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "curriculum_config"}
    if config.curriculum_config is not None:
        values |= dataclasses.asdict(config.curriculum_config)
    return values


def parse_args(argv) -> TrainConfig:
    """Flags -> config; with ``--resume RUN_DIR``, the run's saved config with the given flags on top."""
    parser = make_parser()
    given = parser.parse_args(argv)
    if given.resume is None:
        return config_from_namespace(parser, given)
    checkpoint = latest_checkpoint(given.resume)
    saved = read_checkpoint_config(checkpoint).get("train_config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{checkpoint}: not written by kinetix-torch train (no train_config); use --init-from")
    saved_config = TrainConfig.from_json_dict(saved, where=f"{checkpoint}/config.json: train_config")
    saved_values = vars(parser.parse_args([])) | flat_values(saved_config)
    merged = parser.parse_args(argv, namespace=argparse.Namespace(**saved_values))
    changed = [
        name for name in vars(merged)
        if name not in RESUMABLE_CHANGES | {"out"} and getattr(merged, name) != saved_values[name]
    ]
    if changed:
        flags = ", ".join(f"--{n.replace('_', '-')} (saved {saved_values[n]!r})" for n in changed)
        raise ValueError(f"--resume continues the saved run; these flags would change it: {flags}")
    return config_from_namespace(parser, merged, out=given.resume)


def run_training(command: str, make_config, argv, finished) -> int:
    """The main of ``train``, ``pretrain`` and ``finetune``: ``make_config(argv)`` (a bad flag or
    file: exit 2 with the error), train, and on rank 0 print ``finished(result)``."""
    from ..train.ppo import train

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        result = train(make_config(argv))
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"kinetix-torch {command}: error: {error}", file=sys.stderr)
        return 2
    if result.rank == 0:
        print(finished(result))
    return 0


def main(argv=None) -> int:
    def finished(result) -> str:
        state = "stopped (resume with --resume)" if result.interrupted else "done"
        return f"{state}: {result.updates} updates, {result.frames} frames; checkpoint {result.checkpoint}"

    return run_training("train", parse_args, argv, finished)
