"""Helpers shared by the simulator tests."""

from __future__ import annotations

import numpy as np

#: Options of a tiny case: 2 frames of 32×32 px on a coarse anatomy grid and MRI (~0.5 s).
TINY = dict(
    frames=2,
    image_cols=32,
    image_rows=32,
    voxel_mm=0.75,
    mri_spacing_mm=(1.6, 1.6, 1.6),
    save_anatomy=False,
    tumor_length_mm=(10.0, 14.0),
)


def pixel_labels(case, index: int) -> np.ndarray:
    """Intraoperative tissue under each pixel of a frame (true pose, nearest voxel)."""
    g = case.geometry
    rr, cc = np.mgrid[0 : g.rows, 0 : g.cols]
    pix = np.stack([cc.ravel(), rr.ravel(), np.zeros(rr.size), np.ones(rr.size)])
    spine = (case.sweep.image_poses[index] @ g.image_to_transducer() @ pix)[:3]
    grid = case.intraop
    idx = np.round((spine - grid.origin[:, None]) / grid.spacing).astype(int)
    for d in range(3):
        idx[d] = np.clip(idx[d], 0, grid.labels.shape[d] - 1)
    return grid.labels[idx[0], idx[1], idx[2]].reshape(g.rows, g.cols)
