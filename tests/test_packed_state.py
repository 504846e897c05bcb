"""The env's state stays packed between steps on the Triton backends.

On ``triton-interpret`` (CPU) and ``triton`` (CUDA, ``-m gpu``), :class:`KinetixEnv` keeps its
state in the kernels' layout (:class:`~kinetix_torch.kernels.packed.PackedState`): an env step
never packs or unpacks the TensorDict state, resets copy columns from the bank packed once, and
``env.state`` is a TensorDict of views into the matrices. The tests check that the packed path
gives exactly what the TensorDict path gives with the same kernel (and what the JAX backend gives,
within the physics tolerance), that a step neither synchronises with the host nor copies the
state, and, on CUDA, that a step replays in a CUDA graph and launches a fixed number of kernels.

The interpreter pays per operation, so the CPU cases use the S sizes with one substep per env step
and two solver iterations: the same code paths at a fraction of the time.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from kinetix_torch import schema
from kinetix_torch.env import KinetixEnv, _has_nan
from kinetix_torch.generate import RandomLevelSampler
from kinetix_torch.kernels import layout
from kinetix_torch.kernels.aot import CUSTOM_SIZE
from kinetix_torch.kernels.packed import PackedState
from kinetix_torch.kernels.step import LaunchConfig, interpreted, launch_config, launch_config_for
from kinetix_torch.levels import load_level
from kinetix_torch.observations import OBSERVATION_TYPES
from kinetix_torch.params import EnvParams, static_params_for_size

BATCH = 6
INTERPRETER_STATIC = static_params_for_size("s").replace(frame_skip=1, num_solver_iterations=2)
"""The S sizes with short steps, for the interpreter."""
SYNC_TOLERANCE = 1e-3
"""Body positions of the JAX backend and the kernel stay this close while their rollouts agree."""
SYNC_OPS = {"_local_scalar_dense", "item", "is_nonzero", "equal", "nonzero", "masked_select", "unique", "_unique",
            "_unique2", "unique_dim", "unique_consecutive", "repeat_interleave"}
"""Operators that read device data on the host (or size their output from it): a sync on CUDA."""
HOST_DATA_OPS = {"lift_fresh", "lift_fresh_copy"}
"""A tensor made from host data (``torch.tensor(...)``, a list index): a copy to the device on CUDA,
which CUDA graph capture refuses."""


@pytest.fixture(scope="module")
def levels(levels_dir):
    return [load_level(p) for p in sorted((levels_dir / "s").glob("*.json"))[:4]]


BACKENDS = [
    pytest.param(("triton-interpret", "cpu", INTERPRETER_STATIC), marks=pytest.mark.slow, id="interpreter"),
    pytest.param(("triton", "cuda", static_params_for_size("s")), marks=[pytest.mark.slow, pytest.mark.gpu], id="cuda"),
]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """``(backend, device, static)`` for the Triton backend this process runs."""
    name = request.param[0]
    if (name == "triton-interpret") != interpreted():
        pytest.skip(f"{name}: this process {'interprets' if interpreted() else 'compiles'} the kernels")
    return request.param


def make_env(source, backend: str, device: str, static, **options) -> KinetixEnv:
    """An env over a bank of levels (``source`` a list of Levels) or a sampler."""
    options = dict(num_envs=BATCH, observation_type="symbolic_flat", action_type="continuous", seed=5,
                   backend=backend, device=device, static_env_params=static, check_action_range=False) | options
    if isinstance(source, RandomLevelSampler):
        return KinetixEnv(sampler=source, **options)
    return KinetixEnv(source, **options)


def flat_state(env) -> dict:
    return {k: v.to("cpu", copy=True) for k, v in schema.tensordict_to_flat_tensors(env.state).items()}


# ------------------------------------------------------------------------------------------------
# The layout: every field has a place, views read and write the same numbers


@pytest.mark.parametrize("static", [static_params_for_size(s) for s in "sml"] + [CUSTOM_SIZE], ids=["s", "m", "l", "custom"])
def test_every_field_is_a_view_of_its_matrix(static):
    rng = np.random.default_rng(0)
    flat = schema.allocate(static, (3,))
    for key, value in flat.items():
        kind = value.dtype.kind
        flat[key] = (rng.normal(size=value.shape).astype(np.float32) if kind == "f" else
                     rng.integers(0, 7, value.shape).astype(np.int32) if kind == "i" else rng.random(value.shape) < 0.5)
    state = schema.to_tensordict(flat, (3,))
    packed, typed = layout.pack(state, static, 4, "cpu"), layout.pack_typed(state, static, 4, "cpu")
    views = layout.state_views(packed, typed, static, 3)
    for key, value in schema.tensordict_to_flat_tensors(views).items():
        assert value.dtype == state.get(tuple(key.split("."))).dtype and torch.equal(value, state.get(tuple(key.split(".")))), key
        assert value.untyped_storage().data_ptr() in (packed.untyped_storage().data_ptr(),
                                                       *(m.untyped_storage().data_ptr() for m in typed.values())), key
    # Every state row belongs to exactly one field; the scratch rows to none.
    plan = layout.layout_for(static)
    owners = torch.zeros(plan.total_rows, 1)
    for key in layout.STATE_KEYS:
        layout.field_view(owners, plan.places[key], schema.field_shape(key, static), 1).add_(1)
    assert (owners[: plan.state_rows] == 1).all() and (owners[plan.state_rows :] == 0).all()
    # The kernel-written flags follow the state matrix.
    for key in layout.WRITTEN_FLAG_KEYS:
        layout.field_view(packed, plan.places[key], schema.field_shape(key, static), 3).fill_(1.0)
    layout.refresh_flags(packed, typed, static)
    assert all(views.get(tuple(k.split("."))).all() for k in layout.WRITTEN_FLAG_KEYS)


# ------------------------------------------------------------------------------------------------
# The step path


@pytest.mark.slow
def test_env_step_never_packs_or_unpacks_the_state(levels, monkeypatch):
    calls = {name: 0 for name in ("pack", "pack_typed", "unpack", "state_views")}
    for name in calls:
        original = getattr(layout, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(layout, name, counted)
    env = make_env(levels, "triton-interpret", "cpu", INTERPRETER_STATIC)
    td = env.reset()
    assert calls == {"pack": 1, "pack_typed": 1, "unpack": 0, "state_views": 1}, "the bank is packed once"
    state, tensors = env.state, flat_state(env)
    ptrs = {k: v.data_ptr() for k, v in schema.tensordict_to_flat_tensors(state).items()}
    for step in range(2):
        td = env.step(env.rand_action(td))["next"]
        mask = torch.zeros(BATCH, 1, dtype=torch.bool)
        mask[step] = True
        env.reset(TensorDict({"_reset": mask}, batch_size=[BATCH]))
    assert calls == {"pack": 1, "pack_typed": 1, "unpack": 0, "state_views": 1}, "steps and resets repacked"
    assert env.state is state and {k: v.data_ptr() for k, v in schema.tensordict_to_flat_tensors(state).items()} == ptrs
    assert not torch.equal(flat_state(env)["polygon.position"], tensors["polygon.position"]), "the view is live"


def rollout_outputs(env, steps: int, actions: torch.Tensor, resets: list[list[int]]):
    """``steps`` env steps with ``actions[t]`` and partial resets of ``resets[t]``; returns the
    step outputs (as the env returned them: they must not change later) and copies of the states
    after each step (on the CPU)."""
    td = env.reset()
    outputs, states = [], []
    for t in range(steps):
        td["action"] = actions[t].to(env.device)
        out = env.step(td)["next"]
        outputs.append(out.cpu())
        states.append(flat_state(env))
        mask = torch.zeros(BATCH, 1, dtype=torch.bool)
        mask[resets[t]] = True
        fresh = env.reset(TensorDict({"_reset": mask.to(env.device)}, batch_size=[BATCH], device=env.device))
        td = out.clone()
        td.update(fresh.exclude("done", "terminated", "truncated"))
    return outputs, states


@pytest.mark.parametrize("source", ["bank", "sampler"])
def test_packed_rollouts_equal_the_tensordict_path(levels, backend, source, monkeypatch):
    """The same env on the packed state and on the TensorDict path (``engine.step`` with the
    same kernel) agree exactly, through steps and partial resets, and what the packed env handed
    out earlier (entity observations hold masks) did not change with later steps; on the CPU the
    JAX backend agrees within the physics tolerance while the rollouts are in sync."""
    name, device, static = backend
    steps = 3 if device == "cpu" else 16

    def env_on(backend_name, env_device):
        source_ = RandomLevelSampler(static_params_for_size("s"), seed=4) if source == "sampler" else levels
        return make_env(source_, backend_name, env_device, static, observation_type="symbolic_entity")

    packed, tensordict_path = env_on(name, device), env_on(name, device)
    monkeypatch.setattr(tensordict_path, "_packed_state", lambda: None)  # the path the JAX backend takes
    generator = torch.Generator().manual_seed(0)
    actions = torch.rand((steps,) + tuple(packed.action_spec.shape), generator=generator) * 2 - 1
    resets = [[t % BATCH, (t + 3) % BATCH] for t in range(steps)]
    got, got_states = rollout_outputs(packed, steps, actions, resets)
    assert packed._packed is not None and tensordict_path._packed is None
    ref, ref_states = rollout_outputs(tensordict_path, steps, actions, resets)
    for t in range(steps):
        for key in got[t].keys(True, True):
            assert torch.equal(got[t][key], ref[t][key]), f"step {t}: {key}"
        for key, value in got_states[t].items():
            assert torch.equal(value, ref_states[t][key]), f"step {t}: state {key}"
    if device != "cpu":
        return
    jax_out, jax_states = rollout_outputs(env_on("jax", "cpu"), steps, actions, resets)
    compared = 0
    for t in range(steps):
        drift = np.max([(got_states[t][k] - jax_states[t][k]).abs().reshape(BATCH, -1).max(-1).values.numpy()
                        for k in ("polygon.position", "circle.position")], axis=0)
        rows = drift <= SYNC_TOLERANCE
        compared += int(rows.sum())
        for key in ("terminated", "truncated", "goal_reached"):
            assert torch.equal(got[t][key][rows], jax_out[t][key][rows]), f"step {t}: {key}"
        np.testing.assert_allclose(got[t]["reward"][rows], jax_out[t]["reward"][rows], atol=1e-4, err_msg=f"step {t}")
    assert compared >= 0.9 * steps * BATCH, "the rollouts should stay in sync with the JAX backend"


@pytest.mark.slow
def test_launch_configuration_changes_the_grid_not_the_results(levels):
    """One program for all environments, programs of 4 (an env option) and of 2 (the
    ``launch_config`` context at the first reset): the same step."""
    outputs, states = [], []
    for option, context in ((None, None), (LaunchConfig(block=4), None), (None, LaunchConfig(block=2))):
        env = make_env(levels, "triton-interpret", "cpu", INTERPRETER_STATIC, launch_config=option)
        with launch_config(context) if context else contextlib.nullcontext():
            td = env.reset()
        td["action"] = torch.linspace(-1, 1, BATCH * env.action_spec.shape[-1]).reshape(env.action_spec.shape)
        outputs.append(env.step(td)["next"])
        states.append(flat_state(env))
        assert env._packed.config.block == (option or context or launch_config_for(INTERPRETER_STATIC, True)).block
    for out, state in zip(outputs[1:], states[1:]):
        assert (out == outputs[0]).all()
        assert all(torch.equal(value, states[0][key]) for key, value in state.items())


@pytest.mark.slow
def test_a_checkpoint_resumes_exactly():
    """``checkpoint_state`` copies the live view; ``load_checkpoint_state`` writes it back into
    a new env's packed state, which then continues as the first env does (sampler pool included)."""

    def env():
        sampler = RandomLevelSampler(static_params_for_size("s"), seed=4)
        return make_env(sampler, "triton-interpret", "cpu", INTERPRETER_STATIC, sampler_chunk=2 * BATCH)

    first = env()
    actions = torch.rand((3,) + tuple(first.action_spec.shape), generator=torch.Generator().manual_seed(1)) * 2 - 1
    rollout_outputs(first, 1, actions, [[0]])
    saved = first.checkpoint_state()
    assert saved["state"]["polygon"]["position"].untyped_storage().data_ptr() != \
        first.state["polygon", "position"].untyped_storage().data_ptr()
    expected, expected_states = continue_rollout(first, actions[1:], [[1, 4], [2]])
    second = env()
    second.load_checkpoint_state(saved)
    got, got_states = continue_rollout(second, actions[1:], [[1, 4], [2]])
    for t in range(2):
        assert (got[t] == expected[t]).all(), f"step {t}"
        assert all(torch.equal(v, expected_states[t][k]) for k, v in got_states[t].items()), f"step {t}"


