"""Random level generation: validity, distribution against upstream's statistics, seeding, the
no-op filter and the env reset sampler (level banks: ``test_levels.py``).

Distribution tests compare against ``golden/random/stats_<size>.json`` (2000 upstream levels per
size). Every histogram bin and fraction is a two-sample two-proportion z-test; every quantile q of
a continuous quantity checks that the share of our values below upstream's q-quantile is q, with
the standard error of both samples, sqrt(q(1-q)(1/n + 1/n_upstream)). A statistic fails at
|z| > 4 (two-sided p < 6.3e-5, so ~200 statistics per size give a family-wise false-alarm rate
under 1.3%); seeds are fixed, so the outcome is deterministic.
"""

from __future__ import annotations

import contextlib
import json
import math

import numpy as np
import pytest
import torch

from kinetix_torch import engine, schema
from kinetix_torch.bodies import to_flat
from kinetix_torch.generate import (
    RandomLevelSampler,
    UEDParams,
    draw_indices,
    filter_levels,
    generator_rule_problems,
    level_problems,
    noop_solved,
    sample_levels,
)
from kinetix_torch.generate.geometry import contacts_of_shape
from kinetix_torch.params import EnvParams, StaticEnvParams, static_params_for_size
from kinetix_torch.topology import pair_tables

pytestmark = pytest.mark.slow  # developers' fast subset: pytest -m 'not slow'

Z_LIMIT = 4.0
LEVELS_PER_SIZE = {"s": 20000, "m": 5000, "l": 2000}
CUSTOM = StaticEnvParams(num_polygons=8, num_circles=3, num_joints=3, num_thrusters=3, frame_skip=2)
RANDOM_ENV = EnvParams(dense_reward_scale=0.2)


