"""Level banks: many levels in one ``.pt`` or ``.npz`` file, and single levels as JSON.

A bank file holds every schema field of a batch of levels (batch first) and the static and env
params they belong to. ``.pt`` is a ``torch.save`` of plain tensors and dicts, loadable with
``weights_only=True``; ``.npz`` is a compressed numpy archive with the params as JSON strings.
Every write is atomic (:mod:`kinetix_torch.atomic`).
"""

from __future__ import annotations

import json
import pickle
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from .. import levels as level_files
from .. import schema
from ..atomic import atomic_write
from ..params import EnvParams, StaticEnvParams
from ..validation import check_levels
from .batch import to_flat

__all__ = ["save_bank", "load_bank", "save_level_json", "load_level_json"]

FORMAT_VERSION = 1
_PARAM_KEYS = ("__static_env_params__", "__env_params__")


def save_bank(path, levels, static: StaticEnvParams, env_params: EnvParams | None = None) -> None:
    """Write a batch of levels (TensorDict, batch ``[B]``) to ``path`` (``.pt`` or ``.npz``), after
    checking them by :func:`kinetix_torch.validation.check_levels`."""
    path = Path(path)
    env_params = env_params or EnvParams()
    flat = {k: v.detach().cpu() for k, v in to_flat(levels).items()}
    check_levels(flat, static, env_params, where=f"bank {path}")
    if path.suffix == ".pt":
        payload = {"format_version": FORMAT_VERSION, "static_env_params": static.to_dict(),
                   "env_params": env_params.to_dict(), "levels": flat}
        atomic_write(path, lambda tmp: torch.save(payload, tmp))
    elif path.suffix == ".npz":
        arrays = {k: v.numpy() for k, v in flat.items()}
        arrays.update({key: np.array(json.dumps(p.to_dict())) for key, p in zip(_PARAM_KEYS, (static, env_params))})

        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)

        atomic_write(path, write)
    else:
        raise ValueError(f"bank {path}: unknown suffix {path.suffix!r}; expected '.pt' or '.npz'")


def load_bank(path, device=None):
    """Read a bank written by :func:`save_bank` and check its levels by
    :func:`kinetix_torch.validation.check_levels`. Returns ``(levels, static, env_params)``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"bank {path}: no such file")
    if path.suffix == ".pt":
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, zipfile.BadZipFile) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"bank {path}: not a level bank written by save_bank (damaged or another format: {first_line})") from None
        if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"bank {path}: not a level bank of format_version {FORMAT_VERSION}")
        flat = payload["levels"]
        static = StaticEnvParams.from_dict(payload["static_env_params"], where=f"bank {path}: static_env_params")
        env_params = EnvParams.from_dict(payload["env_params"], where=f"bank {path}: env_params")
    elif path.suffix == ".npz":
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"bank {path}: not a readable .npz archive ({exc})") from None
        with data:
            missing = [k for k in _PARAM_KEYS if k not in data.files]
            if missing:
                raise ValueError(f"bank {path}: missing {missing}; not written by save_bank")
            try:
                arrays = {k: data[k] for k in data.files}
            except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
                raise ValueError(f"bank {path}: damaged .npz member ({exc})") from None
        static = StaticEnvParams.from_dict(json.loads(str(arrays.pop(_PARAM_KEYS[0]))), where=f"bank {path}: static_env_params")
        env_params = EnvParams.from_dict(json.loads(str(arrays.pop(_PARAM_KEYS[1]))), where=f"bank {path}: env_params")
        flat = {k: torch.from_numpy(v) for k, v in arrays.items()}
    else:
        raise ValueError(f"bank {path}: unknown suffix {path.suffix!r}; expected '.pt' or '.npz'")
    check_levels(flat, static, env_params, where=f"bank {path}")
    batch = flat["timestep"].shape[:1]
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
