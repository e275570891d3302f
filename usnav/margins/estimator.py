"""Per-frame tumor margins from the MRI tumor label and the ultrasound itself.

For each frame: the tumor label (solid and cyst separately) is resliced into the frame's plane
with ``ImageToMri`` (pixel (col, row, 0, 1) → MRI RAS mm, including mm/pixel), its boundary
traced to contours (pixels and MRI mm), then refined on the ultrasound (see
:mod:`usnav.margins.refine`): per boundary point the disagreement between the MRI-predicted and
the ultrasound-observed margin and a confidence. Per frame also: the tumor's extent in the
frame, its distance below the image's top, and the signed distance from a tracked tool tip to
the tumor surface.

"No tumor in view" is explicit (``in_view=False`` with a reason), never an empty contour.
"""

from __future__ import annotations

import collections
import functools
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage import measure

from usnav.errors import InputError
from usnav.io.volume import Volume
from usnav.margins import _kernels
from usnav.margins.contours import contours_of
from usnav.margins.options import MarginOptions
from usnav.margins.refine import refine_contour
from usnav.registration.estimate import RegistrationEstimate

SOLID = "solid"
CYST = "cyst"


#: the reason of a frame whose plane misses the whole label map (the registration places it
#: elsewhere): not the same as a frame beside the tumor
OUTSIDE_LABEL_MAP = "no tumor: the frame lies outside the tumor label map's volume"


@dataclass(frozen=True)
class MarginContour:
    """One closed boundary of one structure in one frame.

    Attributes
    ----------
    structure
        ``"solid"`` or ``"cyst"``.
    label
        The structure's value in the label map.
    hole
        True if this is the boundary of a hole in the structure.
    predicted_px
        (N, 2) MRI-predicted boundary points, image pixels (x = col, y = row).
    normals_px
        (N, 2) unit normals pointing out of the structure (image plane).
    observed_px
        (N, 2) the boundary the ultrasound supports (equal to ``predicted_px`` where it
        supports none, i.e. where ``confidence`` is 0 and refinement found nothing).
    disagreement_mm
        (N,) signed distance from the predicted to the observed boundary along the normal,
        mm: positive = the ultrasound shows the margin further out than the MRI predicts.
    confidence
        (N,) 0..1: how clearly the ultrasound shows an edge at ``observed_px``.
    predicted_mri_mm, observed_mri_mm
        (N, 3) the same points in MRI RAS mm.
    faces_tissue
        (N,) bool: the boundary here faces non-tumor tissue (a true margin), not the other
        tumor structure (e.g. the solid part's border with its cyst).
    """

    structure: str
    label: int
    hole: bool
    predicted_px: np.ndarray
    normals_px: np.ndarray
    observed_px: np.ndarray
    disagreement_mm: np.ndarray
    confidence: np.ndarray
    predicted_mri_mm: np.ndarray
    observed_mri_mm: np.ndarray
    faces_tissue: np.ndarray

    @property
    def n_points(self) -> int:
        return len(self.predicted_px)


@dataclass(frozen=True)
class TumorExtent:
    """Size of the tumor's cross-section in a frame (solid and cyst together), mm.

    Attributes
    ----------
    lateral_mm
        Width along the image x axis (columns).
    axial_mm
        Height along the image y axis (rows, depth).
    max_diameter_mm
        Largest distance between two boundary points.
    area_mm2
        Cross-section area.
    """

    lateral_mm: float
    axial_mm: float
    max_diameter_mm: float
    area_mm2: float


@dataclass(frozen=True)
class StylusDistance:
    """Where a tracked tool tip is relative to the tumor.

    Attributes
    ----------
    signed_distance_mm
        Distance from the tip to the tumor surface (solid ∪ cyst) in 3D, mm; negative inside.
    nearest_mri_mm
        (3,) nearest point on the tumor surface, MRI RAS mm.
    tip_px
        (2,) the tip projected into the frame, pixels (x = col, y = row).
    out_of_plane_mm
        Signed distance of the tip from the frame's plane, mm.
    """

    signed_distance_mm: float
    nearest_mri_mm: np.ndarray
    tip_px: np.ndarray
    out_of_plane_mm: float


