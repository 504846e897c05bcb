"""Kinetix's actor-critic networks in PyTorch/TorchRL, compatible with upstream's checkpoints.

* :class:`ModelConfig`: upstream's model options (``config.json["model"]``);
* :func:`make_actor_critic`: an :class:`ActorCritic` (``.policy``, ``.value``) from the env's specs;
* :func:`load_upstream_checkpoint` / :func:`save_upstream_checkpoint`: upstream's pretrained format
  (``params.safetensors`` with flax parameter names + ``config.json``).
"""

from .actor_critic import ActorCritic, make_actor_critic
from .checkpoint import load_upstream_checkpoint, save_upstream_checkpoint
from .config import ModelConfig

__all__ = ["ModelConfig", "ActorCritic", "make_actor_critic", "load_upstream_checkpoint", "save_upstream_checkpoint"]
