"""Temporal calibration: the tracker's lag behind the video (PLUS's water-tank method).

The probe moves up and down over a flat water-tank bottom (10–15 s, ≥ 5 periods). Two signals
of the same motion are compared:

- **video** (fixed): the bottom is a bright line; on 40 vertical scanlines the largest peak
  above half the scanline's maximum gives a point (its intensity centroid); a RANSAC line
  through the points gives the bottom; the signal is |y of the line| at the middle column, px;
- **tracker** (moving): the probe's translation (``ProbeToReference`` by default) projected
  on its principal axis (PCA), mm.

The tracker signal is resampled linearly at ``t_video + Δ`` and the SSD of the normalised
((x − mean)/σ) signals is minimised over Δ: a coarse pass over ±``max_lag_s`` in steps of one
video frame period, a fine pass at ±3 periods in 1 ms steps. The sign of the principal axis is
arbitrary, so the search is repeated with the tracker signal negated and the smaller |Δ| is
kept (PLUS), unless the other polarity fits clearly better (``CLEAR_FIT_RATIO``: then the
lag is larger than a quarter of the motion's period, and PLUS's rule would be wrong). By
default only video samples whose t + Δ lies inside the tracker recording for every searched Δ
are compared; ``clamp_ends=True`` follows PLUS exactly (tracker range shrunk by
``max_lag_s``, its end values held beyond it), which reproduces PLUS's error figure but biases
Δ by a few ms.

Result: ``tracker_lag_s = Δ*``: the tracker pose that matches an image stamped t is the one at
``t + tracker_lag_s`` (PLUS ``TrackerLagSec``; negative: the tracker stream leads the video,
its stamp of a moment earlier than the image's; PLUS: "> 0 if the tracker data lags").
``error`` is PLUS's CalibrationError = sqrt(SSD)·σ_tracker (a root-*sum*-square, mm);
``rms_error_mm`` is the RMS difference of the aligned signals in mm.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from usnav.errors import InputError, TransformError
from usnav.frames import TrackedTransform, TransformStatus
from usnav.transforms import TransformRepository

N_SCANLINES = 40
MIN_VALID_SCANLINES = 5
#: RANSAC inlier band around the line, px.
RANSAC_BAND_PX = 1.0
#: A scanline is used when its maximum reaches this fraction of the frame's brightest scanline.
SCANLINE_MIN_FRACTION = 0.25
MIN_X_DIRECTION = 0.01
MIN_VIDEO_RANGE_PX = 30.0
MIN_TRACKER_RANGE_MM = 8.0
MAX_LAG_S = 0.5
FINE_STEP_S = 0.001
#: What the method needs (PLUS's instructions): 10–15 s of motion, at least 5 periods. On PLUS's
#: water-tank data the lag found on its first 3, 4 and 6 s is 32, 28 and 15 ms from the lag of
#: the whole 17 s, while the RMS residual gets *smaller*: a short recording fits better and
#: says less, so it is flagged.
MIN_COMPARED_S = 10.0
MIN_MOTION_PERIODS = 5
#: The lag of the other polarity is kept instead of PLUS's smaller |lag| when its SSD is at
#: least this many times smaller. PLUS's water-tank data: the right polarity's SSD is 4.7–5.4×
#: smaller than the wrong one's for tracker clocks shifted by −0.3 to +0.4 s (true lags −0.36
#: to +0.34 s), while both fit about equally badly (ratio 1.1) when the true lag lies beyond the
#: ±0.5 s search; a perfectly periodic motion gives a ratio near 1 too, where only PLUS's rule
#: (a lag under a quarter of the period) can choose.
CLEAR_FIT_RATIO = 2.0


@dataclass(frozen=True)
class LineFit:
    """A line ``point + t·direction`` in image px (direction unit, x ≥ 0)."""

    point: np.ndarray
    direction: np.ndarray
    inliers: int

    def y_at(self, x: float) -> float:
        t = (x - self.point[0]) / self.direction[0]
        return float(self.point[1] + t * self.direction[1])


def scanline_peaks(
    image: np.ndarray, clip: tuple[int, int, int, int] | None = None, n: int = N_SCANLINES
) -> np.ndarray:
    """Per scanline, the intensity centroid of the largest-area peak above half its maximum.

    Parameters
    ----------
    image
        One frame (rows, cols), MF.
    clip
        ``(x0, y0, width, height)``, px; default the whole image.
    n
        Number of evenly spaced vertical scanlines.

    Returns
    -------
    Shape (m, 2): x, y of the peaks found (scanlines without a clear peak are left out).
    """
    rows, cols = image.shape[:2]
    x0, y0, w, h = clip if clip is not None else (0, 0, cols, rows)
    xs = np.round(np.linspace(x0, x0 + w - 1, n)).astype(int)
    profiles = image[y0 : y0 + h, xs].astype(np.float64).T  # (n, h)
    maxima = profiles.max(axis=1)
    top = maxima.max()
    if top <= 0:
        return np.zeros((0, 2))
    out = []
    for x, prof, mx in zip(xs, profiles, maxima, strict=True):
        if mx < SCANLINE_MIN_FRACTION * top:
            continue
        above = prof > 0.5 * mx
        # runs of consecutive samples above half max
        edges = np.diff(np.concatenate([[0], above.astype(np.int8), [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        if len(starts) == 0:
            continue
        areas = np.array([prof[s:e].sum() for s, e in zip(starts, ends, strict=True)])
        k = int(np.argmax(areas))
        s, e = starts[k], ends[k]
        idx = np.arange(s, e)
        out.append((float(x), float(y0 + (idx * prof[s:e]).sum() / prof[s:e].sum())))
    return np.array(out).reshape(-1, 2)


def fit_line_ransac(points: np.ndarray, band_px: float = RANSAC_BAND_PX) -> LineFit | None:
    """RANSAC line through 2D points (all pairs tried), refit by total least squares."""
    p = np.asarray(points, dtype=np.float64)
    if len(p) < MIN_VALID_SCANLINES:
        return None
    i, j = np.triu_indices(len(p), 1)
    d = p[j] - p[i]
    norm = np.hypot(d[:, 0], d[:, 1])
    good = norm > 1e-9
    i, j, d, norm = i[good], j[good], d[good], norm[good]
    nrm = np.stack([-d[:, 1], d[:, 0]], axis=1) / norm[:, None]  # (pairs, 2)
    dist = np.abs(np.einsum("kd,knd->kn", nrm, p[None, :, :] - p[i][:, None, :]))
    counts = (dist <= band_px).sum(axis=1)
    best = int(np.argmax(counts))
    inl = dist[best] <= band_px
    if inl.sum() < MIN_VALID_SCANLINES:
        return None
    q = p[inl]
    c = q.mean(axis=0)
    _, _, vt = np.linalg.svd(q - c)
    direction = vt[0]
    if direction[0] < 0:
        direction = -direction
    return LineFit(c, direction, int(inl.sum()))


@dataclass
class VideoSignal:
    """Line position per video frame: times (s), values (px), and the fitted lines."""

    times_s: np.ndarray
    values_px: np.ndarray
    lines: list[LineFit | None]
    frames: int


def video_line_signal(
    seq,
    clip: tuple[int, int, int, int] | None = None,
    progress: Callable[[int, int], None] | None = None,
    time_range: tuple[float, float] | None = None,
) -> VideoSignal:
    """Water-tank bottom depth per frame (px) from a video recording (frames flipped to MF).

    Frames outside ``time_range`` (s) are skipped (their line is None).
    """
    from usnav.calibration.segmentation import to_mf
    from usnav.calibration.spatial import grey

    n = len(seq)
    cols, rows = seq.image_size
    x0, _, w, _ = clip if clip is not None else (0, 0, cols, rows)
    centre_x = x0 + 0.5 * w
    times, values, lines = [], [], []
    stamps = np.asarray(seq.timestamps, dtype=np.float64)
    for i in range(n):
        line = None
        inside = time_range is None or time_range[0] <= stamps[i] <= time_range[1]
        image = grey(seq.image(i)) if inside else np.zeros((0, 0), np.uint8)
        if image.size:
            line = fit_line_ransac(scanline_peaks(to_mf(image, seq.orientation), clip))
        if line is not None and line.direction[0] < MIN_X_DIRECTION:
            line = None
        lines.append(line)
        if line is not None:
            times.append(stamps[i])
            values.append(abs(line.y_at(centre_x)))
        if progress is not None:
            progress(i + 1, n)
    return VideoSignal(np.array(times), np.array(values), lines, n)


def tracker_position_signal(
    seq, tool: str = "ProbeToReference", time_range: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """Probe translation projected on its principal axis: times (s), values (mm), tool used.

    Only samples within ``time_range`` (s) are used, for the principal axis too.

    ``tool`` is computed with the transform repository from the recorded transforms; if it is
    ``ProbeToReference`` and no Reference was recorded, ``ProbeToTracker`` is used.
    """
    names = list(seq.transform_names)
    series = {name: seq.transforms(name) for name in names}
    stamps = np.asarray(seq.timestamps, dtype=np.float64)
    tools = [tool]
    if tool == "ProbeToReference":
        tools.append("ProbeToTracker")
    for wanted in tools:
        pos, times = [], []
        try:
            for i in range(len(seq)):
                if time_range is not None and not time_range[0] <= stamps[i] <= time_range[1]:
                    continue
                row = {n: TrackedTransform(series[n][0][i], series[n][1][i]) for n in names}
                got = TransformRepository.from_frame(row).get(wanted)
                if got.status is TransformStatus.OK and np.all(np.isfinite(got.matrix)):
                    pos.append(got.matrix[:3, 3])
                    times.append(stamps[i])
        except TransformError:
            continue
        if pos:
            p = np.array(pos)
            centred = p - p.mean(axis=0)
            _, _, vt = np.linalg.svd(centred, full_matrices=False)
            return np.array(times), centred @ vt[0], wanted
    raise InputError(
        getattr(seq, "path", "tracker recording"),
        f"no OK {tool} pose (recorded: {', '.join(names) or 'none'})",
        "give the tracker recording made with this video (--tracker)"
        if not names
        else "give --tool as the probe's pose, computable from the recorded transforms "
        "(e.g. ProbeToTracker), or check their TransformStatus fields",
    )


def _normalise(x: np.ndarray) -> tuple[np.ndarray, float]:
    sd = float(x.std(ddof=1)) if len(x) > 1 else 0.0
    if sd <= 0:
        return np.zeros_like(x), 0.0
    return (x - x.mean()) / sd, sd


@dataclass
class LagSearch:
    """SSD search outcome for one polarity."""

    lag_s: float
    ssd: float
    moving_sd: float
    max_abs_diff: float
    n: int
    polarity: int
    offsets_s: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    ssd_curve: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    #: First video time compared and the time span of the video samples compared, s.
    compared_from_s: float = 0.0
    span_s: float = 0.0


def _window_normalised(t: np.ndarray, x: np.ndarray, t0: float, t1: float) -> np.ndarray:
    """``x`` normalised with the mean and SD (n − 1) of its samples with t in [t0, t1]."""
    sel = (t >= t0) & (t <= t1)
    w = x[sel] if sel.sum() > 1 else x
    sd = float(w.std(ddof=1))
    return (x - w.mean()) / sd if sd > 0 else np.zeros_like(x)


def _ssd_at(t_fixed, fixed, t_moving, moving, offsets, strict: bool = False):
    out = np.empty(len(offsets))
    sds = np.empty(len(offsets))
    maxdiff = np.empty(len(offsets))
    fixed_strict = _normalise(fixed)[0] if strict else None
    for k, dt in enumerate(offsets):
        shifted = t_fixed + dt
        if fixed_strict is not None:
            fixed_n = fixed_strict
        else:
            fixed_n = _window_normalised(t_fixed, fixed, shifted[0], shifted[-1])
        resampled = np.interp(shifted, t_moving, moving)  # clamped at the ends
        norm, sd = _normalise(resampled)
        diff = fixed_n - norm
        out[k] = float(diff @ diff)
        sds[k] = sd
        maxdiff[k] = float(np.abs(diff).max())
    return out, sds, maxdiff


def search_lag(
    t_fixed: np.ndarray,
    fixed: np.ndarray,
    t_moving: np.ndarray,
    moving: np.ndarray,
    *,
    max_lag_s: float = MAX_LAG_S,
    fine_step_s: float = FINE_STEP_S,
    polarity: int = 1,
    clamp_ends: bool = False,
) -> LagSearch:
    """Offset Δ minimising SSD(fixed(t), moving(t + Δ)) of the normalised signals.

    Default: only fixed samples whose t + Δ lies inside the moving signal for every searched
    Δ are compared (one normalisation each; the moving signal is resampled linearly and
    normalised per Δ): nothing is extrapolated, so the estimate is unbiased.

    ``clamp_ends`` (PLUS's exact procedure): ``fixed`` (video) covers the common time range,
    ``moving`` (tracker) that range shrunk by ``max_lag_s`` at both ends, resampled with its end
    values held beyond them; for each Δ the fixed signal is normalised over its samples within
    [t0 + Δ, t1 + Δ]. The held ends bias Δ by a few ms (more the larger |Δ|).
    """
    moving = polarity * np.asarray(moving, dtype=np.float64)
    tf = np.asarray(t_fixed, dtype=np.float64)
    fx = np.asarray(fixed, dtype=np.float64)
    if not clamp_ends:
        inside = (tf >= t_moving[0] + max_lag_s) & (tf <= t_moving[-1] - max_lag_s)
        tf, fx = tf[inside], fx[inside]
    if len(tf) < 10 or len(t_moving) < 2:
        raise ValueError("the video and tracker recordings overlap too little in time")
    period = (tf[-1] - tf[0]) / (len(tf) - 1)
    coarse = np.arange(-max_lag_s, max_lag_s + 1e-9, period)
    ssd_c, _, _ = _ssd_at(tf, fx, t_moving, moving, coarse, not clamp_ends)
    best = coarse[int(np.argmin(ssd_c))]
    fine = np.arange(best - 3 * period, best + 3 * period + 1e-9, fine_step_s)
    ssd_f, sds, maxdiff = _ssd_at(tf, fx, t_moving, moving, fine, not clamp_ends)
    k = int(np.argmin(ssd_f))
    offsets = np.concatenate([coarse, fine])
    curve = np.concatenate([ssd_c, ssd_f])
    order = np.argsort(offsets)
    return LagSearch(
        float(fine[k]),
        float(ssd_f[k]),
        float(sds[k]),
        float(maxdiff[k]),
        len(tf),
        polarity,
        offsets[order],
        curve[order],
        float(tf[0]),
        float(tf[-1] - tf[0]),
    )


def motion_periods(values: np.ndarray, hysteresis: float = 0.25) -> int:
    """Full up-and-down cycles in a motion signal: crossings from below ``mean − h`` to above
    ``mean + h`` (h = ``hysteresis`` × half the peak-to-peak), so noise does not count."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) < 3:
        return 0
    h = hysteresis * 0.5 * float(np.ptp(x))
    lo, hi = x.mean() - h, x.mean() + h
    cycles, below = 0, None
    for v in x:
        if v <= lo:
            below = True
        elif v >= hi:
            if below:
                cycles += 1
            below = False
    return cycles


@dataclass
class TemporalCalibrationResult:
    """Outcome of :func:`calibrate_temporal`.

    Attributes
    ----------
    tracker_lag_s
        PLUS ``TrackerLagSec``: use the tracker pose at ``t_image + tracker_lag_s``.
    error
        PLUS ``CalibrationError``: sqrt(SSD)·σ_tracker, mm (root-sum-square).
    max_error
        PLUS ``MaxCalibrationError``: max |difference|·σ_tracker, mm.
    rms_error_mm
        RMS difference of the aligned normalised signals × σ_tracker, mm.
    """

    tracker_lag_s: float
    error: float
    max_error: float
    rms_error_mm: float
    video_frames: int
    video_frames_used: int
    tracker_samples: int
    tool: str
    polarity: int
    compared_s: float
    motion_periods: int
    searches: tuple[LagSearch, LagSearch]
    video: VideoSignal
    tracker_times_s: np.ndarray
    tracker_values_mm: np.ndarray
    sources: tuple[str, str]
    warnings: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        """A warning questions this lag (a short recording, a polarity kept against PLUS's
        rule or not told apart, the search's edge, a spatial calibration in the ``--out`` file
        made at another lag); ``usnav calibrate temporal`` then exits with status 1."""
        return bool(self.warnings)

    def as_dict(self) -> dict:
        return {
            "tracker_lag_s": self.tracker_lag_s,
            "error": self.error,
            "max_error": self.max_error,
            "rms_error_mm": self.rms_error_mm,
            "video_frames": self.video_frames,
            "video_frames_used": self.video_frames_used,
            "tracker_samples": self.tracker_samples,
            "tool": self.tool,
            "polarity": self.polarity,
            "compared_s": self.compared_s,
            "motion_periods": self.motion_periods,
            "candidates": [
                {
                    "polarity": s.polarity,
                    "lag_s": s.lag_s,
                    "rms_error_mm": math.sqrt(s.ssd / s.n) * s.moving_sd,
                }
                for s in self.searches
            ],
            "video": self.sources[0],
            "tracker": self.sources[1],
            "warnings": list(self.warnings),
            "flagged": self.flagged,
        }


def check_clip(clip: tuple[int, int, int, int], image_size: tuple[int, int]) -> None:
    """Refuse a ``--clip X Y W H`` that is not a non-empty rectangle inside the image.

    Raises
    ------
    InputError
        Negative origin, zero or negative size, or a rectangle reaching past the image
        (``image_size`` is (columns, rows)).
    """
    x, y, w, h = (int(v) for v in clip)
    cols, rows = int(image_size[0]), int(image_size[1])
    if w <= 0 or h <= 0:
        raise InputError("--clip", f"width and height must be positive, got {w} x {h}")
    if x < 0 or y < 0 or x + w > cols or y + h > rows:
        raise InputError(
            "--clip",
            f"the rectangle x {x}..{x + w}, y {y}..{y + h} is not inside the {cols} x {rows} "
            "video frames",
            f"give X Y W H with X + W <= {cols} and Y + H <= {rows}",
        )


def calibrate_temporal(
    video: str | Path,
    tracker: str | Path | None = None,
    *,
    tool: str = "ProbeToReference",
    clip: tuple[int, int, int, int] | None = None,
    max_lag_s: float = MAX_LAG_S,
    clamp_ends: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> TemporalCalibrationResult:
    """Tracker lag from a water-tank recording (video, and tracker if recorded separately).

    Parameters
    ----------
    video
        Recording of the tank bottom (B-mode frames; may also carry the tracker poses).
    tracker
        Tracker recording; default: the poses in ``video``.
    tool
        The tracked transform whose translation is the moving signal.
    clip
        Video region ``(x0, y0, width, height)``, px; default the whole image.
    max_lag_s
        Largest |lag| searched, s.
    clamp_ends
        PLUS's exact procedure (tracker range shrunk by ``max_lag_s``, its end values held):
        reproduces PLUS's CalibrationError figure; the default compares only where both
        signals exist for every searched lag (unbiased; on PLUS's data it gives PLUS's
        published lag to 0.1 ms).

    Raises
    ------
    InputError
        Unreadable files, no line found in enough frames, too little motion, too little
        overlap in time.
    """
    from usnav.io.sequence import read_sequence

    vpath = str(video)
    tpath = str(tracker) if tracker is not None else vpath
    with read_sequence(vpath) as vseq, read_sequence(tpath) as tseq:
        if vseq.image_size[0] == 0 or len(vseq) == 0:
            raise InputError(vpath, "has no video frames", "give the water-tank video recording")
        if clip is not None:
            check_clip(clip, tuple(vseq.image_size[:2]))
        tv = np.asarray(vseq.timestamps, dtype=np.float64)
        tt = np.asarray(tseq.timestamps, dtype=np.float64)
        if len(tt) == 0:
            raise InputError(tpath, "has no tracker samples")
        # PLUS: video over the common time range, tracker over it shrunk by max_lag_s
        lo, hi = max(tv.min(), tt.min()), min(tv.max(), tt.max())
        if lo + max_lag_s >= hi - max_lag_s:
            raise InputError(
                f"{vpath} + {tpath}",
                f"video ({tv.min():.2f}–{tv.max():.2f} s) and tracker ({tt.min():.2f}–"
                f"{tt.max():.2f} s) overlap too little in time",
                "record both at the same time, for 10–15 s",
            )
        try:
            vsig = video_line_signal(vseq, clip, progress, time_range=(lo, hi))
        except ValueError as exc:
            raise InputError(vpath, str(exc)) from exc
        margin = max_lag_s if clamp_ends else 0.0
        t_t, s_t, used_tool = tracker_position_signal(
            tseq, tool, time_range=(lo + margin, hi - margin)
        )
    if len(vsig.times_s) < 10:
        raise InputError(
            vpath,
            f"the tank bottom line was found in only {len(vsig.times_s)} of {vsig.frames} frames",
            "is this a water-tank recording? check --clip",
        )
    vrange = float(np.ptp(vsig.values_px))
    if vrange < MIN_VIDEO_RANGE_PX:
        raise InputError(
            vpath,
            f"the line moves only {vrange:.1f} px (at least {MIN_VIDEO_RANGE_PX:.0f} needed)",
            "move the probe up and down more",
        )
    trange = float(np.ptp(s_t))
    if trange < MIN_TRACKER_RANGE_MM:
        raise InputError(
            tpath,
            f"{used_tool} moves only {trange:.3g} mm along its main axis "
            f"(at least {MIN_TRACKER_RANGE_MM:.0f} needed), while the video's line moves "
            f"{vrange:.0f} px",
            "the poses must be in mm (a tracker recording in m moves a thousandth as far); "
            "check that --tracker is the recording made with this video and --tool the "
            "probe's pose",
        )
    searches = []
    for pol in (1, -1):
        try:
            searches.append(
                search_lag(
                    vsig.times_s,
                    vsig.values_px,
                    t_t,
                    s_t,
                    max_lag_s=max_lag_s,
                    polarity=pol,
                    clamp_ends=clamp_ends,
                )
            )
        except ValueError as exc:
            raise InputError(
                f"{vpath} + {tpath}", str(exc), "record video and tracker at the same time"
            ) from exc
    best = min(searches, key=lambda s: abs(s.lag_s))
    warnings = []
    other = searches[1] if best is searches[0] else searches[0]
    if other.ssd * CLEAR_FIT_RATIO <= best.ssd:
        # the data decide: a true lag beyond a quarter of the motion's period puts the wrong
        # polarity's optimum nearer zero, and PLUS's smaller-|lag| rule then takes it
        warnings.append(
            f"kept the lag that fits (polarity {other.polarity:+d}: {other.lag_s:+.4f} s, SSD "
            f"{other.ssd:.1f}) over the smaller |lag| PLUS would keep ({best.lag_s:+.4f} s, SSD "
            f"{best.ssd:.1f}, {best.ssd / max(other.ssd, 1e-12):.1f}× worse): a lag this large "
            "usually means the tracker's and the video's clocks differ; check them"
        )
        best, other = other, best
    elif other.ssd < best.ssd:
        warnings.append(
            f"the other polarity fits better (lag {other.lag_s:+.4f} s, SSD {other.ssd:.1f} vs "
            f"{best.ssd:.1f}) but not clearly ({CLEAR_FIT_RATIO:g}× needed); PLUS's smaller "
            "|lag| is kept: the lag may lie beyond the search range, or the motion is too "
            "regular to tell: record irregular up-and-down motion"
        )
    if abs(abs(best.lag_s) - max_lag_s) < 2 * FINE_STEP_S:
        warnings.append(f"the lag is at the edge of the search range (±{max_lag_s} s)")
    in_span = (t_t >= best.compared_from_s) & (t_t <= best.compared_from_s + best.span_s)
    periods = motion_periods(s_t[in_span])
    if best.span_s < MIN_COMPARED_S or periods < MIN_MOTION_PERIODS:
        warnings.append(
            f"only {best.span_s:.1f} s and {periods} periods of motion were compared (the "
            f"method needs {MIN_COMPARED_S:.0f}–15 s and at least {MIN_MOTION_PERIODS} "
            "periods): the lag may be tens of ms off although the residual looks good; "
            "record longer"
        )
    sd = best.moving_sd
    return TemporalCalibrationResult(
        tracker_lag_s=best.lag_s,
        error=math.sqrt(best.ssd) * sd,
        max_error=best.max_abs_diff * sd,
        rms_error_mm=math.sqrt(best.ssd / best.n) * sd,
        video_frames=vsig.frames,
        video_frames_used=len(vsig.times_s),
        tracker_samples=len(t_t),
        tool=used_tool,
        polarity=best.polarity,
        compared_s=best.span_s,
        motion_periods=periods,
        searches=(searches[0], searches[1]),
        video=vsig,
        tracker_times_s=t_t,
        tracker_values_mm=s_t,
        sources=(vpath, tpath),
        warnings=warnings,
    )
