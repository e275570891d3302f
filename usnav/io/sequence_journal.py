"""The journal of a recording, and recovery: what makes a usnav recording crash-safe.

While :class:`~usnav.io.sequence_writer.SequenceWriter` records, each frame goes to a journal
folder next to the target (``<target>.journal``): the pixels appended to ``pixels.bin``
(already deflated when compressing, sync-flushed), then one JSON line of fields in
``frames.jsonl``, so every complete line is a complete frame. :func:`assemble` writes the
PLUS-compatible file from a journal (on ``close()``, or after ``kill -9`` / a power cut via
:func:`recover_recording`, which ``usnav convert <target>.journal <target>`` runs).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from usnav.errors import InputError, UsnavError
from usnav.frames import normalize_orientation
from usnav.io._metaio import format_metaio_header
from usnav.io._nrrdseq import format_nrrd_header
from usnav.io.sequence_reader import PLUS_ORIENTATION_TEXT

__all__ = [
    "JournalState",
    "assemble",
    "inspect_journal",
    "journal_path",
    "read_journal",
    "recover_recording",
    "remove_journal",
]

JOURNAL_SUFFIX = ".journal"
JOURNAL_VERSION = 1
PIXELS_FILE = "pixels.bin"
FRAMES_FILE = "frames.jsonl"
META_FILE = "meta.json"


def journal_path(path: str | Path) -> Path:
    """The journal folder a :class:`SequenceWriter` keeps next to ``path`` while recording."""
    p = Path(path)
    return p.with_name(p.name + JOURNAL_SUFFIX)


def plus_orientation(code: str, ndim_spatial: int) -> str:
    code = normalize_orientation(code)
    if ndim_spatial == 2 and code in PLUS_ORIENTATION_TEXT:
        return PLUS_ORIENTATION_TEXT[code]
    return code


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


class JournalState:
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


def read_journal(journal: Path) -> JournalState:
    if not (journal / META_FILE).is_file():
        raise InputError(
            journal,
            f"not a usnav recording journal (it has no {META_FILE})",
            "give the .journal folder that usnav record or usnav run left beside a recording",
        )
    try:
        meta = json.loads((journal / META_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(journal, f"not a usnav recording journal ({exc})") from None
    if meta.get("version") != JOURNAL_VERSION:
        raise InputError(journal, f"journal version {meta.get('version')} is not supported")
    frames: list[dict[str, str]] = []
    shape = dtype = None
    last = {"end": 0, "raw": 0, "check": 1 if meta["format"] == "metaio" else 0, "pending": 0}
    shape_at_last = None
    try:
        data = (journal / FRAMES_FILE).read_bytes()
    except OSError as exc:
        raise InputError(journal, f"cannot read {FRAMES_FILE}: {exc.strerror}") from None
    pix_size = (journal / PIXELS_FILE).stat().st_size if (journal / PIXELS_FILE).exists() else 0
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
    return JournalState(
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
    state = read_journal(journal)
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


def assemble(journal: Path, target: Path, state: JournalState) -> None:
    """Write ``target`` (header + pixels from the journal) atomically; remove the journal."""
    meta = state.meta
    n = len(state.frames)
    compress = bool(meta["compress"])
    shape = state.shape
    if shape is None or state.pending:
        # no image at all (tracker-only): PLUS writes DimSize 0 0 N, uncompressed
        spatial, ndim_spatial, channels = (0, 0, 0), 2, 1
        dtype: np.dtype[Any] | None = np.dtype("u1")
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
    orientation = plus_orientation(first_orientation, ndim_spatial)
    status_field = "ImageStatus" if meta["format"] == "metaio" else "Status"
    if spatial[0] == 0:
        for f in frames:
            f[status_field] = "INVALID"
    pixels_path = journal / PIXELS_FILE
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
    common: dict[str, Any] = dict(
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
    for name in (PIXELS_FILE, FRAMES_FILE, META_FILE):
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
    if p.name.endswith(JOURNAL_SUFFIX) and p.is_dir():
        journal, target = p, p.with_name(p.name[: -len(JOURNAL_SUFFIX)])
    else:
        journal, target = journal_path(p), p
    if not journal.is_dir():
        raise InputError(journal, "no recording journal here (nothing to recover)")
    state = read_journal(journal)
    assemble(journal, target, state)
    return target


def remove_journal(journal: Path) -> None:
    for name in (PIXELS_FILE, FRAMES_FILE, META_FILE):
        with contextlib.suppress(OSError):
            (journal / name).unlink()
    with contextlib.suppress(OSError):
        journal.rmdir()
