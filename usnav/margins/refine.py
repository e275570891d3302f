"""Finding the boundary the ultrasound supports near the MRI-predicted one.

For each predicted boundary point, the (speckle-smoothed) image is sampled along the outward
normal over ± ``band_mm``. The edge response is the intensity derivative along the normal with
the structure's polarity (a hyperechoic tumor gets darker going outward, an anechoic cyst
brighter; for an iso-echoic one either sign counts), in units of the derivative's noise
(a robust SD over the band): a z-score. A dynamic programme picks one offset per point,
maximising the summed edge z-score minus a quadratic pull towards the prediction, with
neighbouring offsets differing by at most ``max_slope`` — a boundary, not a scatter of
speckle maxima. The confidence of a point maps its edge z-score to 0..1.
"""

from __future__ import annotations

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
        (inside − outside) mean intensity over the speckle SD.
    """

    offset_mm: np.ndarray
    confidence: np.ndarray
    polarity: str
    contrast: float


def _robust_sd(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    if finite.size < 8:
        return float("nan")
    med = np.median(finite)
    return float(1.4826 * np.median(np.abs(finite - med)))


def refine_contour(
    smoothed: np.ndarray,
    points_px: np.ndarray,
    normals_px: np.ndarray,
    mm_per_px: float,
    options: MarginOptions,
) -> Refinement:
    """Ultrasound-supported boundary around one predicted contour.

    Parameters
    ----------
    smoothed
        float32 (rows, cols) ultrasound image after speckle smoothing.
    points_px, normals_px
        (N, 2) predicted boundary points and outward unit normals, pixels (x = col, y = row).
    mm_per_px
        Pixel size along the normals, mm (the mean of the two pixel spacings).
    options
        Band, step, slope, prior and confidence settings.

    Normals point out of the structure (into a hole for a hole's boundary), so negative
    offsets always lie inside the structure.
    """
    n_points = len(points_px)
    step = options.profile_step_mm
    half = max(1, round(options.band_mm / step))
    window = max(1, round(options.contrast_window_mm / step))
    gap = 1
    reach = half + window + gap
    offsets_mm = np.arange(-reach, reach + 1) * step
    profiles = np.empty((n_points, offsets_mm.size), np.float32)
    _kernels.sample_profiles(smoothed, points_px, normals_px, offsets_mm / mm_per_px, profiles)
    finite = np.isfinite(profiles)
    if n_points == 0 or not finite.any():
        return Refinement(np.zeros(n_points), np.zeros(n_points), ISOECHOIC, 0.0)

    # region means just inside / just outside every candidate offset (running sums)
    filled = np.where(finite, profiles, 0.0).astype(np.float64)
    csum = np.concatenate([np.zeros((n_points, 1)), np.cumsum(filled, axis=1)], axis=1)
    ccount = np.concatenate([np.zeros((n_points, 1)), np.cumsum(finite, axis=1)], axis=1)
    centre = np.arange(reach - half, reach + half + 1)  # band indices into the profile
    in_lo, in_hi = centre - gap - window, centre - gap  # [lo, hi)
    out_lo, out_hi = centre + gap + 1, centre + gap + 1 + window
    with np.errstate(invalid="ignore", divide="ignore"):
        inner = (csum[:, in_hi] - csum[:, in_lo]) / (ccount[:, in_hi] - ccount[:, in_lo])
        outer = (csum[:, out_hi] - csum[:, out_lo]) / (ccount[:, out_hi] - ccount[:, out_lo])
    step_contrast = inner - outer  # (N, band): > 0 where inside is brighter

    # speckle SD: spread of the samples about their local (per-point, per-side) mean
    deviations = (
        np.concatenate(
            [
                profiles[:, :reach] - np.nanmean(profiles[:, :reach], axis=1, keepdims=True),
                profiles[:, reach + 1 :]
                - np.nanmean(profiles[:, reach + 1 :], axis=1, keepdims=True),
            ],
            axis=1,
        )
        if finite[:, :reach].any(axis=1).all() and finite[:, reach + 1 :].any(axis=1).all()
        else (profiles - np.nanmedian(profiles))
    )
    speckle_sd = _robust_sd(deviations)
    if not np.isfinite(speckle_sd) or speckle_sd <= 0:
        return Refinement(np.zeros(n_points), np.zeros(n_points), ISOECHOIC, 0.0)

    # polarity: the contrast across the predicted boundary, over the contour and locally
    along = max(1, round(options.confidence_smoothing_mm / options.point_spacing_mm))
    at_prediction = np.nan_to_num(step_contrast[:, half] / speckle_sd)
    local_contrast = _circular_smooth(at_prediction, along)
    contrast = float(np.median(at_prediction))
    if contrast > options.contrast_threshold:
        polarity = HYPERECHOIC
        sign = np.ones(n_points, np.float32)
    elif contrast < -options.contrast_threshold:
        polarity = HYPOECHOIC
        sign = -np.ones(n_points, np.float32)
    else:
        # iso-echoic as a whole: trust a polarity only where the local step is strong (e.g. where
        # the tumor abuts an anechoic cyst or CSF); elsewhere accept an edge of either sign
        polarity = ISOECHOIC
        strong = np.abs(local_contrast) > 2.0 * options.confidence_contrast0 + 1.0
        sign = np.where(strong, np.sign(local_contrast), 0.0).astype(np.float32)

    # edge response: derivative along the outward normal (with the local polarity), z-scored
    band = slice(reach - half, reach + half + 1)
    derivative = np.gradient(profiles, axis=1)[:, band] / np.float32(step)
    noise = _robust_sd(derivative)
    if not np.isfinite(noise) or noise <= 0:
        return Refinement(np.zeros(n_points), np.zeros(n_points), polarity, contrast)
    edge = np.where(sign[:, None] != 0, -sign[:, None] * derivative, np.abs(derivative))
    reward = np.clip(edge / np.float32(noise), 0.0, 8.0).astype(np.float32)
    band_offsets = offsets_mm[band]
    penalty = (options.prior_weight * (band_offsets / options.band_mm) ** 2).astype(np.float32)
    cost = (penalty[None, :] - reward).astype(np.float32)
    cost[~np.isfinite(profiles[:, band])] = np.nan

    spacing_mm = _mean_spacing_mm(points_px) * mm_per_px
    max_step = max(1, int(np.ceil(options.max_slope * spacing_mm / step)))
    path = np.zeros(n_points, np.int64)
    _kernels.boundary_dp(cost, max_step, True, path)

    # sub-sample peak: parabola through the reward around the chosen offset
    rows = np.arange(n_points)
    q = np.clip(path, 1, 2 * half - 1)
    r0, r1, r2 = reward[rows, q - 1], reward[rows, q], reward[rows, q + 1]
    denom = r0 - 2 * r1 + r2
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(np.abs(denom) > 1e-6, 0.5 * (r0 - r2) / denom, 0.0)
    shift = np.where((path == q) & np.isfinite(shift), np.clip(shift, -0.5, 0.5), 0.0)
    offset_mm = band_offsets[path] + shift * step

    # confidence: the step across the observed boundary, averaged along the contour, against
    # the spread of that same statistic in the band away from the boundary found (its null
    # spread in this speckle: the speckle's correlation length is accounted for without
    # modelling it)
    smoothed_steps = _circular_smooth_rows(np.nan_to_num(step_contrast), along)
    away = np.abs(np.arange(2 * half + 1)[None, :] - path[:, None]) > window + gap + 1
    null_sd = _robust_sd(smoothed_steps[away])
    if not np.isfinite(null_sd) or null_sd <= 0:
        null_sd = float("inf")
    observed_z = smoothed_steps[rows, path] / null_sd
    # where the polarity is unknown the search took the strongest edge of either sign, so the
    # step found is biased upwards by the selection: ask for one more null SD
    agree = np.where(sign != 0, observed_z * sign, np.abs(observed_z) - 1.0)
    confidence = np.clip(
        (agree - options.confidence_contrast0)
        / (options.confidence_contrast1 - options.confidence_contrast0),
        0.0,
        1.0,
    )
    # an edge on the band's border is where the search ran out, not a found boundary
    at_border = (path == 0) | (path == 2 * half)
    confidence = np.where(at_border | ~np.isfinite(reward[rows, path]), 0.0, confidence)
    return Refinement(
        offset_mm.astype(np.float64), confidence.astype(np.float64), polarity, contrast
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


def _circular_smooth_rows(values: np.ndarray, half: int) -> np.ndarray:
    """Moving average along axis 0 (the closed contour), for every column."""
    n = values.shape[0]
    if n < 2 * half + 1:
        return values
    padded = np.concatenate([values[-half:], values, values[:half]], axis=0)
    csum = np.concatenate([np.zeros((1, values.shape[1])), np.cumsum(padded, axis=0)], axis=0)
    return (csum[2 * half + 1 :] - csum[:n]) / (2 * half + 1)
