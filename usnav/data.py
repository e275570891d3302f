"""Where the outside test data lives (never copied into the repository)."""

from __future__ import annotations

import os
from pathlib import Path


def shared_data_dir() -> Path | None:
    """``$USNAV_TEST_DATA`` if set, else ``../shared/data`` next to the project; None if absent."""
    env = os.environ.get("USNAV_TEST_DATA")
    if env:
        p = Path(env)
        return p if p.is_dir() else None
    root = Path(__file__).resolve().parent.parent
    for candidate in (root.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return None
