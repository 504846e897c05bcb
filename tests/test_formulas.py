"""One source per formula: the array-generic helpers of :mod:`kinetix_torch.formulas` and the
reference engine's collision module, checked against upstream's golden data, closed forms and an
independent numpy re-derivation of Jax2D's operation order on two ill-conditioned contact classes
(a near-tie of reference faces, a circle centre inside a small box)."""

from __future__ import annotations

import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from kinetix_torch import formulas, rewards, schema
from kinetix_torch.generate.batch import empty_levels
from kinetix_torch.params import static_params_for_size
from kinetix_torch.reference_jax import collision, scene
from kinetix_torch.reference_jax import engine as reference
from kinetix_torch.topology import pair_tables

F32 = np.float32
NAMESPACES = {
    "numpy": (lambda x: x, np.asarray, lambda f: f),
    "torch": (torch.from_numpy, lambda t: t.numpy(), lambda f: f),
    "jax": (jnp.asarray, np.asarray, jax.jit),
}
"""Per array module: numpy -> array, array -> numpy, and how a formula is called (JAX under jit)."""


def golden_init_states(golden_dir):
    paths = sorted(golden_dir.glob("random/*/seed_*.init.npz")) + sorted(golden_dir.glob("handmade/*/*.init.npz"))
    assert len(paths) > 100, f"too few golden levels under {golden_dir}"
    return [dict(np.load(path)) for path in paths]


def fields(state: dict, kind: str) -> dict:
    return {key[len(kind) + 1 :]: value for key, value in state.items() if key.startswith(f"{kind}.")}


# --- mass and inertia -----------------------------------------------------------------------------


@pytest.mark.parametrize("module", NAMESPACES)
def test_recalculated_mass_and_inertia_reproduce_upstream_levels(golden_dir, module):
    """Every golden level's inverse masses and inertias (from upstream's generator and levels)
    follow from its geometry and densities, in numpy, torch and JAX alike."""
    to_array, to_numpy, call = NAMESPACES[module]
    for state in golden_init_states(golden_dir):
        for kind, recalculate in (("polygon", formulas.recalculate_polygons), ("circle", formulas.recalculate_circles)):
            body = {name: to_array(value) for name, value in fields(state, kind).items()}
            updates = call(recalculate)(body, to_array(state[f"{kind}_densities"]))
            for name, value in updates.items():
                got, want = to_numpy(value), state[f"{kind}.{name}"]
                assert got.dtype == want.dtype, (module, kind, name, got.dtype)
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=0, err_msg=f"{module}: {kind}.{name}")


def test_mass_of_known_shapes():
    """Closed forms: a box's mass w h and inertia m (w^2 + h^2) / 12; a triangle's area (its unused
    fourth slot ignored) and vertex mean; a disc's pi r^2 and, as upstream, pi r^4 / 4 (half a
    disc's polar moment)."""
    w, h, density = 2.0, 0.5, 3.0
    box = np.array([[(-w / 2, h / 2), (w / 2, h / 2), (w / 2, -h / 2), (-w / 2, -h / 2)]], F32)
    inverse_mass, centre = formulas.polygon_inverse_mass(box, np.array([4]), F32(density))
    mass = w * h * density
    np.testing.assert_allclose(inverse_mass, [1 / mass], rtol=1e-6)
    np.testing.assert_allclose(centre, [[0.0, 0.0]], atol=1e-7)
    inertia = mass * (w * w + h * h) / 12
    np.testing.assert_allclose(formulas.polygon_inverse_inertia(box, np.array([4]), F32(density)), [1 / inertia], rtol=1e-6)

    triangle = np.array([[(0.0, 1.0), (1.0, 0.0), (0.0, 0.0), (7.0, 7.0)]], F32)  # slot 3 is junk
    inverse_mass, centre = formulas.polygon_inverse_mass(triangle, np.array([3]), F32(1.0))
    np.testing.assert_allclose(inverse_mass, [2.0], rtol=1e-6)
    np.testing.assert_allclose(centre, [[1 / 3, 1 / 3]], rtol=1e-6)

    radius = np.array([0.5], F32)
    np.testing.assert_allclose(formulas.circle_inverse_mass(radius, F32(2.0)), [1 / (math.pi * 0.25 * 2)], rtol=1e-6)
    np.testing.assert_allclose(formulas.circle_inverse_inertia(radius, F32(2.0)),
                               [1 / (math.pi * 0.5**4 / 4 * 2)], rtol=1e-6)


