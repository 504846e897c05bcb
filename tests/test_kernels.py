"""The fused Triton step against the JAX reference engine: run by Triton's CPU interpreter
(``triton-interpret``, the default test process) and, in the GPU suite (``TRITON_INTERPRET=0
pytest -m gpu``), compiled on CUDA (``triton``): the same comparisons, parametrised by backend.

Tolerance: every state field within ``atol 1e-5 + rtol 1e-5`` of ``reference_jax`` after one
physics step, on every golden input state. Exceptions must be rare (at most 1% of a group's
samples) and must still match upstream's own output within the conformance tolerance (1e-4): they
are the near-tied contacts the golden README describes, where a 1-ulp difference in sin/cos
legitimately flips which of two equally deep points is solved first. Multi-step rollouts are
chaotic, so after 16 env steps the divergence is reported and only loosely bounded.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from kinetix_torch import conformance, engine, schema
from kinetix_torch.conformance import NumpyEngine, sample_excess
from kinetix_torch.kernels.step import interpreted
from kinetix_torch.params import EnvParams, static_params_for_size

pytestmark = pytest.mark.slow  # developers' fast subset: pytest -m 'not slow'

JAX = NumpyEngine("jax")
interpreter_only = pytest.mark.skipif(
    not interpreted(), reason="the interpreter's tests: this process compiles the kernels (TRITON_INTERPRET=0)"
)


@pytest.fixture(params=["triton-interpret", pytest.param("triton", marks=pytest.mark.gpu)])
def triton(request) -> NumpyEngine:
    """The Triton backend this process runs: the interpreter on CPU, the compiled kernels on CUDA."""
    if (request.param == "triton-interpret") != interpreted():
        pytest.skip(f"{request.param}: this process has TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET')}")
    return NumpyEngine(request.param)

TIGHT, GOLDEN_TOLERANCE = 1e-5, 1e-4
MAX_NEAR_TIE_SHARE = 0.01
ROLE_KEYS = ("polygon_shape_roles", "circle_shape_roles")


def golden_groups(golden: Path, prefix: str):
    """Golden single-step samples under ``prefix``, stacked per (static, params) group."""
    groups: dict = {}
    for case in conformance.discover_cases(golden):
        if case.name.startswith(prefix):
            key = (case.static, tuple(sorted(case.env_params.physics_values().items())))
            groups.setdefault(key, []).append(case)
    assert groups, f"no golden cases under {golden}/{prefix}"
    for cases in groups.values():
        data = [np.load(c.file("engine.npz")) for c in cases]
        stacked = lambda tag: {  # noqa: E731
            k[len(tag) :]: np.concatenate([d[k] for d in data]) for k in data[0].files if k.startswith(tag)
        }
        actions = np.concatenate([d["action"] for d in data])
        yield cases[0].static, cases[0].env_params, stacked("input."), actions, stacked("output.")


def assert_matches_reference(got, ref, upstream, label):
    excess = sample_excess(got, ref, schema.SIM_KEYS, TIGHT, TIGHT)
    off = np.flatnonzero(excess > 1)
    print(f"{label}: {len(excess)} samples, worst {excess.max():.2f} of the 1e-5 tolerance, {len(off)} beyond")
    assert len(off) <= MAX_NEAR_TIE_SHARE * len(excess), f"{label}: {len(off)} samples beyond 1e-5 of the reference"
    if len(off):
        keys = sorted(upstream)
        to_upstream = sample_excess({k: got[k][off] for k in keys}, {k: upstream[k][off] for k in keys},
                                    keys, GOLDEN_TOLERANCE, GOLDEN_TOLERANCE)
        assert (to_upstream <= 1).all(), f"{label}: samples {off} differ from the reference and from upstream"


@pytest.mark.parametrize("prefix", ["handmade/s", "handmade/m", "random/s", "random/m", "random/l"])
def test_single_steps_match_reference(golden_dir, prefix, triton):
    for static, params, inputs, actions, upstream in golden_groups(golden_dir, prefix):
        ref, ref_manifolds = JAX.physics(inputs, actions, static, params)
        got, manifolds = triton.physics(inputs, actions, static, params)
        assert_matches_reference(got, ref, upstream, prefix)
        assert sorted(manifolds) == sorted(ref_manifolds)
        for key in ref_manifolds:
            if key.endswith(".active"):
                assert (manifolds[key] == ref_manifolds[key]).mean() > 0.999, key


def perturbed_scenes(inputs: dict, static, seed: int) -> dict:
    """Golden states made harder: bodies shifted into each other, spun and thrown, some fixated
    (infinite mass), some switched off, and circles dropped onto polygons."""
    rng = np.random.default_rng(seed)
    s = {k: v.copy() for k, v in inputs.items()}
    batch, F = len(s["polygon.position"]), static.num_static_fixated_polys
    for kind in ("polygon", "circle"):
        first = F if kind == "polygon" else 0
        pos, n = s[f"{kind}.position"], s[f"{kind}.position"].shape[1] - first
        pos[:, first:] += rng.normal(0, 0.25, (batch, n, 2)).astype(np.float32)
        s[f"{kind}.velocity"][:, first:] += rng.normal(0, 1.5, (batch, n, 2)).astype(np.float32)
        s[f"{kind}.angular_velocity"][:, first:] += rng.normal(0, 2.0, (batch, n)).astype(np.float32)
        fixate = rng.random((batch, n)) < 0.15
        s[f"{kind}.inverse_mass"][:, first:][fixate] = 0
        s[f"{kind}.inverse_inertia"][:, first:][fixate] = 0
        s[f"{kind}.active"][:, first:] &= rng.random((batch, n)) > 0.1
    # Drop circle 0 right onto the first dynamic polygon, overlapping it slightly.
    top = s["polygon.position"][:, F] + np.array([0.0, 0.2], np.float32)
    s["circle.position"][:, 0] = top + s["circle.radius"][:, :1] * np.array([0.0, 0.9], np.float32)
    return s


@pytest.mark.parametrize("prefix", ["random/s", "random/l"])
def test_random_scenes_match_reference(golden_dir, prefix, triton):
    static, params, inputs, actions, _ = next(golden_groups(golden_dir, prefix))
    scenes = perturbed_scenes(inputs, static, seed=7)
    ref, _ = JAX.physics(scenes, actions, static, params)
    got, _ = triton.physics(scenes, actions, static, params)
    active = ref["acc_rr_manifolds.active"].sum() + ref["acc_cr_manifolds.active"].sum()
    assert active > len(actions), "the perturbed scenes should be full of contacts"
    excess = sample_excess(got, ref, schema.SIM_KEYS, TIGHT, TIGHT)
    print(f"{prefix} perturbed: {len(excess)} scenes, {active} contacts, worst {excess.max():.2f} of 1e-5")
    assert (excess > 1).mean() <= MAX_NEAR_TIE_SHARE * 3, "perturbed scenes beyond 1e-5 of the reference"


def rollout(engine_, state: dict, actions: np.ndarray, static, params, steps: int):
    """``steps`` env steps; returns the sim states after each and the per-substep contact info."""
    states, infos = [], []
    for _ in range(steps):
        state, info = engine_.env(state, actions, static, params)
        states.append(state)
        infos.append(info)
    return states, infos


@pytest.mark.parametrize("prefix", ["handmade/s", "random/m"])
def test_rollouts_report_divergence(golden_dir, prefix, triton):
    """16 env steps (32 substeps) with random actions from every golden input state."""
    static, params, inputs, _, _ = next(golden_groups(golden_dir, prefix))
    batch = len(inputs["polygon.position"])
    rng = np.random.default_rng(0)
    actions = np.concatenate(
        [rng.uniform(-1, 1, (batch, static.num_joints)), rng.uniform(0, 1, (batch, static.num_thrusters))], axis=1
    ).astype(np.float32)
    start = {**inputs, **{k: np.ones((batch,) + schema.field_shape(k, static), np.int32) for k in ROLE_KEYS}}
    ref_states, ref_infos = rollout(JAX, start, actions, static, params, 16)
    got_states, got_infos = rollout(triton, start, actions, static, params, 16)
    excess = [sample_excess(g, r, schema.SIM_KEYS, TIGHT, TIGHT) for g, r in zip(got_states, ref_states)]
    worst_position = [
        np.abs(g["polygon.position"] - r["polygon.position"]).reshape(batch, -1).max(1)
        for g, r in zip(got_states, ref_states)
    ]
    for step in (1, 4, 8, 16):
        print(f"{prefix} env step {step:2d}: {np.mean(excess[step - 1] <= 1):.1%} of samples within 1e-5, "
              f"median / max polygon position error {np.median(worst_position[step - 1]):.1e} / "
              f"{worst_position[step - 1].max():.1e}")
    assert np.mean(excess[0] <= 1) >= 1 - MAX_NEAR_TIE_SHARE * 3
    assert np.median(worst_position[-1]) < 1e-3, "typical rollouts should still agree after 16 env steps"
    first_info = got_infos[0]
    for key in ("touches_blue", "touches_red"):
        assert (first_info[key] == ref_infos[0][key]).all()
    np.testing.assert_allclose(first_info["distance"], ref_infos[0]["distance"], rtol=1e-4, atol=1e-4)


def test_env_step_contact_info_matches_reference(golden_dir, triton):
    """Per-substep contact info on a golden trajectory's first states, with its real roles."""
    case = next(c for c in conformance.discover_cases(golden_dir) if c.name.startswith("handmade/s"))
    traj = np.load(case.file("traj.multi_discrete.npz"))
    steps = min(8, int(traj["num_steps"]))
    keys = schema.SIM_KEYS + ROLE_KEYS
    state = {k: traj[f"state.{k}"][:steps] for k in keys}
    actions = traj["action_processed"][:steps]
    (ref,), (ref_info,) = rollout(JAX, state, actions, case.static, case.env_params, 1)
    (got,), (got_info,) = rollout(triton, state, actions, case.static, case.env_params, 1)
    assert (sample_excess(got, ref, schema.SIM_KEYS, TIGHT, TIGHT) <= 1).all()
    assert got_info["touches_blue"].shape == (steps, case.static.frame_skip)
    for key in ("touches_blue", "touches_red"):
        assert (got_info[key] == ref_info[key]).all()
    assert got_info["distance"].max() > 0, "the level has a green-blue pair"
    np.testing.assert_allclose(got_info["distance"], ref_info["distance"], rtol=1e-5, atol=1e-5)


