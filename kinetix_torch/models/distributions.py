"""Action distributions of Kinetix's policies that torch does not provide.

:class:`MultiCategorical` is upstream's multi-discrete policy: independent categoricals over the
action slots (3 choices per motor slot, 2 per thruster slot) whose raw logits are concatenated.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.distributions import Categorical, Distribution, constraints

__all__ = ["MultiCategorical"]


class MultiCategorical(Distribution):
    """Product of categoricals: slot ``i`` has ``nvec[i]`` choices and the logits
    ``logits[..., offset_i : offset_i + nvec[i]]``.

    Samples are int64 ``(..., len(nvec))``; ``log_prob`` and ``entropy`` sum over the slots.
    """

    arg_constraints = {"logits": constraints.real_vector}
    has_rsample = False

    def __init__(self, logits: torch.Tensor, nvec: Sequence[int], validate_args: bool | None = False):
        self.nvec = tuple(int(n) for n in nvec)
        if logits.shape[-1] != sum(self.nvec):
            raise ValueError(
                f"MultiCategorical: logits have {logits.shape[-1]} entries, "
                f"nvec {list(self.nvec)} needs {sum(self.nvec)}"
            )
        self.raw_logits = logits
        self.slots = [Categorical(logits=part, validate_args=False) for part in logits.split(self.nvec, dim=-1)]
        super().__init__(logits.shape[:-1], torch.Size([len(self.nvec)]), validate_args=validate_args)

    @property
    def logits(self) -> torch.Tensor:
        """Normalised logits (``log_softmax`` per slot), concatenated like the raw ones."""
        return torch.cat([slot.logits for slot in self.slots], dim=-1)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return torch.stack([slot.sample(sample_shape) for slot in self.slots], dim=-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        value = value.long()
        return sum(slot.log_prob(value[..., i]) for i, slot in enumerate(self.slots))

    def entropy(self) -> torch.Tensor:
        return sum(slot.entropy() for slot in self.slots)

    @property
    def mode(self) -> torch.Tensor:
        return torch.stack([slot.logits.argmax(-1) for slot in self.slots], dim=-1)

    @property
    def deterministic_sample(self) -> torch.Tensor:
        return self.mode
