"""Small simulated spine cases shared by the registration tests (seeds 7-9 are test seeds: not
used for tuning, not in the benchmark)."""

from __future__ import annotations

from pathlib import Path

import pytest

from usnav.registration import warm_up

SMALL = {"frames": 60, "image_cols": 128, "image_rows": 128, "save_anatomy": False, "workers": 2}


@pytest.fixture(scope="session", autouse=True)
def _warm_kernels() -> None:
    warm_up()


@pytest.fixture(scope="session")
def small_case_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Seeds 7 and 8: 60 frames of 128×128 px (~2 s each to simulate)."""
    from usnav.sim import make_options, simulate_case

    root = tmp_path_factory.mktemp("sim")
    out = {}
    for seed in (7, 8):
        out[seed] = simulate_case(seed, root / f"s{seed}", make_options(**SMALL)).folder
    return out


@pytest.fixture(scope="session")
def small_case(small_case_dirs: dict[int, Path]):
    """(mri, sweep, calibration matrix, truth) of seed 7, loaded once."""
    from usnav.config.calibration import load_calibration
    from usnav.io.volume import load_volume
    from usnav.registration.sweep import load_sweep
    from usnav.sim import load_truth

    d = small_case_dirs[7]
    cal = load_calibration(d / "calibration.toml").image_to_probe
    return load_volume(d / "mri.nii.gz"), load_sweep(d / "sweep.igs.mha", cal), cal, load_truth(d)


@pytest.fixture(scope="session")
def _small_case_registered(small_case):
    from usnav.registration.rigid import register_sweep

    mri, sweep, _, truth = small_case
    return register_sweep(mri, sweep, truth.init_reference_to_mri)


@pytest.fixture
def small_case_registered(_small_case_registered):
    """``register_sweep`` of seed 7 from its initial estimate with the default options, run
    once per worker: several tests check different things of this same registration (its
    error, its bound, its confirmation, its across-sweep estimate). A deep copy per test, so
    no test sees another's changes."""
    import copy

    return copy.deepcopy(_small_case_registered)
