"""When a window has moved enough to register: the transducer's travel (a transverse sweep
along the spine), or the field of view's motion and its coverage along the spine (a fan that
pivots about the transducer, a sagittal sweep that slides across the cord). Until session 25
only the transducer's travel counted, so the live worker never tried a fan or a narrow sagittal
sweep at all (held-out live cases 3506 and 3605: no estimate in four sweeps)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from usnav.registration.worker import RegistrationWorker, WorkerOptions, window_coverage

SPACING_MM = 0.2
COLS, ROWS = 150, 200  # a 30 mm wide, 40 mm deep field of view
CORNERS = np.array(
    [[0, 0, 0, 1], [COLS - 1, 0, 0, 1], [0, ROWS - 1, 0, 1], [COLS - 1, ROWS - 1, 0, 1]], float
)
OPTIONS = WorkerOptions()  # min_extent_first_mm 15, min_extent_mm 10


def _pose(lateral: np.ndarray, depth: np.ndarray, origin: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, 0] = SPACING_MM * lateral
    m[:3, 1] = SPACING_MM * depth
    m[:3, 2] = np.cross(lateral, depth)
    m[:3, 3] = origin
    return m


X, Y, Z = np.eye(3)  # Reference = MRI here: Z is the MRI's S axis, the spine


def transverse(travel_mm: float, n: int = 30) -> np.ndarray:
    """Frames across the spine (lateral X, depth -Y) moved along it."""
    return np.stack([_pose(X, -Y, t * Z) for t in np.linspace(0, travel_mm, n)])


def fan(half_angle_deg: float, n: int = 31) -> np.ndarray:
    """The transverse frame rocked about the transducer's line (X) by ± the angle."""
    poses = []
    for a in np.linspace(-half_angle_deg, half_angle_deg, n):
        r = Rotation.from_rotvec(np.radians(a) * X).as_matrix()
        poses.append(_pose(r @ X, r @ -Y, np.zeros(3)))
    return np.stack(poses)


def sagittal(width_mm: float, n: int = 30) -> np.ndarray:
    """Frames along the spine (lateral Z, depth -Y) slid across it (X)."""
    return np.stack([_pose(Z, -Y, t * X) for t in np.linspace(0, width_mm, n)])


def test_a_transverse_sweep_needs_its_travel_along_the_spine():
    short, long = (window_coverage(transverse(t), CORNERS, np.eye(4)) for t in (12.0, 16.0))
    assert short.origin_extent_mm == pytest.approx(12.0)
    assert short.corner_motion_mm == pytest.approx(12.0)
    assert short.spine_coverage_mm == pytest.approx(12.0)
    assert not short.enough(OPTIONS, first=True) and long.enough(OPTIONS, first=True)
    assert short.enough(OPTIONS, first=False)  # later windows need 10 mm


def test_a_fan_pivots_in_place_but_its_deep_field_sweeps_the_spine():
    c = window_coverage(fan(15.0), CORNERS, np.eye(4))
    depth_mm = (ROWS - 1) * SPACING_MM
    assert c.origin_extent_mm == pytest.approx(0.0, abs=1e-9)  # the old rule: never enough
    assert c.corner_motion_mm == pytest.approx(
        np.hypot(2 * depth_mm * np.sin(np.radians(15)), depth_mm * (1 - np.cos(np.radians(15))))
    )
    assert c.spine_coverage_mm == pytest.approx(2 * depth_mm * np.sin(np.radians(15)))
    assert c.enough(OPTIONS, first=True) and c.enough(OPTIONS, first=False)
    assert not window_coverage(fan(5.0), CORNERS, np.eye(4)).enough(OPTIONS, first=True)


def test_a_sagittal_sweep_covers_the_spine_in_every_frame_but_must_still_move():
    c = window_coverage(sagittal(11.0), CORNERS, np.eye(4))
    assert c.origin_extent_mm == pytest.approx(11.0)  # < 15: the old rule refused it
    assert c.spine_coverage_mm == pytest.approx((COLS - 1) * SPACING_MM)
    assert c.enough(OPTIONS, first=True)
    still = window_coverage(sagittal(0.0), CORNERS, np.eye(4))
    assert still.spine_coverage_mm == pytest.approx(29.8) and not still.enough(OPTIONS, first=True)


def test_the_spine_is_the_mri_s_axis_seen_through_the_estimate_in_use():
    # the same transverse frames, but the estimate says the MRI's S axis is the Reference's X:
    # then they slide across the spine, and each covers 30 mm of it
    to_mri = np.eye(4)
    to_mri[:3, :3] = Rotation.from_rotvec(np.radians(90) * Y).as_matrix()  # X → -Z
    c = window_coverage(transverse(12.0), CORNERS, to_mri)
    assert c.spine_coverage_mm == pytest.approx((COLS - 1) * SPACING_MM)
    # without a field of view only the transducer's travel is known
    bare = window_coverage(fan(15.0), np.zeros((0, 4)), np.eye(4))
    assert bare.spine_coverage_mm == 0.0 and not bare.enough(OPTIONS, first=True)


def test_the_worker_registers_a_fan_it_used_to_wait_on(small_case):
    mri, sweep, cal, truth = small_case
    # the case's frames, re-posed as a fan about the first frame's transducer line
    first = sweep.image_to_reference[0]
    lateral = first[:3, 0] / np.linalg.norm(first[:3, 0])
    window = []
    for i, a in enumerate(np.linspace(-15.0, 15.0, len(sweep))):
        tilt = np.eye(4)
        tilt[:3, :3] = Rotation.from_rotvec(np.radians(a) * lateral).as_matrix()
        pose = first.copy()
        pose[:3, :3] = tilt[:3, :3] @ first[:3, :3]
        window.append((sweep.images[i], pose, float(i)))
    origins = np.array([w[1][:3, 3] for w in window])
    assert np.linalg.norm(origins.max(axis=0) - origins.min(axis=0)) < 1e-6
    worker = RegistrationWorker(mri, cal, truth.init_reference_to_mri, WorkerOptions())
    estimate = worker.update(window)
    assert estimate is not None and estimate.source == "image"  # it was tried (and judged)
    assert worker.stats.updates == 1
    # a probe held still is still refused
    still = [(img, window[0][1], t) for img, _, t in window]
    assert (
        RegistrationWorker(mri, cal, truth.init_reference_to_mri, WorkerOptions()).update(still)
        is None
    )
