"""The default job until training lands: build a small level, simulate it, write a GIF and metrics.

The level (``car_hop``, size M) is designed here: a green two-wheeled car with motors and an
upward thruster must reach the blue platform at the right without touching the red ball on the
floor in the middle. The controller is a fixed open-loop policy (drive right, fire the thruster to hop over
the red block). Physics runs through :func:`kinetix_torch.engine.step` on the JAX reference
backend; reward events are upstream's contact rule.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch

from .. import engine, levels, schema
from ..actions import process_actions
from ..observations.pixels import render_rgb_uint8
from ..params import EnvParams, static_params_for_size
from ..rewards import substep_rewards
from ..schema import BLUE, GREEN, RED


@dataclass
class DemoConfig:
    out: Path = Path("runs/demo")
    """Folder for ``rollout.gif``, ``metrics.json`` and the level's JSON."""
    env_steps: int = 120
    """Env steps to simulate (each is ``frame_skip`` engine steps)."""
    gif_every: int = 2
    """Keep every n-th env step in the GIF."""
    hop_at: int = 22
    """Env step at which the controller fires the thruster."""
    hop_steps: int = 6
    """How many env steps the thruster fires."""


def car_hop_level():
    """Build the demo level (size M) with the reference engine's scene functions. Returns
    ``(flat numpy state, static params)``."""
    from ..reference_jax import scene

    static = static_params_for_size("m")
    state = scene.empty_scene(static)
    chassis_shape = [[-0.4, 0.08], [0.4, 0.08], [0.4, -0.08], [-0.4, -0.08]]
    state, chassis = scene.add_polygon(state, static, (1.0, 0.95), chassis_shape, role=GREEN)
    for x in (-0.28, 0.28):
        state, wheel = scene.add_circle(state, static, (1.0 + x, 0.7), 0.18, role=GREEN)
        state, _ = scene.add_revolute_joint(state, static, chassis, wheel, (x, -0.25), (0.0, 0.0), motor_on=True)
    state, _ = scene.add_thruster(state, static, chassis, (0.0, 0.0), np.pi / 3, power=1.5)
    state, _ = scene.add_circle(state, static, (2.6, 0.55), 0.15, fixated=True, role=RED)
    platform = [[-0.4, 0.1], [0.4, 0.1], [0.4, -0.1], [-0.4, -0.1]]
    state, _ = scene.add_polygon(state, static, (4.2, 0.5), platform, fixated=True, role=BLUE)
    return {k: np.asarray(v) for k, v in schema.flatten(state).items()}, static


def controller(step: int, cfg: DemoConfig) -> np.ndarray:
    """Raw multi-slot action: motor slot 0 drives the wheel right (negative spin), thruster slot 0 hops."""
    action = np.zeros(6, np.float32)
    action[0] = -1.0
    action[4] = 1.0 if cfg.hop_at <= step < cfg.hop_at + cfg.hop_steps else 0.0
    return action


def _frame(td, static, params) -> np.ndarray:
    """GIF frame of the first environment: upstream's pixel observation, upright, at 2x."""
    return render_rgb_uint8(td[:1], static, params, scale=2)[0].cpu().numpy()


def run_demo(cfg: DemoConfig) -> dict:
    cfg.out.mkdir(parents=True, exist_ok=True)
    flat, static = car_hop_level()
    params = EnvParams(dense_reward_scale=0.1)
    levels.save_level(cfg.out / "car_hop.json", flat, static, params)

    td = schema.to_tensordict({k: v[None] for k, v in flat.items()}, (1,))
    frames, events, engine_steps = [_frame(td, static, params)], [], 0
    start = time.perf_counter()
    for t in range(cfg.env_steps):
        action = process_actions(torch.from_numpy(controller(t, cfg))[None], td, static, "continuous")
        td, info = engine.step(td, action, params, static, backend="jax")
        engine_steps += static.frame_skip
        rewards = substep_rewards(info)[0]
        if rewards.any():
            events.append({"env_step": t, "reward": int(rewards[rewards != 0][0])})
        if t % cfg.gif_every == 0:
            frames.append(_frame(td, static, params))
        if events:
            break
    elapsed = time.perf_counter() - start
    imageio.mimsave(cfg.out / "rollout.gif", frames, duration=1000 * params.dt * static.frame_skip * cfg.gif_every, loop=0)
    final = schema.tensordict_to_numpy(td)
    metrics = {
        "level": "car_hop (size m, designed in kinetix_torch.demo)",
        "backend": "jax",
        "env_steps": t + 1,
        "engine_steps": engine_steps,
        "engine_steps_per_second_batch1": engine_steps / elapsed,
        "first_reward_event": events[0] if events else None,
        "final_wheel_x": float(final["circle.position"][0, 0, 0]),
        "finite": bool(all(np.isfinite(v).all() for v in final.values() if v.dtype.kind == "f")),
        "config": {k: str(v) for k, v in asdict(cfg).items()},
    }
    (cfg.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def main(argv=None) -> int:
    from .args import parse_dataclass

    cfg = parse_dataclass(DemoConfig, argv, "kinetix-torch demo")
    metrics = run_demo(cfg)
    print(json.dumps(metrics, indent=2))
    print(f"wrote {cfg.out / 'rollout.gif'} and {cfg.out / 'metrics.json'}")
    return 0
