"""Evaluate a policy on levels: solve rate, return and episode length over N attempts per level.

An *attempt* is one episode from the level's start until it ends: the goal (green touches blue),
a failure (green touches red, or a NaN state) or the time limit. The attempts of all levels run as
one batched env (environment ``i`` plays level ``i % K``, as upstream's evaluation assigns them), and
stepping stops as soon as every environment has finished its first episode; what an environment
does after that is not counted.

The policy is a TensorDict module reading ``"observation"`` and writing ``"action"`` (e.g.
``ActorCritic.policy``), or ``None`` for uniform random actions. Attempts are stochastic by default
(actions sampled from the policy's distribution); ``deterministic=True`` takes its mode.

:func:`record_episode` plays one attempt and keeps a picture of every step (for GIFs).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDictBase
from torchrl.envs import Compose, EnvBase, InitTracker, TransformedEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type, step_mdp

from ..atomic import atomic_write_text
from ..env import KinetixEnv
from ..levels import Level, LevelFormatError, load_level, pad_state
from ..observations.pixels import render_rgb_uint8
from ..params import ENV_SIZES, EnvParams, StaticEnvParams, static_params_for_size

__all__ = [
    "EvalError",
    "LevelResult",
    "EvalReport",
    "Episode",
    "default_levels_roots",
    "resolve_level_paths",
    "load_eval_levels",
    "size_name",
    "evaluate",
    "record_episode",
]

REPO = Path(__file__).resolve().parents[2]


class EvalError(ValueError):
    """Bad evaluation input (a missing level path, an unknown set name, a level too large for the
    env size); the message is one line naming the problem."""


# --------------------------------------------------------------------------------------------------
# Level specs -> level files


def default_levels_roots(levels_root: str | os.PathLike | None = None) -> list[Path]:
    """Where the handmade sets ``s``/``m``/``l`` are looked for, in order: ``levels_root``, else
    ``$KINETIX_LEVELS``, ``$KINETIX_SHARED/levels``, ``../shared/levels`` from the working folder and
    ``../shared/levels`` beside the repository."""
    if levels_root is not None:
        return [Path(levels_root)]
    from_env = (("KINETIX_LEVELS", ""), ("KINETIX_SHARED", "levels"))
    roots = [Path(os.environ[name]) / sub for name, sub in from_env if os.environ.get(name)]
    return roots + [Path("../shared/levels"), REPO.parent / "shared" / "levels"]


def resolve_level_paths(specs: Sequence[str | os.PathLike], levels_root: str | os.PathLike | None = None) -> list[Path]:
    """Level files named by ``specs``, in order, without repeats. A spec is a level file, a folder
    (all its ``*.json``, sorted by name), a handmade set name ``s``/``m``/``l`` (the folder of that
    name under the first existing root of :func:`default_levels_roots`) or a handmade level by name,
    ``s/h4_thrust_aim`` (``.json`` optional), under the same roots."""
    if isinstance(specs, (str, os.PathLike)):
        specs = [specs]
    if not specs:
        raise EvalError("no levels given: pass level files, folders or a set name (s, m, l)")
    paths: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_file():
            found = [path]
        elif path.is_dir():
            found = sorted(path.glob("*.json"))
            if not found:
                raise EvalError(f"level folder {path} holds no *.json level files")
        elif str(spec).lower() in ENV_SIZES:
            found = _handmade_set(str(spec).lower(), levels_root)
        elif len(path.parts) == 2 and path.parts[0].lower() in ENV_SIZES:
            found = [_handmade_level(path, levels_root)]
        else:
            raise EvalError(
                f"level path {str(spec)!r} does not exist (expected a level file, a folder of *.json levels, "
                f"or a set name: {', '.join(ENV_SIZES)})"
            )
        paths += [p for p in found if p not in paths]
    return paths


def _handmade_set(name: str, levels_root) -> list[Path]:
    roots = default_levels_roots(levels_root)
    for root in roots:
        folder = root / name
        if folder.is_dir():
            files = sorted(folder.glob("*.json"))
            if not files:
                raise EvalError(f"level set {name!r}: folder {folder} holds no *.json level files")
            return files
    looked = ", ".join(str(root / name) for root in roots)
    raise EvalError(f"level set {name!r} not found; looked in {looked} (set --levels-root or $KINETIX_LEVELS)")


def _handmade_level(name: Path, levels_root) -> Path:
    """``s/h4_thrust_aim`` -> the file ``s/h4_thrust_aim.json`` under the first root holding it."""
    relative = name if name.suffix == ".json" else name.with_name(name.name + ".json")
    roots = default_levels_roots(levels_root)
    for root in roots:
        if (root / relative).is_file():
            return root / relative
    looked = ", ".join(str(root / relative) for root in roots)
    raise EvalError(f"level {str(name)!r} not found; looked in {looked} (set --levels-root or $KINETIX_LEVELS)")


def size_name(static: StaticEnvParams) -> str:
    """The smallest S/M/L preset whose sizes hold ``static``'s (``"custom"`` if none does)."""
    return next((name for name in ENV_SIZES if static.fits_in(static_params_for_size(name))), "custom")


