"""A small synthetic tumor case for tests and benchmarks that must not depend on the simulator.

An ellipsoidal solid tumor (optionally with an ellipsoidal cyst) in a label map with a
non-trivial RAS affine, a frame plane through it, and a B-mode-like frame: Rayleigh speckle
blurred by an anisotropic point-spread function, log-compressed to uint8, with the tumor
hyper-, iso- or hypoechoic and the cyst anechoic. The frame can show the tumor displaced from
where the label map puts it (an intraoperative shift), so refinement has something to find.

This is a geometric test object, not a physical simulation (``usnav.sim`` is that).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from usnav.io.volume import Volume


@dataclass(frozen=True)
class PhantomCase:
    """A label map, a frame through it and the truth.

    Attributes
    ----------
    label
        Label map (solid = 1, cyst = 2), RAS.
    image_to_mri
        4×4 pixel (col, row, 0, 1) → MRI RAS mm of the frame.
    image
        uint8 (rows, cols) synthetic ultrasound.
    truth_codes
        uint8 (rows, cols): 0 / 1 solid / 2 cyst where the tumor really is in the frame (after
        the shift), sampled at pixel centres from the analytic ellipsoids.
    shift_mm
        (3,) the intraoperative displacement of the tumor relative to the label map, MRI mm.
    """

    label: Volume
    image_to_mri: np.ndarray
    image: np.ndarray
    truth_codes: np.ndarray
    shift_mm: np.ndarray


def _rotation(seed_angles_deg: tuple[float, float, float]) -> np.ndarray:
    return Rotation.from_euler("xyz", seed_angles_deg, degrees=True).as_matrix()


def make_phantom(
    *,
    rows: int = 256,
    cols: int = 256,
    mm_per_px: float = 0.15,
    voxel_mm: float = 0.5,
    radii_mm: tuple[float, float, float] = (6.0, 4.5, 9.0),
    cyst: bool = True,
    echo: str = "hyper",
    shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
    tilt_deg: tuple[float, float, float] = (8.0, -5.0, 12.0),
    seed: int = 0,
) -> PhantomCase:
    """Build a phantom case.

    Parameters
    ----------
    rows, cols, mm_per_px
        Frame size and pixel size (mm).
    voxel_mm
        Label map voxel size, mm.
    radii_mm
        Solid tumor semi-axes along its own axes, mm (the long axis ~ along the cord).
    cyst
        Add a cyst at one pole of the solid tumor.
    echo
        ``"hyper"``, ``"iso"`` or ``"hypo"``: the solid tumor's echogenicity vs background.
    shift_mm
        Where the tumor really is relative to the label map (added to its centre), mm.
    tilt_deg
        Euler angles of the tumor axes in the MRI (the label map stays axis-aligned).
    seed
        Speckle seed.
    """
    rng = np.random.default_rng(seed)
    # label map: 72×72×96 voxels, RAS affine with a rotation and an offset origin
    shape = (int(40 / voxel_mm), int(40 / voxel_mm), int(48 / voxel_mm))
    grid_rotation = _rotation((0.0, 0.0, 20.0))
    affine = np.eye(4)
    affine[:3, :3] = grid_rotation * voxel_mm
    affine[:3, 3] = [-31.0, 12.5, -140.0]
    centre_voxel = (np.array(shape) - 1) / 2.0
    centre_mri = affine[:3, :3] @ centre_voxel + affine[:3, 3]
    axes = _rotation(tilt_deg)
    radii = np.asarray(radii_mm, float)
    cyst_centre = centre_mri + axes[:, 2] * (radii[2] * 0.9)
    cyst_radii = np.array([radii[0] * 0.6, radii[1] * 0.6, radii[2] * 0.45])

    ii, jj, kk = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    voxels = np.stack([ii, jj, kk, np.ones_like(ii)], axis=-1).reshape(-1, 4).astype(np.float64)
    world = (voxels @ affine.T)[:, :3]
    codes = _codes_at(world, centre_mri, radii, axes, cyst_centre if cyst else None, cyst_radii)
    label = Volume(codes.reshape(shape).astype(np.uint8), affine, source="<phantom>")

    # frame plane through the tumor centre, containing its long axis, pixel (0,0) top-left
    ex = axes[:, 2]  # lateral (columns) along the tumor's long axis
    ey = -axes[:, 1]  # depth (rows)
    image_to_mri = np.eye(4)
    image_to_mri[:3, 0] = ex * mm_per_px
    image_to_mri[:3, 1] = ey * mm_per_px
    image_to_mri[:3, 2] = np.cross(ex, ey)
    centre_px = np.array([(cols - 1) / 2.0, rows * 0.55])
    image_to_mri[:3, 3] = centre_mri - ex * mm_per_px * centre_px[0] - ey * mm_per_px * centre_px[1]

    # the real tumor: shifted by shift_mm
    shift = np.asarray(shift_mm, float)
    cc, rr = np.meshgrid(np.arange(cols), np.arange(rows))
    pix = np.stack([cc.ravel(), rr.ravel()], axis=1).astype(np.float64)
    pix_world = pix @ image_to_mri[:3, :2].T + image_to_mri[:3, 3]
    truth = _codes_at(
        pix_world,
        centre_mri + shift,
        radii,
        axes,
        (cyst_centre + shift) if cyst else None,
        cyst_radii,
    ).reshape(rows, cols)
    image = _bmode(truth, echo, mm_per_px, rng)
    return PhantomCase(label, image_to_mri, image, truth.astype(np.uint8), shift)


def _codes_at(points, centre, radii, axes, cyst_centre, cyst_radii) -> np.ndarray:
    local = (points - centre) @ axes
    solid = ((local / radii) ** 2).sum(axis=1) <= 1.0
    codes = np.where(solid, 1, 0)
    if cyst_centre is not None:
        local_c = (points - cyst_centre) @ axes
        inside_c = ((local_c / cyst_radii) ** 2).sum(axis=1) <= 1.0
        codes = np.where(inside_c, 2, codes)
    return codes.astype(np.uint8)


def _bmode(codes: np.ndarray, echo: str, mm_per_px: float, rng: np.random.Generator) -> np.ndarray:
    """Rayleigh speckle with region-dependent scatterer strength, PSF blur, log compression."""
    gains = {"hyper": 2.8, "iso": 1.0, "hypo": 0.45}
    if echo not in gains:
        raise ValueError(f"echo must be one of {', '.join(gains)}, got {echo!r}")
    strength = np.ones(codes.shape, np.float32)
    strength[codes == 1] = gains[echo]
    strength[codes == 2] = 0.08
    # soften the transition over ~0.2 mm so the boundary is a physical edge, not a pixel step
    strength = cv2.GaussianBlur(strength, (0, 0), 0.2 / mm_per_px)
    scatter = (rng.normal(size=codes.shape) + 1j * rng.normal(size=codes.shape)).astype(
        np.complex64
    )
    field = scatter * strength
    # PSF: ~0.3 mm axial, ~0.6 mm lateral (sigma)
    re = cv2.GaussianBlur(field.real.copy(), (0, 0), 0.6 / mm_per_px, sigmaY=0.3 / mm_per_px)
    im = cv2.GaussianBlur(field.imag.copy(), (0, 0), 0.6 / mm_per_px, sigmaY=0.3 / mm_per_px)
    envelope = np.hypot(re, im)
    envelope /= np.median(envelope[codes == 0]) if (codes == 0).any() else envelope.mean()
    db = 20 * np.log10(envelope + 1e-3)
    pixels = np.clip(90 + db * 3.2, 0, 255)
    # gentle depth gain so it is not uniform
    depth = np.linspace(1.0, 0.85, codes.shape[0])[:, None]
    return (pixels * depth).astype(np.uint8)