def test_mass_is_one_formula_for_every_caller():
    """The scene builder (JAX), the generator's and validator's torch path, and numpy give the same
    recentred polygon: one formula, whatever the array module."""
    static = static_params_for_size("m")
    vertices = np.array([(0.1, 0.9), (1.3, 0.7), (1.1, -0.2), (-0.2, 0.1)], F32)
    state, index = scene.add_polygon(scene.empty_scene(static), static, (2.0, 2.0), vertices, density=1.7)
    added = schema.flatten(jax.tree.map(np.asarray, state))
    flat = {key: torch.from_numpy(np.array(value))[None] for key, value in added.items()}
    flat["polygon.position"][0, int(index)] = torch.tensor([2.0, 2.0])
    flat["polygon.vertices"][0, int(index)] = torch.from_numpy(vertices)
    from kinetix_torch.bodies import recalculate_mass_and_inertia

    recalculate_mass_and_inertia(flat)
    for name in ("position", "vertices", "inverse_mass", "inverse_inertia"):
        np.testing.assert_allclose(flat[f"polygon.{name}"][0].numpy(), added[f"polygon.{name}"], rtol=1e-6, atol=1e-7,
                                   err_msg=name)


# --- contact info ---------------------------------------------------------------------------------


def direct_contact_info(live_roles, positions, active, tables):
    """Upstream's compute_reward_info written out pair by pair, in float64."""
    blue = red = False
    distance = 0.0
    for kind, pairs in tables.items():
        for k, (a, b) in enumerate(pairs):
            product = live_roles[a] * live_roles[b]
            blue |= bool(active[kind][k]) and product == 2
            red |= bool(active[kind][k]) and product == 3
            if product == 2:
                distance += float(np.linalg.norm(positions[a].astype(np.float64) - positions[b]))
    return blue, red, distance


@pytest.mark.parametrize("module", NAMESPACES)
def test_contact_info_matches_a_direct_sum(module):
    to_array, to_numpy, _ = NAMESPACES[module]
    static = static_params_for_size("l")
    tables = pair_tables(static)
    rng = np.random.default_rng(0)
    for _ in range(20):
        live_roles = rng.choice(4, static.num_shapes, p=[0.6, 0.15, 0.15, 0.1]).astype(np.int32)
        positions = rng.uniform(0, 5, (static.num_shapes, 2)).astype(F32)
        active = {kind: rng.random(len(pairs)) < 0.3 for kind, pairs in tables.items()}
        got = formulas.contact_info(to_array(live_roles), to_array(positions), {k: to_array(v) for k, v in active.items()},
                                    tables if module != "torch" else {k: torch.from_numpy(v) for k, v in tables.items()})
        blue, red, distance = direct_contact_info(live_roles, positions, active, tables)
        assert bool(to_numpy(got[0])) == blue and bool(to_numpy(got[1])) == red
        np.testing.assert_allclose(float(to_numpy(got[2])), distance, rtol=1e-6)
    positions[np.flatnonzero(live_roles == 1)[:1]] = np.nan
    if (live_roles == 1).any() and (live_roles == 2).any():
        assert np.isnan(to_numpy(formulas.contact_info(to_array(live_roles), to_array(positions), None,
                                                       tables if module != "torch" else
                                                       {k: torch.from_numpy(v) for k, v in tables.items()})[2]))


