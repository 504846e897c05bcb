"""Data-parallel training on the CPU with gloo and 2 processes: an update of 2 ranks x E envs equals
the update of 1 rank x 2E envs on the same rollout, a 2-rank run resumes exactly, and
``torchrun --nproc-per-node 2 -m kinetix_torch train`` logs and writes checkpoints from rank 0 only,
holding both ranks' states.

The ranks of one test run in processes started by :func:`torch.multiprocessing.spawn` (rendezvous
through a file, no port needed) or by torchrun (``--standalone`` picks a free port).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tensordict import TensorDict
from test_train import (  # noqa: F401 (lift_dir: the fixture)
    LIFT_FLAGS,
    REPO,
    assert_same_weights,
    final_model,
    lift_config,
    lift_dir,
    read_metrics,
)

from kinetix_torch import cli
from kinetix_torch.models import make_actor_critic
from kinetix_torch.train import checkpoint as ckpt
from kinetix_torch.train import ppo
from kinetix_torch.train.config import TrainConfig
from kinetix_torch.train.distributed import Shard

WORLD_SIZE = 2
ENVS = 32  # in all; each of the 2 ranks steps 16
STEPS = 8

# Two ranks x 16 envs x 8 steps = 256 frames per update; two minibatches of 8 trajectories per rank.
RUN_FLAGS = [*LIFT_FLAGS, "--num-envs", str(ENVS), "--num-steps", str(STEPS), "--num-minibatches", "2",
             "--update-epochs", "2", "--no-tensorboard"]
FRAMES_PER_UPDATE = ENVS * STEPS


def update_config(lift_dir: Path) -> TrainConfig:
    """One minibatch per epoch, so that one rank's minibatch is the whole rollout and two ranks'
    are its halves; two epochs, so that the second Adam step starts from the first's moments."""
    return lift_config(lift_dir, Path("unused"), num_envs=ENVS, num_steps=STEPS, num_minibatches=1, update_epochs=2)


def make_learner(config: TrainConfig, initial: dict, shard: Shard = Shard()) -> ppo.PPO:
    env = ppo.make_training_env(config, torch.device("cpu"), shard)
    actor_critic = make_actor_critic(
        env.observation_spec["observation"], env.action_spec, ppo.model_config_from_flags(config)
    )
    actor_critic.load_state_dict(initial)
    return ppo.PPO(config, env, actor_critic, shard)


