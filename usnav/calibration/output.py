"""Write calibration results: ``calibration/<name>.toml`` (merged) and PLUS XML."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np

from usnav.calibration.pivot import PivotResult
from usnav.calibration.precision import PRECISION_ONLY
from usnav.calibration.spatial import ErrorSummary, SpatialCalibrationResult
from usnav.calibration.temporal import TemporalCalibrationResult
from usnav.config.calibration import (
    CalibrationFile,
    ErrorStats,
    PivotCalibration,
    SpatialCalibration,
    SpatialPrecision,
    TemporalCalibration,
    load_calibration,
    save_calibration,
)
from usnav.config.plus_xml import (
    FLAGGED_ATTRIBUTE,
    IMAGE_SIZE_ATTRIBUTE,
    TRACKER_LAG_ATTRIBUTE,
    PlusTransform,
    coordinate_definitions_xml,
)
from usnav.errors import ConfigError


def _stats(s: ErrorSummary | None) -> ErrorStats | None:
    if s is None:
        return None
    return ErrorStats(mean=s.mean, sd=s.sd, max=s.max, count=s.count)


def precision_section(result: SpatialCalibrationResult) -> SpatialPrecision | None:
    """The ``[spatial.precision]`` table (None when no precision was computed)."""
    p = result.precision
    if p is None:
        return None
    finite = all(math.isfinite(v) for v in p.predicted_pre3d_mm)
    return SpatialPrecision(
        calibration_error_mm=p.calibration_error_mm,
        calibration_error_deg=p.calibration_error_deg,
        bootstrap_mm=p.bootstrap_mm,
        bootstrap_deg=p.bootstrap_deg,
        points_mm=dict(p.points_mm),
        depth_mm=p.depth_mm,
        block_frames=p.block_frames,
        replicates=p.replicates,
        seed=p.seed,
        predicted_pre3d_mm=list(p.predicted_pre3d_mm) if finite else None,
        validation_excess_mm=p.validation_excess_mm,
        understated=p.understated,
        note=PRECISION_ONLY,
    )


def spatial_section(result: SpatialCalibrationResult) -> SpatialCalibration:
    """The ``[spatial]`` section for a calibration file."""
    return SpatialCalibration(
        image_to_probe=result.image_to_probe.tolist(),
        calibration_error_mm=_stats(result.calibration_error),
        validation_error_mm=_stats(result.validation_error),
        frames_used=len(result.calibration.used),
        tracker_lag_s=result.tracker_lag_s,
        precision=precision_section(result),
        flagged=result.flagged,
        warnings=result.flag_reasons,
        # the size its mm per pixel hold for: images of another size are refused
        image_size_px=list(result.calibration.image_size)
        if all(result.calibration.image_size)
        else None,
    )


def temporal_section(result: TemporalCalibrationResult) -> TemporalCalibration:
    """The ``[temporal]`` section for a calibration file."""
    return TemporalCalibration(
        tracker_lag_s=result.tracker_lag_s,
        error=result.error,
        max_error=result.max_error,
        flagged=result.flagged,
        warnings=list(result.warnings),
    )


def pivot_section(result: PivotResult) -> PivotCalibration:
    """The ``[pivot]`` section for a calibration file."""
    return PivotCalibration(
        tool=result.tool,
        tip_in_tool_mm=result.tip_in_tool_mm.tolist(),
        pivot_in_reference_mm=result.pivot_in_reference_mm.tolist(),
        rms_error_mm=result.rms_error_mm,
    )


def check_calibration_output(path: str | Path) -> CalibrationFile | None:
    """Check a calibration output before any calibration work: a ``.toml`` file that is new,
    or an existing usnav calibration file (it is updated, its other sections kept).

    Returns
    -------
    CalibrationFile or None
        The existing file's content; None for a new file.

    Raises
    ------
    ConfigError
        Not a ``.toml`` name, or an existing file that is not a usnav calibration file.
    """
    p = Path(path)
    if p.suffix.lower() != ".toml":
        raise ConfigError(
            p, "calibration output must be a .toml file", "give --out NAME.toml (e.g. probe.toml)"
        )
    if not p.exists():
        return None
    try:
        # not warned of: the file is being updated, and the command reports its own flags
        return load_calibration(p, warn=False)
    except ConfigError as exc:
        raise ConfigError(
            p,
            f"exists and is not a usnav calibration file, so it cannot be updated ({exc.problem})",
            "give a new --out file, or the calibration file to update",
        ) from exc


def write_calibration(
    path: str | Path,
    *,
    spatial: SpatialCalibrationResult | None = None,
    temporal: TemporalCalibrationResult | None = None,
    pivot: PivotResult | None = None,
) -> CalibrationFile:
    """Write (or update) a usnav calibration TOML with the given results.

    An existing file is read and only the sections given are replaced; its other sections,
    notes and sources are kept. The date is set to now; the sources are extended with the
    recordings and configuration used.

    Raises
    ------
    ConfigError
        If ``path`` exists but is not a valid usnav calibration file (it is not overwritten).
    """
    p = Path(path)
    current = check_calibration_output(p) or CalibrationFile(probe=p.stem)
    update: dict = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    sources = list(current.sources)
    if spatial is not None:
        update["spatial"] = spatial_section(spatial)
        new = [spatial.config.source, spatial.calibration.path]
        if spatial.validation is not None:
            new.append(spatial.validation.path)
        sources += new
    if temporal is not None:
        update["temporal"] = temporal_section(temporal)
        sources += list(temporal.sources)
    if pivot is not None:
        update["pivot"] = pivot_section(pivot)
        sources.append(pivot.source)
    update["sources"] = list(dict.fromkeys(str(s) for s in sources if s))
    merged = CalibrationFile.model_validate(
        {
            **current.model_dump(),
            **{k: (v.model_dump() if hasattr(v, "model_dump") else v) for k, v in update.items()},
        }
    )
    save_calibration(merged, p)
    merged._loaded_from = str(p)  # its messages (spatial_lag_mismatch) name the file written
    return merged


def plus_coordinate_definitions(
    *,
    spatial: SpatialCalibrationResult | None = None,
    pivot: PivotResult | None = None,
) -> str:
    """PLUS ``<CoordinateDefinitions>`` with ImageToProbe and/or StylusTipToStylus.

    Wrapped in a ``<PlusConfiguration>`` root so the file is itself readable (by PLUS tools
    and by :func:`usnav.config.calibration.load_calibration`); paste the inner element into a
    device-set file. ImageToProbe records whether the calibration is flagged (``Flagged``,
    and its warnings as ``<Warning>`` children), which PLUS ignores and usnav's loaders report.
    """
    date = dt.datetime.now().strftime("%m%d%y_%H%M%S")
    transforms = []
    if spatial is not None:
        cfg = spatial.config
        err = spatial.validation_error or spatial.calibration_error
        attributes = {
            "Error": f"{err.mean:.6g}",
            "Date": date,
            FLAGGED_ATTRIBUTE: "TRUE" if spatial.flagged else "FALSE",
            # what [spatial] records beside the matrix, so usnav reads the XML back as the
            # TOML: the image size its mm per pixel hold for, the lag it was paired at
            TRACKER_LAG_ATTRIBUTE: repr(float(spatial.tracker_lag_s)),
        }
        if all(spatial.calibration.image_size):
            cols, rows = spatial.calibration.image_size
            attributes[IMAGE_SIZE_ATTRIBUTE] = f"{int(cols)} {int(rows)}"
        transforms.append(
            PlusTransform(
                cfg.image_frame,
                cfg.probe_frame,
                np.asarray(spatial.image_to_probe),
                attributes,
                spatial.flag_reasons if spatial.flagged else [],
            )
        )
    if pivot is not None:
        tool_frame = pivot.tool.split("To")[0] if "To" in pivot.tool else "Stylus"
        transforms.append(
            PlusTransform(
                f"{tool_frame}Tip",
                tool_frame,
                pivot.tip_to_tool,
                {"Error": f"{pivot.rms_error_mm:.6g}", "Date": date},
            )
        )
    inner = coordinate_definitions_xml(transforms)
    indented = "".join(f"  {line}\n" for line in inner.splitlines())
    return (
        '<PlusConfiguration version="2.1">\n'
        "  <!-- written by usnav calibrate; paste <CoordinateDefinitions> into a device set -->\n"
        f"{indented}</PlusConfiguration>\n"
    )
