"""Torsos: observation -> embedding ``(..., out_features)`` for the actor-critic head.

Each torso takes the observation as the env emits it (a tensor, or a TensorDict for entity and pixel
observations) with any leading batch dimensions, and lists its parameters under upstream's flax
names (``upstream_tensors``). The golden data's ``README.md`` (``shared/golden/models``, §4)
describes upstream's definitions; the classes here follow them:

* :class:`FlatMLP` (``ActorCriticSymbolicRNN``): relu(Dense) on flat or blind observations;
* :class:`PermutationInvariantMLP` (``ActorCriticPermutationInvariantSymbolicRNN``): a sum over
  rows of per-head relu(Dense), on entity encodings or on the rows of ``symbolic_flat_padded``;
* :class:`PixelCNN` (``ActorCriticPixelsRNN``, ``impala_fast``): two strided convolutions, on float
  ``(X, Y, 3)`` images or uint8 channels-first ``(3, X, Y)`` ones;
* :class:`EntityTransformer` (``ActorCriticTransformer``): a gated transformer over shapes with
  joint and thruster messages.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .layers import (
    ACTIVATIONS,
    UpstreamTensor,
    as_is,
    dense_tensors,
    lecun_linear,
    lecun_normal_,
    orthogonal_linear,
    prefixed,
    reshaped,
)

__all__ = ["FlatMLP", "PermutationInvariantMLP", "PixelCNN", "EntityTransformer", "ENTITY_KEYS"]

ENTITY_KEYS = ("circles", "polygons", "joints", "thrusters")
"""Entity feature rows of a ``symbolic_entity`` observation, in upstream's encoder order."""

_ROOT_2 = math.sqrt(2.0)


class FlatMLP(nn.Module):
    """``relu(Dense(features -> width))``; upstream uses relu here whatever ``activation`` says."""

    def __init__(self, in_features: int, width: int):
        super().__init__()
        self.dense = orthogonal_linear(in_features, width, _ROOT_2)
        self.out_features = width

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.dense(observation))

    def upstream_tensors(self) -> dict[str, UpstreamTensor]:
        return prefixed("Dense_0", dense_tensors(self.dense))


class MultiHeadDense(nn.Module):
    """Per head ``h``: ``sum over rows of relu(row @ K[h] + b[h])``; heads concatenated head-major."""

    def __init__(self, in_features: int, num_heads: int, out_per_head: int):
        super().__init__()
        self.kernels = nn.Parameter(torch.empty(num_heads, in_features, out_per_head))
        self.biases = nn.Parameter(torch.zeros(num_heads, out_per_head))
        with torch.no_grad():
            # flax's orthogonal init of a (heads, in, out) kernel: one (heads * in, out) matrix.
            flat = torch.empty(num_heads * in_features, out_per_head)
            self.kernels.copy_(nn.init.orthogonal_(flat, _ROOT_2).reshape(self.kernels.shape))

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        per_head = torch.relu(torch.einsum("...fd,hdo->...fho", rows, self.kernels) + self.biases)
        return per_head.sum(dim=-3).flatten(-2)

    def upstream_tensors(self) -> dict[str, UpstreamTensor]:
        return {"dense_kernels": as_is(self.kernels), "dense_biases": as_is(self.biases)}


