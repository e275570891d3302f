"""Evaluation cases for the registration: the real RESECT Case 24 turned into tracked
freehand-like sweeps, known rigid perturbations, and the target registration error.

RESECT Case 24 (``../shared/data/resect/case24``, CC BY 4.0): a 3D intraoperative US and a T1
MRI on the same 0.5 mm grid, with 16 expert landmark pairs. The US world (RAS mm) plays the
Reference frame; the navigation alignment (identity ``ReferenceToMri``) leaves 1.10 mm mTRE.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from usnav.errors import InputError
from usnav.io.volume import Volume, load_volume
from usnav.registration import _kernels as K
from usnav.registration.points import read_tag_file
from usnav.registration.sweep import Sweep


@dataclass
class RealCase:
    """An US/MRI pair with landmarks.

    Attributes
    ----------
    us, mri
        Volumes (US world = Reference mm; MRI RAS mm).
    landmarks_reference, landmarks_mri
        (N, 3) paired landmarks, mm.
    name
        For reports.
    """

    us: Volume
    mri: Volume
    landmarks_reference: np.ndarray
    landmarks_mri: np.ndarray
    name: str = "case"

    def mtre(self, reference_to_mri: np.ndarray) -> float:
        """Mean target registration error over the landmarks, mm."""
        return mean_tre(reference_to_mri, self.landmarks_reference, self.landmarks_mri)


def mean_tre(
    reference_to_mri: np.ndarray, points_reference: np.ndarray, points_mri: np.ndarray
) -> float:
    """Mean distance between mapped Reference points and their MRI partners, mm."""
    mapped = np.c_[points_reference, np.ones(len(points_reference))] @ reference_to_mri.T
    return float(np.linalg.norm(mapped[:, :3] - points_mri, axis=1).mean())


def load_resect_case24(data_dir: str | Path) -> RealCase:
    """Load RESECT Case 24 from ``<data_dir>/resect/case24``."""
    folder = Path(data_dir) / "resect" / "case24"
    if not folder.is_dir():
        raise InputError(
            folder,
            "RESECT case 24 not found",
            "give --data the folder that holds resect/case24 (the project's ../shared/data)",
        )
    us = load_volume(folder / "Case24-US-before_0p5mm.nii.gz", allow_default_affine=True)
    mri = load_volume(folder / "Case24-T1_resliced-to-US_0p5mm.nii.gz", allow_default_affine=True)
    fixed, moving = read_tag_file(folder / "Case24-MRI-beforeUS.tag")
    return RealCase(us, mri, landmarks_reference=moving, landmarks_mri=fixed, name="RESECT-24")


def slice_sweep(
    us: Volume,
    *,
    n_frames: int = 150,
    pixel_mm: float = 0.3,
    depth_axis: int = 0,
    lateral_axis: int = 1,
    wobble_deg: float = 3.0,
    seed: int = 0,
) -> Sweep:
    """Cut a freehand-like sweep of 2D frames out of a 3D ultrasound volume.

    The probe moves along the volume's remaining axis (elevation) across the middle 80 % of
    the volume, with a smooth random wobble (tilt and rock up to ``wobble_deg``, lateral
    drift up to 2 mm). Image rows follow ``depth_axis``, columns ``lateral_axis``. Pixels
    outside the volume's fan are 0.

    Returns
    -------
    A :class:`Sweep` whose ``ImageToReference`` poses map pixels into the US world (mm).
    """
    rng = np.random.default_rng(seed)
    spacing = us.spacing_mm
    shape = np.array(us.shape)
    elev_axis = 3 - depth_axis - lateral_axis
    axes = np.eye(3)
    # unit directions in voxel index space scaled to world mm via the affine
    a = us.affine[:3, :3]
    e_depth = a @ axes[depth_axis] / spacing[depth_axis]
    e_lat = a @ axes[lateral_axis] / spacing[lateral_axis]
    e_elev = a @ axes[elev_axis] / spacing[elev_axis]
    rows = int(shape[depth_axis] * spacing[depth_axis] / pixel_mm)
    cols = int(shape[lateral_axis] * spacing[lateral_axis] / pixel_mm)
    ext_elev = shape[elev_axis] * spacing[elev_axis]
    t = np.linspace(-0.4, 0.4, n_frames) * ext_elev
    phase = rng.uniform(0, 2 * np.pi, 4)
    u = np.linspace(0, 1, n_frames)
    tilt = wobble_deg * np.sin(2 * np.pi * 0.7 * u + phase[0])
    rock = wobble_deg * np.sin(2 * np.pi * 1.1 * u + phase[1])
    spin = 0.5 * wobble_deg * np.sin(2 * np.pi * 0.5 * u + phase[2])
    drift = 2.0 * np.sin(2 * np.pi * 0.4 * u + phase[3])
    centre = (us.affine @ np.r_[(shape - 1) / 2.0, 1.0])[:3]
    top = centre - e_depth * shape[depth_axis] * spacing[depth_axis] / 2
    images = np.zeros((n_frames, rows, cols), np.float32)
    poses = np.zeros((n_frames, 4, 4))
    vol = np.ascontiguousarray(us.data, dtype=np.float32)
    w2v = us.world_to_voxel
    basis = np.c_[e_lat, e_depth, e_elev]
    for f in range(n_frames):
        rot = Rotation.from_rotvec(
            np.radians(tilt[f]) * e_lat
            + np.radians(rock[f]) * e_depth
            + np.radians(spin[f]) * e_elev
        ).as_matrix()
        b = rot @ basis
        apex = top + e_elev * t[f] + e_lat * drift[f]
        origin = apex - b[:, 0] * cols * pixel_mm / 2
        pose = np.eye(4)
        pose[:3, 0] = b[:, 0] * pixel_mm
        pose[:3, 1] = b[:, 1] * pixel_mm
        pose[:3, 2] = np.cross(b[:, 0], b[:, 1]) * pixel_mm
        pose[:3, 3] = origin
        poses[f] = pose
        m = w2v @ pose
        out = np.zeros((rows, cols), np.float32)
        K.reslice_plane(
            vol,
            np.ascontiguousarray(m[:3, 3]),
            np.ascontiguousarray(m[:3, 0]),
            np.ascontiguousarray(m[:3, 1]),
            out,
            np.float32(0.0),
        )
        images[f] = out
    images = np.clip(np.round(images), 0, 255).astype(np.uint8)
    return Sweep(
        images,
        poses,
        np.arange(n_frames) / 30.0,
        source=f"{us.source} (sliced)",
        fov_mask=np.ones((rows, cols), bool),
        frame_masks=images > 0,
    )


def random_perturbation(
    rng: np.random.Generator,
    centre: np.ndarray,
    *,
    translation_mm: tuple[float, float] = (3.0, 8.0),
    rotation_deg: tuple[float, float] = (3.0, 8.0),
) -> np.ndarray:
    """A rigid 4×4 with a translation of uniform length in ``translation_mm`` and a rotation
    of uniform angle in ``rotation_deg`` about a random axis through ``centre`` (mm)."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.radians(rng.uniform(*rotation_deg))
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    shift = direction * rng.uniform(*translation_mm)
    m = np.eye(4)
    r = Rotation.from_rotvec(axis * angle).as_matrix()
    m[:3, :3] = r
    m[:3, 3] = centre - r @ centre + shift
    return m


