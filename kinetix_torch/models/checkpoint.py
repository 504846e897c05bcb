"""Upstream Kinetix's pretrained-checkpoint format: a folder with ``params.safetensors`` and ``config.json``.

``params.safetensors`` holds float32 tensors named by their flax path with a leading ``params/``
(``params/GeneralActorCriticRNN_0/Dense_0/kernel``), in flax layout; ``config.json`` holds the model
options under ``"model"`` and the env's ``observation_type``, ``action_type``,
``static_env_params`` and ``env_params``, from which the network is rebuilt. Pixel networks also
record this project's ``pixel_format`` when it is not upstream's (absent: ``"float_hwc"``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ..actions import ACTION_TYPES, action_spec
from ..atomic import atomic_write, atomic_write_text
from ..observations import PIXEL_FORMATS, check_observation_type, observation_spec
from ..params import EnvParams, StaticEnvParams
from .actor_critic import ActorCritic, make_actor_critic
from .config import ModelConfig

__all__ = [
    "load_upstream_checkpoint",
    "save_upstream_checkpoint",
    "read_checkpoint_config",
    "read_json_object",
    "specs_from_config",
    "load_upstream_tensors",
    "upstream_state_dict",
    "PARAMS_FILE",
    "CONFIG_FILE",
]

PARAMS_FILE, CONFIG_FILE = "params.safetensors", "config.json"
_PREFIX = "params/"


def read_json_object(path: str | Path, what: str = "JSON file") -> dict:
    """Parse a JSON file holding one object; errors name ``what`` and the file."""
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable JSON file ({error})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def read_checkpoint_config(folder: str | Path) -> dict:
    """Parse ``folder/config.json`` (errors name the file)."""
    return read_json_object(Path(folder) / CONFIG_FILE, "checkpoint config")


def specs_from_config(config: dict, where: str = CONFIG_FILE):
    """``(observation_spec, action_spec)`` of one env (no batch dims) described by a checkpoint config."""
    for key in ("observation_type", "action_type", "static_env_params", "model"):
        if key not in config:
            raise ValueError(f"{where}: missing key {key!r}")
    observation_type, action_type = config["observation_type"], config["action_type"]
    pixel_format = config.get("pixel_format", PIXEL_FORMATS[0])
    try:
        check_observation_type(observation_type, pixel_format)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    if action_type not in ACTION_TYPES:
        raise ValueError(f"{where}: unknown action_type {action_type!r}; expected one of {ACTION_TYPES}")
    static = StaticEnvParams.from_dict(config["static_env_params"], where=f"{where}: static_env_params")
    params = EnvParams.from_dict(config.get("env_params", {}), where=f"{where}: env_params")
    obs_spec = observation_spec(observation_type, static, params, (), pixel_format=pixel_format)
    return obs_spec, action_spec(action_type, static)


def load_upstream_tensors(actor_critic: ActorCritic, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Copy upstream-named flax-layout ``tensors`` (with or without the ``params/`` prefix) into
    ``actor_critic``; every expected name must be present with its shape, and no other."""
    expected = actor_critic.upstream_tensors()
    given = {name.removeprefix(_PREFIX): tensor for name, tensor in tensors.items()}
    missing, unexpected = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{where}: parameter names do not match this network ({actor_critic.summary().splitlines()[0]}): "
            f"missing {missing[:6]}{' ...' if len(missing) > 6 else ''}, "
            f"unexpected {unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}"
        )
    for name, slot in expected.items():
        tensor = given[name]
        if tuple(tensor.shape) != slot.shape:
            raise ValueError(f"{where}: {_PREFIX}{name} has shape {tuple(tensor.shape)}, expected {slot.shape}")
        if not tensor.is_floating_point():
            raise ValueError(f"{where}: {_PREFIX}{name} has dtype {tensor.dtype}, expected float32")
    with torch.no_grad():
        for name, slot in expected.items():
            slot.write(given[name].to(torch.float32))


def upstream_state_dict(actor_critic: ActorCritic) -> dict[str, torch.Tensor]:
    """Every parameter as upstream stores it: ``params/<flax path>`` -> float32 CPU tensor."""
    with torch.no_grad():
        return {
            _PREFIX + name: slot.read().to("cpu", torch.float32).contiguous().clone()
            for name, slot in sorted(actor_critic.upstream_tensors().items())
        }


def load_upstream_checkpoint(path: str | Path, device="cpu") -> tuple[ActorCritic, dict]:
    """Rebuild the network of an upstream checkpoint folder and load its parameters.

    Returns ``(actor_critic, config)`` with ``config`` the parsed ``config.json``.
    """
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    config = read_checkpoint_config(folder)
    where = str(folder / CONFIG_FILE)
    model_config = ModelConfig.from_upstream(config.get("model"), where=f'{where}: "model"')
    observation_spec_, action_spec = specs_from_config(config, where)
    actor_critic = make_actor_critic(observation_spec_, action_spec, model_config)
    params_path = folder / PARAMS_FILE
    if not params_path.is_file():
        raise FileNotFoundError(f"checkpoint parameters not found: {params_path}")
    try:
        tensors = load_file(params_path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise ValueError(f"{params_path}: not a readable safetensors file ({error})") from None
    load_upstream_tensors(actor_critic, tensors, str(params_path))
    return actor_critic.to(device), config


def save_upstream_checkpoint(path: str | Path, actor_critic: ActorCritic, config: dict) -> None:
    """Write ``path/params.safetensors`` (upstream's names and layout) and ``path/config.json``.

    ``config`` supplies the env entries (``observation_type``, ``action_type``,
    ``static_env_params``, ``env_params``, ...); ``"model"``, ``"num_params"`` and (when not
    upstream's) ``"pixel_format"`` are set from ``actor_critic``. Each file is written atomically.
    """
    folder = Path(path)
    config = dict(config)
    config["model"] = actor_critic.config.to_upstream()
    if actor_critic.observation_type is not None:
        config["observation_type"] = actor_critic.observation_type
    config["action_type"] = actor_critic.action_type
    config.pop("pixel_format", None)
    pixel_format = getattr(actor_critic.torso, "pixel_format", PIXEL_FORMATS[0])
    if pixel_format != PIXEL_FORMATS[0]:
        config["pixel_format"] = pixel_format
    config["num_params"] = actor_critic.parameter_counts()["total"]
    specs_from_config(config, f"save_upstream_checkpoint({folder}): config")
    data = save(upstream_state_dict(actor_critic))
    atomic_write(folder / PARAMS_FILE, lambda tmp: tmp.write_bytes(data))
    atomic_write_text(folder / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