def test_env_distance_is_the_reference_engines(golden_dir):
    """The env's first distance (torch) and the reference engine's per-substep distance (JAX) are
    one definition: equal on every golden level."""
    for state in golden_init_states(golden_dir)[::4]:
        static = static_params_for_size({5: "s", 6: "m", 12: "l"}[state["polygon.active"].shape[0]])
        td = schema.to_tensordict(state | {k: v for k, v in schema.allocate(static).items() if k not in state}, ())
        torch_distance = rewards.green_blue_distance(td.unsqueeze(0), static)
        nested = schema.nest({k: jnp.asarray(v) for k, v in state.items()})
        no_contacts = {kind: {"active": jnp.zeros(len(pairs), bool)} for kind, pairs in pair_tables(static).items()
                       if len(pairs)}
        jax_distance = reference.contact_info(nested, no_contacts, static)["distance"]
        np.testing.assert_allclose(torch_distance.numpy(), [float(jax_distance)], rtol=1e-6)


# --- the empty scene ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["s", "m", "l"])
def test_generator_empty_scene_is_the_reference_scene(size):
    static = static_params_for_size(size)
    ours = empty_levels(2, static, "cpu")
    reference_scene = schema.flatten(jax.tree.map(np.asarray, scene.empty_scene(static)))
    for key, value in ours.items():
        assert value.dtype == getattr(torch, str(reference_scene[key].dtype)), key
        np.testing.assert_array_equal(value[1].numpy(), reference_scene[key], err_msg=key)
    assert set(reference_scene) - set(ours) == {k for k in reference_scene if k.startswith("acc_")}


