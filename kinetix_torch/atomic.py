"""Atomic file and folder writes: a reader sees the old content or the new, never a part.

The new content goes to a temporary name in the target's folder, is flushed to disk (``fsync``),
given the permissions a plain ``open()`` would (the process umask; ``mkstemp`` alone gives 0600),
and then renamed over the target in one step (``os.replace``); the folder entry is synced too.
Temporaries left behind by an interrupted earlier save of the same target are removed first.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_text", "atomic_dir"]


def _default_mode(directory: bool = False) -> int:
    """Permissions that ``open()``/``mkdir()`` would give under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.partial-"


def _remove_stale_temporaries(path: Path) -> None:
    for stale in path.parent.glob(_temp_prefix(path) + "*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Write ``path`` atomically: ``write(tmp)`` fills a temporary file, which then replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, name = tempfile.mkstemp(prefix=_temp_prefix(path), dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, _default_mode())
        _fsync_path(tmp)
        os.replace(tmp, path)
        _fsync_path(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically (UTF-8)."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_dir(path: str | os.PathLike, fill: Callable[[Path], None]) -> None:
    """Create or replace the folder ``path`` atomically: ``fill(tmp)`` writes its files into a
    temporary folder, which is synced and renamed into place (an old ``path`` is removed after)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), dir=path.parent))
    old = None
    try:
        fill(tmp)
        for child in tmp.rglob("*"):
            os.chmod(child, _default_mode(child.is_dir()))
            if child.is_file():
                _fsync_path(child)
        os.chmod(tmp, _default_mode(directory=True))
        if path.exists():
            old = path.with_name(_temp_prefix(path) + "old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)  # a crash right here leaves the old copy under `old`, cleaned next time
        os.replace(tmp, path)
        _fsync_path(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not path.exists():
            os.replace(old, path)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
