"""Shared test fixtures: where upstream's golden data and handmade levels live.

The data directory is ``$KINETIX_SHARED`` when set, else ``../shared`` beside the repository.
Tests that need it fail (not skip) with a clear message when it is absent, so CI cannot pass
silently without it.

The Triton kernels run in Triton's CPU interpreter in the tests: ``TRITON_INTERPRET=1`` must be set
before anything imports triton, hence here. The GPU suite (``benchmarks/gpu_suite.sh``) runs the
``gpu``-marked tests with ``TRITON_INTERPRET=0`` and compiled kernels; without CUDA those tests skip.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

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


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests need CUDA (and compiled kernels); elsewhere they are reported as skipped."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA: runs in benchmarks/gpu_suite.sh on the GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return require_shared("golden")


@pytest.fixture(scope="session")
def levels_dir() -> Path:
    return require_shared("levels")
