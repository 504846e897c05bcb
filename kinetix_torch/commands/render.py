"""``kinetix-torch render``: a GIF (or MP4) of a policy, or of random actions, playing one level.

    kinetix-torch render --checkpoint RUN_DIR/checkpoint --level my_level.json --out episode.gif
    kinetix-torch render --policy random --level ../shared/levels/s/h4_thrust_aim.json --out random.gif

Every frame shows the level (the pixel renderer at 2x) under a banner: dark with the step and the
return while the episode runs, then, on the last frame (held for a while), the outcome coloured
green (solved), red (touched red, NaN state), amber (timed out) or grey (stopped at --max-steps).
The GIF has one frame per state: the start and one per env step, so ``episode length + 1`` frames.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import imageio.v2 as imageio
import numpy as np
from PIL import Image, ImageDraw

from ..atomic import atomic_write
from ..plots import default_font
from ..train.evaluate import Episode, EvalError, record_episode
from .args import parse_dataclass
from .eval import ACTIONS, BAD_INPUT, SIZES, fail, policy_source

BANNER_HEIGHT = 24
"""Pixels of the banner strip above the level."""
BANNER_COLOURS = {
    "playing": (40, 40, 40),
    "solved": (30, 150, 60),
    "touched red": (200, 40, 40),
    "NaN state": (200, 40, 40),
    "timed out": (190, 130, 20),
    "stopped": (110, 110, 110),
}
"""Banner background while the episode runs, and on the last frame for each outcome."""
HOLD_LAST_MS = 1500
"""How long the last frame (the outcome) stays on screen."""


@dataclass
class Args:
    """Write a GIF (or MP4) of a checkpoint's policy, or of random actions, playing one level, with
    the outcome (solved / failed and why, return) drawn into the frames."""

    level: Path | None = None
    """The level file to play (required)."""
    out: Path = Path("episode.gif")
    """Output file: .gif, or .mp4 when imageio's ffmpeg plugin is installed."""
    checkpoint: Path | None = None
    """A checkpoint folder (RUN_DIR/checkpoint, ours or upstream's pretrained format)."""
    policy: Literal["checkpoint", "random"] = "checkpoint"
    """Where actions come from: the checkpoint's policy, or uniform random actions."""
    deterministic: bool = False
    """Take the policy's most likely action instead of sampling one."""
    max_steps: int | None = None
    """Stop after this many env steps (default: the level's time limit)."""
    env_size: SIZES | None = None
    """Env size the level is padded into (default: the checkpoint's; for random actions, the
    smallest size holding the level)."""
    action: ACTIONS | None = None
    """Action encoding of random actions (default multi_discrete); a checkpoint brings its own."""
    scale: int = 2
    """Screen pixels per observation pixel."""
    seed: int = 0
    """Seed of the policy's samples and of random actions."""
    device: str = "cpu"
    """Torch device of the env and the policy."""


def banner_text(episode: Episode, t: int) -> str:
    """The banner's text on frame ``t``: step and return, and on the last frame the outcome first."""
    progress = f"step {t}  return {episode.returns[t]:+.2f}"
    return progress if t < episode.length else f"{episode.outcome.upper()}  {progress}"


def annotate(episode: Episode) -> list[np.ndarray]:
    """The episode's frames, each under its banner (see the module docstring)."""
    width = episode.frames.shape[2]
    frames = []
    for t, picture in enumerate(episode.frames):
        colour = BANNER_COLOURS[episode.outcome if t == episode.length else "playing"]
        banner = Image.new("RGB", (width, BANNER_HEIGHT), colour)
        text = banner_text(episode, t)
        font = _font(text, width - 12)
        ImageDraw.Draw(banner).text((6, BANNER_HEIGHT // 2), text, fill="white", font=font, anchor="lm")
        frames.append(np.concatenate([np.asarray(banner), picture], axis=0))
    return frames


def _font(text: str, width: int):
    """The largest default font (14 px down to 8) in which ``text`` fits ``width`` pixels."""
    fonts = [default_font(size) for size in range(14, 7, -1)]
    return next((font for font in fonts if font.getlength(text) <= width), fonts[-1])


def save_episode(episode: Episode, path: str | os.PathLike, frame_ms: float) -> None:
    """Write the annotated episode as a GIF or MP4 (chosen by ``path``'s suffix), atomically:
    ``frame_ms`` per frame, the last one held :data:`HOLD_LAST_MS`."""
    path = Path(path)
    check_animation_path(path)
    frames = annotate(episode)
    if path.suffix.lower() == ".gif":
        durations = [frame_ms] * (len(frames) - 1) + [HOLD_LAST_MS]
        atomic_write(path, lambda tmp: imageio.mimsave(tmp, frames, format="GIF", duration=durations, loop=0))
    else:
        held = frames + [frames[-1]] * round(HOLD_LAST_MS / frame_ms)
        atomic_write(
            path, lambda tmp: imageio.mimsave(tmp, held, format="FFMPEG", fps=1000.0 / frame_ms, macro_block_size=1)
        )


def check_animation_path(path: Path) -> None:
    """Raise :class:`EvalError` unless ``path`` is a .gif, or a .mp4 with imageio's ffmpeg plugin installed."""
    suffix = path.suffix.lower()
    if suffix == ".mp4" and importlib.util.find_spec("imageio_ffmpeg") is None:
        raise EvalError(
            f"{path}: writing .mp4 needs imageio's ffmpeg plugin (pip install imageio[ffmpeg]); or write a .gif"
        )
    if suffix not in (".gif", ".mp4"):
        raise EvalError(f"{path}: unknown animation format {path.suffix!r}; expected .gif or .mp4")


def main(argv=None) -> int:
    args = parse_dataclass(Args, argv, "kinetix-torch render")
    try:
        if args.level is None:
            raise EvalError("no level: give --level LEVEL.json")
        check_animation_path(args.out)
        level = args.level
        source = policy_source(args, [level])
        episode = record_episode(
            source.policy,
            level,
            deterministic=args.deterministic,
            seed=args.seed,
            max_steps=args.max_steps,
            device=args.device,
            scale=args.scale,
            **source.env_options(),
        )
        save_episode(episode, args.out, frame_ms=1000 * episode.seconds_per_step)
    except BAD_INPUT as e:
        return fail("render", e)
    ending = f"{episode.outcome} after {episode.length} steps, return {episode.total_return:+.3f}"
    print(f"{source.name} on {level}: {ending}")
    print(f"wrote {args.out} ({episode.length + 1} frames)")
    return 0
