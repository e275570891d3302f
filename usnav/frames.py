"""The tracked ultrasound frame: what every source yields and every stage consumes.

A :class:`TrackedFrame` is an image (rows × cols, any OpenIGTLink pixel type: uint8 from a
B-mode scanner, also int8 … float64) plus the transforms that arrived with it, each with a
status, the device timestamp, the host receive timestamp and the frame number. Nothing
downstream knows whether it came from a probe, a playback or the simulator.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field, replace

import numpy as np


class TransformStatus(enum.Enum):
    """Status of one transform in one frame (PLUS: ``<Name>TransformStatus``).

    ``OK``: valid. ``INVALID``: the tracker reported it but it must not be used (out of view,
    occluded...). ``MISSING``: it did not arrive, or has not been updated within the watchdog
    time.
    """

    OK = "OK"
    INVALID = "INVALID"
    MISSING = "MISSING"

    @classmethod
    def parse(cls, text: str) -> TransformStatus:
        """Map a PLUS status word to OK / INVALID / MISSING.

        PLUS writes OK, INVALID, MISSING, OUT_OF_VIEW, OUT_OF_VOLUME, REQ_TIMEOUT,
        PATH_NOT_FOUND, UNKNOWN, SWITCH*_IS_ON. Only ``OK`` (and the switch states, which PLUS
        sends with a valid pose) mean usable; MISSING / PATH_NOT_FOUND mean not there; every
        other word means INVALID.
        """
        word = text.strip().upper()
        if word == "OK" or word.startswith("SWITCH"):
            return cls.OK
        if word in ("MISSING", "PATH_NOT_FOUND"):
            return cls.MISSING
        return cls.INVALID

    def combine(self, other: TransformStatus) -> TransformStatus:
        """Status of a composition: INVALID beats MISSING beats OK."""
        order = {TransformStatus.OK: 0, TransformStatus.MISSING: 1, TransformStatus.INVALID: 2}
        return self if order[self] >= order[other] else other


#: PLUS ultrasound image orientations (transducer axes along image +x, +y[, +z]).
#: M marked side, U unmarked, F far, N near, A ascending (M×F), D descending.
ORIENTATIONS_2D = ("MF", "MN", "UF", "UN", "FM", "NM", "FU", "NU")
ORIENTATIONS_3D = ("MFA", "MFD", "MNA", "MND", "UFA", "UFD", "UNA", "UND")
ORIENTATIONS = ORIENTATIONS_2D + ORIENTATIONS_3D + ("??",)


def normalize_orientation(text: str) -> str:
    """Return the canonical orientation code; ``MFA`` and ``MF`` are the same for 2D.

    Raises
    ------
    ValueError
        If ``text`` is not a PLUS orientation code.
    """
    code = text.strip().upper()
    if code not in ORIENTATIONS:
        raise ValueError(
            f"unknown ultrasound image orientation {text!r}; "
            f"expected one of {', '.join(ORIENTATIONS_2D + ORIENTATIONS_3D)}"
        )
    return code


def mf_pixels(image: np.ndarray, orientation: str) -> tuple[np.ndarray, np.ndarray]:
    """The image in **MF** orientation (marked side → +x, far → +y), as PLUS turns every 2D
    B-mode image on input, and where its pixels came from.

    Parameters
    ----------
    image
        (rows, cols) or (rows, cols, channels) pixels as stored or received.
    orientation
        The PLUS orientation code of ``image`` (``MF``, ``MN``, ``UF``, ``UN``, the transposed
        ``FM``, ``NM``, ``FU``, ``NU``, or a 3D code whose first two letters are one of
        these). ``??`` (not specified) is taken as MF (PLUS refuses it).

    Returns
    -------
    (mf, mf_to_original)
        ``mf``: the pixels in MF (a view where no copy is needed); ``mf_to_original``: 4×4
        mapping an MF pixel (col, row, 0, 1) to the same pixel of ``image``. Compose it into a
        matrix that placed ``image``'s pixels (``matrix @ mf_to_original``) so it places the
        MF pixels.

    Raises
    ------
    ValueError
        For a code that is not a PLUS orientation, or whose axes are not one lateral (M/U)
        and one axial (F/N).
    """
    code = normalize_orientation(orientation)
    flip = np.eye(4)
    if code == "??":
        return image, flip
    x, y = code[0], code[1]
    if x in "FN" and y in "MU":  # scanlines along rows: transpose first
        image = image.swapaxes(0, 1)
        flip = flip @ np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
        x, y = y, x
    if x not in "MU" or y not in "FN":
        raise ValueError(
            f"image orientation {orientation!r} has no lateral (M/U) and axial (F/N) axis; "
            "expected one of " + ", ".join(ORIENTATIONS_2D)
        )
    rows, cols = image.shape[0], image.shape[1]
    if x == "U":
        image = image[:, ::-1]
        flip = flip @ np.array([[-1, 0, 0, cols - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    if y == "N":
        image = image[::-1, :]
        flip = flip @ np.array([[1, 0, 0, 0], [0, -1, 0, rows - 1], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    return image, flip


@dataclass(frozen=True, slots=True)
class TrackedTransform:
    """A 4×4 homogeneous matrix (mm) with its status.

    ``matrix`` maps points of the *From* frame to the *To* frame of the transform's name.
    """

    matrix: np.ndarray
    status: TransformStatus = TransformStatus.OK

    @property
    def ok(self) -> bool:
        """Whether the transform may be used (status ``OK``)."""
        return self.status is TransformStatus.OK


@dataclass(slots=True)
class TrackedFrame:
    """One tracked ultrasound frame.

    Attributes
    ----------
    image
        Pixels, shape (rows, cols) (or (rows, cols, channels)), uint8 usually; any
        OpenIGTLink scalar type (int8 … float64, ``usnav.igtl.codec.SCALAR_TYPES``). Image frame:
        x = column, y = row, z = 0, in pixels; the mm scaling lives in ``ImageToProbe``.
        May have zero size for a tracker-only frame.
    transforms
        Transform name (``ProbeToTracker``, ``ImageToReference``...) → matrix + status.
    t_device
        Device timestamp, s (PLUS: the server's clock, UTC over OpenIGTLink; the recording's
        relative clock in a sequence file).
    t_received
        Host time when the frame was assembled, s since the Unix epoch (``time.time()``).
    frame_number
        Source frame counter (monotonic within a stream; gaps mean dropped frames).
    orientation
        PLUS ultrasound image orientation code (``MF`` for B-mode as PLUS keeps it).
    image_ok
        False when the image itself is invalid (PLUS ``ImageStatus = INVALID``).
    fields
        Any other per-frame fields (strings), kept through read/write round trips.
    """

    image: np.ndarray
    transforms: dict[str, TrackedTransform] = field(default_factory=dict)
    t_device: float = 0.0
    t_received: float = field(default_factory=time.time)
    frame_number: int = 0
    orientation: str = "MF"
    image_ok: bool = True
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """Image height, pixels (0 for a tracker-only frame)."""
        return int(self.image.shape[0]) if self.image.ndim >= 2 else 0

    @property
    def cols(self) -> int:
        """Image width, pixels (0 for a tracker-only frame)."""
        return int(self.image.shape[1]) if self.image.ndim >= 2 else 0

    def transform(self, name: str) -> TrackedTransform:
        """The transform ``name``, or a MISSING identity if the frame does not carry it."""
        found = self.transforms.get(name)
        if found is None:
            return TrackedTransform(np.eye(4), TransformStatus.MISSING)
        return found


def frame_in_mf(frame: TrackedFrame, *, image_transforms: tuple[str, ...] = ()) -> TrackedFrame:
    """``frame`` with its image turned to MF (:func:`mf_pixels`); the frame itself if it is MF.

    Every stage after a device works on MF images (docs/conventions.md: the ``Image`` frame is
    MF), as PLUS converts on input. A calibration (``ImageToProbe``) is defined on MF pixels, so
    transforms of the frame are kept, except those named in ``image_transforms``: matrices
    that placed the pixels *as received* (an OpenIGTLink IMAGE's own matrix), which are
    composed with the flip so they place the same pixels after it.

    Raises
    ------
    ValueError
        If the frame's orientation is not a usable PLUS code (:func:`mf_pixels`).
    """
    if frame.orientation in ("MF", "MFA", "MFD") or frame.image.ndim < 2:
        return frame
    image, mf_to_original = mf_pixels(frame.image, frame.orientation)
    transforms = dict(frame.transforms)
    for name in image_transforms:
        found = transforms.get(name)
        if found is not None:
            transforms[name] = TrackedTransform(found.matrix @ mf_to_original, found.status)
    return replace(
        frame, image=np.ascontiguousarray(image), transforms=transforms, orientation="MF"
    )
