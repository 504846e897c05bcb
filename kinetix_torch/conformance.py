"""Conformance against upstream: run an engine backend on a folder of golden cases.

    python -m kinetix_torch.conformance --golden ../shared/golden [--engine jax]

A golden folder (any folder in the ``shared/golden`` format, searched recursively) holds cases
``<case>.json`` (sidecar with ``static_env_params`` / ``env_params``), ``<case>.engine.npz``
(single engine steps: ``input.*``, ``action``, ``output.*``, ``manifolds.*``) and
``<case>.traj.<action_type>.npz`` (env trajectories: ``state.*`` rows, ``action_processed``,
``reward``, ``terminal_step``).

Per case the table shows:

* engine steps: fields compared, worst absolute and relative error over every state field and
  returned manifold, and whether all are within ``atol + rtol * |upstream|``. Polygon-polygon
  contact points are compared as an unordered pair (their order flips on near ties upstream).
* trajectories (engine only, driven by the recorded processed actions, ``frame_skip`` engine steps
  per env step): the first env step whose state differs by more than ``--divergence`` (``-`` when
  none), and whether the rewarded contact event (first green-blue +1 / green-red -1 contact, and
  its env step) matches upstream's.

A NaN or infinity where upstream is finite (or in the golden data itself) is a failure, named as
such in the table. When the folder holds a ``MANIFEST.json`` (``files``: path -> ``sha256``), every
file is checked against it first.

Exit status 1 when an engine case fails or the event match rate is below ``--min-event-match``;
2 when the golden folder is unusable (missing, empty, no case matching ``--cases``, damaged files).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import schema
from .engine import BACKENDS, BackendUnavailable
from .params import EnvParams, StaticEnvParams
from .rewards import substep_rewards
from .topology import MANIFOLD_KINDS

# ------------------------------------------------------------------------------------------------
# Cases


class GoldenDataError(ValueError):
    """The golden folder cannot be used: missing or damaged files, a checksum mismatch, no cases."""


@dataclass
class Case:
    name: str
    folder: Path
    static: StaticEnvParams
    env_params: EnvParams

    def file(self, suffix: str) -> Path:
        return self.folder / f"{Path(self.name).name}.{suffix}"


def discover_cases(golden: Path) -> list[Case]:
    """Every ``*.engine.npz`` under ``golden`` with its sidecar, sorted by name."""
    cases = []
    for engine_file in sorted(Path(golden).rglob("*.engine.npz")):
        stem = engine_file.name[: -len(".engine.npz")]
        sidecar = engine_file.with_name(f"{stem}.json")
        if not sidecar.exists():
            raise GoldenDataError(f"{engine_file}: sidecar {sidecar.name} is missing")
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise GoldenDataError(f"{sidecar}: not a readable JSON sidecar ({exc})") from None
        static = StaticEnvParams.from_dict(meta["static_env_params"], where=f"{sidecar}: static_env_params")
        env_params = EnvParams.from_dict(meta["env_params"], where=f"{sidecar}: env_params")
        name = str(engine_file.relative_to(golden).with_name(stem))
        cases.append(Case(name, engine_file.parent, static, env_params))
    return cases


def verify_manifest(golden: Path) -> int:
    """Check every file listed in ``golden/MANIFEST.json`` (if there is one) against its sha256.
    Returns the number of files checked."""
    manifest = Path(golden) / "MANIFEST.json"
    if not manifest.exists():
        return 0
    try:
        files = json.loads(manifest.read_text())["files"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise GoldenDataError(f"{manifest}: not a readable manifest with a 'files' table ({exc!r})") from None
    for name, entry in files.items():
        path = Path(golden) / name
        if not path.exists():
            raise GoldenDataError(f"{path}: listed in {manifest.name} but missing")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != entry.get("sha256"):
            raise GoldenDataError(f"{path}: sha256 {digest[:12]}… differs from {manifest.name} ({str(entry.get('sha256'))[:12]}…)")
    return len(files)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of a golden ``.npz``; a damaged file raises :class:`GoldenDataError` naming it."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise GoldenDataError(f"{path}: not a readable .npz archive ({exc})") from None


# ------------------------------------------------------------------------------------------------
# Running an engine on stacked numpy states


class NumpyEngine:
    """Adapter: flat numpy states in, flat numpy states out, through :mod:`kinetix_torch.engine`."""

    def __init__(self, backend: str):
        self.backend = backend

    def _call(self, step, flat_state: dict, actions: np.ndarray, static: StaticEnvParams, params: EnvParams):
        batch = (actions.shape[0],)
        full = schema.allocate(static, batch)
        full.update(flat_state)
        device = "cuda" if self.backend == "triton" else "cpu"
        td = schema.to_tensordict(full, batch, device=device)
        out, extra = step(td, torch.from_numpy(actions).to(device), params, static, backend=self.backend)
        return schema.tensordict_to_numpy(out), schema.tensordict_to_numpy(extra)

    def physics(self, flat_state, actions, static, params):
        """One physics substep: ``(state, manifolds)``."""
        from . import engine

        return self._call(engine.physics_step, flat_state, actions, static, params)

    def env(self, flat_state, actions, static, params):
        """One env step (``frame_skip`` substeps): ``(state, contact info)``."""
        from . import engine

        return self._call(engine.step, flat_state, actions, static, params)


# ------------------------------------------------------------------------------------------------
# Comparison


@dataclass
class Errors:
    """Worst errors over the fields compared so far."""

    fields: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    max_excess: float = 0.0
    """max of ``|got - ref| / (atol + rtol * |ref|)``: <= 1 means within tolerance; infinite for
    non-finite values (see :func:`_abs_error`)."""
    worst_field: str = ""

    def add(self, key: str, abs_err: np.ndarray, ref: np.ndarray, atol: float, rtol: float) -> None:
        self.fields += 1
        if abs_err.size == 0:
            return
        if not np.isfinite(ref).all():
            self.max_abs = self.max_excess = float("inf")
            self.worst_field = f"{key}: non-finite golden value"
            return
        excess = float(np.max(abs_err / (atol + rtol * np.abs(ref))))
        if np.isinf(excess) and not np.isinf(self.max_excess):
            self.max_abs, self.max_excess, self.worst_field = float("inf"), excess, f"{key}: NaN/inf"
            return
        self.max_abs = max(self.max_abs, float(abs_err.max()))
        self.max_rel = max(self.max_rel, float(np.max(abs_err / np.maximum(np.abs(ref), 1e-6))))
        if excess > self.max_excess:
            self.max_excess, self.worst_field = excess, key

    @property
    def ok(self) -> bool:
        return self.max_excess <= 1.0


def _abs_error(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``|got - ref|``, infinite wherever either side is NaN or infinite (never NaN, so every
    comparison with a tolerance fails on it)."""
    if ref.dtype.kind in "bi":
        return (got != ref).astype(np.float64)
    got, ref = got.astype(np.float64), ref.astype(np.float64)
    finite = np.isfinite(got) & np.isfinite(ref)
    return np.where(finite, np.abs(np.where(finite, got - ref, 0.0)), np.inf)


