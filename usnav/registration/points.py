"""Paired-point rigid registration (fiducials, landmarks) with FRE and expected TRE.

The least-squares rigid fit is the SVD solution of Arun, Huang & Blostein (1987) with
Umeyama's (1991) reflection guard, weights allowed. The expected target registration error
follows Fitzpatrick, West & Maurer (1998):

    ⟨TRE²(r)⟩ ≈ ⟨FLE²⟩ / N · (1 + ⅓ Σₖ dₖ² / fₖ²)

with dₖ the distance of the target from the k-th principal axis of the fiducial
configuration and fₖ the RMS distance of the fiducials from that axis. When the fiducial
localisation error (FLE) is not given it is estimated from the fit:
⟨FLE²⟩ ≈ ⟨FRE²⟩ · N / (N − 2).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from usnav.errors import InputError

LPS_TO_RAS_3 = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class PointRegistration:
    """Result of a paired-point rigid fit.

    Attributes
    ----------
    moving_to_fixed
        4×4 rigid, moving mm → fixed mm (e.g. ``ReferenceToMri`` when the moving points were
        touched in the Reference frame and the fixed ones picked in the MRI).
    residuals_mm
        (N,) distance of each mapped moving point from its fixed partner (the per-point FRE).
    fre_rms_mm
        Root-mean-square fiducial registration error.
    fle_rms_mm
        The fiducial localisation error used for the TRE estimate (given or estimated).
    fixed_points
        (N, 3) the fixed fiducials (for the TRE estimate).
    """

    moving_to_fixed: np.ndarray
    residuals_mm: np.ndarray
    fre_rms_mm: float
    fle_rms_mm: float
    fixed_points: np.ndarray

    def expected_tre_mm(self, targets_fixed: np.ndarray) -> np.ndarray:
        """Expected RMS TRE (Fitzpatrick 1998) at ``targets_fixed`` (M, 3) fixed-frame mm."""
        return expected_tre(self.fixed_points, np.atleast_2d(targets_fixed), self.fle_rms_mm)


def fit_rigid(
    moving: np.ndarray, fixed: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """Least-squares rigid transform (4×4) mapping ``moving`` (N, 3) onto ``fixed`` (N, 3).

    Raises
    ------
    ValueError
        Fewer than 3 pairs, mismatched shapes, non-finite values, or collinear points.
    """
    a = np.asarray(moving, dtype=np.float64)
    b = np.asarray(fixed, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"need two (N, 3) arrays of paired points, got {a.shape} and {b.shape}")
    if a.shape[0] < 3:
        raise ValueError(f"need at least 3 point pairs, got {a.shape[0]}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("points contain NaN or infinite values")
    w = np.ones(len(a)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(a),) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be N non-negative numbers, not all zero")
    w = w / w.sum()
    with np.errstate(over="ignore", invalid="ignore"):
        ca = w @ a
        cb = w @ b
        h = (a - ca).T @ ((b - cb) * w[:, None])
    if not np.all(np.isfinite(h)):
        # LAPACK's SVD of a matrix holding inf never returns (1e308 mm coordinates hung
        # register-points at 100 % CPU): refuse before it
        raise ValueError("the point coordinates are too large (their products overflow)")
    u, s, vt = np.linalg.svd(h)
    if s[1] < 1e-9 * max(s[0], 1e-300):
        raise ValueError("the points are collinear (or coincide): the rotation is undetermined")
    d = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
    r = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = cb - r @ ca
    return m


def expected_tre(fiducials: np.ndarray, targets: np.ndarray, fle_rms_mm: float) -> np.ndarray:
    """Fitzpatrick's expected RMS TRE at ``targets`` (M, 3) for ``fiducials`` (N, 3)."""
    f = np.asarray(fiducials, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    n = len(f)
    centroid = f.mean(axis=0)
    _, _, vt = np.linalg.svd(f - centroid)
    fc = (f - centroid) @ vt.T  # fiducials in the principal axes
    tc = (t - centroid) @ vt.T
    ratio = np.zeros(len(t))
    for k in range(3):
        others = [j for j in range(3) if j != k]
        f_k2 = np.mean(np.sum(fc[:, others] ** 2, axis=1))  # mean squared distance from axis k
        d_k2 = np.sum(tc[:, others] ** 2, axis=1)
        ratio += d_k2 / max(f_k2, 1e-12)
    return np.sqrt(fle_rms_mm**2 / n * (1.0 + ratio / 3.0))


def register_points(
    moving: np.ndarray,
    fixed: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    fle_mm: float | None = None,
    source: str = "points",
) -> PointRegistration:
    """Rigid paired-point registration with its FRE and the data for an expected TRE.

    Parameters
    ----------
    moving, fixed
        (N, 3) paired points, mm (e.g. Reference and MRI RAS).
    weights
        Optional per-pair weights.
    fle_mm
        Fiducial localisation error (RMS, mm) if known; else estimated from the FRE (needs at
        least 4 pairs).
    source
        Named in error messages.

    Raises
    ------
    InputError
        Too few or degenerate points.
    """
    try:
        m = fit_rigid(moving, fixed, weights)
    except ValueError as exc:
        raise InputError(source, str(exc), "give at least 3 non-collinear point pairs") from exc
    a = np.asarray(moving, dtype=np.float64)
    b = np.asarray(fixed, dtype=np.float64)
    mapped = a @ m[:3, :3].T + m[:3, 3]
    residuals = np.linalg.norm(mapped - b, axis=1)
    fre = float(np.sqrt(np.mean(residuals**2)))
    n = len(a)
    if fle_mm is None:
        fle = fre * np.sqrt(n / (n - 2)) if n > 3 else float("nan")
    else:
        fle = float(fle_mm)
    return PointRegistration(m, residuals, fre, float(fle), b.copy())


# ----------------------------------------------------------------------------- point files


def read_tag_file(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an MNI ``.tag`` file with two volumes: returns (points of volume 1, of volume 2).

    Each point line is ``x1 y1 z1 x2 y2 z2 [weight id "label"]``; the list ends with ``;``.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(p, f"cannot read: {exc}") from exc
    if "Points" not in text:
        raise InputError(p, "not an MNI tag file (no 'Points =' section)")
    if not re.search(r"Volumes\s*=\s*2", text):
        raise InputError(p, "the tag file does not hold point pairs (Volumes = 2)")
    body = text.split("Points", 1)[1].split("=", 1)[1]
    rows = []
    for line in body.replace(";", "\n").splitlines():
        fields = line.split('"')[0].split()
        if not fields:
            continue
        if len(fields) < 6:  # a damaged pair, not a blank line: never dropped silently
            raise InputError(
                p,
                f"point line with {len(fields)} numbers, expected 6 (x1 y1 z1 x2 y2 z2): "
                f"{line.strip()!r}",
                "complete or remove the line",
            )
        try:
            rows.append([float(v) for v in fields[:6]])
        except ValueError as exc:
            raise InputError(p, f"bad point line: {line.strip()!r}") from exc
    if not rows:
        raise InputError(p, "no points in the tag file")
    arr = np.array(rows)
    return arr[:, :3], arr[:, 3:6]


def read_points(path: str | Path) -> np.ndarray:
    """Read a point list as RAS mm: a text/CSV file of ``x y z`` rows, a 3D Slicer markups
    ``.fcsv`` (LPS converted) or ``.mrk.json``."""
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such file")
    if p.is_dir():
        raise InputError(p, "is a folder", "give a point file (.txt, .csv, .fcsv, .mrk.json)")
    name = p.name.lower()
    text = p.read_text(encoding="utf-8", errors="replace")
    if name.endswith(".json"):
        return _read_markups_json(p, text)
    lps = False
    rows = []
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        if s.startswith("#"):
            low = s.lower().replace(" ", "")
            if "coordinatesystem=" in low:
                # Slicer 4.11+ writes RAS or LPS; older versions 0 (RAS), 1 (LPS), 2 (IJK)
                system = low.split("coordinatesystem=", 1)[1]
                if system not in ("ras", "0", "lps", "1"):
                    raise InputError(
                        p,
                        f"points in coordinate system {s.split('=', 1)[1].strip()!r}, not RAS "
                        "or LPS (world mm)",
                        "export the markups again from 3D Slicer (they are saved in LPS)",
                    )
                lps = system in ("lps", "1")
            continue
        fields = [v for v in s.replace(",", " ").split()]
        try:
            if name.endswith(".fcsv"):
                vals = [float(v) for v in s.split(",")[1:4]]
            else:
                vals = [float(v) for v in fields[:3]]
        except ValueError as exc:
            raise InputError(p, f"bad point line: {s!r}", "expected x y z per line (mm)") from exc
        if len(vals) != 3:
            raise InputError(p, f"bad point line: {s!r}", "expected x y z per line (mm)")
        rows.append(vals)
    if not rows:
        raise InputError(p, "no points found")
    arr = np.array(rows)
    return arr @ LPS_TO_RAS_3 if lps else arr


def _read_markups_json(p: Path, text: str) -> np.ndarray:
    try:
        doc = json.loads(text)
        markups = doc["markups"]
        rows = []
        for m in markups:
            system = str(m.get("coordinateSystem", "LPS")).upper()
            for cp in m.get("controlPoints", []):
                status = str(cp.get("positionStatus", "defined")).lower()
                if status != "defined":
                    # Slicer keeps a point not placed yet (or being placed) at a dummy position
                    name = cp.get("label") or cp.get("id") or f"#{len(rows) + 1}"
                    raise InputError(
                        p,
                        f"control point {name} is not placed (positionStatus {status}): its "
                        "position is no landmark, and leaving it out would pair the points "
                        "after it with the wrong ones",
                        "place it in 3D Slicer or delete it from the markups, then save again",
                    )
                pos = np.asarray(cp["position"], dtype=float)
                rows.append(pos @ LPS_TO_RAS_3 if system == "LPS" else pos)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(p, f"not a 3D Slicer markups file: {exc}") from exc
    if not rows:
        raise InputError(p, "no control points in the markups file")
    return np.array(rows)
