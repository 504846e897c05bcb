"""Shared test fixtures: where upstream's golden data and handmade levels live.

The data directory is ``$KINETIX_SHARED`` when set, else ``../shared`` beside the repository.
Tests that need it fail (not skip) with a clear message when it is absent, so CI cannot pass
silently without it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    return Path(os.environ.get("KINETIX_SHARED", REPO.parent / "shared")).resolve()


def require_shared(*parts: str) -> Path:
    path = shared_dir().joinpath(*parts)
    if not path.exists():
        pytest.fail(
            f"shared data not found at {path}: put upstream's golden data and levels in ../shared "
            f"(beside the repository) or point $KINETIX_SHARED at that folder",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return require_shared("golden")


@pytest.fixture(scope="session")
def levels_dir() -> Path:
    return require_shared("levels")
