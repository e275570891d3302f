"""A tiny simulated dataset for the ``usnav evaluate`` tests: two small cases (seeds 7 and 9,
test seeds: not used for tuning nor in the benchmark), written once per session."""

from __future__ import annotations

import pytest
from evaluate_helpers import TINY

from usnav.io.manifest import ManifestCase

SEEDS = {7: "hyper", 9: "iso"}


@pytest.fixture(scope="session")
def tiny_cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ManifestCase]:
    """Case name → manifest row of the two tiny simulated cases (files on disk)."""
    from usnav.sim import make_options, simulate_case

    root = tmp_path_factory.mktemp("dataset")
    cases = {}
    for seed, family in SEEDS.items():
        f = simulate_case(seed, root / f"s{seed}", make_options(**TINY))
        cases[f"s{seed}"] = ManifestCase(
            case=f"s{seed}",
            recording=f.sweep,
            mri=f.mri,
            label=f.tumor_label,
            calibration=f.calibration,
            init=f.init_reference_to_mri,
            truth=f.truth,
            tags={"family": family, "seed": str(seed), "site": "usnav-sim"},
        )
    return cases
