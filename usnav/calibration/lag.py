"""Does each image of an N-wire recording pair with the pose recorded beside it?

A spatial calibration assumes that the tracker pose stored with an image is where the probe
was when the image was formed. When the tracker stream runs behind or ahead of the video (no
temporal calibration applied, or a wrong one), every moving frame pairs its wires with a pose
from another moment, and the fit absorbs the difference as a blurred, mis-placed ImageToProbe.
The N-wire data show this by themselves: refitted with each image paired with the pose at
``t + lag``, the reprojection error falls at the recording's real lag. PLUS's own fCal test
recordings fit the poses 0.4 s later far better (calibration PRE3D 0.50 against 1.16 mm, and
the separate validation recording, paired the same way, 0.66 against 1.25 mm;
docs/calibration.md).

Convention (as ``usnav calibrate temporal``'s ``tracker_lag_s``, PLUS's ``TrackerLagSec``): the
pose that matches an image stamped ``t`` is the tracker's at ``t + tracker_lag_s``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from usnav.calibration.segmentation import FrameSegmentation, FrameStatus
from usnav.errors import ExtrapolationError
from usnav.frames import TransformStatus
from usnav.transforms.series import SAME_SAMPLE_S, PoseSeries

#: Lags scanned around the given one, s: ± this. PLUS's fCal data: +0.40 s.
LAG_SCAN_HALF_WIDTH_S = 0.6
#: A lag is reported when it fits at most this fraction of the given lag's PRE3D (on the
#: calibration frames and, when given, on the validation recording paired the same way) ...
MAX_LAG_FIT_RATIO = 0.8
#: ... by at least this much, mm (a noise-free recording's 0.02 against 0.03 mm is no news) ...
MIN_LAG_GAIN_MM = 0.1
#: ... and lies at least this many frame intervals from the given lag (finer is not resolved).
MIN_LAG_FRAMES = 1.0


@dataclass(frozen=True)
class LagScan:
    """PRE3D of the N-wire fit with each image paired with the pose at ``t + lag``.

    Attributes
    ----------
    lags_s
        The tracker lags tried, s (the given lag among them).
    calibration_pre3d_mm
        Per lag: mean PRE3D (lowest 95 %) of that lag's fit on the calibration frames, mm.
    validation_pre3d_mm
        Per lag: the same fit's PRE3D on the validation recording paired at the same lag, mm;
        None without a validation recording, or when none of its frames has a pose at any lag.
    given_lag_s
        The lag the calibration was computed with, s.
    frame_interval_s
        Median interval between the calibration recording's frames, s.
    frames
        Calibration frames common to every lag of the scan (the others lack a pose there).
    """

    lags_s: np.ndarray
    calibration_pre3d_mm: np.ndarray
    validation_pre3d_mm: np.ndarray | None
    given_lag_s: float
    frame_interval_s: float
    frames: int

    @property
    def best_lag_s(self) -> float:
        """The lag whose fit has the smallest PRE3D (validation's when given), s."""
        return float(self.lags_s[int(np.argmin(self._judged))])

    @property
    def _judged(self) -> np.ndarray:
        if self.validation_pre3d_mm is not None:
            return self.validation_pre3d_mm
        return self.calibration_pre3d_mm

    def _at(self, values: np.ndarray | None, lag_s: float) -> float | None:
        if values is None:
            return None
        return float(values[int(np.argmin(np.abs(self.lags_s - lag_s)))])

    def _near_given(self, values: np.ndarray) -> float:
        """The smallest PRE3D within half a frame interval of the given lag, mm.

        A pose interpolated between two samples averages their independent jitter, so with a
        slow or still probe every lag between samples fits better than the given lag (where
        the recorded samples are used as they are), far ones as well as near ones: the best
        lag must beat the interpolated ones near the given lag, not only the given lag itself.
        """
        near = np.abs(self.lags_s - self.given_lag_s) <= 0.5 * self.frame_interval_s * (1 + 1e-6)
        return float(np.min(values[near]))

    def warning(self) -> str | None:
        """One line for a person when another lag fits clearly better, else None."""
        best, given = self.best_lag_s, self.given_lag_s
        if abs(best - given) < MIN_LAG_FRAMES * self.frame_interval_s:
            return None
        pairs = [(self.calibration_pre3d_mm, "calibration frames")]
        if self.validation_pre3d_mm is not None:
            pairs.append((self.validation_pre3d_mm, "validation recording"))
        for values, _ in pairs:
            at_best, near = self._at(values, best), self._near_given(values)
            assert at_best is not None
            if at_best > MAX_LAG_FIT_RATIO * near or near - at_best < MIN_LAG_GAIN_MM:
                return None
        figures = "; ".join(
            f"{what} {self._at(values, best):.2f} against {self._at(values, given):.2f} mm"
            for values, what in pairs
        )
        # best and given both count from the recording's own pairing (--tracker-lag-s)
        paired = (
            "those recorded with them"
            if abs(given) < SAME_SAMPLE_S
            else f"those paired with them here ({given:+.3f} s from the recorded ones)"
        )
        return (
            f"the images fit the tracker poses {best - given:+.2f} s from {paired} far "
            f"better (PRE3D {figures}, on the {self.frames} calibration frames with a "
            f"pose at every lag tried): the recording has a pose-image lag, which "
            f"blurs this calibration; measure it (usnav calibrate temporal) and calibrate "
            f"again with --tracker-lag-s (here it would be about {best:+.2f} s)"
        )

    def as_dict(self) -> dict:
        """JSON-ready: the best lag, the PRE3D there and at the given lag."""
        best = self.best_lag_s
        return {
            "given_tracker_lag_s": self.given_lag_s,
            "best_tracker_lag_s": best,
            "calibration_pre3d_mm_at_given": self._at(self.calibration_pre3d_mm, self.given_lag_s),
            "calibration_pre3d_mm_at_best": self._at(self.calibration_pre3d_mm, best),
            "validation_pre3d_mm_at_given": self._at(self.validation_pre3d_mm, self.given_lag_s),
            "validation_pre3d_mm_at_best": self._at(self.validation_pre3d_mm, best),
            "frame_interval_s": self.frame_interval_s,
            "frames": self.frames,
        }


def _poses(seq) -> PoseSeries | None:
    """Every frame's recorded PhantomToProbe with its status (None: fewer than 2 OK)."""
    ok = seq.frame_pose_ok
    if seq.frame_times_s is None or ok is None or ok.sum() < 2:
        return None
    statuses = [TransformStatus.OK if k else TransformStatus.INVALID for k in ok]
    return PoseSeries(
        seq.frame_times_s, seq.frame_phantom_to_probe, statuses, name="PhantomToProbe"
    )


def _segmented(seq) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame indices, dots (m, patterns, 3, 2) px and middle points (m, patterns, 3) mm of
    every frame whose wires were found, whatever its recorded pose (``seq.used`` when the
    recording says no more)."""
    if seq.segmented_frames is None:
        return seq.used, seq.wire_points, seq.phantom_points
    return seq.segmented_frames, seq.segmented_wire_points, seq.segmented_phantom_points


def _max_gap_s(seq) -> float:
    t = np.sort(np.asarray(seq.frame_times_s, dtype=np.float64))
    steps = np.diff(t)
    steps = steps[steps > 0]
    return 2.5 * float(np.median(steps)) if len(steps) else 0.0


def phantom_to_probe_at(seq, lag_s: float) -> tuple[np.ndarray, np.ndarray]:
    """PhantomToProbe of each segmented frame at its image time + ``lag_s``.

    The frames are those whose wires were found, whatever their own recorded pose
    (``seq.segmented_frames``; ``seq.used`` when None). Returns (mask over them of the frames
    with an OK pose there, matrices (m, 4, 4)). The pose is the recorded one of a frame
    stamped at that time (within 1 µs), else interpolated between the two samples around it
    when both are OK and no farther apart than 2.5 frame intervals: next to an INVALID or
    MISSING sample there is no pose, as the live probe client (and PLUS's buffer) pairs it. A
    time outside the samples has no pose (``PoseSeries.at`` would hold the end pose for up to
    that gap: the pose of another moment, which is what the lag is to remove).
    """
    series = _poses(seq)
    frames = _segmented(seq)[0]
    n = len(frames)
    mats = np.tile(np.eye(4), (n, 1, 1))
    mask = np.zeros(n, dtype=bool)
    if series is None:
        return mask, mats
    gap = _max_gap_s(seq)
    times = series.times_s
    first, last = float(times[0]), float(times[-1])
    for row, i in enumerate(frames):
        t = float(seq.frame_times_s[i]) + lag_s
        if not first - SAME_SAMPLE_S <= t <= last + SAME_SAMPLE_S:
            continue
        try:
            pose = series.at(t, max_gap_s=gap)  # a sample's own time: that sample, its status
        except ExtrapolationError:
            continue
        if pose.ok:
            mask[row], mats[row] = True, pose.matrix
    return mask, mats


def _probe_points(phantom_points: np.ndarray, mats: np.ndarray) -> np.ndarray:
    return np.einsum("nij,nkj->nki", mats[:, :3, :3], phantom_points) + mats[:, None, :3, 3]


def at_tracker_lag(seq, lag_s: float):
    """The segmented recording with each image paired with the pose at ``t + lag_s``.

    Every frame whose wires were found takes part, also one whose own recorded pose is not OK
    (segmented with ``segment_unposed``); those with no OK pose at ``t + lag_s``
    (:func:`phantom_to_probe_at`) leave ``used``, marked INVALID_TRANSFORM. Lag 0: the
    recording as it is.
    """
    if lag_s == 0.0:
        return seq
    frames_idx, wires, phantom = _segmented(seq)
    mask, mats = phantom_to_probe_at(seq, lag_s)
    frames = list(seq.frames)
    for row, i in enumerate(frames_idx):
        if mask[row]:
            if frames[i].status is not FrameStatus.OK:  # its own pose was not OK
                frames[i] = replace(
                    frames[i],
                    status=FrameStatus.OK,
                    detail=f"paired with the pose at t {lag_s:+.3f} s ({frames[i].detail})",
                )
        else:
            frames[i] = FrameSegmentation(
                FrameStatus.INVALID_TRANSFORM,
                frames[i].candidates,
                frames[i].wire_points,
                frames[i].geometry_rms_mm,
                detail=f"no OK tracked pose at the image time {lag_s:+.3f} s (--tracker-lag-s)",
            )
    return replace(
        seq,
        frames=frames,
        used=frames_idx[mask],
        image_points=wires[mask][:, :, 1, :],
        wire_points=wires[mask],
        phantom_points=phantom[mask],
        probe_points=_probe_points(phantom, mats)[mask],
        phantom_to_probe=mats[mask],
    )


def scan_tracker_lag(cal, val=None, *, given_lag_s: float = 0.0, step_s: float | None = None):
    """Refit the calibration with each image paired with the pose at ``t + lag`` for lags
    around ``given_lag_s`` and measure each fit's PRE3D.

    Parameters
    ----------
    cal, val
        Segmented calibration and validation recordings (``SegmentedSequence``, paired at
        lag 0: the poses recorded with the images); every frame whose wires were found takes
        part (``segmented_frames``), also one whose own pose is not OK.
    given_lag_s
        The lag the calibration itself used, s.
    step_s
        Spacing of the lags, s (default half the calibration's median frame interval).

    Returns
    -------
    LagScan or None
        None when the recording has no usable timing (fewer than 2 OK poses, equal timestamps)
        or too few frames common to every lag.
    """
    from usnav.calibration.spatial import percentile_stats, solve_image_to_probe

    interval = _max_gap_s(cal) / 2.5
    if not interval > 0 or _poses(cal) is None:
        return None
    step = step_s if step_s is not None else interval / 2
    k = int(np.ceil(LAG_SCAN_HALF_WIDTH_S / step))
    lags = given_lag_s + step * np.arange(-k, k + 1)
    paired = [phantom_to_probe_at(cal, lag) for lag in lags]
    common = np.logical_and.reduce([m for m, _ in paired])
    if common.sum() < 10:
        return None
    val_paired = [phantom_to_probe_at(val, lag) for lag in lags] if val is not None else None
    _, cal_wires, cal_phantom = _segmented(cal)
    if val is not None:
        _, val_wires, val_phantom = _segmented(val)
    cal_pre, val_pre = [], []
    for j, (_, mats) in enumerate(paired):
        image_pts = cal_wires[common][:, :, 1, :]
        probe_pts = _probe_points(cal_phantom, mats)[common]
        try:
            matrix, _ = solve_image_to_probe(image_pts, probe_pts)
        except ValueError:
            cal_pre.append(np.inf)
            val_pre.append(np.inf)
            continue
        cal_pre.append(percentile_stats(_pre3d(matrix, image_pts, probe_pts)).mean)
        if val is not None and val_paired is not None:
            vmask, vmats = val_paired[j]
            if vmask.any():
                err = _pre3d(
                    matrix, val_wires[vmask][:, :, 1, :], _probe_points(val_phantom, vmats)[vmask]
                )
                val_pre.append(percentile_stats(err).mean)
            else:
                val_pre.append(np.inf)
    val_values = np.asarray(val_pre) if val is not None else None
    if val_values is not None and not np.isfinite(val_values).any():
        # no validation frame has a pose at any lag (fewer than 2 OK poses): judging by it
        # would pick the first lag tried, whatever the calibration frames say
        val_values = None
    return LagScan(
        lags_s=lags,
        calibration_pre3d_mm=np.asarray(cal_pre),
        validation_pre3d_mm=val_values,
        given_lag_s=float(given_lag_s),
        frame_interval_s=interval,
        frames=int(common.sum()),
    )


def _pre3d(matrix: np.ndarray, image_points: np.ndarray, probe_points: np.ndarray) -> np.ndarray:
    from usnav.calibration.spatial import reprojection_errors_mm

    return reprojection_errors_mm(matrix, image_points, probe_points)