def continue_rollout(env, actions: torch.Tensor, resets: list[list[int]]):
    """Steps from the env's current state (no first reset): see :func:`rollout_outputs`."""
    td = TensorDict({"done": torch.zeros(BATCH, 1, dtype=torch.bool)}, batch_size=[BATCH])
    outputs, states = [], []
    for t, action in enumerate(actions):
        td["action"] = action
        out = env.step(td)["next"]
        outputs.append(out.cpu().clone())
        states.append(flat_state(env))
        mask = torch.zeros(BATCH, 1, dtype=torch.bool)
        mask[resets[t]] = True
        env.reset(TensorDict({"_reset": mask}, batch_size=[BATCH]))
    return outputs, states


@pytest.mark.slow
def test_nan_flag_is_the_envs_nan_rule(levels):
    """The kernel's NaN flag equals ``_has_nan`` of the state after the step, also for NaNs in
    fields the physics never reads (densities, ``last_distance``)."""
    static = INTERPRETER_STATIC
    env = make_env(levels, "jax", "cpu", static)
    env.reset()
    state = env.state.clone()
    poisoned = {1: "polygon_densities", 2: "last_distance", 3: "polygon.velocity", 4: "joint.motor_speed"}
    for row, key in poisoned.items():
        state.get(tuple(key.split(".")))[row].view(-1)[0] = float("nan")
    packed = PackedState(static, BATCH, "cpu", launch_config_for(static, interpret=True), interpret=True)
    packed.load(state)
    _, nan = packed.step(torch.zeros(BATCH, static.action_dim), EnvParams())
    assert torch.equal(nan, _has_nan(packed.view))
    assert nan[[1, 2, 3]].all() and not nan[0] and not nan[5], nan