@dataclass(frozen=True)
class FrameMargins:
    """Tumor margins in one frame.

    Attributes
    ----------
    frame_number
        The frame's number (0 when not given).
    in_view
        Whether any tumor cross-section is in the frame. When False, ``contours`` is empty and
        ``reason`` says why; nothing here may be drawn as a margin.
    reason
        Why nothing is in view ("" when ``in_view``).
    contours
        All boundaries, solid then cyst.
    label_image
        uint8 (rows, cols): 0 background, else the label value (solid / cyst), or None when
        not in view. (Label values above 255 are stored as their code 1 = solid, 2 = cyst.)
    image_to_mri
        The 4×4 used (pixel → MRI RAS mm).
    spacing_mm
        (x, y) pixel size, mm.
    extent
        Cross-section size (None when not in view).
    distance_to_top_mm
        Distance from the image's top row (the transducer face; the dura when the probe rests
        on it) down to the shallowest tumor boundary of the predicted contours (the MRI label
        through ``ReferenceToMri``, as ``extent``; the observed points do not move it), mm
        (NaN when not in view).
    stylus
        Tool tip distances, None when no tip was given.
    polarity
        Per structure, how it looks on this frame: ``"hyperechoic"``, ``"hypoechoic"``,
        ``"isoechoic"`` (empty when not refined).
    supported_fraction
        Fraction of margin points (those facing tissue) the ultrasound supports
        (confidence ≥ threshold).
    median_abs_disagreement_mm
        Median |disagreement| over the supported margin points (NaN if none).
    registration_accepted, registration_quality, registration_age_s, registration_sequence
        From the registration estimate the frame was mapped with (age at estimation time).
    compute_s
        Time spent estimating, s.
    """

    frame_number: int
    in_view: bool
    reason: str
    contours: tuple[MarginContour, ...]
    label_image: np.ndarray | None
    image_to_mri: np.ndarray
    spacing_mm: tuple[float, float]
    extent: TumorExtent | None = None
    distance_to_top_mm: float = float("nan")
    stylus: StylusDistance | None = None
    polarity: dict[str, str] = field(default_factory=dict)
    supported_fraction: float = 0.0
    median_abs_disagreement_mm: float = float("nan")
    registration_accepted: bool = False
    registration_quality: float = float("nan")
    registration_age_s: float = float("nan")
    registration_sequence: int = -1
    compute_s: float = 0.0


def calibrate_confidence(
    raw_confidence: np.ndarray, knots: tuple[tuple[float, float], ...] | None
) -> np.ndarray:
    """Raw refinement confidences through monotone (raw, calibrated) knots, linear in between
    (None: unchanged)."""
    if knots is None:
        return raw_confidence
    raw, out = np.asarray(knots, dtype=np.float64).T
    return np.interp(raw_confidence, raw, out)


