"""``kinetix-torch pretrain``: upstream's SFL pretraining on random levels, as far as the machine allows.

    kinetix-torch pretrain --size s --budget 5000000 [--out DIR] [--sfl-scale X] [any train flag]

Upstream's setup (``experiments/sfl.py`` with ``configs/sfl.yaml``, kinetix-env 3.0): SFL on random
levels of one size (no-op filter on), the entity observation (``symbolic_entity``), multi-discrete
actions, dense reward scale 0.2, frame skip 2, the paper's entity transformer (``tf-paper``), PPO
with 2,048 envs x 256 steps, 8 epochs x 32 minibatches, lr 5e-5, gamma 0.995, GAE lambda 0.9,
12,288 levels scored for 512 steps every 128 updates, 1,024 kept, half the envs on them, and the
handmade set of the size evaluated every 128 updates, 20 attempts per level.

Without a GPU it keeps all of that but the number of envs: 64 instead of 2,048, with ``sfl_scale``
= num_envs / 2048, so that the levels scored and kept per env stay upstream's (3 x 128 scored, 32
kept). It prints what it scaled down. Any train flag overrides the preset (``--obs symbolic_flat``
trains an MLP instead of the transformer, about 8x faster on a CPU). ``--budget`` sets
``--total-frames``; a stopped or finished run continues with ``kinetix-torch train --resume DIR
[--total-frames N]``.
"""

from __future__ import annotations

import argparse

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..train.config import TrainConfig
from ..train.distributed import resolve_device
from .args import add_dataclass_arguments
from .train import config_from_namespace, make_parser, run_training

UPSTREAM_NUM_ENVS = 2048
"""Upstream's ``num_train_envs``; SFL's scoring and buffer sizes are upstream's for this many envs."""
CPU_NUM_ENVS = 64
"""Envs of a CPU run (the rollout is as fast per frame with 64 envs as with more)."""

UPSTREAM_SFL = dict(
    obs="symbolic_entity", action="multi_discrete", dense_reward_scale=0.2, model="tf-paper", num_steps=256,
    update_epochs=8, num_minibatches=32, lr=5e-5, gamma=0.995, gae_lambda=0.9, clip_eps=0.2, ent_coef=0.01,
    vf_coef=0.5, max_grad_norm=1.0, eval_every=128, eval_attempts=20, checkpoint_every=16,
)
"""Train flags of upstream's SFL run (the SFL options' defaults are upstream's already), and a
checkpoint every 16 updates."""


@dataclass
class Args:
    """Pretrain an agent with SFL on random levels: upstream's setup, scaled to the machine."""

    size: Literal["s", "m", "l"] = "s"
    """Env size of the random levels (the handmade levels up to this size are the eval set)."""
    budget: int | None = None
    """Env frames to train for (required; sets --total-frames)."""


def build_parser() -> argparse.ArgumentParser:
    """The command's flags: this command's own, the SFL options and every train flag it does not set."""
    parser = make_parser("kinetix-torch pretrain", (__doc__ or "").strip().splitlines()[0],
                         skip=("levels", "curriculum", "env_size", "total_frames", "resume"), curricula=("sfl",))
    add_dataclass_arguments(parser, Args)
    parser.set_defaults(**UPSTREAM_SFL, num_envs=None, sfl_scale=None, out=None)  # None: set for the machine
    return parser


def pretrain_config(argv) -> tuple[TrainConfig, list[str]]:
    """The run's config, and a line per setting scaled down from upstream's."""
    parser = build_parser()
    given = parser.parse_args(argv)
    if given.budget is None or given.budget < 1:
        raise ValueError(f"--budget FRAMES is required (>= 1), got {given.budget}")
    scaled = []
    if given.num_envs is None:
        on_gpu = resolve_device(given.device).type == "cuda"
        given.num_envs = UPSTREAM_NUM_ENVS if on_gpu else CPU_NUM_ENVS
        if not on_gpu:
            scaled.append(f"num_envs {UPSTREAM_NUM_ENVS} -> {given.num_envs} (no GPU)")
    if given.sfl_scale is None:
        given.sfl_scale = given.num_envs / UPSTREAM_NUM_ENVS
    if given.out is None:
        given.out = Path(f"runs/pretrain-{given.size}")
    config = config_from_namespace(parser, given, curriculum="sfl", env_size=given.size, total_frames=given.budget)
    sfl = config.curriculum_config
    if sfl.sfl_scale != 1:
        scaled.append(
            f"sfl_scale 1 -> {sfl.sfl_scale:g}: {sfl.scoring_batches} x {sfl.scaled(sfl.scoring_batch)} levels scored "
            f"per refresh (upstream 3 x 4096), {sfl.scaled(sfl.learnable_levels)} kept (upstream 1024)"
        )
    if config.obs == "symbolic_entity" and resolve_device(config.device).type == "cpu":
        scaled.append("(the entity transformer trains at ~150 frames/s on a CPU; --obs symbolic_flat trains the "
                      "MLP about 8x faster)")
    scaled.append(f"total_frames {config.num_updates * config.frames_per_update:,} "
                  f"({config.num_updates} updates; upstream's config: 1,073,741,824, the paper's agent ~18B)")
    return config, scaled


def main(argv=None) -> int:
    def make_config(argv) -> TrainConfig:
        config, scaled = pretrain_config(argv)
        print("kinetix-torch pretrain: upstream's SFL setup (configs/sfl.yaml); scaled to this machine:")
        for line in scaled:
            print(f"  {line}")
        return config

    def finished(result) -> str:
        state = "stopped" if result.interrupted else "done"
        return (f"{state}: {result.updates} updates, {result.frames} frames; checkpoint {result.checkpoint} "
                f"(continue with: kinetix-torch train --resume {result.run_dir} --total-frames N)")

    return run_training("pretrain", make_config, argv, finished)
