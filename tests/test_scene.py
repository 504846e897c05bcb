"""Scene building for the reference engine (``reference_jax/scene.py``): the empty scene and mass
recomputation against upstream's golden levels, and a scene built with the ``add_*`` functions."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kinetix_torch.params import EnvParams, static_params_for_size
from kinetix_torch.reference_jax import engine, scene
from kinetix_torch.schema import flatten, to_jax, validate

STATIC = static_params_for_size("s")  # P=5 (one free polygon slot), C=2, J=1, T=1
P = STATIC.num_polygons
step = jax.jit(engine.step, static_argnames=("static",))


def as_numpy(state) -> dict:
    return {k: np.asarray(v) for k, v in flatten(state).items()}


def random_inits(golden_dir):
    files = sorted(golden_dir.glob("random/*/seed_*.init.npz"))
    assert files, f"no random levels under {golden_dir}"
    return [(f, static_params_for_size(f.parent.name)) for f in files]


def test_empty_scene_matches_golden_scene_pieces(golden_dir):
    # Random levels keep polygons 0-3 of the empty env except for the floor's role. (Handmade
    # levels also differ: their ceiling's first vertex has x 2.5, one has friction 0.4.)
    fields = [k for k in as_numpy(scene.empty_scene(STATIC)) if k.startswith("polygon")]
    fields.remove("polygon_shape_roles")
    for path, static in random_inits(golden_dir):
        empty, golden = as_numpy(scene.empty_scene(static)), np.load(path)
        for key in fields:
            np.testing.assert_array_equal(empty[key][:4], golden[key][:4], err_msg=f"{path.name}: {key}")
        for key in ("gravity", "last_distance", "timestep"):
            np.testing.assert_array_equal(empty[key], golden[key], err_msg=f"{path.name}: {key}")


def test_empty_scene_fields():
    state = as_numpy(scene.empty_scene(STATIC))
    validate(state, STATIC)
    assert state["polygon.active"].tolist() == [True] * 4 + [False] * (P - 4)
    assert state["polygon.collision_mode"].tolist() == [2] * 4 + [1] * (P - 4)
    assert not state["circle.active"].any() and (state["circle.collision_mode"] == 1).all()
    assert (state["polygon.inverse_mass"] == 0).all() and (state["circle.inverse_inertia"] == 0).all()
    assert (state["joint.global_position"] == 256).all()
    np.testing.assert_array_equal(state["collision_matrix"], ~np.eye(STATIC.num_shapes, dtype=bool))


def test_recompute_mass_and_inertia_keeps_golden_random_levels(golden_dir):
    keys = ["inverse_mass", "inverse_inertia", "position", "vertices"]
    for path, static in random_inits(golden_dir):
        golden = dict(np.load(path))
        out = as_numpy(scene.recompute_mass_and_inertia(to_jax(golden), static))
        for key in [f"polygon.{k}" for k in keys] + [f"circle.{k}" for k in keys]:
            np.testing.assert_allclose(out[key], golden[key], rtol=1e-5, atol=1e-6, err_msg=f"{path.name}: {key}")


def test_mass_properties_of_added_shapes():
    state = scene.empty_scene(STATIC)
    # An off-centre 1 x 0.5 box, density 2: re-centred, closed-form mass and inertia.
    box = jnp.array([[0.0, 0.5], [1.0, 0.5], [1.0, 0.0], [0.0, 0.0]])
    with_box, index = scene.add_polygon(state, STATIC, jnp.array([1.0, 1.0]), box, density=2.0)
    poly = as_numpy(with_box)
    assert int(index) == 4
    np.testing.assert_allclose(poly["polygon.position"][4], [1.5, 1.25])
    np.testing.assert_allclose(poly["polygon.vertices"][4], box - np.array([0.5, 0.25]))
    mass = 2.0 * 0.5
    np.testing.assert_allclose(poly["polygon.inverse_mass"][4], 1 / mass, rtol=1e-6)
    np.testing.assert_allclose(poly["polygon.inverse_inertia"][4], 12 / (mass * (1 + 0.25)), rtol=1e-6)

    # A triangle: edge i runs to slot (i + 1) % 4, so the closing edge meets the spare 4th slot.
    tri = np.array([[-0.3, 0.2], [0.4, 0.1], [-0.1, -0.3]], np.float32)
    with_tri = as_numpy(scene.add_polygon(state, STATIC, jnp.array([2.0, 2.0]), tri)[0])
    slots = np.concatenate([tri, np.zeros((1, 2), np.float32)]) - tri.mean(0)
    moment = 0.0
    for i in range(3):
        (x0, y0), (x1, y1) = slots[i], slots[i + 1]
        moment += abs((x1 * y0 - y1 * x0) / 12 * (x1 * x1 + x0 * x1 + x0 * x0 + y1 * y1 + y0 * y1 + y0 * y0))
    np.testing.assert_allclose(with_tri["polygon.inverse_inertia"][4], 1 / moment, rtol=1e-5)
    e1, e2 = tri[1] - tri[0], tri[2] - tri[0]
    np.testing.assert_allclose(with_tri["polygon.inverse_mass"][4], 2 / abs(e1[0] * e2[1] - e1[1] * e2[0]), rtol=1e-5)

    circle, c_index = scene.add_circle(state, STATIC, jnp.array([2.0, 2.0]), 0.5, density=3.0)
    circle = as_numpy(circle)
    assert int(c_index) == P
    np.testing.assert_allclose(circle["circle.inverse_mass"][0], 1 / (0.25 * math.pi * 3), rtol=1e-6)
    np.testing.assert_allclose(circle["circle.inverse_inertia"][0], 4 / (math.pi * 0.5**4 * 3), rtol=1e-6)
    assert circle["circle_densities"][0] == 3.0

    fixed = as_numpy(scene.add_circle(state, STATIC, jnp.array([2.0, 2.0]), 0.5, fixated=True)[0])
    assert fixed["circle.inverse_mass"][0] == 0 and fixed["circle.inverse_inertia"][0] == 0


def build_car():
    """A 1 x 0.3 box whose left end rides on a motorised wheel, a thruster on the box, a ball."""
    state = scene.empty_scene(STATIC)
    box = jnp.array([[-0.5, 0.15], [0.5, 0.15], [0.5, -0.15], [-0.5, -0.15]])
    state, box_index = scene.add_polygon(state, STATIC, jnp.array([2.5, 0.8]), box, role=1)
    state, wheel_index = scene.add_circle(state, STATIC, jnp.array([2.0, 0.8]), 0.3)
    state, ball_index = scene.add_circle(state, STATIC, jnp.array([4.0, 1.0]), 0.2, role=2)
    state, joint_index = scene.add_revolute_joint(
        state, STATIC, box_index, wheel_index, jnp.array([-0.5, 0.0]), jnp.zeros(2), motor_on=True
    )
    state, thruster_index = scene.add_thruster(state, STATIC, box_index, jnp.array([0.5, 0.0]), -math.pi / 2)
    indices = [int(i) for i in (box_index, wheel_index, ball_index, joint_index, thruster_index)]
    assert indices == [4, P, P + 1, 0, 0]
    return state


def test_built_scene_steps_and_settles():
    state = build_car()
    validate(as_numpy(state), STATIC)
    assert not state["collision_matrix"][4, P] and not state["collision_matrix"][P, 4]
    assert state["collision_matrix"][4, P + 1]
    np.testing.assert_allclose(state["joint"]["global_position"][0], [2.0, 0.8])
    np.testing.assert_allclose(state["thruster"]["global_position"][0], [3.0, 0.8])

    params = engine.param_values(EnvParams())
    actions = jnp.array([0.5, 1.0])  # motor at half speed, thruster pushing down
    for _ in range(60):
        state, _ = step(state, actions, params, STATIC)
    out = as_numpy(state)
    assert all(np.isfinite(v).all() for v in out.values() if v.dtype.kind == "f")

    angle = out["polygon.rotation"][4]
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    world = out["polygon.position"][4] + out["polygon.vertices"][4] @ rot.T
    assert world[:, 1].min() >= 0.4 - 0.02
    anchor_a = out["polygon.position"][4] + rot @ out["joint.a_relative_pos"][0]
    anchor_b = out["circle.position"][0]  # the wheel's anchor is its centre
    assert np.linalg.norm(anchor_a - anchor_b) < 1e-2
    assert not out["collision_matrix"][4, P]


def test_fixed_joint_keeps_current_relative_rotation():
    state = scene.empty_scene(STATIC)
    box = jnp.array([[-0.2, 0.2], [0.2, 0.2], [0.2, -0.2], [-0.2, -0.2]])
    state, a = scene.add_polygon(state, STATIC, jnp.array([1.0, 2.0]), box, rotation=0.3)
    state, b = scene.add_circle(state, STATIC, jnp.array([1.5, 2.0]), 0.2, rotation=-0.2)
    state, j = scene.add_fixed_joint(state, STATIC, a, b, jnp.array([0.3, 0.0]), jnp.array([-0.2, 0.0]))
    joint = as_numpy(state)
    assert int(j) == 0 and joint["joint.is_fixed_joint"][0] and joint["joint.active"][0]
    np.testing.assert_allclose(joint["joint.rotation"][0], -0.5, rtol=1e-6)
    np.testing.assert_allclose(joint["joint.global_position"][0], [1 + 0.3 * math.cos(0.3), 2 + 0.3 * math.sin(0.3)])


@pytest.mark.parametrize(
    "add",
    [
        lambda s: scene.add_polygon(s, STATIC, jnp.array([1.0, 1.0]), jnp.ones((3, 2)) * jnp.arange(3)[:, None]),
        lambda s: scene.add_circle(s, STATIC, jnp.array([1.0, 1.0]), 0.1),
        lambda s: scene.add_revolute_joint(s, STATIC, 4, P + 1, jnp.zeros(2), jnp.zeros(2)),
        lambda s: scene.add_fixed_joint(s, STATIC, 4, P + 1, jnp.zeros(2), jnp.zeros(2)),
        lambda s: scene.add_thruster(s, STATIC, P, jnp.zeros(2), 0.0),
    ],
    ids=["polygon", "circle", "revolute", "fixed", "thruster"],
)
def test_adding_to_a_full_scene_changes_nothing(add):
    full = build_car()
    state, index = add(full)
    assert int(index) == -1
    jax.tree.map(np.testing.assert_array_equal, state, full)
