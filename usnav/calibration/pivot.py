"""Pivot calibration of a tracked stylus: tip offset and pivot point by least squares.

The stylus tip rests in a divot while the stylus is swung around it. For every pose
``ToolToReference = [R_i | t_i]`` the tip (fixed in the tool frame, ``p_tip``) is at the pivot
(fixed in the reference frame, ``p_pivot``): ``R_i·p_tip + t_i = p_pivot``. Stacked:

    [R_i | −I] · [p_tip; p_pivot] = −t_i        (3n equations, 6 unknowns)

solved by linear least squares. The error is the RMS over poses of
|R_i·p_tip + t_i − p_pivot| (mm). The system is well posed only when the stylus was swung
about at least two axes; otherwise the fit is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from usnav.errors import InputError, TransformError
from usnav.frames import TrackedTransform, TransformStatus
from usnav.transforms import TransformRepository

#: Fewest OK poses accepted.
MIN_POSES = 10
#: Smallest spread of stylus orientations (deg, about the second axis) accepted.
MIN_ROTATION_DEG = 5.0


@dataclass(frozen=True)
class PivotResult:
    """Tip in the tool frame and pivot in the reference frame (mm), with the fit's errors.

    Attributes
    ----------
    residuals_mm
        |R_i·p_tip + t_i − p_pivot| per pose, mm.
    rotation_spread_deg
        How much the stylus was swung about its two least-covered axes (the smaller one), deg.
    """

    tip_in_tool_mm: np.ndarray
    pivot_in_reference_mm: np.ndarray
    rms_error_mm: float
    residuals_mm: np.ndarray
    poses_used: int
    poses_total: int
    rotation_spread_deg: float
    tool: str = "StylusToReference"
    source: str = ""

    @property
    def tip_to_tool(self) -> np.ndarray:
        """4×4 ``<Tip>To<Tool>`` (PLUS ``StylusTipToStylus``): a pure translation, mm."""
        m = np.eye(4)
        m[:3, 3] = self.tip_in_tool_mm
        return m

    def as_dict(self) -> dict:
        return {
            "tool": self.tool,
            "tip_in_tool_mm": self.tip_in_tool_mm.tolist(),
            "pivot_in_reference_mm": self.pivot_in_reference_mm.tolist(),
            "rms_error_mm": self.rms_error_mm,
            "max_error_mm": float(self.residuals_mm.max()),
            "poses_used": self.poses_used,
            "poses_total": self.poses_total,
            "rotation_spread_deg": self.rotation_spread_deg,
            "source": self.source,
        }


def rotation_spread_deg(rotations: np.ndarray) -> float:
    """Spread of a set of rotations, deg: the second-largest RMS angle (about the mean) along
    the principal axes of their rotation vectors relative to the mean. Near 0 when the stylus
    was only spun about one axis (or not moved)."""
    from scipy.spatial.transform import Rotation

    rots = Rotation.from_matrix(rotations)
    mean = rots.mean()
    rel = (mean.inv() * rots).as_rotvec()
    if len(rel) < 3:
        return 0.0
    s = np.linalg.svd(rel - rel.mean(axis=0), compute_uv=False) / math.sqrt(len(rel))
    return float(np.degrees(s[1]))


def pivot_calibration(
    poses: np.ndarray,
    *,
    tool: str = "StylusToReference",
    source: str = "",
    poses_total: int | None = None,
) -> PivotResult:
    """Least-squares pivot calibration of ``poses`` (n, 4, 4) ``ToolToReference``, mm.

    Raises
    ------
    InputError
        Fewer than :data:`MIN_POSES` poses, or a stylus not swung about two axes by at least
        :data:`MIN_ROTATION_DEG` (the tip would be undetermined along the spin axis).
    """
    m = np.asarray(poses, dtype=np.float64).reshape(-1, 4, 4)
    where = source or tool
    n = len(m)
    if n < MIN_POSES:
        raise InputError(
            where, f"{n} usable {tool} poses; pivot calibration needs at least {MIN_POSES}"
        )
    rot = m[:, :3, :3]
    spread = rotation_spread_deg(rot)
    if spread < MIN_ROTATION_DEG:
        raise InputError(
            where,
            f"the stylus was swung by only {spread:.1f}° about its second axis "
            f"(at least {MIN_ROTATION_DEG:.0f}° needed): the tip position is undetermined",
            "pivot the stylus in a cone, about two axes",
        )
    a = np.zeros((3 * n, 6))
    a[:, :3] = rot.reshape(3 * n, 3)
    a[:, 3:] = np.tile(-np.eye(3), (n, 1))
    b = -m[:, :3, 3].reshape(3 * n)
    x, *_ = np.linalg.lstsq(a, b, rcond=None)
    tip, pivot = x[:3], x[3:]
    residuals = np.linalg.norm(np.einsum("nij,j->ni", rot, tip) + m[:, :3, 3] - pivot, axis=1)
    return PivotResult(
        tip_in_tool_mm=tip,
        pivot_in_reference_mm=pivot,
        rms_error_mm=float(np.sqrt(np.mean(residuals**2))),
        residuals_mm=residuals,
        poses_used=n,
        poses_total=poses_total if poses_total is not None else n,
        rotation_spread_deg=spread,
        tool=tool,
        source=source,
    )


def tool_poses(seq, tool: str) -> tuple[np.ndarray, int]:
    """OK poses of ``tool`` (e.g. ``StylusToReference``) per frame of a recording, computed
    from the recorded transforms with the transform repository; and the frame count."""
    names = list(seq.transform_names)
    series = {name: seq.transforms(name) for name in names}
    out = []
    for i in range(len(seq)):
        row = {n: TrackedTransform(series[n][0][i], series[n][1][i]) for n in names}
        try:
            got = TransformRepository.from_frame(row).get(tool)
        except TransformError as exc:
            raise InputError(
                getattr(seq, "path", "recording"),
                f"cannot compute {tool} from the recorded transforms "
                f"({', '.join(names) or 'none'}): {exc}",
            ) from exc
        if got.status is TransformStatus.OK and np.all(np.isfinite(got.matrix)):
            out.append(got.matrix)
    return np.array(out).reshape(-1, 4, 4), len(seq)


def calibrate_pivot(path: str | Path, tool: str = "StylusToReference") -> PivotResult:
    """Pivot calibration from a recording (``.igs.mha``...) of a stylus swung about its tip.

    Frames whose ``tool`` transform is not OK are skipped (counted in ``poses_total``).

    Raises
    ------
    InputError
        Unreadable file, ``tool`` not computable, too few OK poses, too little rotation.
    """
    from usnav.io.sequence import read_sequence

    p = str(path)
    with read_sequence(p) as seq:
        poses, total = tool_poses(seq, tool)
    if len(poses) < MIN_POSES:
        raise InputError(
            p,
            f"only {len(poses)} of {total} frames have an OK {tool} (at least {MIN_POSES} needed)",
            "is the stylus visible to the tracker? check the TransformStatus fields",
        )
    return pivot_calibration(poses, tool=tool, source=p, poses_total=total)
