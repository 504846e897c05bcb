"""Raw agent actions -> the engine's processed actions, as upstream Kinetix encodes them.

The agent acts on ``num_motor_bindings`` motor slots and ``num_thruster_bindings`` thruster slots
(M and B below). Every joint reads the motor slot of its ``motor_bindings`` entry and every thruster
the thruster slot of its ``thruster_bindings`` entry, which gives the engine's ``(batch, J + T)``
float32 actions: motor values clipped to [-1, 1] (+1 where ``motor_auto``), thruster values clipped
to [0, 1]. Inactive joints and thrusters get values too; the engine ignores them.

Raw encodings (:data:`ACTION_TYPES`):

* ``"continuous"``: float ``(batch, M + B)``, motor slots then thruster slots; values outside the
  ranges are clipped, as upstream.
* ``"multi_discrete"``: integer ``(batch, M + B)``; a motor slot takes 0 (off), 1 (+1) or 2 (-1), a
  thruster slot 0 (off) or 1 (on).
* ``"discrete"``: integer ``(batch,)`` in ``[0, 2M + 1 + B)``: ``2m`` drives motor slot ``m`` at -1,
  ``2m + 1`` at +1, ``2M`` is the no-op and ``2M + 1 + b`` fires thruster slot ``b``.
"""

from __future__ import annotations

import torch

from .params import StaticEnvParams

__all__ = ["ACTION_TYPES", "process_actions", "noop_actions", "raw_action_shape", "check_raw_actions", "action_spec", "random_actions"]

ACTION_TYPES = ("continuous", "discrete", "multi_discrete")


def _check_type(action_type: str) -> None:
    if action_type not in ACTION_TYPES:
        raise ValueError(f"unknown action_type {action_type!r}; expected one of {ACTION_TYPES}")


def raw_action_shape(static: StaticEnvParams, action_type: str) -> tuple[int, ...]:
    """Per-environment shape of a raw action: ``()`` for discrete, ``(M + B,)`` otherwise."""
    _check_type(action_type)
    if action_type == "discrete":
        return ()
    return (static.num_motor_bindings + static.num_thruster_bindings,)


def num_discrete_actions(static: StaticEnvParams) -> int:
    """Size of the discrete action set: two directions per motor slot, a no-op, one per thruster slot."""
    return 2 * static.num_motor_bindings + 1 + static.num_thruster_bindings


def slot_choices(static: StaticEnvParams) -> list[int]:
    """Choices per slot of a multi-discrete action: 3 per motor slot, 2 per thruster slot."""
    return [3] * static.num_motor_bindings + [2] * static.num_thruster_bindings


def action_spec(action_type: str, static: StaticEnvParams, batch: tuple[int, ...] = (), device=None):
    """The TorchRL spec of raw actions: ``Bounded`` [-1, 1] (continuous), ``Categorical``
    (discrete) or ``MultiCategorical`` (one choice per motor and thruster binding)."""
    from torchrl.data import Bounded, Categorical, MultiCategorical

    _check_type(action_type)
    shape = tuple(batch) + raw_action_shape(static, action_type)
    if action_type == "continuous":
        return Bounded(-1.0, 1.0, shape=shape, dtype=torch.float32, device=device)
    if action_type == "discrete":
        return Categorical(num_discrete_actions(static), shape=shape, device=device)
    return MultiCategorical(slot_choices(static), shape=shape, device=device)


def check_raw_actions(
    raw: torch.Tensor, batch: int, static: StaticEnvParams, action_type: str, check_range: bool
) -> None:
    """Raise ``ValueError`` naming the problem for a wrong shape or dtype (and, with ``check_range``,
    an integer action out of its range: this reads the values on the host)."""
    _check_type(action_type)
    expected = (batch,) + raw_action_shape(static, action_type)
    if not isinstance(raw, torch.Tensor):
        raise TypeError(f"{action_type} action: expected a torch.Tensor, got {type(raw).__name__}")
    if tuple(raw.shape) != expected:
        raise ValueError(f"{action_type} action has shape {tuple(raw.shape)}, expected {expected}")
    if action_type == "continuous":
        if not raw.is_floating_point():
            raise ValueError(f"continuous action has dtype {raw.dtype}, expected a floating dtype (torch.float32)")
        return
    if raw.is_floating_point() or raw.is_complex() or raw.dtype == torch.bool:
        raise ValueError(f"{action_type} action has dtype {raw.dtype}, expected an integer dtype (torch.int64)")
    if check_range:
        if action_type == "discrete":
            high = torch.tensor(num_discrete_actions(static), device=raw.device)
        else:
            high = torch.tensor(slot_choices(static), device=raw.device)
        bad = (raw < 0) | (raw >= high)
        if bool(bad.any()):
            raise ValueError(
                f"{action_type} action out of range: values must lie in [0, {high.tolist()}) per slot, "
                f"got {raw[bad.reshape(batch, -1).any(-1)][:4].tolist()} (first offending rows)"
            )


