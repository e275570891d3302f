"""One call per ``usnav calibrate`` subcommand: calibrate, then write what was asked for.

Each function returns the result object; files (calibration TOML, PLUS XML, report PNG) are
written only when their path is given. The TOML is merged into an existing file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from usnav.calibration.output import (
    check_calibration_output,
    plus_coordinate_definitions,
    write_calibration,
)
from usnav.calibration.phantom import CalibrationConfig, read_calibration_config
from usnav.calibration.pivot import PivotResult, calibrate_pivot
from usnav.calibration.spatial import (
    MIN_FRAMES,
    CalibrationRefused,
    ProgressCallback,
    SpatialCalibrationResult,
    calibrate_spatial,
)
from usnav.calibration.temporal import TemporalCalibrationResult, calibrate_temporal
from usnav.errors import InputError


def _write_text(path: str | Path, text: str) -> Path:
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(p, f"cannot write: {exc.strerror or exc}") from exc
    return p


def run_spatial(
    config: str | Path | CalibrationConfig,
    calibration: str | Path,
    validation: str | Path | None = None,
    *,
    out: str | Path | None = None,
    report: str | Path | None = None,
    xml: str | Path | None = None,
    phantom_to_reference: np.ndarray | None = None,
    min_frames: int = MIN_FRAMES,
    tracker_lag_s: float | None = None,
    progress: ProgressCallback | None = None,
) -> SpatialCalibrationResult:
    """Spatial calibration (:func:`calibrate_spatial`), then the requested outputs (``out``
    checked first).

    ``tracker_lag_s`` None: the images are paired at the lag the probe will pair them at live,
    the ``[temporal]`` lag of the calibration file ``out`` updates (0 without one), counted
    from the recording's own pairing (:attr:`usnav.io.sequence.Sequence.paired_tracker_lag_s`).
    The result's ``tracker_lag_source`` says which."""
    existing = check_calibration_output(out) if out is not None else None
    if not isinstance(config, CalibrationConfig):
        config = read_calibration_config(config)  # its errors first, as calibrate_spatial's
    source = "--tracker-lag-s"
    if tracker_lag_s is None:
        from usnav.io.sequence import read_sequence

        with read_sequence(calibration) as seq:
            recorded = seq.paired_tracker_lag_s
        if existing is not None and existing.temporal is not None:
            target = existing.tracker_lag_s
            source = f"the [temporal] lag of {out}"
        else:
            target = recorded
            source = "as the recording pairs them" + (
                f" (no [temporal] lag in {out})" if out is not None else ""
            )
        tracker_lag_s = target - recorded
    try:
        result = calibrate_spatial(
            config,
            calibration,
            validation,
            phantom_to_reference=phantom_to_reference,
            min_frames=min_frames,
            tracker_lag_s=tracker_lag_s,
            progress=progress,
        )
    except CalibrationRefused as exc:
        if report is None:
            raise
        from usnav.calibration.report import refusal_report

        refusal_report(exc.segmented, exc.problem, report)
        # what to check stays (a mirrored definition's); "run again with --report" goes
        kept = exc.hint if exc.hint and "--report" not in exc.hint else None
        hint = f"{kept}; see the report {report}" if kept else f"see the report {report}"
        raise CalibrationRefused(exc.segmented, exc.problem, hint, source=exc.source) from exc
    result.tracker_lag_source = source
    if out is not None:
        mismatch = write_calibration(out, spatial=result).spatial_lag_mismatch()
        if mismatch:
            result.warnings.append(mismatch)
    if xml is not None:
        _write_text(xml, plus_coordinate_definitions(spatial=result))
    if report is not None:
        from usnav.calibration.report import spatial_report

        spatial_report(result, report)
    return result


def run_temporal(
    video: str | Path,
    tracker: str | Path | None = None,
    *,
    tool: str = "ProbeToReference",
    clip: tuple[int, int, int, int] | None = None,
    clamp_ends: bool = False,
    out: str | Path | None = None,
    report: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TemporalCalibrationResult:
    """Temporal calibration (:func:`calibrate_temporal`), then the requested outputs (``out``
    checked first)."""
    if out is not None:
        check_calibration_output(out)
    result = calibrate_temporal(
        video, tracker, tool=tool, clip=clip, clamp_ends=clamp_ends, progress=progress
    )
    if out is not None:
        mismatch = write_calibration(out, temporal=result).spatial_lag_mismatch()
        if mismatch:
            result.warnings.append(mismatch)
    if report is not None:
        from usnav.calibration.report import temporal_report

        temporal_report(result, report)
    return result


def run_pivot(
    recording: str | Path,
    *,
    tool: str = "StylusToReference",
    out: str | Path | None = None,
    xml: str | Path | None = None,
) -> PivotResult:
    """Pivot calibration (:func:`calibrate_pivot`), then the requested outputs (``out``
    checked first)."""
    if out is not None:
        check_calibration_output(out)
    result = calibrate_pivot(recording, tool)
    if out is not None:
        write_calibration(out, pivot=result)
    if xml is not None:
        _write_text(xml, plus_coordinate_definitions(pivot=result))
    return result