def test_generator_runs_without_jax():
    code = (
        "import sys, torch\n"
        "from kinetix_torch.generate import sample_levels\n"
        "sample_levels(3, 's', generator=torch.Generator().manual_seed(0))\n"
        "assert not [m for m in sys.modules if m == 'jax' or m.startswith('jax.')], 'the generator imported JAX'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600)


# --- collision: one module for JAX (reference engine) and torch (level generator) -----------------


def body(position, rotation, vertices=None, n_vertices=4, radius=0.0, velocity=(0.0, 0.0)) -> dict:
    return {
        "position": np.array(position, F32),
        "rotation": F32(rotation),
        "velocity": np.array(velocity, F32),
        "angular_velocity": F32(0.0),
        "inverse_mass": F32(1.0),
        "inverse_inertia": F32(1.0),
        "friction": F32(1.0),
        "restitution": F32(0.0),
        "collision_mode": np.int32(1),
        "active": np.bool_(True),
        "n_vertices": np.int32(n_vertices),
        "vertices": np.zeros((4, 2), F32) if vertices is None else np.asarray(vertices, F32),
        "radius": F32(radius),
    }


def box(half_width, half_height=None) -> np.ndarray:
    """Upstream's box: clockwise from the top-left corner."""
    h = half_width if half_height is None else half_height
    return np.array([(-half_width, h), (half_width, h), (half_width, -h), (-half_width, -h)], F32)


def stack(bodies: list[dict]) -> dict:
    return {key: np.stack([b[key] for b in bodies]) for key in bodies[0]}


def no_manifold(points: int | None = None) -> dict:
    lead = () if points is None else (points,)
    return {
        "normal": np.zeros(lead + (2,), F32), "penetration": np.zeros(lead, F32),
        "collision_point": np.zeros(lead + (2,), F32), "active": np.zeros(lead, bool),
        "acc_impulse_normal": np.zeros(lead, F32), "acc_impulse_tangent": np.zeros(lead, F32),
        "restitution_velocity_target": np.zeros(lead, F32),
    }


def random_pairs(n: int, seed: int):
    rng = np.random.default_rng(seed)
    polygons, others, circles = [], [], []
    for _ in range(n):
        first = body(rng.uniform(1, 4, 2), rng.uniform(-3, 3), box(*rng.uniform(0.1, 1, 2)), rng.choice([3, 4]))
        offset = rng.normal(size=2)
        second = body(first["position"] + offset / np.linalg.norm(offset) * rng.uniform(0.2, 1.6),
                      rng.uniform(-3, 3), box(*rng.uniform(0.1, 1, 2)), rng.choice([3, 4]))
        polygons.append(first)
        others.append(second)
        circles.append(body(first["position"] + rng.normal(size=2) * 0.6, 0.0, radius=rng.uniform(0.05, 0.5)))
    return stack(polygons), stack(others), stack(circles)


def test_torch_and_jax_run_the_same_contact_geometry():
    """The generator (torch, batched) and the reference engine (JAX, vmapped) call the same
    functions: same contacts, same geometry up to float32 rounding."""
    polygons, others, circles = random_pairs(2000, seed=1)
    as_torch = lambda d: {k: torch.from_numpy(v) for k, v in d.items()}  # noqa: E731
    for name, generate, first, second in (
        ("polygon-polygon", collision.polygon_polygon_contact, polygons, others),
        ("circle-polygon", collision.circle_polygon_contact, circles, polygons),
        ("circle-circle", collision.circle_circle_contact, circles, stack([body(p, 0, radius=0.3) for p in others["position"]])),
    ):
        ours = {k: v.numpy() for k, v in generate(as_torch(first), as_torch(second)).items()}
        theirs = {k: np.asarray(v) for k, v in jax.jit(jax.vmap(generate))(first, second).items()}
        same = (ours["active"] == theirs["active"]).reshape(len(ours["active"]), -1).all(1)
        assert same.mean() > 0.999, name
        live = theirs["active"] & same.reshape((-1,) + (1,) * (theirs["active"].ndim - 1))
        assert live.sum() > 200, name
        for key in ("normal", "penetration", "point"):
            np.testing.assert_allclose(ours[key][live], theirs[key][live], atol=2e-3, err_msg=f"{name}: {key}")


# --- the two ill-conditioned classes, against a numpy re-derivation of Jax2D's order ---------------

TURN_LEFT = np.array([[np.cos(F32(math.pi / 2)), -np.sin(F32(math.pi / 2))],
                      [np.sin(F32(math.pi / 2)), np.cos(F32(math.pi / 2))]], F32)


def rotation(angle) -> np.ndarray:
    c, s = np.cos(F32(angle)), np.sin(F32(angle))
    return np.array([[c, -s], [s, c]], F32)


def upstream_axes(a: dict, b: dict):
    """Jax2D's find_axis_of_least_penetration, re-derived in float32 numpy: a's edge normals are
    the edges turned by the float32 rotation of pi/2 (cos = -4.4e-8, not 0), b is taken into a's
    frame, and the best axis is the first with the largest separation."""
    vertices = a["vertices"][: a["n_vertices"]]
    edges = np.roll(vertices, -1, axis=0) - vertices
    normals = (edges @ TURN_LEFT.T) / np.sqrt((edges * edges).sum(-1))[:, None]
    b_world = b["vertices"][: b["n_vertices"]] @ rotation(b["rotation"]).T + b["position"]
    b_in_a = (b_world - a["position"]) @ rotation(a["rotation"])
    separations = (b_in_a @ normals.T).min(0) - (vertices @ normals.T).max(0)
    best = int(np.argmax(separations))  # the first of equal maxima
    return separations, best, normals[best]


def upstream_reference_normal(a: dict, b: dict):
    """``(normal, penetration, reference on b?)`` by Jax2D's rule: b's face only when it separates
    better than a's by more than the 0.01 bias; the normal points from a to b."""
    a_separations, a_best, a_normal = upstream_axes(a, b)
    b_separations, b_best, b_normal = upstream_axes(b, a)
    on_b = a_separations[a_best] + F32(collision.REFERENCE_FACE_BIAS) < b_separations[b_best]
    normal = -(rotation(b["rotation"]) @ b_normal) if on_b else rotation(a["rotation"]) @ a_normal
    return normal, -max(a_separations[a_best], b_separations[b_best]), on_b, (a_separations, b_separations)


NEAR_TIES = {
    # Two boxes overlapping corner to corner by 0.125 in x and in y: a geometric tie of a's top and
    # right faces, broken only by the float32 edge normals (the right face wins by 2 ulps).
    "corner tie": (body((2.0, 2.0), 0.0, box(0.5)), body((2.625, 2.625), 0.0, box(0.25))),
    # b's face separates better by less than the bias: a's face stays the reference.
    "within the bias": (body((2.0, 2.0), 0.0, box(0.5)), body((2.58, 2.69), 0.3, box(0.25))),
    # ... and 0.01 further along x by more than the bias: b's face is the reference, the normal
    # turns by b's 0.3 rad.
    "beyond the bias": (body((2.0, 2.0), 0.0, box(0.5)), body((2.59, 2.69), 0.3, box(0.25))),
}


def test_near_tie_cases_are_near_ties():
    """The constructed cases sit where they should: decided by ulps, or close to the bias."""
    _, _, on_b, (a_seps, b_seps) = upstream_reference_normal(*NEAR_TIES["corner tie"])
    top, right = a_seps[0], a_seps[1]
    assert not on_b and 0 < right - top < 1e-6, (top, right)
    for name, want_on_b in (("within the bias", False), ("beyond the bias", True)):
        _, _, on_b, (a_seps, b_seps) = upstream_reference_normal(*NEAR_TIES[name])
        margin = b_seps.max() - a_seps.max()
        assert on_b == want_on_b and 0.002 < margin < 0.02 and abs(margin - 0.01) > 0.001, (name, margin)


@pytest.mark.parametrize("case", NEAR_TIES)
def test_reference_face_near_tie_follows_upstream_order(case):
    a, b = NEAR_TIES[case]
    normal, penetration, _, _ = upstream_reference_normal(a, b)
    got = jax.tree.map(np.asarray, jax.jit(collision.polygon_polygon)(a, b, no_manifold(2)))
    assert got["active"][0], case
    np.testing.assert_allclose(got["normal"][0], normal, atol=1e-6, err_msg=case)
    np.testing.assert_allclose(got["penetration"][0], penetration, atol=1e-6, err_msg=case)


def inside_box_cases():
    """Circle centres inside a small box near its top edge: exactly representable with the box
    unrotated (the normal must come out exactly), and rotated (the 2.4e-4 centre-to-edge vector is
    normalised: float32 rounding of the world positions can move the normal by up to ~1e-3)."""
    gap = 2.0**-12
    exact = (body((2.03125, 2.0 + 0.0625 - gap), 0.0, radius=0.25), body((2.0, 2.0), 0.0, box(0.0625)))
    angle = 0.3
    local = np.array([0.03125, 0.0625 - gap])
    turned = (body((2.0, 2.0) + rotation(angle).astype(np.float64) @ local, 0.0, radius=0.25),
              body((2.0, 2.0), angle, box(0.0625)))
    return {"unrotated": (exact, 0.0), "rotated": (turned, angle)}


def upstream_inside_contact(circle: dict, polygon: dict, angle: float):
    """Jax2D's circle-polygon contact for a centre inside near the top edge, in float64: the
    centre clipped onto that edge is the point; the normal is the centre-to-edge vector turned to
    world, reversed for being inside, normalised and negated: minus the edge's outward normal."""
    turn = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    centre = turn.T @ (circle["position"].astype(np.float64) - polygon["position"])
    half = float(polygon["vertices"][0, 1])
    closest = np.array([centre[0], half])
    normal = turn @ (centre - closest) * -1.0
    normal = -normal / np.linalg.norm(normal)
    return normal, float(circle["radius"]), turn @ closest + polygon["position"]


@pytest.mark.parametrize("case", ["unrotated", "rotated"])
def test_circle_centre_inside_box_follows_upstream_order(case):
    (circle, polygon), angle = inside_box_cases()[case]
    normal, penetration, point = upstream_inside_contact(circle, polygon, angle)
    got = jax.tree.map(np.asarray, jax.jit(collision.circle_polygon)(circle, polygon, no_manifold()))
    assert got["active"]
    np.testing.assert_allclose(normal, -(rotation(angle) @ [0.0, 1.0]), atol=1e-12)  # the derivation itself
    # Unrotated, every step is exact; rotated, the normal is ill-conditioned (see inside_box_cases).
    normal_tolerance = 0.0 if case == "unrotated" else 1e-2
    np.testing.assert_allclose(got["normal"], normal, atol=normal_tolerance, rtol=0)
    np.testing.assert_allclose(got["penetration"], penetration, rtol=0)
    np.testing.assert_allclose(got["collision_point"], point, atol=1e-6)


def ill_conditioned_levels():
    """One level per constructed case (size M: two free polygons, three circles), flat numpy."""
    static = static_params_for_size("m")
    levels = []
    for a, b in NEAR_TIES.values():
        state = scene.empty_scene(static)
        for shape in (a, b):
            state, _ = scene.add_polygon(state, static, shape["position"], shape["vertices"], rotation=shape["rotation"])
        levels.append(state)
    for (circle, polygon), angle in inside_box_cases().values():
        state = scene.empty_scene(static)
        state, _ = scene.add_polygon(state, static, polygon["position"], polygon["vertices"], rotation=angle)
        state, _ = scene.add_circle(state, static, circle["position"], circle["radius"])
        levels.append(state)
    flat = [schema.flatten(jax.tree.map(np.asarray, level)) for level in levels]
    return static, {key: np.stack([level[key] for level in flat]) for key in flat[0]}


@pytest.mark.slow
def test_kernel_equals_the_reference_on_ill_conditioned_cases():
    """triton-interpret and the reference engine agree on the constructed near-ties (same face,
    same normal) and circle-inside cases (exactly unrotated; within the conditioning rotated)."""
    from kinetix_torch import engine
    from kinetix_torch.params import EnvParams

    static, flat = ill_conditioned_levels()
    levels = schema.to_tensordict(flat, (len(flat["timestep"]),))
    actions = torch.zeros(levels.batch_size[0], static.action_dim)
    out = {}
    for backend in ("jax", "triton-interpret"):
        state, _ = engine.physics_step(levels, actions, EnvParams(), static, backend=backend)
        out[backend] = schema.tensordict_to_numpy(state)
    rr = list(map(tuple, pair_tables(static)["rr"])).index((4, 5))
    cr = list(map(tuple, pair_tables(static)["cr"])).index((static.num_polygons, 4))
    ties, insides = range(len(NEAR_TIES)), range(len(NEAR_TIES), len(NEAR_TIES) + 2)
    for key, rows, index, atol in (
        ("acc_rr_manifolds", ties, (rr, 0), 1e-6),
        ("acc_cr_manifolds", [insides[0]], (cr,), 0.0),
        ("acc_cr_manifolds", [insides[1]], (cr,), 1e-2),
    ):
        for row in rows:
            where = (row,) + index
            assert out["jax"][f"{key}.active"][where] and out["triton-interpret"][f"{key}.active"][where]
            for name in ("normal", "penetration", "collision_point"):
                np.testing.assert_allclose(out["triton-interpret"][f"{key}.{name}"][where],
                                           out["jax"][f"{key}.{name}"][where], atol=max(atol, 1e-6) if name != "normal"
                                           else atol, rtol=0, err_msg=f"{key}.{name}, level {row}")
