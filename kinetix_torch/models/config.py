"""Model options under upstream Kinetix's names (``config.json["model"]`` of a pretrained checkpoint).

The defaults are upstream's composed model groups after ``normalise_config``: the paper's ``tf-paper``
transformer for entity observations (786,369 parameters with M-size multi-discrete actions) and a
5 x 128 tanh actor and critic for every torso.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Literal

__all__ = ["ModelConfig"]


@dataclass
class ModelConfig:
    """Actor-critic architecture; see :func:`kinetix_torch.models.make_actor_critic`."""

    actor_depth: int = 5
    """Hidden layers of the actor MLP."""
    critic_depth: int = 5
    """Hidden layers of the critic MLP."""
    actor_width: int = 128
    """Width of the actor MLP (also the flat MLP torso's width)."""
    critic_width: int = 128
    """Width of the critic MLP."""
    override_model_depth: int = -1
    """If > 0, sets both actor_depth and critic_depth (upstream's normalise_config)."""
    override_model_width: int = -1
    """If > 0, sets both actor_width and critic_width (upstream's normalise_config)."""
    separate_actor_critic: bool = False
    """Separate actor and critic embeddings in the permutation-invariant MLP (not supported: must be false)."""
    activation: Literal["tanh", "relu"] = "tanh"
    """Activation of the encoders and the actor/critic MLPs (the flat MLP's first layer is always relu)."""
    recurrent_model: bool = False
    """Run a 256-unit GRU between the torso and the actor/critic MLPs, reset at episode starts."""
    cnn_mode: Literal["impala_fast"] = "impala_fast"
    """Pixel CNN: two convolutions (16 8x8 stride 4, 32 4x4 stride 2), 'SAME' padding, relu."""
    transformer_depth: int = 2
    """Transformer layers (each followed by a joint and a thruster message pass)."""
    transformer_size: int = 16
    """Query/key/value features of the attention, over all heads."""
    transformer_encoder_size: int = 128
    """Width of the entity encodings and of the transformer."""
    num_heads: int = 8
    """Attention heads (a multiple of the 4 attention-mask layers); also the permutation-invariant MLP's heads."""
    full_attention_mask: bool = False
    """Let every active shape attend to every other instead of using the observation's mask layers."""
    aggregate_mode: Literal["dummy_and_mean", "dummy", "mean"] = "dummy_and_mean"
    """Scene embedding: mean of the dummy token and active shapes, the dummy alone, or mean of active shapes (no dummy)."""
    transformer_ffn: bool = False
    """Feed-forward block Dense(4K)-relu-Dense(K) in each layer instead of a single Dense(K)."""
    multilayer_joint_thruster_mixing: bool = False
    """Joint/thruster messages through an MLP with relu instead of one linear Dense."""
    joint_thruster_block_num_layers: int = 2
    """Dense layers of that MLP."""
    joint_thruster_block_hidden_dim_multiplication: int = 4
    """Its hidden width, in multiples of transformer_encoder_size."""
    dropout_prob: float = 0.0
    """Dropout in the feed-forward block (needs transformer_ffn; active in train() mode only)."""
    legacy_entity_id: bool = False
    """Give polygons entity id 0 like circles, as the paper's released checkpoints (sfl-paper) need."""
    symbolic_embedding_dim: int = 256
    """Output width of the permutation-invariant MLP (split evenly over num_heads)."""
    encoder_size: int = 64
    """Width of the permutation-invariant MLP's entity encodings (including a 4-way type one-hot)."""
    permutation_invariant_mlp: bool = False
    """Use the permutation-invariant MLP instead of the transformer for entity observations."""
    model_name: str | None = None
    """Upstream's model group name (informational, e.g. 'tf-s-paper')."""

    def __post_init__(self):
        if self.override_model_depth > 0:
            self.actor_depth = self.critic_depth = self.override_model_depth
        if self.override_model_width > 0:
            self.actor_width = self.critic_width = self.override_model_width
        positive = (
            "actor_depth critic_depth actor_width critic_width transformer_depth transformer_size "
            "transformer_encoder_size num_heads joint_thruster_block_num_layers "
            "joint_thruster_block_hidden_dim_multiplication symbolic_embedding_dim"
        ).split()
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
        choices = {
            "activation": ("tanh", "relu"),
            "aggregate_mode": ("dummy_and_mean", "dummy", "mean"),
            "cnn_mode": ("impala_fast",),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"ModelConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.separate_actor_critic:
            raise ValueError("ModelConfig.separate_actor_critic=True is not supported (upstream's configs all use false)")
        if self.num_heads % 4 or self.transformer_size % self.num_heads:
            raise ValueError(
                f"ModelConfig.num_heads ({self.num_heads}) must be a multiple of 4 (attention-mask layers) "
                f"and divide transformer_size ({self.transformer_size})"
            )
        if self.symbolic_embedding_dim % self.num_heads:
            raise ValueError(
                f"ModelConfig.symbolic_embedding_dim ({self.symbolic_embedding_dim}) must be divisible by "
                f"num_heads ({self.num_heads})"
            )
        if self.encoder_size <= 4:
            raise ValueError(f"ModelConfig.encoder_size must be > 4 (4 type features), got {self.encoder_size}")
        if not 0.0 <= self.dropout_prob < 1.0:
            raise ValueError(f"ModelConfig.dropout_prob must lie in [0, 1), got {self.dropout_prob}")
        if self.dropout_prob > 0 and not self.transformer_ffn:
            raise ValueError("ModelConfig.dropout_prob > 0 needs transformer_ffn=True (as upstream)")

    @classmethod
    def from_upstream(cls, model: dict, *, where: str = 'config.json["model"]') -> "ModelConfig":
        """Build from upstream's model dict. Keys upstream's network builder does not read are
        ignored with a warning; wrong values raise ``ValueError`` naming ``where``."""
        if not isinstance(model, dict):
            raise ValueError(f"{where}: expected a dict of model options, got {type(model).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(model) - names)
        if unknown:
            warnings.warn(f"{where}: ignoring unknown model options {unknown}", stacklevel=2)
        try:
            return cls(**{k: v for k, v in model.items() if k in names})
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: {error}") from None

    def to_upstream(self) -> dict:
        """Upstream's model dict (``model_name`` only when set)."""
        model = dataclasses.asdict(self)
        if model["model_name"] is None:
            del model["model_name"]
        return model
