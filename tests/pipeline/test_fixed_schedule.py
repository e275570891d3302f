"""Replay at a fixed window schedule is deterministic: the same recording gives the same
registration, bit for bit (the live run's spread comes from timing, not from the worker)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from usnav.config.calibration import load_calibration
from usnav.io.volume import load_volume
from usnav.pipeline.schedule import replay_fixed_schedule
from usnav.registration.files import read_initial
from usnav.registration.worker import WorkerOptions


def test_the_same_recording_on_the_fixed_schedule_gives_the_same_registration(
    small_case: Path,
) -> None:
    mri = load_volume(small_case / "mri.nii.gz")
    image_to_probe = load_calibration(small_case / "calibration.toml").image_to_probe
    initial = read_initial(small_case / "init_ReferenceToMri.txt")
    runs = [
        replay_fixed_schedule(small_case / "sweep.igs.mha", mri, image_to_probe, initial, passes=2)
        for _ in range(2)
    ]
    first, second = (w.latest_accepted() for w in runs)
    # 120 frames, a window every min_new_frames from the min_frames-th (45: 6 registrations)
    defaults = WorkerOptions()
    expected = len(range(defaults.min_frames, 120 + 1, defaults.min_new_frames))
    assert runs[0].stats.updates == runs[1].stats.updates == expected
    assert runs[0].stats.accepted == runs[1].stats.accepted
    np.testing.assert_array_equal(first.reference_to_mri, second.reference_to_mri)
    assert first.uncertainty_mm == second.uncertainty_mm or (
        np.isnan(first.uncertainty_mm) and np.isnan(second.uncertainty_mm)
    )
