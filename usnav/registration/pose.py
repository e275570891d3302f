"""The rigid correction the search moves, distances between poses, and the local optimiser.

``ReferenceToMri(p) = T(c + t) · R(r) · T(−c) · ReferenceToMri₀`` with ``p = (t mm, r degrees as
a rotation vector)`` about the sweep's centre ``c`` (MRI mm), so translation and rotation are
decoupled at the ultrasound.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize
from scipy.spatial.transform import Rotation

from usnav.registration.similarity import FrameLevel


def correction(params: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """4×4 rigid correction for ``params`` = (t mm, rotation vector in degrees) about
    ``centre`` (MRI mm)."""
    p = np.asarray(params, dtype=np.float64)
    r = Rotation.from_rotvec(np.radians(p[3:6])).as_matrix()
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = centre - r @ centre + p[:3]
    return m


def mean_displacement(a: np.ndarray, b: np.ndarray, points: np.ndarray) -> float:
    """Mean distance between ``a·x`` and ``b·x`` over ``points`` (N, 3), mm."""
    if len(points) == 0:
        return float("nan")
    h = np.c_[points, np.ones(len(points))]
    return float(np.linalg.norm((h @ a.T - h @ b.T)[:, :3], axis=1).mean())


def _optimise(
    cost: Callable[[np.ndarray], float],
    x0: np.ndarray,
    step: np.ndarray,
    max_evaluations: int,
    xtol: float,
) -> tuple[np.ndarray, float, int]:
    """Nelder–Mead (scipy) from ``x0`` with an initial simplex of ``step`` per axis."""
    simplex = np.vstack([x0, x0 + np.diag(step)])
    res = minimize(
        cost,
        x0,
        method="Nelder-Mead",
        options={
            "initial_simplex": simplex,
            "xatol": xtol,
            "fatol": 1e-5,
            "maxfev": max_evaluations,
            "adaptive": False,
        },
    )
    return np.asarray(res.x), float(res.fun), int(res.nfev)


def _paired_gain(new_scores: np.ndarray, old_scores: np.ndarray) -> tuple[float, float]:
    """Mean per-frame gain of ``new`` over ``old`` and its paired t statistic (frames where
    both are finite)."""
    both = np.isfinite(new_scores) & np.isfinite(old_scores)
    gain = new_scores[both] - old_scores[both]
    if gain.size == 0:
        return float("nan"), 0.0
    if gain.size > 2 and gain.std() > 0:
        return float(gain.mean()), float(gain.mean() / (gain.std(ddof=1) / np.sqrt(gain.size)))
    return float(gain.mean()), (np.inf if gain.mean() > 0 else 0.0)


def _subset_level(frames: FrameLevel, idx: np.ndarray) -> FrameLevel:
    return FrameLevel(
        frames.spacing_mm,
        frames.us[idx],
        frames.us_grad[idx],
        frames.valid[idx],
        frames.pixel_to_reference[idx],
        frames.frame_index[idx],
    )


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:3, :3].T + m[:3, 3]
