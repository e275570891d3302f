"""Reading PLUS sequence files: ``.igs.mha`` (MetaIO) and ``.seq.nrrd`` / ``.igs.nrrd`` (NRRD).

:func:`read_sequence` parses the header (any key order), keeps every per-frame field, and gives
lazy pixel access: uncompressed pixels are memory-mapped (a 2 GB recording opens in
milliseconds), compressed ones are inflated on first access, streaming, one frame at a time
(see :mod:`usnav.io._pixels`). Nothing checks the compressed pixels at open time except what
is cheap (sizes, stream header, gzip trailer); :meth:`Sequence.verify` inflates the whole
stream once, and ``tolerant=True`` does so to count the recoverable frames.

Frames: ``Image`` pixels (x = column, y = row); transforms are ``FromToTo`` 4×4 matrices in mm,
row-major in the file; timestamps in seconds on the recording's clock.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import struct
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from usnav.errors import InputError
from usnav.frames import (
    ORIENTATIONS_2D,
    TrackedFrame,
    TrackedTransform,
    TransformStatus,
    normalize_orientation,
)
from usnav.io._metaio import read_metaio_layout
from usnav.io._nrrdseq import read_nrrd_layout
from usnav.io._pixels import InflatePixels, InterleavedPixels, PixelError, RawPixels
from usnav.io._seqheader import Layout
from usnav.io.inputs import refuse_empty, require_existing
from usnav.transforms.matrices import may_scale, rigid_poses
from usnav.transforms.series import PoseSeries

__all__ = ["IMAGE_TYPES", "Sequence", "read_sequence", "sequence_format"]

#: Image types PLUS knows (``UltrasoundImageType``); ``XX`` is PLUS's "unknown": IGSIO reads
#: any other text as XX and writes XX back.
IMAGE_TYPES = ("BRIGHTNESS", "RF_REAL", "RF_IQ_LINE", "RF_I_LINE_Q_LINE", "RGB_COLOR", "XX")
UNKNOWN_IMAGE_TYPE = "XX"
#: How PLUS writes a 2D orientation (``MF`` and ``MFA`` are one enum value, printed "MFA").
PLUS_ORIENTATION_TEXT = {"MF": "MFA", "MN": "MND", "UF": "UFD", "UN": "UNA"}
TRANSFORM_SUFFIX = "Transform"
STATUS_SUFFIX = "TransformStatus"
#: Where a FrameNumber that is not an int64 integer is kept (the frame takes its index).
FRAME_NUMBER_TEXT = "FrameNumberText"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def sequence_format(path: str | Path) -> str:
    """``"metaio"`` for ``.mha``/``.mhd``, ``"nrrd"`` for ``.nrrd``/``.nhdr``.

    Raises
    ------
    InputError
        For any other suffix.
    """
    name = Path(path).name.lower()
    if name.endswith((".mha", ".mhd")):
        return "metaio"
    if name.endswith((".nrrd", ".nhdr")):
        return "nrrd"
    if name.endswith((".nii", ".nii.gz")):  # an MRI or a reconstruction where a sweep belongs
        raise InputError(
            path,
            "is a NIfTI volume name, not a recording (a PLUS sequence file of tracked frames)",
            "recordings are .igs.mha or .seq.nrrd; usnav reconstruct makes a volume of a sweep",
        )
    raise InputError(
        path, "unknown sequence file type", "use .igs.mha (MetaIO) or .seq.nrrd / .igs.nrrd (NRRD)"
    )


def _parse_float(path: Path, index: int, name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(
            path,
            f"frame {index}: {name} is not a number: {text!r}",
            "fix that field in the header (a plain number)",
        ) from None


#: Bytes a tracker-only file may hold after its header: an empty zlib stream or a newline,
#: plus a few per frame (PLUS writes one byte per frame: 5000 after its 5000-frame
#: WaterTankBottomTranslationTrackerBuffer.igs.mha).
_TRACKER_ONLY_SLACK_BYTES = 64
_TRACKER_ONLY_SLACK_PER_FRAME = 8


def _size_key(layout: Layout) -> str:
    return "DimSize" if layout.format == "metaio" else "sizes"


#: Header field usnav's recorders write: the tracker lag (s) at which their source paired each
#: image with its poses (an image stamped t with the poses at t + lag: the probe's
#: ``time_offset_s``). A file without it (PLUS, fCal) was paired as received: 0.
PAIRED_LAG_FIELD = "UsnavTrackerLagSec"


class Sequence:
    """An open PLUS sequence file (lazy pixels). Use :func:`read_sequence` to open one.

    Attributes
    ----------
    path
        The file.
    format
        ``"metaio"`` or ``"nrrd"``.
    header
        Sequence-level header fields (not per-frame), as spelled in the file.
    image_size
        (cols, rows) of every frame; (0, 0) for a tracker-only file.
    frame_shape
        numpy shape of one image: (rows, cols), (rows, cols, channels) or, for volume
        frames, (slices, rows, cols[, channels]); (0, 0) when tracker-only.
    orientation
        Ultrasound image orientation code as in the file, normalised (``MFA``, ``MF``...).
    image_type
        ``BRIGHTNESS`` (the default when absent), ``RF_REAL``...
    dtype
        Pixel type (native byte order when the file is little-endian).
    channels
        Components per pixel.
    compressed
        Whether the pixels are zlib/gzip compressed.
    transform_names
        Transform names in the file, without the ``Transform`` suffix (``ProbeToTracker``).
    timestamps
        Shape (n,), s (``Timestamp`` field; NaN where a frame has none).
    frame_numbers
        Shape (n,), int64 (``FrameNumber`` field, else the frame index).
    image_ok
        Shape (n,), bool (``ImageStatus``/``Status`` = OK; True when absent).
    spacing
        Pixel spacing along x, y (, z) from ElementSpacing / space directions (1 when
        absent; PLUS keeps the mm scaling in ImageToProbe instead).
    origin
        Position of the first pixel from Offset / space origin (0 when absent).
    directions
        Shape (k, k) for k pixel axes: row i is the unit direction of pixel axis i
        (MetaIO ``TransformMatrix``, NRRD ``space directions`` with their signs; identity
        when absent).
    has_frame_numbers
        Whether the file carries ``FrameNumber`` fields (needed to see dropped frames).
    declared_frames
        Frames the header declares.
    recovered_frames
        Frames that can be read: ``len(self)``. Smaller than ``declared_frames`` only in
        tolerant mode on a damaged file.
    problems
        What was wrong or skipped, in words (empty for a clean file).
    """

    def __init__(self, layout: Layout, *, tolerant: bool = False):
        self._layout = layout
        self.path = layout.path
        self.format = layout.format
        self.tolerant = tolerant
        self.problems: list[str] = list(layout.raw.problems)
        self.header: dict[str, str] = dict(layout.raw.fields)
        self.declared_frames = layout.n_frames
        self.channels = layout.channels
        self.dtype = np.dtype(layout.dtype)
        self.frame_shape = layout.frame_shape
        cols, rows, _slices = layout.spatial
        self.image_size = (cols, rows)
        self.spatial_size = layout.spatial
        self.compressed = layout.encoding != "raw"
        self.image_type = self._image_type(layout)
        self._status_field = layout.status_field
        self.orientation = self._orientation(layout)
        self._frame_fields = self._collect_frame_fields(layout)
        self._pixels: RawPixels | InflatePixels | InterleavedPixels | None = None
        try:
            n_pixels = self._open_pixels(layout)
            n = min(self.declared_frames, n_pixels)
            self._frame_fields = self._frame_fields[:n]
            self._n = n
            self.recovered_frames = n
            self._parse_frame_values()
            self.spacing, self.origin, self.directions = self._geometry(layout)
        except BaseException:
            if self._pixels is not None:
                self._pixels.close()
            raise

    # ------------------------------------------------------------------ opening
    def _fail(self, problem: str, hint: str | None = None) -> None:
        """Raise in strict mode; note the problem in tolerant mode."""
        if not self.tolerant:
            raise InputError(self.path, problem, hint)
        self.problems.append(problem)

    def _image_type(self, layout: Layout) -> str:
        """The image type; an unknown one is ``XX``, as PLUS reads it (a note in problems)."""
        text = (layout.image_type or "BRIGHTNESS").strip().upper()
        if text in IMAGE_TYPES:
            return text
        key = "UltrasoundImageType" if layout.format == "metaio" else "ultrasound image type"
        self.problems.append(
            f"{key} = {layout.image_type!r} is not a PLUS image type: read as XX (unknown), "
            "as PLUS does"
        )
        return UNKNOWN_IMAGE_TYPE

    def _orientation(self, layout: Layout) -> str:
        text = (layout.orientation or "MF").strip()
        try:
            return normalize_orientation(text)
        except ValueError:
            if layout.spatial[0] == 0:  # PLUS ignores the orientation of tracker-only files
                return "??"
            key = (
                "UltrasoundImageOrientation"
                if layout.format == "metaio"
                else "ultrasound image orientation"
            )
            raise InputError(
                self.path,
                f"unknown ultrasound image orientation {key} = {text!r}",
                "PLUS defines MF, MN, UF, UN, FM, NM, FU, NU for 2D images and MFA, MFD, MNA, "
                "MND, UFA, UFD, UNA, UND for 3D ones (a transposed code has no 3D form)",
            ) from None

    def _collect_frame_fields(self, layout: Layout) -> list[dict[str, str]]:
        found = layout.raw.frames
        n = self.declared_frames
        if found:
            highest = max(found)
            if highest >= n and self._frames_saved_as_components(layout, highest + 1):
                kinds = " ".join(layout.axis_kinds)
                self._fail(
                    f"the header describes {highest + 1} frames but has no frame axis: kinds "
                    f"({kinds}) hold them as a 'vector' axis of {highest + 1} pixel components, "
                    "as ITK (SimpleITK, a volume writer) saves a .seq.nrrd again; PLUS would "
                    f"read one frame of {highest + 1} components",
                    "use the original recording, or write 'list' for that axis in the header's "
                    f"kinds ({kinds.replace('vector', 'list', 1)}): usnav then reads the frames, "
                    "and usnav convert writes them as PLUS does",
                )
            elif highest >= n:
                self._fail(
                    f"the header has fields for frame {highest} but its size line "
                    f"declares {n} frames (DimSize/sizes does not match the frames)",
                    "fix the last number of DimSize/sizes, or use the tolerant reader (--tolerant)",
                )
            elif len(found) < n:
                missing = next(i for i in range(n) if i not in found)
                self._fail(
                    f"the size line declares {n} frames but the header describes "
                    f"{len(found)} (no fields for frame {missing}): DimSize/sizes does not "
                    "match the frames",
                    "fix the last number of DimSize/sizes, or use the tolerant reader (--tolerant)",
                )
        return [found.get(i, {}) for i in range(n)]

    def _frames_saved_as_components(self, layout: Layout, described: int) -> bool:
        """Whether the frame axis was written as pixel components: no ``list`` axis, and one
        ``vector`` axis as long as the frames the header describes, on an image type that is not
        colour (whose components are its channels)."""
        if layout.frame_axis is not None or layout.axis_kinds.count("vector") != 1:
            return False
        size = layout.axis_sizes[layout.axis_kinds.index("vector")]
        return size == described > 1 and self.image_type != "RGB_COLOR"

    def _open_pixels(self, layout: Layout) -> int:
        """Open the pixel source; returns how many frames have pixels (all, unless damaged)."""
        n = self.declared_frames
        frame_bytes = layout.frame_bytes
        try:
            size = os.path.getsize(layout.data_path)
        except OSError as exc:
            raise InputError(layout.data_path, f"cannot read pixel data: {exc.strerror}") from None
        available = max(size - layout.data_offset, 0)
        slack = _TRACKER_ONLY_SLACK_BYTES + _TRACKER_ONLY_SLACK_PER_FRAME * n
        if frame_bytes == 0 and available > slack:
            # a zero in the image size hides whatever follows: a damaged size line, not a
            # tracker-only file (those end at the header, or hold an empty zlib stream)
            self._fail(
                f"the size line declares no pixels ({_size_key(layout)} has a 0), but "
                f"{available} bytes of data follow the header",
                "fix DimSize/sizes (columns, rows, frames) or use the tolerant reader "
                "(--tolerant), which reads the transforms only",
            )
        if frame_bytes == 0:
            self._pixels = RawPixels(
                layout.data_path, layout.data_offset, 0, self.frame_shape, self.dtype
            )
            return n
        if layout.frames_interleaved:
            return self._open_interleaved(layout, available)
        if layout.encoding == "raw":
            expected = n * frame_bytes
            complete = n
            if available < expected:
                complete = available // frame_bytes
                self._fail(
                    f"pixel data is shorter than the size line says (truncated file or wrong "
                    f"DimSize/sizes): {n} frames of {frame_bytes} bytes need {expected} "
                    f"bytes, the file holds {available} ({complete} complete frames)",
                    "recover them with the tolerant reader (usnav info/convert --tolerant)",
                )
            elif available > expected:
                self._fail(
                    f"DimSize does not match the data: {n} frames of {frame_bytes} bytes "
                    f"= {expected} bytes, but the file holds {available} bytes of pixels",
                    "fix DimSize/sizes or use the tolerant reader (--tolerant)",
                )
            self._pixels = RawPixels(
                layout.data_path, layout.data_offset, complete, self.frame_shape, self.dtype
            )
            return complete
        return self._open_compressed(layout, available)

    def _open_interleaved(self, layout: Layout, available: int) -> int:
        """Open pixels whose frame axis is not the slowest (see :class:`InterleavedPixels`)."""
        n = self.declared_frames
        expected = n * layout.frame_bytes
        if layout.encoding == "raw" and available != expected:
            raise InputError(
                self.path,
                f"the size line declares {n} frames of {layout.frame_bytes} bytes = "
                f"{expected} bytes, the file holds {available} bytes of pixels; its frame "
                "axis is not the last, so the frames are interleaved and none can be "
                "recovered on its own",
            )
        wbits = {"raw": None, "zlib": 15, "gzip": 31}[layout.encoding]
        shape = layout.data_shape
        try:
            self._pixels = InterleavedPixels(
                layout.data_path,
                layout.data_offset,
                layout.data_length,
                shape,
                layout.permutation,
                self.frame_shape,
                self.dtype,
                wbits,
            )
        except PixelError as exc:
            raise InputError(self.path, exc.problem) from None
        return n

    def _open_compressed(self, layout: Layout, available: int) -> int:
        n = self.declared_frames
        length = layout.data_length
        if length is not None and length > available:
            self._fail(
                f"compressed pixel data is truncated: CompressedDataSize = {length} bytes, "
                f"the file holds {available}",
                "recover the frames with the tolerant reader (usnav info/convert --tolerant)",
            )
        with open(layout.data_path, "rb") as f:
            f.seek(layout.data_offset)
            head = f.read(2)
            if layout.encoding == "gzip" and available >= 18:
                f.seek(layout.data_offset + min(available, length or available) - 4)
                (isize,) = struct.unpack("<I", f.read(4))
            else:
                isize = None
        if layout.encoding == "zlib":
            good = len(head) == 2 and head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0
            what, wbits = "a zlib stream", 15
        else:
            good = head == b"\x1f\x8b"
            what, wbits = "a gzip stream", 31
        if not good:
            raise InputError(
                self.path,
                f"compressed pixel data does not start with {what} "
                f"(corrupted, or CompressedData/encoding is wrong)",
            )
        expected = n * layout.frame_bytes
        if isize is not None and isize != expected % (1 << 32):
            self._fail(
                f"the gzip stream holds {isize} bytes (mod 2^32) but sizes declare "
                f"{n} frames = {expected} bytes: the file is truncated or its sizes are wrong",
                "recover the readable frames with the tolerant reader (--tolerant)",
            )
        self._pixels = InflatePixels(
            layout.data_path, layout.data_offset, length, n, self.frame_shape, self.dtype, wbits
        )
        if not self.tolerant:
            return n
        complete, problem = self._pixels.scan()
        if problem:
            self.problems.append(problem)
        return complete

    def _geometry(self, layout: Layout) -> tuple[tuple[float, ...], tuple[float, ...], np.ndarray]:
        """Pixel spacing, origin and axis directions of the pixel axes (loosely parsed).

        MetaIO: ``ElementSpacing``, ``Offset`` and ``TransformMatrix`` (row i = the direction
        of pixel axis i, as ITK reads it). NRRD: ``space origin`` and ``space directions``
        (spacing = each vector's length, direction = the vector / its length, sign kept).
        Defaults: spacing 1, origin 0, identity directions.
        """
        k = layout.ndim_spatial
        spacing = [1.0] * k
        origin = [0.0] * k
        directions = np.eye(k)
        try:
            if layout.format == "metaio":
                values = [float(v) for v in (layout.raw.get("ElementSpacing") or "").split()]
                spacing[: min(k, len(values))] = values[:k]
                values = [float(v) for v in (layout.raw.get("Offset") or "").split()]
                origin[: min(k, len(values))] = values[:k]
                values = [float(v) for v in (layout.raw.get("TransformMatrix") or "").split()]
                size = math.isqrt(len(values))
                if size >= k and size * size == len(values):
                    directions = np.array(values).reshape(size, size)[:k, :k]
            else:
                # one "(x,y)" per pixel axis, "none" for the others; teem allows spaces in a
                # vector, "(0.2, 0)", as ITK reads it
                vectors = [
                    [float(x) for x in part.split(",")]
                    for part in re.findall(r"\(([^)]*)\)", layout.raw.get("space directions") or "")
                ]
                for i, vector in enumerate(vectors[:k]):
                    length = math.hypot(*vector)  # no overflow warning on absurd values
                    spacing[i] = length
                    if len(vector) >= k and length > 0 and math.isfinite(length):
                        directions[i] = np.array(vector[:k]) / length
                text = (layout.raw.get("space origin") or "").strip("() \t")
                values = [float(x) for x in text.split(",")] if text else []
                origin[: min(k, len(values))] = values[:k]
        except ValueError:
            self.problems.append("pixel spacing/origin/directions not readable; using defaults")
        if not np.isfinite(directions).all():
            self.problems.append("pixel axis directions not finite; using identity")
            directions = np.eye(k)
        return tuple(spacing), tuple(origin), directions

    def _column(self, key: str) -> list[str | None]:
        """The value of per-frame field ``key`` in each frame (None where absent)."""
        return [ff.get(key) for ff in self._frame_fields]

    def _numbers(self, key: str, default: np.ndarray) -> np.ndarray:
        """Per-frame numeric field → float array (``default`` where absent)."""
        values = self._column(key)
        if None not in values:
            try:
                return np.array(values, dtype=np.float64)
            except ValueError:
                pass  # find the bad one below, for the message
        out = default.astype(np.float64)
        for i, text in enumerate(values):
            if text is not None:
                out[i] = _parse_float(self.path, i, key, text)
        return out

    def _frame_numbers(self) -> tuple[np.ndarray, bool]:
        """``FrameNumber`` of each frame (int64) and whether any frame has a usable one.

        A FrameNumber that is not an integer in int64 range (``1.5``, ``1e30``, text) is
        kept, as written, in the frame's ``FrameNumberText`` field; the frame is numbered
        as if it had none (its index), with a note in ``problems``.
        """
        n = self._n
        values = self._column("FrameNumber")
        numbers = np.arange(n, dtype=np.int64)
        self._frame_number_text: dict[int, str] = {}
        if None not in values:
            try:
                return np.array(values).astype(np.int64), n > 0
            except (ValueError, OverflowError):
                pass  # sort them out one by one below
        found = False
        bad: list[int] = []
        for i, text in enumerate(values):
            if text is None:
                continue
            try:
                number = int(text.strip())
            except ValueError:
                number = None
            if number is None or not _INT64_MIN <= number <= _INT64_MAX:
                bad.append(i)
                self._frame_number_text[i] = text
                continue
            numbers[i] = number
            found = True
        if bad:
            self.problems.append(
                f"FrameNumber of {len(bad)} frame(s) (first: frame {bad[0]}, "
                f"{values[bad[0]]!r}) is not an integer: kept as {FRAME_NUMBER_TEXT}, the "
                "frame numbered by its index"
            )
        return numbers, found

    def _index_values(self) -> None:
        """Frame times from 3D Slicer's ``axis K index values`` (when no frame has a Timestamp).

        3D Slicer stores a volume sequence's index values (the frame times, unit ``s``) as
        ``axis 0 index values`` or ``axis 3 index values`` (the frame axis), URL-encoded and
        space-separated; they are used when they are numbers, one per frame.
        """
        axis = self._layout.frame_axis
        keys = [f"axis {axis} index values"] if axis is not None else []
        keys += [k for k in ("axis 0 index values", "axis 3 index values") if k not in keys]
        for key in keys:
            text = self._layout.raw.get(key)
            if text is None:
                continue
            index_type = self._layout.raw.get(key.replace("values", "type")) or "numeric"
            values = [urllib.parse.unquote(v) for v in text.split()]
            if index_type.strip().lower() != "numeric" or len(values) != self._n:
                continue
            try:
                times = np.array([float(v) for v in values], dtype=np.float64)
            except ValueError:
                continue
            if np.isfinite(times).all():
                self.timestamps = times
                return

    def _parse_frame_values(self) -> None:
        """Timestamps, frame numbers, image statuses and transforms of every frame.

        Works field by field (a handful of names) rather than line by line, so a
        5000-frame header is decoded with a few vectorised conversions.
        """
        n = self._n
        frames = self._frame_fields
        names = list(dict.fromkeys(itertools.chain.from_iterable(frames)))
        self.timestamps = self._numbers("Timestamp", np.full(n, np.nan))
        if "Timestamp" not in names:
            self._index_values()
        self.frame_numbers, self.has_frame_numbers = self._frame_numbers()
        self.image_ok = np.array(
            [v is None or v.strip().upper() == "OK" for v in self._column(self._status_field)],
            dtype=bool,
        ).reshape(n)
        self.transform_names = [
            key[: -len(TRANSFORM_SUFFIX)] for key in names if key.endswith(TRANSFORM_SUFFIX)
        ]
        self._matrices: dict[str, np.ndarray] = {}
        self._statuses: dict[str, list[TransformStatus]] = {}
        #: per transform name: frames whose pose was stored OK but is not rigid (now INVALID)
        self.not_rigid: dict[str, int] = {}
        word_status: dict[str | None, TransformStatus] = {None: TransformStatus.OK}
        for name in self.transform_names:
            key = f"{name}{TRANSFORM_SUFFIX}"
            entries = [(i, ff[key]) for i, ff in enumerate(frames) if key in ff]
            matrices = np.tile(np.eye(4), (n, 1, 1))
            present = np.zeros(n, dtype=bool)
            parsed = self._parse_matrices(name, entries)
            if len(parsed) == n and all(m is not None for m in parsed):
                matrices = np.array(parsed)
                present[:] = True
            else:
                for (i, _text), matrix in zip(entries, parsed, strict=True):
                    if matrix is not None:
                        matrices[i] = matrix
                        present[i] = True
            status_list = []
            for is_present, word in zip(
                present, self._column(f"{name}{STATUS_SUFFIX}"), strict=True
            ):
                if not is_present:
                    status_list.append(TransformStatus.MISSING)
                    continue
                status = word_status.get(word)
                if status is None:
                    status = word_status[word] = TransformStatus.parse(word)  # type: ignore[arg-type]
                status_list.append(status)  # no status field: OK (files written without them)
            if not may_scale(name):
                # a tracker pose that is not rigid (a scale, a shear, a zeroed rotation) places
                # the image wrongly however it is used: INVALID, as PLUS would mark a pose the
                # tracker could not give, and counted for `usnav info`
                finite = np.isfinite(matrices).all(axis=(1, 2))
                bad = ~rigid_poses(matrices) & present & finite  # non-finite: counted apart
                for index in np.flatnonzero(bad).tolist():
                    if status_list[index] is TransformStatus.OK:
                        status_list[index] = TransformStatus.INVALID
                        self.not_rigid[name] = self.not_rigid.get(name, 0) + 1
            self._matrices[name] = matrices
            self._statuses[name] = status_list

    def _parse_matrices(self, name: str, entries: list[tuple[int, str]]) -> list:
        """16 numbers per entry → 4×4 matrices (row-major); bad entries raise or give None."""
        tokens = [text.split() for _i, text in entries]
        counts = [len(t) for t in tokens]
        if all(c == 16 for c in counts):
            try:
                flat = np.array([x for t in tokens for x in t], dtype=np.float64)
                return list(flat.reshape(-1, 4, 4))
            except ValueError:
                pass  # find the bad one below, for the message
        out: list[np.ndarray | None] = []
        for (i, text), toks in zip(entries, tokens, strict=True):
            problem = None
            if len(toks) != 16:
                problem = (
                    f"frame {i}: {name}Transform has {len(toks)} numbers, expected 16 "
                    "(a row-major 4x4 matrix)"
                )
            else:
                try:
                    out.append(np.array(toks, dtype=np.float64).reshape(4, 4))
                    continue
                except ValueError:
                    problem = f"frame {i}: {name}Transform is not 16 numbers: {text[:80]!r}"
            self._fail(problem, "fix or remove that line, or use the tolerant reader (--tolerant)")
            out.append(None)
        return out

    # ------------------------------------------------------------------ access
    @property
    def paired_tracker_lag_s(self) -> float:
        """The tracker lag its images were paired with their poses at, s (the header's
        :data:`PAIRED_LAG_FIELD`; 0 without it, as PLUS records).

        Raises
        ------
        InputError
            The field is not a finite number within ±2 s.
        """
        text = self.header.get(PAIRED_LAG_FIELD)
        if text is None:
            return 0.0
        try:
            lag = float(text)
        except ValueError:
            lag = math.nan
        if not abs(lag) <= 2.0:
            raise InputError(
                str(self.path),
                f"header field {PAIRED_LAG_FIELD} = {text!r} is not a lag within ±2 s",
                "remove the field if the recording was paired as received",
            )
        return lag

    def __len__(self) -> int:
        return self._n

    def __enter__(self) -> Sequence:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Sequence({str(self.path)!r}, frames={self._n}, image_size={self.image_size}, "
            f"transforms={self.transform_names})"
        )

    def _check_index(self, index: int) -> int:
        if index < 0:
            index += self._n
        if not 0 <= index < self._n:
            raise IndexError(f"frame {index} out of range (sequence has {self._n} frames)")
        return index

    def image(self, index: int) -> np.ndarray:
        """Pixels of frame ``index``: a read-only array of ``frame_shape``.

        A view into the memory-mapped file for uncompressed files; inflated on demand for
        compressed ones.

        Raises
        ------
        InputError
            If the compressed data cannot be decoded up to that frame.
        """
        index = self._check_index(index)
        assert self._pixels is not None  # set when the file opened (or it refused)
        try:
            return self._pixels.frame(index)
        except PixelError as exc:
            raise InputError(
                self.path,
                exc.problem,
                "recover the readable frames with the tolerant reader "
                "(usnav info/convert --tolerant)",
            ) from None

    def fields(self, index: int) -> dict[str, str]:
        """All per-frame fields of frame ``index`` exactly as in the file."""
        return dict(self._frame_fields[self._check_index(index)])

    def frame(self, index: int) -> TrackedFrame:
        """Frame ``index`` as a :class:`~usnav.frames.TrackedFrame`.

        ``t_device`` = ``t_received`` = Timestamp (s); ``frame_number`` = FrameNumber or the
        index; transforms with their statuses; every other field (UnfilteredTimestamp,
        custom fields, non-standard status words) in ``fields``.
        """
        index = self._check_index(index)
        transforms = self.frame_transforms(index)
        other: dict[str, str] = {}
        for key, value in self._frame_fields[index].items():
            if key.endswith(TRANSFORM_SUFFIX) or key in (
                "Timestamp",
                "FrameNumber",
                self._status_field,
            ):
                continue
            if key.endswith(STATUS_SUFFIX) and value.strip().upper() in (
                "OK",
                "INVALID",
                "MISSING",
            ):
                continue
            other[key] = value
        if index in self._frame_number_text:
            other[FRAME_NUMBER_TEXT] = self._frame_number_text[index]
        t = float(self.timestamps[index])
        return TrackedFrame(
            image=self.image(index),
            transforms=transforms,
            t_device=t,
            t_received=t,
            frame_number=int(self.frame_numbers[index]),
            orientation=self.orientation,
            image_ok=bool(self.image_ok[index]),
            fields=other,
        )

    def frame_transforms(self, index: int) -> dict[str, TrackedTransform]:
        """The transforms frame ``index`` carries (name → matrix + status), without reading its
        pixels: what :meth:`frame` puts in ``transforms``."""
        index = self._check_index(index)
        transforms = {}
        for name in self.transform_names:
            status = self._statuses[name][index]
            if (
                status is TransformStatus.MISSING
                and f"{name}{TRANSFORM_SUFFIX}" not in self._frame_fields[index]
            ):
                continue
            transforms[name] = TrackedTransform(self._matrices[name][index].copy(), status)
        return transforms

    def __getitem__(self, index: int) -> TrackedFrame:
        return self.frame(index)

    def __iter__(self) -> Iterator[TrackedFrame]:
        for i in range(self._n):
            yield self.frame(i)

    def transforms(self, name: str) -> tuple[np.ndarray, list[TransformStatus]]:
        """All samples of transform ``name`` (without the ``Transform`` suffix).

        Returns
        -------
        (matrices (n, 4, 4) in mm, statuses)
            Frames without the transform have an identity matrix and status MISSING.

        Raises
        ------
        KeyError
            If the file has no such transform.
        """
        if name.endswith(TRANSFORM_SUFFIX) and name not in self._matrices:
            name = name[: -len(TRANSFORM_SUFFIX)]
        if name not in self._matrices:
            raise KeyError(
                f"{self.path}: no transform {name!r}; the file has "
                f"{', '.join(self.transform_names) or 'none'}"
            )
        return self._matrices[name].copy(), list(self._statuses[name])

    def pose_series(self, name: str, *, ok_only: bool = False) -> PoseSeries:
        """Timed series of ``name`` for interpolation (samples that are present, with their
        statuses; only the OK ones with ``ok_only``; frames without a timestamp skipped)."""
        matrices, statuses = self.transforms(name)
        keep = [
            i
            for i, s in enumerate(statuses)
            if s is not TransformStatus.MISSING
            and np.isfinite(self.timestamps[i])
            and (s is TransformStatus.OK or not ok_only)
        ]
        return PoseSeries(
            self.timestamps[keep], matrices[keep], [statuses[i] for i in keep], name=name
        )

    def verify(self) -> None:
        """Decode every frame's pixels once (compressed files); raise on the first problem.

        Raises
        ------
        InputError
            Truncated or corrupted compressed data, or data not matching the declared size.
        """
        if isinstance(self._pixels, InflatePixels) and self._n:
            complete, problem = self._pixels.scan()
            if problem and not (self.tolerant and complete >= self._n):
                raise InputError(
                    self.path,
                    problem,
                    "recover the readable frames with the tolerant reader "
                    "(usnav info/convert --tolerant)",
                )

    def close(self) -> None:
        """Release the file (pixel arrays already handed out stay valid)."""
        if self._pixels is not None:
            self._pixels.close()


def read_sequence(path: str | Path, *, tolerant: bool = False) -> Sequence:
    """Open a PLUS sequence file (``.igs.mha``, ``.mha``, ``.seq.nrrd``, ``.igs.nrrd``).

    Parameters
    ----------
    path
        The file.
    tolerant
        Open a damaged file as far as it is readable instead of refusing it: truncated or
        corrupted pixel data (compressed files are inflated once to find the last good
        frame), a size line that does not match the data, unparseable transforms (their
        samples become MISSING). ``len(seq)`` = ``seq.recovered_frames`` frames are then
        usable and ``seq.problems`` says what was wrong. A compressed stream carries one
        checksum for all frames, so damage is found where the decoder trips over it; the
        frames before that point are kept.

    Raises
    ------
    InputError
        No such file; not a sequence file; a header that never ends (no ElementDataFile);
        sizes, kinds or types that do not make sense; pixel data truncated or not matching
        DimSize; a transform that is not 16 numbers; an unknown image orientation.
    """
    p = Path(path)
    require_existing(p)
    if p.is_dir():
        raise InputError(p, "is a folder, expected a sequence file (.igs.mha, .seq.nrrd)")
    refuse_empty(p)
    fmt = _sniff_format(p)
    layout = read_metaio_layout(p) if fmt == "metaio" else read_nrrd_layout(p)
    return Sequence(layout, tolerant=tolerant)


def _sniff_format(path: Path) -> str:
    try:
        return sequence_format(path)
    except InputError:
        with open(path, "rb") as f:
            start = f.read(64).lstrip()
        if start.startswith(b"NRRD"):
            return "nrrd"
        if start.lower().startswith((b"objecttype", b"ndims")):
            return "metaio"
        raise


def _check_orientations() -> None:  # pragma: no cover - import-time sanity
    assert all(code in ORIENTATIONS_2D for code in PLUS_ORIENTATION_TEXT)


_check_orientations()
