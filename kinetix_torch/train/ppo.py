"""PPO on Kinetix levels, from TorchRL's parts.

Each update collects ``num_envs x num_steps`` transitions with the current policy, computes
advantages with TorchRL's :class:`~torchrl.objectives.value.GAE`, then runs ``update_epochs`` passes
of ``num_minibatches`` minibatches through :class:`~torchrl.objectives.ClipPPOLoss` (value clipping
and per-minibatch advantage normalisation as upstream), drawing whole trajectories (the rollout
sliced by environment, as upstream) from a :class:`~torchrl.data.ReplayBuffer` without replacement.
Recurrent models see those trajectories in TorchRL's recurrent mode.

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
from dataclasses import asdict, dataclass
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
from . import checkpoint as ckpt
from .config import MODEL_PRESETS, TrainConfig
from .evaluate import evaluate, resolve_level_paths
from .logger import RunLogger

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


# --------------------------------------------------------------------------------------------------
# Setting up


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device: not a torch device: {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available here")
    return device


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def make_training_env(config: TrainConfig, device: torch.device) -> KinetixEnv:
    if not config.levels:
        raise ValueError("no training levels: pass --levels PATH [PATH ...] (level files or folders)")
    params = {
        name: value
        for name, value in (("dense_reward_scale", config.dense_reward_scale), ("max_timesteps", config.max_timesteps))
        if value is not None
    }
    return make_env(
        config.obs,
        config.action,
        config.env_size,
        levels=resolve_level_paths(config.levels),
        num_envs=config.num_envs,
        seed=config.seed,
        device=device,
        **params,
    )


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
    """Rollouts and updates for one env and actor-critic; holds everything a checkpoint saves."""

    def __init__(self, config: TrainConfig, env: KinetixEnv, actor_critic: ActorCritic):
        self.config, self.env, self.actor_critic = config, env, actor_critic
        self.device = env.device
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
            normalize_advantage=True,
            functional=False,  # the critic's loss must reach the torso it shares with the actor, as upstream
        )
        params = list(actor_critic.parameters())
        if config.warmup_lr:  # upstream switches to AdamW (optax's default weight decay) with the warm-up
            self.optimizer = torch.optim.AdamW(params, lr=config.initial_lr, eps=config.adam_eps, weight_decay=1e-4)
        else:
            self.optimizer = torch.optim.Adam(params, lr=config.lr, eps=config.adam_eps)
        self.flat = config.full_minibatch_shuffle
        items = config.num_envs * (config.num_steps if self.flat else 1)
        self.buffer = ReplayBuffer(
            storage=LazyTensorStorage(items, device=self.device),
            sampler=SamplerWithoutReplacement(drop_last=True),
            batch_size=items // config.num_minibatches,
        )
        self.primer = actor_critic.make_primer()
        self.updates = self.frames = 0
        self.wall_time = 0.0
        self.carry = self._first_carry()
        self.episode_return = torch.zeros(config.num_envs, device=self.device)
        self.episode_length = torch.zeros(config.num_envs, dtype=torch.int64, device=self.device)

    def _first_carry(self) -> TensorDictBase:
        td = self.env.reset()
        td["is_init"] = torch.ones(self.config.num_envs, 1, dtype=torch.bool, device=self.device)
        if self.primer is not None:
            td.update(self.primer.primers.zero(td.shape).to(self.device))
        return td

    def _start_episodes(self, td: TensorDictBase, done: torch.Tensor) -> TensorDictBase:
        """New episodes where ``done``: a fresh level, ``is_init`` set and the recurrent state zeroed
        (as TorchRL's ``InitTracker`` and primer do), so that recurrent mode replays the rollout."""
        td = self.env.reset_where_done(td)
        td["is_init"] = done.unsqueeze(-1)
        if self.primer is not None:
            for key in self.primer.primers.keys(True, True):
                state = td.get(key)
                td.set(key, torch.where(done.reshape(-1, *[1] * (state.ndim - 1)), 0.0, state))
        return td

    # ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def collect(self) -> tuple[TensorDictBase, dict[str, torch.Tensor]]:
        """One rollout: a ``[num_envs, num_steps]`` TensorDict, and episode statistics (tensors)."""
        policy, env = self.actor_critic.policy, self.env
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
                td = self._start_episodes(step_mdp(td, keep_other=False, exclude_action=True), done)
        self.carry = td
        stats = {"episodes": finished, "solved": solved, "return_sum": return_sum, "length_sum": length_sum}
        return torch.stack(steps, dim=1), stats

    def learn(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """GAE, then the minibatch epochs; returns the mean of each loss metric (tensors)."""
        config = self.config
        lr = learning_rate(config, self.updates)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        sums = {key: torch.zeros((), device=self.device) for key in LOGGED_LOSS_KEYS}
        with set_recurrent_mode(self.actor_critic.recurrent):
            with torch.no_grad():
                self.gae(batch)
            self.buffer.empty()
            self.buffer.extend(batch.reshape(-1) if self.flat else batch)
            for _ in range(config.update_epochs):
                for _ in range(config.num_minibatches):
                    losses = self.loss(self.buffer.sample())
                    loss = sum(losses[key] for key in LOSS_TERMS)
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    grad_norm = torch.nn.utils.clip_grad_norm_(self.actor_critic.parameters(), config.max_grad_norm)
                    self.optimizer.step()
                    for key in LOGGED_LOSS_KEYS:
                        sums[key] += (grad_norm if key == "grad_norm" else losses[key]).detach()
        steps = config.update_epochs * config.num_minibatches
        return {key: total / steps for key, total in sums.items()}

    # ----------------------------------------------------------------------------------------------
    def training_state(self) -> dict:
        return {
            "format": 1,
            "updates": self.updates,
            "frames": self.frames,
            "wall_time": self.wall_time,
            "model": self.actor_critic.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": ckpt.rng_state(),
            "env": self.env.checkpoint_state(),
            "carry": self.carry.cpu().to_dict(),
            "episode_return": self.episode_return.cpu(),
            "episode_length": self.episode_length.cpu(),
        }

    def load_training_state(self, state: dict) -> None:
        self.updates, self.frames, self.wall_time = state["updates"], state["frames"], state["wall_time"]
        self.actor_critic.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.env.load_checkpoint_state(state["env"])
        self.carry = TensorDict(state["carry"], batch_size=[self.config.num_envs]).to(self.device)
        self.episode_return = state["episode_return"].to(self.device)
        self.episode_length = state["episode_length"].to(self.device)
        ckpt.set_rng_state(state["rng"])


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
        **host,
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
    """Train (or, with ``config.resume``, continue) a run; see the module docstring. Sets torch's
    CPU thread count (``config.num_threads``) for the process."""
    config.validate()
    device = resolve_device(config.device)
    if config.num_threads is not None or device.type == "cpu":
        torch.set_num_threads(config.num_threads or 1)
    run_dir = Path(config.resume or config.out)
    if config.resume is None and any((run_dir / name).exists() for name in (ckpt.CHECKPOINT_DIR, ckpt.HISTORY_DIR)):
        raise ValueError(f"{run_dir} already holds a run: continue it with --resume {run_dir}, or pick another --out")
    learner, resumed = _make_learner(config, device, run_dir)
    actor_critic = learner.actor_critic
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG_JSON, json.dumps(config.to_json_dict(), indent=2) + "\n")
    checkpoint_json = checkpoint_config(config, learner.env)

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

    def save() -> Path:
        return ckpt.write_checkpoint(
            run_dir, actor_critic, checkpoint_json, learner.training_state(), config.keep_checkpoints
        )

    metrics, saved_at = None, learner.updates if resumed else None
    with _StopRequest() as stop:
        try:
            while learner.updates < config.num_updates and stop.signal is None:
                start = time.perf_counter()
                batch, stats = learner.collect()
                values = stats | learner.learn(batch)
                host = dict(zip(values, torch.stack(list(values.values())).tolist()))  # the update's one sync
                seconds = time.perf_counter() - start
                learner.updates += 1
                learner.frames += config.frames_per_update
                learner.wall_time += seconds
                metrics = update_metrics(learner, host, seconds)
                logger.log(metrics)
                if config.eval_every and learner.updates % config.eval_every == 0:
                    logger.log_eval(learner.updates, _evaluate(config, learner))
                if learner.updates % config.checkpoint_every == 0:
                    save()
                    saved_at = learner.updates
            if saved_at != learner.updates:
                save()
        finally:
            logger.close()
    return TrainResult(
        run_dir=run_dir,
        checkpoint=run_dir / ckpt.CHECKPOINT_DIR,
        updates=learner.updates,
        frames=learner.frames,
        last_metrics=metrics,
        interrupted=stop.signal is not None,
    )


def _make_learner(config: TrainConfig, device: torch.device, run_dir: Path) -> tuple[PPO, bool]:
    """The env, network and learner of a run: fresh, from ``--init-from`` weights, or restored from
    the run's latest checkpoint with ``--resume``. Returns ``(learner, resumed)``."""
    resume_from = ckpt.latest_checkpoint(run_dir) if config.resume else None
    seed_everything(config.seed)
    env = make_training_env(config, device)
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
    learner = PPO(config, env, actor_critic)
    if resume_from is not None:
        learner.load_training_state(ckpt.read_training_state(resume_from))
    return learner, resume_from is not None


def _evaluate(config: TrainConfig, learner: PPO) -> dict[str, dict]:
    """Mean results (``{"mean": {...}, "mean_<size>": {...}}``) of the current policy on the eval levels."""
    ac = learner.actor_critic
    report = evaluate(
        ac.policy,
        resolve_level_paths(config.eval_levels),
        observation_type=config.obs,
        action_type=config.action,
        env_size=learner.env.static_env_params,
        attempts=config.eval_attempts,
        seed=config.seed,
        device=learner.device,
        primer=ac.make_primer(),
    )
    return {name: asdict(result) for name, result in report.means.items()}
