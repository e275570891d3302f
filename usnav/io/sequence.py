"""PLUS sequence files: ``.igs.mha`` (MetaIO) and ``.seq.nrrd`` / ``.igs.nrrd`` (NRRD).

The recording format of usnav, read and written as PLUS/IGSIO do, so recordings from PLUS,
fCal and 3D Slicer replay here and ours open there.

Reading (:func:`read_sequence`) parses the header (any key order), keeps every per-frame
field, and gives lazy pixel access: uncompressed pixels are memory-mapped (a 2 GB recording
opens in milliseconds), compressed ones are inflated on first access, streaming, one frame at
a time (see :mod:`usnav.io._pixels`). Nothing checks the compressed pixels at open time except
what is cheap (sizes, stream header, gzip trailer); :meth:`Sequence.verify` inflates the whole
stream once, and ``tolerant=True`` does so to count the recoverable frames.

Writing (:func:`write_sequence`, :class:`SequenceWriter`) streams: each appended frame goes to
a journal folder next to the target (pixels appended to one file, already deflated when
compressing, and one JSON line of fields per frame, flushed), so an interrupted recording
(Ctrl-C, ``kill -9``, disk full) keeps every complete frame; ``close()`` assembles the
PLUS-compatible file and removes the journal; :func:`recover_recording` assembles a journal
left by a killed writer.

Frames: ``Image`` pixels (x = column, y = row); transforms are ``FromToTo`` 4×4 matrices in mm,
row-major in the file; timestamps in seconds on the recording's clock.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import math
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from usnav.errors import InputError, UsnavError
from usnav.frames import (
    ORIENTATIONS_2D,
    TrackedFrame,
    TrackedTransform,
    TransformStatus,
    normalize_orientation,
)
from usnav.io._metaio import STRUCTURAL_KEYS as METAIO_STRUCTURAL_KEYS
from usnav.io._metaio import format_metaio_header, format_number, read_metaio_layout
from usnav.io._nrrdseq import STRUCTURAL_KEYS as NRRD_STRUCTURAL_KEYS
from usnav.io._nrrdseq import format_nrrd_header, read_nrrd_layout
from usnav.io._pixels import InflatePixels, PixelError, RawPixels
from usnav.io._seqheader import Layout
from usnav.transforms.series import PoseSeries

__all__ = [
    "Sequence",
    "SequenceWriter",
    "convert_sequence",
    "inspect_journal",
    "read_sequence",
    "recover_recording",
    "sequence_format",
    "write_sequence",
]

#: Image types PLUS knows (``UltrasoundImageType``).
IMAGE_TYPES = ("BRIGHTNESS", "RF_REAL", "RF_IQ_LINE", "RF_I_LINE_Q_LINE", "RGB_COLOR")
#: How PLUS writes a 2D orientation (``MF`` and ``MFA`` are one enum value, printed "MFA").
_PLUS_ORIENTATION_TEXT = {"MF": "MFA", "MN": "MND", "UF": "UFD", "UN": "UNA"}
_TRANSFORM_SUFFIX = "Transform"
_STATUS_SUFFIX = "TransformStatus"


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
    raise InputError(
        path, "unknown sequence file type", "use .igs.mha (MetaIO) or .seq.nrrd / .igs.nrrd (NRRD)"
    )


def _parse_float(path: Path, index: int, name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(path, f"frame {index}: {name} is not a number: {text!r}") from None


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
        self.image_type = (layout.image_type or "BRIGHTNESS").strip().upper()
        self._status_field = layout.status_field
        self.orientation = self._orientation(layout)
        self._frame_fields = self._collect_frame_fields(layout)
        self._pixels: RawPixels | InflatePixels | None = None
        try:
            n_pixels = self._open_pixels(layout)
            n = min(self.declared_frames, n_pixels)
            self._frame_fields = self._frame_fields[:n]
            self._n = n
            self.recovered_frames = n
            self._parse_frame_values()
            self.spacing, self.origin = self._geometry(layout)
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
                "expected one of MF, MN, UF, UN, FM, NM, FU, NU (or MFA, MFD... for 3D)",
            ) from None

    def _collect_frame_fields(self, layout: Layout) -> list[dict[str, str]]:
        found = layout.raw.frames
        n = self.declared_frames
        if found:
            highest = max(found)
            if highest >= n:
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

    def _open_pixels(self, layout: Layout) -> int:
        """Open the pixel source; returns how many frames have pixels (all, unless damaged)."""
        n = self.declared_frames
        frame_bytes = layout.frame_bytes
        try:
            size = os.path.getsize(layout.data_path)
        except OSError as exc:
            raise InputError(layout.data_path, f"cannot read pixel data: {exc.strerror}") from None
        available = max(size - layout.data_offset, 0)
        if frame_bytes == 0:
            self._pixels = RawPixels(
                layout.data_path, layout.data_offset, 0, self.frame_shape, self.dtype
            )
            return n
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

    def _geometry(self, layout: Layout) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Pixel spacing and origin of the pixel axes (loosely parsed; defaults 1 and 0)."""
        k = layout.ndim_spatial
        spacing = [1.0] * k
        origin = [0.0] * k
        try:
            if layout.format == "metaio":
                values = [float(v) for v in (layout.raw.get("ElementSpacing") or "").split()]
                spacing[: min(k, len(values))] = values[:k]
                values = [float(v) for v in (layout.raw.get("Offset") or "").split()]
                origin[: min(k, len(values))] = values[:k]
            else:
                vectors = [
                    [float(x) for x in part.strip("()").split(",")]
                    for part in (layout.raw.get("space directions") or "").split()
                    if part != "none"
                ]
                for i, vector in enumerate(vectors[:k]):
                    spacing[i] = math.hypot(*vector)  # no overflow warning on absurd values
                text = (layout.raw.get("space origin") or "").strip("() ")
                values = [float(x) for x in text.split(",")] if text else []
                origin[: min(k, len(values))] = values[:k]
        except ValueError:
            self.problems.append("pixel spacing/origin not readable; using 1 and 0")
        return tuple(spacing), tuple(origin)

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

    def _parse_frame_values(self) -> None:
        """Timestamps, frame numbers, image statuses and transforms of every frame.

        Works field by field (a handful of names) rather than line by line, so a
        5000-frame header is decoded with a few vectorised conversions.
        """
        n = self._n
        frames = self._frame_fields
        names = list(dict.fromkeys(itertools.chain.from_iterable(frames)))
        self.timestamps = self._numbers("Timestamp", np.full(n, np.nan))
        self.has_frame_numbers = "FrameNumber" in names
        numbers = self._numbers("FrameNumber", np.arange(n, dtype=np.float64))
        self.frame_numbers = numbers.astype(np.int64)
        self.image_ok = np.array(
            [v is None or v.strip().upper() == "OK" for v in self._column(self._status_field)],
            dtype=bool,
        ).reshape(n)
        self.transform_names = [
            key[: -len(_TRANSFORM_SUFFIX)] for key in names if key.endswith(_TRANSFORM_SUFFIX)
        ]
        self._matrices: dict[str, np.ndarray] = {}
        self._statuses: dict[str, list[TransformStatus]] = {}
        word_status: dict[str | None, TransformStatus] = {None: TransformStatus.OK}
        for name in self.transform_names:
            key = f"{name}{_TRANSFORM_SUFFIX}"
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
                present, self._column(f"{name}{_STATUS_SUFFIX}"), strict=True
            ):
                if not is_present:
                    status_list.append(TransformStatus.MISSING)
                    continue
                status = word_status.get(word)
                if status is None:
                    status = word_status[word] = TransformStatus.parse(word)  # type: ignore[arg-type]
                status_list.append(status)  # no status field: OK (files written without them)
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
        transforms = {}
        for name in self.transform_names:
            status = self._statuses[name][index]
            if (
                status is TransformStatus.MISSING
                and f"{name}{_TRANSFORM_SUFFIX}" not in self._frame_fields[index]
            ):
                continue
            transforms[name] = TrackedTransform(self._matrices[name][index].copy(), status)
        other: dict[str, str] = {}
        for key, value in self._frame_fields[index].items():
            if key.endswith(_TRANSFORM_SUFFIX) or key in (
                "Timestamp",
                "FrameNumber",
                self._status_field,
            ):
                continue
            if key.endswith(_STATUS_SUFFIX) and value.strip().upper() in (
                "OK",
                "INVALID",
                "MISSING",
            ):
                continue
            other[key] = value
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
        if name.endswith(_TRANSFORM_SUFFIX) and name not in self._matrices:
            name = name[: -len(_TRANSFORM_SUFFIX)]
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
    if not p.exists():
        raise InputError(p, "no such file")
    if p.is_dir():
        raise InputError(p, "is a folder, expected a sequence file (.igs.mha, .seq.nrrd)")
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


