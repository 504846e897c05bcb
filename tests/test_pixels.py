"""Pixel observation: upstream's golden frames, and invariants of the batched renderer.

Tolerance against upstream (every recorded frame of every golden trajectory, sizes s, m and l):

* Pixel values: a pixel "matches" when every channel is within ``VALUE_ATOL`` of upstream's
  ``image``. Both sides are one palette colour divided by 255 in float32 (the golden
  ``image255 / 255`` reproduces upstream within 1 ulp), so matching pixels agree to ~1e-7.
* Outside thruster glyphs, at most ``MAX_EDGE_FLIP_FRACTION`` of the pixels may differ. The
  renderer repeats upstream's float32 arithmetic, but a pixel corner lying within rounding of a shape
  edge can still flip where XLA and torch round sin/cos or a product differently. Observed: 0 pixels.
* Inside the 6x6 window of an active thruster the glyph is drawn from our own geometric
  description, not upstream's bitmap (not copied), so some of its pixels differ: at most
  ``MAX_GLYPH_DIFF_FRACTION`` of all thruster-window pixels and ``MAX_GLYPH_DIFF_PIXELS`` in any one
  frame. Observed: 828 of 21695 window pixels (3.8%) over 799 frames, at most 8 in a frame; that is
  6.6e-5 of all pixels. Every other pixel is bit-identical to upstream's.
"""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
import torch

from kinetix_torch import schema
from kinetix_torch.observations.pixels import render_pixels, render_rgb_uint8
from kinetix_torch.params import EnvParams, StaticEnvParams

VALUE_ATOL = 1e-6
MAX_EDGE_FLIP_FRACTION = 1e-5
MAX_GLYPH_DIFF_FRACTION = 0.06
MAX_GLYPH_DIFF_PIXELS = 10
GROUPS = ("handmade/s", "handmade/m", "random/s", "random/m", "random/l")
STATE_PREFIX = "state."
GLYPH_WINDOW = (-3, 3)
"""Pixel offsets ``[lo, hi)`` of a thruster's glyph window around its rounded anchor (4 px glyph)."""


def _case_params(traj_path):
    meta = json.loads(traj_path.with_name(traj_path.name.split(".traj.")[0] + ".json").read_text())
    return StaticEnvParams.from_dict(meta["static_env_params"]), EnvParams.from_dict(meta["env_params"])


def _states(data, rows=None) -> dict:
    """Flat numpy states of a trajectory file, all rows or the given ones."""
    return {
        k[len(STATE_PREFIX) :]: (data[k] if rows is None else data[k][rows]) for k in data.files if k.startswith(STATE_PREFIX)
    }


def _golden_frames(folder):
    """Per (static, params): stacked states at every recorded pixel frame, and upstream's images."""
    groups = defaultdict(lambda: ([], []))
    for path in sorted(folder.glob("*.traj.*.npz")):
        data = np.load(path)
        rows = data["obs.pixels.state_index"]
        states, images = groups[_case_params(path)]
        states.append(_states(data, rows))
        images.append(data["obs.pixels.image255"].astype(np.float32) / 255)
    assert groups, f"no trajectory files in {folder}"
    for (static, params), (states, images) in groups.items():
        stacked = {k: np.concatenate([s[k] for s in states]) for k in states[0]}
        yield static, params, stacked, np.concatenate(images)


def _glyph_windows(flat: dict, shape) -> np.ndarray:
    """``(B, X, Y)`` mask of the pixels inside the glyph window of an active thruster (golden data's
    scale: 25 px per world unit, a 2-unit margin)."""
    lo, hi = GLYPH_WINDOW
    mask = np.zeros(shape, dtype=bool)
    anchors = np.round((flat["thruster.global_position"] + 2) * 25).astype(int) - 2 * 25
    for b, t in zip(*np.nonzero(flat["thruster.active"])):
        x, y = anchors[b, t]
        mask[b, max(x + lo, 0) : max(x + hi, 0), max(y + lo, 0) : max(y + hi, 0)] = True
    return mask


