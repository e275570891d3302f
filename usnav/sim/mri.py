"""Preoperative T2-weighted MRI and the tumor label map, from the preoperative anatomy.

Signal per tissue (:data:`usnav.sim.tissues.T2_SIGNAL`) with a smooth heterogeneity texture
(strong in the tumor), partial volume (the 0.5 mm labels are blurred and resampled onto the
coarser, oblique MRI grid), a smooth multiplicative bias field (receive-coil fall-off plus a
random low-order polynomial) and Rician noise. Stored as int16 in a NIfTI whose affine maps
voxels to RAS mm like a scanner's: a radiological (left-handed) voxel order, a slightly
oblique slab, and an origin far from zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates
from scipy.spatial.transform import Rotation

from usnav.io.volume import Volume
from usnav.sim.anatomy import LabelGrid, SpineAnatomy
from usnav.sim.tissues import (
    N_TISSUES,
    T2_HETEROGENEITY,
    T2_SIGNAL,
    TUMOR_LABEL_CYST,
    TUMOR_LABEL_SOLID,
    Tissue,
)


@dataclass
class MriResult:
    """The simulated MRI and tumor label (both on the MRI grid, RAS affine)."""

    mri: Volume
    tumor_label: Volume
    noise_sigma: float
    bias_range: tuple[float, float]


def mri_grid(
    anat: SpineAnatomy,
    preop: LabelGrid,
    spacing_mm: tuple[float, float, float],
    rng: np.random.Generator,
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A scanner-like voxel grid (affine, shape) covering the labelled box in RAS."""
    slab = Rotation.from_euler(
        "xz", [rng.uniform(-8.0, 8.0), rng.uniform(-3.0, 3.0)], degrees=True
    ).as_matrix()
    axes = slab @ np.diag([-1.0, 1.0, 1.0])  # columns: i → left, j → anterior, k → superior
    lo = preop.origin
    hi = preop.origin + (np.array(preop.labels.shape) - 1) * preop.spacing
    corners = np.array(
        [[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
    )
    ras = (corners @ anat.spine_to_mri.T)[:, :3]
    along = ras @ axes  # coordinates along each (unit) voxel axis
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    start = along.min(axis=0)
    shape = tuple(
        int(np.floor((along.max(axis=0)[d] - start[d]) / spacing[d])) + 1 for d in range(3)
    )
    affine = np.eye(4)
    affine[:3, :3] = axes * spacing
    affine[:3, 3] = axes @ start
    return affine, shape  # type: ignore[return-value]


def simulate_mri(
    anat: SpineAnatomy,
    preop: LabelGrid,
    rng: np.random.Generator,
    spacing_mm: tuple[float, float, float] = (0.8, 0.8, 0.8),
) -> MriResult:
    """T2 MRI (int16) and tumor label (uint8: 1 solid, 2 cyst) of the preoperative anatomy."""
    affine, shape = mri_grid(anat, preop, spacing_mm, rng)
    signal = np.array([T2_SIGNAL[Tissue(i)] for i in range(N_TISSUES)], dtype=np.float32)
    signal[Tissue.TUMOR] = anat.tumor.t2_signal
    het = (
        np.array([T2_HETEROGENEITY.get(Tissue(i), 0.0) for i in range(N_TISSUES)], dtype=np.float32)
        * signal
    )

    # MRI voxel centres → label-grid continuous indices
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    ras = affine[:3, :3].astype(np.float32) @ ijk + affine[:3, 3:4].astype(np.float32)
    mri_to_spine = np.linalg.inv(anat.spine_to_mri)
    spine = mri_to_spine[:3, :3].astype(np.float32) @ ras + mri_to_spine[:3, 3:4].astype(np.float32)
    idx = (spine - preop.origin[:, None].astype(np.float32)) / np.float32(preop.spacing)
    del ijk, ras, spine

    # partial volume: the MR point-spread ≈ a box of one MRI voxel → Gaussian σ ≈ 0.42 voxel
    sigma_vox = 0.42 * np.asarray(spacing_mm) / preop.spacing
    labels = preop.labels
    base = gaussian_filter(signal[labels], sigma_vox, mode="nearest")
    hetero = gaussian_filter(het[labels], sigma_vox, mode="nearest")
    image = map_coordinates(base, idx, order=1, mode="nearest").reshape(shape)
    amplitude = map_coordinates(hetero, idx, order=1, mode="nearest").reshape(shape)
    del base, hetero
    texture = gaussian_filter(
        rng.standard_normal(shape).astype(np.float32), 1.5 / np.asarray(spacing_mm), mode="wrap"
    )
    texture /= max(float(texture.std()), 1e-6)
    image += amplitude * texture

    # bias field: receive coil under the patient's back (signal falls anteriorly) + smooth terms
    coords = np.indices(shape, dtype=np.float32)
    centre = (np.array(shape, dtype=np.float32) - 1) / 2
    norm = [(coords[d] - centre[d]) / max(centre[d], 1.0) for d in range(3)]
    # anterior direction in voxel space (j axis points anterior, roughly)
    log_bias = -rng.uniform(0.15, 0.35) * norm[1]
    for d in range(3):
        log_bias += rng.normal(0.0, 0.07) * norm[d] + rng.normal(0.0, 0.05) * norm[d] ** 2
    bias = np.exp(log_bias).astype(np.float32)
    image *= bias

    # Rician noise
    sigma = float(rng.uniform(0.02, 0.035) * T2_SIGNAL[Tissue.CSF])
    noise = rng.standard_normal((2, *shape)).astype(np.float32) * sigma
    image = np.sqrt((image + noise[0]) ** 2 + noise[1] ** 2)
    mri = Volume(np.clip(np.rint(image), 0, 32767).astype(np.int16), affine, source="simulated MRI")

    nearest = map_coordinates(labels, idx, order=0, mode="nearest").reshape(shape)
    tumor = np.zeros(shape, dtype=np.uint8)
    tumor[nearest == Tissue.TUMOR] = TUMOR_LABEL_SOLID
    tumor[nearest == Tissue.CYST] = TUMOR_LABEL_CYST
    label = Volume(tumor, affine.copy(), source="simulated tumor label")
    return MriResult(mri, label, sigma, (float(bias.min()), float(bias.max())))