@contextlib.contextmanager
def one_thread():
    """Small tensors run fastest on one thread, above all on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def generate(n, static, seed):
    with one_thread():
        return sample_levels(n, static, UEDParams(), torch.Generator().manual_seed(seed), RANDOM_ENV)


@pytest.fixture(scope="module")
def levels_by_size():
    return {size: generate(n, static_params_for_size(size), seed=1) for size, n in LEVELS_PER_SIZE.items()}


# --- validity -----------------------------------------------------------------------------------


def failing(problems):
    return {name: int(bad.sum()) for name, bad in problems.items() if bad.any()}


@pytest.mark.parametrize("size", sorted(LEVELS_PER_SIZE))
def test_generated_levels_are_valid(levels_by_size, size):
    static, levels = static_params_for_size(size), levels_by_size[size]
    assert levels.batch_size == torch.Size([LEVELS_PER_SIZE[size]])
    schema.validate(schema.tensordict_to_flat_tensors(levels), static, (LEVELS_PER_SIZE[size],))
    assert failing(level_problems(levels, static)) == {}
    assert failing(generator_rule_problems(levels, static)) == {}


def test_custom_size_levels_are_valid():
    levels = generate(500, CUSTOM, seed=3)
    assert failing(level_problems(levels, CUSTOM)) == {}
    assert failing(generator_rule_problems(levels, CUSTOM)) == {}
    assert (levels["joint", "active"].sum(1) > 1).any() and (levels["thruster", "active"].sum(1) > 1).any()


def test_validator_catches_broken_levels(levels_by_size):
    static = static_params_for_size("m")
    generated = levels_by_size["m"]
    levels = generated[generated["joint", "active"].any(1)][:5].clone()
    assert all(not bad.any() for bad in level_problems(levels, static).values())
    levels["joint", "a_index"][0] = static.num_shapes  # out of range
    levels["motor_bindings"][1] = static.num_motor_bindings
    levels["circle", "position"][2, 0, 0] = float("nan")
    levels["collision_matrix"][3] = False
    levels["polygon", "inverse_mass"][4, static.num_static_fixated_polys:] *= 2.0
    levels["circle", "inverse_mass"][4] *= 2.0
    found = {name: bad.nonzero().flatten().tolist() for name, bad in level_problems(levels, static).items()}
    assert found["joint_ends"] == [0] and found["motor_binding"] == [1] and found["non_finite"] == [2]
    assert 3 in found["collision_matrix"] and found["inverse_mass"] == [4]


def test_bad_requests_are_refused():
    with pytest.raises(ValueError, match="n: expected a positive int"):
        sample_levels(0, "s")
    with pytest.raises(ValueError, match="unknown env size"):
        sample_levels(4, "xl")
    with pytest.raises(ValueError, match="max_polygon_vertices"):
        sample_levels(4, static_params_for_size("s", max_polygon_vertices=5))
    with pytest.raises(ValueError, match="room for 3 non-scene shapes"):
        sample_levels(4, StaticEnvParams(num_polygons=5, num_circles=1, num_joints=1, num_thrusters=1))


# --- distribution -------------------------------------------------------------------------------


def z_two_proportions(k1, n1, k2, n2):
    pooled = (k1 + k2) / (n1 + n2)
    if pooled in (0.0, 1.0):
        return 0.0
    return (k1 / n1 - k2 / n2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))


def level_statistics(levels, static):
    """The quantities of ``stats_<size>.json``: count histograms, role histograms, fractions
    (values as a bool array) and samples of continuous quantities."""
    f = schema.tensordict_to_numpy(levels)
    F, P = static.num_static_fixated_polys, static.num_polygons
    polygon_live, circle_live = f["polygon.active"].copy(), f["circle.active"]
    polygon_live[:, :F] = False
    joint, fixed, thruster = f["joint.active"], f["joint.is_fixed_joint"], f["thruster.active"]
    revolute, motor = joint & ~fixed, f["joint.motor_on"]
    polygon_fixated, circle_fixated = f["polygon.inverse_mass"] == 0, f["circle.inverse_mass"] == 0
    fixated = (polygon_live & polygon_fixated).sum(1) + (circle_live & circle_fixated).sum(1)
    roles = np.concatenate(
        [np.where(polygon_live, f["polygon_shape_roles"], 0), np.where(circle_live, f["circle_shape_roles"], 0)], 1
    )
    histograms = {
        "active_dynamic_polygons": polygon_live.sum(1),
        "active_circles": circle_live.sum(1),
        "active_joints": joint.sum(1),
        "active_revolute_joints": revolute.sum(1),
        "active_fixed_joints": (joint & fixed).sum(1),
        "active_motors": (revolute & motor).sum(1),
        "active_thrusters": thruster.sum(1),
        "fixated_dynamic_shapes": fixated,
        "green_shapes": (roles == 1).sum(1),
        "blue_shapes": (roles == 2).sum(1),
        "red_shapes": (roles == 3).sum(1),
        "floor_role_polygon0": f["polygon_shape_roles"][:, 0],
        "dynamic_polygon_roles": f["polygon_shape_roles"][polygon_live],
        "circle_roles": f["circle_shape_roles"][circle_live],
        "polygon_n_vertices": f["polygon.n_vertices"][polygon_live],
        "motor_bindings": f["motor_bindings"][revolute],
        "thruster_bindings": f["thruster_bindings"][thruster],
    }
    fractions = {
        "levels_with_motor": (revolute & motor).any(1),
        "levels_with_thruster": thruster.any(1),
        "levels_with_motor_and_thruster": (revolute & motor).any(1) & thruster.any(1),
        "levels_with_any_joint": joint.any(1),
        "levels_with_fixed_joint": (joint & fixed).any(1),
        "levels_with_green_and_blue": ((roles == 1).any(1) & (roles == 2).any(1)),
        "levels_with_red": (roles == 3).any(1),
        "levels_with_fixated_dynamic_shape": fixated > 0,
        "fixated_fraction_of_dynamic_polygons": polygon_fixated[polygon_live],
        "fixated_fraction_of_circles": circle_fixated[circle_live],
        "revolute_joints_with_motor_on": motor[revolute],
        "revolute_joints_with_limits": f["joint.motor_has_joint_limits"][revolute],
        "thrusters_on_circles": (f["thruster.object_index"] >= P)[thruster],
    }
    vertices = f["polygon.vertices"][polygon_live]
    limited = revolute & f["joint.motor_has_joint_limits"]
    samples = {
        ("shapes", "polygon_half_width_local"): (vertices[..., 0].max(1) - vertices[..., 0].min(1)) / 2,
        ("shapes", "polygon_half_height_local"): (vertices[..., 1].max(1) - vertices[..., 1].min(1)) / 2,
        ("shapes", "polygon_max_vertex_distance"): np.linalg.norm(vertices, axis=-1).max(1),
        ("shapes", "circle_radius"): f["circle.radius"][circle_live],
        ("shapes", "polygon_position_x"): f["polygon.position"][polygon_live][:, 0],
        ("shapes", "polygon_position_y"): f["polygon.position"][polygon_live][:, 1],
        ("shapes", "circle_position_x"): f["circle.position"][circle_live][:, 0],
        ("shapes", "circle_position_y"): f["circle.position"][circle_live][:, 1],
        ("shapes", "polygon_rotation"): f["polygon.rotation"][polygon_live],
        ("shapes", "polygon_density"): f["polygon_densities"][polygon_live],
        ("shapes", "circle_density"): f["circle_densities"][circle_live],
        ("shapes", "polygon_friction"): f["polygon.friction"][polygon_live],
        ("shapes", "circle_friction"): f["circle.friction"][circle_live],
        ("shapes", "polygon_restitution"): f["polygon.restitution"][polygon_live],
        ("shapes", "circle_restitution"): f["circle.restitution"][circle_live],
        ("shapes", "polygon_inverse_mass_nonfixated"): f["polygon.inverse_mass"][polygon_live & ~polygon_fixated],
        ("shapes", "circle_inverse_mass_nonfixated"): f["circle.inverse_mass"][circle_live & ~circle_fixated],
        ("joints", "motor_speed_revolute"): f["joint.motor_speed"][revolute],
        ("joints", "motor_power_revolute"): f["joint.motor_power"][revolute],
        ("joints", "min_rotation_limited"): f["joint.min_rotation"][limited],
        ("joints", "max_rotation_limited"): f["joint.max_rotation"][limited],
        ("thrusters", "power"): f["thruster.power"][thruster],
        ("thrusters", "rotation"): f["thruster.rotation"][thruster],
        ("gravity_y",): f["gravity"][:, 1],
    }
    return histograms, fractions, samples


def reference_histogram(golden, name):
    for group in ("counts", "roles", "shapes", "joints", "thrusters"):
        if name in golden.get(group, {}):
            return golden[group][name]
    raise KeyError(name)


def quantile_z(values, summary, key):
    """z of our share of values at or below upstream's quantile (ties count either way)."""
    q = 0.5 if key == "median" else int(key[1:]) / 100
    below, at_or_below = np.mean(values < summary[key]), np.mean(values <= summary[key])
    deviation = max(0.0, below - q, q - at_or_below)
    return deviation / math.sqrt(q * (1 - q) * (1 / len(values) + 1 / summary["n"]))


