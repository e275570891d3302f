"""Scoring landmarks of a simulated case, in the preoperative anatomy (where the MRI shows them).

All functions return spine-frame mm; :func:`case_landmarks` maps them to MRI RAS.
Definitions (also written into ``truth.json``):

- ``tumor_centroid``: centroid of the solid tumor (sampled exactly on a 0.1 mm lattice).
- ``tumor_pole_superior`` / ``tumor_pole_inferior``: where the tumor's long axis through the
  centroid leaves the solid tumor, towards the head / the feet.
- ``tumor_boundary``: points on the solid tumor's surface, first exit along directions spread
  evenly over the sphere (Fibonacci) from the centroid.
- ``cord_centerline``: centre of the spinal cord's cross-section every 2 mm along the segment.
- ``vertebral_body_posterior``: midline point of each vertebral body's posterior surface
  (bone: does not move with the cord shift).
- ``cyst_centroid``: centroid of the cyst, if any.
"""

from __future__ import annotations

import numpy as np

from usnav.sim import _kernels as K
from usnav.sim.anatomy import PrimitiveArrays, SpineAnatomy
from usnav.sim.tissues import Tissue


def _labels_straight(anat: SpineAnatomy, q: np.ndarray, arrays: PrimitiveArrays) -> np.ndarray:
    q = np.ascontiguousarray(q.reshape(-1, 3), dtype=np.float64)
    out = np.zeros(len(q), dtype=np.uint8)
    K.paint_points(
        q, arrays.types, arrays.labels, arrays.masks, arrays.mats, arrays.params, arrays.aabb, out
    )
    return out


def _region_centroid(
    anat: SpineAnatomy,
    arrays: PrimitiveArrays,
    tissue: Tissue,
    center: np.ndarray,
    half: np.ndarray,
    step: float = 0.1,
) -> np.ndarray:
    axes = [np.arange(center[d] - half[d], center[d] + half[d] + step / 2, step) for d in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    inside = _labels_straight(anat, grid, arrays) == tissue
    if not inside.any():
        raise ValueError(f"no {tissue.name} found near {center}")
    return anat.unstraighten(grid[inside]).mean(axis=0)


def _exit_point(
    anat: SpineAnatomy,
    arrays: PrimitiveArrays,
    start_q: np.ndarray,
    directions: np.ndarray,
    tissue: Tissue,
    max_mm: float,
    step: float = 0.01,
) -> np.ndarray:
    """First point where rays from ``start_q`` (straightened) leave ``tissue``; spine mm."""
    t = np.arange(0.0, max_mm, step)
    pts = start_q[None, None, :] + directions[:, None, :] * t[None, :, None]
    lab = _labels_straight(anat, pts, arrays).reshape(len(directions), len(t))
    outside = lab != tissue
    first = np.where(outside.any(axis=1), outside.argmax(axis=1), len(t))
    dist = np.maximum(first - 0.5, 0.0) * step
    return anat.unstraighten(start_q[None, :] + directions * dist[:, None])


def fibonacci_sphere(n: int) -> np.ndarray:
    """``n`` unit vectors spread evenly over the sphere."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    r = np.sqrt(1.0 - z * z)
    phi = np.pi * (3.0 - np.sqrt(5.0)) * i
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def spine_landmarks(anat: SpineAnatomy, n_boundary: int = 48) -> dict[str, np.ndarray | None]:
    """Landmarks of the preoperative anatomy, spine-frame mm (see the module docstring)."""
    arrays = PrimitiveArrays.pack(anat.primitives)
    t = anat.tumor
    half = t.radii * 1.45 + 0.5
    centroid = _region_centroid(anat, arrays, Tissue.TUMOR, t.center, half)
    centroid_q = anat.straighten(centroid)
    axis = t.rotation[:, 2]
    reach = float(t.radii[2] * 1.5 + 2.0)
    poles = _exit_point(anat, arrays, centroid_q, np.stack([axis, -axis]), Tissue.TUMOR, reach)
    dirs = fibonacci_sphere(n_boundary)
    boundary = _exit_point(anat, arrays, centroid_q, dirs, Tissue.TUMOR, reach)
    half_seg = anat.segment_length / 2.0
    zs = np.arange(-half_seg + 2.0, half_seg - 2.0 + 1e-9, 2.0)
    line_q = np.stack(
        [np.full_like(zs, anat.cord_offset[0]), np.full_like(zs, anat.cord_offset[1]), zs], axis=1
    )
    bodies_q = np.array([[0.0, anat.canal[1], anat.level_z(i)] for i in range(anat.levels)])
    cyst = None
    if t.cyst_center is not None:
        cyst = _region_centroid(anat, arrays, Tissue.CYST, t.cyst_center, t.cyst_radii + 0.6)
    superior, inferior = (poles[0], poles[1]) if axis[2] >= 0 else (poles[1], poles[0])
    return {
        "tumor_centroid": centroid,
        "tumor_pole_superior": superior,
        "tumor_pole_inferior": inferior,
        "tumor_boundary": boundary,
        "cord_centerline": anat.unstraighten(line_q),
        "vertebral_body_posterior": anat.unstraighten(bodies_q),
        "cyst_centroid": cyst,
    }


LANDMARK_DEFINITIONS = {
    "tumor_centroid": "centroid of the solid tumor",
    "tumor_pole_superior": "where the tumor's long axis through the centroid leaves the solid "
    "tumor towards the head",
    "tumor_pole_inferior": "the same towards the feet",
    "tumor_boundary": "points on the solid tumor surface: first exit from the centroid along "
    "directions spread evenly over the sphere",
    "cord_centerline": "centre of the spinal cord cross-section every 2 mm along the segment",
    "vertebral_body_posterior": "midline point of each vertebral body's posterior surface "
    "(bone, not moved by the cord shift)",
    "cyst_centroid": "centroid of the tumor cyst (null if the case has none)",
}


def to_frame(points: np.ndarray | None, matrix: np.ndarray) -> np.ndarray | None:
    """Apply a 4×4 to points (..., 3)."""
    if points is None:
        return None
    p = np.asarray(points, dtype=np.float64)
    return p @ matrix[:3, :3].T + matrix[:3, 3]


def case_landmarks(
    anat: SpineAnatomy, n_boundary: int = 48
) -> tuple[dict[str, np.ndarray | None], dict[str, np.ndarray | None]]:
    """(preoperative, intraoperative) landmarks in MRI RAS mm.

    The intraoperative position of a landmark X is X + u(X) (the cord shift), expressed in MRI
    coordinates through the true (rigid) ReferenceToMri.
    """
    spine = spine_landmarks(anat, n_boundary)
    pre, intra = {}, {}
    for name, pts in spine.items():
        pre[name] = to_frame(pts, anat.spine_to_mri)
        moved = None if pts is None else pts + anat.displacement(pts)
        intra[name] = to_frame(moved, anat.spine_to_mri)
    return pre, intra
