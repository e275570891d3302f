"""The similarity evaluations split among threads give the single-threaded numbers to the bit,
and the plain-float frame selection matches its numpy reference."""

from __future__ import annotations

import threading

import numpy as np

from usnav.registration.rigid import RegistrationOptions, register_sweep
from usnav.registration.search import SweepRegistration
from usnav.registration.similarity import (
    FrameSimilarity,
    fov_corners,
    get_threads,
    select_frames,
    set_threads,
)


def test_split_evaluation_equals_one_thread_to_the_bit(small_case):
    mri, sweep, _, truth = small_case
    problem = SweepRegistration(mri, sweep, truth.init_reference_to_mri)
    pose = truth.init_reference_to_mri
    previous = set_threads(1)
    try:
        for level in problem.levels:
            one = level.similarity.per_frame(pose)
            for threads in (2, 3, len(level.frames) + 5):
                set_threads(threads)
                # a fresh similarity: nothing kept from the one-thread evaluation
                sim = FrameSimilarity(
                    level.mri,
                    level.frames,
                    metric=level.similarity.metric,
                    patch_half=level.similarity.patch_half,
                )
                split = sim.per_frame(pose)
                assert sim.evaluations == 1
                for a, b in zip(one, split, strict=True):
                    np.testing.assert_array_equal(a, b)
                set_threads(1)
    finally:
        set_threads(previous)


def test_registration_on_two_threads_is_the_same_registration(small_case):
    mri, sweep, _, truth = small_case
    init = truth.init_reference_to_mri
    one = register_sweep(mri, sweep, init, RegistrationOptions(threads=1))
    two = register_sweep(mri, sweep, init, RegistrationOptions(threads=2))
    np.testing.assert_array_equal(one.candidate, two.candidate)
    assert one.evaluations == two.evaluations
    assert one.accepted == two.accepted
    assert one.similarity == two.similarity


def test_threads_setting_is_per_calling_thread():
    previous = set_threads(2)
    seen = []
    try:
        worker = threading.Thread(target=lambda: seen.append(get_threads()))
        worker.start()
        worker.join(30)
        assert seen == [1]
        assert get_threads() == 2
        assert set_threads(0) == 2 and get_threads() >= 1  # 0: every core
    finally:
        set_threads(previous)


def select_frames_ref(poses: np.ndarray, corners: np.ndarray, min_distance_mm: float) -> list[int]:
    """Greedy selection with numpy norms (the implementation before the plain-float loop)."""
    pos = np.einsum("fij,cj->fci", poses, corners)[..., :3]
    chosen = [0]
    for f in range(1, len(poses)):
        if np.max(np.linalg.norm(pos[f] - pos[chosen[-1]], axis=1)) >= min_distance_mm:
            chosen.append(f)
    return chosen


def test_select_frames_matches_numpy_reference(small_case):
    _, sweep, _, _ = small_case
    mask = sweep.mask()
    corners = fov_corners(mask)
    for distance in (0.2, 0.7, 1.0, 1.5, 3.0):
        ref = select_frames_ref(sweep.image_to_reference, corners, distance)
        got = select_frames(sweep, distance, 10_000, mask)
        assert got.tolist() == ref
        assert 1 < len(ref) <= len(sweep)


def test_recent_poses_are_not_recomputed_and_results_are_copies(small_case):
    mri, sweep, _, truth = small_case
    problem = SweepRegistration(mri, sweep, truth.init_reference_to_mri)
    sim = problem.level(-1).similarity
    pose = truth.init_reference_to_mri
    other = pose.copy()
    other[0, 3] += 1.0
    first = sim.per_frame(pose)
    count = sim.evaluations
    first[0][:] = -1.0  # the caller owns what it got
    again = sim.per_frame(pose.copy())
    assert sim.evaluations == count  # kept: not recomputed
    assert np.all(again[0] >= 0)
    moved = sim.per_frame(other)
    assert sim.evaluations == count + 1
    assert not np.array_equal(moved[0], again[0])
    sim.per_frame(pose)  # used again: the most recent now
    for _ in range(sim.KEEP - 1):
        other[1, 3] += 0.01
        sim.per_frame(other)
    sim.per_frame(pose)
    assert sim.evaluations == count + sim.KEEP  # still kept
    for _ in range(sim.KEEP):  # older poses drop out
        other[1, 3] += 0.01
        sim.per_frame(other)
    fresh = sim.per_frame(pose)
    assert sim.evaluations == count + 2 * sim.KEEP + 1
    for a, b in zip(fresh, again, strict=True):
        np.testing.assert_array_equal(a, b)