# ====================================================================== writing
_JOURNAL_SUFFIX = ".journal"
_JOURNAL_VERSION = 1
_PIXELS = "pixels.bin"
_FRAMES = "frames.jsonl"
_META = "meta.json"


def journal_path(path: str | Path) -> Path:
    """The journal folder a :class:`SequenceWriter` keeps next to ``path`` while recording."""
    p = Path(path)
    return p.with_name(p.name + _JOURNAL_SUFFIX)


def _plus_orientation(code: str, ndim_spatial: int) -> str:
    code = normalize_orientation(code)
    if ndim_spatial == 2 and code in _PLUS_ORIENTATION_TEXT:
        return _PLUS_ORIENTATION_TEXT[code]
    return code


def _frame_text_fields(frame: TrackedFrame, source: str) -> dict[str, str]:
    """A frame's fields as PLUS writes them (without the image status)."""
    out: dict[str, str] = {}
    for key, value in frame.fields.items():
        text = str(value)
        if "\n" in text or "\r" in text:
            raise InputError(source, f"field {key} contains a line break")
        if not key or any(c in key for c in "=:\n\r"):
            raise InputError(source, f"field name {key!r} cannot be written to a sequence file")
        if _TRANSFORM_SUFFIX in key and "Status" not in key:
            raise InputError(
                source,
                f"field {key!r} has 'Transform' in its name but is not a transform",
                "3D Slicer reads every such field as a matrix: rename it",
            )
        out[key] = text
    for name, transform in frame.transforms.items():
        matrix = np.asarray(transform.matrix, dtype=np.float64)
        if matrix.shape != (4, 4):
            raise InputError(source, f"transform {name} has shape {matrix.shape}, expected (4, 4)")
        out[f"{name}{_TRANSFORM_SUFFIX}"] = " ".join(format_number(v) for v in matrix.ravel())
        kept = out.get(f"{name}{_STATUS_SUFFIX}")
        if kept is None or TransformStatus.parse(kept) is not transform.status:
            out[f"{name}{_STATUS_SUFFIX}"] = transform.status.value
    if math.isfinite(frame.t_device):
        out["Timestamp"] = format_number(frame.t_device)
    out["FrameNumber"] = str(int(frame.frame_number))
    return out


