"""Kinetix's actor-critic (upstream ``GeneralActorCriticRNN`` with its torsos) as TorchRL modules.

``make_actor_critic(observation_spec, action_spec, config)`` picks the torso from the observation
spec as upstream's ``make_network_from_config`` does, and returns an :class:`ActorCritic` whose
``policy`` (a ``ProbabilisticActor``) and ``value`` (writes ``"state_value"``) read
``"observation"`` (plus ``"recurrent_state"`` and ``"is_init"`` with ``recurrent_model``):

    observation -> torso -> [GRU, reset where is_init] -> actor MLP -> Dense -> logits / loc
                                                      \\-> critic MLP -> Dense -> state_value

Policies: ``Categorical`` over the logits (discrete), :class:`MultiCategorical` over the slots
(multi-discrete), a diagonal normal with ``scale = exp(log_std)`` (continuous, unsquashed: the env
clips). Policy and value share the torso and GRU parameters but each computes them.
"""

from __future__ import annotations

import math

import torch
from tensordict.nn import InteractionType, TensorDictModule, TensorDictSequential
from torch import nn
from torch.distributions import Categorical as CategoricalDistribution
from torchrl.data import Bounded, Categorical, Composite, MultiCategorical, TensorSpec, Unbounded
from torchrl.modules import GRUModule, IndependentNormal, ProbabilisticActor

from .config import ModelConfig
from .distributions import MultiCategorical as MultiCategoricalDistribution
from .layers import ACTIVATIONS, UpstreamTensor, as_is, dense_tensors, lecun_normal_, orthogonal_linear, prefixed
from .torsos import ENTITY_KEYS, EntityTransformer, FlatMLP, PermutationInvariantMLP, PixelCNN

__all__ = ["ActorCritic", "make_actor_critic", "GRU_SIZE", "HEAD", "RECURRENT_STATE_KEY"]

GRU_SIZE = 256
"""Units of upstream's GRU (``ScannedRNN``)."""
HEAD = "GeneralActorCriticRNN_0"
"""Upstream's module path of the shared head."""
RECURRENT_STATE_KEY = "recurrent_state"
"""TensorDict key of the GRU state, ``(..., 1, 256)`` (TorchRL's GRUModule layout)."""


class DenseStack(nn.Module):
    """``depth`` x [Dense(width), activation] (upstream's ``DenseAndActivation`` layers)."""

    def __init__(self, in_features: int, width: int, depth: int, activation: str):
        super().__init__()
        sizes = [in_features] + [width] * depth
        self.layers = nn.ModuleList(orthogonal_linear(a, b, math.sqrt(2.0)) for a, b in zip(sizes, sizes[1:]))
        self.activation = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = self.activation(layer(x))
        return x

    def upstream_tensors(self, first_index: int) -> dict[str, UpstreamTensor]:
        tensors = {}
        for i, layer in enumerate(self.layers):
            tensors |= prefixed(f"DenseAndActivation_{first_index + i}/Dense_0", dense_tensors(layer))
        return tensors


class PolicyHead(nn.Module):
    """Actor MLP and output Dense; returns the raw head (logits) or ``(loc, scale)`` for continuous."""

    def __init__(self, in_features: int, config: ModelConfig, action_size: int, continuous: bool):
        super().__init__()
        self.mlp = DenseStack(in_features, config.actor_width, config.actor_depth, config.activation)
        self.out = orthogonal_linear(config.actor_width, action_size, 0.01)
        self.log_std = nn.Parameter(torch.zeros(action_size)) if continuous else None

    def forward(self, embedding: torch.Tensor):
        head = self.out(self.mlp(embedding))
        if self.log_std is None:
            return head
        return head, self.log_std.exp().expand_as(head)

    def upstream_tensors(self) -> dict[str, UpstreamTensor]:
        tensors = self.mlp.upstream_tensors(0) | prefixed("Dense_0", dense_tensors(self.out))
        if self.log_std is not None:
            tensors["log_std"] = as_is(self.log_std)
        return tensors


