"""N-wire dot segmentation, line finding and labelling (usnav's own, after PLUS fCal).

Input: one B-mode frame in **MF** orientation (the caller flips other orientations; see
:func:`to_mf`). Output: the image position (px, x = column, y = row) of every wire of every
N-wire pattern, labelled like PLUS labels them, or the reason the frame was not usable.

Steps (parameters from the PLUS ``<Segmentation>`` element, mm → px with the approximate
spacing):

1. Region of interest (clip rectangle), shrunk so a bar fits around every pixel.
2. Top-hat with a bar (2·b + 1 px) at 0°, 45°, 90°, 135°: each opening is subtracted in turn,
   which removes long structures (reverberations, the phantom walls) and keeps small dots.
3. Opening with a disc: removes speckle smaller than a wire dot.
4. Threshold at min + p % of the range.
5. 8-connected clusters → intensity-weighted centroids, each scored by its summed intensity.
   More clusters than ``NumberOfMaximumFiducialPointCandidates`` → the frame fails.
6. Collinear triples whose end-to-end length matches an N's width (±4 mm) and whose angle is
   in [MinTheta, MaxTheta] (either direction) are candidate lines.
7. One line per pattern: disjoint dots, parallel (AngleTolerance), spaced like the pattern
   planes (MaxLinePairDistanceErrorPercent), shifted along each other by at most MaxLineShift;
   the highest-scoring such set wins. Lines are assigned to patterns top to bottom in XML
   order, and dots to wires from the image's right (marked side) to its left, as PLUS does.
8. usnav's own check: the labelled dots must fit the phantom's geometry (one affine map of
   the image plane puts every side dot on its wire and every middle dot on its diagonal at
   the N-ratio point). If the dots fit only when mirrored left-right and/or top-bottom, the
   image orientation contradicts the phantom (PlusLib #888) and the frame is not used.
"""

from __future__ import annotations

import enum
import itertools
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from usnav.calibration.phantom import NWirePattern, SegmentationParameters
from usnav.frames import mf_pixels

#: PLUS: dots closer than this to the region-of-interest border are ignored, px.
_BORDER_MARGIN_PX = 8
#: PLUS: tolerance on the N's end-to-end length and on the start-to-middle distance, mm.
_END_LENGTH_TOL_MM = 4.0
_MIDDLE_LENGTH_TOL_MM = 15.0
#: Geometry check: the labelled dots fit the phantom when their RMS misfit (affine fit, mm) is
#: below this; a frame is called mirrored when a mirrored labelling fits this many times better.
#: Measured on PLUS's fCal 1.2 data: right labelling 0.09–0.18 mm, mirrored 1.0–1.7 mm.
GEOMETRY_TOLERANCE_MM = 2.0
MIRROR_FACTOR = 2.0
#: Lines considered for the pattern search (best first); keeps the combinatorics bounded.
_MAX_CANDIDATE_LINES = 40


class FrameStatus(enum.Enum):
    """Why a frame was (not) used."""

    OK = "ok"
    NO_IMAGE = "no image"
    TOO_MANY_CANDIDATES = "too many dot candidates"
    WIRES_NOT_FOUND = "wires not found"
    GEOMETRY_MISMATCH = "dots do not fit the phantom geometry"
    ORIENTATION_MISMATCH = "image orientation contradicts the phantom"
    INVALID_TRANSFORM = "probe or reference transform not OK"


@dataclass
class FrameSegmentation:
    """Result for one frame.

    Attributes
    ----------
    status
        :class:`FrameStatus`.
    candidates
        All dot candidates, shape (n, 3): x, y (px, MF image), score.
    wire_points
        Labelled wire dots, shape (patterns, 3, 2), px (MF image); None unless found.
    geometry_rms_mm
        RMS misfit of the labelled dots to the phantom geometry, mm (None if not found).
    detail
        A human-readable note (which flip fits, how many candidates...).
    """

    status: FrameStatus
    candidates: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    wire_points: np.ndarray | None = None
    geometry_rms_mm: float | None = None
    detail: str = ""


# -- image orientation ----------------------------------------------------------------------


def to_mf(image: np.ndarray, orientation: str) -> np.ndarray:
    """Return ``image`` turned to **MF** (marked side → +x, far → +y), as PLUS does on input
    (:func:`usnav.frames.mf_pixels`).

    Raises
    ------
    ValueError
        For a code that is not a 2D B-mode orientation.
    """
    try:
        return mf_pixels(image, orientation)[0]
    except ValueError as exc:
        raise ValueError(f"{exc}; N-wire calibration cannot use it") from None


