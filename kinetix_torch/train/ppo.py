"""PPO on Kinetix levels, from TorchRL's parts.

Each update collects ``num_envs x num_steps`` transitions with the current policy, computes
advantages with TorchRL's :class:`~torchrl.objectives.value.GAE`, then runs ``update_epochs`` passes
of ``num_minibatches`` minibatches through :class:`~torchrl.objectives.ClipPPOLoss` (value clipping
and per-minibatch advantage standardisation as upstream), drawing whole trajectories (the rollout
sliced by environment, as upstream) from a :class:`~torchrl.data.ReplayBuffer` without replacement.
Recurrent models see those trajectories in TorchRL's recurrent mode.

Under torchrun the run is data-parallel (:mod:`kinetix_torch.train.distributed`): each rank collects
its share of the envs, and the advantage statistics and gradients of every minibatch are reduced
over the ranks.

With ``--curriculum`` the levels come from a curriculum (:mod:`kinetix_torch.train.curriculum`):
DR's from the env, PLR's, ACCEL's and SFL's in batches handed out by the trainer, whose updates
take gradients only where the curriculum says so.

The rollout is a loop of ``policy -> env.step -> step_mdp -> env.reset_where_done`` on the env's
device rather than TorchRL's ``Collector``: it reads nothing on the host (the collector's
``maybe_reset`` reads ``done`` at every step), and its carry (last observation, ``is_init``,
recurrent state, episode accumulators) is ours to checkpoint, which exact resuming needs.

Metrics are accumulated as tensors during the update and read once after it.
"""

from __future__ import annotations

import json
import math
import random
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import LazyTensorStorage, ReplayBuffer, SamplerWithoutReplacement
from torchrl.envs.utils import ExplorationType, set_exploration_type, step_mdp
from torchrl.modules import set_recurrent_mode
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.value import GAE

from ..atomic import atomic_write_text
from ..env import KinetixEnv, make_env
from ..models import ActorCritic, ModelConfig, make_actor_critic
from ..models.checkpoint import read_json_object
from ..params import EnvParams, StaticEnvParams, static_params_for_size
from . import checkpoint as ckpt
from .config import MODEL_PRESETS, TrainConfig
from .curriculum import BATCHED_CURRICULA, LevelBatches, PolicySolveRates, make_source
from .distributed import Shard, joined_process_group, resolve_device
from .evaluate import EvalReport, evaluate, load_eval_levels, resolve_level_paths
from .logger import RunLogger, level_name
from .rollout import first_carry, start_episodes, start_levels

__all__ = [
    "train",
    "TrainResult",
    "PPO",
    "make_training_env",
    "model_config_from_flags",
    "resolve_device",
    "learning_rate",
    "CONFIG_JSON",
]

CONFIG_JSON = "config.json"
"""The run's options, written to the run folder when it starts (also inside every checkpoint)."""

LOSS_TERMS = ("loss_objective", "loss_critic", "loss_entropy")
LOGGED_LOSS_KEYS = LOSS_TERMS + ("entropy", "kl_approx", "clip_fraction", "value_clip_fraction", "grad_norm")


@dataclass
class TrainResult:
    """What :func:`train` leaves behind."""

    run_dir: Path
    checkpoint: Path
    updates: int
    frames: int
    last_metrics: dict | None
    """The last update's metrics line (``None`` if no update ran in this call)."""
    interrupted: bool
    """Stopped early by SIGINT/SIGTERM (after writing a checkpoint)."""
    rank: int
    """This process's rank (0 without torchrun); only rank 0 logs and writes checkpoints."""