class ValueHead(nn.Module):
    """Critic MLP and output Dense: ``(..., 1)`` state values."""

    def __init__(self, in_features: int, config: ModelConfig, first_layer_index: int):
        super().__init__()
        self.mlp = DenseStack(in_features, config.critic_width, config.critic_depth, config.activation)
        self.out = orthogonal_linear(config.critic_width, 1, 1.0)
        self.first_layer_index = first_layer_index

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.out(self.mlp(embedding))

    def upstream_tensors(self) -> dict[str, UpstreamTensor]:
        return self.mlp.upstream_tensors(self.first_layer_index) | prefixed("Dense_1", dense_tensors(self.out))


def make_gru(input_size: int) -> GRUModule:
    """TorchRL GRU with upstream's initialisation (LeCun-normal input kernels, orthogonal
    recurrent kernels per gate, zero biases). Reads ``"torso"``, writes ``"embedding"``."""
    module = GRUModule(
        input_size=input_size,
        hidden_size=GRU_SIZE,
        in_keys=["torso", RECURRENT_STATE_KEY, "is_init"],
        out_keys=["embedding", ("next", RECURRENT_STATE_KEY)],
    )
    gru = module.gru
    with torch.no_grad():
        lecun_normal_(gru.weight_ih_l0, input_size)
        for gate in gru.weight_hh_l0.split(GRU_SIZE):
            nn.init.orthogonal_(gate)
        gru.bias_ih_l0.zero_()
        gru.bias_hh_l0.zero_()
    return module


def gru_tensors(module: GRUModule) -> dict[str, UpstreamTensor]:
    """flax ``GRUCell`` tensors of a torch GRU (gate order r, z, n). flax has no hidden bias for r
    and z: reading folds torch's into the input bias, writing zeroes it."""
    gru = module.gru
    w_ih, w_hh, b_ih, b_hh = gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0
    n, tensors = GRU_SIZE, {}
    for g, gate in enumerate("rzn"):
        rows = slice(g * n, (g + 1) * n)
        tensors[f"i{gate}/kernel"] = _slice_transposed(w_ih, rows)
        tensors[f"h{gate}/kernel"] = _slice_transposed(w_hh, rows)
        if gate == "n":
            tensors["in/bias"] = _slice(b_ih, rows)
            tensors["hn/bias"] = _slice(b_hh, rows)
        else:
            tensors[f"i{gate}/bias"] = _folded_bias(b_ih, b_hh, rows)
    return tensors


def _slice_transposed(param, rows) -> UpstreamTensor:
    def write(array):
        param.data[rows] = array.T

    return UpstreamTensor(tuple(param[rows].shape[::-1]), lambda: param.detach()[rows].T, write)


def _slice(param, rows) -> UpstreamTensor:
    def write(array):
        param.data[rows] = array

    return UpstreamTensor(tuple(param[rows].shape), lambda: param.detach()[rows], write)


def _folded_bias(input_bias, hidden_bias, rows) -> UpstreamTensor:
    def write(array):
        input_bias.data[rows] = array
        hidden_bias.data[rows] = 0.0

    return UpstreamTensor(
        tuple(input_bias[rows].shape), lambda: input_bias.detach()[rows] + hidden_bias.detach()[rows], write
    )


