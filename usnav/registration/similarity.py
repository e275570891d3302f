"""Multi-resolution inputs of the registration and the similarity functions on them.

* :class:`MriLevel`: the MRI (cropped to the region of interest) at one pixel size, as an
  interleaved intensity + gradient-magnitude float32 volume for the Numba kernels.
* :class:`FrameLevel`: the sweep's frames resampled in plane to the same pixel size, with a
  per-frame validity mask (field of view, and US pixels that are exactly 0 when
  ``ignore_zero_pixels``), and a subset of frames spaced about one pixel apart.
* :class:`FrameSimilarity`: LC² (default), local NCC of gradient magnitudes or MIND-SSC
  descriptors of those frames against the MRI for a candidate ``ReferenceToMri``: the
  optimiser's cost.
* :class:`VolumeSimilarity`: the same LC² with 3D patches on a compounded US volume.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from usnav.errors import InputError
from usnav.io.volume import Volume
from usnav.registration import _kernels as K
from usnav.registration.sweep import Sweep

METRICS = ("lc2", "lc2_beam", "ncc_gradient", "mind_ssc")

#: MIND-SSC neighbour distance, pixels of the level (``metric="mind_ssc"``; notes/mind-ssc.md)
MIND_DISTANCE_PX = 1
#: MIND-SSC pixel weights: ``"us_std"`` (the local US standard deviation over the patch, as
#: LC² weights its patches; chosen on the tuning families, notes/mind-ssc.md) or ``"uniform"``
MIND_WEIGHTING = "us_std"

_local = threading.local()
_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


#: Below this (in voxels, pixels or mm) two sizes count as equal when a grid or a pixel count
#: is derived from them: inputs written with fewer digits, or by another tool, then give the
#: same grids and masks (session 36: 1e-12 mm of calibration noise turned an accepted
#: registration into a rejected one).
GRID_TOLERANCE = 1e-6


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def set_threads(threads: int) -> int:
    """Threads the calling thread's :class:`FrameSimilarity` evaluations use (its frames are
    shared among them; 0 = every core). Per calling thread, like ``numba.set_num_threads``:
    the streaming worker's thread keeps 1 while a batch registration elsewhere uses both
    cores. Returns the previous setting."""
    previous = get_threads()
    _local.threads = available_cores() if threads <= 0 else int(threads)
    return previous


def get_threads() -> int:
    """The calling thread's :func:`set_threads` (default 1)."""
    return getattr(_local, "threads", 1)


def _kernel_pool() -> ThreadPoolExecutor:
    """Shared helper threads of the split evaluations (the Numba kernels release the GIL, so
    the chunks run on separate cores; waiting threads sleep, they never spin)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=max(1, available_cores() - 1), thread_name_prefix="usnav-lc2"
            )
        return _pool


@dataclass
class MriLevel:
    """The MRI at one resolution.

    Attributes
    ----------
    spacing_mm
        Nominal voxel size of this level, mm.
    vol2
        (I, J, K, 2) float32: normalised intensity (≈ 0..1), gradient magnitude per mm.
    affine
        4×4 voxel index → MRI RAS mm.
    """

    spacing_mm: float
    vol2: np.ndarray
    affine: np.ndarray

    @property
    def world_to_voxel(self) -> np.ndarray:
        return np.linalg.inv(self.affine)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.vol2.shape[:3]  # type: ignore[return-value]


def crop_box(
    mri: Volume, points_ras: np.ndarray, margin_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Voxel index box [lo, hi) of ``mri`` covering ``points_ras`` (N, 3) plus ``margin_mm``.

    Raises
    ------
    InputError
        If the box does not intersect the volume (the sweep lies entirely outside the MRI).
    """
    vox = np.c_[points_ras, np.ones(len(points_ras))] @ mri.world_to_voxel.T
    margin_vox = margin_mm / mri.spacing_mm
    lo_f = vox[:, :3].min(axis=0) - margin_vox
    hi_f = vox[:, :3].max(axis=0) + margin_vox
    shape = np.array(mri.shape)
    lo = np.clip(np.floor(lo_f).astype(int), 0, shape)
    hi = np.clip(np.ceil(hi_f).astype(int) + 1, 0, shape)
    if np.any(hi - lo < 2):
        raise InputError(
            mri.source,
            "the sweep lies entirely outside the MRI under the initial ReferenceToMri",
            "check the initial registration (--init) and the MRI's orientation",
        )
    return lo, hi