def _slot_values(raw: torch.Tensor, static: StaticEnvParams, action_type: str) -> torch.Tensor:
    """Float32 ``(batch, M + B)`` slot values before binding: motors in {-1, 0, 1} or free, thrusters >= 0."""
    M = static.num_motor_bindings
    if action_type == "continuous":
        return raw.to(torch.float32)
    if action_type == "multi_discrete":
        raw = raw.long()
        choice = raw[:, :M]  # 0: off, 1: forward (+1), 2: backward (-1); no host data (CUDA graphs)
        motors = (choice == 1).to(torch.float32) - (choice == 2).to(torch.float32)
        thrusters = (raw[:, M:] != 0).to(torch.float32)
        return torch.cat([motors, thrusters], dim=1)
    # discrete: one slot set (motor direction or thruster on), or none for the no-op.
    raw = raw.long()[:, None]
    slot = torch.arange(M + static.num_thruster_bindings, device=raw.device)
    motor_hit = (raw < 2 * M) & (slot == raw // 2)
    motor_value = (raw % 2) * 2 - 1
    thruster_hit = (raw > 2 * M) & (slot == raw - M - 1)
    return torch.where(motor_hit, motor_value, thruster_hit.long()).to(torch.float32)


def process_actions(raw: torch.Tensor, state, static: StaticEnvParams, action_type: str) -> torch.Tensor:
    """Upstream's processed action: float32 ``(batch, J + T)`` for the engine.

    ``raw`` is a batch of actions in the ``action_type`` encoding (see the module docstring);
    ``state`` the batched TensorDict whose ``motor_bindings``, ``motor_auto`` and
    ``thruster_bindings`` route slots to joints and thrusters. Shape and dtype are not checked here
    (see :func:`check_raw_actions`).
    """
    _check_type(action_type)
    slots = _slot_values(raw, static, action_type)
    M, B = static.num_motor_bindings, static.num_thruster_bindings
    # Bindings index like JAX gathers: out-of-range slots clamp to the nearest valid one.
    motor_slot = state["motor_bindings"].long().clamp(0, M - 1)
    thruster_slot = state["thruster_bindings"].long().clamp(0, B - 1)
    motors = slots[:, :M].gather(1, motor_slot).clamp(-1.0, 1.0)
    motors = torch.where(state["motor_auto"], torch.ones_like(motors), motors)
    thrusters = slots[:, M:].gather(1, thruster_slot).clamp(0.0, 1.0)
    return torch.cat([motors, thrusters], dim=1)


def random_actions(batch: int, static: StaticEnvParams, action_type: str, generator: torch.Generator) -> torch.Tensor:
    """Uniform raw actions for ``batch`` environments drawn from ``generator`` (on its device):
    continuous in [-1, 1), one of the discrete actions, or one choice per multi-discrete slot."""
    _check_type(action_type)
    shape, device = (batch,) + raw_action_shape(static, action_type), generator.device
    if action_type == "continuous":
        return torch.rand(shape, generator=generator, device=device) * 2.0 - 1.0
    if action_type == "discrete":
        return torch.randint(num_discrete_actions(static), shape, generator=generator, device=device)
    choices = torch.tensor(slot_choices(static), device=device)
    return (torch.rand(shape, generator=generator, device=device) * choices).long().clamp_max(choices - 1)


def noop_actions(batch: int, static: StaticEnvParams, action_type: str, device=None) -> torch.Tensor:
    """Upstream's no-op raw action for ``batch`` environments: zeros (float32 for continuous,
    int64 for multi-discrete) or the discrete no-op index ``2 * num_motor_bindings`` (int64)."""
    shape = (batch,) + raw_action_shape(static, action_type)
    if action_type == "continuous":
        return torch.zeros(shape, dtype=torch.float32, device=device)
    fill = 2 * static.num_motor_bindings if action_type == "discrete" else 0
    return torch.full(shape, fill, dtype=torch.int64, device=device)
