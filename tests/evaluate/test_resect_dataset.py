"""RESECT Case 24 sweeps written as a dataset that ``usnav evaluate`` reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from usnav.config.calibration import load_calibration
from usnav.evaluate.resect import write_resect_dataset
from usnav.evaluate.truth import load_scorer
from usnav.io.manifest import read_manifest
from usnav.registration.cases import load_resect_case24, slice_sweep
from usnav.registration.sweep import load_sweep

pytestmark = pytest.mark.needs_data


def test_resect_sweeps_round_trip_through_files(shared_data: Path, tmp_path: Path) -> None:
    if not (shared_data / "resect" / "case24").is_dir():
        pytest.skip("RESECT case 24 not in the outside data")
    manifest = write_resect_dataset(shared_data, tmp_path / "resect", sweeps=2, frames=12)
    cases = read_manifest(manifest)
    assert [c.case for c in cases] == ["resect24-00", "resect24-01"]
    assert all(c.tags["family"] == "real" and c.truth.suffix == ".tag" for c in cases)
    assert not any(str(c.mri).startswith(str(tmp_path)) for c in cases)  # referenced, not copied

    # the sweep's poses survive the PLUS file + calibration
    case = load_resect_case24(shared_data)
    expected = slice_sweep(case.us, n_frames=12, seed=1)
    got = load_sweep(cases[1].recording, load_calibration(cases[1].calibration).image_to_probe)
    assert len(got) == 12
    np.testing.assert_allclose(got.image_to_reference, expected.image_to_reference, atol=1e-6)
    np.testing.assert_array_equal(got.images, expected.images)

    # the .tag truth scores like the benchmark: 1.10 mm for the navigation alignment
    scorer = load_scorer(cases[0].truth)
    assert scorer.kind == "landmarks"
    assert scorer.error_mm(np.eye(4)) == pytest.approx(case.mtre(np.eye(4)), abs=1e-9)
    assert scorer.error_mm(np.eye(4)) == pytest.approx(1.10, abs=0.01)
    inits = [np.loadtxt(c.init) for c in cases]
    assert all(2.0 < scorer.error_mm(m) < 20.0 for m in inits)
    assert not np.allclose(inits[0], inits[1])
