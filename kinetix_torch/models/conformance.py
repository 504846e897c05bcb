"""Conformance of the PyTorch networks with upstream Kinetix's: run checkpoints on recorded inputs.

    python -m kinetix_torch.models.conformance --golden ../shared/golden/models

The folder holds upstream checkpoint folders (``params.safetensors`` + ``config.json``) and
``<name>.io.npz`` files of one ``network.apply`` call each (time-major inputs ``obs``/``obs.*``,
``dones``, ``carry_in.*``, ``actions``; outputs ``out.*``, ``carry_out.*``; optional second calls
``alt.*`` with another input carry ``alt.carry_in.*`` or another ``alt.log_std``). Each ``.io.npz``
is run with the checkpoint its sidecar ``<name>.io.json`` names (``"checkpoint"``), else the folder
``<name>/``, else the folder of the longest ``_``-separated prefix of ``<name>``.

Per file it prints the worst absolute error of every recorded output (value, actor head, torso,
GRU output, distribution parameters, log-prob, entropy, carry). Exit status 1 when any exceeds
``--atol`` or is NaN/inf (named), or a file cannot be loaded (named); 2 when the folder has no
``.io.npz`` file with a checkpoint.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDict
from torchrl.modules import set_recurrent_mode

from ..commands.args import parse_dataclass
from .actor_critic import RECURRENT_STATE_KEY, ActorCritic
from .checkpoint import CONFIG_FILE, load_upstream_checkpoint

__all__ = ["Args", "main", "run_upstream_call", "find_pairs"]

IO_SUFFIX, SIDECAR_SUFFIX = ".io.npz", ".io.json"


@dataclass
class Args:
    """Check PyTorch networks against upstream's recorded network calls."""

    golden: Path | None = None
    """Folder of upstream checkpoints and .io.npz files (searched recursively)."""
    atol: float = 1e-5
    """Largest absolute error allowed on any output."""
    device: str = "cpu"
    """Torch device to run on (TF32 is disabled)."""


def _checkpoint_for(io_path: Path) -> Path:
    """The checkpoint folder an ``.io.npz`` file belongs to (see the module docstring)."""
    name = io_path.name[: -len(IO_SUFFIX)]
    sidecar = io_path.with_name(name + SIDECAR_SUFFIX)
    if sidecar.is_file():
        try:
            named = json.loads(sidecar.read_text(encoding="utf-8")).get("checkpoint")
        except (OSError, ValueError, AttributeError) as error:
            raise ValueError(f"{sidecar}: not a readable JSON object ({error})") from None
        if named:
            folder = io_path.parent / named
            if not (folder / CONFIG_FILE).is_file():
                raise ValueError(f"{sidecar}: names checkpoint {named!r}, but {folder / CONFIG_FILE} does not exist")
            return folder
    parts = name.split("_")
    for end in range(len(parts), 0, -1):
        folder = io_path.parent / "_".join(parts[:end])
        if (folder / CONFIG_FILE).is_file():
            return folder
    raise ValueError(f"{io_path}: no checkpoint folder found (no sidecar 'checkpoint', no folder named like it)")


def find_pairs(folder: Path) -> list[tuple[Path, Path | None, str | None]]:
    """``(io_file, checkpoint_folder or None, error or None)`` for every ``*.io.npz`` under ``folder``."""
    pairs = []
    for io_path in sorted(folder.rglob("*" + IO_SUFFIX)):
        try:
            pairs.append((io_path, _checkpoint_for(io_path), None))
        except ValueError as error:
            pairs.append((io_path, None, str(error)))
    return pairs


def _tensor(data, key: str, device) -> torch.Tensor:
    if key not in data:
        raise KeyError(f"missing input {key!r}")
    return torch.as_tensor(np.ascontiguousarray(data[key])).to(device)