def load_eval_levels(paths: Sequence[str | os.PathLike], static: StaticEnvParams) -> list[tuple[Level, str]]:
    """Load every level padded into ``static``; returns ``(level, size name of the file)`` pairs.
    A level that does not fit raises :class:`EvalError` naming the file and the sizes."""
    loaded = []
    for path in paths:
        if not Path(path).is_file():
            raise EvalError(f"level file {str(path)!r} does not exist")
        try:
            level = load_level(path)
            state = pad_state(level.state, level.static, static, where=str(path))
        except LevelFormatError as e:
            raise EvalError(f"{' '.join(str(e).split())} (env size {_preset_name(static)})") from None
        loaded.append((Level(state, static, level.env_params, str(path)), size_name(level.static)))
    return loaded


def _preset_name(static: StaticEnvParams) -> str:
    """``"s"``/``"m"``/``"l"`` when ``static`` has exactly that preset's sizes, else ``"custom"``."""
    def same(preset: StaticEnvParams) -> bool:
        return static.fits_in(preset) and preset.fits_in(static)

    return next((name for name in ENV_SIZES if same(static_params_for_size(name))), "custom")


def _static_of(env_size: str | StaticEnvParams) -> StaticEnvParams:
    if isinstance(env_size, StaticEnvParams):
        return env_size
    try:
        return static_params_for_size(env_size)
    except ValueError as e:
        raise EvalError(str(e)) from None


# --------------------------------------------------------------------------------------------------
# Reports


@dataclass(frozen=True)
class LevelResult:
    """Evaluation of one level (or a mean over levels)."""

    solve_rate: float
    """Fraction of attempts whose episode ended with the goal reached."""
    mean_return: float
    """Mean undiscounted return of an attempt."""
    mean_length: float
    """Mean episode length in env steps."""
    attempts: int
    """Attempts per level."""


