"""Pivot calibration: exact without noise, RMS consistent with the noise, recordings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from usnav.calibration.pivot import calibrate_pivot, pivot_calibration
from usnav.errors import InputError
from usnav.frames import TrackedFrame, TrackedTransform, TransformStatus
from usnav.io.sequence import write_sequence

vec3 = st.tuples(*[st.floats(-200, 200)] * 3).map(np.array)


def pivot_poses(tip, pivot, n, rng, cone_deg=30.0, noise_mm=0.0):
    """StylusToReference poses swinging about ``pivot`` with the tip at ``tip`` (tool frame)."""
    base = Rotation.from_rotvec(rng.normal(size=3))
    poses = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        swing = Rotation.from_rotvec(np.radians(cone_deg) * rng.uniform(-1, 1, 3))
        r = (swing * base).as_matrix()
        poses[i, :3, :3] = r
        poses[i, :3, 3] = pivot - r @ tip + rng.normal(0, noise_mm, 3)
    return poses


@settings(max_examples=40, deadline=None)
@given(tip=vec3, pivot=vec3, seed=st.integers(0, 2**31), n=st.integers(10, 60))
def test_exact_on_noise_free_poses(tip, pivot, seed, n) -> None:
    poses = pivot_poses(tip, pivot, n, np.random.default_rng(seed))
    result = pivot_calibration(poses)
    np.testing.assert_allclose(result.tip_in_tool_mm, tip, atol=1e-6)
    np.testing.assert_allclose(result.pivot_in_reference_mm, pivot, atol=1e-6)
    assert result.rms_error_mm < 1e-6


@settings(max_examples=20, deadline=None)
@given(tip=vec3, pivot=vec3, seed=st.integers(0, 2**31), noise=st.floats(0.05, 2.0))
def test_rms_consistent_with_noise(tip, pivot, seed, noise) -> None:
    n = 300
    poses = pivot_poses(tip, pivot, n, np.random.default_rng(seed), noise_mm=noise)
    result = pivot_calibration(poses)
    # residual = isotropic noise (3 dof) minus what 6 fitted parameters absorb
    expected = noise * np.sqrt(3 * (1 - 6 / (3 * n)))
    assert 0.85 * expected < result.rms_error_mm < 1.15 * expected
    assert np.linalg.norm(result.pivot_in_reference_mm - pivot) < 10 * noise / np.sqrt(n) + 0.2


def test_refuses_a_stylus_only_spun_about_its_axis() -> None:
    rng = np.random.default_rng(0)
    poses = np.tile(np.eye(4), (30, 1, 1))
    tip = np.array([0.0, 0.0, 150.0])
    for i, a in enumerate(np.linspace(0, 2 * np.pi, 30)):
        r = Rotation.from_rotvec([0, 0, a]).as_matrix()
        poses[i, :3, :3] = r
        poses[i, :3, 3] = [10, 20, 30] - r @ tip + rng.normal(0, 0.01, 3)
    with pytest.raises(InputError, match="swung by only"):
        pivot_calibration(poses)


def test_refuses_too_few_poses() -> None:
    poses = pivot_poses(np.zeros(3), np.zeros(3), 5, np.random.default_rng(1))
    with pytest.raises(InputError, match="at least 10"):
        pivot_calibration(poses)


def _recording(path: Path, tip, pivot, n=40, invalid=()) -> Path:
    rng = np.random.default_rng(3)
    stylus_to_reference = pivot_poses(tip, pivot, n, rng, noise_mm=0.1)
    reference_to_tracker = np.eye(4)
    reference_to_tracker[:3, :3] = Rotation.from_euler("y", 40, degrees=True).as_matrix()
    reference_to_tracker[:3, 3] = [50.0, 0.0, -800.0]
    frames = []
    for i, m in enumerate(stylus_to_reference):
        status = TransformStatus.INVALID if i in invalid else TransformStatus.OK
        frames.append(
            TrackedFrame(
                image=np.zeros((0, 0), np.uint8),
                image_ok=False,
                t_device=0.05 * i,
                transforms={
                    "StylusToTracker": TrackedTransform(reference_to_tracker @ m, status),
                    "ReferenceToTracker": TrackedTransform(reference_to_tracker),
                },
            )
        )
    return write_sequence(path, frames)


def test_from_recording_composes_stylus_to_reference_and_skips_invalid(tmp_path: Path) -> None:
    tip, pivot = np.array([203.8, -12.3, 1.2]), np.array([5.0, 60.0, -30.0])
    path = _recording(tmp_path / "pivot.igs.mha", tip, pivot, invalid=(0, 7, 8))
    result = calibrate_pivot(path)
    assert (result.poses_used, result.poses_total) == (37, 40)
    np.testing.assert_allclose(result.tip_in_tool_mm, tip, atol=0.3)
    np.testing.assert_allclose(result.pivot_in_reference_mm, pivot, atol=0.3)
    assert 0.05 < result.rms_error_mm < 0.3
    np.testing.assert_allclose(result.tip_to_tool[:3, 3], result.tip_in_tool_mm)


def test_recording_with_invalid_stylus_is_refused(tmp_path: Path) -> None:
    path = _recording(
        tmp_path / "bad.igs.mha", np.ones(3), np.ones(3), n=12, invalid=tuple(range(12))
    )
    with pytest.raises(InputError, match="only 0 of 12 frames have an OK StylusToReference"):
        calibrate_pivot(path)


@pytest.mark.needs_data
def test_plus_recording_with_invalid_stylus_is_refused(plus_images: Path) -> None:
    with pytest.raises(InputError, match="only 0 of 97 frames"):
        calibrate_pivot(plus_images / "NwirePhantomFreehand.igs.mha")
