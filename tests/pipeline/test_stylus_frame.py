"""The stylus tip is placed in the MRI with the same transform as the margins it is measured
against: the tumor stage's, a tie's candidate, the across-sweep estimate, or the global one."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from usnav.config.calibration import PivotCalibration
from usnav.frames import TrackedFrame, TrackedTransform, TransformStatus
from usnav.pipeline.live import LivePipeline
from usnav.registration.estimate import RegistrationEstimate


def _shifted(x_mm: float) -> np.ndarray:
    m = np.eye(4)
    m[0, 3] = x_mm
    return m


@pytest.mark.parametrize(
    "field", [None, "tumor_reference_to_mri", "tied_candidate_reference_to_mri", "across"]
)
def test_the_stylus_tip_goes_where_the_margins_are_drawn(field) -> None:
    pivot = PivotCalibration(
        tip_in_tool_mm=[0.0, 0.0, 10.0], pivot_in_reference_mm=[0, 0, 0], rms_error_mm=0.1
    )
    owner = SimpleNamespace(pivot=pivot)
    stylus_to_reference = _shifted(5.0)
    frame = TrackedFrame(
        image=np.zeros((4, 4), np.uint8),
        transforms={pivot.tool: TrackedTransform(stylus_to_reference, TransformStatus.OK)},
    )
    extra = {}
    if field == "across":
        extra["across_sweep_reference_to_mri"] = _shifted(-7.0)
    elif field is not None:
        extra[field] = _shifted(-7.0)
    estimate = RegistrationEstimate(reference_to_mri=_shifted(100.0), **extra)
    tip = LivePipeline._stylus_tip_mri(owner, frame, estimate)
    expected = estimate.margins_reference_to_mri @ stylus_to_reference @ [0.0, 0.0, 10.0, 1.0]
    np.testing.assert_allclose(tip, expected[:3])
    # the global estimate only when nothing else draws the margins
    assert (tip[0] == pytest.approx(105.0)) == (field is None)