def regrid_volume(
    volume: Volume,
    *,
    angle_deg: float = 7.0,
    shift_vox: tuple[float, float, float] = (0.37, 0.21, 0.43),
) -> Volume:
    """The same image on a rotated, sub-voxel-shifted grid (cubic B-spline resampling).

    RESECT's MRI is resliced onto the ultrasound's own grid, so at the true alignment every
    US sample meets an MRI voxel centre: interpolation then favours the truth (a grid
    artefact). Re-gridding the MRI removes that help; the benchmark reports both.
    """
    from scipy import ndimage

    n = np.array(volume.shape)
    centre = (n - 1) / 2.0
    r = Rotation.from_rotvec(np.radians(angle_deg) * np.array([1.0, 2.0, 3.0]) / np.sqrt(14))
    a = np.eye(4)
    a[:3, :3] = r.as_matrix()
    a[:3, 3] = centre - r.as_matrix() @ centre + np.asarray(shift_vox)
    idx = np.stack(np.meshgrid(*[np.arange(k) for k in n], indexing="ij"), 0).reshape(3, -1)
    src = a[:3, :3] @ idx + a[:3, 3:4]
    data = ndimage.map_coordinates(
        np.asarray(volume.data, np.float32), src, order=3, mode="nearest"
    ).reshape(n)
    return Volume(
        data.astype(np.float32), volume.affine @ a, source=f"{volume.source} (re-gridded)"
    )
