"""Preview PNGs of a simulated case: frames next to the MRI through the same plane.

Each panel pair: the simulated B-mode frame (left) and the preoperative MRI resliced through
the frame's true image plane with the tumor outline (right; red = solid tumor, yellow = cyst,
from ``tumor_label``). The MRI shows the preoperative anatomy, so the cord shift and the
laminectomy are visible as differences.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from scipy.ndimage import map_coordinates

from usnav.io.volume import Volume
from usnav.sim.tissues import TUMOR_LABEL_CYST, TUMOR_LABEL_SOLID

if TYPE_CHECKING:
    from usnav.sim.case import SimulatedCase


def reslice(
    volume: Volume, image_to_ras: np.ndarray, rows: int, cols: int, order: int = 1
) -> np.ndarray:
    """Sample ``volume`` at the pixels (col, row, 0) of an image plane (pixel → RAS 4×4)."""
    rr, cc = np.mgrid[0:rows, 0:cols]
    pix = np.stack([cc.ravel(), rr.ravel(), np.zeros(rr.size), np.ones(rr.size)])
    vox = volume.world_to_voxel @ image_to_ras @ pix
    out = map_coordinates(
        np.asarray(volume.data, dtype=np.float32), vox[:3], order=order, mode="constant", cval=0.0
    )
    return out.reshape(rows, cols)


def preview_indices(case: SimulatedCase, count: int) -> list[int]:
    """Frames to show: the one whose plane passes nearest the tumor centroid, and the others
    spread over the sweep."""
    n = len(case.sweep.image_poses)
    tz = case.anatomy.tumor.center[2]
    nearest = int(np.argmin(np.abs(case.sweep.image_poses[:, 2, 3] - tz)))
    spread = np.linspace(0, n - 1, max(count, 1)).round().astype(int).tolist()
    if count > 1:
        spread[int(np.argmin([abs(s - nearest) for s in spread]))] = nearest
    else:
        spread = [nearest]
    return sorted(set(spread))


def panel(case: SimulatedCase, index: int, us: np.ndarray) -> np.ndarray:
    """US frame | MRI through the same plane with the tumor outline (BGR uint8)."""
    rows, cols = us.shape
    image_to_mri = case.sweep.true_image_to_mri[index]
    mri = reslice(case.mri.mri, image_to_mri, rows, cols)
    hi = float(np.percentile(np.asarray(case.mri.mri.data), 99.5)) or 1.0
    mri8 = np.clip(mri / hi * 255.0, 0, 255).astype(np.uint8)
    label = reslice(case.mri.tumor_label, image_to_mri, rows, cols, order=0).astype(np.uint8)
    right = cv2.cvtColor(mri8, cv2.COLOR_GRAY2BGR)
    for value, colour in ((TUMOR_LABEL_SOLID, (40, 40, 255)), (TUMOR_LABEL_CYST, (0, 220, 255))):
        contours, _ = cv2.findContours(
            (label == value).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )
        cv2.drawContours(right, contours, -1, colour, 1)
    left = cv2.cvtColor(us, cv2.COLOR_GRAY2BGR)
    gap = np.full((rows, 4, 3), 255, np.uint8)
    out = np.hstack([left, gap, right])
    label_text = f"frame {index}"
    cv2.putText(
        out, label_text, (4, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 255, 0), 1, cv2.LINE_AA
    )
    cv2.putText(
        out,
        "MRI (preop)",
        (cols + 8, 12),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.35,
        (0, 255, 0),
        1,
        cv2.LINE_AA,
    )
    return out


def sweep_view(case: SimulatedCase, images: list[np.ndarray]) -> np.ndarray:
    """Longitudinal view of the whole sweep: the middle scanline of every frame side by side
    (left), the MRI along the same lines with the tumor outline (right). BGR uint8, each frame
    two pixels wide."""
    g = case.geometry
    mid = g.cols // 2
    us = np.stack([im[:, mid] for im in images], axis=1)
    rows = np.arange(g.rows)
    pix = np.stack([np.full(g.rows, mid), rows, np.zeros(g.rows), np.ones(g.rows)])
    mri_cols, lab_cols = [], []
    data = np.asarray(case.mri.mri.data, dtype=np.float32)
    for m in case.sweep.true_image_to_mri:
        vox = case.mri.mri.world_to_voxel @ m @ pix
        mri_cols.append(map_coordinates(data, vox[:3], order=1, mode="constant"))
        lab_cols.append(
            map_coordinates(case.mri.tumor_label.data, vox[:3], order=0, mode="constant")
        )
    hi = float(np.percentile(data, 99.5)) or 1.0
    mri8 = np.clip(np.stack(mri_cols, axis=1) / hi * 255.0, 0, 255).astype(np.uint8)
    label = np.stack(lab_cols, axis=1).astype(np.uint8)
    widen = lambda a: np.repeat(a, 2, axis=1)  # noqa: E731
    right = cv2.cvtColor(widen(mri8), cv2.COLOR_GRAY2BGR)
    for value, colour in ((TUMOR_LABEL_SOLID, (40, 40, 255)), (TUMOR_LABEL_CYST, (0, 220, 255))):
        contours, _ = cv2.findContours(
            widen((label == value).astype(np.uint8)), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )
        cv2.drawContours(right, contours, -1, colour, 1)
    left = cv2.cvtColor(widen(us), cv2.COLOR_GRAY2BGR)
    gap = np.full((g.rows, 4, 3), 255, np.uint8)
    out = np.hstack([left, gap, right])
    cv2.putText(
        out,
        "sweep (middle scanlines)",
        (4, 12),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.35,
        (0, 255, 0),
        1,
        cv2.LINE_AA,
    )
    return out


def write_previews(
    case: SimulatedCase, out_dir: Path, images: list[np.ndarray] | None = None
) -> list[Path]:
    """Write ``preview_frame_NNNN.png`` for the chosen frames, ``preview.png`` (all of them)
    and, given the sweep's images, ``preview_sweep.png`` (:func:`sweep_view`)."""
    written = []
    panels = []
    for index in preview_indices(case, case.options.preview_frames):
        us = case.simulator.frame(case.sweep.image_poses[index], index)
        p = panel(case, index, us)
        path = out_dir / f"preview_frame_{index:04d}.png"
        cv2.imwrite(str(path), p)
        written.append(path)
        panels.append(p)
    sep = np.full((4, panels[0].shape[1], 3), 255, np.uint8)
    mosaic = np.vstack([x for p in panels for x in (p, sep)][:-1])
    path = out_dir / "preview.png"
    cv2.imwrite(str(path), mosaic)
    written.append(path)
    if images:
        path = out_dir / "preview_sweep.png"
        cv2.imwrite(str(path), sweep_view(case, images))
        written.append(path)
    return written
