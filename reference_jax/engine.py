"""The reference physics step: Jax2D's engine step, float32, one environment, jit- and vmap-able.

Stages of :func:`step`, in order:

1. gravity on every body with finite mass;
2. contact manifolds for every pair (from the post-gravity velocities);
3. motor torques (all joints from the same state), then thruster impulses;
4. warm starting: contact sets polygon-polygon, circle-polygon, circle-circle, then joints;
5. ``num_solver_iterations`` x (joints one by one, then the contact sets batch by batch:
   polygon-polygon point 0, point 1, circle-polygon, circle-circle);
6. explicit Euler on positions and rotations, then clipping;
7. cached world positions of thrusters.

:func:`env_step` chains ``frame_skip`` of these substeps, as one environment step does, and
reports after each substep what the reward needs (:func:`contact_info`).

The state is the nested dict of :mod:`kinetix_torch.schema` (``state["polygon"]["position"]``...);
fields that are not physics pass through untouched. Dynamic parameters come as a dict of float32
scalars (:func:`param_values`), so new values never recompile; :class:`StaticEnvParams` is a
static argument that hashes by value.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from kinetix_torch import formulas
from kinetix_torch.params import PHYSICS_PARAM_NAMES, EnvParams, StaticEnvParams
from kinetix_torch.schema import MANIFOLD_PREFIXES
from kinetix_torch.topology import MANIFOLD_KINDS, pair_tables

from . import collision, contacts, joints
from .bodies import add_pair_velocity, add_velocity, gather_bodies, split_bodies, take
from .math2d import rotate

def param_values(params: EnvParams | dict) -> dict:
    """The physics parameters as float32 scalars: traced data under jit, never static."""
    values = params.physics_values() if isinstance(params, EnvParams) else params
    return {name: jnp.asarray(values[name], jnp.float32) for name in PHYSICS_PARAM_NAMES}


def _generate_manifolds(bodies, state, pairs):
    generators = {"rr": collision.polygon_polygon, "cr": collision.circle_polygon, "cc": collision.circle_circle}
    out = {}
    for kind, generate in generators.items():
        index = pairs[kind]
        if len(index):
            a, b = take(bodies, index[:, 0]), take(bodies, index[:, 1])
            out[kind] = jax.vmap(generate)(a, b, state[MANIFOLD_PREFIXES[kind]])
    return out


def _apply_motors(bodies, joint, motor_actions, p):
    a, b = take(bodies, joint["a_index"]), take(bodies, joint["b_index"])
    dw_a, dw_b = jax.vmap(joints.motor, (0, 0, 0, 0, None))(a, b, joint, motor_actions, p)
    angular = bodies["angular_velocity"].at[joint["a_index"]].add(dw_a).at[joint["b_index"]].add(dw_b)
    return {**bodies, "angular_velocity": angular}


def _apply_thrusters(bodies, thruster, thruster_actions, p):
    parent = take(bodies, thruster["object_index"])
    dv, dw = jax.vmap(joints.thruster, (0, 0, 0, None))(parent, thruster, thruster_actions, p)
    return add_velocity(bodies, thruster["object_index"], dv, dw)


def _warm_start(bodies, joint, manifolds, pairs, may_touch):
    for kind in MANIFOLD_KINDS:
        if kind in manifolds:
            bodies = contacts.warm_start_set(bodies, manifolds[kind], pairs[kind], may_touch[kind])
    a, b = take(bodies, joint["a_index"]), take(bodies, joint["b_index"])
    deltas = jax.vmap(joints.warm_start)(a, b, joint)
    return add_pair_velocity(bodies, joint["a_index"], joint["b_index"], deltas)


def _solve_joints(bodies, joint, p):
    """Visit the joints one after the other (Gauss-Seidel), updating positions too."""

    def one_joint(carry, j):
        bodies, joint = carry
        this = take(joint, j)
        ia, ib = this["a_index"], this["b_index"]
        out = joints.solve(take(bodies, ia), take(bodies, ib), this, p)
        bodies = add_pair_velocity(bodies, ia, ib, (out["dv_a"], out["dv_b"], out["dw_a"], out["dw_b"]))
        bodies = {**bodies, "position": bodies["position"].at[ia].add(out["dp_a"]).at[ib].add(out["dp_b"])}
        joint = {**joint, **{k: joint[k].at[j].set(out[k]) for k in ("global_position", "acc_impulse", "acc_r_impulse")}}
        return (bodies, joint), None

    num_joints = joint["a_index"].shape[0]
    (bodies, joint), _ = jax.lax.scan(one_joint, (bodies, joint), jnp.arange(num_joints))
    return bodies, joint


def _contact_passes(manifolds):
    """The solver's contact passes in order, as (kind, point or None)."""
    passes = []
    if "rr" in manifolds:
        passes += [("rr", 0), ("rr", 1)]
    passes += [(kind, None) for kind in ("cr", "cc") if kind in manifolds]
    return passes


def _solve(bodies, joint, manifolds, pairs, may_touch, static, p):
    batches = {
        kind: contacts.solver_batches(m["active"][:, 0] if kind == "rr" else m["active"], static.solver_batch_size)
        for kind, m in manifolds.items()
    }

    def iteration(carry, _):
        bodies, joint, manifolds = carry
        if joint["a_index"].shape[0]:
            bodies, joint = _solve_joints(bodies, joint, p)
        manifolds = dict(manifolds)
        for kind, point in _contact_passes(manifolds):
            full = manifolds[kind]
            m = full if point is None else {k: v[:, point] for k, v in full.items()}
            bodies, m = contacts.solve_set(bodies, m, pairs[kind], may_touch[kind], batches[kind], p)
            if point is None:
                manifolds[kind] = m
            else:
                manifolds[kind] = {k: full[k].at[:, point].set(m[k]) for k in full}
        return (bodies, joint, manifolds), None

    (bodies, joint, manifolds), _ = jax.lax.scan(
        iteration, (bodies, joint, manifolds), None, length=static.num_solver_iterations
    )
    return bodies, joint, manifolds


