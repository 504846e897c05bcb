"""Raw actions -> processed engine actions, against upstream's recorded ``action_processed``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from kinetix_torch import schema
from kinetix_torch.actions import ACTION_TYPES, check_raw_actions, noop_actions, process_actions
from kinetix_torch.params import static_params_for_size

STATIC_M = static_params_for_size("m")


def _golden_rows(golden_dir, action_type):
    """Every recorded step of every golden trajectory: (static, state rows, raw action, processed)."""
    import json

    from kinetix_torch.params import StaticEnvParams

    for sidecar in sorted(golden_dir.rglob("*.json")):
        traj = sidecar.with_name(f"{sidecar.stem}.traj.{action_type}.npz")
        if not traj.exists():
            continue
        static = StaticEnvParams.from_dict(json.loads(sidecar.read_text())["static_env_params"])
        data = np.load(traj)
        n = int(data["num_steps"])
        keys = ("motor_bindings", "motor_auto", "thruster_bindings")
        state = schema.to_tensordict({k: data[f"state.{k}"][:n] for k in keys}, (n,))
        yield sidecar.stem, static, state, data["action"], data["action_processed"]


@pytest.mark.parametrize("action_type", ["multi_discrete", "continuous"])
def test_processed_actions_equal_upstream(golden_dir, action_type):
    count = 0
    for name, static, state, raw, expected in _golden_rows(golden_dir, action_type):
        got = process_actions(torch.from_numpy(raw), state, static, action_type)
        assert got.dtype == torch.float32
        np.testing.assert_array_equal(got.numpy(), expected, err_msg=f"{name} {action_type}")
        count += 1
    assert count >= 100, f"only {count} golden trajectories found"


def _routing_state(batch: int) -> TensorDict:
    """Joint 0 reads motor slot 3, joint 1 slot 1 (auto); thruster 0 reads slot 1, thruster 1 slot 0."""
    return TensorDict(
        {
            "motor_bindings": torch.tensor([[3, 1]] * batch, dtype=torch.int32),
            "motor_auto": torch.tensor([[False, True]] * batch),
            "thruster_bindings": torch.tensor([[1, 0]] * batch, dtype=torch.int32),
        },
        batch_size=[batch],
    )


def test_discrete_encoding():
    """0..7: motor slot a//2 at -1 (even) / +1 (odd); 8: no-op; 9, 10: thruster slot 0, 1."""
    raw = torch.arange(11)
    slots = torch.zeros(11, 6)
    for a in range(8):
        slots[a, a // 2] = 1.0 if a % 2 else -1.0
    slots[9, 4] = slots[10, 5] = 1.0
    state = _routing_state(11)
    got = process_actions(raw, state, STATIC_M, "discrete")
    expected = torch.stack([slots[:, 3], torch.ones(11), slots[:, 5], slots[:, 4]], dim=1)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_multi_discrete_and_continuous_routing_and_clipping():
    state = _routing_state(2)
    raw = torch.tensor([[0, 1, 0, 2, 1, 0], [1, 0, 0, 1, 0, 1]])
    got = process_actions(raw, state, STATIC_M, "multi_discrete")
    torch.testing.assert_close(got, torch.tensor([[-1.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]]), rtol=0, atol=0)
    raw = torch.tensor([[0.0, 0.3, 0.0, -7.0, 0.5, -0.5], [0.0, 0.0, 0.0, 0.25, 3.0, 2.0]])
    got = process_actions(raw, state, STATIC_M, "continuous")
    torch.testing.assert_close(got, torch.tensor([[-1.0, 1.0, 0.0, 0.5], [0.25, 1.0, 1.0, 1.0]]), rtol=0, atol=0)


@pytest.mark.parametrize("action_type", ACTION_TYPES)
def test_noop_actions_drive_nothing(action_type):
    state = _routing_state(3)
    state["motor_auto"] = torch.zeros(3, 2, dtype=torch.bool)
    raw = noop_actions(3, STATIC_M, action_type)
    check_raw_actions(raw, 3, STATIC_M, action_type, check_range=True)
    assert not process_actions(raw, state, STATIC_M, action_type).any()


@pytest.mark.parametrize(
    "action_type, raw, message",
    [
        ("continuous", torch.zeros(2, 5), r"shape \(2, 5\), expected \(2, 6\)"),
        ("continuous", torch.zeros(2, 6, dtype=torch.int64), "expected a floating dtype"),
        ("multi_discrete", torch.zeros(2, 6), "expected an integer dtype"),
        ("multi_discrete", torch.tensor([[0, 3, 0, 0, 0, 0]] * 2), "out of range"),
        ("multi_discrete", torch.tensor([[0, 0, 0, 0, 2, 0]] * 2), "out of range"),
        ("discrete", torch.tensor([11, 0]), "out of range"),
        ("discrete", torch.tensor([-1, 0]), "out of range"),
        ("discrete", torch.zeros(2, 1, dtype=torch.int64), r"shape \(2, 1\), expected \(2,\)"),
        ("discrete", torch.zeros(2, dtype=torch.bool), "expected an integer dtype"),
    ],
)
def test_bad_raw_actions_name_the_problem(action_type, raw, message):
    with pytest.raises(ValueError, match=message):
        check_raw_actions(raw, 2, STATIC_M, action_type, check_range=True)


def test_unknown_action_type():
    with pytest.raises(ValueError, match="unknown action_type 'box'"):
        noop_actions(1, STATIC_M, "box")
