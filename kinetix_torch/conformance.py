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

An engine case out of tolerance is re-run with its input nudged by a few ulps (``--nudge-ulps``:
every nonzero float ``n`` steps up, ``n`` down, and two seeded draws of independent steps in
``[-n, n]``). When every failing sample's own output then moves by more than the tolerance, the
case is ill-conditioned (a near-tie that rounding decides, as upstream's rounding decided it
otherwise): it is listed and counted as *sensitive* with the output that jumps and by how much,
and does not fail the run. A wrong engine moves only by rounding under such a nudge, so it still
fails.

A NaN or infinity where upstream is finite (or in the golden data itself), or in a nudged re-run,
is a failure, named as such in the table. When the folder holds a ``MANIFEST.json`` (``files``:
path -> ``sha256``), every file is checked against it first. ``--json PATH`` also writes the
report (settings, summary counts, the sensitive and failed cases, and every case).

Exit status 1 when an engine case fails (out of tolerance and not sensitive) or the event match
rate is below ``--min-event-match``; 2 when the golden folder is unusable (missing, empty, no case
matching ``--cases``, damaged files).
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
from .atomic import atomic_write_text
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
        excess = float(np.max(_excess(abs_err, ref, atol, rtol)))
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


def _excess(abs_err: np.ndarray, ref: np.ndarray, atol: float, rtol: float) -> np.ndarray:
    """``|got - ref| / (atol + rtol * |ref|)``: <= 1 means within tolerance; infinite where either
    side is not finite."""
    ref = ref.astype(np.float64)
    finite = np.isfinite(abs_err) & np.isfinite(ref)
    return np.where(finite, abs_err / (atol + rtol * np.abs(np.where(finite, ref, 0.0))), np.inf)


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


def _per_sample(values: np.ndarray) -> np.ndarray:
    """Max over everything but the leading (sample) axis."""
    return values.reshape(len(values), -1).max(axis=1, initial=0.0)


def _state_errors(got: dict, ref: dict, keys) -> dict[str, np.ndarray]:
    """``|got - ref|`` per state field; polygon-pair contact points matched as unordered pairs."""
    rr_keys = [k for k in keys if k.startswith("acc_rr_manifolds.")]
    rr_errors = _unordered_rr(got, ref, rr_keys) if rr_keys else {}
    return {k: rr_errors[k] if k in rr_errors else _abs_error(got[k], ref[k]) for k in keys}


def sample_excess(got: dict, ref: dict, keys, atol: float, rtol: float) -> np.ndarray:
    """Per sample (leading axis), the worst ``|got - ref| / (atol + rtol |ref|)`` over ``keys``;
    <= 1 means within tolerance. Polygon-pair contact points are matched as unordered pairs."""
    keys = list(keys)
    worst = np.zeros(len(ref[keys[0]]))
    for k, err in _state_errors(got, ref, keys).items():
        worst = np.maximum(worst, _per_sample(_excess(err, ref[k], atol, rtol)))
    return worst