@pytest.mark.parametrize("size", sorted(LEVELS_PER_SIZE))
def test_distribution_matches_upstream(levels_by_size, golden_dir, size):
    golden = json.loads((golden_dir / "random" / f"stats_{size}.json").read_text())
    histograms, fractions, samples = level_statistics(levels_by_size[size], static_params_for_size(size))
    z = {}
    for name, values in histograms.items():
        reference = reference_histogram(golden, name)
        total = sum(reference.values())
        for key in {int(k) for k in reference} | set(np.unique(values).tolist()):
            ours = int((values == key).sum())
            z[f"{name}[{key}]"] = z_two_proportions(ours, len(values), reference.get(str(key), 0), total)
    for name, values in fractions.items():
        total = golden["num_levels"] if name.startswith("levels_") else None
        if total is None:  # a share of entities: upstream's count is the matching histogram total
            total = {"fixated_fraction_of_dynamic_polygons": sum(golden["roles"]["dynamic_polygon_roles"].values()),
                     "fixated_fraction_of_circles": sum(golden["roles"]["circle_roles"].values()),
                     "thrusters_on_circles": sum(golden["thrusters"]["thruster_bindings"].values())}.get(
                name, golden["joints"]["motor_speed_revolute"]["n"])
        k_ref = round(golden["fractions"][name] * total)
        z[name] = z_two_proportions(int(values.sum()), len(values), k_ref, total)
    for path, values in samples.items():
        summary = golden
        for part in path:
            summary = summary[part]
        if summary["n"] == 0:
            assert len(values) <= 5 * LEVELS_PER_SIZE[size] / golden["num_levels"], f"{path}: upstream has none"
            continue
        for key in ("q05", "q25", "median", "q75", "q95"):
            z[f"{'.'.join(path)}.{key}"] = quantile_z(values, summary, key)
    bad = {k: round(v, 2) for k, v in z.items() if abs(v) > Z_LIMIT}
    assert not bad, f"{size}: statistics off by more than {Z_LIMIT} standard errors: {bad}"
    assert len(z) > 100