def normalise_intensity(data: np.ndarray) -> np.ndarray:
    """float32 copy scaled so the 1st..99.5th percentiles map to 0..1 (robust to outliers)."""
    arr = np.asarray(data, dtype=np.float32)
    sample = arr.ravel()[:: max(1, arr.size // 200_000)]
    lo, hi = np.percentile(sample, [1.0, 99.5])
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo <= 0:
        lo, hi = float(sample.min()), float(sample.max())
    scale = 1.0 / (hi - lo) if hi > lo else 1.0
    return (arr - np.float32(lo)) * np.float32(scale)


def build_mri_levels(
    mri: Volume,
    spacings_mm: tuple[float, ...] | list[float],
    box: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[MriLevel]:
    """The MRI pyramid, coarse to fine, cropped to ``box`` (voxel index [lo, hi)).

    Each level is smoothed (Gaussian, σ = 0.4 × the downsampling factor) and resampled along
    the MRI's own voxel axes to about ``spacing_mm`` (never finer than the MRI).
    """
    if box is None:
        box = (np.zeros(3, int), np.array(mri.shape))
    lo, hi = box
    crop = mri.data[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    base = normalise_intensity(crop)
    native = mri.spacing_mm
    crop_affine = mri.affine @ _translation(lo.astype(float))
    levels = []
    for s in spacings_mm:
        factor = np.maximum(1.0, float(s) / native)
        if np.all(factor <= 1.0 + 1e-6):
            vol = np.ascontiguousarray(base)
            affine = crop_affine.copy()
        else:
            sigma = np.where(factor > 1.0 + 1e-6, 0.4 * factor, 0.0)
            smooth = ndimage.gaussian_filter(base, sigma=sigma, mode="nearest")
            # (a tolerance: an MRI whose spacing differs in its last bits, e.g. written by
            # another tool, gets the same grid; (79 − 1) / 1.5 fell on either side of 52)
            steps = np.floor((np.array(base.shape) - 1) / factor + GRID_TOLERANCE)
            new_shape = np.maximum(2, steps.astype(int) + 1)
            grids = [np.arange(n) * f for n, f in zip(new_shape, factor, strict=True)]
            vol = np.ascontiguousarray(
                ndimage.map_coordinates(
                    smooth, np.meshgrid(*grids, indexing="ij"), order=1, mode="nearest"
                ).astype(np.float32)
            )
            affine = crop_affine @ np.diag([*factor, 1.0])
        vol2 = np.empty((*vol.shape, 2), np.float32)
        vol2[..., 0] = vol
        grad = np.empty(vol.shape, np.float32)
        K.gradient_magnitude_3d(vol, np.linalg.norm(affine[:3, :3], axis=0), grad)
        vol2[..., 1] = grad
        levels.append(MriLevel(float(s), vol2, affine))
    return levels


def _translation(t: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = t
    return m


@dataclass
class FrameLevel:
    """The sweep's frames at one pixel size.

    Attributes
    ----------
    spacing_mm
        In-plane pixel size, mm.
    us
        (F, rows, cols) float32 US intensities.
    us_grad
        (F, rows, cols) float32 US gradient magnitude (for the NCC alternative).
    valid
        (F, rows, cols) uint8: 1 where the pixel counts.
    pixel_to_reference
        (F, 4, 4): level pixel (col, row, 0, 1) → Reference mm.
    frame_index
        (F,) indices of the chosen frames in the sweep.
    prepared
        The :class:`PreparedFrame` of each frame when a :class:`PreparedFrameCache` was used
        (its per-frame MIND-SSC descriptors are kept there too), else None.
    """

    spacing_mm: float
    us: np.ndarray
    us_grad: np.ndarray
    valid: np.ndarray
    pixel_to_reference: np.ndarray
    frame_index: np.ndarray
    prepared: list[PreparedFrame] | None = None

    def __len__(self) -> int:
        return int(self.us.shape[0])

    def points_reference(self, stride: int = 4) -> np.ndarray:
        """Reference mm of a grid of valid pixels of every frame (for extents and errors)."""
        out = []
        for f in range(len(self)):
            rows, cols = np.nonzero(self.valid[f, ::stride, ::stride])
            if rows.size == 0:
                continue
            pix = np.zeros((rows.size, 4))
            pix[:, 0] = cols * stride
            pix[:, 1] = rows * stride
            pix[:, 3] = 1.0
            out.append(pix @ self.pixel_to_reference[f].T)
        if not out:
            return np.zeros((0, 3))
        return np.concatenate(out)[:, :3]


#: The key of a MIND-SSC descriptor setting: (patch half-width, neighbour distance, min
#: fraction, weighting)
MindKey = tuple[int, int, float, str]


class PreparedFrame:
    """One frame as :func:`prepare_frame_level` resampled it, kept by a
    :class:`PreparedFrameCache`.

    Attributes
    ----------
    digest
        :func:`pixel_digest` of the frame's pixels in the field of view's crop: a later frame
        is this one only if its pixels have the same digest. None when the frame came with a
        frame id (:attr:`~usnav.registration.sweep.Sweep.frame_ids`; no pixels hashed): then
        only the same id finds it.
    frame_id
        That id, or None.
    us
        (rows, cols) float32 resampled US intensities (read-only).
    valid
        (rows, cols) uint8 validity (field of view, near field removed; read-only).
    mind
        MIND-SSC (descriptors, their validity, pixel weights) of ``us`` and ``valid`` per
        setting (:data:`MindKey`), filled by :func:`us_mind_descriptors`.
    """

    __slots__ = ("digest", "frame_id", "mind", "us", "valid")

    def __init__(
        self, digest: bytes | None, frame_id: int | None, us: np.ndarray, valid: np.ndarray
    ):
        self.digest = digest
        self.frame_id = frame_id
        self.us = _frozen_copy(us)
        self.valid = _frozen_copy(valid)
        self.mind: dict[MindKey, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _frozen_copy(array: np.ndarray) -> np.ndarray:
    out = np.array(array, copy=True)
    out.flags.writeable = False
    return out


def pixel_digest(pixels: np.ndarray) -> bytes:
    """SHA-256 of an array's dtype, shape and values (C order): what the frame cache keeps of
    a frame's pixels in place of a copy of them.

    Two arrays with the same digest are taken as equal. With a 256-bit digest a collision
    between a changed frame and a cached one is practically impossible (for two different
    arrays the chance is about 2⁻²⁵⁶; even 10¹² frames give ~10⁻⁵³ for any pair among them),
    so the check is as strict as comparing the pixels, and keeps 32 bytes per frame where
    a copy of the crop took ~60 kB. It took ~40 µs per 62 kB crop here (OpenSSL's SHA-256
    with the CPU's SHA extensions; BLAKE2b took ~60 µs). The streaming worker's frames carry
    ids instead (:attr:`~usnav.registration.sweep.Sweep.frame_ids`) and are not hashed.
    """
    h = hashlib.sha256(f"{pixels.dtype.str}{pixels.shape}".encode())
    h.update(np.ascontiguousarray(pixels))
    return h.digest()


class PreparedFrameGroup:
    """The cached frames of one preparation setting (crop, size, masking) and one field-of-view
    mask; see :class:`PreparedFrameCache` (whose lock ``lock`` is)."""

    def __init__(self, crop_mask: np.ndarray, max_frames: int, lock: threading.RLock):
        self.crop_mask = _frozen_copy(crop_mask)
        self.max_frames = int(max_frames)
        self.lock = lock
        self.frames: OrderedDict[tuple[float, bytes], PreparedFrame] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def find(
        self, key: tuple[float, bytes], source: np.ndarray, frame_id: int | None = None
    ) -> PreparedFrame | None:
        """The frame stored under ``key`` (time, pose bytes) if it has the id ``frame_id``
        (given by a caller that guarantees the same pixels for the same id) or else if its
        pixels have the digest of ``source`` (:func:`pixel_digest`)."""
        with self.lock:
            entry = self.frames.get(key)
        same = entry is not None and (
            (frame_id is not None and entry.frame_id == frame_id)
            or (entry.digest is not None and entry.digest == pixel_digest(source))
        )
        with self.lock:
            if not same:
                self.misses += 1
                return None
            if self.frames.get(key) is entry:  # (still kept: the hash ran outside the lock)
                self.frames.move_to_end(key)
            self.hits += 1
            return entry

    def store(
        self,
        key: tuple[float, bytes],
        source: np.ndarray,
        us: np.ndarray,
        valid: np.ndarray,
        frame_id: int | None = None,
    ) -> PreparedFrame:
        """Keep a freshly prepared frame (the least recently used one goes beyond
        ``max_frames``): with its id when given (its pixels are then not hashed), else with
        the digest of ``source``, its pixels in the crop."""
        digest = pixel_digest(source) if frame_id is None else None
        entry = PreparedFrame(digest, frame_id, us, valid)
        with self.lock:
            self.frames[key] = entry
            self.frames.move_to_end(key)
            while len(self.frames) > self.max_frames:
                self.frames.popitem(last=False)
        return entry


class PreparedFrameCache:
    """Frames already resampled by :func:`prepare_frame_level`, for a caller that prepares
    overlapping windows of the same frames again and again (the streaming worker: each update
    shares most of its frames with the previous one).

    A frame is found by its time and pose and used only if its pixels are the same as the
    cached frame's: the same frame id (:attr:`~usnav.registration.sweep.Sweep.frame_ids`,
    which the streaming worker gives each frame it copies into its window) or else the same
    SHA-256 digest of the pixels (:func:`pixel_digest`: no copy of the pixels is kept). The
    setting (crop, level size, zero-pixel masking, near-field parameters in pixels) and the
    field-of-view mask must also be the same. A hit gives the values the resampling would
    give: the cache changes the time taken, never a result.

    Parameters
    ----------
    max_frames
        Frames kept per setting (least recently used dropped), e.g. the worker's window.
    max_settings
        Settings kept (the least recently used one dropped with its frames).

    Safe to share between threads (one lock; the resampling itself runs outside it).
    """

    def __init__(self, max_frames: int = 256, max_settings: int = 4):
        self.max_frames = int(max_frames)
        self.max_settings = int(max_settings)
        self._groups: OrderedDict[tuple, PreparedFrameGroup] = OrderedDict()
        self._lock = threading.RLock()

    def group(self, settings: tuple, crop_mask: np.ndarray) -> PreparedFrameGroup:
        """The frames of ``settings`` (hashable) prepared with ``crop_mask`` (a new, empty
        group if that mask differs from the one they were prepared with)."""
        with self._lock:
            found = self._groups.get(settings)
            if found is None or not (
                found.crop_mask.shape == crop_mask.shape
                and np.array_equal(found.crop_mask, crop_mask)
            ):
                found = PreparedFrameGroup(crop_mask, self.max_frames, self._lock)
                self._groups[settings] = found
            self._groups.move_to_end(settings)
            while len(self._groups) > self.max_settings:
                self._groups.popitem(last=False)
            return found

    @property
    def hits(self) -> int:
        """Frames found so far (in the settings still kept)."""
        with self._lock:
            return sum(g.hits for g in self._groups.values())

    @property
    def misses(self) -> int:
        """Frames prepared afresh so far (in the settings still kept)."""
        with self._lock:
            return sum(g.misses for g in self._groups.values())

    def clear(self) -> None:
        """Forget every frame."""
        with self._lock:
            self._groups.clear()


def fov_corners(mask: np.ndarray) -> np.ndarray:
    """(4, 4) homogeneous pixel corners (col, row, 0, 1) of the mask's bounding box; (0, 4)
    for an empty mask."""
    # the first and last row and column holding a mask pixel (as np.nonzero's extremes,
    # without listing every pixel)
    rows = np.flatnonzero(np.any(mask, axis=1))
    cols = np.flatnonzero(np.any(mask, axis=0))
    if rows.size == 0:
        return np.zeros((0, 4))
    return np.array(
        [
            [cols[0], rows[0], 0, 1],
            [cols[-1], rows[0], 0, 1],
            [cols[0], rows[-1], 0, 1],
            [cols[-1], rows[-1], 0, 1],
        ],
        float,
    )


def select_frames(
    sweep: Sweep, min_distance_mm: float, max_frames: int, mask: np.ndarray
) -> np.ndarray:
    """Indices of frames spaced at least ``min_distance_mm`` apart (largest motion of the field
    of view's corners), at most ``max_frames`` (evenly thinned)."""
    corners = fov_corners(mask)
    if len(corners) == 0:
        return np.zeros(0, int)
    pos = np.ascontiguousarray(np.einsum("fij,cj->fci", sweep.image_to_reference, corners)[..., :3])
    # largest corner motion since the last chosen frame (a compiled loop without fastmath:
    # the same sums of squares as np.linalg.norm)
    chosen = np.empty(len(pos), np.int64)
    idx = chosen[: K.select_spaced_frames(pos, float(min_distance_mm), chosen)]
    if idx.size > max_frames:
        idx = idx[np.unique(np.linspace(0, idx.size - 1, max_frames).round().astype(int))]
    return idx


def prepare_frame_level(
    sweep: Sweep,
    spacing_mm: float,
    *,
    max_frames: int = 60,
    frame_distance_mm: float | None = None,
    ignore_zero_pixels: bool = False,
    frame_index: np.ndarray | None = None,
    near_field_fraction: float | None = None,
    near_field_min_depth_mm: float = 3.0,
    near_field_margin_mm: float = 1.0,
    cache: PreparedFrameCache | None = None,
) -> FrameLevel:
    """Resample the sweep's frames (cropped to the field of view) to ``spacing_mm`` pixels.

    Parameters
    ----------
    sweep
        The sweep.
    spacing_mm
        Target in-plane pixel size (frames are never upsampled).
    max_frames
        At most this many frames (spaced evenly among those ``frame_distance_mm`` apart).
    frame_distance_mm
        Minimum motion between chosen frames (default: ``spacing_mm``).
    ignore_zero_pixels
        Exclude US pixels that are exactly 0 (outside a scan-converted fan, or outside a
        resliced 3D volume), as LC²'s reference implementation does.
    frame_index
        Use exactly these frames instead of choosing.
    near_field_fraction, near_field_min_depth_mm, near_field_margin_mm
        Unless None, exclude each frame's anechoic near field
        (:func:`anechoic_near_field`, with these parameters).
    cache
        Frames prepared by earlier calls (:class:`PreparedFrameCache`): a frame whose
        pixels, time and pose were prepared before with the same crop, field of view, size
        and masking is copied from it instead of being resampled again (the same values).
        Its pixels are known to be the same by the sweep's frame id (``sweep.frame_ids``)
        or else by their digest. Not used with per-frame masks (``sweep.frame_masks``).
    """
    mask = sweep.mask()
    if not mask.any():
        raise InputError(
            sweep.source,
            "no ultrasound field of view found in the frames (all pixels constant or zero)",
            "check the recording's images",
        )
    rows_any = np.nonzero(mask.any(axis=1))[0]
    cols_any = np.nonzero(mask.any(axis=0))[0]
    r0, r1 = int(rows_any[0]), int(rows_any[-1]) + 1
    c0, c1 = int(cols_any[0]), int(cols_any[-1]) + 1
    sx, sy = sweep.pixel_spacing_mm
    kx = max(1.0, spacing_mm / sx)
    ky = max(1.0, spacing_mm / sy)
    new_cols = max(2, round((c1 - c0) / kx))
    new_rows = max(2, round((r1 - r0) / ky))
    kx = (c1 - c0) / new_cols
    ky = (r1 - r0) / new_rows
    if frame_index is None:
        frame_index = select_frames(sweep, frame_distance_mm or spacing_mm, max_frames, mask)
    n = len(frame_index)
    us = np.empty((n, new_rows, new_cols), np.float32)
    valid = np.empty((n, new_rows, new_cols), np.uint8)
    grad = np.empty((n, new_rows, new_cols), np.float32)
    crop_mask = mask[r0:r1, c0:c1].astype(np.float32)
    per_frame_mask = ignore_zero_pixels or sweep.frame_masks is not None
    if not per_frame_mask:  # the same mask for every frame: resampled once
        shared = cv2.resize(crop_mask, (new_cols, new_rows), interpolation=cv2.INTER_AREA) > 0.999
    near_field = None
    if near_field_fraction is not None:
        min_rows, widen = _near_field_extent(
            new_rows, (kx * sx, ky * sy), near_field_min_depth_mm, near_field_margin_mm
        )
        near_field = (float(near_field_fraction), min_rows, widen)
    group = None
    if cache is not None and sweep.frame_masks is None:
        settings = (r0, r1, c0, c1, new_rows, new_cols, bool(ignore_zero_pixels), near_field)
        group = cache.group(settings, crop_mask)
    entries: list[PreparedFrame] = []
    ids = sweep.frame_ids
    for out_i, f in enumerate(frame_index):
        source = sweep.images[f, r0:r1, c0:c1]
        entry = None
        if group is not None:
            frame_key = (float(sweep.timestamps[f]), sweep.image_to_reference[f].tobytes())
            frame_id = None if ids is None else int(ids[f])
            entry = group.find(frame_key, source, frame_id)
        if entry is None:
            img = np.asarray(source, dtype=np.float32)
            us[out_i] = cv2.resize(img, (new_cols, new_rows), interpolation=cv2.INTER_AREA)
            if per_frame_mask:
                m = crop_mask * (img > 0) if ignore_zero_pixels else crop_mask
                if sweep.frame_masks is not None:
                    m = m * sweep.frame_masks[f, r0:r1, c0:c1]
                valid[out_i] = (
                    cv2.resize(m, (new_cols, new_rows), interpolation=cv2.INTER_AREA) > 0.999
                )
            else:
                valid[out_i] = shared
            if near_field is not None:
                valid[out_i] &= ~_anechoic_layer(us[out_i], valid[out_i], *near_field)
            if group is not None:
                entry = group.store(frame_key, source, us[out_i], valid[out_i], frame_id)
        else:
            us[out_i] = entry.us
            valid[out_i] = entry.valid
        if entry is not None:
            entries.append(entry)
        # the gradient depends on the pixel size of this sweep's first pose (not cached)
        K.gradient_magnitude_2d(us[out_i], ky * sy, kx * sx, grad[out_i])
    level_to_pixel = np.array(
        [
            [kx, 0, 0, c0 + 0.5 * kx - 0.5],
            [0, ky, 0, r0 + 0.5 * ky - 0.5],
            [0, 0, 1, 0],
            [0, 0, 0, 1.0],
        ]
    )
    p2r = sweep.image_to_reference[frame_index] @ level_to_pixel
    return FrameLevel(
        float(spacing_mm),
        us,
        grad,
        valid,
        p2r,
        np.asarray(frame_index),
        entries if group is not None else None,
    )


def anechoic_near_field(
    us: np.ndarray,
    valid: np.ndarray,
    pixel_mm: tuple[float, float],
    *,
    fraction: float,
    min_depth_mm: float,
    margin_mm: float,
) -> np.ndarray:
    """The anechoic layer under the transducer face of one frame: the fluid of an open wound.

    After a laminectomy the probe scans through saline, which returns no echo, down to the
    first tissue; the preoperative MRI has muscle and bone there. Along each image column
    (a beam line, rows increase with depth) the pixels from the top of the field of view down
    to the first echo are the layer; the echo itself is kept. The mask is fixed in the image:
    it does not move with the pose, so there are no walls for an estimate to follow.

    Parameters
    ----------
    us
        (rows, cols) ultrasound intensities of one frame (any scale).
    valid
        (rows, cols) its field of view (nonzero = inside).
    pixel_mm
        (column, row) pixel size, mm.
    fraction
        A pixel is anechoic below ``fraction`` × the frame's 99th percentile inside the field
        of view.
    min_depth_mm
        A column's layer counts only if it is at least this deep (thinner: coupling gel or
        skin, not a fluid-filled wound).
    margin_mm
        The layer is widened sideways by this much on each side, so that no pixel at a
        wound's side wall, where the saline meets tissue, is compared.

    Returns
    -------
    (rows, cols) bool: True where the frame is the anechoic near field.
    """
    min_rows, widen = _near_field_extent(us.shape[0], pixel_mm, min_depth_mm, margin_mm)
    return _anechoic_layer(us, valid, fraction, min_rows, widen)


def _near_field_extent(
    rows: int, pixel_mm: tuple[float, float], min_depth_mm: float, margin_mm: float
) -> tuple[int, int]:
    """The pixel counts that stand for :func:`anechoic_near_field`'s millimetres.

    Returns
    -------
    (min_rows, widen): a column's layer counts when it has at least ``min_rows`` pixels (the
    fewest whose depth ``n · pixel_mm[1]`` reaches ``min_depth_mm``, as the same float64
    products; ``rows + 1`` when no column can), and is widened by ``widen`` columns on each
    side. Frames whose pixel sizes differ in their last bits give the same pair, so their
    near-field masks are the same (:class:`PreparedFrameCache` relies on it).
    """
    # (within GRID_TOLERANCE mm: a pixel size 1e-12 from 1.5 mm decided between 2 and 3 rows
    # at 3 mm, and the answer moved with how the calibration's digits were written)
    depths = np.arange(rows + 1) * pixel_mm[1]
    deep_enough = np.nonzero(depths >= min_depth_mm - GRID_TOLERANCE)[0]
    min_rows = int(deep_enough[0]) if deep_enough.size else rows + 1
    return min_rows, math.ceil(margin_mm / pixel_mm[0] - 1e-9)


def _anechoic_layer(
    us: np.ndarray, valid: np.ndarray, fraction: float, min_rows: int, widen: int
) -> np.ndarray:
    """:func:`anechoic_near_field` in pixels: ``min_rows`` and ``widen`` from
    :func:`_near_field_extent`. Returns (rows, cols) bool."""
    inside = np.asarray(valid, bool)
    if not inside.any():
        return np.zeros(inside.shape, bool)
    level = float(np.percentile(us[inside], 99.0))
    if level <= 0:
        return np.zeros(inside.shape, bool)
    dark_or_outside = (us < fraction * level) | ~inside
    layer = np.logical_and.accumulate(dark_or_outside, axis=0) & inside
    # (the count of a column is monotone in its depth n · pixel_mm: "n < min_rows" is the
    # same test as "n · pixel_mm < min_depth_mm")
    layer[:, layer.sum(axis=0) < min_rows] = False
    if widen > 0 and layer.any():
        kernel = np.ones((1, 2 * widen + 1), np.uint8)
        layer = cv2.dilate(layer.astype(np.uint8), kernel).astype(bool) & inside
    return layer


def us_mind_descriptors(
    frames: FrameLevel, half: int, distance: int, min_fraction: float, weighting: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MIND-SSC descriptors of every frame (they do not change with the pose).

    Returns
    -------
    (F, rows, cols, 6) float32 descriptors, (F, rows, cols) uint8 their validity and
    (F, rows, cols) float32 pixel weights (1 for ``weighting="uniform"``; for ``"us_std"``
    the US standard deviation over the (2·half+1)² patch's valid pixels). Frames prepared
    through a :class:`PreparedFrameCache` (``frames.prepared``) keep theirs there: a frame
    described before with the same setting is copied, not computed again.
    """
    if weighting not in ("uniform", "us_std"):
        raise ValueError(f"unknown MIND-SSC weighting {weighting!r}; expected uniform or us_std")
    n, rows, cols = frames.us.shape
    desc = np.zeros((n, rows, cols, K.N_MIND), np.float32)
    dvalid = np.zeros((n, rows, cols), np.uint8)
    weight = np.ones((n, rows, cols), np.float32)
    scratch: tuple[np.ndarray, ...] | None = None  # made for the first frame computed
    side = (2 * half + 1, 2 * half + 1)
    key: MindKey = (int(half), int(distance), float(min_fraction), weighting)
    for f in range(n):
        entry = None if frames.prepared is None else frames.prepared[f]
        kept = None if entry is None else entry.mind.get(key)
        if kept is not None:  # the same frame's pixels: the same descriptors
            desc[f], dvalid[f], weight[f] = kept
            continue
        us, fov = frames.us[f], frames.valid[f]
        if scratch is None:
            scratch = K.mind_scratch(rows, cols)[3:6]
        K.mind_ssc_image(us, fov, half, distance, min_fraction, desc[f], dvalid[f], *scratch)
        if weighting == "us_std":
            m = frames.valid[f].astype(np.float64)
            u = frames.us[f] * m
            box = {"ksize": side, "normalize": False, "borderType": cv2.BORDER_CONSTANT}
            cnt = cv2.boxFilter(m, -1, **box)
            s1 = cv2.boxFilter(u, -1, **box)
            s2 = cv2.boxFilter(u * u, -1, **box)
            with np.errstate(invalid="ignore", divide="ignore"):
                var = s2 / cnt - (s1 / cnt) ** 2
            weight[f] = np.sqrt(np.clip(np.nan_to_num(var), 0.0, None))
        if entry is not None:
            entry.mind[key] = (
                _frozen_copy(desc[f]),
                _frozen_copy(dvalid[f]),
                _frozen_copy(weight[f]),
            )
    return desc, dvalid, weight


class FrameSimilarity:
    """LC² (or local NCC of gradients) of a :class:`FrameLevel` against a :class:`MriLevel`.

    Parameters
    ----------
    mri
        The MRI level.
    frames
        The frames at the same resolution.
    metric
        ``"lc2"`` (default), ``"lc2_beam"`` (LC² with the MRI's derivative along the beam in
        place of its 3D gradient magnitude), ``"ncc_gradient"`` or ``"mind_ssc"`` (MIND-SSC
        descriptors, :func:`usnav.registration._kernels.mind_ssc_frames`).
    patch_half
        Patch half-width in pixels (3 → 7×7 patches).
    min_fraction
        Minimum valid fraction of a patch.
    mind_distance, mind_weighting
        MIND-SSC neighbour distance (pixels) and pixel weights (default
        :data:`MIND_DISTANCE_PX`, :data:`MIND_WEIGHTING`).
    """

    #: results kept for the most recently evaluated poses
    KEEP = 256

    def __init__(
        self,
        mri: MriLevel,
        frames: FrameLevel,
        *,
        metric: str = "lc2",
        patch_half: int = 3,
        min_fraction: float = 0.5,
        mind_distance: int | None = None,
        mind_weighting: str | None = None,
    ):
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
        self.mri = mri
        self.frames = frames
        self.metric = metric
        self.patch_half = int(patch_half)
        self.min_fraction = float(min_fraction)
        n = frames.us.shape[0]
        self._num = np.zeros(n)
        self._den = np.zeros(n)
        self._inside = np.zeros(n, np.int64)
        self._valid_total = np.maximum(frames.valid.reshape(n, -1).sum(axis=1), 1)
        self._world_to_voxel = mri.world_to_voxel
        self._chunks: dict[int, list[tuple]] = {}
        self._recent: OrderedDict[bytes, tuple[np.ndarray, ...]] = OrderedDict()
        self.evaluations = 0
        self.mind_distance = int(MIND_DISTANCE_PX if mind_distance is None else mind_distance)
        self.mind_weighting = MIND_WEIGHTING if mind_weighting is None else mind_weighting
        if metric == "mind_ssc":
            self._us_desc, self._us_dvalid, self._us_weight = us_mind_descriptors(
                frames, self.patch_half, self.mind_distance, self.min_fraction, self.mind_weighting
            )

    def frame_affines(self, reference_to_mri: np.ndarray) -> np.ndarray:
        """(F, 3, 3) columns du, dv, origin: level pixel → MRI-level voxel position."""
        b = self._world_to_voxel @ reference_to_mri
        m = np.einsum("ij,fjk->fik", b[:3], self.frames.pixel_to_reference)
        return np.ascontiguousarray(m[:, :, [0, 1, 3]])

    def _chunked(self, threads: int) -> list[tuple]:
        """The frames in ``threads`` contiguous runs, each as (part, kernel, the kernel's
        arguments before the affines, its arguments after them: views of the run's rows and
        its own scratch), made once per thread count."""
        found = self._chunks.get(threads)
        if found is None:
            n, rows, cols = self.frames.us.shape
            edges = np.linspace(0, n, max(1, min(threads, n)) + 1).round().astype(int)
            scratch = K.mind_scratch if self.metric == "mind_ssc" else K.frame_scratch
            found = self._chunks[threads] = [
                (part, self._kernel(), *self._kernel_arguments(part, scratch(rows, cols)))
                for part in (slice(int(a), int(b)) for a, b in itertools.pairwise(edges))
                if part.stop > part.start
            ]
        return found

    def _kernel_arguments(self, part: slice, scratch: tuple[np.ndarray, ...]) -> tuple:
        """(arguments before the affines, arguments after them) of the kernel on the frames
        ``part``: views of their rows (the kernel writes their per-frame sums) and
        ``scratch``."""
        fr = self.frames
        out = (self._num[part], self._den[part], self._inside[part], *scratch)
        if self.metric == "mind_ssc":
            before = (
                self.mri.vol2,
                self._us_desc[part],
                self._us_dvalid[part],
                self._us_weight[part],
                fr.valid[part],
            )
            return before, (self.patch_half, self.mind_distance, self.min_fraction, *out)
        if self.metric == "ncc_gradient":
            before = (self.mri.vol2, fr.us_grad[part], fr.valid[part])
            return before, (self.patch_half, self.min_fraction, *out)
        beam = 1 if self.metric == "lc2_beam" else 0
        before = (self.mri.vol2, fr.us[part], fr.valid[part])
        return before, (self.patch_half, self.min_fraction, beam, fr.spacing_mm, *out)

    def _kernel(self) -> Callable[..., None]:
        """The metric's frame kernel."""
        if self.metric == "mind_ssc":
            return K.mind_ssc_frames
        return K.ncc_gradient_frames if self.metric == "ncc_gradient" else K.lc2_frames

    @staticmethod
    def _run_chunk(
        aff: np.ndarray, part: slice, kernel: Callable[..., None], before: tuple, after: tuple
    ) -> None:
        """``kernel`` on the frames ``part`` (writes their rows of the per-frame sums)."""
        kernel(*before, aff[part], *after)

    def per_frame(self, reference_to_mri: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-frame (Σ w·score, Σ w, fraction of valid pixels inside the MRI).

        With :func:`set_threads` > 1 in the calling thread the frames are split among that
        many threads; every frame's sums are the same to the bit either way. The results of
        the last :attr:`KEEP` poses are kept (≈ 1 kB each): the verdict re-scores poses the
        search has just evaluated (its start, the optimiser's best, the ambiguity probe's
        optima). The arrays returned are the caller's own.
        """
        num, den, inside = self._sums(reference_to_mri)
        return num.copy(), den.copy(), inside.copy()

    def _sums(self, reference_to_mri: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`per_frame`'s arrays as kept for the pose (read them, never change them)."""
        key = np.ascontiguousarray(reference_to_mri, dtype=np.float64).tobytes()
        kept = self._recent.get(key)
        if kept is not None:
            self._recent.move_to_end(key)
            return kept
        aff = self.frame_affines(reference_to_mri)
        chunks = self._chunked(get_threads())
        if len(chunks) == 1:
            self._run_chunk(aff, *chunks[0])
        else:
            pool = _kernel_pool()
            futures = [pool.submit(self._run_chunk, aff, *chunk) for chunk in chunks[1:]]
            self._run_chunk(aff, *chunks[0])
            for future in futures:
                future.result()
        self.evaluations += 1
        kept = self._num.copy(), self._den.copy(), self._inside / self._valid_total
        self._recent[key] = kept
        if len(self._recent) > self.KEEP:
            self._recent.popitem(last=False)
        return kept

    def frame_scores(self, reference_to_mri: np.ndarray) -> np.ndarray:
        """Per-frame similarity (NaN for a frame with no usable patch)."""
        num, den, _ = self._sums(reference_to_mri)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)

    def evaluate(self, reference_to_mri: np.ndarray) -> tuple[float, np.ndarray]:
        """(overall similarity as :meth:`__call__`, per-frame scores with NaN for frames
        without a usable patch), from one evaluation."""
        num, den, inside = self._sums(reference_to_mri)
        with np.errstate(invalid="ignore", divide="ignore"):
            scores = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
        return _overall_similarity(num, den, inside), scores

    def __call__(self, reference_to_mri: np.ndarray) -> float:
        """Weighted mean similarity over all frames, times the fraction of the field of view
        inside the MRI (so leaving the volume never pays)."""
        return _overall_similarity(*self._sums(reference_to_mri))


def _overall_similarity(num: np.ndarray, den: np.ndarray, inside: np.ndarray) -> float:
    """:meth:`FrameSimilarity.__call__` from the per-frame sums (Σ w·score, Σ w, fraction of
    the field of view inside the MRI)."""
    total = den.sum()
    if total <= 0:
        return 0.0
    return float(num.sum() / total * min(1.0, float(inside.mean()) / 0.98))


class VolumeSimilarity:
    """LC² with 3D patches of a compounded US volume (in Reference mm) against the MRI.

    Parameters
    ----------
    mri
        The MRI level.
    us_volume
        Reconstructed US (Reference frame, ``affine`` = voxel → Reference mm), at about the
        level's spacing.
    us_valid
        (X, Y, Z) bool: voxels that received data.
    """

    def __init__(
        self,
        mri: MriLevel,
        us_volume: Volume,
        us_valid: np.ndarray,
        *,
        patch_half: int = 2,
        min_fraction: float = 0.5,
    ):
        self.mri = mri
        self.us = np.ascontiguousarray(us_volume.data, dtype=np.float32)
        self.us_affine = us_volume.affine
        self.valid = np.ascontiguousarray(us_valid, dtype=np.uint8)
        self.patch_half = int(patch_half)
        self.min_fraction = float(min_fraction)
        self._chan = np.zeros((*self.us.shape, K.N_STATS))
        self._line = np.zeros((max(self.us.shape), K.N_STATS))
        self._valid_total = max(int(self.valid.sum()), 1)
        self.evaluations = 0

    def __call__(self, reference_to_mri: np.ndarray) -> float:
        m = (self.mri.world_to_voxel @ reference_to_mri @ self.us_affine)[:3]
        num, den, inside = K.lc2_volume(
            self.mri.vol2,
            self.us,
            self.valid,
            np.ascontiguousarray(m),
            self.patch_half,
            self.min_fraction,
            self._chan,
            self._line,
        )
        self.evaluations += 1
        if den <= 0:
            return 0.0
        return float(num / den * min(1.0, inside / self._valid_total / 0.98))