@interpreter_only
def test_backends_say_why_they_cannot_run():
    static = static_params_for_size("s")
    state = schema.to_tensordict(schema.allocate(static, (2,)), (2,))
    actions = torch.zeros(2, static.action_dim)
    with pytest.raises(engine.BackendUnavailable, match="needs CUDA tensors|interpreter is on"):
        engine.step(state, actions, EnvParams(), static, backend="triton")
    with pytest.raises(engine.BackendUnavailable, match="do_warm_starting"):
        engine.step(state, actions, EnvParams(), static.replace(do_warm_starting=False),
                    backend="triton-interpret")


@interpreter_only
def test_fused_step_is_an_opaque_op_under_torch_compile(golden_dir):
    """``torch.compile(fullgraph=True)`` takes the kernel as one custom op (its fake gives the
    shapes) and the compiled call updates the state exactly as the eager one."""
    from kinetix_torch.kernels import layout, step

    static, params, inputs, actions, _ = next(golden_groups(golden_dir, "handmade/s"))
    batch = len(actions)
    full = schema.allocate(static, (batch,))
    full.update(inputs)
    state = schema.to_tensordict(full, (batch,))
    config = step.launch_config_for(static, interpret=True)
    padded = step.padded_batch(batch, interpret=True, config=config)
    eager, compiled_state = (layout.pack(state, static, padded, torch.device("cpu")) for _ in range(2))
    padded_actions = torch.zeros(static.action_dim, padded)
    padded_actions[:, :batch] = torch.from_numpy(actions).T
    physics, pairs = step._device_constants(static, params, torch.device("cpu"))
    sizes = [int(v) for v in layout.layout_for(static).constexprs.values()]
    launch = [step._block(padded, config, True), config.num_warps, 0, int(config.fp_fusion)]

    def substeps(packed):
        return step.fused_substeps(packed, padded_actions, physics, pairs, sizes, static.frame_skip, launch, True)

    info = substeps(eager)
    compiled_info = torch.compile(substeps, backend="aot_eager", fullgraph=True)(compiled_state)
    assert torch.equal(compiled_state, eager) and torch.equal(compiled_info, info)
    assert not torch.equal(eager, layout.pack(state, static, padded, torch.device("cpu"))), "the state moved"
