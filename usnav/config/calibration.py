"""Calibration files (``calibration/*.toml``): spatial ``ImageToProbe``, temporal lag, pivot.

Written by ``usnav calibrate`` and ``usnav simulate``, read by ``usnav run`` / ``register``.
:func:`load_calibration` also takes a PLUS device-set XML (``<CoordinateDefinitions>``) or a
text file of 16 numbers, so PLUS calibrations are usable as they are.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import numpy as np
import tomli_w
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, StrictBool, field_validator

from usnav.config.loader import load_toml_model
from usnav.config.plus_xml import (
    GIVE_16,
    TRACKER_LAG_ATTRIBUTE,
    parse_matrix_text,
    read_coordinate_definitions,
)
from usnav.errors import ConfigError
from usnav.transforms.matrices import MAX_AXIS_SKEW_DEG, decompose_scaled_rigid

log = logging.getLogger("usnav.config.calibration")

Matrix4 = Annotated[list[list[float]], Field(min_length=4, max_length=4)]


#: The pixel sizes an ultrasound image may have, mm. B-mode pixels are ~0.05-1 mm (PLUS's
#: N-wire calibration: 0.075 mm); a pixel outside this range means a matrix in other units
#: (metres, µm) or another matrix altogether, and every distance drawn would be wrong by the
#: same factor.
PIXEL_MM_RANGE = (1e-3, 10.0)
#: An ImageToProbe scale this close to 1 is "no scale" (1 mm pixels: a rigid matrix).
UNIT_PIXEL_TOLERANCE = 1e-6


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ``flagged`` and ``warnings`` of ``[spatial]`` and ``[temporal]``: what ``usnav calibrate``
# said of the section's result (session 34): ``flagged`` true when a warning flagged it (the
# command's exit status 1), with the warnings, one line each. None: not recorded (files
# written before session 34, PLUS XML without it, ``usnav simulate``'s exact calibration),
# loaded as before. A ``[spatial]`` section computed at another lag than the file's
# ``[temporal]`` one is not recorded as a flag: that depends on the other section, so every
# load checks it anew (:meth:`CalibrationFile.spatial_lag_mismatch`).


def _check_4x4(value: list[list[float]]) -> list[list[float]]:
    m = np.asarray(value, dtype=np.float64)
    if m.shape != (4, 4):
        raise ValueError(f"must be 4 rows of 4 numbers, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError("has NaN or infinite values")
    return value


class ErrorStats(_Strict):
    """Error statistics, mm (PLUS: mean and population SD of the lowest 95 %)."""

    mean: float = Field(ge=0)
    sd: float = Field(ge=0)
    max: float | None = Field(default=None, ge=0)
    count: int | None = Field(default=None, ge=0)


class SpatialPrecision(_Strict):
    """95 % precision of ``ImageToProbe`` from a bootstrap over the calibration frames
    (``usnav calibrate spatial``; docs/calibration.md, "Calibration precision").

    PRECISION only: how far refits of the same recording's frames move an image point. The
    phantom's geometry and registration, a wire-segmentation bias and the tracker's error are
    not in it.

    Attributes
    ----------
    calibration_error_mm, calibration_error_deg
        What to state in ``[registration_budget]``: ``mm + radians(deg)·d`` covers the 95 %
        spread of every image point at depth d (mm below the image's top row); mm is at least
        ``validation_excess_mm``.
    bootstrap_mm, bootstrap_deg
        The same from the bootstrap alone.
    points_mm
        95 % spread of named image points (``origin``, ``top_centre``, ``centre``,
        ``bottom_left``, ``bottom_right``), mm.
    depth_mm
        The image's depth (bottom row below the top row), mm.
    block_frames, replicates, seed
        How the frames were resampled: blocks of consecutive frames, resamples, seed.
    predicted_pre3d_mm
        PRE3D (mm) the bootstrap predicts for a new recording: median and 95th percentile.
    validation_excess_mm
        Validation PRE3D beyond the prediction, mm (0: within it; absent: no validation).
    understated
        The validation recording showed more error than the bootstrap predicts.
    """

    calibration_error_mm: float = Field(ge=0)
    calibration_error_deg: float = Field(ge=0)
    bootstrap_mm: float | None = Field(default=None, ge=0)
    bootstrap_deg: float | None = Field(default=None, ge=0)
    points_mm: dict[str, float] = Field(default_factory=dict)
    depth_mm: float | None = Field(default=None, ge=0)
    block_frames: int | None = Field(default=None, ge=1)
    replicates: int | None = Field(default=None, ge=1)
    seed: int | None = None
    predicted_pre3d_mm: list[float] | None = Field(default=None, min_length=2, max_length=2)
    validation_excess_mm: float | None = Field(default=None, ge=0)
    understated: bool = False
    note: str = ""


class SpatialCalibration(_Strict):
    """``ImageToProbe``: image pixels (col, row, 0) → Probe mm; carries mm per pixel."""

    image_to_probe: Matrix4
    calibration_error_mm: ErrorStats | None = None
    validation_error_mm: ErrorStats | None = None
    frames_used: int | None = Field(default=None, ge=0)
    #: The lag its images were paired with their poses at, s (``--tracker-lag-s``; an image
    #: stamped t with the pose at t + lag). None: not recorded (files written before session
    #: 32, PLUS XML, ``usnav simulate``'s exact ImageToProbe), so not compared with the lag in
    #: use: those calibrations were made from recordings paired however they were.
    tracker_lag_s: float | None = Field(default=None, ge=-2.0, le=2.0)
    precision: SpatialPrecision | None = None
    flagged: StrictBool | None = None  # (and warnings) see the note above _check_4x4
    warnings: list[str] = Field(default_factory=list)
    #: The image size ImageToProbe was made for, ``[cols, rows]`` px (columns = image x,
    #: rows = image y, as a sequence file's ``DimSize``): its mm per pixel hold for images of
    #: that size only (another depth on the scanner is another size and another pixel size).
    #: None: not recorded (files written before session 40, PLUS XML, 16 numbers), so no image
    #: size can be checked against it (:meth:`CalibrationFile.image_size_mismatch`).
    image_size_px: list[Annotated[int, Field(ge=1)]] | None = Field(
        default=None, min_length=2, max_length=2
    )

    @field_validator("image_to_probe")
    @classmethod
    def _rigid_times_scale(cls, value: list[list[float]]) -> list[list[float]]:
        _check_4x4(value)
        try:
            _, scale, _ = decompose_scaled_rigid(np.asarray(value), tol_deg=MAX_AXIS_SKEW_DEG)
        except ValueError as exc:
            raise ValueError(f"not a rigid-times-scale calibration matrix: {exc}") from exc
        low, high = PIXEL_MM_RANGE
        if not all(low <= float(s) <= high for s in scale[:2]):
            raise ValueError(
                f"its pixels are {float(scale[0]):.4g} × {float(scale[1]):.4g} mm, outside the "
                f"{low:g}-{high:g} mm of an ultrasound image: give ImageToProbe in mm per pixel"
            )
        return value

    @property
    def matrix(self) -> np.ndarray:
        return np.asarray(self.image_to_probe, dtype=np.float64)

    @property
    def spacing_mm(self) -> tuple[float, float]:
        """mm per pixel along image x (columns) and y (rows)."""
        _, s, _ = decompose_scaled_rigid(self.matrix, tol_deg=MAX_AXIS_SKEW_DEG)
        return float(s[0]), float(s[1])


class TemporalCalibration(_Strict):
    """Tracker lag (PLUS ``TrackerLagSec``): the pose for an image stamped t is the tracker's
    pose at ``t + tracker_lag_s`` (negative: the tracker stream leads the video, its stamp of a
    moment earlier than the image's; PLUS: "> 0 if the tracker data lags")."""

    tracker_lag_s: float = Field(ge=-2.0, le=2.0)
    error: float | None = None
    max_error: float | None = None
    flagged: StrictBool | None = None  # (and warnings) see the note above _check_4x4
    warnings: list[str] = Field(default_factory=list)


class PivotCalibration(_Strict):
    """Stylus tip offset in the tool frame and the pivot point in the reference frame, mm."""

    tool: str = "StylusToReference"
    tip_in_tool_mm: list[float] = Field(min_length=3, max_length=3)
    pivot_in_reference_mm: list[float] = Field(min_length=3, max_length=3)
    rms_error_mm: float = Field(ge=0)


class CalibrationFile(_Strict):
    """Everything ``calibration/<probe>.toml`` holds. At least one section is present."""

    format: int = Field(default=1, ge=1, le=1, description="calibration file format version")
    probe: str = "probe"
    depth_mm: float | None = Field(default=None, gt=0)
    date: str = Field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    sources: list[str] = Field(default_factory=list)
    notes: str = ""
    #: the file this was read from (for messages), if any
    _loaded_from: str | None = PrivateAttr(default=None)
    spatial: SpatialCalibration | None = None
    temporal: TemporalCalibration | None = None
    pivot: PivotCalibration | None = None

    @property
    def where(self) -> str:
        """The file this was read from, or the probe's name: what messages call it."""
        return self._loaded_from or f"calibration '{self.probe}'"

    @property
    def image_size(self) -> tuple[int, int] | None:
        """``(cols, rows)`` px of the images ImageToProbe was made for (None: not recorded)."""
        if self.spatial is None or self.spatial.image_size_px is None:
            return None
        return int(self.spatial.image_size_px[0]), int(self.spatial.image_size_px[1])

    @property
    def image_to_probe(self) -> np.ndarray:
        """The spatial calibration matrix; raises ConfigError if this file has none."""
        if self.spatial is None:
            raise ConfigError(
                self.where,
                "has no [spatial] section (ImageToProbe)",
                "run usnav calibrate spatial first",
            )
        return self.spatial.matrix

    @property
    def tracker_lag_s(self) -> float:
        return self.temporal.tracker_lag_s if self.temporal else 0.0

    def describe(self) -> dict:
        """What the file holds, for ``usnav info``: ``kind`` = ``"calibration"``, ``path``,
        ``probe``, and per section present: ``spatial`` {``image_size_px`` [cols, rows] or
        None (not recorded), ``spacing_mm`` [along columns, along rows], ``tracker_lag_s`` its
        images were paired at (None: not recorded), ``flagged``}, ``temporal``
        {``tracker_lag_s``, ``flagged``}, ``pivot`` {``tool``, ``rms_error_mm``}."""
        info: dict = {"kind": "calibration", "path": self.where, "probe": self.probe}
        if self.spatial is not None:
            info["spatial"] = {
                "image_size_px": list(self.image_size) if self.image_size else None,
                "spacing_mm": list(self.spatial.spacing_mm),
                "tracker_lag_s": self.spatial.tracker_lag_s,
                "flagged": bool(self.spatial.flagged),
            }
        if self.temporal is not None:
            info["temporal"] = {
                "tracker_lag_s": self.temporal.tracker_lag_s,
                "flagged": bool(self.temporal.flagged),
            }
        if self.pivot is not None:
            info["pivot"] = {"tool": self.pivot.tool, "rms_error_mm": self.pivot.rms_error_mm}
        return info

    @property
    def unit_pixels(self) -> bool:
        """Whether ImageToProbe has no scale (1 mm per pixel in x and y): a rigid matrix,
        typically 16 numbers or a PLUS transform that left the pixel spacing out."""
        if self.spatial is None:
            return False
        return all(abs(s - 1.0) <= UNIT_PIXEL_TOLERANCE for s in self.spatial.spacing_mm)

    def unit_pixel_warning(self) -> str | None:
        """One line for a person when ImageToProbe has no scale (:attr:`unit_pixels`), else
        None: every distance is then taken with 1 × 1 mm pixels, which an ultrasound image
        (0.05-0.5 mm pixels) rarely has."""
        if not self.unit_pixels:
            return None
        return (
            f"{self.where}: ImageToProbe has no scale, so its pixels are taken as 1 × 1 mm "
            "(ImageToProbe carries the mm per pixel, as in PLUS) — if the image's pixels are "
            "smaller, give ImageToProbe with its scale (usnav calibrate, or PLUS's ImageToProbe)"
        )

    def check_pixel_spacing(self, spacing_mm: tuple[float, ...], source: str | Path) -> None:
        """Refuse images that state a pixel spacing other than 1 mm when ImageToProbe has no
        scale (:attr:`unit_pixels`). Scaled calibrations are never refused: ImageToProbe is
        then what places the pixels, and PLUS writes ``ElementSpacing = 1 1 1`` in recordings.

        Parameters
        ----------
        spacing_mm
            The images' own pixel spacing (mm) along columns and rows (a sequence file's
            ``ElementSpacing`` / NRRD ``space directions``).
        source
            The images (e.g. the recording's path), named in the message.

        Raises
        ------
        ConfigError
            One line naming this file, the recording, both spacings and what to do.
        """
        x, y = (float(v) for v in spacing_mm[:2])
        if not self.unit_pixels or (
            abs(x - 1.0) <= UNIT_PIXEL_TOLERANCE and abs(y - 1.0) <= UNIT_PIXEL_TOLERANCE
        ):
            return
        raise ConfigError(
            self.where,
            f"ImageToProbe has no scale (1 × 1 mm pixels) but {source} says its pixels are "
            f"{x:g} × {y:g} mm (its pixel spacing): every distance would be wrong by that factor",
            "give ImageToProbe with its mm per pixel (usnav calibrate, or PLUS's ImageToProbe)",
        )

    def flag_warning(self) -> str | None:
        """One line for a person when a section of this file was flagged by ``usnav
        calibrate`` (naming the file, the sections and their warnings), else None."""
        flagged = [
            (name, section.warnings)
            for name, section in (("spatial", self.spatial), ("temporal", self.temporal))
            if section is not None and section.flagged
        ]
        if not flagged:
            return None
        where = self.where
        said = "; ".join(
            f"[{name}]: " + (" / ".join(warnings) if warnings else "(no warning recorded)")
            for name, warnings in flagged
        )
        return (
            f"{where} is a FLAGGED calibration (usnav calibrate exited 1 when it was written): "
            f"{said} — used all the same; calibrate again, or make sure the warnings are "
            "acceptable for this probe"
        )

    def image_size_mismatch(
        self, image_size_px: tuple[int, int] | list[int], source: str | Path = "the images"
    ) -> str | None:
        """One line for a person when images of ``image_size_px`` cannot be placed with this
        calibration, else None.

        ImageToProbe's mm per pixel hold for the image size it was made for (``[spatial]
        image_size_px``); images of another size (another depth or zoom on the scanner) would
        be placed at a wrong scale, silently. None too when the file does not record its size
        (older files, PLUS XML, 16 numbers): nothing can be checked then.

        Parameters
        ----------
        image_size_px
            ``(cols, rows)`` px of the images (a sequence file's ``DimSize``; a numpy image's
            ``shape[1], shape[0]``).
        source
            What the images are, for the message (e.g. the recording's path).
        """
        error = self._image_size_error(image_size_px, source)
        return None if error is None else str(error)

    def check_image_size(
        self, image_size_px: tuple[int, int] | list[int], source: str | Path
    ) -> None:
        """Refuse images of another size than this calibration was made for
        (:meth:`image_size_mismatch`); nothing is checked when the file does not record it.

        Parameters
        ----------
        image_size_px
            ``(cols, rows)`` px of the images.
        source
            The recording (or other source of the images), named in the message.

        Raises
        ------
        ConfigError
            One line naming the calibration file, the recording, both sizes and what to do.
        """
        error = self._image_size_error(image_size_px, source)
        if error is not None:
            raise error

    def _image_size_error(
        self, image_size_px: tuple[int, int] | list[int], source: str | Path
    ) -> ConfigError | None:
        made = self.image_size
        if made is None:
            return None
        got = (int(image_size_px[0]), int(image_size_px[1]))
        if made == got:
            return None
        return ConfigError(
            self.where,
            f"was made for {made[0]} × {made[1]} px images (cols × rows) but {source} has "
            f"{got[0]} × {got[1]} px images: its mm per pixel do not hold for them",
            "calibrate for this image size/depth, or give the calibration made for it",
        )

    def spatial_lag_mismatch(self, tracker_lag_s: float | None = None) -> str | None:
        """A line for a person when ImageToProbe was computed with images paired with their
        poses at another lag than the one images are paired at in use (``tracker_lag_s``, s;
        default this file's ``[temporal]`` lag, 0 without one), else None. Tolerance 10 ms.
        None too when the ``[spatial]`` section does not record its lag."""
        lag = self.tracker_lag_s if tracker_lag_s is None else tracker_lag_s
        if self.spatial is None or self.spatial.tracker_lag_s is None:
            return None
        if abs(self.spatial.tracker_lag_s - lag) <= 0.01:
            return None
        where = self.where
        spatial_lag = self.spatial.tracker_lag_s
        return (
            f"{where}: ImageToProbe was computed with each image paired with the pose at "
            f"t {spatial_lag:+.3f} s, but images are paired at t {lag:+.3f} s here: calibrate "
            f"spatial again so that its images are paired at t {lag:+.3f} s (--tracker-lag-s "
            f"counts from the recording's own pairing, which a usnav recording states in its "
            f"header), or, if {spatial_lag:+.3f} s is the probe's lag, pair images there "
            f"([temporal] tracker_lag_s, usnav calibrate temporal --out, or the device's "
            f"time_offset_s)"
        )


def format_calibration(info: dict) -> str:
    """Human-readable lines for :meth:`CalibrationFile.describe`'s result."""
    lines = [f"{info['path']}: probe calibration ({info['probe']})"]
    spatial = info.get("spatial")
    if spatial:
        size = spatial["image_size_px"]
        made = f"{size[0]} × {size[1]} px images" if size else "images of any size (not recorded)"
        cols_mm, rows_mm = spatial["spacing_mm"]
        lines.append(
            f"  spatial      ImageToProbe for {made}, {cols_mm:.4f} × {rows_mm:.4f} mm per pixel "
            "(columns × rows)" + (", FLAGGED" if spatial["flagged"] else "")
        )
    temporal = info.get("temporal")
    if temporal:
        lines.append(
            f"  temporal     tracker lag {temporal['tracker_lag_s']:+.4f} s"
            + (", FLAGGED" if temporal["flagged"] else "")
        )
    pivot = info.get("pivot")
    if pivot:
        lines.append(f"  pivot        {pivot['tool']}, rms {pivot['rms_error_mm']:.2f} mm")
    if len(lines) == 1:
        lines.append("  (no [spatial], [temporal] or [pivot] section: nothing calibrated yet)")
    return "\n".join(lines)


def check_depth_calibrations(calibrations: Sequence[CalibrationFile]) -> None:
    """Refuse calibrations of one probe that cannot be told apart by their images' size.

    A scanner's depth (or zoom) presets each give images of their own size and mm per pixel,
    so a probe calibrated at several depths has one ``ImageToProbe`` per image size; the live
    pipeline places each frame with the calibration made for its size. For that, each file
    must record its size (``[spatial] image_size_px``, written by ``usnav calibrate
    spatial``), no two may be for the same size, and they must agree on the tracker lag (one
    probe and tracker: the streams are paired at one lag before a frame's size is known) and
    on the stylus's ``[pivot]`` where more than one has it.
    One calibration alone is not checked here.

    Raises
    ------
    ConfigError
        Naming the file and what to do.
    """
    if len(calibrations) < 2:
        return
    seen: dict[tuple[int, int], CalibrationFile] = {}
    for cal in calibrations:
        if cal.spatial is None:
            raise ConfigError(
                cal.where,
                "has no [spatial] section (ImageToProbe)",
                "give one spatial calibration per image size (depth)",
            )
        size = cal.image_size
        if size is None:
            toml = cal._loaded_from is None or Path(cal._loaded_from).suffix.lower() == ".toml"
            raise ConfigError(
                cal.where,
                "does not record the image size it was made for ([spatial] image_size_px)",
                "with several calibrations each must: calibrate spatial again (it writes the "
                "size), or add image_size_px = [cols, rows] to its [spatial] section"
                if toml
                else "with several calibrations each must, and a PLUS XML or 16 numbers cannot: "
                "write it as a usnav TOML ([spatial] image_to_probe = its matrix's rows, "
                "image_size_px = [cols, rows]), or calibrate spatial again (it writes the size)",
            )
        if size in seen:
            raise ConfigError(
                cal.where,
                f"is for {size[0]} × {size[1]} px images, as {seen[size].where} is",
                "give one calibration per image size (depth)",
            )
        seen[size] = cal
    pivots = [cal for cal in calibrations if cal.pivot is not None]
    for cal in pivots[1:]:
        if cal.pivot != pivots[0].pivot:
            raise ConfigError(
                cal.where,
                f"has a stylus pivot calibration ([pivot]) other than {pivots[0].where}'s",
                "one stylus has one tip: keep the [pivot] section in one file only, or the same "
                "in each",
            )
    timed = [cal for cal in calibrations if cal.temporal is not None]
    for cal in timed[1:]:
        if not math.isclose(cal.tracker_lag_s, timed[0].tracker_lag_s, abs_tol=1e-6):
            raise ConfigError(
                cal.where,
                f"has the tracker lag {cal.tracker_lag_s:+.4f} s, {timed[0].where} "
                f"{timed[0].tracker_lag_s:+.4f} s",
                "one probe and tracker have one lag: give the same [temporal] section in each "
                "file, or in one only",
            )


def calibration_for_size(
    calibrations: Sequence[CalibrationFile], image_size_px: tuple[int, int]
) -> CalibrationFile | None:
    """The calibration made for images of ``image_size_px`` (``(cols, rows)``), None if none
    is; a calibration that does not record its size serves every size (one calibration, as
    before image sizes were recorded)."""
    size = (int(image_size_px[0]), int(image_size_px[1]))
    for cal in calibrations:
        if cal.image_size is None or cal.image_size == size:
            return cal
    return None


def load_calibration(path: str | Path, *, warn: bool = True) -> CalibrationFile:
    """Read a calibration: usnav TOML, PLUS device-set XML, or 16 numbers (row-major).

    A calibration that ``usnav calibrate`` flagged is loaded (the engineer may knowingly use
    it), and, with ``warn``, logged as one warning naming the file and the warnings
    (:meth:`CalibrationFile.flag_warning`): every command that loads a calibration says so.
    So is an ImageToProbe without scale, taken as 1 mm pixels
    (:meth:`CalibrationFile.unit_pixel_warning`).

    Raises
    ------
    ConfigError
        Unreadable file, unknown key, or a matrix that is not rigid × scale.
    """
    p = Path(path)
    if not p.exists():
        raise ConfigError(p, "no such file")
    if p.is_dir():  # (a pipe is read: --calibration <(...))
        raise ConfigError(
            p,
            "is a folder, not a calibration",
            "give the calibration file: usnav TOML, PLUS device-set XML or 16 numbers",
        )
    loaded = _load(p)
    loaded._loaded_from = str(p)
    for note in (loaded.flag_warning(), loaded.unit_pixel_warning()) if warn else ():
        if note:
            log.warning("%s", note)
    return loaded


def _load(p: Path) -> CalibrationFile:
    suffix = p.suffix.lower()
    if suffix == ".toml":
        try:
            return load_toml_model(p, CalibrationFile)
        except ConfigError as exc:
            if "not a calibration file" in exc.problem:
                raise  # the loader named the kind of file it is (a device or options file)
            other = _other_toml_kind(p)
            if other is None:
                raise
            raise ConfigError(
                p, f"is not a probe calibration: {other}", _GIVE_CALIBRATION
            ) from None
    if suffix == ".xml":
        defs = read_coordinate_definitions(p)
        # usnav calibrate spatial --xml names the transform with the phantom configuration's
        # frames (<vtkPlusProbeCalibrationAlgo>, for PLUS) and marks it with its lag: read
        # back whatever they are called, as the TOML is (session 44)
        written = [t for t in defs.values() if TRACKER_LAG_ATTRIBUTE in t.attributes]
        forward = True
        if "ImageToProbe" in defs:
            transform = defs["ImageToProbe"]
        elif "ProbeToImage" in defs:
            transform, forward = defs["ProbeToImage"], False
        elif len(written) == 1:
            transform = written[0]
        else:
            raise ConfigError(
                p,
                "no ImageToProbe transform in <CoordinateDefinitions>",
                f"found: {', '.join(defs) or 'none'}",
            )
        return _from_matrix(
            transform.matrix if forward else np.linalg.inv(transform.matrix),
            p,
            flagged=transform.flagged,
            warnings=transform.warnings,
            # usnav calibrate spatial --xml's record of [spatial] (absent in PLUS's own XML)
            image_size_px=transform.image_size_px if forward else None,
            tracker_lag_s=transform.tracker_lag_s if forward else None,
        )
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(p, "not a text file", _GIVE_CALIBRATION) from exc
    except OSError as exc:  # permissions, an I/O error
        raise ConfigError.unreadable(p, exc) from None
    try:
        matrix = parse_matrix_text(text, str(p))
    except ConfigError as exc:
        # the generic "write 16 numbers" is not all a calibration can be; a specific hint stays
        hint = _GIVE_CALIBRATION if exc.hint == GIVE_16 else exc.hint
        raise ConfigError(p, exc.problem, hint) from None
    return _from_matrix(matrix, p)


def _other_toml_kind(p: Path) -> str | None:
    """What a readable TOML file that holds no calibration table is, or None when it has one
    (then the calibration's own message stands). A device file given as --calibration was
    answered with its keys' faults ("key 'probe': expected a string in quotes")."""
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    tables = sorted(k for k, v in raw.items() if isinstance(v, dict))
    if not tables or {"spatial", "temporal", "pivot"} & set(raw):
        return None  # a calibration with faults (or one that lacks every table): its own words
    found = ", ".join(f"[{t}]" for t in tables)
    return (
        f"it has no [spatial], [temporal] or [pivot] table (its tables: {found}; a device or "
        "options file?)"
    )


#: what a calibration argument takes, for the messages of a file that is none of them
_GIVE_CALIBRATION = (
    "give the probe calibration: a usnav .toml (usnav calibrate --out), a PLUS device-set XML "
    "or ImageToProbe as 16 numbers, row-major"
)


def _from_matrix(
    matrix: np.ndarray,
    p: Path,
    *,
    flagged: bool | None = None,
    warnings: list[str] | None = None,
    image_size_px: list[int] | None = None,
    tracker_lag_s: float | None = None,
) -> CalibrationFile:
    try:
        return CalibrationFile(
            probe=p.stem,
            sources=[str(p)],
            spatial=SpatialCalibration(
                image_to_probe=matrix.tolist(),
                flagged=flagged,
                warnings=warnings or [],
                image_size_px=image_size_px,
                tracker_lag_s=tracker_lag_s,
            ),
        )
    except ValueError as exc:
        errors = exc.errors() if hasattr(exc, "errors") else []  # pydantic: its first problem
        reason = str(errors[0].get("msg", exc) if errors else exc)
        # pydantic prefixes a validator's own message with "Value error, "; the user reads the
        # message alone (as load_config and the TOML path give it)
        raise ConfigError(p, f"ImageToProbe: {reason.removeprefix('Value error, ')}") from exc


def save_calibration(calibration: CalibrationFile, path: str | Path) -> Path:
    """Write ``calibration`` as TOML (the format :func:`load_calibration` reads)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = calibration.model_dump(exclude_none=True)
    for name in ("spatial", "temporal"):  # a flag not recorded leaves no empty warnings
        section = data.get(name)
        if section is not None and "flagged" not in section and not section.get("warnings"):
            section.pop("warnings", None)
    p.write_text(
        "# usnav calibration file: ImageToProbe maps image pixels (col, row, 0) to Probe mm\n"
        + _compact_number_arrays(tomli_w.dumps(data)),
        encoding="utf-8",
    )
    return p


def _compact_number_arrays(text: str) -> str:
    """Put each innermost array of numbers on one line (matrices read as rows)."""
    number_array = re.compile(r"\[\s*((?:[-+0-9.eE]+,\s*)+)\]")

    def one_line(match: re.Match[str]) -> str:
        items = [x.strip() for x in match.group(1).split(",") if x.strip()]
        return "[" + ", ".join(items) + "]"

    text = number_array.sub(one_line, text)
    # and matrices: an array of one-line rows
    rows = re.compile(r"\[\s*((?:\[[^\[\]]*\],\s*)+)\]")
    return rows.sub(
        lambda m: (
            "[\n    "
            + ",\n    ".join(
                r.strip().rstrip(",") for r in re.findall(r"\[[^\[\]]*\],?", m.group(1))
            )
            + ",\n]"
        ),
        text,
    )