def _unordered_rr(got: dict, ref: dict, keys: list[str]) -> dict[str, np.ndarray]:
    """Per-field errors of polygon-polygon manifolds ``(..., RR, 2, ...)``, each pair's two contact
    points matched in whichever order fits upstream best."""
    direct = {k: _abs_error(got[k], ref[k]) for k in keys}
    crossed = {k: _abs_error(np.flip(got[k], axis=_point_axis(got[k], k)), ref[k]) for k in keys}
    pair_direct = _pair_max(direct)
    pair_crossed = _pair_max(crossed)
    use_crossed = pair_crossed < pair_direct
    out = {}
    for k in keys:
        mask = use_crossed.reshape(use_crossed.shape + (1,) * (direct[k].ndim - use_crossed.ndim))
        out[k] = np.where(mask, crossed[k], direct[k])
    return out


def _point_axis(arr: np.ndarray, key: str) -> int:
    """Axis of the two contact points: right after the pair axis."""
    return arr.ndim - 1 - _vector_dims(key)


def _vector_dims(key: str) -> int:
    """1 for the 2-vector manifold fields, 0 for scalars."""
    return int(key.rsplit(".", 1)[-1] in ("normal", "collision_point"))


def _pair_max(errors: dict) -> np.ndarray:
    """Max error per (batch, pair) over fields and points."""
    per_field = []
    for k, e in errors.items():
        trailing = 1 + _vector_dims(k)
        per_field.append(e.reshape(e.shape[: e.ndim - trailing] + (-1,)).max(axis=-1))
    return np.max(np.stack(per_field), axis=0)


def compare_states(got: dict, ref: dict, keys, errors: Errors, atol: float, rtol: float) -> None:
    rr_keys = [k for k in keys if k.startswith("acc_rr_manifolds.")]
    rr_errors = _unordered_rr(got, ref, rr_keys) if rr_keys else {}
    for k in keys:
        err = rr_errors[k] if k in rr_errors else _abs_error(got[k], ref[k])
        errors.add(k, err, ref[k].astype(np.float64), atol, rtol)