class ActorCritic(nn.Module):
    """Torso, optional GRU, actor and critic heads; use :attr:`policy` and :attr:`value`.

    Parameters live here once (``torso``, ``gru``, ``actor``, ``critic``); ``policy`` and ``value``
    are TorchRL operators over them.
    """

    def __init__(
        self,
        torso: nn.Module,
        config: ModelConfig,
        action_type: str,
        action_spec: TensorSpec,
        nvec: list[int] | None = None,
        observation_type: str | None = None,
    ):
        super().__init__()
        self.config, self.action_type, self.observation_type = config, action_type, observation_type
        continuous = action_type == "continuous"
        action_size = _action_size(action_type, action_spec, nvec)
        self.recurrent = config.recurrent_model
        self.torso = torso
        self.gru = make_gru(torso.out_features) if self.recurrent else None
        head_in = GRU_SIZE if self.recurrent else torso.out_features
        self.actor = PolicyHead(head_in, config, action_size, continuous)
        self.critic = ValueHead(head_in, config, config.actor_depth)

        features = [TensorDictModule(self.torso, in_keys=["observation"], out_keys=["torso"])]
        embedding_key = "torso"
        if self.recurrent:
            features.append(self.gru)
            embedding_key = "embedding"
        dist_keys = ["loc", "scale"] if continuous else ["logits"]
        policy_out = dist_keys + ([("next", RECURRENT_STATE_KEY)] if self.recurrent else [])
        actor_module = TensorDictSequential(
            *features,
            TensorDictModule(self.actor, in_keys=[embedding_key], out_keys=dist_keys),
            selected_out_keys=policy_out,
        )
        if continuous:
            dist_class, dist_kwargs = IndependentNormal, {}
        elif action_type == "discrete":
            dist_class, dist_kwargs = CategoricalDistribution, {}
        else:
            dist_class, dist_kwargs = MultiCategoricalDistribution, {"nvec": list(nvec)}
        policy = ProbabilisticActor(
            actor_module,
            in_keys=dist_keys,
            spec=action_spec,
            distribution_class=dist_class,
            distribution_kwargs=dist_kwargs,
            return_log_prob=True,
            default_interaction_type=InteractionType.RANDOM,
        )
        value = TensorDictSequential(
            *features,
            TensorDictModule(self.critic, in_keys=[embedding_key], out_keys=["state_value"]),
            selected_out_keys=["state_value"],
        )
        # A plain attribute: the operators share the parameters registered above.
        self._operators = (policy, value)

    @property
    def policy(self) -> ProbabilisticActor:
        """Writes ``"action"``, its log-prob and the distribution parameters."""
        return self._operators[0]

    @property
    def value(self) -> TensorDictSequential:
        """Writes ``"state_value"`` ``(..., 1)``."""
        return self._operators[1]

    def make_primer(self):
        """TorchRL primer of ``"recurrent_state"`` for the env (``None`` when feed-forward)."""
        return self.gru.make_tensordict_primer() if self.recurrent else None

    def upstream_tensors(self) -> dict[str, UpstreamTensor]:
        """Every parameter under upstream's flax name (without the leading ``params/``)."""
        head = self.actor.upstream_tensors() | self.critic.upstream_tensors()
        if self.recurrent:
            head |= prefixed("ScannedRNN_0/GRUCell_1", gru_tensors(self.gru))
        return self.torso.upstream_tensors() | prefixed(HEAD, head)

    def parameter_counts(self) -> dict[str, int]:
        """Upstream's parameter counts per part (torch's GRU hidden biases of r and z, which
        upstream does not have and saving folds into the input biases, are not counted)."""

        def count(tensors):
            return sum(math.prod(t.shape) for t in tensors.values())

        counts = {
            "torso": count(self.torso.upstream_tensors()),
            "recurrent": count(gru_tensors(self.gru)) if self.recurrent else 0,
            "actor": count(self.actor.upstream_tensors()),
            "critic": count(self.critic.upstream_tensors()),
        }
        counts["total"] = sum(counts.values())
        return counts

    def summary(self) -> str:
        counts = self.parameter_counts()
        lines = [
            f"ActorCritic: {type(self.torso).__name__} torso ({self.observation_type or 'observation'}) -> "
            f"{'GRU(256) -> ' if self.recurrent else ''}{self.action_type} policy",
            "parameters: " + ", ".join(f"{name} {n:,}" for name, n in counts.items()),
        ]
        return "\n".join(lines)


