"""N-wire spatial calibration: ``ImageToProbe`` from tracked frames of an N-wire phantom.

Frames: **Image** (px of the MF image: x = column, y = row, z = 0), **Probe** (the probe's
marker, mm), **Reference** (the phantom's marker, mm), **Phantom** (the phantom definition's
coordinates, mm), **Tracker**.

For each frame the image plane cuts each N at three dots p1, p2, p3. With
α = |p2 − p1| / |p3 − p1| the diagonal wire's point is P = W12 + α·(W32 − W12) in the Phantom
frame (W12, W32: where the diagonal's line meets the side wires' lines), and
``P_probe = PhantomToProbe · P`` with
``PhantomToProbe = ProbeToReference⁻¹ · PhantomToReference`` from the tracker. Every middle dot
gives one equation per matrix row ``[u, v, 1] · x_r = P_probe,r``; each row r of ImageToProbe is
solved by linear least squares, dropping equations whose residual is ≥ 3σ from the mean
(population σ) and refitting while outliers remain and more than 8 equations are left
(PLUS ``PlusMath::LSQRMinimize``). The z column is then unit(x × y)·mean(|x|, |y|), so the
matrix is invertible and carries the mm per pixel.

Figure of merit (PLUS): the 3D reprojection error PRE3D = |ImageToProbe·p2 − P_probe| (mm) of
every middle dot; reported as mean, population SD and max of the lowest 95 %.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from usnav.calibration.lag import LagScan, at_tracker_lag, scan_tracker_lag
from usnav.calibration.phantom import CalibrationConfig, read_calibration_config
from usnav.calibration.segmentation import (
    DotSegmenter,
    FrameSegmentation,
    FrameStatus,
    PatternFinder,
    middle_ratios,
    region_of_interest,
    segment_frame,
    to_mf,
)
from usnav.errors import InputError, TransformError
from usnav.frames import TrackedTransform, TransformStatus
from usnav.transforms import TransformRepository

if TYPE_CHECKING:
    from usnav.calibration.mirror import MirrorCheck
    from usnav.calibration.precision import CalibrationPrecision

#: PLUS needs at least this many segmented frames for a calibration.
MIN_FRAMES = 10
#: PLUS ``MINIMUM_NUMBER_OF_CALIBRATION_EQUATIONS``.
MIN_EQUATIONS = 8
#: Largest angle (deg) between the image x and y axes' deviation from 90° we accept.
MAX_SKEW_DEG = 1.0
#: Validation PRE3D above this multiple of the calibration PRE3D means the fit does not carry
#: over to other poses. On PLUS's fCal data: 1.08 for the whole recording (and with 30 % of the
#: frames dropped, or 0.3 mm / 0.3° or 1 mm / 1° tracking jitter); 1.6–4.9 for calibrations
#: from 30–90 consecutive frames whose ImageToProbe is 1.4–20 mm off in the image.
MAX_VALIDATION_RATIO = 1.5
#: ... and by at least this much, mm (sub-0.1 mm errors of clean data may differ twofold).
MIN_VALIDATION_EXCESS_MM = 0.3

#: Bootstrap resamples that state the calibration's precision (the 95th percentile of 400
#: moves by a few % between seeds).
PRECISION_REPLICATES = 400

#: ``progress(stage, done, total)``: stage is "calibration" or "validation".
ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ErrorSummary:
    """Mean, population SD and max of the lowest ``fraction`` of errors (PLUS
    ``igsioMath::ComputePercentile``), mm; ``count`` values kept of ``total``."""

    mean: float
    sd: float
    max: float
    count: int
    total: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "mean": self.mean,
            "sd": self.sd,
            "max": self.max,
            "count": self.count,
            "total": self.total,
        }


def percentile_stats(errors: np.ndarray, fraction: float = 0.95) -> ErrorSummary:
    """Statistics of the ``round(fraction·n)`` smallest values (PLUS's figure of merit).

    Raises
    ------
    ValueError
        If ``errors`` is empty.
    """
    e = np.sort(np.asarray(errors, dtype=np.float64).ravel())
    if e.size == 0:
        raise ValueError("no errors to summarise")
    keep = max(1, math.floor(fraction * e.size + 0.5))
    low = e[:keep]
    return ErrorSummary(float(low.mean()), float(low.std()), float(low.max()), keep, int(e.size))


@dataclass
class SegmentedSequence:
    """Segmentation of one recording, with each usable frame's middle points.

    Attributes
    ----------
    path
        The recording.
    orientation
        Its ``UltrasoundImageOrientation`` (frames were flipped to MF before segmentation).
    frames
        Per-frame segmentation (all frames, in order).
    used
        Indices of the usable frames (wires found, geometry fits, transforms OK).
    image_points
        Middle-wire dots of the usable frames, shape (len(used), patterns, 2), px (MF image).
    wire_points
        All labelled dots of the usable frames, shape (len(used), patterns, 3, 2), px.
    phantom_points
        The middle-wire points in the Phantom frame, shape (len(used), patterns, 3), mm.
    probe_points
        The same in the Probe frame, shape (len(used), patterns, 3), mm.
    phantom_to_probe
        Shape (len(used), 4, 4).
    frame_times_s, frame_phantom_to_probe, frame_pose_ok
        Every frame's timestamp (s), PhantomToProbe (n, 4, 4, mm) and whether that pose is OK:
        what pairing an image with the pose at another moment needs (usnav.calibration.lag).
    segmented_frames, segmented_wire_points, segmented_phantom_points
        Every frame whose wires were found and fit the phantom, whatever its recorded pose
        (indices; their dots (m, patterns, 3, 2) px; their middle points (m, patterns, 3) mm,
        Phantom frame): the frames an image paired with the pose at another moment can use
        (usnav.calibration.lag). None: the ``used`` frames.
    image_size
        (cols, rows) px of the recording's images.
    """

    path: str
    orientation: str
    frames: list[FrameSegmentation]
    used: np.ndarray
    image_points: np.ndarray
    wire_points: np.ndarray
    phantom_points: np.ndarray
    probe_points: np.ndarray
    phantom_to_probe: np.ndarray
    frame_times_s: np.ndarray | None = None
    frame_phantom_to_probe: np.ndarray | None = None
    frame_pose_ok: np.ndarray | None = None
    segmented_frames: np.ndarray | None = None
    segmented_wire_points: np.ndarray | None = None
    segmented_phantom_points: np.ndarray | None = None
    image_size: tuple[int, int] = (0, 0)
    paired_lag_s: float = 0.0

    @property
    def counts(self) -> dict[str, int]:
        """Frame count per status (``"ok"``, ``"wires not found"``...)."""
        c = Counter(f.status.value for f in self.frames)
        return dict(sorted(c.items(), key=lambda kv: (kv[0] != "ok", kv[0])))

    def summary(self) -> dict:
        return {
            "file": self.path,
            "orientation": self.orientation,
            "frames": len(self.frames),
            "used": len(self.used),
            "skipped": {k: v for k, v in self.counts.items() if k != "ok"},
        }


@dataclass
class SpatialCalibrationResult:
    """Outcome of :func:`calibrate_spatial`.

    Attributes
    ----------
    image_to_probe
        4×4: Image px (MF) → Probe mm; columns 0 and 1 carry the mm per pixel.
    calibration_error, validation_error
        PRE3D statistics (lowest 95 %), mm.
    calibration_errors_mm, validation_errors_mm
        Every PRE3D value (frames × patterns, flattened), mm.
    outlier_equations
        Per matrix row, how many equations the 3σ rejection dropped.
    calibration, validation
        The segmented recordings.
    config
        The phantom/segmentation configuration used.
    warnings
        What makes this calibration doubtful, one line each (no validation recording, a
        validation PRE3D that does not carry over, a pose-image lag that fits clearly better,
        mirrored frames, a lag other than the one the ``--out`` file pairs at...): any of them
        flags the calibration (:attr:`flagged`). The precision's own notes are in
        ``precision.warnings``.
    tracker_lag_s
        The lag the images were paired with their poses at, s: the recording's own pairing
        (``Sequence.paired_tracker_lag_s``: the lag usnav's recorder applied, 0 for PLUS files)
        plus ``--tracker-lag-s``. The lag the probe must pair images at for this ImageToProbe.
    tracker_lag_scan
        The fit's PRE3D at other lags (:func:`usnav.calibration.lag.scan_tracker_lag`): a
        recording whose images fit the poses of another moment far better has a pose-image lag
        (None when the recording's timing does not allow the scan).
    precision
        95 % precision of ``image_to_probe`` from a bootstrap over the calibration frames
        (:mod:`usnav.calibration.precision`); None when not computed.
    mirror
        The phantom definition against its mirror images (:mod:`usnav.calibration.mirror`).
    """

    image_to_probe: np.ndarray
    calibration_error: ErrorSummary
    validation_error: ErrorSummary | None
    calibration_errors_mm: np.ndarray
    validation_errors_mm: np.ndarray | None
    outlier_equations: tuple[int, int, int]
    calibration: SegmentedSequence
    validation: SegmentedSequence | None
    config: CalibrationConfig
    warnings: list[str] = field(default_factory=list)
    tracker_lag_s: float = 0.0
    tracker_lag_scan: LagScan | None = None
    tracker_lag_source: str = ""
    precision: CalibrationPrecision | None = None
    mirror: MirrorCheck | None = None

    @property
    def flagged(self) -> bool:
        """A warning questions this calibration (``warnings``, more than 5 % of the
        precision's resamples without a solution, or too few frames with correlated
        residuals: its bounds under-state); ``usnav calibrate spatial`` then exits with
        status 1."""
        p = self.precision
        return bool(self.warnings) or (p is not None and (p.too_many_failed or p.too_few_frames))

    @property
    def flag_reasons(self) -> list[str]:
        """Why :attr:`flagged`, one line each: the warnings, and the precision's failed
        resamples when they flag it (what a calibration file records of the flag)."""
        reasons = list(self.warnings)
        p = self.precision
        if p is not None and p.too_many_failed:
            reasons.append(
                f"precision: {p.failed} of {p.replicates} resamples gave no calibration: its "
                "bounds under-state"
            )
        if p is not None and p.too_few_frames:
            reasons.append(
                f"precision: too few frames to state a bound ({p.frames} with correlated "
                "residuals): its bounds under-state"
            )
        return reasons

    @property
    def spacing_mm(self) -> tuple[float, float]:
        """mm per pixel along image x and y (norms of the first two columns)."""
        n = np.linalg.norm(self.image_to_probe[:3, :2], axis=0)
        return float(n[0]), float(n[1])

    @property
    def wire_region_px(self) -> tuple[float, float, float, float]:
        """Image region of the calibration's middle-wire dots, px (u_min, v_min, u_max, v_max):
        the PRE3D figures describe the image there; elsewhere ImageToProbe is extrapolated."""
        uv = np.asarray(self.calibration.image_points, dtype=np.float64).reshape(-1, 2)
        lo, hi = uv.min(axis=0), uv.max(axis=0)
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])

    @property
    def skew_deg(self) -> float:
        """Deviation of the angle between the image x and y axes from 90°, degrees."""
        return axes_skew_deg(self.image_to_probe)

    def as_dict(self) -> dict:
        """JSON-ready summary (the ``--json`` output of ``usnav calibrate spatial``)."""
        return {
            "ImageToProbe": self.image_to_probe.tolist(),
            "calibration_error_mm": self.calibration_error.as_dict(),
            "validation_error_mm": (
                self.validation_error.as_dict() if self.validation_error else None
            ),
            "spacing_mm_per_px": list(self.spacing_mm),
            "axes_skew_deg": self.skew_deg,
            "wire_region_px": list(self.wire_region_px),
            "outlier_equations": list(self.outlier_equations),
            "calibration": self.calibration.summary(),
            "validation": self.validation.summary() if self.validation else None,
            "phantom": self.config.phantom_name,
            "config": self.config.source,
            "warnings": list(self.warnings),
            "flagged": self.flagged,
            "tracker_lag_s": self.tracker_lag_s,
            "tracker_lag_source": self.tracker_lag_source,
            "tracker_lag_scan": self.tracker_lag_scan.as_dict() if self.tracker_lag_scan else None,
            "precision": self.precision.as_dict() if self.precision else None,
            "phantom_mirror": self.mirror.as_dict() if self.mirror else None,
        }


def axes_skew_deg(image_to_probe: np.ndarray) -> float:
    """|90° − angle between the first two columns|, degrees."""
    x, y = image_to_probe[:3, 0], image_to_probe[:3, 1]
    cos = float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))
    return abs(90.0 - math.degrees(math.acos(max(-1.0, min(1.0, cos)))))


# -- least squares with 3σ rejection --------------------------------------------------------


def lsq_reject_outliers(
    a: np.ndarray, b: np.ndarray, *, k_sigma: float = 3.0, min_equations: int = MIN_EQUATIONS
) -> tuple[np.ndarray, np.ndarray]:
    """Least squares ``a·x ≈ b`` with iterative k-σ outlier rejection (PLUS LSQRMinimize).

    Fit; drop equations with |residual − mean| ≥ k·σ (population σ); refit; repeat while
    outliers were found and more than ``min_equations`` remain.

    Returns
    -------
    x
        The solution from the last fit.
    kept
        Boolean mask of the equations of that fit.

    Raises
    ------
    ValueError
        If ``min_equations`` or fewer equations are (or remain) available.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    kept = np.ones(len(b), dtype=bool)
    if len(b) <= min_equations:
        raise ValueError(f"{len(b)} equations; more than {min_equations} are needed")
    while True:
        x, *_ = np.linalg.lstsq(a[kept], b[kept], rcond=None)
        e = a[kept] @ x - b[kept]
        mean, sd = e.mean(), e.std()
        outlier = np.abs(e - mean) >= k_sigma * sd if sd > 0 else np.zeros(len(e), bool)
        if not outlier.any():
            return x, kept
        idx = np.flatnonzero(kept)
        kept[idx[outlier]] = False
        if kept.sum() <= min_equations:
            raise ValueError(
                f"outlier rejection left {int(kept.sum())} equations; "
                f"more than {min_equations} are needed"
            )


def solve_image_to_probe(
    image_points: np.ndarray, probe_points: np.ndarray
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """ImageToProbe from middle-dot pixels (n, 2) and their Probe positions (n, 3), mm.

    Returns the 4×4 matrix and, per row, how many equations were rejected as outliers.
    """
    uv = np.asarray(image_points, dtype=np.float64).reshape(-1, 2)
    pr = np.asarray(probe_points, dtype=np.float64).reshape(-1, 3)
    a = np.column_stack([uv, np.ones(len(uv))])
    m = np.eye(4)
    dropped = []
    for r in range(3):
        x, kept = lsq_reject_outliers(a, pr[:, r])
        m[r, 0], m[r, 1], m[r, 3] = x
        dropped.append(int((~kept).sum()))
    cx, cy = m[:3, 0], m[:3, 1]
    z = np.cross(cx, cy)
    m[:3, 2] = z / np.linalg.norm(z) * (np.linalg.norm(cx) + np.linalg.norm(cy)) / 2
    return m, (dropped[0], dropped[1], dropped[2])


def reprojection_errors_mm(
    image_to_probe: np.ndarray, image_points: np.ndarray, probe_points: np.ndarray
) -> np.ndarray:
    """PRE3D: |ImageToProbe·(u, v, 0, 1) − P_probe| per point, mm."""
    uv = np.asarray(image_points, dtype=np.float64).reshape(-1, 2)
    pr = np.asarray(probe_points, dtype=np.float64).reshape(-1, 3)
    mapped = uv @ image_to_probe[:3, :2].T + image_to_probe[:3, 3]
    return np.linalg.norm(mapped - pr, axis=1)


# -- sequences ------------------------------------------------------------------------------


def _phantom_to_probe(seq, config: CalibrationConfig, phantom_to_reference: np.ndarray, path: str):
    """PhantomToProbe per frame (n, 4, 4) and per-frame status, from the recorded transforms."""
    names = list(seq.transform_names)
    if not names:
        raise InputError(
            path,
            "has no tracked transforms",
            "record ProbeToTracker and ReferenceToTracker (or ProbeToReference)",
        )
    series = {name: seq.transforms(name) for name in names}
    wanted = f"{config.phantom_frame}To{config.probe_frame}"
    n = len(seq)
    out = np.tile(np.eye(4), (n, 1, 1))
    statuses: list[TransformStatus] = []
    for i in range(n):
        row = {n: TrackedTransform(series[n][0][i], series[n][1][i]) for n in names}
        repo = TransformRepository.from_frame(row)
        try:
            repo.set(f"{config.phantom_frame}To{config.reference_frame}", phantom_to_reference)
            got = repo.get(wanted)
        except TransformError as exc:
            raise InputError(
                path,
                f"cannot compute {wanted} from the recorded transforms ({', '.join(names)}) "
                f"and {config.phantom_frame}To{config.reference_frame}: {exc}",
                f"the recording needs {config.probe_frame} and {config.reference_frame} poses",
            ) from exc
        ok = got.status is TransformStatus.OK and np.all(np.isfinite(got.matrix))
        out[i] = got.matrix if ok else np.eye(4)
        statuses.append(TransformStatus.OK if ok else got.status)
    return out, statuses


def segment_sequence(
    path: str | Path,
    config: CalibrationConfig,
    *,
    phantom_to_reference: np.ndarray | None = None,
    segment_unposed: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SegmentedSequence:
    """Segment every frame of an N-wire recording and compute its middle points.

    Frames are flipped to MF according to the file's ``UltrasoundImageOrientation``. A frame
    is used when its wires are found, the dots fit the phantom geometry in the orientation
    the file states, and ``PhantomToProbe`` is OK; otherwise its status says why.

    ``segment_unposed``: also segment the frames whose recorded ``PhantomToProbe`` is not OK
    (they stay unused, counted as INVALID_TRANSFORM, but keep their dots in
    ``segmented_*``), for pairing the images with the poses at another moment
    (:func:`usnav.calibration.lag.at_tracker_lag`); otherwise they are not segmented.

    Raises
    ------
    InputError
        Unreadable file, an orientation that is not 2D B-mode, no image, no way to compute
        PhantomToProbe.
    """
    from usnav.io.sequence import read_sequence

    p = str(path)
    ptr = phantom_to_reference if phantom_to_reference is not None else config.phantom_to_reference
    if ptr is None:
        raise InputError(
            config.source or "configuration",
            f"no {config.phantom_frame}To{config.reference_frame} transform",
            "register the phantom (PLUS landmark registration) and put it in "
            "<CoordinateDefinitions>, or pass it explicitly",
        )
    with read_sequence(p) as seq:
        n = len(seq)
        cols, rows = seq.image_size
        if n == 0 or cols == 0 or rows == 0:
            raise InputError(p, "has no image frames", "N-wire calibration needs B-mode frames")
        orientation = seq.orientation
        try:
            to_mf(np.zeros((1, 1), np.uint8), orientation)
        except ValueError as exc:
            raise InputError(p, str(exc)) from exc
        phantom_to_probe, tstatus = _phantom_to_probe(seq, config, ptr, p)
        times = np.asarray(seq.timestamps, dtype=np.float64).copy()
        paired_lag_s = seq.paired_tracker_lag_s
        segmenter = DotSegmenter(config.segmentation)
        finder = PatternFinder(config.patterns, config.segmentation)
        roi = region_of_interest(config.segmentation, (cols, rows))
        frames: list[FrameSegmentation] = []
        for i in range(n):
            pose_ok = tstatus[i] is TransformStatus.OK
            invalid_pose = FrameSegmentation(
                FrameStatus.INVALID_TRANSFORM,
                detail=f"{config.phantom_frame}To{config.probe_frame} is {tstatus[i].value}",
            )
            if not pose_ok and not segment_unposed:
                frames.append(invalid_pose)
            elif not _image_ok(seq, i):
                frames.append(FrameSegmentation(FrameStatus.NO_IMAGE, detail="ImageStatus not OK"))
            else:
                image = grey(seq.image(i))
                found = segment_frame(to_mf(image, orientation), segmenter, finder, roi)
                if not pose_ok and found.status is FrameStatus.OK:
                    # usable only paired with another moment's pose: keep the dots
                    found = dataclasses.replace(
                        found, status=invalid_pose.status, detail=invalid_pose.detail
                    )
                frames.append(found)
            if progress is not None:
                progress(i + 1, n)
    k = len(config.patterns)
    segmented = np.array(
        [
            i
            for i, f in enumerate(frames)
            if f.status is FrameStatus.OK
            or (f.status is FrameStatus.INVALID_TRANSFORM and f.wire_points is not None)
        ],
        dtype=int,
    )
    if len(segmented):
        seg_wires = np.stack([frames[i].wire_points for i in segmented])
        alphas = np.stack([middle_ratios(w) for w in seg_wires])  # (m, k)
        seg_phantom = np.stack(
            [config.patterns[j].middle_points(alphas[:, j]) for j in range(k)], axis=1
        )
    else:
        seg_wires, seg_phantom = np.zeros((0, k, 3, 2)), np.zeros((0, k, 3))
    rows_used = np.array([frames[i].status is FrameStatus.OK for i in segmented], dtype=bool)
    used = segmented[rows_used]
    wire_points, phantom_pts = seg_wires[rows_used], seg_phantom[rows_used]
    ptp = phantom_to_probe[used]
    probe_pts = np.einsum("nij,nkj->nki", ptp[:, :3, :3], phantom_pts) + ptp[:, None, :3, 3]
    image_pts = wire_points[:, :, 1, :]
    pose_ok = np.array([st is TransformStatus.OK for st in tstatus], dtype=bool)
    return SegmentedSequence(
        p,
        orientation,
        frames,
        used,
        image_pts,
        wire_points,
        phantom_pts,
        probe_pts,
        ptp,
        frame_times_s=times,
        frame_phantom_to_probe=phantom_to_probe,
        frame_pose_ok=pose_ok,
        segmented_frames=segmented,
        segmented_wire_points=seg_wires,
        segmented_phantom_points=seg_phantom,
        paired_lag_s=paired_lag_s,
        image_size=(int(cols), int(rows)),
    )


def grey(image: np.ndarray) -> np.ndarray:
    """A frame as one channel: (rows, cols, 1) squeezed, colour averaged."""
    img = np.asarray(image)
    if img.ndim == 3:
        img = img[:, :, 0] if img.shape[2] == 1 else img.mean(axis=2).astype(img.dtype)
    return img


def _image_ok(seq, index: int) -> bool:
    fields = seq.fields(index) if hasattr(seq, "fields") else {}
    status = fields.get("ImageStatus", fields.get("Status", "OK"))
    return status.strip().upper() == "OK"


class CalibrationRefused(InputError):
    """Too few usable frames, no calibration fits them, or the phantom definition is
    mirrored; ``segmented`` holds what was found, for a report. ``source``: what the message
    names (the recording by default; the phantom definition's file when it is at fault)."""

    def __init__(
        self,
        segmented: SegmentedSequence,
        problem: str,
        hint: str | None = None,
        *,
        source: str | Path | None = None,
    ):
        super().__init__(segmented.path if source is None else source, problem, hint)
        self.segmented = segmented


def _refusal(seq: SegmentedSequence, min_frames: int, config: CalibrationConfig) -> str:
    counts = seq.counts
    skipped = ", ".join(f"{v} {k}" for k, v in counts.items() if k != "ok") or "none"
    msg = (
        f"only {len(seq.used)} of {len(seq.frames)} frames are usable "
        f"(at least {min_frames} needed); skipped: {skipped}"
    )
    if counts.get(FrameStatus.WIRES_NOT_FOUND.value) and not any(
        f.wire_points is not None for f in seq.frames
    ):
        # no frame at all: rather the phantom definition's or the spacing's unit than the
        # images (a phantom in cm has Ns a tenth as wide as the image shows)
        spacing = config.segmentation.approximate_spacing_mm_per_px
        cols, rows = seq.image_size
        widths = ", ".join(f"{p.width_mm:g}" for p in config.patterns)
        msg += (
            f". The N-wires were found in no frame: check that the phantom definition "
            f"matches the phantom and is in mm (its Ns are {widths} mm wide) and that "
            f"Segmentation@ApproximateSpacingMmPerPixel = {spacing:g} is the image's mm per "
            f"pixel (it makes the image {cols * spacing:.3g} x {rows * spacing:.3g} mm), "
            "or that the recording shows the wires"
        )
    misfit = counts.get(FrameStatus.GEOMETRY_MISMATCH.value, 0)
    if misfit and misfit >= len(seq.frames) / 3:
        # the wires were found, but not where the definition puts them: its patterns' order
        # or geometry (another phantom version or wiring) said nothing but the count
        msg += (
            f". In {misfit} frames the dots were found but do not fit the phantom definition: "
            "check that its <Pattern>s are listed top to bottom (nearest the probe first: "
            "lines are matched to patterns in XML order) and that its wires are this "
            "phantom's (version, wiring); --report FILE shows how sample frames were labelled"
        )
    mism = [f for f in seq.frames if f.status is FrameStatus.ORIENTATION_MISMATCH]
    if mism and len(mism) >= len(seq.frames) / 3:
        msg += (
            f". The file says UltrasoundImageOrientation={seq.orientation}, but "
            f"{mism[0].detail} — check the orientation (PortUsImageOrientation) and how the "
            "probe sits on the phantom (PlusLib #888)"
        )
    return msg


def calibrate_spatial(
    config: str | Path | CalibrationConfig,
    calibration: str | Path,
    validation: str | Path | None = None,
    *,
    phantom_to_reference: np.ndarray | None = None,
    min_frames: int = MIN_FRAMES,
    tracker_lag_s: float = 0.0,
    progress: ProgressCallback | None = None,
    precision_replicates: int = PRECISION_REPLICATES,
    precision_seed: int = 0,
) -> SpatialCalibrationResult:
    """N-wire probe calibration of PLUS fCal recordings.

    Parameters
    ----------
    config
        PLUS device-set XML (phantom definition, PhantomToReference, ``<Segmentation>``) or
        an already read :class:`CalibrationConfig`.
    calibration, validation
        Tracked N-wire recordings (``.igs.mha``...). Validation is optional.
    phantom_to_reference
        Overrides the XML's PhantomToReference (4×4, mm).
    min_frames
        Fewest usable calibration frames accepted.
    tracker_lag_s
        Pair each image with the pose ``tracker_lag_s`` later than the pose the recording
        pairs it with (interpolated), s: the temporal calibration's lag (``usnav calibrate
        temporal``) for a recording paired as received (PLUS, fCal); 0 for one usnav recorded
        with that lag already applied (its header says so). Whatever it is, the fit is also
        tried at lags around it and a clearly better one is warned of.
    progress
        Called as ``progress(stage, done, total)`` while segmenting, stage ``"calibration"``
        or ``"validation"``.
    precision_replicates, precision_seed
        Resamples and seed of the bootstrap that states the calibration's 95 % precision
        (:func:`usnav.calibration.precision.calibration_precision`); 0 resamples: none.

    Raises
    ------
    CalibrationRefused
        Too few usable frames (the message gives the counts per reason and, if the frames'
        orientation contradicts the phantom, says so), a degenerate solution (axes not
        perpendicular), or a mirror image of the phantom definition that fits the validation
        recording better than the definition (:mod:`usnav.calibration.mirror`; the message
        names the definition's file); it carries the segmentation.
    InputError
        Any input problem.
    """
    cfg = config if isinstance(config, CalibrationConfig) else read_calibration_config(config)
    warnings: list[str] = []

    def stage_progress(stage: str) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        return lambda done, n: progress(stage, done, n)

    # paired with the pose at another moment, a frame whose own recorded pose is INVALID may
    # have an OK one: segment it too
    unposed = tracker_lag_s != 0.0
    cal = segment_sequence(
        calibration,
        cfg,
        phantom_to_reference=phantom_to_reference,
        segment_unposed=unposed,
        progress=stage_progress("calibration"),
    )
    cal_at_zero = cal
    cal = at_tracker_lag(cal, tracker_lag_s)
    if len(cal.used) < min_frames:
        raise CalibrationRefused(cal, _refusal(cal, min_frames, cfg))
    try:
        matrix, dropped = solve_image_to_probe(cal.image_points, cal.probe_points)
    except ValueError as exc:
        raise InputError(cal.path, f"calibration failed: {exc}") from exc
    skew = axes_skew_deg(matrix)
    if not np.all(np.isfinite(matrix)) or skew > MAX_SKEW_DEG:
        raise CalibrationRefused(
            cal,
            f"the fitted image axes are {skew:.2f}° from perpendicular (limit {MAX_SKEW_DEG}°), "
            f"so no calibration fits the {len(cal.used)} usable frames: the phantom definition "
            "may not match the phantom (wires labelled against the wrong ones), or the probe "
            "poses vary too little",
            "run again with --report FILE to see how sample frames' wires were labelled",
        )
    cal_err = reprojection_errors_mm(matrix, cal.image_points, cal.probe_points)
    val = val_at_zero = None
    val_err = None
    if validation is not None:
        val = segment_sequence(
            validation,
            cfg,
            phantom_to_reference=phantom_to_reference,
            segment_unposed=unposed,
            progress=stage_progress("validation"),
        )
        val_at_zero = val
        if abs(val.paired_lag_s - cal.paired_lag_s) > 1e-6:
            raise InputError(
                val.path,
                f"its images were paired with their poses at a tracker lag of "
                f"{val.paired_lag_s:+.4f} s, the calibration recording's at "
                f"{cal.paired_lag_s:+.4f} s",
                "record both with the same device calibration",
            )
        val = at_tracker_lag(val, tracker_lag_s)
        if len(val.used) == 0:
            raise CalibrationRefused(val, _refusal(val, 1, cfg))
        val_err = reprojection_errors_mm(matrix, val.image_points, val.probe_points)
    cal_stats = percentile_stats(cal_err)
    val_stats = percentile_stats(val_err) if val_err is not None else None
    from usnav.calibration.mirror import mirror_check

    mirror = mirror_check(cfg, cal, val)
    if mirror.mirrored:
        if val is not None:
            raise CalibrationRefused(
                cal, mirror.problem(), mirror.hint(), source=cfg.source or "phantom definition"
            )
        warnings.append(f"{mirror.problem()} — {mirror.hint()}; give --validation to decide")
    if val_stats is None:
        warnings.append(
            "no validation recording: the errors are those of the frames the calibration was "
            "fitted to, which stay small when those poses vary too little although the image "
            "is then mm off away from the wires; give --validation"
        )
    elif (
        val_stats.mean > MAX_VALIDATION_RATIO * cal_stats.mean
        and val_stats.mean - cal_stats.mean > MIN_VALIDATION_EXCESS_MM
    ):
        warnings.append(
            f"the calibration does not carry over to the validation recording (PRE3D "
            f"{val_stats.mean:.2f} mm there against {cal_stats.mean:.2f} mm on the frames it was "
            "fitted to): the calibration poses probably vary too little (too few frames, a "
            "short sweep), and away from the wires the image may be several mm off; record "
            "the calibration again with more varied poses"
        )
    lag_scan = scan_tracker_lag(cal_at_zero, val_at_zero, given_lag_s=tracker_lag_s)
    lag_warning = lag_scan.warning() if lag_scan is not None else None
    if lag_warning:
        warnings.append(lag_warning)
    precision = None
    if precision_replicates > 0:
        from usnav.calibration.precision import calibration_precision

        try:
            precision = calibration_precision(
                matrix,
                cal.image_points,
                cal.probe_points,
                cal.image_size,
                validation_pre3d_mm=val_stats.mean if val_stats is not None else None,
                replicates=precision_replicates,
                seed=precision_seed,
            )
        except ValueError as exc:
            warnings.append(f"no precision stated: {exc}")
    for seq in (cal, val):
        if seq is None:
            continue
        mism = sum(f.status is FrameStatus.ORIENTATION_MISMATCH for f in seq.frames)
        if mism:
            warnings.append(
                f"{seq.path}: {mism} frames skipped because their image orientation "
                "contradicts the phantom"
            )
    return SpatialCalibrationResult(
        image_to_probe=matrix,
        calibration_error=cal_stats,
        validation_error=val_stats,
        calibration_errors_mm=cal_err,
        validation_errors_mm=val_err,
        outlier_equations=dropped,
        calibration=cal,
        validation=val,
        config=cfg,
        warnings=warnings,
        tracker_lag_s=float(cal_at_zero.paired_lag_s + tracker_lag_s),
        tracker_lag_scan=lag_scan,
        precision=precision,
        mirror=mirror,
    )