def sample_excess(got: dict, ref: dict, keys, atol: float, rtol: float) -> np.ndarray:
    """Per sample (leading axis), the worst ``|got - ref| / (atol + rtol |ref|)`` over ``keys``;
    <= 1 means within tolerance. Polygon-pair contact points are matched as unordered pairs."""
    keys = list(keys)
    rr_keys = [k for k in keys if k.startswith("acc_rr_manifolds.")]
    rr_errors = _unordered_rr(got, ref, rr_keys) if rr_keys else {}
    worst = np.zeros(len(ref[keys[0]]))
    for k in keys:
        err = rr_errors[k] if k in rr_errors else _abs_error(got[k], ref[k])
        if err.size:
            excess = err / (atol + rtol * np.abs(ref[k].astype(np.float64)))
            worst = np.maximum(worst, excess.reshape(len(worst), -1).max(axis=1))
    return worst


# ------------------------------------------------------------------------------------------------
# Engine steps


def check_engine_case(engine, case: Case, atol: float, rtol: float) -> Errors:
    data = load_npz(case.file("engine.npz"))
    inputs = {k[len("input.") :]: v for k, v in data.items() if k.startswith("input.")}
    outputs = {k[len("output.") :]: v for k, v in data.items() if k.startswith("output.")}
    got, manifolds = engine.physics(inputs, data["action"], case.static, case.env_params)
    errors = Errors()
    compare_states(got, outputs, sorted(outputs), errors, atol, rtol)
    # Returned manifolds: rr is point 0 of the final state's pair, or point 1 when upstream swapped.
    for kind in MANIFOLD_KINDS:
        prefix = f"manifolds.{kind}."
        for key in (k for k in data if k.startswith(prefix)):
            leaf = key[len(prefix) :]
            err = _abs_error(manifolds[f"{kind}.{leaf}"], data[key])
            if kind == "rr":
                other = outputs[f"acc_rr_manifolds.{leaf}"][:, :, 1]
                err = np.minimum(err, _abs_error(manifolds[f"{kind}.{leaf}"], other))
            errors.add(key, err, data[key].astype(np.float64), atol, rtol)
    return errors


# ------------------------------------------------------------------------------------------------
# Trajectories


@dataclass
class TrajectoryResult:
    action_type: str
    num_steps: int
    first_divergence: int | None
    """First env step (1-based row of ``state``) whose sim state differs by more than the threshold."""
    upstream_event: tuple[int, int] | None
    """(env step, +1 or -1) of upstream's rewarded contact, None if the episode did not end."""
    event: tuple[int, int] | None

    @property
    def event_matches(self) -> bool:
        return self.event == self.upstream_event


def check_trajectories(engine, cases: list[Case], action_type: str, divergence: float) -> list[TrajectoryResult]:
    """Run all cases (one static configuration) together, open loop on the recorded actions."""
    static, params = cases[0].static, cases[0].env_params
    trajs = [load_npz(c.file(f"traj.{action_type}.npz")) for c in cases]
    sim_keys = [k for k in schema.SIM_KEYS]
    env_keys = ("polygon_shape_roles", "circle_shape_roles")
    states = [{k: t[f"state.{k}"] for k in sim_keys + list(env_keys)} for t in trajs]
    steps = [int(t["num_steps"]) for t in trajs]
    horizon = max(steps)
    actions = np.zeros((len(cases), horizon, static.action_dim), np.float32)
    for i, t in enumerate(trajs):
        actions[i, : steps[i]] = t["action_processed"]

    current = {k: np.stack([s[k][0] for s in states]) for k in sim_keys}
    roles = {k: np.stack([s[k][0] for s in states]) for k in env_keys}
    diverged: list[int | None] = [None] * len(cases)
    events: list[tuple[int, int] | None] = [None] * len(cases)
    for t in range(horizon):
        current, info = engine.env({**current, **roles}, actions[:, t], static, params)
        current = {k: current[k] for k in sim_keys}
        info = {k: torch.from_numpy(v) for k, v in info.items()}
        for i, rewards in enumerate(substep_rewards(info).numpy()):
            if events[i] is None and rewards.any() and t < steps[i]:
                events[i] = (t, int(rewards[np.flatnonzero(rewards)[0]]))
        for i, s in enumerate(states):
            if t < steps[i] and diverged[i] is None:
                worst = max(float(np.max(_abs_error(current[k][i], s[k][t + 1]), initial=0)) for k in sim_keys)
                if not worst <= divergence:  # NaN diverges too
                    diverged[i] = t + 1

    results = []
    for i, tr in enumerate(trajs):
        terminal = int(tr["terminal_step"])
        upstream = None if terminal < 0 else (terminal, int(np.sign(tr["reward"][terminal])))
        results.append(TrajectoryResult(action_type, steps[i], diverged[i], upstream, events[i]))
    return results


