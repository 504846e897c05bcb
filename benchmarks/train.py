"""Training throughput: frames per second of PPO end to end (rollout + update) and of the rollout
alone, per network and env size, on one device.

A *frame* is one env step of one environment. For every (size, network) pair, in one process:

* **collect**: :meth:`kinetix_torch.train.ppo.PPO.collect` (the policy samples, the env steps and
  resets where done), ``num_envs x num_steps`` frames per call;
* **train**: ``collect`` then :meth:`~kinetix_torch.train.ppo.PPO.learn` (GAE and the minibatch
  epochs of ClipPPOLoss), as one update of ``kinetix-torch train``;
* **collector** (``--collector``): the same rollout through TorchRL's ``Collector`` with its
  ``maybe_reset``, for the choice of the hand-written rollout loop.

Networks: ``mlp`` (flat MLP on ``symbolic_flat``) and ``transformer`` (the paper's entity
transformer, ``tf-paper``, on ``symbolic_entity``); multi-discrete actions. The levels are the
handmade ones of the size (``--levels-root``, default ``$KINETIX_SHARED/levels`` or ``../shared/levels``). One warm-up update
(compilation excluded), then the median of ``--repeats`` timed calls. Example::

    .venv/bin/python benchmarks/train.py --sizes s m --num-envs 256 --num-steps 64
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import statistics
import time
from pathlib import Path

import torch

from kinetix_torch.models import make_actor_critic
from kinetix_torch.train.config import TrainConfig
from kinetix_torch.train.ppo import PPO, make_training_env, model_config_from_flags, resolve_device

REPO = Path(__file__).resolve().parents[1]
NETWORKS = {"mlp": "symbolic_flat", "transformer": "symbolic_entity"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["s", "m"], choices=["s", "m", "l"])
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--num-envs", type=int, default=256)
    parser.add_argument("--num-steps", type=int, default=64)
    parser.add_argument("--update-epochs", type=int, default=8)
    parser.add_argument("--num-minibatches", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--collector", action="store_true", help="also time TorchRL's Collector")
    parser.add_argument("--levels-root", type=Path,
                        default=Path(os.environ.get("KINETIX_SHARED", REPO.parent / "shared")) / "levels")
    parser.add_argument("--csv", type=Path, default=REPO / "benchmarks" / "results" / "train_cpu.csv")
    return parser.parse_args(argv)


def median_seconds(call, repeats: int, sync) -> float:
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def collector_seconds(learner: PPO, repeats: int, sync) -> float:
    """One rollout of the same size through TorchRL's Collector (policy and env as in training)."""
    from torchrl.collectors import Collector

    frames = learner.config.frames_per_update
    collector = Collector(learner.env, learner.actor_critic.policy, frames_per_batch=frames, total_frames=-1,
                          auto_register_policy_transforms=False)
    batches = iter(collector)
    next(batches)  # warm-up
    seconds = median_seconds(lambda: next(batches), repeats, sync)
    collector.shutdown()
    return seconds


def main(argv=None) -> None:
    args = parse_args(argv)
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # the JAX engine needs the other cores
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows = []
    for size in args.sizes:
        for network in args.networks:
            config = TrainConfig(
                levels=[args.levels_root / size], env_size=size, obs=NETWORKS[network], num_envs=args.num_envs,
                num_steps=args.num_steps, update_epochs=args.update_epochs, num_minibatches=args.num_minibatches,
                total_frames=args.num_envs * args.num_steps * 1000, device=str(device), progress=False,
                tensorboard=False,
            )
            env = make_training_env(config, device)
            actor_critic = make_actor_critic(env.observation_spec["observation"], env.action_spec,
                                             model_config_from_flags(config)).to(device)
            learner = PPO(config, env, actor_critic)
            learner.learn(learner.collect()[0])  # warm-up: JAX compile, first allocations
            collect = median_seconds(learner.collect, args.repeats, sync)
            train = median_seconds(lambda: learner.learn(learner.collect()[0]), args.repeats, sync)
            frames = config.frames_per_update
            row = {
                "date": datetime.date.today().isoformat(), "device": str(device), "size": size, "network": network,
                "parameters": actor_critic.parameter_counts()["total"], "num_envs": args.num_envs,
                "num_steps": args.num_steps, "epochs_x_minibatches": f"{args.update_epochs}x{args.num_minibatches}",
                "collect_fps": round(frames / collect), "train_fps": round(frames / train),
                "update_share": round(1 - collect / train, 3),
            }
            if args.collector:
                row["torchrl_collector_fps"] = round(frames / collector_seconds(learner, args.repeats, sync))
            rows.append(row)
            print(row, flush=True)
            write(rows, args.csv)  # after every row, so partial results survive
    print(f"wrote {args.csv}")


def write(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}, key=list(rows[-1]).index))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
