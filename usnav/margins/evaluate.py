"""Scoring margins against a known truth (for tests and ``usnav bench``)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from usnav.margins import _kernels
from usnav.margins.estimator import FrameMargins


def signed_distance_image(mask: np.ndarray, spacing_mm: tuple[float, float]) -> np.ndarray:
    """Signed distance to the boundary of ``mask`` at each pixel centre, mm (negative inside).

    The boundary is taken half-way between an inside and an outside pixel centre.
    """
    inside = np.asarray(mask, bool)
    sampling = (spacing_mm[1], spacing_mm[0])  # (rows, cols)
    half = 0.5 * min(spacing_mm)
    if not inside.any():
        return np.full(inside.shape, np.inf, np.float32)
    out = ndimage.distance_transform_edt(~inside, sampling=sampling) - half
    inn = ndimage.distance_transform_edt(inside, sampling=sampling) - half
    return np.where(inside, -inn, out).astype(np.float32)


def sample_at(image: np.ndarray, points_px: np.ndarray) -> np.ndarray:
    """Bilinear samples of a float image at (x = col, y = row) points; NaN outside."""
    out = np.empty((len(points_px), 1), np.float32)
    _kernels.sample_profiles(
        np.ascontiguousarray(image, np.float32),
        np.ascontiguousarray(points_px, np.float64),
        np.zeros((len(points_px), 2)),
        np.zeros(1),
        out,
    )
    return out[:, 0].astype(np.float64)


@dataclass(frozen=True)
class BoundaryScore:
    """Boundary errors of one frame against the truth (mm, absolute point-to-boundary).

    Attributes
    ----------
    predicted_mm
        Errors of the MRI-predicted boundary points.
    refined_mm
        Errors of the margin usnav reports as best: the ultrasound-observed point where the
        ultrasound supports it (confidence ≥ threshold), the prediction elsewhere.
    supported_predicted_mm, supported_observed_mm
        On the supported points only: the prediction's and the ultrasound's errors.
    supported_fraction
        Fraction of points supported.
    """

    predicted_mm: np.ndarray
    refined_mm: np.ndarray
    supported_predicted_mm: np.ndarray
    supported_observed_mm: np.ndarray
    supported_fraction: float


def score_margins(
    margins: FrameMargins,
    truth_masks: dict[str, np.ndarray],
    support_threshold: float = 0.5,
    per_structure: bool = False,
) -> BoundaryScore:
    """Compare a frame's contours with the true structures in the same frame.

    Parameters
    ----------
    margins
        The estimate.
    truth_masks
        Structure name (``"solid"``, ``"cyst"``) → bool (rows, cols) true region.
    support_threshold
        Confidence from which the ultrasound's point is used.
    per_structure
        False (default): score the tumor margin — the points that face tissue, against the
        boundary of the union of the true structures. True: every point of each structure's
        contours against that structure's true boundary.
    """
    distance: dict[str, np.ndarray] = {}
    if not per_structure:
        whole = np.zeros_like(next(iter(truth_masks.values())), bool)
        for m in truth_masks.values():
            whole |= np.asarray(m, bool)
        whole_sd = signed_distance_image(whole, margins.spacing_mm)
    pred, refined, sp, so, supp = [], [], [], [], []
    for contour in margins.contours:
        keep = np.ones(contour.n_points, bool)
        if per_structure:
            if contour.structure not in truth_masks:
                continue
            if contour.structure not in distance:
                distance[contour.structure] = signed_distance_image(
                    truth_masks[contour.structure], margins.spacing_mm
                )
            sd = distance[contour.structure]
        else:
            sd = whole_sd
            keep = contour.faces_tissue
        e_pred = np.abs(sample_at(sd, contour.predicted_px))[keep]
        e_obs = np.abs(sample_at(sd, contour.observed_px))[keep]
        ok = (contour.confidence >= support_threshold)[keep]
        pred.append(e_pred)
        refined.append(np.where(ok, e_obs, e_pred))
        sp.append(e_pred[ok])
        so.append(e_obs[ok])
        supp.append(ok)

    def cat(parts: list[np.ndarray]) -> np.ndarray:
        values = np.concatenate(parts) if parts else np.zeros(0)
        return values[np.isfinite(values)]

    every = np.concatenate(supp) if supp else np.zeros(0, bool)
    fraction = float(every.mean()) if every.size else 0.0
    return BoundaryScore(cat(pred), cat(refined), cat(sp), cat(so), fraction)


@dataclass(frozen=True)
class SimulatedFrames:
    """Frames of a simulated case with the truth a margin estimate is scored against.

    Attributes
    ----------
    label
        The preoperative tumor label map (``tumor_label.nii.gz``): what usnav knows.
    images
        (n, rows, cols) uint8 ultrasound frames.
    image_to_mri
        (n, 4, 4) tracked ImageToMri per frame, with the true ReferenceToMri (jitter included):
        what the pipeline would use after a perfect rigid registration.
    truth_codes
        (n, rows, cols) uint8: 1 solid tumor, 2 cyst, where they really are in each frame (the
        intraoperative anatomy, after the cord shift, resliced at the true image pose).
    echogenicity, has_cyst, cord_shift_mm
        The case's tumor look, whether it has a cyst, and its cord-shift magnitude.
    """

    label: object
    images: np.ndarray
    image_to_mri: np.ndarray
    truth_codes: np.ndarray
    echogenicity: str
    has_cyst: bool
    cord_shift_mm: float


def tumor_codes(anatomy_labels: np.ndarray) -> np.ndarray:
    """uint8 codes of a simulator anatomy label volume: 1 solid tumor, 2 cyst, 0 elsewhere."""
    from usnav.sim.tissues import Tissue

    labels = np.asarray(anatomy_labels)
    codes = np.zeros(labels.shape, np.uint8)
    codes[labels == Tissue.TUMOR] = 1
    codes[labels == Tissue.CYST] = 2
    return codes


def true_codes_in_frame(
    codes: np.ndarray, image_to_voxel: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """Where the tumor really is in one frame: (rows, cols) uint8, 1 solid, 2 cyst.

    ``codes`` as :func:`tumor_codes` gives; ``image_to_voxel`` maps pixel (col, row, 0, 1) to
    the code volume's voxel indices. A pixel takes the structure covering most of it, 0 where
    the tumor covers less than half of it.
    """
    fractions = np.zeros((2, *shape), np.float32)
    _kernels.reslice_label_fractions(
        np.ascontiguousarray(codes), np.asarray(image_to_voxel, np.float64), 2, fractions
    )
    truth = np.where(fractions.sum(axis=0) >= 0.5, np.argmax(fractions, axis=0) + 1, 0)
    return truth.astype(np.uint8)


def simulated_frames(
    seed: int,
    frames: int = 24,
    echogenicity: str = "random",
    workers: int = 2,
    family: str = "baseline",
) -> SimulatedFrames:
    """Simulate a case with :mod:`usnav.sim` (in memory) and collect frames with the truth.

    Parameters
    ----------
    seed
        Simulator seed.
    frames
        Frames in the sweep.
    echogenicity
        ``"random"``, ``"hyperechoic"`` or ``"isoechoic"``.
    workers
        Threads simulating frames.
    family
        Appearance family (``usnav simulate --list-families``).
    """
    from usnav.io.volume import Volume
    from usnav.sim.case import build_case, simulate_frames
    from usnav.sim.options import make_options

    options = make_options(
        frames=frames,
        workers=workers,
        save_anatomy=False,
        tumor_echogenicity=echogenicity,
        family=family,
    )
    case = build_case(seed, options)
    sweep, intra = case.sweep, case.intraop
    codes = tumor_codes(intra.labels)
    mri_to_voxel = np.linalg.inv(case.anatomy.spine_to_mri @ intra.index_to_spine())
    images, truths, tracked = [], [], []
    for i, image in enumerate(simulate_frames(case, workers)):
        truths.append(
            true_codes_in_frame(codes, mri_to_voxel @ sweep.true_image_to_mri[i], image.shape)
        )
        images.append(image)
        tracked.append(
            sweep.reference_to_mri
            @ np.linalg.inv(sweep.reference_to_tracker[i])
            @ sweep.probe_to_tracker[i]
            @ sweep.image_to_probe
        )
    label = case.mri.tumor_label
    return SimulatedFrames(
        label=Volume(label.data, label.affine, source=f"simulated case {seed}"),
        images=np.stack(images),
        image_to_mri=np.stack(tracked),
        truth_codes=np.stack(truths),
        echogenicity=str(case.anatomy.tumor.echogenicity),
        has_cyst=case.anatomy.tumor.cyst_center is not None,
        cord_shift_mm=float(case.anatomy.shift_mm),
    )


def score_stream(
    sim: SimulatedFrames,
    options=None,
    offset_mm: np.ndarray | None = None,
) -> BoundaryScore:
    """Run one estimator over a simulated stream (in order) and pool the margin scores.

    Parameters
    ----------
    sim
        The frames and truth.
    options
        :class:`~usnav.margins.MarginOptions` (defaults if None).
    offset_mm
        (3,) a registration error to add: every ImageToMri is shifted by it in MRI space.
    """
    from usnav.margins.estimator import MarginEstimator

    estimator = MarginEstimator(sim.label, options, warm_up=False)
    shift = np.eye(4)
    if offset_mm is not None:
        shift[:3, 3] = offset_mm
    threshold = estimator.options.support_threshold
    parts = []
    for image, image_to_mri, truth in zip(
        sim.images, sim.image_to_mri, sim.truth_codes, strict=True
    ):
        margins = estimator.estimate(image, shift @ image_to_mri, None)
        if margins.in_view and truth.any():
            parts.append(
                score_margins(margins, {"solid": truth == 1, "cyst": truth == 2}, threshold)
            )
    return pool_scores(parts)


def pool_scores(parts: list[BoundaryScore]) -> BoundaryScore:
    """Pool frame scores into one (point errors concatenated, support weighted by points)."""
    if not parts:
        empty = np.zeros(0)
        return BoundaryScore(empty, empty, empty, empty, 0.0)
    cat = np.concatenate
    n = [len(p.predicted_mm) for p in parts]
    return BoundaryScore(
        cat([p.predicted_mm for p in parts]),
        cat([p.refined_mm for p in parts]),
        cat([p.supported_predicted_mm for p in parts]),
        cat([p.supported_observed_mm for p in parts]),
        float(np.average([p.supported_fraction for p in parts], weights=n)),
    )


@dataclass(frozen=True)
class PointOutcomes:
    """Per margin point (facing tissue) of many frames: its raw and published confidence, and
    whether the ultrasound-observed point was closer to the true boundary than the
    MRI-predicted one.

    Attributes
    ----------
    raw, published
        (N,) the refinement's raw confidence and the calibrated one the estimator publishes.
    beat
        (N,) bool: the observed point's boundary error < the predicted point's.
    predicted_mm, observed_mm
        (N,) their boundary errors, mm.
    case
        (N,) int: the index of the point's case in the seeds collected (points of one case are
        not independent: bootstrap intervals resample cases).
    """

    raw: np.ndarray
    published: np.ndarray
    beat: np.ndarray
    predicted_mm: np.ndarray
    observed_mm: np.ndarray
    case: np.ndarray


def point_outcomes(
    seeds: list[int],
    *,
    frames: int = 24,
    max_offset_mm: float = 1.5,
    options=None,
    workers: int = 2,
    families: list[str] | None = None,
) -> PointOutcomes:
    """Run the estimator over simulated cases with random registration errors (uniform
    direction, magnitude uniform in 0..``max_offset_mm``, one per frame, seeded by the case)
    and collect every tissue-facing margin point's outcome against the truth. ``families``:
    the appearance family of each seed (default: baseline)."""
    from usnav.margins.estimator import MarginEstimator, calibrate_confidence
    from usnav.margins.options import MarginOptions

    opts = options or MarginOptions()
    uncalibrated = opts.model_copy(update={"confidence_calibration": None})
    raw_parts, pub_parts, pred_parts, obs_parts, case_parts = [], [], [], [], []
    for k, seed in enumerate(seeds):
        family = families[k] if families else "baseline"
        sim = simulated_frames(seed, frames=frames, workers=workers, family=family)
        estimator = MarginEstimator(sim.label, uncalibrated, warm_up=False)
        rng = np.random.default_rng(seed)
        for image, image_to_mri, truth in zip(
            sim.images, sim.image_to_mri, sim.truth_codes, strict=True
        ):
            direction = rng.normal(size=3)
            shift = np.eye(4)
            shift[:3, 3] = direction / np.linalg.norm(direction) * rng.uniform(0, max_offset_mm)
            margins = estimator.estimate(image, shift @ image_to_mri, None)
            if not (margins.in_view and truth.any()):
                continue
            whole = signed_distance_image(truth > 0, margins.spacing_mm)
            for contour in margins.contours:
                keep = contour.faces_tissue
                raw = contour.confidence[keep]
                pred_parts.append(np.abs(sample_at(whole, contour.predicted_px))[keep])
                obs_parts.append(np.abs(sample_at(whole, contour.observed_px))[keep])
                raw_parts.append(raw)
                pub_parts.append(calibrate_confidence(raw, opts.confidence_calibration))
                case_parts.append(np.full(raw.size, k, np.int32))

    def cat(parts: list[np.ndarray], dtype) -> np.ndarray:
        # no frame with both the margins and the true tumor in view (a sweep that misses
        # it): no points, not an error
        return np.concatenate(parts) if parts else np.zeros(0, dtype)

    pred, obs = cat(pred_parts, np.float64), cat(obs_parts, np.float64)
    ok = np.isfinite(pred) & np.isfinite(obs)
    return PointOutcomes(
        cat(raw_parts, np.float64)[ok],
        cat(pub_parts, np.float64)[ok],
        (obs < pred)[ok],
        pred[ok],
        obs[ok],
        cat(case_parts, np.int32)[ok],
    )


def fit_confidence_calibration(
    outcomes: PointOutcomes,
    seen_from: float = 0.5,
    bins: int = 6,
    groups: np.ndarray | None = None,
    min_group_points: int = 30,
) -> tuple[tuple[float, float], ...]:
    """(raw, calibrated) knots for :attr:`MarginOptions.confidence_calibration`.

    Above ``seen_from`` (the raw confidence from which a point may be shown as seen): the
    isotonic (monotone) fit of "the ultrasound's point beat the MRI's", summarised at ``bins``
    quantile bins — a seen point's confidence is the rate at which such points beat the MRI
    contour on the tuning data, and a bin that does not beat it more often than not falls
    below 0.5 (not seen). Below ``seen_from``: a ramp from 0 to just under 0.5 and the first
    bin's rate — these points are never shown as seen (low raw confidences beat the MRI on
    some tuning cases and lose badly on others), so their stated value is only "below the bar".

    ``groups`` (one label per point, e.g. the appearance family): the fit is made per group
    (groups with at least ``min_group_points`` points above ``seen_from``) and each bin states
    the **worst** group's rate — a confidence that holds on every tuning family, not on their
    mixture (the raw confidence means less on some appearances than on others).
    """
    from scipy.optimize import isotonic_regression

    seen = outcomes.raw >= seen_from
    order = np.argsort(outcomes.raw[seen], kind="stable")
    raw = outcomes.raw[seen][order]
    if raw.size == 0:
        return ((0.0, 0.0), (1.0, 0.0))
    beat = outcomes.beat[seen][order].astype(np.float64)
    labels = np.zeros(raw.size, int) if groups is None else np.asarray(groups)[seen][order]
    curves = []  # per group: its points' raw confidences and isotonic fit
    for label in np.unique(labels):
        mine = labels == label
        if groups is None or mine.sum() >= min_group_points:
            curves.append((raw[mine], isotonic_regression(beat[mine]).x))
    if not curves:
        return ((0.0, 0.0), (1.0, 0.0))
    edges = np.unique(np.quantile(raw, np.linspace(0, 1, bins + 1)))
    upper: list[tuple[float, float]] = []
    for k, (lo, hi) in enumerate(itertools.pairwise(edges)):
        inside = (raw >= lo) & ((raw < hi) if k < len(edges) - 2 else (raw <= hi))
        if not inside.any():
            continue
        centre = float(raw[inside].mean())
        rates = []
        for x, fitted in curves:
            there = (x >= lo) & ((x < hi) if k < len(edges) - 2 else (x <= hi))
            rates.append(fitted[there].mean() if there.any() else np.interp(centre, x, fitted))
        upper.append((centre, float(min(rates))))
    first = upper[0][1]
    knots = [(0.0, 0.0), (seen_from - 1e-3, min(0.49, first)), (seen_from, first)]
    for x, y in upper:
        if x > knots[-1][0] + 1e-4:
            knots.append((x, max(y, knots[-1][1])))
    if knots[-1][0] < 1.0:
        knots.append((1.0, knots[-1][1]))
    return tuple((round(x, 4), round(min(max(y, 0.0), 1.0), 4)) for x, y in knots)


def calibration_error(
    confidence: np.ndarray, outcome: np.ndarray, bins: int = 10, where: np.ndarray | None = None
) -> float:
    """Expected calibration error: the point-weighted mean |stated confidence − observed rate|
    over equal-width confidence bins (over the points ``where`` is true, default all)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    outcome = np.asarray(outcome, dtype=np.float64)
    if where is not None:
        confidence, outcome = confidence[where], outcome[where]
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = index == b
        if inside.any():
            total += inside.sum() * abs(confidence[inside].mean() - outcome[inside].mean())
    return float(total / max(1, confidence.size))