def step_errors(state: dict, manifolds: dict, expected: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A batch of engine steps against ``expected`` (golden keys: ``output.<field>``,
    ``manifolds.<kind>.<field>``): ``name -> (|got - expected|, expected)`` with the state fields
    named ``<field>`` and the returned contacts ``manifolds.<kind>.<field>``. A returned
    polygon-pair contact may equal either point of the final state's pair (upstream swaps them on
    near ties)."""
    outputs = {k[len("output.") :]: v for k, v in expected.items() if k.startswith("output.")}
    errors = {k: (err, outputs[k]) for k, err in _state_errors(state, outputs, sorted(outputs)).items()}
    for kind in MANIFOLD_KINDS:
        prefix = f"manifolds.{kind}."
        for key in (k for k in expected if k.startswith(prefix)):
            leaf = key[len(prefix) :]
            got = manifolds[f"{kind}.{leaf}"]
            err = _abs_error(got, expected[key])
            if kind == "rr":
                err = np.minimum(err, _abs_error(got, outputs[f"acc_rr_manifolds.{leaf}"][:, :, 1]))
            errors[key] = (err, expected[key])
    return errors


# ------------------------------------------------------------------------------------------------
# Ill-conditioned cases

NUDGE_ULPS = 4
"""How many float32 steps (ulps) each input float moves when a failing case is re-run."""
NUDGE_SEED = 0
"""Seed of the random nudges, so a report is reproducible."""


def nudge(values: np.ndarray, steps) -> np.ndarray:
    """``values`` moved by ``steps`` representable floats each (``np.nextafter``; negative steps
    move down). Zeros stay zero: an exact zero (an immovable body's inverse mass, an empty slot)
    is a switch, not a measurement; NaN and infinity stay too."""
    steps = np.broadcast_to(steps, values.shape)
    towards = np.where(steps > 0, np.inf, -np.inf).astype(values.dtype)
    out = values.copy()
    for k in range(1, int(np.abs(steps).max(initial=0)) + 1):
        out = np.where((np.abs(steps) >= k) & (values != 0) & np.isfinite(values), np.nextafter(out, towards), out)
    return out


def nudged_inputs(inputs: dict, ulps: int, seed: int = NUDGE_SEED) -> dict[str, dict]:
    """Copies of an engine input with every float field nudged: all values ``ulps`` up, all
    ``ulps`` down, and two draws of an independent step in ``[-ulps, ulps]`` per value."""
    rng = np.random.default_rng(seed)
    floats = [k for k, v in inputs.items() if v.dtype.kind == "f"]
    uniform = {f"+{ulps} ulps": ulps, f"-{ulps} ulps": -ulps}
    copies = {label: {**inputs, **{k: nudge(inputs[k], steps) for k in floats}} for label, steps in uniform.items()}
    for draw in (1, 2):
        copies[f"random in [-{ulps}, {ulps}] ulps #{draw}"] = {
            **inputs, **{k: nudge(inputs[k], rng.integers(-ulps, ulps + 1, inputs[k].shape)) for k in floats}
        }
    return copies


@dataclass
class Sensitivity:
    """How far nudging a failing case's input by a few ulps moves the engine's own output, on the
    samples that are out of tolerance against upstream. The case is *sensitive* (ill-conditioned,
    not a failure) when every one of them moves by more than the tolerance."""

    samples: list[int]
    """Samples (rows of the engine file) out of tolerance against upstream."""
    field: str
    """The output that moved most, on the decisive sample: the least-moved failing sample, or one
    whose nudged output is not finite."""
    jump: float
    """Its largest absolute change there."""
    excess: float
    """That change over the tolerance (``atol + rtol * |output|``); infinite for NaN/inf."""
    nudge: str
    """The nudge that moved it, e.g. ``+4 ulps``."""

    @property
    def sensitive(self) -> bool:
        return 1.0 < self.excess < float("inf")

    def describe(self) -> str:
        moved = "turns NaN/inf" if np.isinf(self.excess) else f"jumps {self.jump:.2e} ({self.excess:.3g} x tolerance)"
        return f"sample(s) {','.join(map(str, self.samples))}: {self.field} {moved} under {self.nudge}"


def measure_sensitivity(engine, case: Case, inputs: dict, actions: np.ndarray, own: dict, samples: np.ndarray,
                        atol: float, rtol: float, ulps: int) -> Sensitivity:
    """Re-run ``case`` on :func:`nudged_inputs` and compare with the engine's own output ``own``
    (golden keys, see :func:`step_errors`) on ``samples``."""
    moved = np.full(len(samples), -1.0)  # per sample: the largest excess over nudges and outputs
    where: list[tuple[str, str, float]] = [("", "", 0.0)] * len(samples)  # (nudge, output, jump)
    for label, nudged in nudged_inputs(inputs, ulps).items():
        state, manifolds = engine.physics(nudged, actions, case.static, case.env_params)
        for name, (err, ref) in step_errors(state, manifolds, own).items():
            excess = _per_sample(_excess(err, ref, atol, rtol))[samples]
            jump = _per_sample(err)[samples]
            for i in np.flatnonzero(excess > moved):
                moved[i], where[i] = excess[i], (label, name, float(jump[i]))
    decisive = int(np.argmax(moved)) if np.isinf(moved).any() else int(np.argmin(moved))
    label, name, jump = where[decisive]
    return Sensitivity([int(s) for s in samples], name, jump, float(moved[decisive]), label)


# ------------------------------------------------------------------------------------------------
# Engine steps


def check_engine_case(engine, case: Case, atol: float, rtol: float,
                      nudge_ulps: int = NUDGE_ULPS) -> tuple[Errors, Sensitivity | None]:
    """Every sample of ``case``'s engine file, one engine step each, against upstream. A case out
    of tolerance with finite errors also gets its :class:`Sensitivity` (unless ``nudge_ulps`` is 0)."""
    data = load_npz(case.file("engine.npz"))
    inputs = {k[len("input.") :]: v for k, v in data.items() if k.startswith("input.")}
    state, manifolds = engine.physics(inputs, data["action"], case.static, case.env_params)
    compared = step_errors(state, manifolds, data)
    errors = Errors()
    for name, (err, ref) in compared.items():
        errors.add(name, err, ref.astype(np.float64), atol, rtol)
    if errors.ok or not np.isfinite(errors.max_excess) or nudge_ulps <= 0:
        return errors, None
    excess = np.max([_per_sample(_excess(err, ref, atol, rtol)) for err, ref in compared.values()], axis=0)
    own = {f"output.{k}": state[k] for k in compared if not k.startswith("manifolds.")}
    own |= {k: manifolds[k[len("manifolds.") :]] for k in compared if k.startswith("manifolds.")}
    sensitivity = measure_sensitivity(engine, case, inputs, data["action"], own, np.flatnonzero(excess > 1),
                                      atol, rtol, nudge_ulps)
    return errors, sensitivity


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
    sensitivity: Sensitivity | None = None
    """Set when the engine steps are out of tolerance with finite errors (see :class:`Sensitivity`)."""
    trajectories: list[TrajectoryResult] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``ok``, ``sensitive`` (out of tolerance on ill-conditioned samples only: listed, not a
        failure) or ``fail``."""
        if self.engine.ok:
            return "ok"
        return "sensitive" if self.sensitivity is not None and self.sensitivity.sensitive else "fail"


def _finite_or_none(value: float) -> float | None:
    """JSON has no infinity: a non-finite error is written as null (the status says FAIL)."""
    return value if np.isfinite(value) else None


@dataclass
class Report:
    cases: list[CaseReport]

    @property
    def engine_pass_fraction(self) -> float:
        return float(np.mean([c.engine.ok for c in self.cases])) if self.cases else 0.0

    @property
    def sensitive(self) -> list[CaseReport]:
        return [c for c in self.cases if c.status == "sensitive"]

    @property
    def failed(self) -> list[CaseReport]:
        return [c for c in self.cases if c.status == "fail"]

    @property
    def event_match_fraction(self) -> float:
        matches = [t.event_matches for c in self.cases for t in c.trajectories]
        return float(np.mean(matches)) if matches else 1.0

    def summary(self) -> str:
        return (
            f"engine cases within tolerance: {self.engine_pass_fraction:.1%} of {len(self.cases)}; "
            f"sensitive (ill-conditioned, not failures): {len(self.sensitive)}; failed: {len(self.failed)}; "
            f"rewarded contact events matching: {self.event_match_fraction:.1%}"
        )

    def table(self) -> str:
        head = f"{'case':42s} {'fields':>6s} {'max abs':>9s} {'max rel':>9s} {'engine':>9s}  trajectories (diverges at / steps, event)"
        lines = [head, "-" * len(head)]
        for c in self.cases:
            e = c.engine
            traj = "  ".join(
                f"{t.action_type}: {t.first_divergence if t.first_divergence is not None else '-'}/{t.num_steps}"
                f" {'ok' if t.event_matches else f'EVENT {t.event} vs {t.upstream_event}'}"
                for t in c.trajectories
            )
            status = {"ok": "ok", "sensitive": "SENSITIVE", "fail": f"FAIL ({e.worst_field})"}[c.status]
            lines.append(f"{c.case.name:42s} {e.fields:6d} {e.max_abs:9.2e} {e.max_rel:9.2e} {status:>9s}  {traj}")
        nudged = [c for c in self.cases if c.sensitivity is not None]
        if nudged:
            lines.append("out of tolerance, re-run with the input nudged by a few ulps:")
            lines += [f"  {c.case.name}  {c.status.upper()}: worst vs upstream {c.engine.worst_field} "
                      f"({c.engine.max_abs:.2e}); {c.sensitivity.describe()}" for c in nudged]
        lines.append(self.summary())
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """The report as JSON-ready data: per case its status, errors, sensitivity and trajectories."""
        cases = []
        for c in self.cases:
            s = c.sensitivity
            cases.append({
                "case": c.case.name,
                "status": c.status,
                "fields": c.engine.fields,
                "max_abs": _finite_or_none(c.engine.max_abs),
                "max_rel": _finite_or_none(c.engine.max_rel),
                "worst_field": c.engine.worst_field,
                "sensitivity": None if s is None else {
                    "samples": s.samples, "field": s.field, "jump": _finite_or_none(s.jump),
                    "excess": _finite_or_none(s.excess), "nudge": s.nudge,
                },
                "trajectories": [{
                    "action_type": t.action_type, "num_steps": t.num_steps, "first_divergence": t.first_divergence,
                    "event": t.event, "upstream_event": t.upstream_event, "event_matches": t.event_matches,
                } for t in c.trajectories],
            })
        return {
            "summary": {
                "cases": len(self.cases),
                "within_tolerance": sum(c.status == "ok" for c in self.cases),
                "sensitive": len(self.sensitive),
                "failed": len(self.failed),
                "event_match_fraction": self.event_match_fraction,
            },
            "sensitive": [c.case.name for c in self.sensitive],
            "failed": [c.case.name for c in self.failed],
            "cases": cases,
        }


def run(
    golden: Path,
    backend: str = "jax",
    atol: float = 1e-4,
    rtol: float = 1e-4,
    divergence: float = 1e-3,
    trajectories: bool = True,
    pattern: str = "",
    nudge_ulps: int = NUDGE_ULPS,
) -> Report:
    engine = NumpyEngine(backend)
    verify_manifest(Path(golden))
    cases = [c for c in discover_cases(Path(golden)) if pattern in c.name]
    if not cases:
        raise GoldenDataError(f"no golden cases (*.engine.npz) under {golden}" + (f" matching {pattern!r}" if pattern else ""))
    reports = {c.name: CaseReport(c, *check_engine_case(engine, c, atol, rtol, nudge_ulps)) for c in cases}
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
    parser.add_argument(
        "--nudge-ulps", type=int, default=NUDGE_ULPS,
        help="re-run a failing case with its input floats moved by this many ulps; if that moves the engine's "
             "own output past the tolerance the case is listed as sensitive, not failed (0: every miss fails)",
    )
    parser.add_argument("--no-trajectories", action="store_true", help="check single engine steps only")
    parser.add_argument("--cases", default="", help="only cases whose name contains this")
    parser.add_argument("--json", type=Path, help="also write the report to this JSON file")
    args = parser.parse_args(argv)
    if not args.golden.is_dir():
        parser.error(f"--golden {args.golden}: no such folder")
    if args.nudge_ulps < 0:
        parser.error(f"--nudge-ulps {args.nudge_ulps}: expected 0 or more")
    if args.engine == "triton-interpret":
        os.environ["TRITON_INTERPRET"] = "1"  # must precede triton's import
    if args.engine == "triton" and not torch.cuda.is_available():
        raise BackendUnavailable("--engine triton needs a CUDA GPU (use --engine triton-interpret on the CPU)")
    try:
        report = run(args.golden, args.engine, args.atol, args.rtol, args.divergence, not args.no_trajectories,
                     args.cases, args.nudge_ulps)
    except GoldenDataError as exc:
        print(f"conformance: {exc}", file=sys.stderr)
        return 2
    print(report.table())
    if args.json is not None:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "json"}
        atomic_write_text(args.json, json.dumps({"settings": settings, **report.to_dict()}, indent=1, allow_nan=False))
    if report.failed or report.event_match_fraction < args.min_event_match:
        print(f"FAILED: {len(report.failed)} engine case(s) out of tolerance (not sensitive); event match {report.event_match_fraction:.1%}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