class MarginEstimator:
    """Estimates tumor margins per frame from a tumor label map.

    Parameters
    ----------
    label
        The tumor label map in MRI RAS space; solid and cyst as distinct values (see
        ``options.solid_label`` / ``options.cyst_label``). Other values count as background.
    options
        Estimation settings (defaults: solid 1, cyst 2, ±3 mm search band).
    warm_up
        Compile the Numba kernels now (≈1 s from the cache, longer cold), not on the first frame.

    Notes
    -----
    Stateful in one respect: how each structure looks on ultrasound (hyper-, hypo-, iso-echoic)
    is judged over its recent contours (``options.polarity_memory``), since it is a property of
    the tumor, not of one frame; :meth:`reset` forgets it. Feed one estimator one stream.

    The label map is cropped to the tumor's bounding box (plus a margin) once, so the per-frame
    cost does not depend on the label map's size. :attr:`problem` holds a message when the
    label map has none of the configured labels; every frame is then "no tumor in view".
    """

    def __init__(
        self, label: Volume, options: MarginOptions | None = None, *, warm_up: bool = True
    ):
        self.options = options or MarginOptions()
        self.source = label.source
        data = np.asarray(label.data)
        if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
            raise InputError(label.source, f"tumor label map has dtype {data.dtype}, not numbers")
        values = {SOLID: self.options.solid_label}
        if self.options.cyst_label is not None:
            values[CYST] = self.options.cyst_label
        self.structures: list[tuple[str, int, int]] = []  # (name, label value, code)
        codes = np.zeros(data.shape, np.uint8)
        for code, (name, value) in enumerate(values.items(), start=1):
            if np.issubdtype(data.dtype, np.floating):
                hit = np.abs(data - value) < 0.5
            else:
                hit = data == value
            codes[hit] = code
            self.structures.append((name, int(value), code))
        #: code → the value the label image shows (the label value; its code above 255)
        self._label_values = np.zeros(256, np.uint8)
        for _, value, code in self.structures:
            self._label_values[code] = value if value <= 255 else code
        self.problem = ""
        present = np.nonzero(codes)
        if present[0].size == 0:
            found = np.unique(data[np.isfinite(data)] if data.dtype.kind == "f" else data)
            found = found[found != 0][:8]
            wanted = ", ".join(f"{name}={value}" for name, value in values.items())
            self.problem = (
                f"tumor label map {label.source} has no voxels labelled {wanted}"
                f" (its non-zero values: {', '.join(str(v) for v in found) or 'none'});"
                " set [margins] solid_label / cyst_label"
            )
            lo = np.zeros(3, int)
            hi = np.ones(3, int)
        else:
            pad = 2
            lo = np.maximum(np.array([p.min() for p in present]) - pad, 0)
            hi = np.minimum(np.array([p.max() for p in present]) + pad + 1, data.shape)
        #: the whole label map's extent (voxels) and MRI RAS mm → its voxel index: a frame
        #: that misses it says so instead of "no tumor"
        self._label_shape = np.array(data.shape[:3], float)
        self._mri_to_label_voxel = np.linalg.inv(label.affine)
        self._codes = np.ascontiguousarray(codes[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])
        shift = np.eye(4)
        shift[:3, 3] = lo
        #: voxel index of the cropped code array → MRI RAS mm
        self.crop_affine = label.affine @ shift
        self._mri_to_voxel = np.linalg.inv(self.crop_affine)
        self._surface_tree, self._surface_points = self._build_surface()
        #: per structure, the polarity contrasts of its recent contours (echogenicity memory)
        self._contrast_memory: dict[str, collections.deque[float]] = {
            name: collections.deque(maxlen=self.options.polarity_memory)
            for name, _, _ in self.structures
        }
        if warm_up:
            self.warm_up()

    # -- set-up --------------------------------------------------------------------------

    def _build_surface(self) -> tuple[cKDTree | None, np.ndarray]:
        """Tumor surface (solid ∪ cyst): the 0.5 level of its indicator, as a triangle mesh in
        MRI mm (the surface the frame's contours trace in the plane: a tool tip on a drawn
        contour is on it). Outside the label map counts as background, as in the reslice, so a
        tumor cut by the map's edge is closed there. Returns a tree of the triangles' centroids
        and the mesh's vertices (the midpoints of the inside/outside voxel faces), MRI mm."""
        inside = self._codes > 0
        if not inside.any():
            return None, np.zeros((0, 3))
        padded = np.pad(inside, 1).astype(np.float32)
        vertices, faces, _, _ = measure.marching_cubes(padded, 0.5)
        vertices = vertices.astype(np.float64) - 1.0  # padded index → cropped index
        world = vertices @ self.crop_affine[:3, :3].T + self.crop_affine[:3, 3]
        #: (T, 3, 3) the surface's triangles, MRI mm
        self._triangles = world[faces]
        centroids = self._triangles.mean(axis=1)
        #: the farthest any triangle's point lies from its centroid, mm
        self._triangle_reach = float(
            np.linalg.norm(self._triangles - centroids[:, None, :], axis=2).max()
        )
        #: the indicator with its 1-voxel background border, for the inside test
        self._indicator = padded
        return cKDTree(centroids), world

    def _nearest_on_surface(self, point: np.ndarray) -> tuple[float, np.ndarray]:
        """Distance (mm) from one MRI point to the surface mesh, and the nearest surface point.

        Exact on the mesh: the nearest triangle's centroid bounds the distance, so only the
        triangles whose centroid lies within that bound plus a triangle's reach are checked.
        """
        assert self._surface_tree is not None
        bound, _ = self._surface_tree.query(point)
        near = self._surface_tree.query_ball_point(point, bound + self._triangle_reach + 1e-9)
        closest = _closest_on_triangles(point, self._triangles[np.asarray(near, np.int64)])
        distance = np.linalg.norm(closest - point, axis=1)
        best = int(np.argmin(distance))
        return float(distance[best]), closest[best]

    def reset(self) -> None:
        """Forget the structures' echogenicity seen so far (e.g. for another patient)."""
        for memory in self._contrast_memory.values():
            memory.clear()

    def structure_contrast(self, name: str) -> float | None:
        """A structure's polarity contrast over recent frames (median, speckle SDs); None if
        not seen yet."""
        memory = self._contrast_memory.get(name)
        return float(np.median(memory)) if memory else None

    def warm_up(self) -> float:
        """Compile/load the kernels and run one tiny estimate; returns the seconds it took."""
        t0 = time.perf_counter()
        _kernels.warm_up()
        image = np.zeros((16, 16), np.uint8)
        self.estimate(image, np.eye(4), None)
        self.reset()
        return time.perf_counter() - t0

    # -- per frame -----------------------------------------------------------------------

    def estimate(
        self,
        frame_image: np.ndarray,
        image_to_mri: np.ndarray,
        estimate: RegistrationEstimate | None,
        stylus_tip_mri: np.ndarray | None = None,
        *,
        frame_number: int = 0,
        now: float | None = None,
    ) -> FrameMargins:
        """Margins in one frame.

        Parameters
        ----------
        frame_image
            Ultrasound pixels, (rows, cols) uint8 (uint16 and (rows, cols, channels) are
            accepted; colour is averaged).
        image_to_mri
            4×4: image pixel (col, row, 0, 1) → MRI RAS mm (= ReferenceToMri · ImageToReference,
            including mm/pixel).
        estimate
            The registration estimate behind ``image_to_mri`` (for accepted/quality/age), or
            None if none (margins are then computed but flagged not accepted).
        stylus_tip_mri
            (3,) tracked tool tip, MRI RAS mm, or None.
        frame_number
            Copied into the result.
        now
            Time for the registration's age, s since the epoch (default: now).

        Raises
        ------
        InputError
            An image that is not 2D/3D, or a matrix that is not a finite 4×4.
        """
        t0 = time.perf_counter()
        image = np.asarray(frame_image)
        if image.ndim == 3:
            image = image.mean(axis=2)
        if image.ndim != 2:
            raise InputError(
                "frame image", f"expected (rows, cols) pixels, got shape {image.shape}"
            )
        m = np.asarray(image_to_mri, dtype=np.float64)
        if m.shape != (4, 4) or not np.all(np.isfinite(m)):
            raise InputError("ImageToMri", "not a finite 4×4 matrix")
        rows, cols = image.shape
        spacing = (float(np.linalg.norm(m[:3, 0])), float(np.linalg.norm(m[:3, 1])))
        reg = self._registration_fields(estimate, now)
        stylus = self._stylus(stylus_tip_mri, m) if stylus_tip_mri is not None else None

        def nothing(reason: str) -> FrameMargins:
            return FrameMargins(
                frame_number,
                False,
                reason,
                (),
                None,
                m,
                spacing,
                stylus=stylus,
                compute_s=time.perf_counter() - t0,
                **reg,
            )

        if self.problem:
            return nothing(self.problem)
        if rows == 0 or cols == 0:
            return nothing("empty frame")
        if min(spacing) <= 0:
            return nothing("ImageToMri has a zero pixel size")

        image_to_voxel = self._mri_to_voxel @ m
        n_codes = len(self.structures)
        codes = np.empty((rows, cols), np.uint8)
        if self.options.interpolation == "linear":
            fractions = np.empty((n_codes, rows, cols), np.float32)
            # per pixel the share of it the tumor covers (all codes together), 0..1
            tumor_share = np.empty((rows, cols), np.float32)
            n_tumor_px, box = _kernels.reslice_label_codes(
                self._codes, image_to_voxel, n_codes, fractions, tumor_share, codes
            )
        else:
            fractions = tumor_share = None
            _kernels.reslice_label_nearest(self._codes, image_to_voxel, codes)
            n_tumor_px = int(np.count_nonzero(codes))
            box = (0, rows, 0, cols)
        # the tumor's pixels all lie in the box (row_lo, row_hi, col_lo, col_hi)
        row_lo, row_hi, col_lo, col_hi = box
        codes_in_box = codes[row_lo:row_hi, col_lo:col_hi]
        if n_tumor_px == 0:
            if not self._touches_label_map(m, rows, cols):
                return nothing(OUTSIDE_LABEL_MAP)
            return nothing("no tumor in this frame's plane")

        mm_per_px = 0.5 * (spacing[0] + spacing[1])
        min_area_px = self.options.min_area_mm2 / (spacing[0] * spacing[1])
        spacing_px = self.options.point_spacing_mm / mm_per_px
        smoothed = None
        if self.options.refine:
            smoothed = _smooth(image, self.options.smoothing_mm / mm_per_px)

        contours: list[MarginContour] = []
        polarity: dict[str, str] = {}
        for name, value, code in self.structures:
            mask = np.equal(codes_in_box, code).view(np.uint8)
            if not mask.any():
                continue
            fraction = None
            if fractions is not None and tumor_share is not None:
                fraction = _structure_level(fractions, tumor_share, code, box)
            for traced in contours_of(
                mask,
                fraction,
                spacing_px,
                self.options.max_points_per_contour,
                min_area_px,
                offset=(col_lo, row_lo),
            ):
                n = len(traced.points)
                if smoothed is not None:
                    refined = refine_contour(
                        smoothed,
                        traced.points,
                        traced.normals,
                        mm_per_px,
                        self.options,
                        memory=self._contrast_memory[name],
                    )
                    offset_mm = refined.offset_mm
                    confidence = self.calibrated(refined.confidence)
                    polarity.setdefault(name, refined.polarity)
                else:
                    offset_mm, confidence = np.zeros(n), np.zeros(n)
                observed = traced.points + (offset_mm / mm_per_px)[:, None] * traced.normals
                faces_tissue = _outside_tumor(codes, traced.points + 1.5 * traced.normals)
                contours.append(
                    MarginContour(
                        structure=name,
                        label=value,
                        hole=traced.hole,
                        predicted_px=traced.points,
                        normals_px=traced.normals,
                        observed_px=observed,
                        disagreement_mm=offset_mm,
                        confidence=confidence,
                        predicted_mri_mm=_to_mri(m, traced.points),
                        observed_mri_mm=_to_mri(m, observed),
                        faces_tissue=faces_tissue,
                    )
                )
        if not contours:
            return nothing("tumor cross-section in this frame is below min_area_mm2")

        label_image = self._label_values[codes]
        outer = [c.predicted_px for c in contours if not c.hole]
        every = np.vstack(outer) if outer else np.vstack([c.predicted_px for c in contours])
        area_px = float(tumor_share.sum()) if tumor_share is not None else float(n_tumor_px)
        extent = _extent(every, spacing, area_px * spacing[0] * spacing[1])
        top_mm = float(max(every[:, 1].min(), 0.0) * spacing[1])
        facing = np.concatenate([c.faces_tissue for c in contours])
        confidence_all = np.concatenate([c.confidence for c in contours])[facing]
        disagreement_all = np.concatenate([c.disagreement_mm for c in contours])[facing]
        supported = confidence_all >= self.options.support_threshold
        median_abs = (
            float(np.median(np.abs(disagreement_all[supported])))
            if supported.any()
            else float("nan")
        )
        supported_fraction = float(supported.mean()) if supported.size else 0.0
        return FrameMargins(
            frame_number=frame_number,
            in_view=True,
            reason="",
            contours=tuple(contours),
            label_image=label_image,
            image_to_mri=m,
            spacing_mm=spacing,
            extent=extent,
            distance_to_top_mm=top_mm,
            stylus=stylus,
            polarity=polarity,
            supported_fraction=supported_fraction,
            median_abs_disagreement_mm=median_abs,
            compute_s=time.perf_counter() - t0,
            **reg,
        )

    def signed_distance_mm(self, points_mri: np.ndarray) -> np.ndarray:
        """Signed distance from MRI points (…, 3) to the tumor surface, mm (negative inside).

        NaN when the label map holds no tumor.
        """
        p = np.asarray(points_mri, dtype=np.float64)
        if self._surface_tree is None:
            return np.full(p.shape[:-1], np.nan)
        flat = p.reshape(-1, 3)
        distance = np.array([self._nearest_on_surface(point)[0] for point in flat])
        inside = self._inside(flat)
        return np.where(inside, -distance, distance).reshape(p.shape[:-1])

    def _inside(self, points_mri: np.ndarray) -> np.ndarray:
        """Whether each MRI point lies inside the tumor: its indicator, interpolated
        trilinearly as the reslice does, is at least 0.5 (the surface's side)."""
        voxel = points_mri @ self._mri_to_voxel[:3, :3].T + self._mri_to_voxel[:3, 3]
        share = ndimage.map_coordinates(
            self._indicator, (voxel + 1.0).T, order=1, mode="constant", cval=0.0
        )
        return np.asarray(share >= 0.5)

    def calibrated(self, raw_confidence: np.ndarray) -> np.ndarray:
        """The published confidence of raw refinement confidences: the probability that the
        ultrasound's point beats the MRI's (``options.confidence_calibration``)."""
        return calibrate_confidence(raw_confidence, self.options.confidence_calibration)

    def plane_distance_mm(
        self, image_to_mri: np.ndarray, image_shape: tuple[int, int], within_mm: float = 0.0
    ) -> float:
        """Smallest distance from the tumor surface (solid ∪ cyst) to the frame's plane, over
        the surface points whose projection falls in the image (grown by ``within_mm``), mm;
        inf when none does.

        Parameters
        ----------
        image_to_mri
            4×4 pixel (col, row, 0, 1) → MRI RAS mm.
        image_shape
            (rows, cols) of the frame.
        within_mm
            How far outside the image's edges a projection may fall and still count, mm.
        """
        points = self._surface_points
        m = np.asarray(image_to_mri, dtype=np.float64)
        if len(points) == 0 or not np.all(np.isfinite(m)):
            return float("inf")
        c0, c1, origin = m[:3, 0], m[:3, 1], m[:3, 3]
        normal = np.cross(c0, c1)
        norm = float(np.linalg.norm(normal))
        s0, s1 = float(c0 @ c0), float(c1 @ c1)
        if norm == 0 or s0 == 0 or s1 == 0:
            return float("inf")
        r = points - origin
        col, row = r @ c0 / s0, r @ c1 / s1
        rows, cols = image_shape
        grow_c, grow_r = within_mm / np.sqrt(s0), within_mm / np.sqrt(s1)
        inside = (
            (col >= -0.5 - grow_c)
            & (col <= cols - 0.5 + grow_c)
            & (row >= -0.5 - grow_r)
            & (row <= rows - 0.5 + grow_r)
        )
        if not inside.any():
            return float("inf")
        return float(np.abs(r[inside] @ (normal / norm)).min())

    def _touches_label_map(self, image_to_mri: np.ndarray, rows: int, cols: int) -> bool:
        """Whether any pixel of a 9 × 9 grid over the frame (corners included) falls inside
        the label map's volume (the whole map, not only around the tumor)."""
        voxels = (self._mri_to_label_voxel @ image_to_mri @ _probe_grid(rows, cols))[:3]
        inside = np.all((voxels >= -0.5) & (voxels <= self._label_shape[:, None] - 0.5), axis=0)
        return bool(inside.any())

    def absence_doubt(
        self, margins: FrameMargins, uncertainty_mm: float, image_shape: tuple[int, int]
    ) -> str:
        """Why a frame's "no tumor in view" is not certain, "" when it is (or when the tumor is
        in view).

        "No tumor in view" is a claim only when the tumor's predicted cross-section is absent
        under the registration's uncertainty: when the tumor surface lies within
        ``uncertainty_mm`` (its 95 % bound) of the plane, inside the image, it may be in view.
        An unknown uncertainty gives no doubt here: the display state is UNCERTAIN anyway.
        """
        if margins.in_view or self.problem or not np.isfinite(uncertainty_mm):
            return ""
        distance = self.plane_distance_mm(margins.image_to_mri, image_shape, uncertainty_mm)
        if distance > uncertainty_mm:
            return ""
        return (
            f"the tumor lies {distance:.1f} mm from this plane, within the registration's "
            f"±{uncertainty_mm:.1f} mm: it may be in view"
        )

    def _stylus(self, tip_mri: np.ndarray, image_to_mri: np.ndarray) -> StylusDistance | None:
        tip = np.asarray(tip_mri, dtype=np.float64)
        if tip.shape != (3,):
            raise InputError("stylus tip", f"expected an (x, y, z) MRI position, got {tip.shape}")
        if not np.all(np.isfinite(tip)) or self._surface_tree is None:
            return None
        distance, nearest = self._nearest_on_surface(tip)
        signed = -distance if self._inside(tip[None])[0] else distance
        # in-plane projection: solve [ex ey n] · (col, row, d) = tip − origin
        ex, ey, origin = image_to_mri[:3, 0], image_to_mri[:3, 1], image_to_mri[:3, 3]
        normal = np.cross(ex, ey)
        normal /= max(np.linalg.norm(normal), 1e-12)
        col, row, off = np.linalg.solve(np.stack([ex, ey, normal], axis=1), tip - origin)
        return StylusDistance(
            signed_distance_mm=float(signed),
            nearest_mri_mm=nearest,
            tip_px=np.array([col, row]),
            out_of_plane_mm=float(off),
        )

    @staticmethod
    def _registration_fields(estimate: RegistrationEstimate | None, now: float | None) -> dict:
        if estimate is None:
            return {}
        return {
            "registration_accepted": bool(estimate.accepted),
            "registration_quality": float(estimate.quality),
            "registration_age_s": float(estimate.age_s(now)),
            "registration_sequence": int(estimate.sequence),
        }