def _action_size(action_type: str, action_spec: TensorSpec, nvec) -> int:
    if action_type == "continuous":
        return action_spec.shape[-1]
    if action_type == "discrete":
        return int(action_spec.space.n)
    return sum(nvec)


def _action_kind(action_spec: TensorSpec) -> tuple[str, list[int] | None, int]:
    """``(action_type, nvec or None, number of batch dims of the spec)``."""
    if isinstance(action_spec, MultiCategorical):
        nvec = action_spec.nvec.reshape(-1, action_spec.shape[-1])[0].tolist()
        return "multi_discrete", [int(n) for n in nvec], len(action_spec.shape) - 1
    if isinstance(action_spec, Categorical):
        return "discrete", None, len(action_spec.shape)
    if isinstance(action_spec, (Bounded, Unbounded)) and action_spec.dtype.is_floating_point:
        return "continuous", None, len(action_spec.shape) - 1
    raise ValueError(
        f"make_actor_critic: unsupported action spec {type(action_spec).__name__}; expected Bounded or "
        f"Unbounded float (continuous), Categorical (discrete) or MultiCategorical (multi-discrete)"
    )


def _observation_type(observation_spec: TensorSpec, batch_dims: int) -> tuple[str, tuple[int, ...]]:
    """``(observation_type, per-env shape)`` of a spec (for Composites, the shape is ``()``)."""
    if isinstance(observation_spec, Composite):
        keys = set(observation_spec.keys())
        if {"image", "global_info"} <= keys:
            return "pixels", ()
        if set(ENTITY_KEYS) <= keys:
            return "symbolic_entity", ()
        raise ValueError(
            f"make_actor_critic: a Composite observation spec must hold pixels (image, global_info) or "
            f"entities ({', '.join(ENTITY_KEYS)}, masks, indexes); got keys {sorted(map(str, keys))}"
        )
    shape = tuple(observation_spec.shape[batch_dims:])
    if len(shape) == 2:
        return "symbolic_flat_padded", shape
    if len(shape) == 1:
        return ("blind" if isinstance(observation_spec, Bounded) else "symbolic_flat"), shape
    raise ValueError(
        f"make_actor_critic: cannot tell the observation type of a {type(observation_spec).__name__} spec of "
        f"per-env shape {shape} (batch dims {batch_dims} from the action spec); expected (F,) or (rows, width)"
    )


def make_actor_critic(
    observation_spec: TensorSpec, action_spec: TensorSpec, config: ModelConfig | None = None
) -> ActorCritic:
    """Build upstream's actor-critic for an env's ``observation_spec["observation"]`` and ``action_spec``.

    The torso follows the observation: entity -> :class:`EntityTransformer` (or the entity form of
    :class:`PermutationInvariantMLP` with ``permutation_invariant_mlp``), flat padded -> the raw-row
    permutation-invariant MLP, pixels -> :class:`PixelCNN`, flat or blind -> :class:`FlatMLP`.
    """
    config = config or ModelConfig()
    action_type, nvec, batch_dims = _action_kind(action_spec)
    observation_type, shape = _observation_type(observation_spec, batch_dims)
    if observation_type in ("symbolic_flat", "blind"):
        torso = FlatMLP(shape[0], config.actor_width)
    elif observation_type == "symbolic_flat_padded":
        torso = PermutationInvariantMLP.for_rows(shape[1], config)
    elif observation_type == "pixels":
        torso = PixelCNN.for_image_spec(observation_spec["image"], config)
    else:
        widths = {key: observation_spec[key].shape[-1] for key in ENTITY_KEYS}
        if config.permutation_invariant_mlp:
            torso = PermutationInvariantMLP.for_entities(widths, config)
        else:
            torso = EntityTransformer(widths, config)
    return ActorCritic(torso, config, action_type, action_spec, nvec, observation_type)
