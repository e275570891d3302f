"""The freehand sweep: a hand's motion over the laminectomy, tracked with jitter."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from usnav.sim import _kernels as K
from usnav.sim import build_case, make_options
from usnav.sim.sweep import TRANSDUCER_TO_PROBE
from usnav.sim.tissues import Tissue
from usnav.transforms import is_rigid


@pytest.fixture(scope="module")
def case():
    return build_case(21, make_options(frames=150, jitter_mm=0.15, jitter_deg=0.05))


def test_frames_at_video_rate_along_the_cord_over_the_tumor(case):
    s = case.sweep
    assert len(s.timestamps_s) == 150
    assert np.median(np.diff(s.timestamps_s)) == pytest.approx(1 / 30, abs=1e-3)
    assert np.all(np.diff(s.timestamps_s) > 0)
    z = s.image_poses[:, 2, 3]
    assert abs(z[-1] - z[0]) > 25  # a sweep along the cord
    lo, hi = sorted((z[0], z[-1]))
    assert lo < case.anatomy.tumor.center[2] < hi
    assert np.all(np.sign(np.diff(z)) == np.sign(z[-1] - z[0]))  # never backwards


def test_hand_motion_varies_speed_and_tilts(case):
    poses = case.sweep.image_poses
    step = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1)
    assert step.std() / step.mean() > 0.15  # speed changes
    beams = poses[:, :3, 1]
    tilt = np.degrees(np.arccos(np.clip(beams @ np.array([0.0, 1.0, 0.0]), -1, 1)))
    assert tilt.std() > 0.5 and tilt.max() < 15  # small, changing tilts
    lateral = poses[:, 0, 3]
    assert 0.2 < lateral.std() < 3.0


def test_tracking_is_rigid_jittered_and_consistent_with_the_truth(case):
    s = case.sweep
    assert all(is_rigid(m) for m in s.probe_to_tracker)
    assert all(is_rigid(m) for m in s.reference_to_tracker)
    # ReferenceToTracker: a fixed marker seen with jitter
    ref = s.reference_to_tracker[:, :3, 3]
    spread = np.linalg.norm(ref - ref.mean(axis=0), axis=1)
    assert 0.05 < np.sqrt((spread**2).mean()) < 0.3
    # ProbeToReference from the recording vs the truth
    tracker_to_spine = (
        np.linalg.inv(case.anatomy.spine_to_mri)
        @ s.reference_to_mri
        @ np.linalg.inv(s.reference_to_tracker[0])
    )
    true_probe = (
        np.linalg.inv(tracker_to_spine) @ s.image_poses @ np.linalg.inv(TRANSDUCER_TO_PROBE)
    )
    err = np.linalg.norm(s.probe_to_tracker[:, :3, 3] - true_probe[:, :3, 3], axis=1)
    assert 0.05 < err.mean() < 0.6
    angles = Rotation.from_matrix(
        np.transpose(s.probe_to_tracker[:, :3, :3], (0, 2, 1)) @ true_probe[:, :3, :3]
    ).magnitude()
    assert np.degrees(angles).mean() < 0.3


def test_probe_rests_in_saline_above_the_dura(case):
    s, grid = case.sweep, case.intraop
    for pose in s.image_poses[::10]:
        face = pose[:3, 3]
        idx = np.round((face - grid.origin) / grid.spacing).astype(int)
        assert grid.labels[tuple(idx)] == Tissue.SALINE
        # the dura lies below the face, 6-17 mm deep (labels as the ray marcher sees them)
        depth = np.arange(0, 30, 0.05)
        ray = (face[None, :] + depth[:, None] * pose[:3, 1][None, :] - grid.origin) / grid.spacing
        labels = np.array([K.label_at(grid.labels, *p) for p in ray])
        first = np.argmax(labels != Tissue.SALINE)
        assert labels[first] == Tissue.DURA
        assert 6 < depth[first] < 17