@pytest.mark.parametrize("group", GROUPS)
def test_matches_upstream_frames(golden_dir, group):
    frames = edge_flips = glyph_pixels = glyph_diffs = worst_window = 0
    for static, params, flat, reference in _golden_frames(golden_dir / group):
        image = render_pixels(schema.to_tensordict(flat, (len(reference),)), static, params).numpy()
        assert image.shape == reference.shape and image.dtype == np.float32
        differs = (np.abs(image - reference) > VALUE_ATOL).any(-1)
        glyph = _glyph_windows(flat, differs.shape)
        frames += len(reference)
        edge_flips += int((differs & ~glyph).sum())
        glyph_pixels += int(glyph.sum())
        glyph_diffs += int((differs & glyph).sum())
        if glyph.any():
            worst_window = max(worst_window, int((differs & glyph).sum(axis=(1, 2)).max()))
    pixels = frames * reference.shape[1] * reference.shape[2]
    assert edge_flips <= MAX_EDGE_FLIP_FRACTION * pixels, f"{edge_flips} of {pixels} pixels differ outside thrusters"
    assert glyph_diffs <= MAX_GLYPH_DIFF_FRACTION * max(glyph_pixels, 1), f"{glyph_diffs} of {glyph_pixels}"
    assert worst_window <= MAX_GLYPH_DIFF_PIXELS


# ------------------------------------------------------------------------------------------------
# Invariants, on a full trajectory with polygons, circles, joints and a thruster

CASE = "handmade/m/h7_car_flip"


@pytest.fixture(scope="module")
def trajectory(golden_dir):
    path = golden_dir / f"{CASE}.traj.continuous.npz"
    static, params = _case_params(path)
    flat = _states(np.load(path))
    batch = len(flat["timestep"])
    return schema.to_tensordict(flat, (batch,)), static, params


