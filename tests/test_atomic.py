"""Atomic saves: permissions follow the umask, interrupted saves leave the old file and are cleaned
up by the next save, and damaged banks get an error naming the file."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from kinetix_torch import atomic, levels, schema
from kinetix_torch.generate import load_bank, save_bank


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_saved_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        target = tmp_path / "a.json"
        target.write_text("old")
        os.chmod(target, 0o644)
        atomic.atomic_write_text(target, "new")
        assert target.read_text() == "new" and _mode(target) == 0o644
        atomic.atomic_dir(tmp_path / "ckpt", lambda d: (d / "w.bin").write_bytes(b"1"))
        assert _mode(tmp_path / "ckpt") == 0o755 and _mode(tmp_path / "ckpt" / "w.bin") == 0o644
    finally:
        os.umask(old)


def test_interrupted_save_keeps_the_old_file_and_is_cleaned_up_next_time(tmp_path):
    target = tmp_path / "bank.pt"
    target.write_text("old")

    def crash(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic.atomic_write(target, crash)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["bank.pt"]
    stale = tmp_path / ".bank.pt.partial-abc"  # left by a process killed mid-save
    stale.write_text("half")
    atomic.atomic_write_text(target, "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank.pt"] and target.read_text() == "new"


def test_folder_replacement_is_whole(tmp_path):
    folder = tmp_path / "checkpoint"
    atomic.atomic_dir(folder, lambda d: (d / "a").write_text("1"))

    def crash(d):
        (d / "a").write_text("2")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic.atomic_dir(folder, crash)
    assert (folder / "a").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    atomic.atomic_dir(folder, lambda d: (d / "b").write_text("3"))
    assert sorted(p.name for p in folder.iterdir()) == ["b"]


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_damaged_banks_name_the_file(levels_dir, tmp_path, suffix):
    level = levels.load_level(levels_dir / "s" / "h4_thrust_aim.json")
    bank = schema.to_tensordict({k: torch.as_tensor(v)[None] for k, v in level.state.items()}, (1,))
    path = tmp_path / f"bank{suffix}"
    save_bank(path, bank, level.static, level.env_params)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(ValueError, match=f"bank {path}") as info:
        load_bank(path)
    assert "weights_only" not in str(info.value)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_bank(tmp_path / f"missing{suffix}")
