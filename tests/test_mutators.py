"""ACCEL mutators on upstream's golden mutator inputs (random levels 0-7 of each size).

Upstream's random stream cannot be reproduced, so each mutator is checked on what does not depend
on it: every output is a valid level; the levels an edit changes are exactly those upstream's edit
changed (whether an edit is possible depends only on the input); only the fields the edit may touch
change, in ours and in upstream's output; and the edit's effect on entity counts and roles.
Mutated random levels also survive a JSON save and load unchanged.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kinetix_torch import schema
from kinetix_torch.generate import MUTATIONS, load_level_json, mutate_levels, sample_levels, save_level_json
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
