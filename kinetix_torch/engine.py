"""One physics-step interface over every engine backend.

``step(state, actions, params, static)`` advances a batched TensorDict state (batch = leading
dimension, fields named as in :mod:`kinetix_torch.schema`) by one *environment* step, i.e.
``static.frame_skip`` physics substeps, and returns the new state and per-substep contact info
(green touches blue / red, green-blue distance) from which the env computes reward exactly as
upstream. ``physics_step`` advances one substep and returns its contact manifolds instead (for
conformance tests against upstream's single engine steps).

Backends:

* ``"jax"``: the reference engine (:mod:`kinetix_torch.reference_jax`), fed by DLPack without
  copies. Runs on whatever device JAX places the arrays on (the CPU here).
* ``"triton"`` / ``"triton-interpret"``: the fused Triton kernels (CUDA, or Triton's CPU
  interpreter for tests). :func:`step` packs the state into the kernels' layout and returns the
  written float fields as views of the step's packed matrix (no copy back); the env keeps its
  state packed between steps instead (:mod:`kinetix_torch.kernels.packed`). The launch
  configuration follows :func:`kinetix_torch.kernels.step.launch_config_for`, or
  :func:`kinetix_torch.kernels.step.launch_config` inside its ``with`` block.

``backend=None`` picks ``"triton"`` for CUDA tensors and ``"jax"`` otherwise.
An explicit backend that cannot run raises :class:`BackendUnavailable` saying why.

The engine is not differentiable: actions are detached at this boundary.

The JAX backend compiles once per batch size and level size, which takes tens of seconds. Compiled
code is kept in JAX's persistent cache under ``$KINETIX_JAX_CACHE`` (default
``~/.cache/kinetix_torch/jax``, or under ``$XDG_CACHE_HOME``; ``KINETIX_JAX_CACHE=off`` turns it off),
so later processes start fast, and each compile is announced on the ``kinetix_torch`` logger. JAX
is multithreaded: a process forked after JAX started cannot use it (start worker processes with
``spawn``, e.g. ``ParallelEnv(..., mp_start_method="spawn")``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

from . import schema
from .params import EnvParams, StaticEnvParams

BACKENDS = ("jax", "triton", "triton-interpret")
TRITON_BACKENDS = ("triton", "triton-interpret")


class BackendUnavailable(RuntimeError):
    """The requested engine backend cannot run here."""


_log = logging.getLogger("kinetix_torch")
_jax_owner_pid: int | None = None
_jax_compiled: set = set()


def jax_cache_dir() -> Path | None:
    """Where JAX's persistent compilation cache lives (``None`` when turned off)."""
    setting = os.environ.get("KINETIX_JAX_CACHE", "")
    if setting.lower() in ("0", "off", "false", "no"):
        return None
    if setting:
        return Path(setting).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser()
    return base / "kinetix_torch" / "jax"


def _reference_engine():
    """The reference engine module, after the one-time process checks and cache set-up."""
    global _jax_owner_pid
    import jax

    if _jax_owner_pid is None:
        _jax_owner_pid = os.getpid()
        cache = jax_cache_dir()
        if cache is not None:
            jax.config.update("jax_compilation_cache_dir", str(cache))
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    elif _jax_owner_pid != os.getpid():
        raise BackendUnavailable(
            "the JAX engine was started in a parent process and this process was forked from it; JAX "
            "cannot run after fork: start worker processes with 'spawn' "
            "(e.g. ParallelEnv(..., mp_start_method='spawn'))"
        )
    from .reference_jax import engine as reference

    return reference


def _announce_compile(kind: str, batch: tuple, static: StaticEnvParams) -> None:
    key = (kind, batch, static)
    if key not in _jax_compiled:
        _jax_compiled.add(key)
        cache = jax_cache_dir()
        _log.info(
            "JAX engine: first %s at batch %s, %d polygons / %d circles: compiling (%s)",
            kind, batch[0] if batch else 1, static.num_polygons, static.num_circles,
            f"persistent cache {cache}" if cache else "persistent cache off",
        )


def _jax_inputs(state, actions, keys):
    import jax.dlpack

    reference = _reference_engine()

    inputs = schema.to_jax(state.select(*[tuple(k.split(".")) for k in keys]))
    return reference, inputs, jax.dlpack.from_dlpack(actions.contiguous())


def _jax_physics_step(state, actions, params: EnvParams, static: StaticEnvParams):
    reference, inputs, actions = _jax_inputs(state, actions, schema.SIM_KEYS)
    _announce_compile("physics step", tuple(state.batch_size), static)
    new_sim, manifolds = reference.step_batch(inputs, actions, reference.param_values(params), static)
    batch = tuple(state.batch_size)
    out = state.copy()
    out.update(schema.jax_to_torch(new_sim, batch, device=state.device))
    return out, schema.jax_to_torch(manifolds, batch, device=state.device)


