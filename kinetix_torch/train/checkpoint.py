"""Run checkpoints: upstream's pretrained format plus what it takes to resume training exactly.

A checkpoint is a folder with

* ``params.safetensors`` + ``config.json``: upstream's pretrained-checkpoint format (written by
  :func:`kinetix_torch.models.save_upstream_checkpoint`), so upstream's tools read the weights.
  ``config.json`` also names the env (``observation_type``, ``action_type``, ``env_size_name``,
  ``static_env_params``, ``env_params``) and holds the run's options under ``"train_config"``;
* ``training_state.pt``: optimiser state, update and frame counters, the RNG states of torch,
  numpy and Python, the env's state (current episodes, level draws) and the rollout's carry (last
  observation, ``is_init``, recurrent state, episode accumulators);
* ``manifest.json``: size and sha256 of the other files, to tell a damaged checkpoint clearly.

A run folder keeps the last few checkpoints as ``checkpoints/update-NNNNNNNN/`` and a copy (hard
links) of the latest as ``checkpoint/``. Each folder is written whole under a temporary name,
synced and renamed (:func:`kinetix_torch.atomic.atomic_dir`), so a reader never sees a
half-written checkpoint; ``checkpoints/`` is written first, and resuming reads its newest entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_dir
from ..models import ActorCritic, load_upstream_checkpoint, save_upstream_checkpoint
from ..params import EnvParams, StaticEnvParams
from .config import TrainConfig

__all__ = [
    "CheckpointError",
    "LoadedPolicy",
    "load_policy",
    "resolve_checkpoint",
    "latest_checkpoint",
    "write_checkpoint",
    "read_training_state",
    "rng_state",
    "set_rng_state",
    "CHECKPOINT_DIR",
    "HISTORY_DIR",
]

CHECKPOINT_DIR, HISTORY_DIR = "checkpoint", "checkpoints"
PARAMS_FILE, CONFIG_FILE = "params.safetensors", "config.json"
TRAINING_STATE_FILE, MANIFEST_FILE = "training_state.pt", "manifest.json"


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged or does not fit."""


# --------------------------------------------------------------------------------------------------
# Finding checkpoints


def _is_checkpoint(folder: Path) -> bool:
    return (folder / CONFIG_FILE).is_file() and (folder / PARAMS_FILE).is_file()


