"""The MRI beside the ultrasound: the image plane resliced from the volume, and the locators.

The display reslices the MRI itself, from the volume it loaded once (``usnav view --mri``),
through the plane the ultrasound frame lies in (the ``ImageToMri`` that every margin and frame
message carries). Nothing extra travels on the protocol; docs/protocol.md, "The MRI plane",
gives the measurements behind that choice.

The locators are two fixed MRI sections through the tumor centre — sagittal and axial, in RAS
— on which the probe's image plane is drawn where it lies, with the tumor's projection and the
distance from the image to the tumor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from usnav.errors import InputError
from usnav.protocol.display import VolumeExtent

if TYPE_CHECKING:  # the viewer imports this module; scipy and the readers load on first use
    from usnav.io.volume import Volume

#: longest side of the resliced plane, samples (the display scales it to its pane)
MAX_PLANE_SIDE = 320


def _window(data: np.ndarray) -> tuple[float, float]:
    """Grey-level window (low, high) of an MRI: 1st–99.5th percentile of non-zero voxels."""
    sample = data[:: max(1, data.shape[0] // 64), :: max(1, data.shape[1] // 64)]
    values = sample[sample != 0] if np.any(sample != 0) else sample.ravel()
    low, high = np.percentile(values.astype(np.float64), [1.0, 99.5])
    return float(low), float(max(high, low + 1e-6))


@dataclass(frozen=True)
class Locator:
    """One locator section: an MRI slice in RAS with its pixel geometry.

    Attributes
    ----------
    name
        ``"sagittal"`` or ``"axial"``.
    background
        uint8 (rows, cols): the MRI section through the tumor centre.
    tumor
        bool (rows, cols): the tumor's projection onto the section (all of it, whatever its
        depth), so the tumor is always seen whole.
    origin_mm
        RAS mm of the centre of pixel (0, 0).
    right_mm, down_mm
        RAS mm step of one pixel to the right / down.
    edges
        Patient directions at the (left, right, top, bottom) edges, e.g. ``("A", "P", "S",
        "I")``.
    """

    name: str
    background: np.ndarray
    tumor: np.ndarray
    origin_mm: np.ndarray
    right_mm: np.ndarray
    down_mm: np.ndarray
    edges: tuple[str, str, str, str]

    @property
    def mm_per_px(self) -> float:
        return float(np.linalg.norm(self.right_mm))

    def to_px(self, ras_mm: np.ndarray) -> np.ndarray:
        """RAS mm points (N, 3) → locator pixels (N, 2) (x = col, y = row), projected."""
        d = np.asarray(ras_mm, np.float64).reshape(-1, 3) - self.origin_mm
        x = d @ self.right_mm / float(self.right_mm @ self.right_mm)
        y = d @ self.down_mm / float(self.down_mm @ self.down_mm)
        return np.stack([x, y], axis=1)


@dataclass(frozen=True)
class PlaneToTumor:
    """Where the image plane is relative to the tumor.

    Attributes
    ----------
    distance_mm
        Shortest distance from the image (the finite rectangle the frame covers) to the
        tumor, mm; 0 when the image cuts the tumor.
    cuts
        Whether the image cuts the tumor.
    """

    distance_mm: float
    cuts: bool


class MriContext:
    """The preoperative MRI (and optional tumor label) as a display uses them.

    Parameters
    ----------
    mri
        The MRI volume (RAS).
    label
        The tumor label map on any grid in the same RAS space (non-zero = tumor), or None.
    locator_px
        Side of each locator section, pixels.

    Raises
    ------
    InputError
        The label map is empty or does not overlap the MRI.
    """

    def __init__(self, mri: Volume, label: Volume | None = None, locator_px: int = 176):
        self.mri = mri
        self.label = label
        #: fingerprints of the volumes, checked against the ones ``usnav run`` publishes
        self.digest = mri.digest()
        self.label_digest = label.digest() if label is not None else ""
        self._data = np.ascontiguousarray(mri.data, dtype=np.float32)
        self._ras_to_voxel = np.linalg.inv(mri.affine)
        #: the MRI's box: a plane that misses it is said to, not drawn black as "same plane"
        self.extent = VolumeExtent(mri.affine, mri.shape)
        self.window = _window(self._data)
        low, high = mri.bounds_ras()
        self.bounds_mm = (np.asarray(low, np.float64), np.asarray(high, np.float64))
        self.tumor_points_mm = self._tumor_points(label)
        if self.tumor_points_mm is not None and len(self.tumor_points_mm):
            self.centre_mm = self.tumor_points_mm.mean(axis=0)
            low, high = self.bounds_mm
            inside = np.all((self.centre_mm >= low - 1) & (self.centre_mm <= high + 1))
            if not inside:
                raise InputError(
                    label.source if label is not None else "label",
                    "the tumor label does not overlap the MRI",
                    "give the label map of this case",
                )
        else:
            self.centre_mm = 0.5 * (self.bounds_mm[0] + self.bounds_mm[1])
        self.locators = (
            self._locator("sagittal", locator_px),
            self._locator("axial", locator_px),
        )
        self._pictures: dict[tuple[str, int], tuple[np.ndarray, float]] = {}
        # compile (or load from Numba's cache) the reslice now, not at the first frame shown
        self.reslice(np.eye(4), (2, 2))

    def locator_picture(self, locator: Locator, side: int) -> tuple[np.ndarray, float]:
        """The locator's MRI section with the tumor outlined, scaled to fit ``side`` pixels.

        Returns (BGR picture, display pixels per locator pixel); cached per size, since the
        sections do not move.
        """
        key = (locator.name, side)
        if key not in self._pictures:
            import cv2

            rows, cols = locator.background.shape
            scale = side / max(rows, cols)
            w, h = max(1, round(cols * scale)), max(1, round(rows * scale))
            grey = cv2.resize(locator.background, (w, h), interpolation=cv2.INTER_LINEAR)
            picture = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
            mask = cv2.resize(
                locator.tumor.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST
            )
            outlines, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(picture, outlines, -1, (60, 220, 60), 1, cv2.LINE_AA)
            self._pictures[key] = (picture, scale)
        return self._pictures[key]

    @staticmethod
    def _tumor_points(label: Volume | None, max_points: int = 40000) -> np.ndarray | None:
        if label is None:
            return None
        ijk = np.argwhere(np.asarray(label.data) != 0)
        if len(ijk) == 0:
            raise InputError(label.source, "the tumor label map is empty", "give a label map")
        if len(ijk) > max_points:
            ijk = ijk[:: int(np.ceil(len(ijk) / max_points))]
        return np.c_[ijk, np.ones(len(ijk))] @ label.affine[:3].T

    # -- sampling --------------------------------------------------------------------------

    def sample(self, ras_mm: np.ndarray) -> np.ndarray:
        """MRI grey levels (uint8, windowed) at RAS points of any shape (..., 3)."""
        pts = np.asarray(ras_mm, np.float64)
        m = self._ras_to_voxel
        # per axis, not as a (N, 3) @ (3, 3) product: small matrix products are slow on some BLAS
        ijk = [
            m[k, 0] * pts[..., 0] + m[k, 1] * pts[..., 1] + m[k, 2] * pts[..., 2] + m[k, 3]
            for k in range(3)
        ]
        return self._grey(ijk)

    def _grey(self, ijk: list[np.ndarray]) -> np.ndarray:
        from scipy import ndimage

        values = ndimage.map_coordinates(
            self._data, np.stack(ijk), order=1, mode="constant", cval=0.0, output=np.float32
        )
        return self._windowed(values)

    def _windowed(self, values: np.ndarray) -> np.ndarray:
        low, high = self.window
        grey = np.clip((values - low) * (255.0 / (high - low)), 0, 255)
        return grey.astype(np.uint8)

    def reslice(
        self, image_to_mri: np.ndarray, shape: tuple[int, int], max_side: int = MAX_PLANE_SIDE
    ) -> np.ndarray:
        """The MRI through an ultrasound frame's plane, on the frame's pixel grid.

        Parameters
        ----------
        image_to_mri
            4×4 frame pixel (col, row, 0, 1) → MRI RAS mm.
        shape
            The frame's (rows, cols).
        max_side
            Frames larger than this are sampled every ``step`` pixels (block centres), so the
            result has at most ``max_side`` samples per side; the display scales it anyway.

        Returns
        -------
        numpy.ndarray
            uint8 (rows / step, cols / step), windowed grey levels; 0 outside the MRI (all 0
            when ``image_to_mri`` is not finite).
        """
        rows, cols = int(shape[0]), int(shape[1])
        step = max(1, int(np.ceil(max(rows, cols) / max_side)))
        r = (np.arange(int(np.ceil(rows / step))) + 0.5) * step - 0.5
        c = (np.arange(int(np.ceil(cols / step))) + 0.5) * step - 0.5
        matrix = np.asarray(image_to_mri, np.float64)
        if not np.all(np.isfinite(matrix)):
            # a plane that cannot be placed shows no MRI (the compiled kernel reads out of
            # bounds at NaN positions: the process died, session 36)
            return np.zeros((len(r), len(c)), np.uint8)
        to_voxel = self._ras_to_voxel @ matrix
        first = np.array([c[0], r[0], 0.0, 1.0])
        origin = np.ascontiguousarray((to_voxel @ first)[:3])
        du = np.ascontiguousarray(to_voxel[:3, 0] * step)
        dv = np.ascontiguousarray(to_voxel[:3, 1] * step)
        values = np.empty((len(r), len(c)), np.float32)
        # the registration's compiled trilinear reslice (cached; warmed up on construction)
        from usnav.registration import _kernels

        _kernels.reslice_plane(self._data, origin, du, dv, values, np.float32(0.0))
        return self._windowed(values)

    # -- locators --------------------------------------------------------------------------

    def _locator(self, name: str, side: int) -> Locator:
        low, high = self.bounds_mm
        centre = self.centre_mm
        if name == "sagittal":  # anterior left, superior up; at the tumor's R
            right, down = np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, -1.0])
            edges = ("A", "P", "S", "I")
            corner = np.array([centre[0], high[1], high[2]])
            extent = (high[1] - low[1], high[2] - low[2])
        else:  # axial, radiological: patient's right on the left, anterior up; at the tumor's S
            right, down = np.array([-1.0, 0.0, 0.0]), np.array([0.0, -1.0, 0.0])
            edges = ("R", "L", "A", "P")
            corner = np.array([high[0], high[1], centre[2]])
            extent = (high[0] - low[0], high[1] - low[1])
        mm_per_px = max(extent) / side
        cols = max(8, round(extent[0] / mm_per_px))
        rows = max(8, round(extent[1] / mm_per_px))
        right_mm, down_mm = right * mm_per_px, down * mm_per_px
        origin = corner + 0.5 * (right_mm + down_mm)
        yy, xx = np.mgrid[0:rows, 0:cols]
        ras = origin + xx[..., None] * right_mm + yy[..., None] * down_mm
        background = self.sample(ras)
        tumor = np.zeros((rows, cols), bool)
        locator = Locator(name, background, tumor, origin, right_mm, down_mm, edges)
        if self.tumor_points_mm is not None:
            from scipy import ndimage

            px = np.round(locator.to_px(self.tumor_points_mm)).astype(int)
            ok = (px[:, 0] >= 0) & (px[:, 0] < cols) & (px[:, 1] >= 0) & (px[:, 1] < rows)
            tumor[px[ok, 1], px[ok, 0]] = True
            tumor[:] = ndimage.binary_closing(tumor, iterations=2) | tumor
            tumor[:] = ndimage.binary_fill_holes(tumor)
        return locator

    def plane_to_tumor(self, image_to_mri: np.ndarray, shape: tuple[int, int]) -> PlaneToTumor:
        """Distance from the frame's image rectangle to the tumor (needs a label), mm."""
        if self.tumor_points_mm is None:
            return PlaneToTumor(float("nan"), False)
        m = np.asarray(image_to_mri, np.float64)
        ex, ey, origin = m[:3, 0], m[:3, 1], m[:3, 3]
        sx, sy = float(np.linalg.norm(ex)), float(np.linalg.norm(ey))
        if sx == 0 or sy == 0:
            return PlaneToTumor(float("nan"), False)
        ux, uy = ex / sx, ey / sy
        normal = np.cross(ux, uy)
        normal /= np.linalg.norm(normal)
        d = self.tumor_points_mm - (origin - 0.5 * (ex + ey))  # from the image's corner
        u, v, w = d @ ux, d @ uy, d @ normal
        du = u - np.clip(u, 0.0, shape[1] * sx)
        dv = v - np.clip(v, 0.0, shape[0] * sy)
        inside = (du == 0) & (dv == 0)
        # the image cuts the tumor where tumor points lie on both sides of it, over the image
        half_voxel = 0.5 * float(np.min(self.label.spacing_mm)) if self.label is not None else 0.5
        cuts = bool(
            inside.any()
            and (np.abs(w[inside]).min() <= half_voxel or (w[inside].min() < 0 < w[inside].max()))
        )
        distance = 0.0 if cuts else float(np.sqrt(du**2 + dv**2 + w**2).min())
        return PlaneToTumor(distance, cuts)


def direction_letter(vector_mm: np.ndarray) -> str:
    """The patient direction (R, L, A, P, S, I) a RAS vector points to most."""
    v = np.asarray(vector_mm, np.float64)[:3]
    if not np.all(np.isfinite(v)) or not np.any(v):
        return ""
    axis = int(np.argmax(np.abs(v)))
    return ("RL", "AP", "SI")[axis][0 if v[axis] > 0 else 1]
