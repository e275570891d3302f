"""Fixtures for device tests."""

from __future__ import annotations

import signal

import pytest


@pytest.fixture
def restore_signals():
    """pyigtl's server installs SIGINT/SIGTERM handlers; put ours back afterwards."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)
