"""Pose interpolation: samples returned exactly, slerp midpoints, refusal to extrapolate."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from usnav.errors import ExtrapolationError
from usnav.frames import TransformStatus
from usnav.transforms import PoseSeries, rigid_from_params


def _series(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.uniform(0.01, 0.05, n))
    mats = np.stack(
        [rigid_from_params(rng.normal(0, [20, 20, 20, 0.5, 0.5, 0.5])) for _ in range(n)]
    )
    return times, mats


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 12), seed=st.integers(0, 10_000))
def test_interpolation_at_sample_times_returns_samples(n: int, seed: int) -> None:
    times, mats = _series(n, seed)
    series = PoseSeries(times, mats)
    for t, m in zip(times, mats, strict=True):
        np.testing.assert_allclose(series.at(t).matrix, m, atol=1e-9)


def test_midpoint_is_slerp_and_linear_translation() -> None:
    a = rigid_from_params([0, 0, 0, 0, 0, 0])
    b = rigid_from_params([10, 20, 30, 0, 0, np.pi / 2])
    series = PoseSeries([0.0, 1.0], [a, b])
    mid = series.at(0.5, max_gap_s=1.0).matrix
    np.testing.assert_allclose(mid[:3, 3], [5, 10, 15])
    angle = Rotation.from_matrix(mid[:3, :3]).as_rotvec()
    np.testing.assert_allclose(angle, [0, 0, np.pi / 4], atol=1e-12)


def test_refuses_to_extrapolate_and_says_how_far() -> None:
    series = PoseSeries([1.0, 1.1], [np.eye(4), np.eye(4)], name="ProbeToTracker")
    assert series.at(1.15, max_gap_s=0.1).ok  # held at the last sample within the gap
    with pytest.raises(ExtrapolationError, match=r"ProbeToTracker: 1\.500 s is 0\.400 s after"):
        series.at(1.5, max_gap_s=0.1)
    with pytest.raises(ExtrapolationError, match="before the first"):
        series.at(0.5, max_gap_s=0.1)


def test_refuses_to_bridge_a_long_gap() -> None:
    series = PoseSeries([0.0, 1.0], [np.eye(4), np.eye(4)])
    with pytest.raises(ExtrapolationError, match="gap"):
        series.at(0.5, max_gap_s=0.2)


def test_invalid_neighbour_makes_result_invalid() -> None:
    series = PoseSeries(
        [0.0, 0.1, 0.2],
        [np.eye(4)] * 3,
        [TransformStatus.OK, TransformStatus.INVALID, TransformStatus.OK],
    )
    assert series.at(0.05).status is TransformStatus.INVALID
    assert series.at(0.0).status is TransformStatus.OK


def test_a_sample_time_gives_that_sample_and_its_own_status() -> None:
    """At an interior sample's time (within 1 µs) the pose is that sample, OK, even when the
    next sample is INVALID (interpolating with w = 0 took the neighbour's status)."""
    a, b = rigid_from_params([1, 2, 3, 0.1, 0, 0]), rigid_from_params([5, 2, 3, 0, 0.2, 0])
    series = PoseSeries(
        [0.0, 0.1, 0.2],
        [np.eye(4), a, b],
        [TransformStatus.OK, TransformStatus.OK, TransformStatus.INVALID],
    )
    for t in (0.1, 0.1 + 5e-7, 0.1 - 5e-7):
        pose = series.at(t)
        assert pose.status is TransformStatus.OK
        np.testing.assert_array_equal(pose.matrix, a)
    assert series.at(0.1 + 1e-4).status is TransformStatus.INVALID
    assert series.at(0.2).status is TransformStatus.INVALID