# --------------------------------------------------------------------------------------------------
# Setting up


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def make_training_env(config: TrainConfig, device: torch.device, shard: Shard = Shard()) -> KinetixEnv:
    """The envs of ``shard``: its share of ``--num-envs``, seeded with its own seed. With
    ``--curriculum none`` they play ``--levels``; with ``dr`` they draw fresh random levels from the
    DR source when an episode ends; with ``plr``/``accel``/``sfl`` they get every level from the
    trainer (:class:`~.curriculum.LevelBatches`) and replay it."""
    params = {
        name: value
        for name, value in (("dense_reward_scale", config.dense_reward_scale), ("max_timesteps", config.max_timesteps))
        if value is not None
    }
    options = dict(num_envs=shard.num_envs(config.num_envs), seed=shard.seed(config.seed), device=device,
                   pixel_format=config.pixel_format)
    if config.curriculum == "none":
        if not config.levels:
            raise ValueError("no training levels: pass --levels PATH [PATH ...] (level files or folders), "
                             "or train on random levels with --curriculum dr|plr|accel|sfl")
        return make_env(config.obs, config.action, config.env_size, levels=resolve_level_paths(config.levels),
                        **options, **params)
    static, env_params = static_params_for_size(config.env_size), EnvParams().replace(**params)
    if config.curriculum == "dr":
        source = make_source(config, static, env_params, device, shard)
        return make_env(config.obs, config.action, static, level_source=source, env_params=env_params, **options)
    return make_env(config.obs, config.action, static, restart="same", env_params=env_params, **options)


def model_config_from_flags(config: TrainConfig) -> ModelConfig:
    """Upstream's preset ``--model``, then ``--model-config``, then ``--width``/``--depth``/``--recurrent``."""
    options, where = dict(MODEL_PRESETS[config.model]), f"--model {config.model}"
    if config.model_config is not None:
        where = f"--model-config {config.model_config}"
        loaded = read_json_object(config.model_config, "--model-config: file")
        options.update(loaded.get("model", loaded))  # a checkpoint's config.json holds them under "model"
    flags = {"override_model_width": config.width, "override_model_depth": config.depth,
             "recurrent_model": config.recurrent or None}
    options.update({name: value for name, value in flags.items() if value is not None})
    return ModelConfig.from_upstream(options, where=where)


def check_fits(policy: ckpt.LoadedPolicy, env: KinetixEnv, source: str) -> None:
    """Raise :class:`~.checkpoint.CheckpointError` when a checkpoint's network cannot drive ``env``."""
    wants = (env.observation_type, env.action_type)
    has = (policy.observation_type, policy.action_type)
    if has != wants:
        raise ckpt.CheckpointError(
            f"{source}: checkpoint reads {has[0]} observations and writes {has[1]} actions, "
            f"but this run's env has {wants[0]} / {wants[1]} (--obs / --action)"
        )
    sizes = ("num_polygons", "num_circles", "num_joints", "num_thrusters", "num_motor_bindings",
             "num_thruster_bindings")
    theirs = {n: getattr(policy.static_env_params, n) for n in sizes}
    ours = {n: getattr(env.static_env_params, n) for n in sizes}
    if theirs != ours:
        raise ckpt.CheckpointError(
            f"{source}: checkpoint was trained at env size {_sizes_text(theirs)} "
            f"({policy.config.get('env_size_name', 'custom')}), this run uses {_sizes_text(ours)} (--env-size)"
        )


def _sizes_text(sizes: dict) -> str:
    return ", ".join(f"{k.removeprefix('num_')}={v}" for k, v in sizes.items())


def checkpoint_config(config: TrainConfig, env: KinetixEnv) -> dict:
    """``config.json`` of our checkpoints: upstream's env entries plus the run's options."""
    static = env.static_env_params.__dict__ | {"screen_dim": list(env.static_env_params.screen_dim)}
    return {
        "observation_type": env.observation_type,
        "action_type": env.action_type,
        "env_size_name": config.env_size,
        "static_env_params": static,
        "env_params": env.env_params.to_dict(),
        "train_config": config.to_json_dict(),
    }


def learning_rate(config: TrainConfig, update: int) -> float:
    """Upstream's schedules, by update index (0-based): constant, linear decay, or linear warm-up
    followed by a cosine decay."""
    progress = update / config.num_updates
    if config.anneal_lr:
        return config.lr * (1.0 - progress)
    if config.warmup_lr:
        if progress < config.warmup_frac:
            return config.initial_lr + (config.peak_lr - config.initial_lr) * progress / config.warmup_frac
        cosine = (progress - config.warmup_frac) / (1.0 - config.warmup_frac)
        return config.peak_lr * max(0.0, 0.5 * (1.0 + math.cos(math.pi * cosine)))
    return config.lr


# --------------------------------------------------------------------------------------------------
# The learner


