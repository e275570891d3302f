"""A tiny simulated dataset for the ``usnav evaluate`` tests, made as ``usnav simulate --seeds``
makes one: two small cases (seeds 7 and 9, test seeds: not used for tuning nor in the
benchmark) of two appearance families, written once per session."""

from __future__ import annotations

import pytest
from evaluate_helpers import TINY

from usnav.io.manifest import ManifestCase

FAMILIES = ["baseline", "trailing-echo"]


@pytest.fixture(scope="session")
def tiny_cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ManifestCase]:
    """``"s7"``, ``"s9"`` → the manifest rows of the two tiny simulated cases (on disk)."""
    from usnav.sim import make_options, simulate_dataset

    root = tmp_path_factory.mktemp("dataset")
    made = simulate_dataset([7, 9], root / "sim", make_options(**TINY), families=FAMILIES)
    return {f"s{c.tags['seed']}": c for c in made.cases}