def test_shape_sizes_stay_in_upstream_ranges(levels_by_size):
    ued = UEDParams()
    for size, levels in levels_by_size.items():
        _, _, samples = level_statistics(levels, static_params_for_size(size))
        cap = ued.max_shape_size / 2 / math.sqrt(2) * ued.large_rect_dim_scale
        for key in ("polygon_half_width_local", "polygon_half_height_local"):
            values = samples[("shapes", key)]
            assert values.min() >= 0.05 - 1e-6 and values.max() <= cap + 1e-6
        radius = samples[("shapes", "circle_radius")]
        assert radius.min() >= 0.1 - 1e-6 and radius.max() <= ued.max_shape_size / 2 * ued.circle_max_size_coeff + 1e-6


# --- seeding ------------------------------------------------------------------------------------


def test_same_seed_same_levels_different_seed_different():
    static = static_params_for_size("m")
    first, again, other = generate(64, static, 5), generate(64, static, 5), generate(64, static, 6)
    assert (first == again).all()
    assert not (first["polygon", "position"] == other["polygon", "position"]).all()
    sampler, twin = RandomLevelSampler(static, seed=9), RandomLevelSampler(static, seed=9)
    with one_thread():
        assert (sampler(16) == twin(16)).all() and not (sampler(16) == twin(32)[:16]).all()


def test_level_sampler_gives_reset_batches():
    static = static_params_for_size("s")
    sampler = RandomLevelSampler("s", env_params=RANDOM_ENV, device="cpu", seed=0)
    levels = sampler(10)
    assert levels.batch_size == torch.Size([10]) and levels.device == torch.device("cpu")
    assert set(schema.tensordict_to_flat_tensors(levels)) == set(schema.FIELD_BY_KEY)
    assert (levels["timestep"] == 0).all() and (levels["last_distance"] == -1).all()
    assert failing(level_problems(levels, static)) == {}


# --- the no-op filter ---------------------------------------------------------------------------

FILTER_CANDIDATES = 128


@pytest.fixture(scope="module")
def filter_candidates():
    static = static_params_for_size("s")
    levels = generate(FILTER_CANDIDATES, static, seed=11)
    with one_thread():
        solved = noop_solved(levels, static, RANDOM_ENV)
    return static, levels, solved


def test_noop_solved_share_matches_upstream(filter_candidates, golden_dir):
    golden = json.loads((golden_dir / "random" / "stats_s.json").read_text())["noop_rollout"]
    _, _, solved = filter_candidates
    z = z_two_proportions(int(solved.sum()), FILTER_CANDIDATES, round(golden["solved_fraction"] * 2000), 2000)
    assert abs(z) < Z_LIMIT, (solved.float().mean().item(), golden["solved_fraction"])
    assert solved.any(), "no candidate is solved by no-op: the filter test below would be vacuous"