class PermutationInvariantMLP(nn.Module):
    """``activation(MultiHeadDense(rows))``, a sum over rows and so independent of their order.

    Raw-row form (:meth:`for_rows`): the rows of a ``symbolic_flat_padded`` observation. Entity form
    (:meth:`for_entities`): each entity type is encoded by ``activation(Dense)`` to
    ``encoder_size - 4`` features plus a one-hot of its type (circle, polygon, joint, thruster);
    rows are ordered polygons, circles, joints, thrusters and inactive rows are zeroed (they still
    add ``relu(bias)`` per head).
    """

    TYPE_INDEX = {"circles": 0, "polygons": 1, "joints": 2, "thrusters": 3}
    ROW_ORDER = ("polygons", "circles", "joints", "thrusters")
    MASKS = {"polygons": "polygon_mask", "circles": "circle_mask", "joints": "joint_mask", "thrusters": "thruster_mask"}

    def __init__(self, row_width: int, config: ModelConfig, entity_widths: dict[str, int] | None):
        super().__init__()
        self.activation = ACTIVATIONS[config.activation]
        self.encoders = None
        if entity_widths is not None:
            size = config.encoder_size - len(self.TYPE_INDEX)
            self.encoders = nn.ModuleDict(
                {key: orthogonal_linear(entity_widths[key], size, _ROOT_2) for key in ENTITY_KEYS}
            )
        heads = config.num_heads
        self.multi_head = MultiHeadDense(row_width, heads, config.symbolic_embedding_dim // heads)
        self.out_features = config.symbolic_embedding_dim

    @classmethod
    def for_rows(cls, row_width: int, config: ModelConfig) -> "PermutationInvariantMLP":
        return cls(row_width, config, None)

    @classmethod
    def for_entities(cls, entity_widths: dict[str, int], config: ModelConfig) -> "PermutationInvariantMLP":
        return cls(config.encoder_size, config, entity_widths)

    def forward(self, observation) -> torch.Tensor:
        rows = observation if self.encoders is None else self._entity_rows(observation)
        return self.activation(self.multi_head(rows))

    def _entity_rows(self, observation) -> torch.Tensor:
        parts = []
        for key in self.ROW_ORDER:
            encoded = self.activation(self.encoders[key](observation[key]))
            one_hot = encoded.new_zeros(encoded.shape[:-1] + (len(self.TYPE_INDEX),))
            one_hot[..., self.TYPE_INDEX[key]] = 1.0
            row = torch.cat([encoded, one_hot], dim=-1)
            parts.append(torch.where(observation[self.MASKS[key]].unsqueeze(-1), row, torch.zeros_like(row)))
        return torch.cat(parts, dim=-2)

    def upstream_tensors(self) -> dict[str, UpstreamTensor]:
        tensors = prefixed("MultiHeadDense_0", self.multi_head.upstream_tensors())
        if self.encoders is not None:
            for i, key in enumerate(ENTITY_KEYS):
                tensors |= prefixed(f"Dense_{i}", dense_tensors(self.encoders[key]))
        return tensors


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """flax/TF "SAME" padding of one axis: ``(before, after)``, the odd pixel after."""
    out = -(-size // stride)
    pad = max((out - 1) * stride + kernel - size, 0)
    return pad // 2, pad - pad // 2


class PixelCNN(nn.Module):
    """``impala_fast``: relu(Conv 16x8x8 /4), relu(Conv 32x4x4 /2), both "SAME" padded, flattened
    in (x, y, channel) order, then ``global_info`` appended.

    The image may come in either of the env's pixel formats, told apart by dtype: upstream's float
    ``(..., X, Y, C)`` in [0, 1], or uint8 channels-first ``(..., C, X, Y)`` in 0..255, which is
    divided by 255 here (its rounding moves inputs by at most 1/510). Both give the same network
    and weights; ``pixel_format`` records the format of the spec it was built for.
    """

    LAYERS = ((16, 8, 4), (32, 4, 2))
    """(filters, kernel size, stride) per convolution."""

    def __init__(
        self, image_size: tuple[int, int], channels: int, config: ModelConfig, pixel_format: str = "float_hwc"
    ):
        super().__init__()
        self.image_size, self.channels, self.pixel_format = tuple(image_size), channels, pixel_format
        self.convs = nn.ModuleList()
        self.paddings = []
        size = tuple(image_size)
        for filters, kernel, stride in self.LAYERS:
            conv = nn.Conv2d(channels, filters, kernel, stride)
            lecun_normal_(conv.weight, channels * kernel * kernel)
            nn.init.zeros_(conv.bias)
            self.convs.append(conv)
            (x0, x1), (y0, y1) = (_same_padding(n, kernel, stride) for n in size)
            self.paddings.append((y0, y1, x0, x1))  # F.pad order: last axis first
            size = tuple(-(-n // stride) for n in size)
            channels = filters
        self.out_features = size[0] * size[1] * channels + 1

    @classmethod
    def for_image_spec(cls, image_spec, config: ModelConfig) -> "PixelCNN":
        """The CNN for an observation's ``image`` spec: uint8 means ``(..., C, X, Y)``, float ``(..., X, Y, C)``."""
        shape = tuple(image_spec.shape)
        if image_spec.dtype == torch.uint8:
            return cls(shape[-2:], shape[-3], config, "uint8_chw")
        if image_spec.dtype.is_floating_point:
            return cls(shape[-3:-1], shape[-1], config, "float_hwc")
        raise ValueError(f"PixelCNN: image spec dtype must be uint8 (channels first) or float, got {image_spec.dtype}")

    def forward(self, observation) -> torch.Tensor:
        image, global_info = observation["image"], observation["global_info"]
        lead, per_image = image.shape[:-3], tuple(image.shape[-3:])
        channels_first = image.dtype == torch.uint8
        expected = (self.channels, *self.image_size) if channels_first else (*self.image_size, self.channels)
        if per_image != expected:
            layout = "(C, X, Y)" if channels_first else "(X, Y, C)"
            raise ValueError(f"PixelCNN: {image.dtype} images must be {layout} = {expected}, got {per_image}")
        x = image.reshape((-1,) + per_image)
        x = x.to(self.convs[0].weight.dtype) / 255 if channels_first else x.permute(0, 3, 1, 2)
        for conv, padding in zip(self.convs, self.paddings):
            x = torch.relu(conv(F.pad(x, padding)))
        x = x.permute(0, 2, 3, 1).reshape(lead + (-1,))
        return torch.cat([x, global_info], dim=-1)

    def upstream_tensors(self) -> dict[str, UpstreamTensor]:
        tensors = {}
        for i, conv in enumerate(self.convs):
            kernel = conv.weight

            def write(array, kernel=kernel):
                kernel.data.copy_(array.permute(3, 2, 0, 1))

            shape = tuple(kernel.permute(2, 3, 1, 0).shape)
            tensors[f"Conv_{i}/kernel"] = UpstreamTensor(shape, lambda k=kernel: k.detach().permute(2, 3, 1, 0), write)
            tensors[f"Conv_{i}/bias"] = as_is(conv.bias)
        return tensors


class Gating(nn.Module):
    """GRU-style gate of the gated transformer: ``(1 - z) * x + z * h`` (bias-free Denses)."""

    NAMES = ("w_r", "u_r", "w_z", "u_z", "w_h", "u_h")
    """Upstream's ``Dense_0..5`` in creation order."""

    def __init__(self, size: int):
        super().__init__()
        for name in self.NAMES:
            setattr(self, name, lecun_linear(size, size, bias=False))
        self.gating_bias = nn.Parameter(torch.zeros(size))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r = torch.sigmoid(self.w_r(y) + self.u_r(x))
        z = torch.sigmoid(self.w_z(y) + self.u_z(x) - self.gating_bias)
        h = torch.tanh(self.w_h(y) + self.u_h(r * x))
        return (1 - z) * x + z * h

    def upstream_tensors(self) -> dict[str, UpstreamTensor]:
        tensors = {"gating_bias": as_is(self.gating_bias)}
        for i, name in enumerate(self.NAMES):
            tensors |= prefixed(f"Dense_{i}", dense_tensors(getattr(self, name)))
        return tensors


class MaskedSelfAttention(nn.Module):
    """flax ``MultiHeadDotProductAttention``: masked scores take float32's minimum (not -inf), so a
    fully masked row averages every value uniformly instead of becoming NaN."""

    def __init__(self, size: int, qkv_features: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, qkv_features // num_heads
        self.query, self.key, self.value = (lecun_linear(size, qkv_features) for _ in range(3))
        self.out = lecun_linear(qkv_features, size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` ``(L, S, size)``, ``mask`` bool ``(L, heads, S, S)`` (query, key)."""
        heads = x.shape[:-1] + (self.num_heads, self.head_dim)
        q = self.query(x).reshape(heads) / math.sqrt(self.head_dim)
        k, v = self.key(x).reshape(heads), self.value(x).reshape(heads)
        scores = torch.einsum("lqhd,lkhd->lhqk", q, k)
        scores = torch.where(mask, scores, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1)
        return self.out(torch.einsum("lhqk,lkhd->lqhd", weights, v).flatten(-2))

    def upstream_tensors(self) -> dict[str, UpstreamTensor]:
        heads, dim = self.num_heads, self.head_dim
        size = self.query.in_features
        tensors = {}
        for name in ("query", "key", "value"):
            layer = getattr(self, name)
            tensors |= {
                f"{name}/kernel": dense_tensors(layer, (size, heads, dim))["kernel"],
                f"{name}/bias": reshaped(layer.bias, (heads, dim)),
            }
        tensors |= prefixed("out", dense_tensors(self.out, (heads, dim, size)))
        return tensors


class TransformerLayer(nn.Module):
    """Pre-norm gated layer: ``y = gate1(x, relu(attention(ln1(x))))``, ``gate2(y, relu(ffn(ln2(y))))``."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        size = config.transformer_encoder_size
        self.ln1 = nn.LayerNorm(size, eps=1e-6)
        self.attention1 = MaskedSelfAttention(size, config.transformer_size, config.num_heads)
        self.gate1 = Gating(size)
        self.ln2 = nn.LayerNorm(size, eps=1e-6)
        self.ffn = config.transformer_ffn
        self.dense1 = lecun_linear(size, 4 * size if self.ffn else size)
        self.dense2 = lecun_linear(4 * size, size) if self.ffn else None
        self.dropout = nn.Dropout(config.dropout_prob)
        self.gate2 = Gating(size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = self.gate1(x, torch.relu(self.attention1(self.ln1(x), mask)))
        f = self.dense1(self.ln2(y))
        if self.ffn:
            f = self.dense2(self.dropout(torch.relu(f)))
        return self.gate2(y, torch.relu(f))

    def upstream_tensors(self) -> dict[str, UpstreamTensor]:
        tensors = {}
        for name in ("ln1", "ln2"):
            norm = getattr(self, name)
            tensors |= {f"{name}/scale": as_is(norm.weight), f"{name}/bias": as_is(norm.bias)}
        tensors |= prefixed("attention1", self.attention1.upstream_tensors())
        tensors |= prefixed("gate1", self.gate1.upstream_tensors()) | prefixed("gate2", self.gate2.upstream_tensors())
        tensors |= prefixed("dense1", dense_tensors(self.dense1))
        if self.dense2 is not None:
            tensors |= prefixed("dense2", dense_tensors(self.dense2))
        return tensors


class MessageLayer(nn.Module):
    """Joint/thruster message: one Dense, or with ``multilayer_joint_thruster_mixing`` an MLP
    (relu after every Dense, the last included)."""

    def __init__(self, in_features: int, config: ModelConfig):
        super().__init__()
        size = config.transformer_encoder_size
        self.multilayer = config.multilayer_joint_thruster_mixing
        if self.multilayer:
            hidden = size * config.joint_thruster_block_hidden_dim_multiplication
            sizes = [in_features] + [hidden] * (config.joint_thruster_block_num_layers - 1) + [size]
        else:
            sizes = [in_features, size]
        self.denses = nn.ModuleList(lecun_linear(a, b) for a, b in zip(sizes, sizes[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for dense in self.denses:
            x = dense(x)
            if self.multilayer:
                x = torch.relu(x)
        return x

    def upstream_tensors(self) -> dict[str, UpstreamTensor]:
        if not self.multilayer:
            return dense_tensors(self.denses[0])
        tensors = {}
        for i, dense in enumerate(self.denses):
            tensors |= prefixed(f"Dense_{i}", dense_tensors(dense))
        return tensors


def _gather_rows(rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``rows[l, index[l, j]]`` for ``rows`` ``(L, S, K)`` and ``index`` ``(L, R)`` -> ``(L, R, K)``."""
    return rows.gather(1, index.unsqueeze(-1).expand(-1, -1, rows.shape[-1]))


def _scatter_add_rows(rows: torch.Tensor, index: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    return rows.scatter_add(1, index.unsqueeze(-1).expand(-1, -1, rows.shape[-1]), delta)


class EntityTransformer(nn.Module):
    """Upstream's ``ActorCriticTransformer`` torso for ``symbolic_entity`` observations.

    Shapes (polygons then circles, each encoded to ``K - 1`` features plus an entity id: 1 for
    polygons, 0 for circles, 0 for both with ``legacy_entity_id``) go through ``transformer_depth``
    gated layers; head ``h`` uses the observation's attention-mask layer ``h // (heads / 4)``.
    After every layer each active joint adds ``Dense(shape_a, shape_b, joint)`` to its first shape
    and each active thruster ``Dense(shape, thruster)`` to its shape. With a dummy token (all ones,
    row 0, always active), the scene embedding is the mean over the dummy and active shapes
    (``dummy_and_mean``) or the dummy row (``dummy``); ``mean`` has no dummy.
    """

    def __init__(self, entity_widths: dict[str, int], config: ModelConfig):
        super().__init__()
        size = config.transformer_encoder_size
        self.config = config
        self.activation = ACTIVATIONS[config.activation]
        self.encoders = nn.ModuleDict(
            {
                "circles": orthogonal_linear(entity_widths["circles"], size - 1, _ROOT_2),
                "polygons": orthogonal_linear(entity_widths["polygons"], size - 1, _ROOT_2),
                "joints": orthogonal_linear(entity_widths["joints"], size, _ROOT_2),
                "thrusters": orthogonal_linear(entity_widths["thrusters"], size, _ROOT_2),
            }
        )
        self.polygon_id = 0.0 if config.legacy_entity_id else 1.0
        self.dummy = config.aggregate_mode in ("dummy", "dummy_and_mean")
        self.tf_layers = nn.ModuleList(TransformerLayer(config) for _ in range(config.transformer_depth))
        self.joint_layers = nn.ModuleList(MessageLayer(3 * size, config) for _ in range(config.transformer_depth))
        self.thruster_layers = nn.ModuleList(MessageLayer(2 * size, config) for _ in range(config.transformer_depth))
        self.out_features = size

    def _encode(self, key: str, features: torch.Tensor, entity_id: float | None) -> torch.Tensor:
        encoded = self.activation(self.encoders[key](features))
        if entity_id is None:
            return encoded
        return torch.cat([encoded, torch.full_like(encoded[..., :1], entity_id)], dim=-1)

    def forward(self, observation) -> torch.Tensor:
        lead = observation["polygons"].shape[:-2]
        obs = {key: observation[key].reshape((-1,) + observation[key].shape[len(lead) :]) for key in observation.keys()}
        shapes = torch.cat(
            [self._encode("polygons", obs["polygons"], self.polygon_id), self._encode("circles", obs["circles"], 0.0)],
            dim=-2,
        )
        joints = self._encode("joints", obs["joints"], None)
        thrusters = self._encode("thrusters", obs["thrusters"], None)
        active = torch.cat([obs["polygon_mask"], obs["circle_mask"]], dim=-1)
        mask = obs["attention_mask"].bool()
        joint_index, thruster_index = obs["joint_indexes"].long(), obs["thruster_indexes"].long()
        if self.dummy:
            shapes = torch.cat([torch.ones_like(shapes[:, :1]), shapes], dim=1)
            active = torch.cat([torch.ones_like(active[:, :1]), active], dim=1)
            mask = F.pad(mask, (1, 0, 1, 0), value=True)
            joint_index, thruster_index = joint_index + 1, thruster_index + 1
        if self.config.full_attention_mask:
            mask = torch.ones_like(mask)
        if self.dummy or self.config.full_attention_mask:
            mask = mask & active[:, None, :, None] & active[:, None, None, :]
        mask = mask.repeat_interleave(self.config.num_heads // mask.shape[1], dim=1)

        joint_active = obs["joint_mask"].unsqueeze(-1)
        thruster_active = obs["thruster_mask"].unsqueeze(-1)
        for layer, joint_layer, thruster_layer in zip(self.tf_layers, self.joint_layers, self.thruster_layers):
            shapes = layer(shapes, mask)
            joint_in = torch.cat(
                [_gather_rows(shapes, joint_index[..., 0]), _gather_rows(shapes, joint_index[..., 1]), joints], dim=-1
            )
            joint_delta = joint_layer(joint_in) * joint_active
            thruster_in = torch.cat([_gather_rows(shapes, thruster_index), thrusters], dim=-1)
            thruster_delta = thruster_layer(thruster_in) * thruster_active
            shapes = _scatter_add_rows(shapes, joint_index[..., 0], joint_delta)
            shapes = _scatter_add_rows(shapes, thruster_index, thruster_delta)

        if self.config.aggregate_mode == "dummy":
            embedding = shapes[:, 0]
        else:
            weight = active.unsqueeze(-1)
            embedding = torch.where(weight, shapes, 0.0).sum(1) / weight.sum(1)
        return embedding.reshape(lead + (-1,))

    def upstream_tensors(self) -> dict[str, UpstreamTensor]:
        tensors = {}
        for i, key in enumerate(ENTITY_KEYS):
            tensors |= prefixed(f"Dense_{i}", dense_tensors(self.encoders[key]))
        for i, (layer, joint, thruster) in enumerate(zip(self.tf_layers, self.joint_layers, self.thruster_layers)):
            tensors |= prefixed(f"Transformer_0/tf_layers_{i}", layer.upstream_tensors())
            tensors |= prefixed(f"Transformer_0/joint_layers_{i}", joint.upstream_tensors())
            tensors |= prefixed(f"Transformer_0/thruster_layers_{i}", thruster.upstream_tensors())
        return tensors