def _zlib_header(level: int) -> bytes:
    flevel = 0 if level in (0, 1) else 1 if level < 6 else 2 if level == 6 else 3
    cmf = 0x78
    flg = flevel << 6
    flg |= 31 - ((cmf << 8) | flg) % 31
    return bytes((cmf, flg))


_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
#: An empty final deflate block (fixed Huffman, end-of-block only), to close a stream that
#: was sync-flushed (byte-aligned) but never finished: used to recover killed recordings.
_EMPTY_FINAL_BLOCK = b"\x03\x00"


class SequenceWriter:
    """Streaming, crash-safe writer of a PLUS sequence file (what the recorder uses).

    Every frame gets ``FrameNumber`` (the frame's ``frame_number``), ``Timestamp``
    (``t_device``, unless NaN), its transforms with their statuses, its other ``fields`` and
    the image status, in PLUS's field order.

    Each :meth:`append` writes the frame's pixels (deflated on the fly and sync-flushed when
    compressing) to ``<path>.journal/pixels.bin``, then one JSON line with its fields to
    ``<path>.journal/frames.jsonl``; a line is written only after its pixels, so every
    complete line is a complete frame. The journal is fsynced at most every
    ``fsync_interval_s``. :meth:`close` writes the final file next to the target, renames
    it into place and removes the journal. After ``kill -9`` or a power cut, run
    :func:`recover_recording` (``usnav convert <path>.journal <path>``) to assemble the
    frames up to the last complete one.

    Parameters
    ----------
    path
        Target file; the suffix picks the format (``.igs.mha``/``.mha`` or
        ``.seq.nrrd``/``.igs.nrrd``).
    compress
        zlib (MetaIO) / gzip (NRRD) the pixels, as PLUS does by default.
    orientation
        Ultrasound image orientation to record (default: the first frame's, normally MF;
        written as PLUS prints it, ``MFA`` for 2D MF).
    image_type
        ``BRIGHTNESS`` (B-mode), ``RF_REAL``, ...
    compression_level
        zlib level 1–9 (1: fastest, keeps up with a probe; PLUS uses 6).
    header_fields
        Extra sequence-level fields to write (non-layout keys only).
    spacing, offset
        ElementSpacing / Offset of the pixel axes (default 1 and 0: PLUS keeps the mm
        scaling in ImageToProbe).
    volume
        Frames of shape (a, b, c) are (rows, cols, channels) when c ≤ 4, else volumes
        (slices, rows, cols); True/False forces volumes / 2D frames with channels.
    fsync_interval_s
        Longest time between two fsyncs of the journal (0 = fsync every frame). A killed
        process loses nothing either way; this bounds what a power cut can lose.

    Raises
    ------
    InputError
        Unknown suffix, missing folder, or a journal already there (an interrupted
        recording: recover it or remove it first).
    UsnavError
        The journal cannot be created (permissions, disk full).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        compress: bool = True,
        orientation: str | None = None,
        image_type: str = "BRIGHTNESS",
        compression_level: int = 1,
        header_fields: dict[str, str] | None = None,
        spacing: tuple[float, ...] | None = None,
        offset: tuple[float, ...] | None = None,
        volume: bool | None = None,
        fsync_interval_s: float = 1.0,
    ):
        self.path = Path(path)
        self.format = sequence_format(self.path)
        if not self.path.parent.is_dir():
            raise InputError(self.path.parent, "no such folder to write the recording into")
        self.journal = journal_path(self.path)
        if self.journal.exists():
            raise InputError(
                self.journal,
                "a journal of an interrupted recording is already there",
                f"recover it with `usnav convert {self.journal} {self.path}` or remove it",
            )
        if orientation is not None:
            normalize_orientation(orientation)
        if image_type.upper() not in IMAGE_TYPES:
            raise InputError(
                "image_type",
                f"unknown ultrasound image type {image_type!r}",
                f"use one of {', '.join(IMAGE_TYPES)}",
            )
        self._meta = {
            "version": _JOURNAL_VERSION,
            "target": self.path.name,
            "format": self.format,
            "compress": bool(compress),
            "level": int(compression_level),
            "orientation": orientation,
            "image_type": image_type.upper(),
            "header_fields": dict(header_fields or {}),
            "spacing": list(spacing) if spacing else None,
            "offset": list(offset) if offset else None,
            "volume": volume,
            "created": time.time(),
        }
        self._status_field = "ImageStatus" if self.format == "metaio" else "Status"
        self._compressor = (
            zlib.compressobj(int(compression_level), zlib.DEFLATED, -15) if compress else None
        )
        self._fsync_interval = fsync_interval_s
        self._last_sync = time.monotonic()
        self._frames: list[dict[str, str]] = []
        self._shape: tuple[int, ...] | None = None
        self._dtype: np.dtype | None = None
        self._blank: bytes | None = None
        self._pending_blank = 0  # frames before the first image (their pixels come later)
        self._pix_end = 0  # bytes in pixels.bin
        self._raw_bytes = 0  # uncompressed pixel bytes so far
        self._checksum = 1  # adler32 (MetaIO) or crc32 (NRRD gz) of the uncompressed pixels
        if self.format == "nrrd":
            self._checksum = 0
        self._failed: UsnavError | None = None
        self._interrupted = False
        self._closed = False
        try:
            self.journal.mkdir()
            (self.journal / _META).write_text(json.dumps(self._meta))
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_BINARY", 0)
            self._pix_fd = os.open(self.journal / _PIXELS, flags, 0o644)
            self._log_fd = os.open(self.journal / _FRAMES, flags, 0o644)
        except OSError as exc:
            for fd in (getattr(self, "_pix_fd", None), getattr(self, "_log_fd", None)):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            _remove_journal(self.journal)
            raise UsnavError(
                f"{self.journal}: cannot start the recording: {exc.strerror}"
            ) from None

    # ------------------------------------------------------------------ appending
    def __enter__(self) -> SequenceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._frames)

    def _write_all(self, fd: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view.nbytes:
            written = os.write(fd, view)
            view = view[written:]

    def _pixel_bytes(self, frame: TrackedFrame) -> tuple[list, bool]:
        """(byte chunks to append for this frame, image_ok)."""
        image = np.asarray(frame.image)
        has_image = image.size > 0
        if has_image and image.dtype.kind not in "uif":
            raise InputError(
                f"{self.path} frame {len(self._frames)}",
                f"image dtype {image.dtype} cannot be written (use uint8/uint16)",
            )
        chunks: list = []
        if has_image and self._shape is None:
            if image.ndim not in (2, 3, 4):
                raise InputError(
                    f"{self.path} frame {len(self._frames)}",
                    f"image has shape {image.shape}, expected (rows, cols)",
                )
            self._shape = tuple(int(s) for s in image.shape)
            self._dtype = image.dtype
            self._blank = bytes(image.nbytes)
            self._log({"image": {"shape": list(self._shape), "dtype": image.dtype.str}})
            chunks += [self._blank] * self._pending_blank
            self._pending_blank = 0
        if has_image:
            if tuple(image.shape) != self._shape or image.dtype != self._dtype:
                raise InputError(
                    f"{self.path} frame {len(self._frames)}",
                    f"image {image.shape} {image.dtype} differs from the recording's "
                    f"{self._shape} {self._dtype}",
                    "every frame of a sequence has one size",
                )
            if frame.image_ok:
                chunks.append(memoryview(np.ascontiguousarray(image)).cast("B"))
            else:
                chunks.append(self._blank)  # PLUS writes invalid frames blank
            return chunks, frame.image_ok
        if self._shape is None:
            self._pending_blank += 1
        else:
            chunks.append(self._blank)
        return chunks, False

    def _log(self, record: dict) -> None:
        self._write_all(self._log_fd, (json.dumps(record) + "\n").encode())

    def append(self, frame: TrackedFrame) -> None:
        """Add one frame (durable in the journal when this returns).

        Raises
        ------
        InputError
            A frame that cannot be written (size differs from the first frame, bad field).
        UsnavError
            The disk is full or not writable; the frames already appended are kept and
            ``close()`` (or :func:`recover_recording`) assembles them.
        """
        if self._closed:
            raise UsnavError(f"{self.path}: the recording is closed")
        if self._failed is not None:
            raise self._failed
        index = len(self._frames)
        fields = _frame_text_fields(frame, f"{self.path} frame {index}")
        try:
            if self._meta["orientation"] is None:
                self._meta["orientation"] = normalize_orientation(frame.orientation)
                self._log({"orientation": self._meta["orientation"]})
            chunks, image_ok = self._pixel_bytes(frame)
            fields[self._status_field] = "OK" if image_ok else "INVALID"
            for chunk in chunks:
                self._raw_bytes += len(chunk) if isinstance(chunk, bytes) else chunk.nbytes
                if self.format == "metaio":
                    self._checksum = zlib.adler32(chunk, self._checksum)
                else:
                    self._checksum = zlib.crc32(chunk, self._checksum)
                if self._compressor is not None:
                    chunk = self._compressor.compress(chunk)
                self._write_all(self._pix_fd, chunk)
                self._pix_end += len(chunk)
            if self._compressor is not None and chunks:
                flushed = self._compressor.flush(zlib.Z_SYNC_FLUSH)
                self._write_all(self._pix_fd, flushed)
                self._pix_end += len(flushed)
            self._log(
                {
                    "i": index,
                    "fields": fields,
                    "end": self._pix_end,
                    "raw": self._raw_bytes,
                    "check": self._checksum,
                    "pending": self._pending_blank,
                }
            )
            now = time.monotonic()
            if now - self._last_sync >= self._fsync_interval:
                os.fsync(self._pix_fd)
                os.fsync(self._log_fd)
                self._last_sync = now
        except BaseException as exc:
            if not isinstance(exc, OSError):
                self._interrupted = True  # e.g. Ctrl-C mid-frame: close() trusts the journal
                raise
            reason = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror
            self._failed = UsnavError(
                f"{self.path}: cannot write frame {index}: {reason}; the {index} frames "
                f"before it are safe in {self.journal} — free space, then run "
                f"`usnav convert {self.journal} {self.path}`"
            )
            raise self._failed from None
        self._frames.append(fields)

    # ------------------------------------------------------------------ closing
    def close(self) -> Path:
        """Write the final file and remove the journal; returns the file's path.

        Raises
        ------
        UsnavError
            The file cannot be written (disk full...). The journal is kept; run
            :func:`recover_recording` once the problem is fixed.
        """
        if self._closed:
            return self.path
        self._closed = True
        try:
            tail = b""
            if self._failed is not None or self._interrupted:
                raise OSError("not finishing a stream that was interrupted")
            if self._compressor is not None:
                tail = self._compressor.flush(zlib.Z_FINISH)
            self._write_all(self._pix_fd, tail)
        except OSError:
            tail = None  # fall back on recovery from the journal
        finally:
            for fd in (self._pix_fd, self._log_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)
        if tail is None:
            return recover_recording(self.path)
        state = _JournalState(
            meta=self._meta,
            frames=self._frames,
            shape=self._shape,
            dtype=self._dtype.str if self._dtype is not None else None,
            pix_end=self._pix_end,
            raw_bytes=self._raw_bytes,
            checksum=self._checksum,
            pending=self._pending_blank,
            finished=True,
            finish_bytes=len(tail),
        )
        _assemble(self.journal, self.path, state)
        return self.path

    def abort(self) -> None:
        """Stop without assembling (the journal stays for :func:`recover_recording`)."""
        self._closed = True
        for fd in (self._pix_fd, self._log_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class _JournalState:
    """What is needed to assemble a final file from a journal."""

    def __init__(
        self,
        *,
        meta: dict,
        frames: list[dict[str, str]],
        shape,
        dtype,
        pix_end: int,
        raw_bytes: int,
        checksum: int,
        pending: int,
        finished: bool,
        finish_bytes: int = 0,
    ):
        self.meta = meta
        self.frames = frames
        self.shape = tuple(shape) if shape else None
        self.dtype = np.dtype(dtype) if dtype else None
        self.pix_end = pix_end
        self.raw_bytes = raw_bytes
        self.checksum = checksum
        self.pending = pending
        self.finished = finished
        self.finish_bytes = finish_bytes


def _read_journal(journal: Path) -> _JournalState:
    if not (journal / _META).is_file():
        raise InputError(
            journal,
            f"not a usnav recording journal (it has no {_META})",
            "give the .journal folder that usnav record or usnav run left beside a recording",
        )
    try:
        meta = json.loads((journal / _META).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(journal, f"not a usnav recording journal ({exc})") from None
    if meta.get("version") != _JOURNAL_VERSION:
        raise InputError(journal, f"journal version {meta.get('version')} is not supported")
    frames: list[dict[str, str]] = []
    shape = dtype = None
    last = {"end": 0, "raw": 0, "check": 1 if meta["format"] == "metaio" else 0, "pending": 0}
    shape_at_last = None
    try:
        data = (journal / _FRAMES).read_bytes()
    except OSError as exc:
        raise InputError(journal, f"cannot read {_FRAMES}: {exc.strerror}") from None
    pix_size = (journal / _PIXELS).stat().st_size if (journal / _PIXELS).exists() else 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            break  # a line cut by the crash: everything before it is complete
        if not isinstance(record, dict):
            break  # not a line the writer wrote (usnav soak files: a journal line "[]")
        if "image" in record:
            shape, dtype = record["image"]["shape"], record["image"]["dtype"]
            continue
        if "orientation" in record:
            meta["orientation"] = record["orientation"]
            continue
        if record.get("i") != len(frames) or record["end"] > pix_size:
            break
        frames.append(record["fields"])
        last = record
        shape_at_last = (shape, dtype)
    shape, dtype = shape_at_last if shape_at_last else (None, None)
    return _JournalState(
        meta=meta,
        frames=frames,
        shape=shape,
        dtype=dtype,
        pix_end=last["end"],
        raw_bytes=last["raw"],
        checksum=last["check"],
        pending=last["pending"],
        finished=False,
    )


def inspect_journal(path: str | Path) -> dict:
    """What an interrupted recording's journal holds (complete frames, image shape, target).

    Raises
    ------
    InputError
        Not a usnav recording journal.
    """
    journal = Path(path)
    state = _read_journal(journal)
    return {
        "path": str(journal),
        "kind": "journal",
        "target": str(journal.with_name(state.meta["target"])),
        "format": state.meta["format"],
        "compressed": bool(state.meta["compress"]),
        "frames": len(state.frames),
        "frame_shape": list(state.shape) if state.shape else [0, 0],
        "pixel_type": str(state.dtype) if state.dtype is not None else None,
    }


def _assemble(journal: Path, target: Path, state: _JournalState) -> None:
    """Write ``target`` (header + pixels from the journal) atomically; remove the journal."""
    meta = state.meta
    n = len(state.frames)
    compress = bool(meta["compress"])
    shape = state.shape
    if shape is None or state.pending:
        # no image at all (tracker-only): PLUS writes DimSize 0 0 N, uncompressed
        spatial, ndim_spatial, channels = (0, 0, 0), 2, 1
        dtype = np.dtype("u1")
        compress = False
        frames = [dict(f) for f in state.frames]
    else:
        dtype = state.dtype
        if len(shape) == 2:
            spatial, ndim_spatial, channels = (shape[1], shape[0], 1), 2, 1
        elif len(shape) == 3 and (
            meta.get("volume") is False or (shape[2] <= 4 and meta.get("volume") is not True)
        ):
            spatial, ndim_spatial, channels = (shape[1], shape[0], 1), 2, shape[2]
        else:
            spatial, ndim_spatial, channels = (
                (shape[2], shape[1], shape[0]),
                3,
                (shape[3] if len(shape) == 4 else 1),
            )
        frames = state.frames
    first_orientation = meta.get("orientation") or "MF"
    orientation = _plus_orientation(first_orientation, ndim_spatial)
    status_field = "ImageStatus" if meta["format"] == "metaio" else "Status"
    if spatial[0] == 0:
        for f in frames:
            f[status_field] = "INVALID"
    pixels_path = journal / _PIXELS
    if compress:
        if meta["format"] == "metaio":
            prefix = _zlib_header(int(meta.get("level", 6)))
            trailer = struct.pack(">I", state.checksum & 0xFFFFFFFF)
        else:
            prefix = _GZIP_HEADER
            trailer = struct.pack("<II", state.checksum & 0xFFFFFFFF, state.raw_bytes & 0xFFFFFFFF)
        ending = b"" if state.finished else _EMPTY_FINAL_BLOCK
        body_len = state.pix_end + state.finish_bytes
        compressed_size = len(prefix) + body_len + len(ending) + len(trailer)
    else:
        prefix = ending = trailer = b""
        body_len = state.pix_end if spatial[0] else 0
        compressed_size = None
    common = dict(
        n_frames=n,
        spatial=spatial,
        ndim_spatial=ndim_spatial,
        channels=channels,
        dtype=dtype,
        orientation=orientation,
        image_type=meta.get("image_type") or "BRIGHTNESS",
        frame_fields=frames,
        extra_fields=meta.get("header_fields") or {},
        spacing=tuple(meta["spacing"]) if meta.get("spacing") else None,
        offset=tuple(meta["offset"]) if meta.get("offset") else None,
    )
    if meta["format"] == "metaio":
        header = format_metaio_header(compressed_size=compressed_size, **common)
    else:
        header = format_nrrd_header(compressed=compress, **common)
    partial = target.with_name(target.name + ".partial")
    try:
        with open(partial, "wb") as out:
            out.write(header)
            out.write(prefix)
            if body_len:
                with open(pixels_path, "rb") as src:
                    _copy_range(src, out, body_len)
            out.write(ending)
            out.write(trailer)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        reason = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror
        raise UsnavError(
            f"{target}: cannot write the recording: {reason}; its {n} frames are safe in "
            f"{journal} — fix that, then run `usnav convert {journal} {target}`"
        ) from None
    for name in (_PIXELS, _FRAMES, _META):
        with contextlib.suppress(OSError):
            (journal / name).unlink()
    with contextlib.suppress(OSError):
        journal.rmdir()


def _copy_range(src, dst, length: int) -> None:
    """Copy ``length`` bytes from the start of ``src`` to ``dst`` (kernel copy if possible)."""
    src.seek(0)
    dst.flush()
    copied = 0
    if hasattr(os, "copy_file_range"):
        try:
            while copied < length:
                n = os.copy_file_range(
                    src.fileno(), dst.fileno(), length - copied, offset_src=copied
                )
                if n == 0:
                    break
                copied += n
            dst.seek(0, os.SEEK_END)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
    src.seek(copied)
    while copied < length:
        block = src.read(min(8 << 20, length - copied))
        if not block:
            raise OSError(errno.EIO, f"journal pixels end after {copied} of {length} bytes")
        dst.write(block)
        copied += len(block)


def recover_recording(path: str | Path) -> Path:
    """Assemble the recording a killed :class:`SequenceWriter` left as a journal.

    Keeps every frame up to the last complete one (fields and pixels both written).

    Parameters
    ----------
    path
        The recording's target file (``rec.igs.mha``) or its journal folder
        (``rec.igs.mha.journal``).

    Returns
    -------
    Path
        The assembled file.

    Raises
    ------
    InputError
        No journal there, or not a usnav journal.
    UsnavError
        The file cannot be written (the journal is kept).
    """
    p = Path(path)
    if p.name.endswith(_JOURNAL_SUFFIX) and p.is_dir():
        journal, target = p, p.with_name(p.name[: -len(_JOURNAL_SUFFIX)])
    else:
        journal, target = journal_path(p), p
    if not journal.is_dir():
        raise InputError(journal, "no recording journal here (nothing to recover)")
    state = _read_journal(journal)
    _assemble(journal, target, state)
    return target


def write_sequence(
    path: str | Path,
    frames: Iterable[TrackedFrame],
    *,
    compress: bool = True,
    orientation: str | None = None,
    image_type: str = "BRIGHTNESS",
    **writer_options: object,
) -> Path:
    """Write frames to a PLUS sequence file, streaming (one frame in memory at a time).

    Parameters
    ----------
    path
        ``.igs.mha``/``.mha`` (MetaIO) or ``.seq.nrrd``/``.igs.nrrd`` (NRRD).
    frames
        The frames (same image size and dtype; frames with an empty image or
        ``image_ok=False`` are written blank with ImageStatus INVALID, as PLUS does).
    compress
        One zlib (MetaIO) / gzip (NRRD) stream across all frames.
    orientation
        Image orientation to record; default: the first frame's.
    image_type
        ``BRIGHTNESS``...
    writer_options
        Passed to :class:`SequenceWriter` (``compression_level``, ``header_fields``...).

    Returns
    -------
    Path
        The written file.
    """
    writer = SequenceWriter(
        path,
        compress=compress,
        orientation=orientation,
        image_type=image_type,
        fsync_interval_s=math.inf,
        **writer_options,
    )  # type: ignore[arg-type]
    try:
        for frame in frames:
            writer.append(frame)
    except BaseException:
        writer.abort()
        _remove_journal(writer.journal)
        raise
    return writer.close()


def _remove_journal(journal: Path) -> None:
    for name in (_PIXELS, _FRAMES, _META):
        with contextlib.suppress(OSError):
            (journal / name).unlink()
    with contextlib.suppress(OSError):
        journal.rmdir()


def _check_orientations() -> None:  # pragma: no cover - import-time sanity
    assert all(code in ORIENTATIONS_2D for code in _PLUS_ORIENTATION_TEXT)


_check_orientations()


def convert_sequence(
    source: str | Path,
    target: str | Path,
    *,
    compress: bool | None = None,
    tolerant: bool = False,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Convert between ``.igs.mha`` and ``.seq.nrrd`` (either way, or re-compress), streaming.

    Every per-frame field, the image orientation and type, the pixel spacing/origin and any
    custom sequence-level field are kept. Frames are read and written one at a time
    (uncompressed sources are memory-mapped), so memory stays O(frame).

    Parameters
    ----------
    source
        A sequence file, or the journal folder of an interrupted recording
        (``rec.igs.mha.journal``), which is then recovered first.
    target
        The file to write; its suffix picks the format.
    compress
        Compress the pixels; default: as the source.
    tolerant
        Convert the readable part of a damaged source (see :func:`read_sequence`).
    overwrite
        Replace ``target`` if it exists.
    progress
        Called as ``progress(done, total)`` after each frame.

    Raises
    ------
    InputError
        Missing or unreadable source, unknown target suffix, target exists.
    """
    src = Path(source)
    dst = Path(target)
    sequence_format(dst)
    if src.is_dir() and src.name.endswith(_JOURNAL_SUFFIX):
        recovered = recover_recording(src)
        if recovered.resolve() == dst.resolve():
            return dst
        src = recovered
    if dst.exists() and not overwrite:
        raise InputError(dst, "already exists", "choose another name or use --force")
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise InputError(dst, "is the source file itself", "write to another file")
    with read_sequence(src, tolerant=tolerant) as seq:
        layout_keys = METAIO_STRUCTURAL_KEYS | NRRD_STRUCTURAL_KEYS
        extra = {k: v for k, v in seq.header.items() if k.lower() not in layout_keys}
        total = len(seq)

        def frames() -> Iterator[TrackedFrame]:
            for i in range(total):
                yield seq.frame(i)
                if progress is not None:
                    progress(i + 1, total)

        return write_sequence(
            dst,
            frames(),
            compress=seq.compressed if compress is None else compress,
            orientation=seq.orientation if seq.image_size[0] else None,
            image_type=seq.image_type,
            header_fields=extra,
            spacing=seq.spacing,
            offset=seq.origin,
        )