def test_batched_equals_per_env_and_any_batch_shape(trajectory):
    state, static, params = trajectory
    batched = render_pixels(state, static, params)
    singles = torch.cat([render_pixels(state[i : i + 1], static, params) for i in range(state.batch_size[0])])
    assert torch.equal(batched, singles)
    even = state[: state.batch_size[0] // 2 * 2]
    assert torch.equal(render_pixels(even.reshape(2, -1), static, params).reshape(-1, *batched.shape[1:]), batched[: len(even)])


def test_rgb_uint8_is_the_observation_upright(trajectory):
    state, static, params = trajectory
    image = render_pixels(state[:3], static, params)
    rgb = render_rgb_uint8(state[:3], static, params, scale=2)
    upright = (image * 255).round().to(torch.uint8).transpose(1, 2).flip(1)
    assert rgb.shape == (3, 250, 250, 3) and rgb.dtype == torch.uint8
    assert torch.equal(rgb[:, ::2, ::2], upright)


@pytest.mark.parametrize(
    "kind, position_key",
    [("polygon", "position"), ("circle", "position"), ("joint", "global_position"), ("thruster", "global_position")],
)
def test_inactive_entities_are_invisible(trajectory, kind, position_key):
    """Deactivating an entity hides it, and an inactive entity stays hidden wherever it is."""
    state, static, params = trajectory
    state = state[:1].clone()
    first = static.num_static_fixated_polys if kind == "polygon" else 0
    active = state.get((kind, "active"))[0]
    slot = first + int(torch.nonzero(active[first:])[0])
    before = render_pixels(state, static, params)
    state.get((kind, "active"))[0, slot] = False
    hidden = render_pixels(state, static, params)
    state.get((kind, position_key))[0, slot] = torch.tensor([2.5, 2.5])
    assert not torch.equal(before, hidden), f"active {kind} {slot} was not visible"
    assert torch.equal(render_pixels(state, static, params), hidden)


def test_bad_input_is_rejected(trajectory):
    state, static, params = trajectory
    with pytest.raises(ValueError, match="downscale"):
        render_pixels(state, static.replace(downscale=2), params)
    with pytest.raises(ValueError, match="polygon.position"):
        render_pixels(state.exclude(("polygon", "position")), static, params)
    wrong = state.clone()
    wrong.set(("circle", "radius"), wrong.get(("circle", "radius")).double())
    with pytest.raises(ValueError, match="circle.radius.*dtype"):
        render_pixels(wrong, static, params)
    with pytest.raises(ValueError, match="shape"):
        render_pixels(state, static.replace(num_circles=static.num_circles + 1), params)
    with pytest.raises(ValueError, match="batch dimension"):
        render_pixels(state[0], static, params)
    with pytest.raises(ValueError, match="scale"):
        render_rgb_uint8(state, static, params, scale=0)


# ------------------------------------------------------------------------------------------------
# The uint8 channels-first format (pixel_format="uint8_chw")

UINT8_ERROR = 1 / 510
"""``uint8 / 255`` vs the float image: ``round(255 x)`` moves a value by at most half a level."""


@pytest.fixture(scope="module")
def tinted(trajectory):
    """The trajectory with thruster binding 3, whose orange tint (255, 153, 51) gives plume colours
    between two uint8 levels (every other colour is a whole level), so that rounding shows."""
    state, static, params = trajectory
    state = state.clone()
    state["thruster_bindings"][:] = 3
    return state, static, params


def test_uint8_chw_is_the_float_image_rounded_and_channels_first(tinted):
    state, static, params = tinted
    image = render_pixels(state, static, params)
    packed = render_pixels(state, static, params, "uint8_chw")
    assert packed.dtype == torch.uint8 and packed.is_contiguous()
    assert packed.shape == (image.shape[0], 3) + image.shape[1:3]
    assert torch.equal(packed, (255 * image).round().to(torch.uint8).permute(0, 3, 1, 2))
    assert (packed.permute(0, 2, 3, 1) / 255 - image).abs().max() <= UINT8_ERROR + 1e-7
    assert not torch.equal(packed.permute(0, 2, 3, 1) / 255, image)
    even = state[: state.batch_size[0] // 2 * 2]
    two_dims = render_pixels(even.reshape(2, -1), static, params, "uint8_chw")
    assert torch.equal(two_dims.reshape(-1, *packed.shape[1:]), packed[: len(even)])


@pytest.fixture(scope="module")
def handmade_s(levels_dir):
    from kinetix_torch.levels import load_level

    return [load_level(p) for p in sorted((levels_dir / "s").glob("*.json"))]


def _pixel_env(levels, pixel_format, action_type="multi_discrete", num_envs=4):
    import kinetix_torch

    return kinetix_torch.make_env(
        "pixels", action_type, "s", levels=levels, num_envs=num_envs, seed=0, pixel_format=pixel_format
    )


def test_uint8_env_spec_rollout_and_check_env_specs(handmade_s):
    from torchrl.envs.utils import check_env_specs

    env = _pixel_env(handmade_s, "uint8_chw")
    spec = env.observation_spec["observation", "image"]
    assert spec.dtype == torch.uint8 and spec.shape == (4, 3, 125, 125)
    assert int(spec.space.low.min()) == 0 and int(spec.space.low.max()) == 0
    assert int(spec.space.high.min()) == 255 and int(spec.space.high.max()) == 255
    # same seed, same levels: the first frames are the float env's, rounded
    first, float_first = env.reset()["observation"], _pixel_env(handmade_s, "float_hwc").reset()["observation"]
    expected = (255 * float_first["image"]).round().to(torch.uint8).permute(0, 3, 1, 2)
    assert torch.equal(first["image"], expected)
    assert torch.equal(first["global_info"], float_first["global_info"])
    check_env_specs(env, seed=0)
    rollout = env.rollout(3)
    assert rollout["next", "observation", "image"].dtype == torch.uint8
    assert spec.is_in(rollout["next", "observation", "image"][:, -1])


def test_bad_pixel_format_is_rejected(handmade_s, trajectory):
    state, static, params = trajectory
    with pytest.raises(ValueError, match="unknown pixel_format 'uint8_hwc'"):
        _pixel_env(handmade_s, "uint8_hwc")
    with pytest.raises(ValueError, match="pixel_format 'uint8_chw' needs observation_type 'pixels'"):
        import kinetix_torch

        kinetix_torch.make_env("symbolic_flat", levels=handmade_s, env_size="s", pixel_format="uint8_chw")
    with pytest.raises(ValueError, match="unknown pixel_format"):
        render_pixels(state, static, params, "chw")


def _pixel_models(static, params, action_type="discrete"):
    """A random float-HWC actor-critic and a uint8-CHW one with the same weights."""
    from kinetix_torch.actions import action_spec
    from kinetix_torch.models import make_actor_critic
    from kinetix_torch.observations import observation_spec

    torch.manual_seed(0)
    models = {}
    for pixel_format in ("float_hwc", "uint8_chw"):
        spec = observation_spec("pixels", static, params, (), pixel_format=pixel_format)
        models[pixel_format] = make_actor_critic(spec, action_spec(action_type, static))
    models["uint8_chw"].load_state_dict(models["float_hwc"].state_dict())
    return models


CNN_FLOAT_ATOL = 1e-5
"""Torso features, whole-level colours: equal up to float rounding (the two layouts reach the
convolutions in different memory formats). Observed: 5e-7, features up to 1.4."""
CNN_ROUNDED_ATOL = 1e-3
"""Torso features with the tinted plumes, whose inputs move by <= 1/510. Observed: 3e-4."""
HEAD_ATOL = 1e-4
"""Logits (|logit| <= 0.01 at init) and values (<= 0.4). Observed: 6e-7 and 4e-5."""


def test_cnn_reads_both_formats_alike(trajectory, tinted):
    from tensordict import TensorDict

    models = _pixel_models(*trajectory[1:])
    assert {name: model.torso.pixel_format for name, model in models.items()} == {f: f for f in models}
    float_shapes = {k: v.shape for k, v in models["float_hwc"].upstream_tensors().items()}
    assert {k: v.shape for k, v in models["uint8_chw"].upstream_tensors().items()} == float_shapes
    for (state, static, params), features_atol in ((trajectory, CNN_FLOAT_ATOL), (tinted, CNN_ROUNDED_ATOL)):
        global_info = state["gravity"][..., 1:2] / 10
        outputs = {}
        for pixel_format in models:
            image = render_pixels(state, static, params, pixel_format)
            td = TensorDict({"observation": {"image": image, "global_info": global_info}}, batch_size=state.batch_size)
            for name, model in models.items():  # either model reads either format
                with torch.no_grad():
                    out = model.value(model.policy(td.clone()))
                    out["features"] = model.torso(td["observation"])
                outputs[pixel_format, name] = out.select("features", "logits", "state_value")
        for pixel_format in models:
            assert (outputs[pixel_format, "uint8_chw"] == outputs[pixel_format, "float_hwc"]).all()
        uint8, reference = outputs["uint8_chw", "uint8_chw"], outputs["float_hwc", "float_hwc"]
        torch.testing.assert_close(uint8["features"], reference["features"], atol=features_atol, rtol=0)
        for key in ("logits", "state_value"):
            torch.testing.assert_close(uint8[key], reference[key], atol=HEAD_ATOL, rtol=0)
    with pytest.raises(ValueError, match=r"uint8 images must be \(C, X, Y\)"):
        hwc = torch.zeros(1, 125, 125, 3, dtype=torch.uint8)
        models["uint8_chw"].torso({"image": hwc, "global_info": global_info[:1]})


def test_uint8_pixel_training_run_loads_back(handmade_s, levels_dir, tmp_path):
    from kinetix_torch.train import checkpoint as ckpt
    from kinetix_torch.train import ppo
    from kinetix_torch.train.config import TrainConfig

    config = TrainConfig(
        levels=sorted((levels_dir / "s").glob("*.json"))[:2], env_size="s", obs="pixels", pixel_format="uint8_chw",
        action="discrete", model="tf-paper", width=16, depth=1, num_envs=2, num_steps=4, num_minibatches=1,
        update_epochs=1, total_frames=8, device="cpu", num_threads=1, progress=False, tensorboard=False,
        out=tmp_path / "run",
    )
    result = ppo.train(config)
    assert result.updates == 1
    saved = json.loads((result.checkpoint / "config.json").read_text())
    assert saved["pixel_format"] == "uint8_chw"
    loaded = ckpt.load_policy(result.run_dir)
    assert loaded.actor_critic.torso.pixel_format == "uint8_chw" and loaded.train_config.pixel_format == "uint8_chw"
    env = _pixel_env(handmade_s, "uint8_chw", action_type="discrete", num_envs=2)
    rollout = env.rollout(2, policy=loaded.actor_critic.policy)
    assert rollout["logits"].shape == (2, 2, env.action_spec.space.n)
