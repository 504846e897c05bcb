"""ACCEL mutators on upstream's golden mutator inputs (random levels 0-7 of each size).

Upstream's random stream cannot be reproduced, so each mutator is checked on what does not depend
on it: every output is a valid level; the levels an edit changes are exactly those upstream's edit
changed (whether an edit is possible depends only on the input); only the fields the edit may touch
change, in ours and in upstream's output; and the edit's effect on entity counts and roles.
Mutated random levels also survive a JSON save and load unchanged. The generator and the mutators
write shapes, joints and thrusters through the same edit functions, and ``MUTATOR_WEIGHTS`` (or a
given name -> weight map) decides which edit a level gets.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kinetix_torch import schema
from kinetix_torch.bodies import dynamic_mask, shape_field, shape_roles, to_flat
from kinetix_torch.generate import (
    MUTATIONS,
    MUTATOR_WEIGHTS,
    load_level_json,
    mutate_levels,
    sample_levels,
    save_level_json,
)
from kinetix_torch.generate import edits, mutators
from kinetix_torch.observations import observe
from kinetix_torch.params import EnvParams, StaticEnvParams, static_params_for_size
from kinetix_torch.validation import level_problems

SIZES = ("s", "m", "l")
SHAPE_FIELDS = {f"{kind}.{name}" for kind in ("polygon", "circle") for name in (
    "position", "rotation", "inverse_mass", "inverse_inertia", "active", "n_vertices", "vertices", "radius")}
ROLES = {"polygon_shape_roles", "circle_shape_roles"}
JOINT_FIELDS = {f.key for f in schema.FIELDS if f.key.startswith("joint.")} | {"motor_bindings"}
THRUSTER_FIELDS = {f.key for f in schema.FIELDS if f.key.startswith("thruster.")} | {"thruster_bindings"}
MASS = {f"{k}.{n}" for k in ("polygon", "circle") for n in ("inverse_mass", "inverse_inertia")}
SETTLED = {"polygon.position", "circle.position", "polygon.rotation", "circle.rotation", "joint.acc_impulse",
           "joint.acc_r_impulse", "joint.global_position", "thruster.global_position"} | MASS
ALLOWED = {
    "mutate_add_shape": SHAPE_FIELDS | ROLES,
    "mutate_add_connected_shape_proper": SHAPE_FIELDS | ROLES | JOINT_FIELDS | {"collision_matrix"},
    "mutate_remove_joint": {"joint.active", "collision_matrix"},
    "mutate_remove_shape": {"polygon.active", "circle.active", "joint.active", "thruster.active", "collision_matrix"},
    "mutate_swap_role": ROLES,
    "mutate_add_thruster": THRUSTER_FIELDS,
    "mutate_remove_thruster": {"thruster.active"},
    "mutate_toggle_fixture": MASS,
    "mutate_change_shape_size": SETTLED | {"polygon.vertices", "circle.radius", "joint.a_relative_pos"}
    | {"joint.b_relative_pos"},
    "mutate_change_shape_location": {"polygon.position", "circle.position"} | MASS,
    "mutate_change_shape_rotation": SETTLED | {"joint.rotation"},
    "mutate_change_gravity": {"gravity"},
}
"""Fields each edit may change (warm-start manifolds aside: the settling steps refresh them)."""
COUNT_DELTAS = {
    "mutate_add_shape": {"shapes": 1},
    "mutate_add_connected_shape_proper": {"shapes": 1, "joints": 1},
    "mutate_remove_joint": {"joints": -1},
    "mutate_remove_shape": {"shapes": -1},
    "mutate_add_thruster": {"thrusters": 1},
    "mutate_remove_thruster": {"thrusters": -1},
}


def load_case(golden_dir, size, name):
    data = np.load(golden_dir / "mutators" / size / f"{name}.npz")
    sidecar = json.loads((golden_dir / "mutators" / size / "mutators.json").read_text())
    static = StaticEnvParams.from_dict(sidecar["static_env_params"])
    part = lambda prefix: {k[len(prefix):]: data[k] for k in data.files if k.startswith(prefix)}  # noqa: E731
    return static, part("input."), part("output.")


def changed(before: dict, after: dict) -> tuple[np.ndarray, set]:
    """Per level: any field changed; and the set of changed fields (warm-start manifolds aside)."""
    keys = [k for k in before if not k.startswith("acc_")]
    per_key = {k: ~np.all((before[k] == after[k]).reshape(len(before[k]), -1), 1) for k in keys}
    return np.any(list(per_key.values()), 0), {k for k, v in per_key.items() if v.any()}


def invalid(levels, static) -> dict:
    """Broken rule -> levels breaking it."""
    return {k: v.nonzero().flatten().tolist() for k, v in level_problems(levels, static).items() if v.any()}


def counts(flat: dict) -> dict:
    return {
        "shapes": flat["polygon.active"].sum(1) + flat["circle.active"].sum(1),
        "joints": flat["joint.active"].sum(1),
        "thrusters": flat["thruster.active"].sum(1),
    }


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_mutator_matches_upstream_structure(golden_dir, size, name):
    static, inputs, golden_out = load_case(golden_dir, size, name)
    levels = schema.to_tensordict(inputs, (8,))
    ours = schema.tensordict_to_numpy(MUTATIONS[name](levels, torch.Generator().manual_seed(7), static, EnvParams()))
    assert invalid(schema.to_tensordict(ours, (8,)), static) == {}, f"{name} ({size}) made invalid levels"

    ours_changed, ours_fields = changed(inputs, ours)
    golden_changed, golden_fields = changed(inputs, golden_out)
    assert golden_fields <= ALLOWED[name], f"upstream's {name} changed {golden_fields - ALLOWED[name]} (table wrong)"
    assert ours_fields <= ALLOWED[name], f"{name} changed {ours_fields - ALLOWED[name]}"
    np.testing.assert_array_equal(ours_changed, golden_changed, err_msg=f"{name}: levels edited differ from upstream's")

    before = counts(inputs)
    for label, delta in COUNT_DELTAS.get(name, {}).items():
        for result, edited in ((ours, ours_changed), (golden_out, golden_changed)):
            expected = before[label] + delta * edited
            np.testing.assert_array_equal(counts(result)[label], expected, err_msg=f"{name}: {label} count")
    if name == "mutate_swap_role":
        def roles(flat):
            return np.sort(np.concatenate([flat["polygon_shape_roles"], flat["circle_shape_roles"]], 1), 1)

        np.testing.assert_array_equal(roles(ours), roles(inputs))
    if name == "mutate_change_gravity":
        for result in (ours, golden_out):
            down = result["gravity"][:, 1]
            assert (result["gravity"][:, 0] == 0).all() and ((down >= -9.8) & (down <= 0)).all()


@pytest.mark.parametrize("size", SIZES)
def test_accel_edits_give_valid_levels(golden_dir, size):
    static, inputs, golden_out = load_case(golden_dir, size, "accel_n5")
    levels = schema.to_tensordict(inputs, (8,))
    for seed in range(2):
        ours = mutate_levels(levels, torch.Generator().manual_seed(seed), static, n=5)
        assert invalid(ours, static) == {}, f"accel edits ({size}) made invalid levels"
        assert changed(inputs, schema.tensordict_to_numpy(ours))[0].any()
    golden = level_problems(schema.to_tensordict(golden_out, (8,)), static)
    assert not any(v.any() for v in golden.values()), "the validator rejects upstream's own ACCEL output"


@pytest.mark.parametrize("size", ("s", "m"))
def test_mutated_levels_survive_a_json_round_trip(tmp_path, size):
    """No stale warm-start contacts: 64 mutated levels load back from JSON as the same state, with
    the same entity observation (attention mask included)."""
    static, params = static_params_for_size(size), EnvParams()
    levels = sample_levels(64, static, generator=torch.Generator().manual_seed(0))
    mutated = mutate_levels(levels, torch.Generator().manual_seed(1), static, n=5)
    for i in range(len(mutated)):
        save_level_json(tmp_path / f"{i}.json", mutated, i, static)
    loaded = torch.cat([load_level_json(tmp_path / f"{i}.json", static)[0] for i in range(len(mutated))])

    before = observe(mutated, static, params, "symbolic_entity")
    after = observe(loaded, static, params, "symbolic_entity")
    for key in before.keys(True, True):
        differ = (before[key] != after[key]).flatten(1).any(1).nonzero().flatten().tolist()
        assert differ == [], f"{size}: entity observation {key!r} changes after a save and load in levels {differ}"
    ours, back = schema.tensordict_to_numpy(mutated), schema.tensordict_to_numpy(loaded)
    changed_fields = [k for k in ours if not np.array_equal(ours[k], back[k], equal_nan=True)]
    assert changed_fields == [], f"fields changed by a save and load ({size}): {changed_fields}"


# --- one set of edits for the generator and the mutators -----------------------------------------

WRITES = ("place_shape", "attach_joint", "attach_thruster")


@pytest.fixture
def recorded_writes(monkeypatch):
    """Every ``(levels in, levels out)`` of the writes of :mod:`kinetix_torch.generate.edits`."""
    calls = {name: [] for name in WRITES}
    for name in WRITES:
        def record(flat, *args, _write=getattr(edits, name), _name=name, **kwargs):
            out = _write(flat, *args, **kwargs)
            calls[_name].append((flat, out))
            return out

        monkeypatch.setattr(edits, name, record)
    return calls


def new_shapes(before, after) -> list[set]:
    """Per level: the positions of the shapes active in ``after`` but not in ``before``."""
    new = shape_field(after, "active") & ~shape_field(before, "active")
    position = shape_field(after, "position")
    return [{tuple(p) for p in position[b][new[b]].tolist()} for b in range(new.shape[0])]


def assert_shapes_placed(levels, before, recorded):
    """Every shape of ``levels`` not in ``before`` is one that ``edits.place_shape`` added to it."""
    placed = [set().union(*rows) for rows in zip(*(new_shapes(a, b) for a, b in recorded))]
    for b, shapes in enumerate(new_shapes(before, to_flat(levels))):
        assert shapes <= placed[b], f"level {b}: shapes {shapes - placed[b]} not placed by edits.place_shape"
    return sum(map(len, new_shapes(before, to_flat(levels))))


def test_generator_and_mutators_share_the_edit_functions(recorded_writes):
    """Every shape of a generated level, and every shape a mutator adds, is one that
    ``edits.place_shape`` wrote; joints and thrusters go through ``attach_joint`` and
    ``attach_thruster`` in both."""
    static = static_params_for_size("s")  # one placement proposal per shape: one row per level
    levels = sample_levels(16, static, generator=torch.Generator().manual_seed(3))
    assert all(recorded_writes[name] for name in WRITES), {k: len(v) for k, v in recorded_writes.items()}
    scene_only = {
        **to_flat(levels),
        "polygon.active": (torch.arange(static.num_polygons) < static.num_static_fixated_polys).expand(16, -1),
        "circle.active": torch.zeros(16, static.num_circles, dtype=torch.bool),
    }
    assert assert_shapes_placed(levels, scene_only, recorded_writes["place_shape"]) >= 16 * 3

    static = static_params_for_size("m")
    levels = sample_levels(16, static, generator=torch.Generator().manual_seed(4))
    for calls in recorded_writes.values():
        calls.clear()
    adders = {"mutate_add_shape": 1.0, "mutate_add_connected_shape_proper": 1.0, "mutate_add_thruster": 1.0}
    mutated = mutate_levels(levels, torch.Generator().manual_seed(5), static, n=3, weights=adders)
    counts = {name: len(calls) for name, calls in recorded_writes.items()}
    assert counts == {"place_shape": 6, "attach_joint": 3, "attach_thruster": 3}, counts  # 3 rounds
    assert assert_shapes_placed(mutated, to_flat(levels), recorded_writes["place_shape"]) > 0


def test_edit_writes_refuse_unsound_levels():
    """A write into a taken slot, a joint to an inactive shape or to itself, or a thruster on an
    inactive shape leaves the level as it was."""
    static = static_params_for_size("s")
    flat = to_flat(sample_levels(4, static, generator=torch.Generator().manual_seed(6)))
    for key in ("circle.active", "joint.active", "thruster.active"):  # free the last slots
        flat[key] = torch.cat([flat[key][:, :-1], torch.zeros_like(flat[key][:, -1:])], 1)
    inactive = torch.full((4,), static.num_shapes - 1)
    free_joint, free_thruster = torch.full((4,), static.num_joints - 1), torch.full((4,), static.num_thrusters - 1)
    everywhere, taken = torch.ones(4, dtype=torch.bool), torch.zeros(4, dtype=torch.long)  # slot 0: the floor
    refused = {
        "shape into a taken slot": edits.place_shape(flat, taken, {"active": True, "radius": 0.3}, everywhere),
        "joint to an inactive shape": edits.attach_joint(
            flat, free_joint, {"a_index": taken, "b_index": inactive, "active": True}, 0, everywhere, static),
        "joint to itself": edits.attach_joint(
            flat, free_joint, {"a_index": taken, "b_index": taken, "active": True}, 0, everywhere, static),
        "thruster on an inactive shape": edits.attach_thruster(
            flat, free_thruster, {"object_index": inactive, "active": True}, 0, everywhere),
    }
    for what, out in refused.items():
        assert [k for k in flat if not torch.equal(out[k], flat[k])] == [], f"{what} was written"
    movable = torch.argmax(dynamic_mask(flat, static).to(torch.uint8), 1)
    accepted = edits.attach_thruster(flat, free_thruster, {"object_index": movable, "active": True}, 0, everywhere)
    assert (accepted["thruster.active"].sum(1) == flat["thruster.active"].sum(1) + 1).all()


# --- mutator weights -----------------------------------------------------------------------------


def test_default_weights_are_upstreams():
    """``make_mutate_env``: removals weight 0, fixture toggling 0.1, every other ACCEL edit 1."""
    zero, tenth = {"mutate_remove_joint", "mutate_remove_shape"}, {"mutate_toggle_fixture"}
    assert set(MUTATOR_WEIGHTS) == set(MUTATIONS) - {"mutate_change_gravity"}
    assert all(w == (0.0 if n in zero else 0.1 if n in tenth else 1.0) for n, w in MUTATOR_WEIGHTS.items())


def test_weights_drive_the_choice_of_edit(monkeypatch):
    """Weight 3 : 1 : 0 (the rest): about 3/4 of the levels lose a thruster, 1/4 swap roles, none
    gets any other edit; a level without a thruster always swaps roles, and stays as it was when
    removing a thruster is the only edit of positive weight."""
    static = static_params_for_size("s")
    pool = sample_levels(64, static, generator=torch.Generator().manual_seed(8))
    candidates = to_flat(pool)
    roles = torch.where(dynamic_mask(candidates, static), shape_roles(candidates), -1)
    two_roles = torch.stack([(roles == r).any(1) for r in range(4)], 1).sum(1) > 1
    with_thruster = candidates["thruster.active"].any(1)
    pick = int((two_roles & with_thruster).nonzero()[0])
    without = int((two_roles & ~with_thruster).nonzero()[0])
    n = 2000
    levels = pool[[pick] * n + [without]]
    weights = {name: 0.0 for name in MUTATIONS} | {"mutate_remove_thruster": 3.0, "mutate_swap_role": 1.0}
    monkeypatch.setattr(mutators, "MUTATOR_WEIGHTS", weights)
    before = schema.tensordict_to_numpy(levels)
    after = schema.tensordict_to_numpy(mutate_levels(levels, torch.Generator().manual_seed(9), static))
    row_changed = {k: ~np.all((before[k] == after[k]).reshape(n + 1, -1), 1) for k in before if not k.startswith("acc_")}
    removed = row_changed["thruster.active"]
    swapped = row_changed["polygon_shape_roles"] | row_changed["circle_shape_roles"]
    others = [k for k, v in row_changed.items() if v.any() and k not in ("thruster.active", *ROLES)]
    assert others == [], f"edits of weight 0 were chosen: {others} changed"
    assert (removed[:n] ^ swapped[:n]).all(), "each level gets exactly one edit"
    assert abs(removed[:n].mean() - 0.75) < 0.05, removed[:n].mean()  # binomial sd 0.01
    assert swapped[n] and not removed[n], "a level without a thruster lost one"
    only_removal = mutate_levels(levels[n:], torch.Generator().manual_seed(9), static,
                                 weights={"mutate_remove_thruster": 1.0})
    assert (only_removal == levels[n:]).all(), "a level with no possible edit was edited"


@pytest.mark.parametrize("weights, problem", [
    ({"mutate_add_shape": 1.0, "mutate_fly": 1.0}, r"unknown mutator\(s\) \['mutate_fly'\]"),
    ({"mutate_add_shape": -1.0}, r"expected finite numbers >= 0, got \{'mutate_add_shape': -1.0\}"),
    ({"mutate_add_shape": float("nan")}, "expected finite numbers >= 0"),
    ({"mutate_add_shape": 0.0}, "at least one weight must be positive"),
])
def test_bad_weights_are_refused(weights, problem):
    static = static_params_for_size("s")
    levels = sample_levels(2, static)
    with pytest.raises(ValueError, match=rf"^mutator weights: {problem}"):
        mutate_levels(levels, torch.Generator().manual_seed(0), static, weights=weights)
