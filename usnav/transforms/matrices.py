"""Small helpers on 4×4 homogeneous matrices (mm)."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def invert(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 4×4 homogeneous matrix (general, so scaled matrices work too)."""
    return np.linalg.inv(np.asarray(matrix, dtype=np.float64))


def is_rigid(matrix: np.ndarray, tol: float = 1e-3) -> bool:
    """True if the upper 3×3 is a rotation (orthonormal, det +1) and the last row is 0 0 0 1."""
    m = np.asarray(matrix, dtype=np.float64)
    r = m[:3, :3]
    return bool(
        np.allclose(r.T @ r, np.eye(3), atol=tol)
        and np.linalg.det(r) > 0
        and np.allclose(m[3], [0, 0, 0, 1], atol=1e-9)
    )


#: Largest |RᵀR − I| entry of a tracker pose still taken as rigid: a pose written with 4
#: decimals is ~1e-4 off; a scale or shear of 0.5 % is not a pose.
POSE_RIGID_TOL = 1e-2


def may_scale(name: str) -> bool:
    """Whether transform ``name`` (PLUS's ``FromToTo``) may carry a scale: only one from the
    image (``ImageToProbe``, ``ImageToReference``: its columns are mm per pixel). Every other
    is a tracker pose and must be rigid."""
    return name.startswith("Image")


def rigid_poses(matrices: np.ndarray, tol: float = POSE_RIGID_TOL) -> np.ndarray:
    """Per matrix of an (..., 4, 4) stack: finite, rotation part orthonormal with det +1
    (within ``tol``) and last row 0 0 0 1 (bool array of the stack's shape)."""
    m = np.asarray(matrices, dtype=np.float64)
    finite = np.asarray(np.isfinite(m).all(axis=(-2, -1)))
    m = np.where(finite[..., None, None], m, np.eye(4))
    r = m[..., :3, :3]
    gram = np.einsum("...ji,...jk->...ik", r, r)
    orthonormal = (np.abs(gram - np.eye(3)) <= tol).all(axis=(-2, -1))
    last_row = (np.abs(m[..., 3, :] - np.array([0.0, 0.0, 0.0, 1.0])) <= 1e-9).all(axis=-1)
    return finite & orthonormal & (np.linalg.det(r) > 0) & last_row


#: Largest deviation of a calibration's image axes from perpendicular, degrees. PLUS warns from
#: 1°, but real PLUS calibrations reach ~3° (the SpinePhantom one is 2.7° off); a larger skew
#: means a wrong matrix, not a calibration. Every reader of ``ImageToProbe`` takes this one
#: limit, so that a calibration the loader accepted is never refused later (session 43: the
#: registration worker allowed 1° and refused PLUS's own SpinePhantom calibration at start).
MAX_AXIS_SKEW_DEG = 5.0


def decompose_scaled_rigid(
    matrix: np.ndarray, tol_deg: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split ``M = [R·diag(s) | t]`` into rotation R (3×3), scales s (3,), translation t (3,).

    This is the shape of a calibration ``ImageToProbe`` (columns = axis direction × mm per
    pixel). Raises ``ValueError`` if the columns are not perpendicular within ``tol_deg``,
    a scale is not positive, or the last row is not 0 0 0 1.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise ValueError("not a finite 4×4 matrix")
    if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-6):
        raise ValueError("last row is not 0 0 0 1 (projective matrices are not calibrations)")
    a = m[:3, :3]
    scales = np.linalg.norm(a, axis=0)
    if np.any(scales <= 1e-12):
        raise ValueError("a column has zero length (degenerate scale)")
    r = a / scales
    cosines = np.abs(r.T @ r - np.eye(3))
    if np.degrees(np.arcsin(np.clip(cosines.max(), 0, 1))) > tol_deg:
        raise ValueError(
            f"axes are not perpendicular (off by {np.degrees(np.arcsin(cosines.max())):.2f}°): "
            "not a rigid-times-scale matrix"
        )
    if np.linalg.det(r) < 0:
        raise ValueError("the matrix mirrors (negative determinant): check the image orientation")
    # snap to the nearest rotation
    u, _, vt = np.linalg.svd(r)
    r = u @ vt
    return r, scales, m[:3, 3].copy()


def rigid_from_params(params: np.ndarray) -> np.ndarray:
    """4×4 from ``(tx, ty, tz, rx, ry, rz)``: mm and a rotation vector in radians."""
    p = np.asarray(params, dtype=np.float64)
    m = np.eye(4)
    m[:3, :3] = Rotation.from_rotvec(p[3:6]).as_matrix()
    m[:3, 3] = p[:3]
    return m


def rotation_angle_deg(matrix: np.ndarray) -> float:
    """Rotation angle of the upper 3×3 (orthonormalised), degrees."""
    r = np.asarray(matrix, dtype=np.float64)[:3, :3]
    u, _, vt = np.linalg.svd(r)
    return float(np.degrees(Rotation.from_matrix(u @ vt).magnitude()))
