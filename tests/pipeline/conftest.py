"""Small simulated cases for the pipeline tests (made once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from usnav.sim import make_options, simulate_case


@pytest.fixture(scope="session")
def small_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 60-frame simulated case (seed 41, not a seed any method was tuned on)."""
    out = tmp_path_factory.mktemp("case41")
    simulate_case(41, out, make_options(frames=60, save_anatomy=False, cyst="yes"))
    return out


@pytest.fixture(scope="session")
def other_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another patient (seed 42): its MRI does not belong to ``small_case``'s sweep."""
    out = tmp_path_factory.mktemp("case42")
    simulate_case(42, out, make_options(frames=8, save_anatomy=False))
    return out
