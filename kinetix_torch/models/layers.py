"""Layer initialisers (upstream's flax ones) and the tie between torch parameters and upstream's names.

Every network part lists its tensors under upstream's flax names with :class:`UpstreamTensor`, which
converts between the torch layout and flax's (``Dense.kernel`` is ``(in, out)``, ``Conv.kernel`` is
``(kh, kw, in, out)``, ...). :mod:`kinetix_torch.models.checkpoint` reads and writes checkpoints
through these lists only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "UpstreamTensor",
    "orthogonal_linear",
    "lecun_linear",
    "lecun_normal_",
    "dense_tensors",
    "prefixed",
    "ACTIVATIONS",
]

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"tanh": torch.tanh, "relu": torch.relu}

_TRUNCATED_STD = 0.87962566103423978
"""Standard deviation of a unit normal truncated to [-2, 2] (flax's variance_scaling corrects by it)."""


def lecun_normal_(tensor: torch.Tensor, fan_in: int) -> torch.Tensor:
    """flax's default kernel init: truncated normal of variance ``1 / fan_in``."""
    std = math.sqrt(1.0 / fan_in) / _TRUNCATED_STD
    with torch.no_grad():
        return nn.init.trunc_normal_(tensor, std=std, a=-2 * std, b=2 * std)


def orthogonal_linear(in_features: int, out_features: int, gain: float) -> nn.Linear:
    """``nn.Linear`` with an orthogonal weight of ``gain`` and a zero bias (upstream's Dense inits)."""
    layer = nn.Linear(in_features, out_features)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def lecun_linear(in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
    """``nn.Linear`` with flax's default init (LeCun-normal weight, zero bias)."""
    layer = nn.Linear(in_features, out_features, bias=bias)
    lecun_normal_(layer.weight, in_features)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


@dataclass(frozen=True)
class UpstreamTensor:
    """One upstream tensor: ``read()`` gives it in flax layout from the torch parameters,
    ``write(array)`` stores a flax-layout array into them."""

    shape: tuple[int, ...]
    read: Callable[[], torch.Tensor]
    write: Callable[[torch.Tensor], None]


def as_is(param: torch.Tensor) -> UpstreamTensor:
    """A parameter stored with the same layout in both frameworks."""
    return reshaped(param, tuple(param.shape))


def reshaped(param: torch.Tensor, shape: tuple[int, ...]) -> UpstreamTensor:
    """A parameter whose flax form is a reshape of the torch one (same element order)."""

    def write(array):
        param.data.copy_(array.reshape(param.shape))

    return UpstreamTensor(tuple(shape), lambda: param.detach().reshape(shape), write)


def transposed(param: torch.Tensor, shape: tuple[int, ...] | None = None) -> UpstreamTensor:
    """A torch ``(out, in)`` weight whose flax kernel is its transpose, optionally reshaped."""
    shape = shape or tuple(param.shape[::-1])

    def write(array):
        param.data.copy_(array.reshape(param.shape[1], param.shape[0]).T)

    return UpstreamTensor(tuple(shape), lambda: param.detach().T.reshape(shape), write)


def dense_tensors(layer: nn.Linear, kernel_shape: tuple[int, ...] | None = None) -> dict[str, UpstreamTensor]:
    """flax ``Dense`` (or ``DenseGeneral`` with ``kernel_shape``) tensors of an ``nn.Linear``."""
    tensors = {"kernel": transposed(layer.weight, kernel_shape)}
    if layer.bias is not None:
        tensors["bias"] = as_is(layer.bias)
    return tensors


def prefixed(prefix: str, tensors: dict[str, UpstreamTensor]) -> dict[str, UpstreamTensor]:
    return {f"{prefix}/{name}": tensor for name, tensor in tensors.items()}
