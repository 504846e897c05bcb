"""Level banks: many levels in one ``.pt`` or ``.npz`` file, and single levels as JSON.

A bank file holds every schema field of a batch of levels (batch first) and the static and env
params they belong to. ``.pt`` is a ``torch.save`` of plain tensors and dicts, loadable with
``weights_only=True``; ``.npz`` is a compressed numpy archive with the params as JSON strings.
Every write goes to a temporary file in the target folder and is then renamed into place.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from .. import levels as level_files
from .. import schema
from ..params import EnvParams, StaticEnvParams
from .batch import to_flat

__all__ = ["save_bank", "load_bank", "save_level_json", "load_level_json"]

FORMAT_VERSION = 1
_PARAM_KEYS = ("__static_env_params__", "__env_params__")


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_bank(path, levels, static: StaticEnvParams, env_params: EnvParams | None = None) -> None:
    """Write a batch of levels (TensorDict, batch ``[B]``) to ``path`` (``.pt`` or ``.npz``)."""
    path = Path(path)
    env_params = env_params or EnvParams()
    flat = {k: v.detach().cpu() for k, v in to_flat(levels).items()}
    batch = flat["timestep"].shape[:1]
    schema.validate(flat, static, batch, where=f"bank {path}")
    if path.suffix == ".pt":
        payload = {"format_version": FORMAT_VERSION, "static_env_params": static.to_dict(),
                   "env_params": env_params.to_dict(), "levels": flat}
        _atomic_write(path, lambda tmp: torch.save(payload, tmp))
    elif path.suffix == ".npz":
        arrays = {k: v.numpy() for k, v in flat.items()}
        arrays.update({key: np.array(json.dumps(p.to_dict())) for key, p in zip(_PARAM_KEYS, (static, env_params))})

        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)

        _atomic_write(path, write)
    else:
        raise ValueError(f"bank {path}: unknown suffix {path.suffix!r}; expected '.pt' or '.npz'")


def load_bank(path, device=None):
    """Read a bank written by :func:`save_bank`. Returns ``(levels, static, env_params)``."""
    path = Path(path)
    if path.suffix == ".pt":
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"bank {path}: unsupported format_version {payload.get('format_version')!r}")
        flat = payload["levels"]
        static = StaticEnvParams.from_dict(payload["static_env_params"])
        env_params = EnvParams.from_dict(payload["env_params"])
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in _PARAM_KEYS if k not in data.files]
            if missing:
                raise ValueError(f"bank {path}: missing {missing}; not written by save_bank")
            static = StaticEnvParams.from_dict(json.loads(str(data[_PARAM_KEYS[0]])))
            env_params = EnvParams.from_dict(json.loads(str(data[_PARAM_KEYS[1]])))
            flat = {k: torch.from_numpy(data[k]) for k in data.files if k not in _PARAM_KEYS}
    else:
        raise ValueError(f"bank {path}: unknown suffix {path.suffix!r}; expected '.pt' or '.npz'")
    batch = flat["timestep"].shape[:1] if "timestep" in flat else ()
    schema.validate(flat, static, batch, where=f"bank {path}")
    ordered = {f.key: flat[f.key] for f in schema.FIELDS}
    return schema.to_tensordict(ordered, batch, device=device), static, env_params


def save_level_json(path, levels, index: int, static: StaticEnvParams, env_params: EnvParams | None = None) -> None:
    """Write level ``index`` of a batch as a Kinetix JSON level file (atomically)."""
    flat = schema.tensordict_to_numpy(levels[index])
    level_files.save_level(path, flat, static, env_params or EnvParams())


def load_level_json(path, static: StaticEnvParams | None = None, device=None):
    """Read a Kinetix JSON level as a batch of one (padded to ``static`` when given).
    Returns ``(levels, static, env_params)``."""
    level = level_files.load_level(path, static=static)
    batched = {k: np.asarray(v)[None] for k, v in level.state.items()}
    return schema.to_tensordict(batched, (1,), device=device), level.static, level.env_params