@functools.lru_cache(maxsize=8)
def _probe_grid(rows: int, cols: int) -> np.ndarray:
    """(4, 81) homogeneous pixels (col, row, 0, 1) of a 9 × 9 grid over a rows × cols frame,
    corners included (read-only: shared by every frame of that size)."""
    c, r = np.meshgrid(np.linspace(0, cols - 1, 9), np.linspace(0, rows - 1, 9))
    pixels = np.stack([c.ravel(), r.ravel(), np.zeros(c.size), np.ones(c.size)])
    pixels.setflags(write=False)
    return pixels


def _structure_level(
    fractions: np.ndarray, tumor_share: np.ndarray, code: int, box: tuple[int, int, int, int]
) -> np.ndarray:
    """(rows, cols) float32 whose 0.5 level is structure ``code``'s boundary in the frame.

    The structure's pixels are those the tumor covers at least half of (``tumor_share``
    ≥ 0.5) where its fraction beats every other structure's: the 0.5 level of
    ``0.5 + min(tumor_share − 0.5, fraction − other fractions' max)``. It is the structure's
    own fraction where no other structure is near; where solid and cyst meet the tissue
    together it is the tumor's outer boundary (the structure's own 0.5 level lies inside it
    there, each structure covering part of the boundary pixels), and between them their
    equal-fraction line.
    """
    own = fractions[code - 1]
    if len(fractions) == 1:
        return own
    level = np.zeros(own.shape, np.float32)
    r0, r1, c0, c1 = box
    others = np.delete(fractions[:, r0:r1, c0:c1], code - 1, axis=0).max(axis=0)
    inside = own[r0:r1, c0:c1]
    level[r0:r1, c0:c1] = 0.5 + np.minimum(tumor_share[r0:r1, c0:c1] - 0.5, inside - others)
    return level


