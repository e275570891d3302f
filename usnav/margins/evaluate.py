"""Scoring margins against a known truth (for tests and ``usnav bench``)."""

from __future__ import annotations

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
