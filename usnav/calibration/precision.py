"""Precision of an N-wire ``ImageToProbe``: a moving-block bootstrap over the calibration frames.

Frames: **Image** (px of the MF image: u = column, v = row, row 0 at the transducer face),
**Probe** (mm). Depth d = v × the row pixel size (mm below the image's top row, as
``usnav.registration.search.fov_depth_mm`` counts it).

The calibration's frames are resampled with replacement in blocks of consecutive frames and
ImageToProbe is refitted with the calibration's own solver
(:func:`usnav.calibration.spatial.solve_image_to_probe`) for every resample. The spread of the
refitted matrices around the fitted one gives, 95 %:

- how far each image point may be mapped (mm), on a grid over the whole image;
- the rotation of the image plane (degrees, the angle between the refitted and fitted
  rotations);
- the two numbers of the registration's error budget, ``calibration_error_mm`` and
  ``calibration_error_deg``: deg = the 95 % rotation, mm = the smallest offset such that
  ``mm + radians(deg)·d`` is at least the 95 % spread of every grid point at depth d.

Blocks, not single frames: the errors of a freehand sweep's frames are correlated (consecutive
frames share a pose, the tracker's and the segmentation's errors drift with it). On PLUS's fCal
recording the per-frame residuals have a lag-1 autocorrelation of 0.98; resampling single
frames then states a spread 5× smaller than blocks do. The block length is the Politis-White
AR(1) plug-in for the moving-block bootstrap, b = (3/2)^(1/3)·(2ρ/(1−ρ²))^(2/3)·n^(1/3), with ρ
the lag-1 autocorrelation of the per-frame mean residual vectors, capped at n/4 (at least four
blocks per resample); uncorrelated frames give b = 1, the plain frame bootstrap.

The bounds move with b (on PLUS's fCal recording paired 0.4 s later, blocks of 37 gave
1.77 mm and blocks of 42 2.20 mm), and the rule's b is a plug-in for the variance of a mean
under an AR(1) model, not for the 95th percentile of this statistic: it is known to a factor,
not exactly. So the bootstrap is run at b and at b/√2 and √2·b (rounded, within [1, n/4];
:func:`block_band`), and the stated bounds are the largest: the rotation is the largest 95th
percentile, and the offset the smallest for which the line covers every block length's 95 %
spread at every depth. Each block length's own bound is reported (``bounds_by_block``) as the
sensitivity to that choice.

This is PRECISION: the repeatability of the fit given the segmented wires and the tracked poses.
Errors common to every frame are not in it: the phantom's manufacture and its definition, the
phantom registration (PhantomToReference), a bias of the wire segmentation, the tracker's
accuracy. The validation recording is the check: the frames left out of each resample
predict the reprojection error (PRE3D) a new recording should show; a validation PRE3D above
the 95th percentile of that prediction means errors the bootstrap does not see, and the
stated ``calibration_error_mm`` and every named point's bound are then at least the
unexplained part of it.

Errors that drift along a sweep are one value in a short stretch of it, which no resampling
of the stretch shows: fewer than :data:`MIN_CORRELATED_FRAMES` frames with correlated
residuals are flagged as too few to state a bound (``too_few_frames``; on PLUS's sweep the
named points' bounds of 30-frame stretches covered their error in 3–49 % of them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from usnav.calibration.spatial import (
    PRECISION_REPLICATES,
    percentile_stats,
    reprojection_errors_mm,
    solve_image_to_probe,
)

#: Resamples by default.
REPLICATES = PRECISION_REPLICATES
#: The probability every stated bound is for.
COVERAGE = 0.95
#: Image points whose 95 % spread is reported: name → (u, v) as fractions of (cols−1, rows−1).
NAMED_POINTS: dict[str, tuple[float, float]] = {
    "origin": (0.0, 0.0),
    "top_centre": (0.5, 0.0),
    "centre": (0.5, 0.5),
    "bottom_left": (0.0, 1.0),
    "bottom_right": (1.0, 1.0),
}
#: Grid on which the budget's line must cover the spread: columns × rows.
GRID = (5, 33)
#: Fewest calibration frames with correlated residuals whose bounds are stated unflagged:
#: PLUS fCal's own number of calibration images (``NumberOfCalibrationImagesToAcquire`` in its
#: fCal 1.2 configuration), not fitted. On PLUS's sweep the named points' bounds of contiguous
#: stretches of 30 / 60 / 94 frames covered their distance from the whole recording's
#: calibration in 3–49 / 32–73 / 56–100 % of the stretches (docs/calibration.md).
MIN_CORRELATED_FRAMES = 140
#: Warn when more than this fraction of the resamples gave no calibration.
MAX_FAILED_FRACTION = 0.05
#: The rule's block length is taken as known to this factor either way (:func:`block_band`).
BLOCK_BAND_FACTOR = math.sqrt(2.0)
#: What every output says the numbers are.
PRECISION_ONLY = (
    "precision only (repeatability of the fit given the segmented wires and tracked poses): "
    "the phantom's geometry and registration, a wire-segmentation bias and the tracker's "
    "error are not in it"
)


@dataclass(frozen=True)
class CalibrationPrecision:
    """95 % bounds of how far the fitted ImageToProbe may be off, from the bootstrap.

    Attributes
    ----------
    calibration_error_mm, calibration_error_deg
        The numbers to state in ``[registration_budget]``: ``mm + radians(deg)·d`` (mm, d the
        depth below the image's top row in mm) covers the 95 % point spread at every depth of
        the image; when the validation recording shows more error than the bootstrap predicts,
        mm is at least that excess (``understated``).
    bootstrap_mm, bootstrap_deg
        The same from the bootstrap alone.
    translation_mm
        95 % spread of the image's top centre (depth 0), mm, Probe frame.
    rotation_deg
        95 % angle between a refitted and the fitted rotation of the image plane, degrees
        (= ``bootstrap_deg``).
    points_mm
        95 % spread of named image points (:data:`NAMED_POINTS`), mm; when the validation
        recording shows more error than the bootstrap predicts, at least that excess
        (``understated``), as ``calibration_error_mm``.
    depth_mm
        Depth of the image's bottom row below its top row, mm.
    image_size
        (cols, rows) px of the calibration images.
    frames
        Calibration frames resampled.
    block_frames
        Consecutive frames per resampled block: the rule's choice (:func:`block_length`).
    block_lengths, bounds_by_block
        Every block length resampled (the rule's first; :func:`block_band`) and, per block
        length, its own ``(mm, deg)`` bound from the bootstrap alone: how much the bound moves
        with that choice. The stated bounds cover all of them.
    residual_autocorrelation
        Lag-1 autocorrelation of the per-frame mean residual vectors (what chose the block).
    replicates, failed
        Resamples drawn per block length, and the most of them that gave no calibration at any
        block length (left out of the bounds).
    seed
        Seed of the resampling (the same input and seed give the same numbers).
    predicted_pre3d_mm
        Median and 95th percentile of the PRE3D (mean of the lowest 95 %, mm) of the frames
        left out of each resample under its refit: what a new recording should show.
    validation_pre3d_mm
        The validation recording's PRE3D (mean of the lowest 95 %), mm, if one was given.
    validation_excess_mm
        √(validation² − predicted median²) when the validation PRE3D exceeds the predicted 95th
        percentile (else 0): error at the wires that the bootstrap does not explain, mm.
    understated
        The validation recording shows more error than the bootstrap predicts.
    warnings
        Things to read before using the numbers.
    """

    calibration_error_mm: float
    calibration_error_deg: float
    bootstrap_mm: float
    bootstrap_deg: float
    translation_mm: float
    rotation_deg: float
    points_mm: dict[str, float]
    depth_mm: float
    image_size: tuple[int, int]
    frames: int
    block_frames: int
    residual_autocorrelation: float
    replicates: int
    failed: int
    seed: int
    predicted_pre3d_mm: tuple[float, float]
    validation_pre3d_mm: float | None = None
    validation_excess_mm: float | None = None
    understated: bool = False
    warnings: list[str] = field(default_factory=list)
    block_lengths: tuple[int, ...] = ()
    bounds_by_block: tuple[tuple[float, float], ...] = ()

    @property
    def too_few_frames(self) -> bool:
        """Fewer than :data:`MIN_CORRELATED_FRAMES` frames whose residuals are correlated
        (resampled in blocks): the errors that drift along a sweep are one value in a short
        stretch of it, which no resampling of that stretch can show, and on PLUS's sweep such
        calibrations' bounds did not cover their error (docs/calibration.md). The numbers are
        stated, and flag the calibration."""
        return self.block_frames > 1 and self.frames < MIN_CORRELATED_FRAMES

    @property
    def too_many_failed(self) -> bool:
        """More than :data:`MAX_FAILED_FRACTION` of the resamples gave no calibration: the
        fit depends on a few frames and the bounds, which leave those out, under-state."""
        return self.failed > MAX_FAILED_FRACTION * self.replicates

    def bound_mm(self, depth_mm: float | np.ndarray) -> float | np.ndarray:
        """The stated 95 % bound at depth d below the image's top row, mm."""
        return self.calibration_error_mm + math.radians(self.calibration_error_deg) * np.asarray(
            depth_mm, dtype=np.float64
        )

    def budget(self) -> dict[str, float]:
        """The ``[registration_budget]`` entries (rounded up to 0.01 so they still cover)."""
        return {
            "calibration_error_mm": _ceil2(self.calibration_error_mm),
            "calibration_error_deg": _ceil2(self.calibration_error_deg),
        }

    def budget_snippet(self) -> str:
        """A ready-to-paste ``[registration_budget]`` table, with what it does not cover."""
        b = self.budget()
        lines = [
            f"# usnav calibrate spatial: calibration {PRECISION_ONLY}.",
            "# A file stating [registration_budget] must also state [display] margin_error_mm.",
        ]
        if self.too_few_frames:
            lines.append(
                "# too few calibration frames to state a bound (the residuals drift over more "
                "than a quarter of them): these numbers under-state"
            )
        if self.understated:
            lines.append(
                "# the validation recording showed more error than the bootstrap predicts: "
                "calibration_error_mm includes that excess"
            )
        lines += [
            "[registration_budget]",
            f"calibration_error_mm = {b['calibration_error_mm']:.2f}",
            f"calibration_error_deg = {b['calibration_error_deg']:.2f}",
        ]
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict:
        """JSON-ready (``precision`` of ``usnav calibrate spatial --json``)."""
        return {
            "calibration_error_mm": self.calibration_error_mm,
            "calibration_error_deg": self.calibration_error_deg,
            "bootstrap_mm": self.bootstrap_mm,
            "bootstrap_deg": self.bootstrap_deg,
            "translation_mm": self.translation_mm,
            "rotation_deg": self.rotation_deg,
            "points_mm": dict(self.points_mm),
            "depth_mm": self.depth_mm,
            "image_size": list(self.image_size),
            "frames": self.frames,
            "block_frames": self.block_frames,
            "too_few_frames": self.too_few_frames,
            "bounds_by_block": [
                {"block_frames": b, "bootstrap_mm": mm, "bootstrap_deg": deg}
                for b, (mm, deg) in zip(self.block_lengths, self.bounds_by_block, strict=True)
            ],
            "residual_autocorrelation": self.residual_autocorrelation,
            "replicates": self.replicates,
            "failed": self.failed,
            "seed": self.seed,
            "predicted_pre3d_mm": list(self.predicted_pre3d_mm),
            "validation_pre3d_mm": self.validation_pre3d_mm,
            "validation_excess_mm": self.validation_excess_mm,
            "understated": self.understated,
            "coverage": COVERAGE,
            "note": PRECISION_ONLY,
            "warnings": list(self.warnings),
        }


def _ceil2(x: float) -> float:
    return math.ceil(round(x * 100.0, 6)) / 100.0


def residual_autocorrelation(
    image_to_probe: np.ndarray, image_points: np.ndarray, probe_points: np.ndarray
) -> float:
    """Lag-1 autocorrelation of the per-frame mean residual vectors (Probe frame, mm).

    Parameters
    ----------
    image_to_probe
        4×4, Image px → Probe mm.
    image_points
        Middle-wire dots, (frames, patterns, 2) px, in recording order.
    probe_points
        Their Probe positions, (frames, patterns, 3) mm.

    Returns
    -------
    float
        Σ (r_i − r̄)·(r_{i+1} − r̄) / Σ |r_i − r̄|² (0 with fewer than 3 frames or no residual).
    """
    uv = np.asarray(image_points, dtype=np.float64)
    pr = np.asarray(probe_points, dtype=np.float64)
    n = uv.shape[0]
    if n < 3:
        return 0.0
    mapped = uv @ image_to_probe[:3, :2].T + image_to_probe[:3, 3]
    r = (mapped - pr).reshape(n, -1, 3).mean(axis=1)
    r = r - r.mean(axis=0)
    denominator = float((r * r).sum())
    if denominator <= 0.0:
        return 0.0
    return float((r[:-1] * r[1:]).sum() / denominator)


def block_length(rho: float, frames: int) -> int:
    """Moving-block length for ``frames`` frames whose residuals have lag-1 autocorrelation ρ.

    Politis & White (2004, corrected 2009) for an AR(1) series and the moving/circular block
    bootstrap: b = (3/2)^(1/3)·(2ρ/(1−ρ²))^(2/3)·n^(1/3), ρ clipped to [0, 0.99], rounded,
    within [1, max(1, n // 4)].
    """
    r = min(max(float(rho), 0.0), 0.99)
    b = (1.5 ** (1 / 3)) * (2 * r / (1 - r * r)) ** (2 / 3) * frames ** (1 / 3)
    return int(min(max(1, round(b)), max(1, frames // 4)))


def block_band(block: int, frames: int) -> tuple[int, ...]:
    """The block lengths resampled around the rule's ``block``: it, ``block/√2`` and
    ``√2·block`` (:data:`BLOCK_BAND_FACTOR`), rounded, within [1, max(1, frames // 4)], without
    repeats, the rule's first. Uncorrelated frames (``block`` 1) give (1,)."""
    cap = max(1, frames // 4)
    around = (block / BLOCK_BAND_FACTOR, block * BLOCK_BAND_FACTOR)
    band = [block] + [int(min(max(1, round(b)), cap)) for b in around]
    return tuple(dict.fromkeys(band))


def _resample(rng: np.random.Generator, n: int, block: int) -> np.ndarray:
    """Frame indices of one moving-block resample (n of them)."""
    if block <= 1:
        return rng.integers(0, n, n)
    starts = rng.integers(0, n - block + 1, -(-n // block))
    return (starts[:, None] + np.arange(block)).ravel()[:n]


def _rotations(matrices: np.ndarray) -> Rotation:
    """The image plane's rotation of ImageToProbe matrices (k, 4, 4): unit columns, nearest
    rotation."""
    a = matrices[:, :3, :3]
    return Rotation.from_matrix(a / np.linalg.norm(a, axis=1, keepdims=True))


def _grid(image_size: tuple[int, int]) -> np.ndarray:
    """Homogeneous image points (4, GRID[0]·GRID[1]) px, rows (depths) varying slowest."""
    cols, rows = image_size
    u = np.linspace(0.0, cols - 1.0, GRID[0])
    v = np.linspace(0.0, rows - 1.0, GRID[1])
    uu, vv = np.meshgrid(u, v)
    k = uu.size
    return np.stack([uu.ravel(), vv.ravel(), np.zeros(k), np.ones(k)])


def calibration_precision(
    image_to_probe: np.ndarray,
    image_points: np.ndarray,
    probe_points: np.ndarray,
    image_size: tuple[int, int],
    *,
    validation_pre3d_mm: float | None = None,
    replicates: int = REPLICATES,
    block_frames: int | None = None,
    seed: int = 0,
) -> CalibrationPrecision:
    """95 % precision of a fitted ImageToProbe by a moving-block bootstrap over its frames.

    Parameters
    ----------
    image_to_probe
        The fitted 4×4 (Image px → Probe mm) of ``image_points``/``probe_points``.
    image_points
        Middle-wire dots of the calibration frames in recording order, (frames, patterns, 2)
        px (MF image).
    probe_points
        Their positions in the Probe frame, (frames, patterns, 3) mm.
    image_size
        (cols, rows) px of the calibration images: the bounds cover the whole image.
    validation_pre3d_mm
        The validation recording's PRE3D (mean of the lowest 95 %, mm), compared with what the
        bootstrap predicts.
    replicates
        Resamples (each one refit).
    block_frames
        Consecutive frames per block; None: from the residuals' autocorrelation
        (:func:`block_length`), and the bounds the largest over :func:`block_band` around it
        (the resamples drawn once per block length).
    seed
        Seed of the resampling.

    Returns
    -------
    CalibrationPrecision

    Raises
    ------
    ValueError
        Fewer than 2 frames, fewer than 20 resamples, an empty image, NaN or infinite input, or
        fewer than 20 resamples that gave a calibration.
    """
    m = np.asarray(image_to_probe, dtype=np.float64)
    uv = np.asarray(image_points, dtype=np.float64)
    pr = np.asarray(probe_points, dtype=np.float64)
    n = uv.shape[0]
    cols, rows = int(image_size[0]), int(image_size[1])
    if n < 2:
        raise ValueError(f"{n} frames: the bootstrap needs at least 2")
    if replicates < 20:
        raise ValueError(f"{replicates} resamples: at least 20 are needed")
    if cols < 1 or rows < 1:
        raise ValueError(f"empty image ({cols} x {rows} px)")
    for name, values in (("ImageToProbe", m), ("image points", uv), ("probe points", pr)):
        if not np.all(np.isfinite(values)):
            raise ValueError(f"the {name} have NaN or infinite values")
    if validation_pre3d_mm is not None and not (
        math.isfinite(validation_pre3d_mm) and validation_pre3d_mm >= 0
    ):
        raise ValueError(
            f"the validation PRE3D must be a finite mm value, got {validation_pre3d_mm}"
        )
    rho = residual_autocorrelation(m, uv, pr)
    if block_frames is None:
        block = block_length(rho, n)
        blocks = block_band(block, n)
    else:
        block = int(min(max(1, block_frames), n))
        blocks = (block,)
    rng = np.random.default_rng(seed)
    grid = _grid((cols, rows))
    row_mm = float(np.linalg.norm(m[:3, 1]))
    depth = grid[1] * row_mm
    named = np.array(
        [[fu * (cols - 1), fv * (rows - 1), 0.0, 1.0] for fu, fv in NAMED_POINTS.values()]
    ).T
    runs: list[_Run] = []
    failed = 0
    for b in blocks:  # the rule's first: its resamples are those of a single block length
        run = _bootstrap(rng, m, uv, pr, b, replicates, grid, named)
        failed = max(failed, run.failed)
        if run.fits < 20:
            if b == block:
                raise ValueError(f"only {run.fits} of {replicates} resamples gave a calibration")
            continue  # a block length around the rule's that cannot be resampled: left out
        runs.append(run)
    rotation_deg = max(r.rotation_deg for r in runs)
    s95 = np.max([r.grid_mm for r in runs], axis=0)
    bootstrap_mm = _offset_mm(s95, rotation_deg, depth)
    points = {k: float(max(r.named_mm[j] for r in runs)) for j, k in enumerate(NAMED_POINTS)}
    by_block = tuple((_offset_mm(r.grid_mm, r.rotation_deg, depth), r.rotation_deg) for r in runs)
    held_out = runs[0].held_out  # the rule's: what a new recording should show
    predicted = (
        (float(np.median(held_out)), float(np.quantile(held_out, COVERAGE)))
        if held_out
        else (math.nan, math.nan)
    )
    warnings: list[str] = []
    if failed > MAX_FAILED_FRACTION * replicates:
        warnings.append(
            f"{failed} of {replicates} resamples gave no calibration: the fit depends on a few "
            "frames; the bounds leave those resamples out and under-state"
        )
    if block > 1:
        warnings.append(
            f"the calibration frames' residuals are correlated (lag-1 autocorrelation "
            f"{rho:.2f}): resampled in blocks of {block} consecutive frames"
        )
    if block > 1 and n < MIN_CORRELATED_FRAMES:
        warnings.append(
            f"too few frames to state a bound: {n} frames whose residuals are correlated "
            f"(fewer than {MIN_CORRELATED_FRAMES}, the calibration images PLUS fCal "
            "acquires): errors that drift along the sweep are one value in so short a "
            "stretch, which no resampling of it shows, so its bounds under-state; record a "
            "longer calibration sweep"
        )
    excess = None
    understated = False
    stated_mm = bootstrap_mm
    if validation_pre3d_mm is not None and math.isfinite(predicted[1]):
        excess = 0.0
        if validation_pre3d_mm > predicted[1]:
            understated = True
            excess = math.sqrt(max(0.0, validation_pre3d_mm**2 - predicted[0] ** 2))
            stated_mm = max(bootstrap_mm, excess)
            # error at the wires the bootstrap does not see: no image point is known better
            points = {k: max(v, excess) for k, v in points.items()}
            warnings.append(
                f"the validation PRE3D ({validation_pre3d_mm:.2f} mm) exceeds what the bootstrap "
                f"predicts ({predicted[0]:.2f} mm, 95 %: {predicted[1]:.2f} mm): errors the "
                f"calibration frames do not show; the bootstrap under-states, and "
                f"calibration_error_mm and every point's bound are at least the unexplained "
                f"{excess:.2f} mm"
            )
    return CalibrationPrecision(
        calibration_error_mm=stated_mm,
        calibration_error_deg=rotation_deg,
        bootstrap_mm=bootstrap_mm,
        bootstrap_deg=rotation_deg,
        translation_mm=points["top_centre"],
        rotation_deg=rotation_deg,
        points_mm=points,
        depth_mm=(rows - 1) * row_mm,
        image_size=(cols, rows),
        frames=n,
        block_frames=block,
        residual_autocorrelation=rho,
        replicates=replicates,
        failed=failed,
        seed=seed,
        predicted_pre3d_mm=predicted,
        validation_pre3d_mm=validation_pre3d_mm,
        validation_excess_mm=excess,
        understated=understated,
        warnings=warnings,
        block_lengths=tuple(r.block for r in runs),
        bounds_by_block=by_block,
    )


@dataclass(frozen=True)
class _Run:
    """One block length's bootstrap: 95th percentiles of the rotation (deg), of every grid
    point's and named point's spread (mm), the held-out PRE3Ds (mm), refits and failures."""

    block: int
    rotation_deg: float
    grid_mm: np.ndarray
    named_mm: np.ndarray
    held_out: list[float]
    fits: int
    failed: int


def _bootstrap(
    rng: np.random.Generator,
    m: np.ndarray,
    uv: np.ndarray,
    pr: np.ndarray,
    block: int,
    replicates: int,
    grid: np.ndarray,
    named: np.ndarray,
) -> _Run:
    """``replicates`` moving-block resamples (blocks of ``block`` frames), each refitted."""
    n = uv.shape[0]
    fits: list[np.ndarray] = []
    held_out: list[float] = []
    failed = 0
    for _ in range(replicates):
        idx = _resample(rng, n, block)
        try:
            fit, _ = solve_image_to_probe(uv[idx], pr[idx])
        except ValueError:
            failed += 1
            continue
        if not np.all(np.isfinite(fit)):
            failed += 1
            continue
        fits.append(fit)
        out = np.setdiff1d(np.arange(n), idx, assume_unique=False)
        if out.size:
            held_out.append(percentile_stats(reprojection_errors_mm(fit, uv[out], pr[out])).mean)
    if len(fits) < 20:
        empty = np.zeros(0)
        return _Run(block, math.nan, empty, empty, held_out, len(fits), failed)
    stack = np.stack(fits)
    angles = np.degrees((_rotations(stack) * _rotations(m[None]).inv()).magnitude())
    spread = np.linalg.norm((stack @ grid - (m @ grid)[None])[:, :3], axis=1)
    named_spread = np.linalg.norm((stack @ named - (m @ named)[None])[:, :3], axis=1)
    return _Run(
        block,
        float(np.quantile(angles, COVERAGE)),
        np.quantile(spread, COVERAGE, axis=0),
        np.quantile(named_spread, COVERAGE, axis=0),
        held_out,
        len(fits),
        failed,
    )


def _offset_mm(s95: np.ndarray, rotation_deg: float, depth_mm: np.ndarray) -> float:
    """The smallest mm with ``mm + radians(deg)·d`` ≥ the 95 % spread at every grid point."""
    return float(max(0.0, (s95 - math.radians(rotation_deg) * depth_mm).max()))