@dataclass
class EvalReport:
    """Per-level results and their means over all levels and per size."""

    results: dict[str, LevelResult]
    """Level path -> its result, in the order evaluated."""
    sizes: dict[str, str]
    """Level path -> the level's own size: the smallest S/M/L preset holding the file's sizes."""
    deterministic: bool = False
    """Whether the policy's mode was taken (else its samples)."""
    policy: str = "policy"
    """How the table names the policy."""
    groups: dict[str, list[str]] = field(init=False)
    """``"mean"`` -> every level path, ``"mean_<size>"`` -> the paths of that size."""
    means: dict[str, LevelResult] = field(init=False)
    """The mean of :attr:`results` over each group."""

    def __post_init__(self):
        self.groups = {"mean": list(self.results)}
        for size in dict.fromkeys(self.sizes.values()):
            self.groups[f"mean_{size}"] = [path for path in self.results if self.sizes[path] == size]
        self.means = {name: _mean([self.results[p] for p in paths]) for name, paths in self.groups.items()}

    def to_dict(self) -> dict[str, dict]:
        """``{level path: {solve_rate, mean_return, mean_length, attempts}, ..., "mean": {...},
        "mean_<size>": {...}}`` (mean entries also hold ``levels``, the number of levels averaged)."""
        out = {path: asdict(result) for path, result in self.results.items()}
        out.update({name: {**asdict(r), "levels": len(self.groups[name])} for name, r in self.means.items()})
        return out

    def _rows(self) -> list[tuple[str, str, LevelResult]]:
        rows = [(path, self.sizes[path], result) for path, result in self.results.items()]
        size_means = [(name, name.removeprefix("mean_"), r) for name, r in self.means.items() if name != "mean"]
        return rows + size_means + [("mean", "all", self.means["mean"])]

    def table(self) -> str:
        """A fixed-width text table: one line per level (paths under the working folder shortened to
        relative ones), then the mean per size and overall."""
        rows = [(_short_path(name), size, r) for name, size, r in self._rows()]
        width = max(len("level"), *(len(name) for name, _, _ in rows))
        mode = "deterministic" if self.deterministic else "stochastic"
        lines = [
            f"{self.policy}, {mode}, {self.means['mean'].attempts} attempts per level",
            f"{'level':<{width}}  size  solve rate  mean return  mean length",
        ]
        for i, (name, size, r) in enumerate(rows):
            if i == len(self.results):
                lines.append("-" * (width + 44))
            numbers = f"{r.solve_rate:>10.3f}  {r.mean_return:>11.3f}  {r.mean_length:>11.1f}"
            lines.append(f"{name:<{width}}  {size:<4}  {numbers}")
        return "\n".join(lines)

    def write_json(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_dict` as JSON, atomically."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def write_csv(self, path: str | os.PathLike) -> None:
        """Write the table as CSV (level, size, solve_rate, mean_return, mean_length, attempts), atomically."""
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["level", "size", "solve_rate", "mean_return", "mean_length", "attempts"])
        for name, size, r in self._rows():
            writer.writerow([name, size, r.solve_rate, r.mean_return, r.mean_length, r.attempts])
        atomic_write_text(path, text.getvalue())


def _short_path(name: str) -> str:
    if not os.path.isabs(name):
        return name
    relative = os.path.relpath(name)
    return name if relative.startswith("..") else relative


def _mean(results: list[LevelResult]) -> LevelResult:
    return LevelResult(
        solve_rate=float(np.mean([r.solve_rate for r in results])),
        mean_return=float(np.mean([r.mean_return for r in results])),
        mean_length=float(np.mean([r.mean_length for r in results])),
        attempts=results[0].attempts,
    )


# --------------------------------------------------------------------------------------------------
# Running attempts


def _make_env(
    levels: list[Level],
    num_envs: int,
    observation_type: str,
    action_type: str,
    static: StaticEnvParams,
    env_params: EnvParams | None,
    seed: int,
    device,
    primer,
    backend: str | None,
    pixel_format: str,
) -> EnvBase:
    """A batched env where environment ``i`` starts every episode from ``levels[i % K]``; with a
    recurrent policy's ``primer``, wrapped with TorchRL's ``InitTracker`` and that primer."""
    env = KinetixEnv(
        levels,
        num_envs=num_envs,
        observation_type=observation_type,
        action_type=action_type,
        static_env_params=static,
        env_params=env_params,
        device=device,
        backend=backend,
        seed=seed,
        cycle_levels=True,
        pixel_format=pixel_format,
    )
    return env if primer is None else TransformedEnv(env, Compose(InitTracker(), primer.clone()))


def _actor(policy, env: EnvBase, deterministic: bool) -> Callable[[TensorDictBase], TensorDictBase]:
    """``td -> td with "action"``: the policy's sample (or mode), or a uniform random action."""
    if policy is None:
        return env.rand_action
    exploration = ExplorationType.DETERMINISTIC if deterministic else ExplorationType.RANDOM

    def act(td):
        with set_exploration_type(exploration):
            return policy(td)

    return act


def _rng_devices(device) -> list:
    device = torch.device(device)
    return [device] if device.type == "cuda" else []


def evaluate(
    policy,
    level_paths: Sequence[str | os.PathLike],
    *,
    observation_type: str,
    action_type: str,
    env_size: str | StaticEnvParams,
    attempts: int = 20,
    deterministic: bool = False,
    seed: int = 0,
    device="cpu",
    env_params: EnvParams | None = None,
    primer=None,
    backend: str | None = None,
    max_envs: int = 4096,
    policy_name: str | None = None,
    pixel_format: str = "float_hwc",
) -> EvalReport:
    """Run ``attempts`` episodes of ``policy`` on every level; see the module docstring.

    ``env_size``: ``"s"``/``"m"``/``"l"`` or the static params the policy was trained with (every
    level is padded into them). ``env_params``: used for every level (e.g. those the policy was
    trained with); default: each level's own. ``primer``: a recurrent policy's ``TensorDictPrimer``
    (``ActorCritic.make_primer()``). ``pixel_format``: the pixel observations' layout (see
    :class:`~kinetix_torch.env.KinetixEnv`). Levels sharing their env params run in batched envs of
    at most ``max_envs`` environments. The caller's torch RNG state is left untouched; results depend only on
    ``seed``.
    """
    if not isinstance(attempts, int) or attempts < 1:
        raise EvalError(f"attempts must be a positive int, got {attempts!r}")
    if not level_paths:
        raise EvalError("no levels to evaluate")
    static = _static_of(env_size)
    loaded = load_eval_levels(level_paths, static)
    by_params: dict[EnvParams, list[tuple[Level, str]]] = {}
    for level, size in loaded:
        by_params.setdefault(env_params or level.env_params, []).append((level, size))
    per_env = max(1, max_envs // attempts)
    results: dict[str, LevelResult] = {}
    with torch.random.fork_rng(devices=_rng_devices(device)), torch.no_grad():
        torch.manual_seed(seed)
        for params, group in by_params.items():
            for start in range(0, len(group), per_env):
                chunk = [level for level, _ in group[start : start + per_env]]
                env = _make_env(
                    chunk, len(chunk) * attempts, observation_type, action_type, static, params, seed, device, primer,
                    backend, pixel_format,
                )
                solved, returns, lengths = _first_episodes(env, _actor(policy, env, deterministic))
                for k, level in enumerate(chunk):
                    results[level.name] = LevelResult(
                        solve_rate=float(solved[k :: len(chunk)].double().mean()),
                        mean_return=float(returns[k :: len(chunk)].double().mean()),
                        mean_length=float(lengths[k :: len(chunk)].double().mean()),
                        attempts=attempts,
                    )
    order = [level.name for level, _ in loaded]
    return EvalReport(
        results={name: results[name] for name in order},
        sizes={level.name: size for level, size in loaded},
        deterministic=deterministic,
        policy=policy_name or ("random policy" if policy is None else "policy"),
    )


def _first_episodes(env: EnvBase, act) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step every environment until each has finished one episode; returns per environment
    ``(solved, return, length)`` of that first episode (on the CPU)."""
    n = env.batch_size[0]
    device = env.device
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    solved = torch.zeros(n, dtype=torch.bool, device=device)
    returns = torch.zeros(n, dtype=torch.float32, device=device)
    lengths = torch.zeros(n, dtype=torch.int64, device=device)
    td = env.reset()
    time_limit = _base_env(env).env_params.max_timesteps
    for _ in range(time_limit):
        td, td_next = env.step_and_maybe_reset(act(td))
        step = td["next"]
        running = ~finished
        done = step["done"].reshape(n)
        returns += step["reward"].reshape(n) * running
        lengths += running
        solved |= running & done & step["goal_reached"].reshape(n)
        finished |= done
        if bool(finished.all()):
            break
        td = td_next
    if not bool(finished.all()):
        raise RuntimeError(f"evaluation: {int((~finished).sum())} episodes did not end within {time_limit} steps")
    return solved.cpu(), returns.cpu(), lengths.cpu()


def _base_env(env: EnvBase) -> KinetixEnv:
    return env.base_env if isinstance(env, TransformedEnv) else env


# --------------------------------------------------------------------------------------------------
# One recorded attempt


OUTCOMES = ("solved", "touched red", "NaN state", "timed out", "stopped")
"""How a recorded episode ended: the goal; red contact; a NaN state; the level's time limit; the
caller's ``max_steps`` before any of these."""


@dataclass
class Episode:
    """One attempt with a picture of every state: ``frames[t]`` shows the state after ``t`` steps."""

    frames: np.ndarray
    """uint8 ``(length + 1, height, width, 3)``."""
    returns: list[float]
    """Return accumulated after each step (``returns[0] == 0``), ``length + 1`` values."""
    outcome: str
    """One of :data:`OUTCOMES`."""
    level: str
    """The level's path."""
    seconds_per_step: float
    """Simulated time of one env step (``dt * frame_skip``)."""

    @property
    def length(self) -> int:
        return len(self.returns) - 1

    @property
    def total_return(self) -> float:
        return self.returns[-1]


def record_episode(
    policy,
    level_path: str | os.PathLike,
    *,
    observation_type: str,
    action_type: str,
    env_size: str | StaticEnvParams,
    deterministic: bool = False,
    seed: int = 0,
    max_steps: int | None = None,
    device="cpu",
    env_params: EnvParams | None = None,
    primer=None,
    backend: str | None = None,
    scale: int = 2,
    pixel_format: str = "float_hwc",
) -> Episode:
    """Play one attempt of ``policy`` (``None``: random actions) on a level and render every state
    with :func:`~kinetix_torch.observations.pixels.render_rgb_uint8` at ``scale``. Stops when the
    episode ends or after ``max_steps`` steps. Arguments as :func:`evaluate`'s."""
    static = _static_of(env_size)
    ((level, _),) = load_eval_levels([level_path], static)
    with torch.random.fork_rng(devices=_rng_devices(device)), torch.no_grad():
        torch.manual_seed(seed)
        env = _make_env(
            [level], 1, observation_type, action_type, static, env_params, seed, device, primer, backend, pixel_format
        )
        base = _base_env(env)
        act = _actor(policy, env, deterministic)

        def picture() -> np.ndarray:
            return render_rgb_uint8(base.state, static, base.env_params, scale=scale)[0].cpu().numpy()

        td = env.reset()
        frames, returns, outcome = [picture()], [0.0], "stopped"
        limit = base.env_params.max_timesteps if max_steps is None else max_steps
        for _ in range(limit):
            td = env.step(act(td))
            step = td["next"]
            frames.append(picture())
            returns.append(returns[-1] + float(step["reward"]))
            if bool(step["done"]):
                outcome = _outcome(step)
                break
            td = step_mdp(td)
    seconds = base.env_params.dt * static.frame_skip
    return Episode(np.stack(frames), returns, outcome, level.name, seconds)


def _outcome(step: TensorDictBase) -> str:
    if bool(step["goal_reached"]):
        return "solved"
    if bool(step["truncated"]):
        return "timed out"
    return "touched red" if float(step["outcome_reward"]) < 0 else "NaN state"