def _rank_main(rank: int, work: Path, lift_dir: Path) -> None:
    """One rank: an update on its half of the saved rollout, then a run of 2 updates and a run of
    1 update resumed to 2, through the command line."""
    dist.init_process_group("gloo", init_method=f"file://{work / 'rendezvous'}", rank=rank, world_size=WORLD_SIZE)
    torch.set_num_threads(1)
    try:
        saved = torch.load(work / "rollout.pt", weights_only=False)
        learner = make_learner(saved["config"], saved["initial"], Shard(rank, WORLD_SIZE))
        share = ENVS // WORLD_SIZE
        learner.learn(saved["batch"][rank * share : (rank + 1) * share])
        if rank == 0:
            torch.save(learner.actor_critic.state_dict(), work / "two_ranks.pt")
        base = ["train", "--levels", str(lift_dir), *RUN_FLAGS, "--seed", "5", "--checkpoint-every", "1"]
        assert cli.main([*base, "--total-frames", str(2 * FRAMES_PER_UPDATE), "--out", str(work / "straight")]) == 0
        assert cli.main([*base, "--total-frames", str(FRAMES_PER_UPDATE), "--out", str(work / "stopped")]) == 0
        resume = ["train", "--resume", str(work / "stopped"), "--total-frames", str(2 * FRAMES_PER_UPDATE)]
        assert cli.main(resume) == 0
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(lift_dir, tmp_path_factory) -> dict:
    """A rollout of 32 envs and the parameters after one update on it: by 1 rank on all of it, by
    1 rank on its first half only, and by 2 ranks on a half each; plus the runs of :func:`_rank_main`."""
    work = tmp_path_factory.mktemp("two_ranks")
    torch.manual_seed(0)
    config = update_config(lift_dir)
    env = ppo.make_training_env(config, torch.device("cpu"))
    actor_critic = make_actor_critic(env.observation_spec["observation"], env.action_spec,
                                     ppo.model_config_from_flags(config))
    initial = {k: v.clone() for k, v in actor_critic.state_dict().items()}
    batch, _ = make_learner(config, initial).collect()
    torch.save({"config": config, "initial": initial, "batch": batch.clone()}, work / "rollout.pt")
    whole = make_learner(config, initial)
    whole_losses = whole.learn(batch.clone())
    half = make_learner(dataclasses.replace(config, num_envs=ENVS // 2), initial)
    half.learn(batch[: ENVS // 2].clone())
    mp.spawn(_rank_main, args=(work, lift_dir), nprocs=WORLD_SIZE, join=True)
    return {
        "work": work,
        "initial": initial,
        "whole": whole.actor_critic.state_dict(),
        "whole_losses": whole_losses,
        "half": half.actor_critic.state_dict(),
        "two_ranks": torch.load(work / "two_ranks.pt"),
    }


def max_difference(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_two_ranks_update_equals_one_rank_on_the_whole_rollout(two_ranks):
    moved = max_difference(two_ranks["whole"], two_ranks["initial"])
    two_vs_one = max_difference(two_ranks["two_ranks"], two_ranks["whole"])
    half_vs_whole = max_difference(two_ranks["half"], two_ranks["whole"])
    print(f"update moved parameters by up to {moved:.3g}; 2 ranks vs 1: {two_vs_one:.3g}; "
          f"half vs whole: {half_vs_whole:.3g}")
    assert moved > 1e-3
    assert two_vs_one < 1e-6
    assert half_vs_whole > 1e-4  # the test tells a rank that learnt from its half alone


def test_a_two_rank_run_resumes_exactly(two_ranks):
    straight, stopped = two_ranks["work"] / "straight", two_ranks["work"] / "stopped"
    assert_same_weights(final_model(stopped), final_model(straight))
    state = ckpt.read_training_state(ckpt.latest_checkpoint(stopped))
    assert state["updates"] == 2 and len(state["ranks"]) == WORLD_SIZE
    timing = {"wall_time", "fps"}
    ours, reference = read_metrics(stopped), read_metrics(straight)
    assert [m["updates"] for m in ours] == [1, 2] and [m["frames"] for m in ours] == [256, 512]
    for a, b in zip(ours, reference):
        assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}


@pytest.fixture(scope="module")
def torchrun_run(lift_dir, tmp_path_factory) -> tuple[Path, str]:
    """``torchrun --standalone --nproc-per-node 2 -m kinetix_torch train``: 2 updates, a checkpoint
    after each, an evaluation after the second. Returns the run folder and the output."""
    run = tmp_path_factory.mktemp("torchrun") / "run"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(WORLD_SIZE),
            "-m", "kinetix_torch", "train", "--levels", str(lift_dir), *RUN_FLAGS, "--total-frames",
            str(2 * FRAMES_PER_UPDATE), "--checkpoint-every", "1", "--eval-every", "2", "--eval-levels",
            str(lift_dir), "--eval-attempts", "32", "--out", str(run)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return run, output


def test_torchrun_logs_evaluates_and_checkpoints_from_rank_0_only(torchrun_run):
    run, output = torchrun_run
    assert output.count("done: 2 updates") == 1
    lines = read_metrics(run)
    assert [m["updates"] for m in lines] == [1, 2] and [m["frames"] for m in lines] == [256, 512]
    assert len((run / "eval.jsonl").read_text().splitlines()) == 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["update-00000001", "update-00000002"]
    state = ckpt.read_training_state(run / "checkpoint")
    assert state["updates"] == 2 and len(state["ranks"]) == WORLD_SIZE
    first, second = state["ranks"]
    carry = [TensorDict(r["carry"], batch_size=[ENVS // WORLD_SIZE]) for r in state["ranks"]]
    assert not torch.equal(carry[0]["observation"], carry[1]["observation"])  # each rank its own envs
    assert not torch.equal(first["rng"]["torch"], second["rng"]["torch"])
    assert json.loads((run / "checkpoint" / "config.json").read_text())["train_config"]["num_envs"] == ENVS


def test_a_one_process_resume_of_a_two_rank_run_is_refused(torchrun_run, capsys):
    run, _ = torchrun_run
    assert cli.main(["train", "--resume", str(run), "--total-frames", str(3 * FRAMES_PER_UPDATE)]) == 2
    error = capsys.readouterr().err
    assert "training_state.pt" in error and "2 processes" in error


def test_num_envs_is_the_total_and_must_split_evenly():
    config = TrainConfig(num_envs=48, num_minibatches=8)
    config.validate(world_size=2)  # 24 envs per rank: 3 per minibatch
    with pytest.raises(ValueError, match=r"--num-envs \(48\) is the total over all 5 processes"):
        config.validate(world_size=5)
    with pytest.raises(ValueError, match=r"--num-envs \(48 / 4 processes = 12\) must be divisible by --num-minib"):
        config.validate(world_size=4)


def test_each_rank_has_its_share_of_the_envs_and_its_own_seed(lift_dir):
    config = lift_config(lift_dir, Path("unused"), num_envs=ENVS)
    shards = [Shard(rank, WORLD_SIZE) for rank in range(WORLD_SIZE)]
    envs = [ppo.make_training_env(config, torch.device("cpu"), shard) for shard in shards]
    assert [env.num_envs for env in envs] == [ENVS // WORLD_SIZE] * WORLD_SIZE
    assert shards[0].seed(config.seed) == config.seed  # rank 0 runs as a lone process does
    draws = [env.rand_action()["action"] for env in envs]
    assert not torch.equal(draws[0], draws[1])
