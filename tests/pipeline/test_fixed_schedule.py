"""Replay at a fixed window schedule is deterministic: the same recording gives the same
registration, bit for bit (the live run's spread comes from timing, not from the worker)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from usnav.config.calibration import load_calibration
from usnav.io.sequence_reader import read_sequence
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


def test_every_frame_is_seen_with_the_estimate_then_in_use(small_case: Path) -> None:
    """``on_frame``: one call per frame and pass; the navigation registration until the first
    window is registered, and the worker's final estimate after the last frame."""
    mri = load_volume(small_case / "mri.nii.gz")
    image_to_probe = load_calibration(small_case / "calibration.toml").image_to_probe
    initial = read_initial(small_case / "init_ReferenceToMri.txt")
    in_use: list[tuple[str, np.ndarray, int]] = []

    def record(worker) -> None:
        estimate = worker.latest_accepted()
        in_use.append((estimate.source, estimate.reference_to_mri, worker.stats.updates))

    worker = replay_fixed_schedule(
        small_case / "sweep.igs.mha", mri, image_to_probe, initial, passes=2, on_frame=record
    )
    frames = len(read_sequence(small_case / "sweep.igs.mha").frame_numbers)
    assert len(in_use) == 2 * frames
    first = WorkerOptions().min_frames
    # before the min_frames-th frame no window was registered: the navigation registration
    assert all(s == "init" and u == 0 for s, _, u in in_use[: first - 1])
    np.testing.assert_array_equal(in_use[0][1], initial)
    assert in_use[first - 1][2] == 1  # that frame started the first update
    np.testing.assert_array_equal(in_use[-1][1], worker.latest_accepted().reference_to_mri)
