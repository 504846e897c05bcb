"""kinetix-env's observation types, batched in torch, with their TorchRL specs.

:func:`observe` computes an observation of a batched state TensorDict; :func:`observation_spec`
gives the matching spec. :data:`OBSERVATION_TYPES` holds upstream's names:

* ``"symbolic_flat"``: float32 ``(B, F)``;
* ``"symbolic_flat_padded"``: float32 ``(B, rows, width)``;
* ``"symbolic_entity"``: a TensorDict of entity features and masks (see
  :func:`~kinetix_torch.observations.symbolic.symbolic_entity`);
* ``"pixels"``: a TensorDict with ``image`` float32 ``(B, X, Y, 3)`` in [0, 1] (axis 0 is screen x,
  axis 1 screen y upwards) and ``global_info`` ``(B, 1)`` = ``gravity_y / 10``. With
  ``pixel_format="uint8_chw"`` (see :data:`PIXEL_FORMATS`), ``image`` is uint8 ``(B, 3, X, Y)`` in
  0..255 instead: ``round(255 * float image)``, channels first, a quarter of the bytes;
* ``"blind"``: float32 ``(B, max_timesteps + 1)`` one-hot of the timestep.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict

from ..params import EnvParams, StaticEnvParams
from . import symbolic
from .pixels import PIXEL_FORMATS, check_pixel_format, render_pixels

__all__ = ["OBSERVATION_TYPES", "PIXEL_FORMATS", "observe", "observation_spec"]

OBSERVATION_TYPES = ("symbolic_flat", "symbolic_flat_padded", "symbolic_entity", "pixels", "blind")


def _pixels(state, static: StaticEnvParams, params: EnvParams, pixel_format: str) -> TensorDict:
    return TensorDict(
        {
            "image": render_pixels(state, static, params, pixel_format),
            "global_info": state["gravity"][..., 1:2] / 10,
        },
        batch_size=state.batch_size,
        device=state.device,
    )


_OBSERVERS = {
    "symbolic_flat": symbolic.symbolic_flat,
    "symbolic_flat_padded": symbolic.symbolic_flat_padded,
    "symbolic_entity": symbolic.symbolic_entity,
    "blind": symbolic.blind,
}


def check_observation_type(observation_type: str, pixel_format: str = "float_hwc") -> None:
    """Raise ``ValueError`` for an unknown observation type or pixel format, or a non-default pixel
    format with an observation type other than ``"pixels"``."""
    if observation_type not in OBSERVATION_TYPES:
        raise ValueError(f"unknown observation_type {observation_type!r}; expected one of {OBSERVATION_TYPES}")
    check_pixel_format(pixel_format)
    if pixel_format != PIXEL_FORMATS[0] and observation_type != "pixels":
        raise ValueError(f"pixel_format {pixel_format!r} needs observation_type 'pixels', got {observation_type!r}")


def observe(state, static: StaticEnvParams, params: EnvParams, observation_type: str, pixel_format: str = "float_hwc"):
    """The ``observation_type`` observation of a batched state (tensor or TensorDict, batch leading);
    ``pixel_format`` is the layout of pixel images (:data:`PIXEL_FORMATS`)."""
    check_observation_type(observation_type, pixel_format)
    if observation_type == "pixels":
        return _pixels(state, static, params, pixel_format)
    return _OBSERVERS[observation_type](state, static, params)


def observation_spec(
    observation_type: str,
    static: StaticEnvParams,
    params: EnvParams,
    batch: tuple,
    device=None,
    pixel_format: str = "float_hwc",
):
    """TorchRL spec of one observation for ``batch`` environments (upstream's spaces: unbounded
    features, bool masks, int32 shape indices in ``[0, N)``, pixels in [0, 1]; uint8 pixels in
    [0, 255] with ``pixel_format="uint8_chw"``)."""
    from torchrl.data import Binary, Bounded, Composite, Unbounded

    check_observation_type(observation_type, pixel_format)
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
        if pixel_format == "uint8_chw":
            image = Bounded(0, 255, shape=batch + (3, width, height), dtype=torch.uint8, device=device)
        else:
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