class Recorder(TorchDispatchMode):
    """Every operator a block runs, with the bytes of the new storage its outputs hold."""

    def __init__(self):
        super().__init__()
        self.ops: list[tuple[str, int]] = []
        self.computing = 0
        """Operators that compute (not views): at most one kernel each on CUDA."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        fresh = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tree_leaves(out)
                 if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs}
        self.ops.append((func.overloadpacket.__name__, sum(fresh.values())))
        self.computing += not func.is_view
        return out

    def names(self, among: set) -> list[str]:
        return [name for name, _ in self.ops if name in among]


@pytest.mark.slow
def test_env_step_neither_syncs_nor_copies_the_state(levels, monkeypatch):
    """After warm-up, a step (observations aside: their own module's business) reads nothing on
    the host, brings no host data in, keeps every state tensor where it was and allocates only
    per-environment scalars; a reset from the bank is masked on the device."""
    env = make_env(levels, "triton-interpret", "cpu", INTERPRETER_STATIC, observation_type="blind")
    td = env.rand_action(env.reset())
    env._step(td)  # warm-up: pair tables and parameters on the device
    state_bytes = env._packed.packed[: layout.layout_for(INTERPRETER_STATIC).state_rows, :BATCH].numel() * 4
    ptrs = {k: v.data_ptr() for k, v in schema.tensordict_to_flat_tensors(env.state).items()}
    observation = env._observe(env.state)
    with monkeypatch.context() as patch:
        patch.setattr(env, "_observe", lambda state: observation)
        with Recorder() as step:
            env._step(td)
    assert not step.names(SYNC_OPS | HOST_DATA_OPS), step.names(SYNC_OPS | HOST_DATA_OPS)
    assert {k: v.data_ptr() for k, v in schema.tensordict_to_flat_tensors(env.state).items()} == ptrs
    new_bytes = sum(size for _, size in step.ops)
    assert new_bytes < state_bytes / 4, f"a step allocated {new_bytes} B against a state of {state_bytes} B"
    assert step.computing < len(schema.FIELDS), f"{step.computing} operators per step: one per field somewhere?"
    # A reset from the bank is masked on the device.
    mask = torch.tensor([True, False] * (BATCH // 2))[:, None]
    with Recorder() as reset:
        env._reset(TensorDict({"_reset": mask}, batch_size=[BATCH]))
    assert not reset.names(SYNC_OPS), reset.names(SYNC_OPS)
    # After a warm-up call (device constants), no observation type syncs or brings host data in
    # (CUDA-graph capturable); the rest of the step is the same for all of them.
    for observation_type in OBSERVATION_TYPES:
        env.observation_type = observation_type
        env._observe(env.state)
        with Recorder() as observe:
            env._observe(env.state)
        assert not observe.names(SYNC_OPS | HOST_DATA_OPS), (observation_type, observe.names(SYNC_OPS | HOST_DATA_OPS))


# ------------------------------------------------------------------------------------------------
# CUDA: graph capture and kernel launches (the GPU suite, ``TRITON_INTERPRET=0 pytest -m gpu``)


@pytest.mark.slow
@pytest.mark.gpu
def test_env_step_replays_in_a_cuda_graph(levels):
    env = make_env(levels, "triton", "cuda", static_params_for_size("s"), num_envs=256, observation_type="blind")
    td = env.rand_action(env.reset())
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up: compile, device constants, allocator pools
        for _ in range(2):
            env._step(td)
    torch.cuda.current_stream().wait_stream(side)
    start = env.state.clone()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = env._step(td)
    torch.cuda.synchronize()
    assert (env.state == start).all(), "capturing must not run the step"
    eager, eager_states = [], []
    for _ in range(3):
        eager.append(env._step(td).clone())
        eager_states.append(env.state.clone())
    env._packed.load(start)
    for t in range(3):
        graph.replay()
        torch.cuda.synchronize()
        assert (captured == eager[t]).all(), f"replay {t}: outputs"
        assert (env.state == eager_states[t]).all(), f"replay {t}: state"


@pytest.mark.slow
@pytest.mark.gpu
def test_env_step_launches_a_fixed_number_of_kernels(levels_dir):
    from torch.profiler import ProfilerActivity, profile

    launches = {}
    for size in ("s", "m"):
        bank = [load_level(p) for p in sorted((levels_dir / size).glob("*.json"))[:4]]
        env = make_env(bank, "triton", "cuda", static_params_for_size(size), num_envs=256, observation_type="blind")
        td = env.rand_action(env.reset())
        env._step(td)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            env._step(td)
            torch.cuda.synchronize()
        launches[size] = sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    print(f"CUDA kernels per env step: {launches}")
    assert launches["s"] > 0, "the profiler saw no CUDA kernels (CUPTI unavailable?)"
    assert launches["s"] == launches["m"] < len(schema.FIELDS), launches