class PPO:
    """Rollouts and updates for one env and actor-critic; holds everything a checkpoint saves.
    ``shard``: this process's place in a data-parallel run (its env holds its share of the envs).
    ``level_batches``: the batched curriculum handing out the env's levels, if any."""

    def __init__(self, config: TrainConfig, env: KinetixEnv, actor_critic: ActorCritic, shard: Shard = Shard(),
                 level_batches: LevelBatches | None = None):
        self.config, self.env, self.actor_critic, self.shard = config, env, actor_critic, shard
        self.level_batches = level_batches
        self.device = env.device
        self.num_envs = env.num_envs
        self.gae = GAE(
            gamma=config.gamma,
            lmbda=config.gae_lambda,
            value_network=actor_critic.value,
            time_dim=1,
            deactivate_vmap=True,
            device=self.device,
        )
        self.loss = ClipPPOLoss(
            actor_critic.policy,
            actor_critic.value,
            clip_epsilon=config.clip_eps,
            clip_value=config.clip_eps,
            entropy_coeff=config.ent_coef,
            critic_coeff=0.5 * config.vf_coef,  # upstream's value loss is 0.5 x squared error
            loss_critic_type="l2",
            functional=False,  # the critic's loss must reach the torso it shares with the actor, as upstream
        )
        params = list(actor_critic.parameters())
        if config.warmup_lr:  # upstream switches to AdamW (optax's default weight decay) with the warm-up
            self.optimizer = torch.optim.AdamW(params, lr=config.initial_lr, eps=config.adam_eps, weight_decay=1e-4)
        else:
            self.optimizer = torch.optim.Adam(params, lr=config.lr, eps=config.adam_eps)
        self.flat = config.full_minibatch_shuffle
        items = self.num_envs * (config.num_steps if self.flat else 1)
        self.buffer = ReplayBuffer(
            storage=LazyTensorStorage(items, device=self.device),
            sampler=SamplerWithoutReplacement(drop_last=True),
            batch_size=items // config.num_minibatches,
        )
        self.primer = actor_critic.make_primer()
        self.updates = self.frames = 0
        self.wall_time = 0.0
        # A batched curriculum's first levels come with the first rollout (collect).
        self.carry = None if level_batches is not None else first_carry(env.reset(), self.primer)
        self.episode_return = torch.zeros(self.num_envs, device=self.device)
        self.episode_length = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)

    def _start_level_batch(self) -> None:
        """Every env starts a level of the curriculum's next batch, with a fresh carry."""
        levels, ids = self.level_batches.next_levels()
        self.carry = start_levels(self.env, self.primer, levels, ids)
        self.episode_return = torch.zeros_like(self.episode_return)
        self.episode_length = torch.zeros_like(self.episode_length)

    # ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def collect(self) -> tuple[TensorDictBase, dict[str, torch.Tensor]]:
        """One rollout: a ``[num_envs, num_steps]`` TensorDict, and episode statistics (tensors)."""
        policy, env = self.actor_critic.policy, self.env
        if self.level_batches is not None and self.level_batches.starts_batch:
            self._start_level_batch()
        td = self.carry
        steps = []
        finished = torch.zeros((), device=self.device)
        solved, return_sum, length_sum = finished.clone(), finished.clone(), finished.clone()
        with set_exploration_type(ExplorationType.RANDOM):
            for _ in range(self.config.num_steps):
                td = env.step(policy(td))
                td["next", "is_init"] = torch.zeros_like(td["is_init"])
                steps.append(td)
                done = td["next", "done"].squeeze(-1)
                self.episode_return += td["next", "reward"].squeeze(-1)
                self.episode_length += 1
                finished += done.sum()
                solved += (done & td["next", "goal_reached"].squeeze(-1)).sum()
                return_sum += torch.where(done, self.episode_return, 0.0).sum()
                length_sum += torch.where(done, self.episode_length, 0).sum()
                self.episode_return = torch.where(done, 0.0, self.episode_return)
                self.episode_length = torch.where(done, 0, self.episode_length)
                td = start_episodes(env, self.primer, step_mdp(td, keep_other=False, exclude_action=True), done)
        self.carry = td
        stats = {"episodes": finished, "solved": solved, "return_sum": return_sum, "length_sum": length_sum}
        return torch.stack(steps, dim=1), stats

    def learn(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """GAE, then the minibatch epochs; returns the mean of each loss metric (tensors, this
        rank's; NaN when the update takes no gradients). With several ranks each minibatch is this
        rank's share of the global one. A batched curriculum's untrained batches get GAE only (the
        curriculum scores them); when only some ranks train, the others run the epochs with their
        loss and advantage statistics zeroed, and gradients are averaged over the training ranks."""
        config = self.config
        lr = learning_rate(config, self.updates)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        sums = {key: torch.zeros((), device=self.device) for key in LOGGED_LOSS_KEYS}
        train = self.level_batches is None or self.level_batches.train
        training_ranks = self.shard.count(train, self.device)
        with set_recurrent_mode(self.actor_critic.recurrent):
            with torch.no_grad():
                self.gae(batch)
            if not training_ranks:
                return {key: torch.full((), torch.nan, device=self.device) for key in LOGGED_LOSS_KEYS}
            self.buffer.empty()
            self.buffer.extend(batch.reshape(-1) if self.flat else batch)
            for _ in range(config.update_epochs):
                for _ in range(config.num_minibatches):
                    minibatch = self.buffer.sample()
                    minibatch["advantage"] = standardize(minibatch["advantage"], self.shard, counted=train)
                    losses = self.loss(minibatch)
                    loss = sum(losses[key] for key in LOSS_TERMS)
                    if not train:
                        loss = loss * 0.0
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    self.shard.average_gradients(self.actor_critic.parameters(), training_ranks)
                    grad_norm = torch.nn.utils.clip_grad_norm_(self.actor_critic.parameters(), config.max_grad_norm)
                    self.optimizer.step()
                    for key in LOGGED_LOSS_KEYS:
                        sums[key] += (grad_norm if key == "grad_norm" else losses[key]).detach()
        steps = config.update_epochs * config.num_minibatches
        return {key: total / steps for key, total in sums.items()}

    def end_update(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """After :meth:`learn`: the batched curriculum records the update (and scores its batch
        after the last); returns its metrics (scalar tensors; none without a batched curriculum)."""
        if self.level_batches is None:
            return {}
        self.level_batches.record(batch)
        return self.level_batches.stats()

    # ----------------------------------------------------------------------------------------------
    def rank_state(self) -> dict:
        """What this rank alone holds: its RNG states, envs, rollout carry and curriculum (tensors
        on the CPU)."""
        return {
            "rng": ckpt.rng_state(),
            "env": self.env.checkpoint_state(),
            "carry": None if self.carry is None else self.carry.cpu().to_dict(),
            "episode_return": self.episode_return.cpu(),
            "episode_length": self.episode_length.cpu(),
            "curriculum": None if self.level_batches is None else self.level_batches.state_dict(),
        }

    def training_state(self, rank_states: list[dict]) -> dict:
        """The checkpoint's ``training_state.pt``: what the ranks share, and every rank's
        :meth:`rank_state` in rank order."""
        return {
            "format": 2,
            "updates": self.updates,
            "frames": self.frames,
            "wall_time": self.wall_time,
            "model": self.actor_critic.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ranks": rank_states,
        }

    def load_training_state(self, state: dict, where: str = "training state") -> None:
        ranks = state["ranks"] if state["format"] >= 2 else [state]  # format 1: one process, at the top level
        if len(ranks) != self.shard.world_size:
            raise ckpt.CheckpointError(
                f"{where}: written by a run of {len(ranks)} processes; resume it with as many "
                f"(torchrun --nnodes x --nproc-per-node), not {self.shard.world_size}"
            )
        self.updates, self.frames, self.wall_time = state["updates"], state["frames"], state["wall_time"]
        self.actor_critic.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        mine = ranks[self.shard.rank]
        self.env.load_checkpoint_state(mine["env"])
        if (mine.get("curriculum") is None) != (self.level_batches is None):
            raise ckpt.CheckpointError(f"{where}: its curriculum state does not fit this run's --curriculum")
        if self.level_batches is not None:
            self.level_batches.load_state_dict(mine["curriculum"])
        carry = mine["carry"]
        self.carry = None if carry is None else TensorDict(carry, batch_size=[self.num_envs]).to(self.device)
        self.episode_return = mine["episode_return"].to(self.device)
        self.episode_length = mine["episode_length"].to(self.device)
        ckpt.set_rng_state(mine["rng"])


def standardize(advantage: torch.Tensor, shard: Shard, counted: bool = True) -> torch.Tensor:
    """Upstream's ``(A - mean) / (std + 1e-8)``, with the mean and (population) standard deviation
    of the whole minibatch: the shares of all ranks (of those that train on this update: a rank
    whose share is not ``counted`` adds nothing)."""
    values = advantage.double()
    moments = torch.stack([values.new_tensor(values.numel()), values.sum(), values.square().sum()])
    if not counted:
        moments = torch.zeros_like(moments)
    count, total, squares = shard.sum(moments)
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0.0).sqrt()
    return ((values - mean) / (std + 1e-8)).to(advantage.dtype)


def update_metrics(learner: PPO, host: dict[str, float], seconds: float) -> dict:
    """One metrics line from the update's statistics, read on the host."""
    host = dict(host)
    episodes = int(host.pop("episodes"))
    solved, return_sum, length_sum = host.pop("solved"), host.pop("return_sum"), host.pop("length_sum")
    return {
        "updates": learner.updates,
        "frames": learner.frames,
        "wall_time": round(learner.wall_time, 3),
        "fps": learner.config.frames_per_update / seconds,
        "episodes": episodes,
        "episode_return": return_sum / episodes if episodes else None,
        "solve_rate": solved / episodes if episodes else None,
        "episode_length": length_sum / episodes if episodes else None,
        # None: an update without gradients, an empty buffer
        **{key: value if math.isfinite(value) else None for key, value in host.items()},
        "lr": learner.optimizer.param_groups[0]["lr"],
    }


# --------------------------------------------------------------------------------------------------
# The run


class _StopRequest:
    """SIGINT/SIGTERM set a flag; the loop writes a checkpoint after the current update and returns.
    A second signal interrupts at once."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def train(config: TrainConfig) -> TrainResult:
    """Train (or, with ``config.resume``, continue) a run; see the module docstring. Under torchrun
    this process is one rank of a data-parallel run (:mod:`~kinetix_torch.train.distributed`). Sets
    torch's CPU thread count (``config.num_threads``) for the process."""
    with joined_process_group(config.device) as (shard, device):
        return _train(config, shard, device)


def _train(config: TrainConfig, shard: Shard, device: torch.device) -> TrainResult:
    config.validate(shard.world_size)
    if config.num_threads is not None or device.type == "cpu":
        torch.set_num_threads(config.num_threads or 1)
    run_dir = Path(config.resume or config.out)
    if config.resume is None and any((run_dir / name).exists() for name in (ckpt.CHECKPOINT_DIR, ckpt.HISTORY_DIR)):
        raise ValueError(f"{run_dir} already holds a run: continue it with --resume {run_dir}, or pick another --out")
    learner, resumed = _make_learner(config, device, run_dir, shard)
    actor_critic = learner.actor_critic
    checkpoint_json = checkpoint_config(config, learner.env)
    logger, eval_paths = None, []
    if shard.is_main:
        if config.eval_every:
            eval_paths = _eval_level_paths(config, learner.env.static_env_params)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / CONFIG_JSON, json.dumps(config.to_json_dict(), indent=2) + "\n")
        logger = RunLogger(
            run_dir,
            total_frames=config.num_updates * config.frames_per_update,
            start_frames=learner.frames,
            start_updates=learner.updates,
            tensorboard=config.tensorboard,
            wandb=config.wandb,
            wandb_project=config.wandb_project,
            wandb_config=config.to_json_dict() | {"model": actor_critic.config.to_upstream()},
            progress=config.progress,
        )
        if learner.updates == 0:
            logger.bar.write(actor_critic.summary())

    def save() -> None:
        """Every rank's state, gathered; rank 0 writes the checkpoint."""
        rank_states = shard.gather(learner.rank_state())
        if shard.is_main:
            training_state = learner.training_state(rank_states)
            ckpt.write_checkpoint(run_dir, actor_critic, checkpoint_json, training_state, config.keep_checkpoints)

    metrics, saved_at, stopping = None, learner.updates if resumed else None, False
    with _StopRequest() as stop:
        try:
            if logger is not None and config.eval_every and config.eval_first and learner.updates == 0:
                logger.log_eval(0, _evaluate(config, learner, eval_paths))
            while learner.updates < config.num_updates and not stopping:
                start = time.perf_counter()
                batch, stats = learner.collect()
                means = learner.learn(batch)
                means |= learner.end_update(batch)
                stop_requests = torch.tensor(float(stop.signal is not None), device=device)
                host = shard.reduce_to_host(stats | {"stop_requests": stop_requests}, means)  # the update's one sync
                stopping = host.pop("stop_requests") > 0  # a signal to any rank stops all of them here
                seconds = time.perf_counter() - start
                learner.updates += 1
                learner.frames += config.frames_per_update
                learner.wall_time += seconds
                metrics = update_metrics(learner, host, seconds)
                if logger is not None:
                    logger.log(metrics)
                    if config.eval_every and learner.updates % config.eval_every == 0:
                        logger.log_eval(learner.updates, _evaluate(config, learner, eval_paths))
                if learner.updates % config.checkpoint_every == 0:
                    save()
                    saved_at = learner.updates
            if saved_at != learner.updates:
                save()
            shard.barrier()  # every rank returns once the last checkpoint is on disk
        finally:
            if logger is not None:
                logger.close()
    return TrainResult(
        run_dir=run_dir,
        checkpoint=run_dir / ckpt.CHECKPOINT_DIR,
        updates=learner.updates,
        frames=learner.frames,
        last_metrics=metrics,
        interrupted=stopping,
        rank=shard.rank,
    )


