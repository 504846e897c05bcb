"""The options of a PPO training run: one dataclass, one command-line flag per field.

PPO's defaults are upstream Kinetix's (``configs/learning/ppo-base.yaml`` and ``ppo-rnn.yaml`` of
kinetix-env 3.0): 2048 envs x 64 steps per rollout, 8 epochs x 32 minibatches, gamma 0.995, GAE
lambda 0.9, clip 0.2, entropy 0.01, value 0.5, gradient norm 1.0, Adam(lr 5e-5, eps 1e-5). The
env's defaults are :func:`kinetix_torch.make_env`'s. Every run saves its config as JSON
(``to_json_dict``) and can be rebuilt from it (``from_json_dict``); a curriculum's options are
nested under ``"curriculum_config"``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..curricula import CURRICULA, ACCELConfig, DRConfig, PLRConfig, SFLConfig
from ..params import ENV_SIZES

__all__ = ["TrainConfig", "RESUMABLE_CHANGES", "MODEL_PRESETS", "CurriculumConfig"]

CurriculumConfig = DRConfig | PLRConfig | ACCELConfig | SFLConfig
"""The options of ``--curriculum dr|plr|accel|sfl`` (one flag per field)."""

MODEL_PRESETS = {
    "tf-paper": dict(override_model_depth=5, override_model_width=128, transformer_depth=2, transformer_size=16,
                     transformer_encoder_size=128, num_heads=8, transformer_ffn=False,
                     multilayer_joint_thruster_mixing=False, model_name="tf-s-paper"),
    "tf-s": dict(override_model_depth=3, override_model_width=256, transformer_depth=2, transformer_size=32,
                 transformer_encoder_size=128, num_heads=8, transformer_ffn=True,
                 multilayer_joint_thruster_mixing=True, model_name="tf-s-default-mix"),
    "tf-m": dict(override_model_depth=1, override_model_width=256, transformer_depth=3, transformer_size=128,
                 transformer_encoder_size=512, num_heads=8, transformer_ffn=True,
                 multilayer_joint_thruster_mixing=True, model_name="tf-m"),
    "tf-l": dict(override_model_depth=1, override_model_width=512, transformer_depth=4, transformer_size=256,
                 transformer_encoder_size=512, num_heads=8, transformer_ffn=True,
                 multilayer_joint_thruster_mixing=True, model_name="tf-l"),
}
"""Upstream's model groups (``configs/model/tf-*.yaml``), as options of :class:`~kinetix_torch.models.ModelConfig`.
The MLP heads' depth and width apply to every torso; the rest to the entity transformer."""


