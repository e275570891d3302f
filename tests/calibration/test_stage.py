"""The calibration stage: ImageToProbe and the tracker lag applied in one place, the same rule
for the live pipeline (probe client, frame path) and the batch tools (sweep registration)."""

from __future__ import annotations

import numpy as np
import pytest

from usnav.calibration.stage import CalibrationStage
from usnav.config.calibration import CalibrationFile, SpatialCalibration, TemporalCalibration
from usnav.devices.config import ProbeConfig
from usnav.devices.probe import ProbeClient
from usnav.frames import TrackedFrame, TrackedTransform, TransformStatus
from usnav.registration.sweep import _image_to_reference
from usnav.transforms import rigid_from_params

IMAGE_TO_PROBE = rigid_from_params([3.0, -2.0, 1.0, 0.1, -0.2, 0.05]) @ np.diag(
    [0.2, 0.25, 0.225, 1.0]
)
PROBE_TO_TRACKER = rigid_from_params([40.0, 10.0, -5.0, 0.3, 0.1, -0.4])
REFERENCE_TO_TRACKER = rigid_from_params([-20.0, 5.0, 12.0, -0.1, 0.2, 0.1])


def _frame(**transforms: TrackedTransform) -> TrackedFrame:
    return TrackedFrame(np.zeros((4, 5), np.uint8), transforms=dict(transforms))


def _file(lag_s: float | None = None) -> CalibrationFile:
    return CalibrationFile(
        spatial=SpatialCalibration(image_to_probe=IMAGE_TO_PROBE.tolist()),
        temporal=TemporalCalibration(tracker_lag_s=lag_s) if lag_s is not None else None,
    )


def test_pose_time_is_the_image_time_plus_the_tracker_lag() -> None:
    stage = CalibrationStage.from_calibration(_file(-0.0648))
    assert stage.tracker_lag_s == pytest.approx(-0.0648)
    assert stage.pose_time(100.0) == pytest.approx(100.0 - 0.0648)
    # a device file's time_offset_s overrides the calibration file's lag
    assert CalibrationStage.from_calibration(_file(-0.0648), tracker_lag_s=0.02).pose_time(
        1.0
    ) == pytest.approx(1.02)
    assert CalibrationStage.from_calibration(None).pose_time(5.0) == 5.0


def test_image_to_reference_chains_the_tracker_poses_through_image_to_probe() -> None:
    stage = CalibrationStage.from_calibration(_file())
    frame = _frame(
        ProbeToTracker=TrackedTransform(PROBE_TO_TRACKER),
        ReferenceToTracker=TrackedTransform(REFERENCE_TO_TRACKER),
        ImageToReference=TrackedTransform(np.eye(4)),  # the server's calibration: not used
    )
    matrix, status = stage.image_to_reference(frame)
    expected = np.linalg.inv(REFERENCE_TO_TRACKER) @ PROBE_TO_TRACKER @ IMAGE_TO_PROBE
    np.testing.assert_allclose(matrix, expected, atol=1e-9)
    assert status is TransformStatus.OK
    # pixel (col, row) lands where the chain written out by hand puts it
    pixel = np.array([120.0, 80.0, 0.0, 1.0])
    np.testing.assert_allclose((matrix @ pixel)[:3], (expected @ pixel)[:3], atol=1e-9)


def test_status_is_the_worst_along_the_chain_and_embedded_is_the_fallback() -> None:
    stage = CalibrationStage.from_calibration(_file())
    invalid = _frame(
        ProbeToReference=TrackedTransform(PROBE_TO_TRACKER, TransformStatus.INVALID),
    )
    assert stage.image_to_reference(invalid)[1] is TransformStatus.INVALID
    assert stage.image_to_reference_ok(invalid) is None
    embedded = np.diag([0.1, 0.1, 0.1, 1.0])
    only_embedded = _frame(ImageToReference=TrackedTransform(embedded))
    np.testing.assert_allclose(stage.image_to_reference(only_embedded)[0], embedded)
    # without a spatial calibration the server's own ImageToReference is used
    no_spatial = CalibrationStage.from_calibration(None)
    both = _frame(
        ProbeToReference=TrackedTransform(PROBE_TO_TRACKER),
        ImageToReference=TrackedTransform(embedded),
    )
    np.testing.assert_allclose(no_spatial.image_to_reference(both)[0], embedded)
    assert stage.image_to_reference(_frame())[1] is TransformStatus.MISSING


def test_live_and_batch_place_a_frame_the_same_way() -> None:
    frame = _frame(
        ProbeToReference=TrackedTransform(PROBE_TO_TRACKER),
        ImageToReference=TrackedTransform(np.eye(4)),
    )
    live, _ = CalibrationStage.from_calibration(_file()).image_to_reference(frame)
    batch = _image_to_reference(frame, IMAGE_TO_PROBE)
    np.testing.assert_allclose(batch, live)
    np.testing.assert_allclose(live, PROBE_TO_TRACKER @ IMAGE_TO_PROBE, atol=1e-9)


def test_the_probe_client_pairs_its_streams_at_the_stage_pose_time() -> None:
    probe = ProbeClient(
        ProbeConfig(port=1, transforms=["ProbeToReference"]), calibration=_file(-0.05)
    )
    try:
        assert probe.calibration_stage.pose_time(10.0) == pytest.approx(9.95)
    finally:
        probe.close()
    override = ProbeClient(
        ProbeConfig(port=1, transforms=["ProbeToReference"], time_offset_s=0.01),
        calibration=_file(-0.05),
    )
    try:
        assert override.calibration_stage.tracker_lag_s == pytest.approx(0.01)
    finally:
        override.close()
