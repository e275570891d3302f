"""A tracked ultrasound sweep as the registration sees it: frames, their ``ImageToReference``
poses, and the field-of-view mask.

Frames with an invalid image or an INVALID/MISSING tracking transform are dropped (with a
count); a sweep with no usable frame is refused by name.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage
from skimage.morphology import convex_hull_image

from usnav.calibration.stage import CalibrationStage
from usnav.config.calibration import CalibrationFile
from usnav.errors import InputError, TransformError
from usnav.frames import TrackedFrame, TransformStatus, mf_pixels
from usnav.registration import _kernels as K
from usnav.transforms import TransformRepository

if TYPE_CHECKING:
    from usnav.io.sequence_reader import Sequence


@dataclass
class Sweep:
    """Tracked 2D ultrasound frames in the Reference frame.

    Attributes
    ----------
    images
        (F, rows, cols) uint8 (or float32) pixels, MF orientation (x = column, y = row).
    image_to_reference
        (F, 4, 4) ``ImageToReference`` per frame: pixel (col, row, 0, 1) → Reference mm.
    timestamps
        (F,) device timestamps, s.
    source
        Where it came from (for messages).
    dropped
        Frames left out (invalid image or transform), for reports.
    fov_mask
        (rows, cols) bool field-of-view mask, or None to detect it (:func:`detect_fov_mask`).
    frame_masks
        Optional (F, rows, cols) bool per-frame validity (e.g. frames cut from a 3D fan),
        combined with the field-of-view mask.
    frame_ids
        Optional (F,) int64 frame identities from :func:`new_frame_ids`: the caller
        guarantees that frames with the same id have the same pixels and pose (the streaming
        worker numbers each frame it copies into its window). A
        :class:`~usnav.registration.similarity.PreparedFrameCache` then knows a frame it has
        prepared by its id instead of hashing its pixels.
    """

    images: np.ndarray
    image_to_reference: np.ndarray
    timestamps: np.ndarray
    source: str = "<memory>"
    dropped: int = 0
    fov_mask: np.ndarray | None = None
    frame_masks: np.ndarray | None = None
    frame_ids: np.ndarray | None = None
    _detected_mask: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images)
        self.image_to_reference = np.asarray(self.image_to_reference, dtype=np.float64)
        self.timestamps = np.asarray(self.timestamps, dtype=np.float64)
        if self.images.ndim != 3:
            raise InputError(
                self.source, f"expected (frames, rows, cols) images, got shape {self.images.shape}"
            )
        n = self.images.shape[0]
        if self.image_to_reference.shape != (n, 4, 4) or self.timestamps.shape != (n,):
            raise InputError(self.source, "frames, poses and timestamps differ in number")
        if self.frame_masks is not None and np.shape(self.frame_masks) != self.images.shape:
            raise InputError(self.source, "frame masks and images differ in shape")
        if self.frame_ids is not None:
            self.frame_ids = np.asarray(self.frame_ids, dtype=np.int64)
            if self.frame_ids.shape != (n,):
                raise InputError(self.source, "frame ids and images differ in number")
        if not np.all(np.isfinite(self.image_to_reference)):
            raise InputError(self.source, "a frame pose has NaN or infinite values")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        """(cols, rows)."""
        return int(self.images.shape[2]), int(self.images.shape[1])

    @property
    def pixel_spacing_mm(self) -> tuple[float, float]:
        """mm per pixel along columns (x) and rows (y), from the first pose."""
        s = np.linalg.norm(self.image_to_reference[0, :3, :2], axis=0)
        return float(s[0]), float(s[1])

    def mask(self) -> np.ndarray:
        """The field-of-view mask (given, or detected once from the images)."""
        if self.fov_mask is not None:
            return np.asarray(self.fov_mask, dtype=bool)
        if self._detected_mask is None:
            self._detected_mask = detect_fov_mask(self.images)
        return self._detected_mask

    def subset(self, index: np.ndarray | slice | list[int]) -> Sweep:
        """A sweep of some of the frames (same mask)."""
        return Sweep(
            self.images[index],
            self.image_to_reference[index],
            self.timestamps[index],
            source=self.source,
            fov_mask=self.mask(),
            frame_masks=None if self.frame_masks is None else self.frame_masks[index],
            frame_ids=None if self.frame_ids is None else self.frame_ids[index],
        )

    @classmethod
    def from_frames(
        cls, frames: Iterable[TrackedFrame], image_to_probe: np.ndarray, *, source: str = "<frames>"
    ) -> Sweep:
        """Build a sweep from tracked frames carrying ``ProbeToReference`` or
        ``ProbeToTracker`` + ``ReferenceToTracker`` (or ``ImageToReference``)."""
        images: list[np.ndarray] = []
        poses: list[np.ndarray] = []
        stamps: list[float] = []
        total = 0
        shape = None
        for frame in frames:
            total += 1
            if not frame.image_ok or frame.image.size == 0:
                continue
            pose = _image_to_reference(frame, image_to_probe)
            if pose is None:
                continue
            image = _to_mf_gray(frame.image, frame.orientation, source)
            if shape is None:
                shape = image.shape
            elif image.shape != shape:
                raise InputError(
                    source,
                    f"frame {frame.frame_number} is {image.shape}, others "
                    f"{shape}: a sweep needs one image size",
                )
            images.append(image)
            poses.append(pose)
            stamps.append(frame.t_device)
        if total == 0:
            raise InputError(
                source, "the sweep is empty (no frames)", "record a sweep over the region first"
            )
        if not images:
            raise InputError(
                source,
                f"none of the {total} frames has a usable image and valid tracking "
                "(ProbeToReference, or ProbeToTracker and ReferenceToTracker, all INVALID/"
                "MISSING)",
                "check that the probe and reference markers were visible",
            )
        return cls(
            np.stack(images),
            np.stack(poses),
            np.asarray(stamps),
            source=source,
            dropped=total - len(images),
        )


_next_frame_id = 1
_frame_ids_lock = threading.Lock()


def new_frame_ids(count: int) -> np.ndarray:
    """``count`` frame ids never given before in this process ((count,) int64, increasing),
    for :attr:`Sweep.frame_ids`."""
    global _next_frame_id
    with _frame_ids_lock:
        first = _next_frame_id
        _next_frame_id += max(0, int(count))
    return np.arange(first, first + max(0, int(count)), dtype=np.int64)


def _image_to_reference(frame: TrackedFrame, image_to_probe: np.ndarray) -> np.ndarray | None:
    """The frame's ImageToReference through the calibration stage (the same rule as the live
    pipeline); None when it cannot be placed (tracking not OK)."""
    return CalibrationStage(np.asarray(image_to_probe, dtype=np.float64)).image_to_reference_ok(
        frame
    )


def _to_mf_gray(image: np.ndarray, orientation: str, source: str) -> np.ndarray:
    """Grey levels in MF orientation (PLUS flips other 2D orientations on input)."""
    img = np.asarray(image)
    if img.ndim == 3:
        img = img[..., :3].mean(axis=2).astype(np.float32) if img.shape[2] >= 3 else img[..., 0]
    try:
        return mf_pixels(img, orientation or "MF")[0]
    except ValueError as exc:
        raise InputError(source, str(exc), "record B-mode images (MF, MN, UF, UN)") from None


def load_sweep(recording: str | Path, image_to_probe: np.ndarray | CalibrationFile) -> Sweep:
    """Read a PLUS sequence file (``.igs.mha``, ``.seq.nrrd``...) as a :class:`Sweep`.

    Parameters
    ----------
    recording
        The sequence file, with per-frame ``ProbeToTracker`` + ``ReferenceToTracker`` or
        ``ProbeToReference`` (mm).
    image_to_probe
        4×4 ``ImageToProbe`` (pixel → Probe mm, carries mm per pixel), or the calibration
        file holding it: then the recording's image size is checked against the one the
        calibration was made for (:meth:`~usnav.config.calibration.CalibrationFile.
        check_image_size`).

    Raises
    ------
    InputError
        Unreadable file, no frames, no frame with valid tracking, mixed image sizes.
    ConfigError
        A calibration made for another image size.
    """
    from usnav.io.sequence import read_sequence

    path = Path(recording)
    if not path.exists():
        raise InputError(path, "no such recording")
    with read_sequence(path) as seq:
        check_tracked_recording(seq, image_to_probe)
        return Sweep.from_frames(
            (seq.frame(i) for i in range(len(seq))),
            _matrix(image_to_probe),
            source=str(path),
        )


def _matrix(image_to_probe: np.ndarray | CalibrationFile) -> np.ndarray:
    if isinstance(image_to_probe, CalibrationFile):
        return image_to_probe.image_to_probe
    return np.asarray(image_to_probe, dtype=np.float64)


#: the transforms a frame is usually placed with (ProbeToReference, or the two tracker poses),
#: and their inverses
_TRACKING = (
    "ProbeToReference",
    "ProbeToTracker",
    "ReferenceToTracker",
    "ReferenceToProbe",
    "TrackerToProbe",
    "TrackerToReference",
)


def probe_chain(names: Iterable[str]) -> list[str]:
    """The recorded transforms that place the probe in the Reference frame, [] if none do.

    As PLUS's transform repository: ``ProbeToReference``, or ``ProbeToTracker`` +
    ``ReferenceToTracker``, or any chain of recorded transforms and their inverses
    (``ReferenceToProbe``, ``TrackerToProbe``...) from Probe to Reference.
    """
    repo = TransformRepository()
    for name in sorted(names, key=lambda n: n not in _TRACKING):  # the usual ones first
        try:
            repo.set(name, np.eye(4))
        except TransformError:
            continue  # malformed name, or redundant: the frames are already connected
    return repo.chain("ProbeToReference")


_NO_PIXELS = np.zeros((0, 0), dtype=np.uint8)


def check_tracked_recording(seq: Sequence, image_to_probe: np.ndarray | CalibrationFile) -> int:
    """Refuse a recording no tracked frame can be taken from, before any pixel is read.

    The one check of a recording given as a tracked sweep (``usnav register``,
    ``reconstruct`` and ``margins``): it has frames with images, of the size the calibration
    was made for (when the calibration file records it), a probe pose (``ProbeToReference``,
    or ``ProbeToTracker`` + ``ReferenceToTracker``), and at least one frame with a valid image
    whose pose the calibration stage can use (status OK, finite).

    Parameters
    ----------
    seq
        The open recording.
    image_to_probe
        4×4 ``ImageToProbe`` (the calibration), or the calibration file holding it (then the
        recording's image size is checked against its ``[spatial] image_size_px``).

    Returns
    -------
    int
        The frames with a valid image and valid tracking.

    Raises
    ------
    InputError
        Naming the file, and the transform when no frame has valid tracking.
    ConfigError
        A calibration made for another image size (naming both files and both sizes).
    """
    path = seq.path
    if len(seq) == 0:
        raise InputError(
            path, "the sweep is empty (no frames)", "record a sweep over the region first"
        )
    if tuple(seq.image_size) == (0, 0):
        raise InputError(path, "is a tracker-only recording (no images)")
    if (
        len(seq) == 1
        and len(seq.frame_shape) >= 3
        and seq.channels == 1
        and not seq.transform_names
    ):
        # one 3D image and no poses: a volume (a reconstruction, a PLUS reference volume),
        # which the image-size check below would have misnamed as a calibration mismatch
        raise InputError(
            path,
            "is a volume (one 3D image, no tracked frames), not a recording",
            "give the tracked sweep (a PLUS sequence file, .igs.mha or .seq.nrrd)",
        )
    if isinstance(image_to_probe, CalibrationFile):
        image_to_probe.check_image_size(seq.image_size, path)
        image_to_probe.check_pixel_spacing(seq.spacing, path)
    names = set(seq.transform_names)
    if not probe_chain(names):
        raise InputError(
            path,
            "has neither ProbeToReference nor ProbeToTracker + ReferenceToTracker (nor their "
            f"inverses; found: {', '.join(sorted(names)) or 'none'})",
            "record the probe's and the reference's poses",
        )
    stage = CalibrationStage(_matrix(image_to_probe))
    placed = np.array(
        [
            stage.image_to_reference_ok(TrackedFrame(_NO_PIXELS, seq.frame_transforms(i)))
            is not None
            for i in range(len(seq))
        ]
    )
    if not placed.any():
        raise InputError(
            path,
            f"none of the {len(seq)} frames has valid tracking: {_tracking_problem(seq)}",
            "check that the probe and reference markers were visible to the tracker",
        )
    usable = int(np.count_nonzero(placed & seq.image_ok))
    if usable == 0:
        raise InputError(
            path,
            f"none of the {int(placed.sum())} frames with valid tracking has a valid image "
            "(ImageStatus INVALID)",
            "check the ultrasound scanner's video link and record the sweep again",
        )
    return usable


def _tracking_problem(seq: Sequence) -> str:
    """Which tracking transforms are never usable, and why (INVALID, MISSING, non-finite)."""
    chain = probe_chain(seq.transform_names)
    tracking = [n for n in _TRACKING if n in seq.transform_names]
    tracking += [n for n in chain if n not in tracking]
    parts = []
    for name in tracking:
        matrices, statuses = seq.transforms(name)
        finite = np.isfinite(matrices).all(axis=(1, 2))
        ok = np.array([s is TransformStatus.OK for s in statuses]) & finite
        if ok.any():
            continue
        counts = {
            "INVALID": sum(s is TransformStatus.INVALID for s in statuses),
            "MISSING": sum(s is TransformStatus.MISSING for s in statuses),
            "non-finite": int(np.count_nonzero(~finite)),
        }
        why = ", ".join(f"{n} {word}" for word, n in counts.items() if n)
        parts.append(f"{name} is never OK ({why})")
    return "; ".join(parts) or f"{' and '.join(tracking)} are never OK in the same frame"


def detect_fov_mask(images: np.ndarray, *, max_frames: int = 60, erode_px: int = 2) -> np.ndarray:
    """Detect the ultrasound field of view (the fan or rectangle) of a stack of frames.

    A pixel is a candidate when it is non-zero in some frames and its value changes across
    frames (standard deviation above half an 8-bit grey level; frames of another scale, such
    as 16-bit or 0..1 floats, have their brightest pixel taken as 255; static overlays such
    as text and depth scales stay constant); the largest
    connected candidate region is kept, replaced by its convex hull (linear rectangles and
    sector fans are convex; anechoic fluid and shadows inside them belong to the field of
    view), and eroded by ``erode_px`` pixels (scan-conversion edges are not tissue).

    Parameters
    ----------
    images
        (F, rows, cols) frames.

    Returns
    -------
    (rows, cols) bool mask. All False if nothing was found.
    """
    imgs = np.asarray(images)
    if imgs.ndim == 2:
        imgs = imgs[None]
    n = imgs.shape[0]
    pick = np.unique(np.linspace(0, n - 1, min(n, max_frames)).round().astype(int))
    if imgs.dtype == np.uint8 and imgs.shape[1] * imgs.shape[2] >= 2 and len(pick) >= 1:
        # the same counts and float32 deviations to the bit, in one compiled pass over the
        # picked frames (~9 → ~4 ms of the detection on 60 frames of 256²)
        frames_nonzero = np.empty(imgs.shape[1:], np.int64)
        spread = np.empty(imgs.shape[1:], np.float32)
        K.fov_pixel_statistics(imgs, pick.astype(np.int64), frames_nonzero, spread)
        grey_level = 1.0
    else:
        stack = imgs[pick]
        if not np.issubdtype(stack.dtype, np.integer):
            stack = stack.astype(np.float32)
        # integer frames stay integer: the float32 statistics below are the same to the bit
        # without a float32 copy of the stack (14 → ~9 ms on 60 frames of 256², session 15)
        frames_nonzero = np.count_nonzero(stack > 0, axis=0)
        spread = stack.std(axis=0, dtype=np.float32) if len(pick) >= 3 else None
        # "varying" is half an 8-bit grey level: frames on another scale (12/16-bit, or
        # floats in 0..1) are measured against their brightest pixel taken as 255, so the
        # same images in any pixel type give the same field of view
        peak = float(np.max(stack, initial=0.0, where=np.isfinite(stack)))
        grey_level = 1.0 if 1.0 < peak <= 255.0 else peak / 255.0
    nonzero = frames_nonzero / len(pick) > 0.05
    if len(pick) >= 3:
        varying = spread > 0.5 * grey_level
        candidate = nonzero & varying
    else:
        candidate = nonzero
    if not candidate.any():
        return np.zeros(imgs.shape[1:], bool)
    # keep the largest region (static overlays are gone already), then its convex hull: a
    # linear array's rectangle and a sector's fan are convex, and anechoic fluid or acoustic
    # shadows inside them (zero in every frame) stay in the field of view
    labels, count = ndimage.label(candidate)
    if count > 1:
        sizes = ndimage.sum_labels(candidate, labels, index=np.arange(1, count + 1))
        candidate = labels == (1 + int(np.argmax(sizes)))
    mask = convex_hull_image(candidate)
    if erode_px > 0:
        mask = ndimage.binary_erosion(mask, iterations=erode_px)
    return mask
