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
