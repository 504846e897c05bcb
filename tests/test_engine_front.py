"""The engine front: actions with gradients, JAX's persistent compilation cache, and fork safety."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys

import pytest
import torch

from kinetix_torch import engine, levels, schema

STEP_ONCE = """
import logging, sys, torch
from kinetix_torch import engine, levels, schema
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
level = levels.load_level(sys.argv[1])
state = schema.to_tensordict({k: torch.as_tensor(v)[None] for k, v in level.state.items()}, (1,))
engine.step(state, torch.zeros(1, level.static.action_dim), level.env_params, level.static)
"""


def _one_level_state(levels_dir):
    level = levels.load_level(levels_dir / "s" / "h4_thrust_aim.json")
    state = schema.to_tensordict({k: torch.as_tensor(v)[None] for k, v in level.state.items()}, (1,))
    return level, state


def test_actions_with_gradients_step_on_the_cpu(levels_dir):
    level, state = _one_level_state(levels_dir)
    actions = torch.zeros(1, level.static.action_dim, requires_grad=True) * 1.0
    new_state, info = engine.step(state, actions, level.env_params, level.static)
    assert torch.isfinite(new_state["polygon", "position"]).all() and info["distance"].shape == (1, level.static.frame_skip)


def test_compiles_are_announced_and_cached_across_processes(levels_dir, tmp_path):
    env = {**os.environ, "KINETIX_JAX_CACHE": str(tmp_path / "cache")}
    level_file = str(levels_dir / "s" / "h4_thrust_aim.json")
    run = subprocess.run([sys.executable, "-c", STEP_ONCE, level_file], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "JAX engine: first env step at batch 1" in run.stdout and str(tmp_path / "cache") in run.stdout
    assert any((tmp_path / "cache").iterdir()), "no compiled program was written to the persistent cache"


def _step_in_child(level_file, queue):
    level = levels.load_level(level_file)
    state = schema.to_tensordict({k: torch.as_tensor(v)[None] for k, v in level.state.items()}, (1,))
    try:
        engine.step(state, torch.zeros(1, level.static.action_dim), level.env_params, level.static)
        queue.put("stepped")
    except engine.BackendUnavailable as exc:
        queue.put(str(exc))


def test_a_forked_child_gets_a_clear_error(levels_dir):
    level, state = _one_level_state(levels_dir)
    engine.step(state, torch.zeros(1, level.static.action_dim), level.env_params, level.static)  # JAX started here
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_step_in_child, args=(str(levels_dir / "s" / "h4_thrust_aim.json"), queue))
    child.start()
    message = queue.get(timeout=120)
    child.join(timeout=60)
    assert "forked" in message and "spawn" in message


@pytest.mark.parametrize("setting", ["off", "0"])
def test_the_cache_can_be_turned_off(monkeypatch, setting):
    monkeypatch.setenv("KINETIX_JAX_CACHE", setting)
    assert engine.jax_cache_dir() is None
