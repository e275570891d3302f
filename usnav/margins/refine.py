"""Finding the boundary the ultrasound supports near the MRI-predicted one.

For each predicted boundary point the speckle-smoothed image is sampled along the outward
normal over ± ``band_mm`` (a profile). Three steps:

1. **Polarity.** The structure's look along this contour: the median, over its points, of the
   mean intensity in a ``polarity_window_mm`` strip just inside the predicted boundary minus
   the one just outside, in speckle SDs. Above ``contrast_threshold``: hyperechoic (tumor
   brighter than its surroundings); below minus it: hypoechoic (a cyst); otherwise
   iso-echoic — then the ultrasound cannot show this margin, and no point is claimed as seen.
2. **Boundary.** One offset per point by dynamic programming, neighbouring offsets differing by
   at most ``max_slope`` (a boundary, not a scatter of speckle maxima), with a quadratic pull
   towards the prediction (``prior_weight``). ``method="region"`` (default) scores an offset by
   how well "inside = one intensity level, outside = another" fits the profile (a Chan–Vese
   model along the normals, levels re-estimated from the boundary found, three rounds);
   ``method="edge"`` by the intensity derivative with the polarity's sign.
3. **Confidence** of a point: the intensity step across the boundary found (inside minus
   outside, ``contrast_window_mm`` strips, averaged ± ``confidence_smoothing_mm`` along the
   contour) as a fraction of the structure's contrast — about 1 where the boundary looks like
   the structure's edge, about 0 where nothing changes — mapped through
   ``confidence_ratio0..1``, times how clearly the structure differs from its surroundings at
   all (``|polarity contrast|`` mapped through ``confidence_contrast0..1``).

On the simulator (hyperechoic tumors, tuning seeds) the region model found the boundary better
than the edge model; both are measured in ``usnav bench``.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

from usnav.margins import _kernels
from usnav.margins.options import MarginOptions

HYPERECHOIC = "hyperechoic"
HYPOECHOIC = "hypoechoic"
ISOECHOIC = "isoechoic"


@dataclass(frozen=True)
class Refinement:
    """Result of refining one contour.

    Attributes
    ----------
    offset_mm
        (N,) signed distance along the outward normal from the predicted to the observed
        boundary, mm (+ = the ultrasound boundary lies outside the MRI-predicted one).
    confidence
        (N,) 0..1.
    polarity
        ``"hyperechoic"``, ``"hypoechoic"`` or ``"isoechoic"``: the structure's look relative
        to its surroundings along this contour.
    contrast
        This contour's polarity contrast: (inside − outside) mean intensity at the predicted
        boundary, in speckle SDs.
    """

    offset_mm: np.ndarray
    confidence: np.ndarray
    polarity: str
    contrast: float


def _median(values: np.ndarray) -> np.floating:
    """``np.median`` of a 1-D array (the same value, from a compiled selection for float32
    and float64: numpy's median costs more in its wrapper than in the selection)."""
    if values.dtype == np.float32:
        return np.float32(_kernels.median_float32(values))
    if values.dtype == np.float64:
        return np.float64(_kernels.median_float64(values))
    return np.median(values)


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    """``np.nanmean(values, axis=1, keepdims=True)`` of float32 rows, the same numbers
    without its copies and warnings (NaN for a row with no number)."""
    missing = np.isnan(values)
    total = np.where(missing, np.float32(0.0), values).sum(axis=1, keepdims=True)
    count = np.sum(~missing, axis=1, dtype=np.intp, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.divide(total, count, out=total, casting="unsafe")


def _robust_sd(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    if finite.size < 8:
        return float("nan")
    med = _median(finite)
    return float(1.4826 * _median(np.abs(finite - med)))


def _strip_means(
    csum: np.ndarray, ccount: np.ndarray, lo: np.ndarray | int, hi: np.ndarray | int
) -> np.ndarray:
    """Mean of profile samples [lo, hi) per row, from running sums (NaN if none).

    ``csum`` and ``ccount`` are (N, M + 1) running sums and counts along each profile;
    ``lo`` and ``hi`` are (N,) column indices per row, or one column for every row.
    """
    rows = np.arange(len(csum))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (csum[rows, hi] - csum[rows, lo]) / (ccount[rows, hi] - ccount[rows, lo])


def refine_contour(
    smoothed: np.ndarray,
    points_px: np.ndarray,
    normals_px: np.ndarray,
    mm_per_px: float,
    options: MarginOptions,
    memory: collections.deque[float] | None = None,
) -> Refinement:
    """Ultrasound-supported boundary around one predicted contour.

    Parameters
    ----------
    smoothed
        float32 (rows, cols) ultrasound image after speckle smoothing.
    points_px, normals_px
        (N, 2) predicted boundary points and outward unit normals, pixels (x = col, y = row).
        Normals point out of the structure (into a hole for a hole's boundary), so negative
        offsets always lie inside the structure.
    mm_per_px
        Pixel size along the normals, mm (the mean of the two pixel spacings).
    options
        Band, step, slope, prior and confidence settings.
    memory
        The structure's polarity contrasts of recent contours (a bounded deque, see
        :class:`~usnav.margins.MarginEstimator`): this contour's is appended and the median
        decides the polarity — echogenicity belongs to the tumor, not to one frame. None:
        judge from this contour alone. The returned ``contrast`` is always this contour's.
    """
    n_points = len(points_px)
    nothing = Refinement(np.zeros(n_points), np.zeros(n_points), ISOECHOIC, 0.0)
    step = options.profile_step_mm
    half = max(1, round(options.band_mm / step))
    window = max(1, round(options.contrast_window_mm / step))
    wide = max(1, round(options.polarity_window_mm / step))
    gap = 1
    reach = half + max(window, wide) + gap
    offsets_mm = np.arange(-reach, reach + 1) * step
    profiles = np.empty((n_points, offsets_mm.size), np.float32)
    _kernels.sample_profiles(smoothed, points_px, normals_px, offsets_mm / mm_per_px, profiles)
    finite = np.isfinite(profiles)
    if n_points < 3 or not finite.any():
        return nothing

    filled = np.where(finite, profiles, 0.0).astype(np.float64)
    csum = np.concatenate([np.zeros((n_points, 1)), np.cumsum(filled, axis=1)], axis=1)
    ccount = np.concatenate([np.zeros((n_points, 1)), np.cumsum(finite, axis=1)], axis=1)

    # speckle SD: spread of the samples about their per-point, per-side mean
    inner_side, outer_side = profiles[:, :reach], profiles[:, reach + 1 :]
    with np.errstate(invalid="ignore"):
        deviations = np.concatenate(
            [inner_side - _nanmean_rows(inner_side), outer_side - _nanmean_rows(outer_side)],
            axis=1,
        )
    speckle_sd = _robust_sd(deviations)
    if not np.isfinite(speckle_sd) or speckle_sd <= 0:
        return nothing

    # 1. polarity, from wide strips either side of the predicted boundary
    at = reach
    polarity_step = _strip_means(csum, ccount, at - gap - wide + 1, at - gap + 1) - _strip_means(
        csum, ccount, at + gap, at + gap + wide
    )
    per_point = polarity_step[np.isfinite(polarity_step)]
    if per_point.size == 0:
        return nothing
    own_contrast = float(_median(per_point) / speckle_sd)
    settled = True
    if memory is not None:
        memory.append(own_contrast)
        contrast = float(_median(np.fromiter(memory, np.float64, len(memory))))
        settled = len(memory) >= min(options.polarity_min_samples, memory.maxlen or 1)
    else:
        contrast = own_contrast
    if contrast > options.contrast_threshold:
        polarity, sign = HYPERECHOIC, 1.0
    elif contrast < -options.contrast_threshold:
        polarity, sign = HYPOECHOIC, -1.0
    else:
        polarity, sign = ISOECHOIC, 0.0

    # 2. boundary
    band = slice(reach - half, reach + half + 1)
    band_offsets = offsets_mm[band]
    penalty = (options.prior_weight * (band_offsets / options.band_mm) ** 2).astype(np.float32)
    spacing_mm = _mean_spacing_mm(points_px) * mm_per_px
    max_step = max(1, int(np.ceil(options.max_slope * spacing_mm / step)))
    if options.method == "region":
        correlation = max(1.0, options.smoothing_mm / step)
        path, reward = _region_path(
            profiles[:, band],
            penalty,
            max_step,
            speckle_sd,
            correlation,
            options.region_truncation,
        )
    else:
        path, reward = _edge_path(profiles[:, band], sign, step, penalty, max_step)
        if path is None:
            return Refinement(np.zeros(n_points), np.zeros(n_points), polarity, own_contrast)
    rows = np.arange(n_points)
    # sub-sample position: parabola through the reward around the chosen offset
    q = np.clip(path, 1, 2 * half - 1)
    r0, r1, r2 = reward[rows, q - 1], reward[rows, q], reward[rows, q + 1]
    denom = r0 - 2 * r1 + r2
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(np.abs(denom) > 1e-6, 0.5 * (r0 - r2) / denom, 0.0)
    shift = np.where((path == q) & np.isfinite(shift), np.clip(shift, -0.5, 0.5), 0.0)
    offset_mm = band_offsets[path] + shift * step

    # 3. confidence
    if polarity == ISOECHOIC or not settled:
        # iso-echoic: the ultrasound cannot show this margin; not settled: too few contours
        # seen yet to know how this structure looks — in both cases nothing is claimed
        return Refinement(offset_mm.astype(np.float64), np.zeros(n_points), polarity, own_contrast)
    at = reach - half + path
    local_step = _strip_means(csum, ccount, at - gap - window + 1, at - gap + 1) - _strip_means(
        csum, ccount, at + gap, at + gap + window
    )
    along = max(1, round(options.confidence_smoothing_mm / options.point_spacing_mm))
    local_step = _circular_smooth(np.nan_to_num(local_step), along)
    ratio = sign * local_step / (abs(contrast) * speckle_sd)
    local = np.clip(
        (ratio - options.confidence_ratio0)
        / (options.confidence_ratio1 - options.confidence_ratio0),
        0.0,
        1.0,
    )
    clarity = np.clip(
        (abs(contrast) - options.confidence_contrast0)
        / (options.confidence_contrast1 - options.confidence_contrast0),
        0.0,
        1.0,
    )
    # a step far stronger than the structure's own contrast is another interface (pia, CSF,
    # bone), not this structure's margin
    too_strong = np.clip(
        (options.confidence_ratio_max - ratio) / (0.25 * options.confidence_ratio_max), 0.0, 1.0
    )
    confidence = local * clarity * too_strong
    # an edge on the band's border is where the search ran out, not a found boundary
    at_border = (path == 0) | (path == 2 * half) | ~np.isfinite(profiles[rows, reach - half + path])
    confidence = np.where(at_border, 0.0, confidence)
    return Refinement(
        offset_mm.astype(np.float64), confidence.astype(np.float64), polarity, own_contrast
    )


def _mean_spacing_mm(points: np.ndarray) -> float:
    d = np.diff(np.vstack([points, points[:1]]), axis=0)
    return float(np.mean(np.hypot(d[:, 0], d[:, 1]))) if len(points) > 1 else 1.0


def _circular_smooth(values: np.ndarray, half: int) -> np.ndarray:
    if values.size < 2 * half + 1:
        return values
    window = 2 * half + 1
    padded = np.concatenate([values[-half:], values, values[:half]])
    return np.convolve(padded, np.full(window, 1.0 / window), "valid")


def _edge_path(
    band_profiles: np.ndarray,
    sign: float,
    step: float,
    penalty: np.ndarray,
    max_step: int,
) -> tuple[np.ndarray | None, np.ndarray]:
    """Edge-based boundary: DP over the z-scored intensity derivative along the normals
    (``sign`` the structure's polarity: +1 hyperechoic, −1 hypoechoic, 0 either edge)."""
    derivative = np.gradient(band_profiles, axis=1) / np.float32(step)
    noise = _robust_sd(derivative)
    if not np.isfinite(noise) or noise <= 0:
        return None, derivative
    edge = np.abs(derivative) if sign == 0 else -np.float32(sign) * derivative
    reward = np.clip(edge / np.float32(noise), 0.0, 8.0).astype(np.float32)
    cost = (penalty[None, :] - reward).astype(np.float32)
    cost[~np.isfinite(band_profiles)] = np.nan
    path = np.zeros(len(band_profiles), np.int64)
    _kernels.boundary_dp(cost, max_step, True, path)
    return path, reward


def _region_path(
    band_profiles: np.ndarray,
    penalty: np.ndarray,
    max_step: int,
    speckle_sd: float,
    correlation: float,
    truncation: float | None = None,
    iterations: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """Region-based boundary (a Chan–Vese model along the normals), solved by DP.

    For a boundary at band index q, samples before q are "inside" (mean ``mu_in``), after it
    "outside" (``mu_out``); the cost is the squared misfit in speckle variances (divided by
    the samples' correlation length), truncated at ``truncation`` speckle SDs (None: not
    truncated). The means start from the predicted boundary and are re-estimated from the
    chosen one.
    """
    n, m = band_profiles.shape
    path = np.full(n, m // 2, np.int64)
    reward = np.zeros((n, m), np.float32)
    scale = 1.0 / (speckle_sd**2 * correlation)
    # samples far from both levels (another layer: a bright pia, dark CSF) cost the same on
    # either side, so they cannot drag the boundary onto their own edges
    cap = (truncation * speckle_sd) ** 2 if truncation is not None else np.inf
    _kernels.region_boundary(
        np.ascontiguousarray(band_profiles, dtype=np.float32),
        np.ascontiguousarray(penalty, dtype=np.float32),
        max_step,
        cap,
        scale,
        iterations,
        path,
        reward,
    )
    return path, reward
