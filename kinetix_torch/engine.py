"""One physics-step interface over every engine backend.

``step(state, actions, params, static)`` advances a batched TensorDict state (batch = leading
dimension, fields named as in :mod:`kinetix_torch.schema`) by one engine step and returns the new
state and this step's contact manifolds (``rr`` point 0, ``cr``, ``cc``) as a TensorDict.

Backends:

* ``"jax"``: the reference engine (:mod:`kinetix_torch.reference_jax`), fed by DLPack without
  copies. Runs on whatever device JAX places the arrays on (the CPU here).
* ``"triton"`` / ``"triton-interpret"``: the fused Triton kernels (CUDA, or Triton's CPU
  interpreter for tests).

``backend=None`` picks ``"jax"`` (it will pick ``"triton"`` for CUDA tensors once that exists).
An explicit backend that cannot run raises :class:`BackendUnavailable` saying why.
"""

from __future__ import annotations

from typing import Callable

from . import schema
from .params import EnvParams, StaticEnvParams

BACKENDS = ("jax", "triton", "triton-interpret")


class BackendUnavailable(RuntimeError):
    """The requested engine backend cannot run here."""


def _jax_step(state, actions, params: EnvParams, static: StaticEnvParams):
    import jax.dlpack

    from .reference_jax import engine as reference

    sim_state = schema.to_jax(state.select(*[tuple(k.split(".")) for k in schema.SIM_KEYS]))
    new_sim, manifolds = reference.step_batch(
        sim_state, jax.dlpack.from_dlpack(actions.contiguous()), reference.param_values(params), static
    )
    batch = tuple(state.batch_size)
    out = state.copy()
    out.update(schema.jax_to_torch(new_sim, batch, device=state.device))
    return out, schema.jax_to_torch(manifolds, batch, device=state.device)


def _triton_unavailable(*_args, **_kwargs):
    raise BackendUnavailable("the Triton backend is not built yet: use backend='jax'")


_BACKEND_FNS: dict[str, Callable] = {"jax": _jax_step, "triton": _triton_unavailable, "triton-interpret": _triton_unavailable}


def resolve_backend(backend: str | None) -> str:
    """The backend to run: ``"jax"`` by default until the Triton backend exists."""
    if backend is None:
        return "jax"
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
    """Advance ``state`` by one engine step. Returns ``(state, manifolds)`` TensorDicts."""
    check_actions(actions, state, static)
    return _BACKEND_FNS[resolve_backend(backend)](state, actions, params, static)