def _batch_major(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(0, 1).contiguous()


def _observation(data, device):
    """The observation of a time-major call, batch-major ``(B, T, ...)`` (a TensorDict for entity/pixels)."""
    if "obs" in data:
        return _batch_major(_tensor(data, "obs", device))
    fields = {key[len("obs.") :]: _batch_major(_tensor(data, key, device)) for key in data if key.startswith("obs.")}
    if not fields:
        raise KeyError("missing input 'obs' or 'obs.*'")
    first = next(iter(fields.values()))
    return TensorDict(fields, batch_size=first.shape[:2], device=device)


def run_upstream_call(
    actor_critic: ActorCritic, data, carry: str = "carry_in", device="cpu"
) -> dict[str, torch.Tensor]:
    """Outputs of upstream's ``apply(params, carry, (obs, dones))`` on the time-major inputs in
    ``data`` (``carry`` names the input carry keys), time-major and named like the ``.io.npz``
    keys: ``out.value``, ``out.actor_head``, ``out.torso``, ``out.pi.*``, ``out.log_prob``,
    ``out.entropy``, ``carry_out.*`` (and ``out.gru_out`` with a GRU).

    The call goes through the TorchRL operators: ``value`` and ``policy.get_dist`` on a ``[B, T]``
    TensorDict in recurrent mode, ``is_init = dones`` and the input carry as the first step's
    ``recurrent_state``. ``carry[1]`` is upstream's unused critic carry, passed through.
    """
    observation = _observation(data, device)
    is_init = _batch_major(_tensor(data, "dones", device)).bool().unsqueeze(-1)
    carry_in = [_tensor(data, f"{carry}.{i}", device) for i in range(2)]
    actions = _batch_major(_tensor(data, "actions", device))
    batch, steps = is_init.shape[:2]
    state = torch.zeros(batch, steps, 1, carry_in[0].shape[-1], device=device)
    state[:, 0, 0] = torch.where(is_init[:, 0], 0.0, carry_in[0])
    td = TensorDict(
        {"observation": observation, "is_init": is_init, RECURRENT_STATE_KEY: state},
        batch_size=[batch, steps],
        device=device,
    )
    outputs = {}
    with torch.no_grad(), set_recurrent_mode(True):
        torso = actor_critic.torso(observation)
        outputs["out.torso"] = torso
        carry_out = carry_in[0]
        if actor_critic.recurrent:
            gru_td = actor_critic.gru(td.select("is_init", RECURRENT_STATE_KEY).set("torso", torso))
            outputs["out.gru_out"] = gru_td["embedding"]
            carry_out = gru_td["next", RECURRENT_STATE_KEY][:, -1, 0]
        outputs["out.value"] = actor_critic.value(td.clone())["state_value"].squeeze(-1)
        policy_td = td.clone()
        dist = actor_critic.policy.get_dist(policy_td)
        outputs["out.log_prob"] = dist.log_prob(actions)
        outputs["out.entropy"] = dist.entropy()
        if actor_critic.action_type == "continuous":
            outputs["out.actor_head"] = policy_td["loc"]
            outputs["out.pi.loc"] = dist.mean
            outputs["out.pi.scale_diag"] = dist.stddev
        else:
            outputs["out.actor_head"] = policy_td["logits"]
            outputs["out.pi.logits"] = dist.logits
            if actor_critic.action_type == "multi_discrete":
                for i, slot in enumerate(dist.slots):
                    outputs[f"out.pi.logits.{i}"] = slot.logits
    outputs = {key: _batch_major(value) for key, value in outputs.items()}
    outputs["carry_out.0"], outputs["carry_out.1"] = carry_out, carry_in[1]
    return outputs


def _with_log_std(actor_critic: ActorCritic, log_std: torch.Tensor) -> ActorCritic:
    changed = copy.deepcopy(actor_critic)
    with torch.no_grad():
        changed.actor.log_std.copy_(log_std)
    return changed


def _compare(expected_data, outputs: dict[str, torch.Tensor], prefix: str) -> list[tuple[str, float, str]]:
    """``(key, worst absolute error, problem or '')`` for every recorded output under ``prefix``."""
    rows = []
    for key in sorted(k for k in expected_data if k.startswith((prefix + "out.", prefix + "carry_out."))):
        name = key[len(prefix) :]
        if name not in outputs:
            rows.append((key, float("nan"), "not produced by this network"))
            continue
        expected = torch.as_tensor(np.asarray(expected_data[key]), dtype=torch.float64)
        actual = outputs[name].detach().to("cpu", torch.float64)
        if actual.shape != expected.shape:
            rows.append((key, float("nan"), f"shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"))
            continue
        if not torch.isfinite(actual).all():
            rows.append((key, float("nan"), "NaN/inf in output"))
            continue
        rows.append((key, float((actual - expected).abs().max()) if expected.numel() else 0.0, ""))
    return rows


def check_file(io_path: Path, checkpoint: Path, atol: float, device) -> tuple[bool, list[str]]:
    """Run one ``.io.npz`` through its checkpoint; ``(passed, report lines)``."""
    try:
        actor_critic, _ = load_upstream_checkpoint(checkpoint, device)
    except Exception as error:  # any damage: report it against the checkpoint and go on
        return False, [f"  LOAD ERROR (checkpoint {checkpoint}): {type(error).__name__}: {error}"]
    actor_critic.eval()
    try:
        with np.load(io_path, allow_pickle=False) as archive:
            data = {key: archive[key] for key in archive.files}
        rows = _compare(data, run_upstream_call(actor_critic, data, device=device), "")
        if "alt.carry_in.0" in data:
            rows += _compare(data, run_upstream_call(actor_critic, data, "alt.carry_in", device), "alt.")
        if "alt.log_std" in data:
            if actor_critic.actor.log_std is None:
                raise ValueError("alt.log_std given but the network has no log_std (not continuous)")
            changed = _with_log_std(actor_critic, torch.as_tensor(data["alt.log_std"], device=device))
            rows += _compare(data, run_upstream_call(changed, data, device=device), "alt.")
    except Exception as error:  # a damaged or incomplete .io.npz: name it and go on
        return False, [f"  LOAD/RUN ERROR ({io_path}): {type(error).__name__}: {error}"]
    if not rows:
        return False, [f"  ERROR ({io_path}): no recorded outputs (out.*, carry_out.*)"]
    lines, passed = [], True
    for key, error, problem in rows:
        bad = bool(problem) or not error <= atol
        passed &= not bad
        lines.append(f"  {key:28s} {error:10.3e}  {'FAIL ' + problem if bad else 'ok'}".rstrip())
    return passed, lines


def main(argv=None) -> int:
    args = parse_dataclass(Args, argv, prog="python -m kinetix_torch.models.conformance")
    if args.golden is None or not Path(args.golden).is_dir():
        print(f"error: --golden must be an existing folder, got {args.golden}", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    pairs = find_pairs(Path(args.golden))
    if not pairs or all(checkpoint is None for _, checkpoint, _ in pairs):
        print(f"error: no .io.npz file with a checkpoint under {args.golden}", file=sys.stderr)
        for _, _, problem in pairs:
            print(f"  {problem}", file=sys.stderr)
        return 2
    failed = []
    for io_path, checkpoint, problem in pairs:
        name = io_path.relative_to(args.golden)
        if checkpoint is None:
            print(f"{name}: FAIL\n  {problem}")
            failed.append(str(name))
            continue
        passed, lines = check_file(io_path, checkpoint, args.atol, torch.device(args.device))
        print(f"{name} (checkpoint {os.path.relpath(checkpoint, args.golden)}): {'PASS' if passed else 'FAIL'}")
        print("\n".join(lines))
        if not passed:
            failed.append(str(name))
    summary = f"{len(pairs) - len(failed)}/{len(pairs)} files within atol {args.atol:g}"
    print(summary + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