def _outside_tumor(codes: np.ndarray, points_px: np.ndarray) -> np.ndarray:
    """True where the pixel nearest each point is not tumor (or outside the image)."""
    rows, cols = codes.shape
    c = np.floor(points_px[:, 0] + 0.5).astype(np.int64)
    r = np.floor(points_px[:, 1] + 0.5).astype(np.int64)
    inside = (c >= 0) & (c < cols) & (r >= 0) & (r < rows)
    out = np.ones(len(points_px), bool)
    out[inside] = codes[r[inside], c[inside]] == 0
    return out


def _smooth(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Speckle-smoothed float32 copy of the image (Gaussian, sigma in pixels)."""
    f = image.astype(np.float32)
    if sigma_px < 0.3:
        return f
    return cv2.GaussianBlur(
        f, (0, 0), sigmaX=sigma_px, sigmaY=sigma_px, borderType=cv2.BORDER_REFLECT
    )


def _to_mri(image_to_mri: np.ndarray, points_px: np.ndarray) -> np.ndarray:
    return points_px @ image_to_mri[:3, :2].T + image_to_mri[:3, 3]


def _extent(points_px: np.ndarray, spacing: tuple[float, float], area_mm2: float) -> TumorExtent:
    mm = points_px * np.asarray(spacing)
    hull = cv2.convexHull(mm.astype(np.float32))[:, 0, :].astype(np.float64)
    if len(hull) >= 2:
        d = hull[:, None, :] - hull[None, :, :]
        diameter = float(np.sqrt((d**2).sum(axis=2)).max())
    else:
        diameter = 0.0
    lateral = float(np.ptp(mm[:, 0]))
    axial = float(np.ptp(mm[:, 1]))
    return TumorExtent(lateral, axial, diameter, area_mm2)


def _closest_on_triangles(point: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(T, 3) the point of each triangle (T, 3, 3) nearest to ``point`` (3,) (Ericson,
    *Real-Time Collision Detection*, 5.1.5: Voronoi regions of vertices, edges, face)."""
    a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    ab, ac, bc = b - a, c - a, c - b
    ap, bp, cp = point - a, point - b, point - c
    d1, d2 = (ab * ap).sum(1), (ac * ap).sum(1)
    d3, d4 = (ab * bp).sum(1), (ac * bp).sum(1)
    d5, d6 = (ab * cp).sum(1), (ac * cp).sum(1)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        # inside the face (the default), then the regions in reverse order of Ericson's
        # tests, so that the first test that holds writes last
        total = va + vb + vc
        out = a + ab * (vb / total)[:, None] + ac * (vc / total)[:, None]
        regions = [
            ((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), b, bc, (d4 - d3) / (d4 - d3 + d5 - d6)),
            ((vb <= 0) & (d2 >= 0) & (d6 <= 0), a, ac, d2 / (d2 - d6)),
            ((d6 >= 0) & (d5 <= d6), c, ac, np.zeros(len(a))),
            ((vc <= 0) & (d1 >= 0) & (d3 <= 0), a, ab, d1 / (d1 - d3)),
            ((d3 >= 0) & (d4 <= d3), b, ab, np.zeros(len(a))),
            ((d1 <= 0) & (d2 <= 0), a, ab, np.zeros(len(a))),
        ]
        for mask, start, edge, t in regions:
            out[mask] = start[mask] + t[mask, None] * edge[mask]
    # a degenerate (zero-area) triangle left in the face case: its vertices still count
    bad = ~np.all(np.isfinite(out), axis=1)
    out[bad] = a[bad]
    return out