def latest_checkpoint(run_dir: str | os.PathLike) -> Path:
    """The newest of the run's ``checkpoints/`` (written before ``checkpoint/`` is replaced by its
    copy, so a kill in between loses nothing), else ``checkpoint/``. Raises
    :class:`CheckpointError` when the run has none."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder not found: {run_dir}")
    history = sorted(p for p in (run_dir / HISTORY_DIR).glob("update-*") if _is_checkpoint(p))
    if history:
        return history[-1]
    latest = run_dir / CHECKPOINT_DIR
    if _is_checkpoint(latest):
        return latest
    raise CheckpointError(f"no checkpoint in {run_dir} (expected {latest} with {CONFIG_FILE} and {PARAMS_FILE})")


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint folder for a run folder, a checkpoint folder (ours or upstream's), or a file in one."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_file():
        path = path.parent
    if _is_checkpoint(path):
        return path
    if (path / CHECKPOINT_DIR).exists() or (path / HISTORY_DIR).exists():
        return latest_checkpoint(path)
    raise CheckpointError(
        f"{path} is neither a checkpoint folder ({CONFIG_FILE} + {PARAMS_FILE}) nor a run folder with {CHECKPOINT_DIR}/"
    )


# --------------------------------------------------------------------------------------------------
# Writing


def write_checkpoint(
    run_dir: str | os.PathLike,
    actor_critic: ActorCritic,
    config: dict,
    training_state: dict,
    keep: int,
) -> Path:
    """Write ``checkpoints/update-NNNNNNNN/`` (NNNNNNNN = ``training_state["updates"]``), publish it
    as ``checkpoint/`` and keep the last ``keep`` under ``checkpoints/``. Returns ``checkpoint/``."""
    run_dir = Path(run_dir)
    history = run_dir / HISTORY_DIR / f"update-{training_state['updates']:08d}"

    def fill(folder: Path) -> None:
        save_upstream_checkpoint(folder, actor_critic, config)
        torch.save(training_state, folder / TRAINING_STATE_FILE)
        manifest = {p.name: _file_digest(p) for p in sorted(folder.iterdir())}
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")

    atomic_dir(history, fill)
    atomic_dir(run_dir / CHECKPOINT_DIR, lambda folder: _link_files(history, folder))
    for old in sorted((run_dir / HISTORY_DIR).glob("update-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return run_dir / CHECKPOINT_DIR


def _link_files(source: Path, target: Path) -> None:
    for file in source.iterdir():
        try:
            os.link(file, target / file.name)
        except OSError:
            shutil.copy2(file, target / file.name)


def _file_digest(path: Path) -> dict:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return {"bytes": path.stat().st_size, "sha256": sha.hexdigest()}


# --------------------------------------------------------------------------------------------------
# Reading


def verify_manifest(folder: Path) -> None:
    """Check every file listed in ``manifest.json`` (absent in upstream's checkpoints: nothing to check)."""
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        return
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{manifest_path}: damaged ({error})") from None
    for name, expected in manifest.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing from the checkpoint")
        actual = _file_digest(path)
        if actual["bytes"] != expected["bytes"]:
            raise CheckpointError(
                f"{path}: truncated or damaged ({actual['bytes']} bytes, the checkpoint wrote {expected['bytes']})"
            )
        if actual["sha256"] != expected["sha256"]:
            raise CheckpointError(f"{path}: damaged (its sha256 differs from the one the checkpoint wrote)")


def read_training_state(folder: str | os.PathLike, device="cpu") -> dict:
    """The ``training_state.pt`` of a checkpoint folder written by :func:`write_checkpoint`."""
    folder = Path(folder)
    path = folder / TRAINING_STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; {folder} holds weights only and cannot be resumed")
    verify_manifest(folder)
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises many kinds for damaged files
        raise CheckpointError(f"{path}: not a readable training state ({type(error).__name__}: {error})") from None


@dataclass
class LoadedPolicy:
    """A trained actor-critic with what it was trained on."""

    actor_critic: ActorCritic
    """The network; ``.policy`` samples actions, ``.value`` estimates values."""
    observation_type: str
    """Observation type it reads."""
    action_type: str
    """Action type it writes."""
    static_env_params: StaticEnvParams
    """Env sizes it was trained with (levels are padded to these)."""
    env_params: EnvParams
    """Env parameters it was trained with."""
    config: dict
    """The checkpoint's whole ``config.json``."""
    train_config: TrainConfig | None
    """The run's options (``None`` for checkpoints not written by this project's training)."""
    path: Path
    """The checkpoint folder read."""


def load_policy(path: str | os.PathLike, device="cpu") -> LoadedPolicy:
    """Load a run folder, its ``checkpoint/`` or an upstream-format checkpoint folder."""
    folder = resolve_checkpoint(path)
    verify_manifest(folder)
    try:
        actor_critic, config = load_upstream_checkpoint(folder, device)
    except (ValueError, FileNotFoundError, OSError) as error:
        raise CheckpointError(str(error)) from None
    where = str(folder / CONFIG_FILE)
    try:
        static = StaticEnvParams.from_dict(config["static_env_params"], where=f"{where}: static_env_params")
        env_params = EnvParams.from_dict(config.get("env_params", {}), where=f"{where}: env_params")
        train_config = None
        if "train_config" in config:
            train_config = TrainConfig.from_json_dict(config["train_config"], where=f"{where}: train_config")
    except (ValueError, TypeError) as error:
        raise CheckpointError(str(error)) from None
    actor_critic.eval()
    return LoadedPolicy(
        actor_critic=actor_critic,
        observation_type=config["observation_type"],
        action_type=config["action_type"],
        static_env_params=static,
        env_params=env_params,
        config=config,
        train_config=train_config,
        path=folder,
    )


# --------------------------------------------------------------------------------------------------
# RNG states (numpy's as tensors, so that training_state.pt loads with weights_only=True)


def rng_state() -> dict:
    """The RNG states of torch (CPU and CUDA), numpy's global generator and Python's ``random``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "gauss": gauss},
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    saved = state["numpy"]
    keys = saved["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, saved["pos"], saved["has_gauss"], saved["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
