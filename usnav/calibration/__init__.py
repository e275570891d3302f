"""Probe calibration: N-wire spatial (``ImageToProbe``), temporal (tracker lag), stylus pivot.

Reproduces PLUS fCal on PLUS's own recordings and configuration files; see
``docs/calibration.md``.
"""

from usnav.calibration.output import plus_coordinate_definitions, write_calibration
from usnav.calibration.phantom import (
    CalibrationConfig,
    NWirePattern,
    SegmentationParameters,
    read_calibration_config,
)
from usnav.calibration.pivot import PivotResult, calibrate_pivot, pivot_calibration
from usnav.calibration.precision import CalibrationPrecision, calibration_precision
from usnav.calibration.segmentation import FrameStatus
from usnav.calibration.spatial import (
    CalibrationRefused,
    ErrorSummary,
    SpatialCalibrationResult,
    calibrate_spatial,
    percentile_stats,
    solve_image_to_probe,
)
from usnav.calibration.temporal import TemporalCalibrationResult, calibrate_temporal

__all__ = [
    "CalibrationConfig",
    "CalibrationPrecision",
    "CalibrationRefused",
    "ErrorSummary",
    "FrameStatus",
    "NWirePattern",
    "PivotResult",
    "SegmentationParameters",
    "SpatialCalibrationResult",
    "TemporalCalibrationResult",
    "calibrate_pivot",
    "calibrate_spatial",
    "calibrate_temporal",
    "calibration_precision",
    "percentile_stats",
    "pivot_calibration",
    "plus_coordinate_definitions",
    "read_calibration_config",
    "solve_image_to_probe",
    "write_calibration",
]