# ------------------------------------------------------------------------------------------------
# Report


@dataclass
class CaseReport:
    case: Case
    engine: Errors
    trajectories: list[TrajectoryResult] = field(default_factory=list)


@dataclass
class Report:
    cases: list[CaseReport]

    @property
    def engine_pass_fraction(self) -> float:
        return float(np.mean([c.engine.ok for c in self.cases])) if self.cases else 0.0

    @property
    def event_match_fraction(self) -> float:
        matches = [t.event_matches for c in self.cases for t in c.trajectories]
        return float(np.mean(matches)) if matches else 1.0

    def table(self) -> str:
        head = f"{'case':42s} {'fields':>6s} {'max abs':>9s} {'max rel':>9s} {'engine':>6s}  trajectories (diverges at / steps, event)"
        lines = [head, "-" * len(head)]
        for c in self.cases:
            e = c.engine
            traj = "  ".join(
                f"{t.action_type}: {t.first_divergence if t.first_divergence is not None else '-'}/{t.num_steps}"
                f" {'ok' if t.event_matches else f'EVENT {t.event} vs {t.upstream_event}'}"
                for t in c.trajectories
            )
            status = "ok" if e.ok else f"FAIL ({e.worst_field})"
            lines.append(f"{c.case.name:42s} {e.fields:6d} {e.max_abs:9.2e} {e.max_rel:9.2e} {status:>6s}  {traj}")
        lines.append(
            f"engine cases within tolerance: {self.engine_pass_fraction:.1%} of {len(self.cases)}; "
            f"rewarded contact events matching: {self.event_match_fraction:.1%}"
        )
        return "\n".join(lines)


def run(
    golden: Path,
    backend: str = "jax",
    atol: float = 1e-4,
    rtol: float = 1e-4,
    divergence: float = 1e-3,
    trajectories: bool = True,
    pattern: str = "",
) -> Report:
    engine = NumpyEngine(backend)
    verify_manifest(Path(golden))
    cases = [c for c in discover_cases(Path(golden)) if pattern in c.name]
    if not cases:
        raise GoldenDataError(f"no golden cases (*.engine.npz) under {golden}" + (f" matching {pattern!r}" if pattern else ""))
    reports = {c.name: CaseReport(c, check_engine_case(engine, c, atol, rtol)) for c in cases}
    if trajectories:
        groups: dict[tuple, list[Case]] = {}
        for c in cases:
            groups.setdefault((c.static, tuple(sorted(c.env_params.physics_values().items()))), []).append(c)
        for group in groups.values():
            for action_type in ("multi_discrete", "continuous"):
                present = [c for c in group if c.file(f"traj.{action_type}.npz").exists()]
                if present:
                    for c, result in zip(present, check_trajectories(engine, present, action_type, divergence)):
                        reports[c.name].trajectories.append(result)
    return Report(list(reports.values()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kinetix_torch.conformance", description=__doc__.split("\n\n")[0])
    parser.add_argument("--golden", required=True, type=Path, help="folder of golden cases (searched recursively)")
    parser.add_argument("--engine", default="jax", choices=BACKENDS, help="engine backend to check")
    parser.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance of single engine steps")
    parser.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance of single engine steps")
    parser.add_argument("--divergence", type=float, default=1e-3, help="trajectory error that counts as divergence")
    parser.add_argument(
        "--min-event-match", type=float, default=1.0,
        help="required share of trajectories whose rewarded contact event matches upstream's (default: all)",
    )
    parser.add_argument("--no-trajectories", action="store_true", help="check single engine steps only")
    parser.add_argument("--cases", default="", help="only cases whose name contains this")
    args = parser.parse_args(argv)
    if not args.golden.is_dir():
        parser.error(f"--golden {args.golden}: no such folder")
    if args.engine == "triton-interpret":
        os.environ["TRITON_INTERPRET"] = "1"  # must precede triton's import
    if args.engine == "triton" and not torch.cuda.is_available():
        raise BackendUnavailable("--engine triton needs a CUDA GPU (use --engine triton-interpret on the CPU)")
    try:
        report = run(args.golden, args.engine, args.atol, args.rtol, args.divergence, not args.no_trajectories, args.cases)
    except GoldenDataError as exc:
        print(f"conformance: {exc}", file=sys.stderr)
        return 2
    print(report.table())
    failed = [c.case.name for c in report.cases if not c.engine.ok]
    if failed or report.event_match_fraction < args.min_event_match:
        print(f"FAILED: {len(failed)} engine case(s) out of tolerance; event match {report.event_match_fraction:.1%}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
