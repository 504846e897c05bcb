"""``kinetix-torch eval``: a checkpoint (or random actions) on levels, N attempts per level.

    kinetix-torch eval --checkpoint RUN_DIR/checkpoint --levels s m --attempts 20 --json eval.json
    kinetix-torch eval --policy random --levels ../shared/levels/s --csv random.csv

Prints a table of solve rate, mean return and mean episode length per level, the mean per size and
overall; ``--json`` / ``--csv`` write it too. Bad input (a missing level path, an unknown set name, a
level larger than the env size, a checkpoint that does not fit) is one line on stderr, exit code 2.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..levels import LevelFormatError, load_level
from ..params import ENV_SIZES, EnvParams, StaticEnvParams, static_params_for_size
from ..train.checkpoint import CheckpointError, load_policy
from ..train.evaluate import EvalError, evaluate, resolve_level_paths, size_name
from .args import parse_dataclass

SIZES = Literal["s", "m", "l"]
ACTIONS = Literal["multi_discrete", "discrete", "continuous"]


@dataclass
class Args:
    """Evaluate a checkpoint, or uniform random actions, on levels: N attempts per level, each one
    episode from the level's start until the goal, a failure or the time limit."""

    levels: list[str] = field(default_factory=list)
    """Level files, folders of *.json levels, or handmade set names s/m/l (required)."""
    checkpoint: Path | None = None
    """A checkpoint folder (RUN_DIR/checkpoint, ours or upstream's pretrained format)."""
    policy: Literal["checkpoint", "random"] = "checkpoint"
    """Where actions come from: the checkpoint's policy, or uniform random actions."""
    attempts: int = 20
    """Attempts (episodes) per level."""
    deterministic: bool = False
    """Take the policy's most likely action instead of sampling one."""
    env_size: SIZES | None = None
    """Env size the levels are padded into (default: the checkpoint's; for random actions, the
    smallest size holding every level)."""
    action: ACTIONS | None = None
    """Action encoding of random actions (default multi_discrete); a checkpoint brings its own."""
    levels_root: Path | None = None
    """Folder holding the handmade sets s/, m/, l/ (default: $KINETIX_LEVELS, else ../shared/levels)."""
    json: Path | None = None
    """Write the results as JSON here (level path -> solve_rate, mean_return, mean_length, attempts;
    plus "mean" and "mean_<size>")."""
    csv: Path | None = None
    """Write the table as CSV here."""
    seed: int = 0
    """Seed of the policy's samples and of random actions."""
    device: str = "cpu"
    """Torch device of the env and the policy."""


@dataclass
class PolicySource:
    """A policy with what an env needs to feed it."""

    policy: object
    """A TensorDict module writing "action", or None for uniform random actions."""
    primer: object
    """A recurrent policy's TensorDictPrimer, else None."""
    observation_type: str
    action_type: str
    static: StaticEnvParams
    """Sizes the policy was built for (every level is padded into them)."""
    env_params: EnvParams | None
    """Env params the policy was trained with (None: each level's own)."""
    name: str
    """How tables and pictures name the policy."""

    def env_options(self) -> dict:
        """The keyword arguments of :func:`evaluate` / :func:`record_episode` that this policy fixes."""
        return dict(observation_type=self.observation_type, action_type=self.action_type, env_size=self.static,
                    env_params=self.env_params, primer=self.primer)


def policy_source(args, level_paths: list[Path]) -> PolicySource:
    """The policy named by ``args`` (``checkpoint``, ``policy``, ``env_size``, ``action``,
    ``device`` fields). Raises :class:`EvalError` for a missing or unfitting choice."""
    if args.policy == "random":
        if args.checkpoint is not None:
            raise EvalError("give either --checkpoint or --policy random, not both")
        if args.deterministic:
            raise EvalError("--deterministic needs a checkpoint: random actions have no most likely action")
        size = args.env_size or _smallest_size_holding(level_paths)
        action = args.action or "multi_discrete"
        return PolicySource(None, None, "symbolic_flat", action, static_params_for_size(size), None, "random policy")
    if args.checkpoint is None:
        raise EvalError("no policy: give --checkpoint RUN_DIR/checkpoint or --policy random")
    loaded = load_policy(args.checkpoint, device=args.device)
    static = loaded.static_env_params
    if args.env_size is not None and not _same_sizes(static, static_params_for_size(args.env_size)):
        raise EvalError(
            f"checkpoint {args.checkpoint} was trained at sizes {_describe_sizes(static)}; "
            f"--env-size {args.env_size} has {_describe_sizes(static_params_for_size(args.env_size))}"
        )
    if args.action is not None and args.action != loaded.action_type:
        raise EvalError(f"checkpoint {args.checkpoint} acts with {loaded.action_type!r}, not --action {args.action!r}")
    actor_critic = loaded.actor_critic
    return PolicySource(
        actor_critic.policy,
        actor_critic.make_primer(),
        loaded.observation_type,
        loaded.action_type,
        static,
        loaded.env_params,
        f"checkpoint {args.checkpoint}",
    )


def _smallest_size_holding(level_paths: list[Path]) -> str:
    sizes = []
    for path in level_paths:
        if not Path(path).is_file():
            raise EvalError(f"level file {str(path)!r} does not exist")
        try:
            sizes.append(size_name(load_level(path).static))
        except LevelFormatError as e:
            raise EvalError(" ".join(str(e).split())) from None
    if "custom" in sizes:
        too_large = level_paths[sizes.index("custom")]
        raise EvalError(f"level {too_large} is larger than env size l ({_describe_sizes(static_params_for_size('l'))})")
    return max(sizes, key=ENV_SIZES.index)


def _same_sizes(a: StaticEnvParams, b: StaticEnvParams) -> bool:
    return a.fits_in(b) and b.fits_in(a)


def _describe_sizes(static: StaticEnvParams) -> str:
    return (
        f"{static.num_polygons} polygons, {static.num_circles} circles, "
        f"{static.num_joints} joints, {static.num_thrusters} thrusters"
    )


def fail(command: str, error: Exception) -> int:
    """Print ``error`` as one line on stderr; returns the exit code 2."""
    print(f"kinetix-torch {command}: error: {' '.join(str(error).split())}", file=sys.stderr)
    return 2


BAD_INPUT = (EvalError, LevelFormatError, CheckpointError, FileNotFoundError)
"""Errors that are the user's input, shown as one line instead of a traceback."""


def main(argv=None) -> int:
    args = parse_dataclass(Args, argv, "kinetix-torch eval")
    try:
        paths = resolve_level_paths(args.levels, args.levels_root)
        source = policy_source(args, paths)
        report = evaluate(
            source.policy,
            paths,
            attempts=args.attempts,
            deterministic=args.deterministic,
            seed=args.seed,
            device=args.device,
            policy_name=source.name,
            **source.env_options(),
        )
    except BAD_INPUT as e:
        return fail("eval", e)
    print(report.table())
    for path, write in ((args.json, report.write_json), (args.csv, report.write_csv)):
        if path is not None:
            write(path)
            print(f"wrote {path}")
    return 0