@dataclass
class TrainConfig:
    """Train a PPO agent on Kinetix levels."""

    # What to train on ---------------------------------------------------------------------------
    levels: list[Path] = field(default_factory=list)
    """Level JSON files or folders of them (a folder means every *.json in it, sorted by name); with
    --curriculum none only."""
    curriculum: Literal["none", "dr", "plr", "accel", "sfl"] = "none"
    """Where levels come from: none (--levels), or random levels of --env-size through domain randomisation,
    robust PLR, ACCEL or SFL (kinetix_torch.curricula)."""
    curriculum_config: CurriculumConfig | None = None
    """The curriculum's options (default: its config class's defaults); on the command line, one flag per field."""
    env_size: Literal["s", "m", "l"] = "m"
    """Upstream's env size preset; smaller levels are padded to it."""
    obs: Literal["symbolic_flat", "symbolic_flat_padded", "symbolic_entity", "pixels", "blind"] = "symbolic_flat"
    """Observation type."""
    pixel_format: Literal["float_hwc", "uint8_chw"] = "float_hwc"
    """Pixel image layout (--obs pixels): upstream's float32 (X, Y, 3), or uint8 (3, X, Y), a quarter of the memory."""
    action: Literal["multi_discrete", "discrete", "continuous"] = "multi_discrete"
    """Action type."""
    dense_reward_scale: float | None = None
    """Scale of the dense distance shaping reward (default: the first level's)."""
    max_timesteps: int | None = None
    """Env steps per episode before truncation (default: the first level's)."""

    # Model --------------------------------------------------------------------------------------
    model: Literal["tf-paper", "tf-s", "tf-m", "tf-l"] = "tf-paper"
    """Upstream's model preset (the paper's is the default); the model options below apply on top."""
    model_config: Path | None = None
    """JSON file of upstream model options (a dict, or a checkpoint's config.json with a "model" entry)."""
    width: int | None = None
    """Width of the actor and critic MLPs (upstream's override_model_width)."""
    depth: int | None = None
    """Hidden layers of the actor and critic MLPs (upstream's override_model_depth)."""
    recurrent: bool = False
    """Carry a GRU across steps, reset at episode starts (upstream's recurrent_model)."""

    # PPO ----------------------------------------------------------------------------------------
    total_frames: int = 10_737_418_240
    """Env steps to train for, over all envs (rounded down to whole rollouts)."""
    num_envs: int = 2048
    """Environments stepped together, over all processes of a torchrun (each steps its share)."""
    num_steps: int = 64
    """Steps per environment per rollout."""
    update_epochs: int = 8
    """Passes over each rollout."""
    num_minibatches: int = 32
    """Minibatches per pass; each holds whole trajectories of num_envs / num_minibatches envs."""
    full_minibatch_shuffle: bool = False
    """Feed-forward models only: shuffle single transitions into minibatches instead of whole trajectories."""
    gamma: float = 0.995
    """Discount factor."""
    gae_lambda: float = 0.9
    """GAE lambda."""
    clip_eps: float = 0.2
    """PPO ratio clip, also the value clip (as upstream)."""
    ent_coef: float = 0.01
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Value loss coefficient (the value loss is 0.5 x squared error, as upstream)."""
    max_grad_norm: float = 1.0
    """Global gradient norm clip."""
    lr: float = 5e-5
    """Learning rate (constant unless --anneal-lr or --warmup-lr)."""
    adam_eps: float = 1e-5
    """Adam epsilon."""
    anneal_lr: bool = False
    """Decay the learning rate linearly from lr to 0 over the run."""
    warmup_lr: bool = False
    """Warm up linearly from initial_lr to peak_lr over warmup_frac of the run, then cosine-decay to 0
    (with AdamW, weight decay 1e-4, as upstream)."""
    initial_lr: float = 1e-5
    """Learning rate at the start of the warm-up."""
    peak_lr: float = 3e-4
    """Learning rate at the end of the warm-up."""
    warmup_frac: float = 0.1
    """Fraction of the run spent warming up."""

    # Run ----------------------------------------------------------------------------------------
    seed: int = 0
    """Seed of torch, numpy and the env's level draws; a fixed seed reproduces a CPU run bit for bit."""
    device: str = "auto"
    """Torch device for env and model ("auto": cuda when available, else cpu)."""
    num_threads: int | None = None
    """CPU threads torch may use (default: 1 when training on the CPU, where the JAX engine keeps the
    other cores busy, else torch's choice)."""
    out: Path = Path("runs/train")
    """Run folder: checkpoint/, checkpoints/, metrics.jsonl, tb/."""
    resume: Path | None = None
    """Continue the run in this folder from its latest checkpoint (its saved config; only run options may change)."""
    init_from: Path | None = None
    """Start a new run from these weights: a run folder, its checkpoint/ or an upstream checkpoint folder."""
    checkpoint_every: int = 10
    """Write a checkpoint every this many updates (and always at the end)."""
    keep_checkpoints: int = 3
    """Checkpoints kept under checkpoints/ (the latest is also checkpoint/)."""
    eval_every: int = 0
    """Evaluate on eval_levels every this many updates (0: never)."""
    eval_levels: list[Path] = field(default_factory=list)
    """Level files, folders or handmade set names (s, m, l) to evaluate on (default: the handmade sets
    up to the training size, smaller levels padded up)."""
    eval_attempts: int = 20
    """Attempts per evaluation level (stochastic policy)."""
    eval_first: bool = False
    """With --eval-every: also evaluate before the first update (the start of the eval curve)."""
    tensorboard: bool = True
    """Log to TensorBoard under tb/."""
    wandb: bool = False
    """Log to Weights & Biases (needs the wandb package)."""
    wandb_project: str = "kinetix-torch"
    """W&B project name."""
    progress: bool = True
    """Show a progress bar."""

    # ------------------------------------------------------------------------------------------
    @property
    def frames_per_update(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        return self.total_frames // self.frames_per_update

    @property
    def eval_level_specs(self) -> list:
        """``--eval-levels``, else the names of the handmade sets up to the training size."""
        return self.eval_levels or list(ENV_SIZES[: ENV_SIZES.index(self.env_size) + 1])

    def __post_init__(self):
        if self.curriculum != "none" and self.curriculum_config is None:
            self.curriculum_config = CURRICULA[self.curriculum][0]()

    def validate(self, world_size: int = 1) -> None:
        """Raise ``ValueError`` naming the first option out of range (for a run of ``world_size``
        data-parallel processes)."""
        if self.curriculum == "none":
            if self.curriculum_config is not None:
                raise ValueError("curriculum options need --curriculum dr|plr|accel|sfl, not none")
        else:
            expected = CURRICULA[self.curriculum][0]
            if type(self.curriculum_config) is not expected:
                raise ValueError(f"--curriculum {self.curriculum} takes a {expected.__name__}, "
                                 f"got {type(self.curriculum_config).__name__}")
            if self.levels:
                raise ValueError(f"--curriculum {self.curriculum} trains on random levels of --env-size: "
                                 "leave out --levels (or train on them with --curriculum none)")
            self.curriculum_config.validate()
        positive = ("num_envs", "num_steps", "update_epochs", "num_minibatches", "checkpoint_every", "keep_checkpoints",
                    "eval_attempts")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"--{_flag(name)} must be >= 1, got {getattr(self, name)}")
        for name in ("width", "depth", "max_timesteps", "num_threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{_flag(name)} must be >= 1, got {getattr(self, name)}")
        if self.eval_every < 0:
            raise ValueError(f"--eval-every must be >= 0, got {self.eval_every}")
        if self.total_frames < self.frames_per_update:
            raise ValueError(
                f"--total-frames ({self.total_frames}) is less than one rollout "
                f"(--num-envs x --num-steps = {self.frames_per_update})"
            )
        if self.num_envs % world_size:
            raise ValueError(
                f"--num-envs ({self.num_envs}) is the total over all {world_size} processes "
                f"(torchrun's --nnodes x --nproc-per-node): it must be divisible by {world_size}"
            )
        if self.num_envs // world_size % self.num_minibatches:
            share = "" if world_size == 1 else f" / {world_size} processes = {self.num_envs // world_size}"
            raise ValueError(
                f"--num-envs ({self.num_envs}{share}) must be divisible by --num-minibatches ({self.num_minibatches}): "
                f"minibatches hold whole trajectories"
            )
        if self.full_minibatch_shuffle and self.recurrent:
            raise ValueError("--full-minibatch-shuffle needs a feed-forward model (recurrent ones train on sequences)")
        if not 0.0 < self.gamma <= 1.0 or not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(
                f"--gamma must lie in (0, 1] and --gae-lambda in [0, 1], got {self.gamma}, {self.gae_lambda}"
            )
        if self.anneal_lr and self.warmup_lr:
            raise ValueError("--anneal-lr and --warmup-lr exclude each other")
        if not 0.0 < self.warmup_frac < 1.0:
            raise ValueError(f"--warmup-frac must lie in (0, 1), got {self.warmup_frac}")
        for name in ("lr", "adam_eps", "max_grad_norm", "clip_eps", "initial_lr", "peak_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{_flag(name)} must be > 0, got {getattr(self, name)}")

    def to_json_dict(self) -> dict:
        """Plain JSON values (paths as strings, the curriculum's options as a nested dict)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_json_dict(cls, values: dict, where: str = "train config") -> "TrainConfig":
        """Inverse of :meth:`to_json_dict`; unknown keys are an error naming ``where``."""
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"{where}: unknown option(s) {unknown}")
        out = {}
        for name, value in values.items():
            tp = hints[name]
            if value is not None and Path in _path_types(tp):
                value = [Path(v) for v in value] if isinstance(value, list) else Path(value)
            out[name] = value
        options = out.get("curriculum_config")
        if options is not None:
            curriculum = out.get("curriculum", "none")
            if curriculum not in CURRICULA or not isinstance(options, dict):
                raise ValueError(f"{where}: curriculum_config needs a curriculum of {sorted(CURRICULA)} and a dict "
                                 f"of its options, got curriculum {curriculum!r}")
            config_class = CURRICULA[curriculum][0]
            unknown = sorted(set(options) - {f.name for f in dataclasses.fields(config_class)})
            if unknown:
                raise ValueError(f"{where}: unknown {curriculum} curriculum option(s) {unknown}")
            out["curriculum_config"] = config_class(**options)
        return cls(**out)


RESUMABLE_CHANGES = frozenset(
    {
        "total_frames", "device", "num_threads", "resume", "checkpoint_every", "keep_checkpoints",
        "eval_every", "eval_levels", "eval_attempts", "eval_first", "tensorboard", "wandb", "wandb_project", "progress",
    }
)
"""Options a resumed run may change; the others define the run and must match its saved config."""


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _jsonable(value):
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _path_types(tp) -> set:
    """The types inside ``tp`` (through ``X | None`` and ``list[X]``)."""
    args = typing.get_args(tp)
    if not args:
        return {tp}
    return set().union(*(_path_types(a) for a in args))
