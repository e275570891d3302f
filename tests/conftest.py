"""Shared fixtures: outside data (skips with a reason when absent), scratch folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from usnav.data import shared_data_dir

# Numba caches compiled kernels; make sure there is a writable place for them in CI.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "usnav-numba"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` or ``$USNAV_TEST_DATA``; skips the test when neither exists."""
    found = shared_data_dir()
    if found is None:
        pytest.skip("outside data not found: set USNAV_TEST_DATA or place it at ../shared/data")
    return found


@pytest.fixture(scope="session")
def plus_images(shared_data: Path) -> Path:
    """The PLUS TestImages folder."""
    return shared_data / "plus" / "TestImages"