# -- dot segmentation -----------------------------------------------------------------------


def region_of_interest(
    params: SegmentationParameters, image_size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Clip rectangle ``(x0, y0, x1, y1)`` (x1, y1 exclusive), shrunk so the bar fits.

    ``image_size`` is (cols, rows). Without a clip rectangle the whole image is used.
    """
    cols, rows = image_size
    b = params.bar_half_length_px
    if params.clip_origin_px is not None and params.clip_size_px is not None:
        x0, y0 = params.clip_origin_px
        x1, y1 = x0 + params.clip_size_px[0], y0 + params.clip_size_px[1]
    else:
        x0, y0, x1, y1 = 0, 0, cols, rows
    x0, y0 = max(x0, b + 1), max(y0, b + 1)
    x1, y1 = min(x1, cols - b - 1), min(y1, rows - b - 1)
    return x0, y0, x1, y1


class DotSegmenter:
    """Morphological dot segmentation with fixed parameters (structuring elements cached).

    Parameters
    ----------
    params
        Segmentation parameters.
    """

    def __init__(self, params: SegmentationParameters):
        self.params = params
        b = params.bar_half_length_px
        n = 2 * b + 1
        self._bars = (
            np.ones((1, n), np.uint8),  # 0°
            np.fliplr(np.eye(n, dtype=np.uint8)).copy(),  # 45° (up-right in image)
            np.ones((n, 1), np.uint8),  # 90°
            np.eye(n, dtype=np.uint8),  # 135°
        )
        r = params.disc_radius_px
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        self._disc = ((xx * xx + yy * yy) <= r * r).astype(np.uint8)

    def filtered(self, image: np.ndarray, roi: tuple[int, int, int, int]) -> np.ndarray:
        """Top-hat + disc opening of the ROI; returns the ROI-sized filtered image (uint8)."""
        x0, y0, x1, y1 = roi
        b = self.params.bar_half_length_px
        work = np.ascontiguousarray(image[y0 - b : y1 + b, x0 - b : x1 + b])
        if work.dtype != np.uint8:
            work = _to_uint8(work)
        rows, cols = work.shape
        for bar in self._bars:
            eroded = cv2.erode(work, bar)
            # PLUS erodes only inside the ROI: outside it the eroded image is 0 (explicit
            # ends: with b = 0, ``-b:`` would be the whole image)
            eroded[:b, :] = 0
            eroded[rows - b :, :] = 0
            eroded[:, :b] = 0
            eroded[:, cols - b :] = 0
            opened = cv2.dilate(eroded, bar)
            work = cv2.subtract(work, opened)
        inner = np.ascontiguousarray(work[b : rows - b, b : cols - b])
        return cv2.morphologyEx(inner, cv2.MORPH_OPEN, self._disc)

    def dots(self, image: np.ndarray, roi: tuple[int, int, int, int]) -> np.ndarray:
        """Dot candidates in the ROI: shape (n, 3) = x, y (px, full image), score; best first."""
        x0, y0, x1, y1 = roi
        if x1 - x0 <= 2 * _BORDER_MARGIN_PX or y1 - y0 <= 2 * _BORDER_MARGIN_PX:
            return np.zeros((0, 3))
        work = self.filtered(image, roi)
        hi = int(work.max())
        # PLUS thresholds over the whole frame, which is 0 outside the ROI.
        covers_all = roi == (0, 0, image.shape[1], image.shape[0])
        lo = int(work.min()) if covers_all else 0
        thresh = lo + math.floor((hi - lo) * self.params.threshold_image_percent / 100 + 0.5)
        if hi == 0:
            return np.zeros((0, 3))
        mask = (work >= max(thresh, 1)).astype(np.uint8)
        n, labels = cv2.connectedComponents(mask, connectivity=8)
        if n <= 1:
            return np.zeros((0, 3))
        flat = np.flatnonzero(mask)
        lab = labels.ravel()[flat]
        weight = work.ravel()[flat].astype(np.float64) / 255.0
        ys, xs = np.divmod(flat, work.shape[1])
        total = np.bincount(lab, weights=weight, minlength=n)[1:]
        cx = np.bincount(lab, weights=weight * xs, minlength=n)[1:] / total + x0
        cy = np.bincount(lab, weights=weight * ys, minlength=n)[1:] / total + y0
        score = total
        if self.params.use_original_intensity_for_score:
            original = image[y0:y1, x0:x1].ravel()[flat].astype(np.float64) / 255.0
            near = (xs + x0 - cx[lab - 1]) ** 2 + (ys + y0 - cy[lab - 1]) ** 2 <= 9.0
            score = np.bincount(lab[near], weights=original[near], minlength=n)[1:]
        keep = (
            (cx >= x0 + _BORDER_MARGIN_PX)
            & (cx < x1 - _BORDER_MARGIN_PX)
            & (cy >= y0 + _BORDER_MARGIN_PX)
            & (cy < y1 - _BORDER_MARGIN_PX)
        )
        out = np.stack([cx[keep], cy[keep], score[keep]], axis=1)
        return out[np.argsort(-out[:, 2], kind="stable")]


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Scale a non-uint8 single-channel image to 0..255."""
    img = image.astype(np.float64)
    lo, hi = float(img.min()), float(img.max())
    if hi <= lo:
        return np.zeros(img.shape, np.uint8)
    return np.round((img - lo) * (255.0 / (hi - lo))).astype(np.uint8)


# -- lines and patterns ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Line:
    dots: tuple[int, int, int]  # indices into the candidate array, ordered right → left
    score: float
    direction: np.ndarray  # unit, from the right end to the left end
    patterns: frozenset[int]  # pattern indices whose width matches
    mean_y: float


class PatternFinder:
    """Find and label the N-wire patterns among dot candidates.

    Parameters
    ----------
    patterns
        The phantom's N-wire patterns (XML order = top of the image first).
    params
        Segmentation parameters (line tolerances).
    """

    def __init__(self, patterns: tuple[NWirePattern, ...], params: SegmentationParameters):
        self.patterns = patterns
        self.params = params
        s = params.approximate_spacing_mm_per_px
        self._end_len_px = np.array([p.width_mm / s for p in patterns])
        self._end_tol_px = math.floor(_END_LENGTH_TOL_MM / s + 0.5)
        self._mid_len_px = np.array([_middle_distance_mm(p) / s for p in patterns])
        self._mid_tol_px = math.floor(_MIDDLE_LENGTH_TOL_MM / s + 0.5)
        self._collinear_px = params.collinear_max_distance_mm / s
        self._parallel_rad = math.radians(params.angle_tolerance_deg)
        self._shift_px = math.floor(params.max_line_shift_mm / s + 0.5)
        offsets = np.array([p.normal @ p.wires[0].front for p in patterns])
        gaps = [abs(a - b) for a, b in itertools.combinations(offsets, 2)]
        e = params.max_line_pair_distance_error_percent / 100.0
        if gaps:
            self._min_gap_px = math.floor(min(gaps) * (1 - e) / s + 0.5)
            self._max_gap_px = math.floor(max(gaps) * (1 + e) / s + 0.5)
        else:
            self._min_gap_px = self._max_gap_px = 0

    # line angle in the PLUS sense: atan2(dy, dx) within (min, max), either direction
    def _angle_ok(self, dx: float, dy: float) -> bool:
        lo, hi = math.radians(self.params.min_theta_deg), math.radians(self.params.max_theta_deg)
        a = math.atan2(dy, dx)
        return any(lo < cand < hi for cand in (a, a - math.pi, a + math.pi))

    def lines(self, dots: np.ndarray) -> list[_Line]:
        """Collinear dot triples whose length fits some pattern's width."""
        n = len(dots)
        if n < 3:
            return []
        xy = dots[:, :2]
        out: dict[tuple[int, int, int], _Line] = {}
        diff = xy[None, :, :] - xy[:, None, :]
        dist = np.hypot(diff[..., 0], diff[..., 1])
        for i, j in itertools.combinations(range(n), 2):
            length = dist[i, j]
            fits = frozenset(
                int(k) for k in np.flatnonzero(np.abs(length - self._end_len_px) < self._end_tol_px)
            )
            if not fits:
                continue
            # right end (larger x) first, as PLUS's start point
            a, b = (i, j) if xy[i, 0] >= xy[j, 0] else (j, i)
            d = (xy[b] - xy[a]) / length
            if not self._angle_ok(d[0], d[1]):
                continue
            rel = xy - xy[a]
            along = rel @ d
            across = np.abs(rel[:, 0] * d[1] - rel[:, 1] * d[0])
            ok = (across <= self._collinear_px) & (along > 0) & (along < length)
            ok[[a, b]] = False
            for m in np.flatnonzero(ok):
                pats = frozenset(
                    k for k in fits if abs(dist[a, m] - self._mid_len_px[k]) < self._mid_tol_px
                )
                if not pats:
                    continue
                key = (a, int(m), b)
                score = float(dots[a, 2] + dots[m, 2] + dots[b, 2])
                line = _Line(key, score, d, pats, float(xy[[a, m, b], 1].mean()))
                old = out.get(key)
                if old is None:
                    out[key] = line
        return sorted(out.values(), key=lambda ln: -ln.score)[:_MAX_CANDIDATE_LINES]

    def _pair_ok(self, xy: np.ndarray, l1: _Line, l2: _Line) -> bool:
        if set(l1.dots) & set(l2.dots):
            return False
        cos = abs(float(l1.direction @ l2.direction))
        angle = math.acos(min(1.0, cos))
        if angle >= self._parallel_rad:
            return False  # the N planes are parallel, so are their lines in the image
        p = xy[l1.dots[0]] - xy[l2.dots[0]]
        d = l2.direction
        distance = abs(p[0] * d[1] - p[1] * d[0])
        if not self._min_gap_px <= distance <= self._max_gap_px:
            return False
        mid1 = (xy[l1.dots[0]] + xy[l1.dots[2]]) / 2
        mid2 = (xy[l2.dots[0]] + xy[l2.dots[2]]) / 2
        return abs(float((mid2 - mid1) @ l1.direction)) <= self._shift_px

    def find(self, dots: np.ndarray) -> np.ndarray | None:
        """Labelled wire points (patterns, 3, 2) or None if no valid set of lines exists.

        Lines are labelled top to bottom, dots right to left (PLUS). If the line widths fit
        the patterns only bottom to top, that set is returned all the same, labelled top to
        bottom, so that :func:`check_orientation` can name the flip.
        """
        k = len(self.patterns)
        lines = self.lines(dots)
        if len(lines) < k:
            return None
        xy = dots[:, :2]
        m = len(lines)
        compat = np.zeros((m, m), dtype=bool)
        for i, j in itertools.combinations(range(m), 2):
            compat[i, j] = compat[j, i] = self._pair_ok(xy, lines[i], lines[j])
        # best set whose top-to-bottom order fits the XML order, and (to diagnose a
        # top-bottom flipped image) the best set that fits only bottom-to-top
        best: dict[bool, tuple[float, tuple[int, ...]]] = {}

        def extend(chosen: tuple[int, ...], start: int) -> None:
            if len(chosen) == k:
                ordered = sorted(chosen, key=lambda idx: lines[idx].mean_y)
                total = sum(lines[idx].score for idx in chosen)
                for flipped, order in ((False, ordered), (True, ordered[::-1])):
                    fits = all(p in lines[idx].patterns for p, idx in enumerate(order))
                    if fits and (flipped not in best or total > best[flipped][0]):
                        best[flipped] = (total, tuple(ordered))
                return
            for nxt in range(start, m):
                if all(compat[c, nxt] for c in chosen):
                    extend((*chosen, nxt), nxt + 1)

        extend((), 0)
        found = best.get(False) or best.get(True)
        if found is None:
            return None
        return np.array([[xy[d] for d in lines[idx].dots] for idx in found[1]])


def _middle_distance_mm(pattern: NWirePattern) -> float:
    """PLUS's expected distance from wire 1 to the middle dot: the diagonal's centre projected
    on the wire1 → wire3 direction."""
    w1, w2, w3 = pattern.wires
    across = w3.front - w1.front
    across = across - (across @ w1.direction) * w1.direction
    across /= np.linalg.norm(across)
    centre = (w2.front + w2.back) / 2
    return float(abs((centre - w1.front) @ across))


# -- geometry check -------------------------------------------------------------------------


def middle_ratios(wire_points: np.ndarray) -> np.ndarray:
    """α = |p2 − p1| / |p3 − p1| per pattern, from points (patterns, 3, 2)."""
    p1, p2, p3 = wire_points[:, 0], wire_points[:, 1], wire_points[:, 2]
    return np.linalg.norm(p2 - p1, axis=1) / np.linalg.norm(p3 - p1, axis=1)


def geometry_misfit_mm(wire_points: np.ndarray, patterns: tuple[NWirePattern, ...]) -> float:
    """RMS misfit (mm) of labelled dots to the phantom, under one affine image → phantom map.

    Unknown: the 3×3 affine ``A`` with ``A·(x, y, 1)`` = a point in the Phantom frame. Each
    middle dot must map onto its N-ratio point (3 equations), each side dot onto its wire's
    line (2 independent equations). Solved by linear least squares.
    """
    rows: list[np.ndarray] = []
    rhs: list[np.ndarray] = []
    alphas = middle_ratios(wire_points)
    for pat, pts, alpha in zip(patterns, wire_points, alphas, strict=True):
        target = pat.middle_point(float(alpha))
        h = np.array([pts[1, 0], pts[1, 1], 1.0])
        rows.append(np.kron(np.eye(3), h))  # (3, 9): A row-major
        rhs.append(target)
        for wire, p in ((pat.wires[0], pts[0]), (pat.wires[2], pts[2])):
            d = wire.direction
            proj = np.eye(3) - np.outer(d, d)  # removes the component along the wire
            h = np.array([p[0], p[1], 1.0])
            rows.append(proj @ np.kron(np.eye(3), h))
            rhs.append(proj @ wire.front)
    a = np.vstack(rows)
    b = np.concatenate(rhs)
    x, *_ = np.linalg.lstsq(a, b, rcond=None)
    residual = a @ x - b
    # each side dot contributes 3 rows of rank 2, each middle dot 3: count points, not rows
    n_points = 3 * len(patterns)
    return float(np.sqrt(residual @ residual / n_points))


def _relabel(wire_points: np.ndarray, mirror_lr: bool, mirror_ud: bool) -> np.ndarray:
    pts = wire_points
    if mirror_lr:
        pts = pts[:, ::-1]
    if mirror_ud:
        pts = pts[::-1]
    return pts


def check_orientation(
    wire_points: np.ndarray, patterns: tuple[NWirePattern, ...]
) -> tuple[FrameStatus, float, str]:
    """Compare the PLUS labelling with its left-right / top-bottom mirrors.

    Returns the status (OK, GEOMETRY_MISMATCH or ORIENTATION_MISMATCH), the misfit of the
    PLUS labelling (mm) and a note naming the flip that fits when the orientation is wrong.
    """
    plain = geometry_misfit_mm(wire_points, patterns)
    alternatives = {
        "mirrored left-right (U instead of M)": (True, False),
        "mirrored top-bottom (N instead of F)": (False, True),
        "rotated 180° (UN instead of MF)": (True, True),
    }
    best_name, best_fit = "", math.inf
    for name, (lr, ud) in alternatives.items():
        if ud and len(patterns) < 2:
            continue
        fit = geometry_misfit_mm(_relabel(wire_points, lr, ud), patterns)
        if fit < best_fit:
            best_name, best_fit = name, fit
    if best_fit * MIRROR_FACTOR < plain and best_fit <= GEOMETRY_TOLERANCE_MM:
        return (
            FrameStatus.ORIENTATION_MISMATCH,
            plain,
            f"the dots fit the phantom only {best_name}: {best_fit:.2f} mm vs {plain:.2f} mm",
        )
    if plain > GEOMETRY_TOLERANCE_MM:
        return FrameStatus.GEOMETRY_MISMATCH, plain, f"misfit {plain:.2f} mm"
    return FrameStatus.OK, plain, ""


def segment_frame(
    image: np.ndarray,
    segmenter: DotSegmenter,
    finder: PatternFinder,
    roi: tuple[int, int, int, int],
) -> FrameSegmentation:
    """Segment one MF frame: candidates → lines → labelled wires → geometry check."""
    if image.size == 0 or image.ndim != 2:
        return FrameSegmentation(FrameStatus.NO_IMAGE, detail="empty or multi-channel image")
    dots = segmenter.dots(image, roi)
    if len(dots) > segmenter.params.max_candidates:
        return FrameSegmentation(
            FrameStatus.TOO_MANY_CANDIDATES,
            dots,
            detail=f"{len(dots)} candidates > {segmenter.params.max_candidates}",
        )
    points = finder.find(dots)
    if points is None:
        return FrameSegmentation(
            FrameStatus.WIRES_NOT_FOUND, dots, detail=f"{len(dots)} candidates, no N pattern"
        )
    status, misfit, note = check_orientation(points, finder.patterns)
    return FrameSegmentation(status, dots, points, misfit, note)
