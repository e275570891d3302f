"""One rule for what a missing prerequisite does: skip locally, fail under CI.

CI (``CI=true``, as GitHub Actions, GitLab and .ci/run's callers set it; also ``1``/``yes``)
installs every Debian package and provides the outside data, so anything missing there is a
broken setup, not a green run with tests skipped.
"""

from __future__ import annotations

import os

import pytest


def under_ci() -> bool:
    """Whether the tests run under CI (``CI`` set to true, 1 or yes)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def skip_or_fail(reason: str) -> None:
    """Skip with ``reason`` locally; fail with it under CI."""
    if under_ci():
        pytest.fail(f"{reason} (under CI this may not be skipped)", pytrace=False)
    pytest.skip(reason)