def _integrate(bodies, p):
    """Explicit Euler on positions and rotations, then clipping of positions and velocities."""
    position = jnp.clip(bodies["position"] + bodies["velocity"] * p["dt"], -p["clip_position"], p["clip_position"])
    return {
        **bodies,
        "position": position,
        "rotation": bodies["rotation"] + bodies["angular_velocity"] * p["dt"],
        "velocity": jnp.clip(bodies["velocity"], -p["clip_velocity"], p["clip_velocity"]),
        "angular_velocity": jnp.clip(
            bodies["angular_velocity"], -p["clip_angular_velocity"], p["clip_angular_velocity"]
        ),
    }


def step(state: dict, actions, params, static: StaticEnvParams):
    """Advance one environment by ``dt``.

    ``actions``: ``(J + T,)`` processed actions, motor values in [-1, 1] for each joint then
    thruster values in [0, 1] for each thruster. ``params``: :func:`param_values` (or an
    :class:`EnvParams`). Returns ``(state, manifolds)`` where ``manifolds`` holds this step's
    contacts: ``rr`` (point 0 only, as upstream returns it), ``cr`` and ``cc``.
    """
    p = param_values(params) if isinstance(params, EnvParams) else params
    state = jax.tree.map(jnp.asarray, state)
    J = static.num_joints
    pairs = pair_tables(static)
    joint, thruster = state["joint"], state["thruster"]

    bodies = gather_bodies(state)
    movable = (bodies["inverse_mass"] != 0)[:, None]
    bodies = {**bodies, "velocity": bodies["velocity"] + state["gravity"] * p["dt"] * movable}

    manifolds = _generate_manifolds(bodies, state, pairs)
    bodies = _apply_motors(bodies, joint, actions[:J], p)
    bodies = _apply_thrusters(bodies, thruster, actions[J:], p)

    may_touch = {k: state["collision_matrix"][pairs[k][:, 0], pairs[k][:, 1]] for k in manifolds}
    if static.do_warm_starting:
        bodies = _warm_start(bodies, joint, manifolds, pairs, may_touch)
    bodies, joint, manifolds = _solve(bodies, joint, manifolds, pairs, may_touch, static, p)
    bodies = _integrate(bodies, p)

    state = split_bodies(state, bodies, static.num_polygons)
    state = {**state, "joint": joint}
    if static.do_warm_starting:
        for kind in MANIFOLD_KINDS:
            if kind in manifolds:
                state[MANIFOLD_PREFIXES[kind]] = manifolds[kind]
    parent = take(bodies, thruster["object_index"])
    state["thruster"] = {
        **thruster,
        "global_position": parent["position"] + rotate(parent["rotation"], thruster["relative_position"]),
    }
    returned = dict(manifolds)
    if "rr" in returned:
        returned["rr"] = {k: v[:, 0] for k, v in returned["rr"].items()}
    return state, returned


CONTACT_INFO_KEYS = ("polygon_shape_roles", "circle_shape_roles")
"""Env fields, besides the sim state, that :func:`contact_info` reads."""


def contact_info(state: dict, manifolds: dict, static: StaticEnvParams) -> dict:
    """After one substep: does an active contact join green and blue (``touches_blue``), green and
    red (``touches_red``); and ``distance``, the summed centre distance of all green-blue pairs.

    Contacts count whatever the collision matrix says (it gates impulses only); an inactive shape
    has no role. Polygon-polygon contacts count through their first point, as upstream's reward.
    """
    live_roles = jnp.concatenate([state[f"{kind}_shape_roles"] * state[kind]["active"] for kind in ("polygon", "circle")])
    position = jnp.concatenate([state["polygon"]["position"], state["circle"]["position"]])
    tables = {kind: pair_tables(static)[kind] for kind in manifolds}
    active = {kind: m["active"] for kind, m in manifolds.items()}
    touches_blue, touches_red, distance = formulas.contact_info(live_roles, position, active, tables)
    return {"touches_blue": touches_blue, "touches_red": touches_red, "distance": distance}


def env_step(state: dict, actions, params, static: StaticEnvParams):
    """``static.frame_skip`` substeps with the same actions. Returns ``(state, info)``, where each
    entry of ``info`` (:func:`contact_info`) has a leading axis of one row per substep."""

    def substep(state, _):
        state, manifolds = step(state, actions, params, static)
        return state, contact_info(state, manifolds, static)

    return jax.lax.scan(substep, state, None, length=static.frame_skip)


@functools.partial(jax.jit, static_argnames=("static",))
def env_step_batch(state: dict, actions, params: dict, static: StaticEnvParams):
    """:func:`env_step` over a leading batch axis; ``info`` entries come out ``(batch, frame_skip)``."""
    return jax.vmap(env_step, (0, 0, None, None))(state, actions, params, static)


@functools.partial(jax.jit, static_argnames=("static",))
def step_batch(state: dict, actions, params: dict, static: StaticEnvParams):
    """:func:`step` over a leading batch axis of ``state`` and ``actions`` (shared ``params``)."""
    return jax.vmap(step, (0, 0, None, None))(state, actions, params, static)
