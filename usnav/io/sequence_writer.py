"""Writing PLUS sequence files, streaming and crash-safe, and converting between formats.

:func:`write_sequence` and :class:`SequenceWriter` stream: each appended frame goes to a journal
next to the target (:mod:`usnav.io.sequence_journal`), so an interrupted recording (Ctrl-C,
``kill -9``, disk full) keeps every complete frame; ``close()`` assembles the PLUS-compatible
file and removes the journal. :func:`convert_sequence` converts ``.igs.mha`` ↔ ``.seq.nrrd``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from usnav.errors import InputError, UsnavError
from usnav.frames import TrackedFrame, TransformStatus, normalize_orientation
from usnav.io._metaio import STRUCTURAL_KEYS as METAIO_STRUCTURAL_KEYS
from usnav.io._metaio import format_number
from usnav.io._nrrdseq import STRUCTURAL_KEYS as NRRD_STRUCTURAL_KEYS
from usnav.io.outputs import FORCE_HINT
from usnav.io.sequence_journal import (
    FRAMES_FILE,
    JOURNAL_SUFFIX,
    JOURNAL_VERSION,
    META_FILE,
    PIXELS_FILE,
    JournalState,
    Recovery,
    assemble,
    journal_path,
    read_journal,
    reads_back,
    recover_journal,
    recover_recording,
    remove_journal,
)
from usnav.io.sequence_reader import (
    IMAGE_TYPES,
    STATUS_SUFFIX,
    TRANSFORM_SUFFIX,
    read_sequence,
    sequence_format,
)

__all__ = ["SequenceWriter", "convert_sequence", "write_sequence"]


log = logging.getLogger(__name__)

#: What ``Transform`` becomes in the name of a field that is not a transform.
SAFE_TRANSFORM_WORD = "Xform"


def safe_field_name(key: str) -> str:
    """``ImageToProbeTransformNote`` → ``ImageToProbeXformNote``; other names unchanged.

    3D Slicer reads every frame field whose name contains ``Transform`` (and not ``Status``)
    as a matrix, and PLUS every field ending in ``Transform``: a field that is not a
    transform is written under a name without the word.
    """
    if TRANSFORM_SUFFIX in key and "Status" not in key:
        return key.replace(TRANSFORM_SUFFIX, SAFE_TRANSFORM_WORD)
    return key


def _frame_text_fields(
    frame: TrackedFrame,
    source: str,
    renamed: dict[str, str] | None = None,
    unstated: frozenset[str] = frozenset(),
) -> dict[str, str]:
    """A frame's fields as PLUS writes them (without the image status).

    A field whose name has ``Transform`` in it but is not a transform is written under
    :func:`safe_field_name` (recorded in ``renamed``: old → new). A transform whose matrix
    is not finite is written INVALID. The transforms named in ``unstated`` get no status
    field when their status is OK (a converted file keeps a source without them as it was).
    """
    out: dict[str, str] = {}
    for key, value in frame.fields.items():
        text = str(value)
        if "\n" in text or "\r" in text:
            raise InputError(source, f"field {key} contains a line break")
        if not key or any(c in key for c in "=:\n\r"):
            raise InputError(source, f"field name {key!r} cannot be written to a sequence file")
        safe = safe_field_name(key)
        if safe != key:
            while safe in frame.fields or safe in out:
                safe += "_"
            if renamed is not None:
                renamed[key] = safe
        out[safe] = text
    for name, transform in frame.transforms.items():
        matrix = np.asarray(transform.matrix, dtype=np.float64)
        if matrix.shape != (4, 4):
            raise InputError(source, f"transform {name} has shape {matrix.shape}, expected (4, 4)")
        out[f"{name}{TRANSFORM_SUFFIX}"] = " ".join(format_number(v) for v in matrix.ravel())
        status = transform.status
        if status is TransformStatus.OK and not np.isfinite(matrix).all():
            status = TransformStatus.INVALID  # NaN/inf is no pose; PLUS would trust OK
        kept = out.get(f"{name}{STATUS_SUFFIX}")
        if kept is None and name in unstated and status is TransformStatus.OK:
            continue
        if kept is None or TransformStatus.parse(kept) is not status:
            out[f"{name}{STATUS_SUFFIX}"] = status.value
    if math.isfinite(frame.t_device):
        out["Timestamp"] = format_number(frame.t_device)
    out["FrameNumber"] = str(int(frame.frame_number))
    return out


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
    directions
        Unit direction of each pixel axis, one row per axis (MetaIO ``TransformMatrix``,
        NRRD ``space directions`` / spacing); default identity.
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
        directions: np.ndarray | None = None,
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
                self.path,
                f"cannot record ultrasound image type {image_type!r}",
                f"use one of {', '.join(IMAGE_TYPES)}",
            )
        if directions is not None:
            directions = np.asarray(directions, dtype=np.float64)
            if (
                directions.ndim != 2
                or directions.shape[0] != directions.shape[1]
                or not 1 <= directions.shape[0] <= 3
                or not np.isfinite(directions).all()
            ):
                raise InputError(
                    self.path,
                    f"pixel axis directions of shape {directions.shape} cannot be written",
                    "give a finite k x k matrix for k = 2 or 3 pixel axes",
                )
        self._meta = {
            "version": JOURNAL_VERSION,
            "target": self.path.name,
            "format": self.format,
            "compress": bool(compress),
            "level": int(compression_level),
            "orientation": orientation,
            "image_type": image_type.upper(),
            "header_fields": dict(header_fields or {}),
            "spacing": list(spacing) if spacing else None,
            "offset": list(offset) if offset else None,
            "directions": directions.tolist() if directions is not None else None,
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
        #: Fields written under another name (old → new): see :func:`safe_field_name`.
        self.renamed_fields: dict[str, str] = {}
        self._unstated: frozenset[str] = frozenset()
        self._interrupted = False
        self._closed = False
        try:
            self.journal.mkdir()
            (self.journal / META_FILE).write_text(json.dumps(self._meta))
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_BINARY", 0)
            self._pix_fd = os.open(self.journal / PIXELS_FILE, flags, 0o644)
            self._log_fd = os.open(self.journal / FRAMES_FILE, flags, 0o644)
        except OSError as exc:
            for fd in (getattr(self, "_pix_fd", None), getattr(self, "_log_fd", None)):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            remove_journal(self.journal)
            raise UsnavError(
                f"{self.path}: cannot start the recording (its journal {self.journal.name}: "
                f"{exc.strerror}) — choose a folder you can write into"
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
        if image.dtype.byteorder == ">":
            # IGSIO ignores the byte order field and reads little-endian: write it so
            image = image.astype(image.dtype.newbyteorder("<"))
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
                chunks.append(np.ascontiguousarray(image).data.cast("B"))
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
        renamed: dict[str, str] = {}
        fields = _frame_text_fields(frame, f"{self.path} frame {index}", renamed, self._unstated)
        for old, new in renamed.items():
            if old not in self.renamed_fields:
                self.renamed_fields[old] = new
                log.warning(
                    "%s: field %r is not a transform but has 'Transform' in its name; "
                    "written as %r (3D Slicer and PLUS would read it as a transform)",
                    self.path,
                    old,
                    new,
                )
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
            return recover_recording(self.path, overwrite=True)
        state = JournalState(
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
        assemble(self.journal, self.path, state)
        return self.path

    def abort(self) -> None:
        """Stop without assembling (the journal stays for :func:`recover_recording`)."""
        self._closed = True
        for fd in (self._pix_fd, self._log_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def write_sequence(
    path: str | Path,
    frames: Iterable[TrackedFrame],
    *,
    compress: bool = True,
    orientation: str | None = None,
    image_type: str = "BRIGHTNESS",
    **writer_options: Any,
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
    )
    try:
        for frame in frames:
            writer.append(frame)
    except BaseException:
        writer.abort()
        remove_journal(writer.journal)
        raise
    return writer.close()


def convert_sequence(
    source: str | Path,
    target: str | Path,
    *,
    compress: bool | None = None,
    tolerant: bool = False,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    on_recovery: Callable[[Recovery], None] | None = None,
    on_problems: Callable[[str], None] | None = None,
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
    on_recovery
        Called with the :class:`~usnav.io.sequence_journal.Recovery` when ``source`` is a
        journal (frames it could not recover, whether the journal was kept).
    on_problems
        Called once, before any frame is written, with one line when the tolerant reader
        found the source damaged: the frames kept of those declared, and what it found
        (until session 40 a tolerant conversion dropped frames without a word).

    Raises
    ------
    InputError
        Missing or unreadable source, unknown target suffix, target exists, a journal with
        nothing recoverable.
    """
    src = Path(source)
    dst = Path(target)
    sequence_format(dst)
    if src.is_dir() and src.name.endswith(JOURNAL_SUFFIX):
        recovery = _convert_journal(src, dst, compress=compress, overwrite=overwrite)
        if on_recovery is not None:
            on_recovery(recovery)
        return dst
    if dst.exists() and not overwrite:
        raise InputError(dst, "already exists", "choose another name or use --force")
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise InputError(dst, "is the source file itself", "write to another file")
    with read_sequence(src, tolerant=tolerant) as seq:
        layout_keys = METAIO_STRUCTURAL_KEYS | NRRD_STRUCTURAL_KEYS
        extra = {k: v for k, v in seq.header.items() if k.lower() not in layout_keys}
        total = len(seq)
        if seq.problems and on_problems is not None:
            on_problems(
                f"{src}: kept {total} of {seq.declared_frames} frames: " + "; ".join(seq.problems)
            )
        writer = SequenceWriter(
            dst,
            compress=seq.compressed if compress is None else compress,
            orientation=seq.orientation if seq.image_size[0] else None,
            image_type=seq.image_type,
            header_fields=extra,
            spacing=seq.spacing,
            offset=seq.origin,
            directions=seq.directions,
            fsync_interval_s=math.inf,
        )
        try:
            for i in range(total):
                frame = seq.frame(i)
                source_fields = seq.fields(i)
                # a transform without a status field stays without one (PLUS reads it as
                # invalid, usnav as OK): the converted file says what the source said
                writer._unstated = frozenset(
                    name
                    for name in frame.transforms
                    if f"{name}{STATUS_SUFFIX}" not in source_fields
                )
                writer.append(frame)
                if progress is not None:
                    progress(i + 1, total)
        except BaseException:
            writer.abort()
            remove_journal(writer.journal)
            raise
        return writer.close()


def _convert_journal(
    journal: Path, target: Path, *, compress: bool | None, overwrite: bool
) -> Recovery:
    """Recover ``journal`` into ``target`` only (through a hidden scratch file beside it when
    the format or compression changes); the journal goes only if every frame got there."""
    if target.exists() and not overwrite:
        raise InputError(target, "already exists", FORCE_HINT)
    meta = read_journal(journal).meta
    if sequence_format(target) == meta["format"] and compress in (None, meta["compress"]):
        return recover_journal(journal, target, overwrite=overwrite)
    suffix = ".igs.mha" if meta["format"] == "metaio" else ".seq.nrrd"
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    scratch = Path(name)
    try:
        recovery = recover_journal(journal, scratch, overwrite=True, keep=True)
        convert_sequence(scratch, target, compress=compress, overwrite=overwrite)
    finally:
        scratch.unlink(missing_ok=True)
    recovery.path = target
    problem = reads_back(target, recovery.frames)
    if problem:
        target.unlink(missing_ok=True)
        raise UsnavError(
            f"{target}: the converted recording does not read back ({problem}), so it was "
            f"removed; {journal} is kept as it is"
        )
    if recovery.complete:
        remove_journal(journal)
        recovery.journal_kept = False
    return recovery
