"""kinetix-env's observation types, batched in torch, with their TorchRL specs.

:func:`observe` computes an observation of a batched state TensorDict; :func:`observation_spec`
gives the matching spec. :data:`OBSERVATION_TYPES` holds upstream's names:

* ``"symbolic_flat"``: float32 ``(B, F)``;
* ``"symbolic_flat_padded"``: float32 ``(B, rows, width)``;
* ``"symbolic_entity"``: a TensorDict of entity features and masks (see
  :func:`~kinetix_torch.observations.symbolic.symbolic_entity`);
* ``"pixels"``: a TensorDict with ``image`` float32 ``(B, X, Y, 3)`` in [0, 1] (axis 0 is screen x,
  axis 1 screen y upwards) and ``global_info`` ``(B, 1)`` = ``gravity_y / 10``;
* ``"blind"``: float32 ``(B, max_timesteps + 1)`` one-hot of the timestep.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict

from ..params import EnvParams, StaticEnvParams
from . import symbolic

__all__ = ["OBSERVATION_TYPES", "observe", "observation_spec"]

OBSERVATION_TYPES = ("symbolic_flat", "symbolic_flat_padded", "symbolic_entity", "pixels", "blind")


def _pixels(state, static: StaticEnvParams, params: EnvParams) -> TensorDict:
    from .pixels import render_pixels

    return TensorDict(
        {"image": render_pixels(state, static, params), "global_info": state["gravity"][..., 1:2] / 10},
        batch_size=state.batch_size,
        device=state.device,
    )


_OBSERVERS = {
    "symbolic_flat": symbolic.symbolic_flat,
    "symbolic_flat_padded": symbolic.symbolic_flat_padded,
    "symbolic_entity": symbolic.symbolic_entity,
    "pixels": _pixels,
    "blind": symbolic.blind,
}


def check_observation_type(observation_type: str) -> None:
    if observation_type not in OBSERVATION_TYPES:
        raise ValueError(f"unknown observation_type {observation_type!r}; expected one of {OBSERVATION_TYPES}")


def observe(state, static: StaticEnvParams, params: EnvParams, observation_type: str):
    """The ``observation_type`` observation of a batched state (tensor or TensorDict, batch leading)."""
    check_observation_type(observation_type)
    return _OBSERVERS[observation_type](state, static, params)


def observation_spec(observation_type: str, static: StaticEnvParams, params: EnvParams, batch: tuple, device=None):
    """TorchRL spec of one observation for ``batch`` environments (upstream's spaces: unbounded
    features, bool masks, int32 shape indices in ``[0, N)``, pixels in [0, 1])."""
    from torchrl.data import Binary, Bounded, Composite, Unbounded

    check_observation_type(observation_type)
    batch = tuple(batch)

    def floats(*shape):
        return Unbounded(shape=batch + shape, dtype=torch.float32, device=device)

    def flags(*shape):
        return Binary(shape=batch + shape, dtype=torch.bool, device=device)

    def indices(*shape):
        return Bounded(0, static.num_shapes - 1, shape=batch + shape, dtype=torch.int32, device=device)

    P, C, J, T, N = static.num_polygons, static.num_circles, static.num_joints, static.num_thrusters, static.num_shapes
    if observation_type == "symbolic_flat":
        return floats(symbolic.flat_size(static))
    if observation_type == "symbolic_flat_padded":
        return floats(*symbolic.padded_shape(static))
    if observation_type == "blind":
        return Bounded(0.0, 1.0, shape=batch + (params.max_timesteps + 1,), dtype=torch.float32, device=device)
    if observation_type == "pixels":
        width, height = (d // static.downscale for d in static.screen_dim)
        image = Bounded(0.0, 1.0, shape=batch + (width, height, 3), dtype=torch.float32, device=device)
        return Composite(image=image, global_info=floats(1), shape=batch, device=device)
    return Composite(
        polygons=floats(P, symbolic.POLYGON_FEATURES + 1),
        circles=floats(C, symbolic.CIRCLE_FEATURES + 1),
        joints=floats(2 * J, symbolic.JOINT_FEATURES),
        thrusters=floats(T, symbolic.THRUSTER_FEATURES),
        joint_indexes=indices(2 * J, 2),
        thruster_indexes=indices(T),
        polygon_mask=flags(P),
        circle_mask=flags(C),
        joint_mask=flags(2 * J),
        thruster_mask=flags(T),
        attention_mask=flags(4, N, N),
        shape=batch,
        device=device,
    )