def _jax_env_step(state, actions, params: EnvParams, static: StaticEnvParams):
    from .reference_jax.engine import CONTACT_INFO_KEYS

    reference, inputs, actions = _jax_inputs(state, actions, schema.SIM_KEYS + CONTACT_INFO_KEYS)
    _announce_compile("env step", tuple(state.batch_size), static)
    new_state, info = reference.env_step_batch(inputs, actions, reference.param_values(params), static)
    batch = tuple(state.batch_size)
    out = state.copy()
    out.update(schema.jax_to_torch(new_state, batch, device=state.device))
    return out, schema.jax_to_torch(info, batch, device=state.device)


def check_triton(interpret: bool, device, static: StaticEnvParams) -> None:
    """Raise :class:`BackendUnavailable` saying why the Triton kernels (compiled, or interpreted
    with ``interpret``) cannot run on ``device`` at these sizes."""
    device = getattr(device, "type", device)
    if interpret and device != "cpu":
        raise BackendUnavailable(f"backend 'triton-interpret' runs on CPU tensors, got {device}")
    if not interpret and device != "cuda":
        raise BackendUnavailable(
            f"backend 'triton' needs CUDA tensors, got {device}: use 'jax' (CPU) or 'triton-interpret' (tests)"
        )
    if not static.do_warm_starting:
        raise BackendUnavailable("the Triton kernels implement do_warm_starting=True only (upstream's setting)")
    from .kernels import step as kernels

    if kernels.interpreted() != interpret:
        raise BackendUnavailable(
            "Triton's CPU interpreter is on for this process (TRITON_INTERPRET=1): use 'triton-interpret'"
            if not interpret
            else "backend 'triton-interpret' needs TRITON_INTERPRET=1 in the environment before triton is imported"
        )


def _triton(kind: str, interpret: bool) -> Callable:
    """The fused Triton step (``kind``: ``env_step`` or ``physics_step``), compiled or interpreted."""

    def run(state, actions, params: EnvParams, static: StaticEnvParams):
        check_triton(interpret, actions.device, static)
        from .kernels import step as kernels

        return getattr(kernels, kind)(state, actions, params, static, interpret=interpret)

    return run


_ENV_STEP: dict[str, Callable] = {
    "jax": _jax_env_step,
    "triton": _triton("env_step", interpret=False),
    "triton-interpret": _triton("env_step", interpret=True),
}
_PHYSICS_STEP: dict[str, Callable] = {
    "jax": _jax_physics_step,
    "triton": _triton("physics_step", interpret=False),
    "triton-interpret": _triton("physics_step", interpret=True),
}


def resolve_backend(backend: str | None, device=None) -> str:
    """The backend to run: ``"triton"`` for CUDA tensors, ``"jax"`` otherwise, unless named."""
    if backend is None:
        return "triton" if getattr(device, "type", None) == "cuda" else "jax"
    if backend not in BACKENDS:
        raise ValueError(f"unknown engine backend {backend!r}; expected one of {BACKENDS}")
    return backend


def check_actions(actions, state, static: StaticEnvParams) -> None:
    """Processed actions: float32 ``(batch, J + T)`` on the state's device."""
    import torch

    expected = tuple(state.batch_size) + (static.action_dim,)
    if tuple(actions.shape) != expected:
        raise ValueError(f"engine actions have shape {tuple(actions.shape)}, expected {expected} (batch, J + T)")
    if actions.dtype != torch.float32:
        raise ValueError(f"engine actions have dtype {actions.dtype}, expected torch.float32")


def step(state, actions, params: EnvParams, static: StaticEnvParams, backend: str | None = None):
    """Advance ``state`` by one environment step: ``static.frame_skip`` physics substeps with the
    same processed ``actions``. Returns ``(state, info)``; ``info`` is a TensorDict of
    ``(batch, frame_skip)`` entries, one column per substep: ``touches_blue`` and ``touches_red``
    (an active contact joins a green shape and a blue / red one) and ``distance`` (summed
    green-blue centre distance). The env turns these into reward and termination; the env-only
    fields (``timestep``, ``last_distance``...) pass through untouched. Not differentiable:
    ``actions`` are detached."""
    actions = actions.detach()
    check_actions(actions, state, static)
    return _ENV_STEP[resolve_backend(backend, actions.device)](state, actions, params, static)


def physics_step(state, actions, params: EnvParams, static: StaticEnvParams, backend: str | None = None):
    """One physics substep (``dt``). Returns ``(state, manifolds)``: this substep's contacts ``rr``
    (point 0 only, as upstream returns them), ``cr`` and ``cc`` as a TensorDict. Not
    differentiable: ``actions`` are detached."""
    actions = actions.detach()
    check_actions(actions, state, static)
    return _PHYSICS_STEP[resolve_backend(backend, actions.device)](state, actions, params, static)