def test_filter_prefers_unsolved_levels(filter_candidates):
    static, levels, solved = filter_candidates
    n = FILTER_CANDIDATES // 2
    with one_thread():
        chosen, chosen_solved = filter_levels(levels, n, static, RANDOM_ENV, torch.Generator().manual_seed(0))
    assert chosen.batch_size == torch.Size([n])
    assert int((~solved).sum()) >= n and not chosen_solved.any()
    # every chosen level is a distinct candidate
    positions = levels["polygon", "position"].reshape(FILTER_CANDIDATES, -1)
    matches = (chosen["polygon", "position"].reshape(n, 1, -1) == positions[None]).all(-1)
    assert (matches.sum(1) == 1).all() and (matches.sum(0) <= 1).all()
    assert torch.equal(solved[matches.float().argmax(1)], chosen_solved)


@one_thread()
def test_draw_indices_weights_and_no_replacement():
    generator = torch.Generator().manual_seed(0)
    solved = torch.arange(1000) % 2 == 0
    drawn = draw_indices(solved, 400, generator)
    assert drawn.unique().numel() == 400
    # Weight 1/1000: draw k picks a solved index with chance ~0.5 / (500.5 - k), ~0.80 per 400 draws;
    # the mean of 200 repetitions has a standard error of ~0.06.
    picked = torch.stack([solved[draw_indices(solved, 400, generator)].sum() for _ in range(200)]).float()
    assert 0.55 < picked.mean().item() < 1.05
    uniform = torch.stack([solved[draw_indices(solved, 400, generator, solved_weight=1.0)].sum() for _ in range(50)])
    # hypergeometric mean 200, sd ~7.7; the mean of 50 draws has sd ~1.1
    assert abs(uniform.float().mean().item() - 200) < 5
    everything = draw_indices(solved, 1000, generator)
    assert everything.sort().values.equal(torch.arange(1000))
    with pytest.raises(ValueError, match="n must be in"):
        draw_indices(solved, 1001, generator)


# --- the env ------------------------------------------------------------------------------------


def test_env_resets_from_the_random_level_sampler():
    from kinetix_torch.env import KinetixEnv  # imported here: the env module is another issue's

    static = static_params_for_size("s")
    sampler = RandomLevelSampler(static, env_params=RANDOM_ENV, seed=4)
    env = KinetixEnv(sampler=sampler, num_envs=3, static_env_params=static, env_params=RANDOM_ENV)
    with one_thread():
        env.reset()
        twin = RandomLevelSampler(static, env_params=RANDOM_ENV, seed=4)(3)
        assert torch.equal(env.state["polygon", "position"], twin["polygon", "position"])
        rollout = env.rollout(3, break_when_any_done=False)
    assert rollout.batch_size == torch.Size([3, 3])
    assert torch.isfinite(rollout["next", "reward"]).all()


def test_contact_counts_match_the_reference_engine(levels_by_size):
    """Proposals are ranked by contact points; count them as the engine's manifolds do."""
    static = static_params_for_size("m")
    levels = levels_by_size["m"][:64]
    with one_thread():
        stepped, _ = engine.physics_step(levels, torch.zeros(64, static.action_dim), RANDOM_ENV, static)
    pairs = pair_tables(static)
    points = {"rr": stepped["acc_rr_manifolds", "active"].sum(-1), "cr": stepped["acc_cr_manifolds", "active"],
              "cc": stepped["acc_cc_manifolds", "active"]}
    flat = to_flat(levels)
    checked = 0
    for shape in range(static.num_static_fixated_polys, static.num_shapes):
        expected = sum(
            (points[kind].int() * torch.as_tensor((table == shape).any(1))).sum(1) for kind, table in pairs.items()
        )
        index = torch.full((64,), shape)
        ours = contacts_of_shape(flat, index, static)
        assert torch.equal(ours, expected), f"shape {shape}: {ours.tolist()} vs engine {expected.tolist()}"
        checked += int(expected.sum())
    assert checked > 20, "too few contacts for a meaningful comparison"