def _make_learner(config: TrainConfig, device: torch.device, run_dir: Path, shard: Shard) -> tuple[PPO, bool]:
    """The env, network and learner of a run: fresh, from ``--init-from`` weights, or restored from
    the run's latest checkpoint with ``--resume``; every rank starts from rank 0's weights. Returns
    ``(learner, resumed)``."""
    resume_from = ckpt.latest_checkpoint(run_dir) if config.resume else None
    seed_everything(shard.seed(config.seed))
    env = make_training_env(config, device, shard)
    source = None
    if resume_from is not None:
        source = ckpt.load_policy(resume_from)
        check_fits(source, env, f"--resume {run_dir}")
    elif config.init_from is not None:
        source = ckpt.load_policy(config.init_from)
        check_fits(source, env, f"--init-from {config.init_from}")
    model_config = source.actor_critic.config if source is not None else model_config_from_flags(config)
    actor_critic = make_actor_critic(env.observation_spec["observation"], env.action_spec, model_config).to(device)
    if source is not None:
        actor_critic.load_state_dict(source.actor_critic.state_dict())
    shard.broadcast_module(actor_critic)
    level_batches = None
    if config.curriculum in BATCHED_CURRICULA:
        solve_rates = PolicySolveRates(actor_critic, env) if config.curriculum == "sfl" else None
        level_source = make_source(config, env.static_env_params, env.env_params, device, shard, solve_rates)
        level_batches = LevelBatches(level_source, env.num_envs, device)
    learner = PPO(config, env, actor_critic, shard, level_batches)
    if resume_from is not None:
        where = str(resume_from / ckpt.TRAINING_STATE_FILE)
        learner.load_training_state(ckpt.read_training_state(resume_from), where=where)
    return learner, resume_from is not None


def _eval_level_paths(config: TrainConfig, static: StaticEnvParams) -> list[Path]:
    """The eval level files, checked before training starts: they exist, fit the env size and have
    distinct names in the logs."""
    paths = resolve_level_paths(config.eval_level_specs)
    load_eval_levels(paths, static)
    names = [level_name(path) for path in paths]
    for path, name in zip(paths, names):
        if names.count(name) > 1:
            raise ValueError(f"--eval-levels: two level files are logged as {name!r}, one of them {path}: rename one")
    return paths


def _evaluate(config: TrainConfig, learner: PPO, level_paths: list[Path]) -> EvalReport:
    """The current policy on the eval levels: ``--eval-attempts`` stochastic attempts per level, all
    in one batched env with the training env's params (levels padded to its size)."""
    ac = learner.actor_critic
    return evaluate(
        ac.policy,
        level_paths,
        observation_type=config.obs,
        action_type=config.action,
        env_size=learner.env.static_env_params,
        attempts=config.eval_attempts,
        seed=config.seed,
        device=learner.device,
        env_params=learner.env.env_params,
        primer=ac.make_primer(),
        max_envs=len(level_paths) * config.eval_attempts,
        pixel_format=config.pixel_format,
    )
