"""The journal of a recording, and recovery: what makes a usnav recording crash-safe.

While :class:`~usnav.io.sequence_writer.SequenceWriter` records, each frame goes to a journal
folder next to the target (``<target>.journal``): the pixels appended to ``pixels.bin``
(already deflated when compressing, sync-flushed), then one JSON line of fields in
``frames.jsonl``, so every complete line is a complete frame. :func:`assemble` writes the
PLUS-compatible file from a journal (on ``close()``, or after ``kill -9`` / a power cut via
:func:`recover_recording`, which ``usnav convert <target>.journal <target>`` runs).

Recovery never loses what the journal holds: :func:`recover_journal` skips a damaged line
(the frames after it are kept), ends the frames where the pixels stop matching their
checksums, checks the file by reading it back before it takes its name, never replaces an
existing file unless asked to, and removes the journal only when every frame it numbers was
written; otherwise the journal stays and :class:`Recovery` says what is missing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from usnav.errors import InputError, UsnavError
from usnav.frames import normalize_orientation
from usnav.io._metaio import format_metaio_header
from usnav.io._nrrdseq import format_nrrd_header
from usnav.io.outputs import FORCE_HINT
from usnav.io.sequence_reader import IMAGE_TYPES, PLUS_ORIENTATION_TEXT, sequence_format

__all__ = [
    "JournalState",
    "Recovery",
    "assemble",
    "inspect_journal",
    "journal_path",
    "read_journal",
    "recover_journal",
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
    """What is needed to assemble a final file from a journal.

    ``frames`` and the stream position fields describe the contiguous run of complete frames
    from the first one (what :func:`assemble` copies as is). A journal read from disk also
    keeps every other readable frame record (``records``), the lines that could not be read
    (``damaged``: 1-based line number of ``frames.jsonl`` and why) and the size of its
    ``pixels.bin``, for :func:`recover_journal` to salvage what lies past a damaged line.
    """

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
        records: list[FrameRecord] | None = None,
        damaged: list[tuple[int, str]] | None = None,
        image: tuple[tuple[int, ...], np.dtype] | None = None,
        pix_size: int = 0,
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
        self.records = records or []
        self.damaged = damaged or []
        self.image = image
        self.pix_size = pix_size


class FrameRecord:
    """One frame line of ``frames.jsonl`` that reads as the writer wrote it."""

    __slots__ = ("check", "end", "fields", "index", "line", "pending", "raw")

    def __init__(
        self,
        *,
        index: int,
        line: int,
        fields: dict[str, str],
        end: int,
        raw: int,
        check: int,
        pending: int,
    ):
        self.index = index
        self.line = line
        self.fields = fields
        self.end = end
        self.raw = raw
        self.check = check
        self.pending = pending


_META_HINT = "restore it from a copy; the recorded frames and pixels are untouched"


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_text(value: object) -> bool:
    return isinstance(value, str) and "\n" not in value and "\r" not in value


def _read_meta(journal: Path) -> dict[str, Any]:
    """The journal's ``meta.json``, every field the recovery uses checked."""
    path = journal / META_FILE
    if not path.is_file():
        raise InputError(
            journal,
            f"not a usnav recording journal (it has no {META_FILE})",
            "give the .journal folder that usnav record or usnav run left beside a recording",
        )
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a usnav recording journal's {META_FILE} ({exc})") from None
    if not isinstance(meta, dict):
        raise InputError(
            path, f"holds a JSON {type(meta).__name__}, not the object a recording writes"
        )
    if meta.get("version") != JOURNAL_VERSION:
        raise InputError(journal, f"journal version {meta.get('version')} is not supported")

    def bad(field: str, expected: str) -> InputError:
        return InputError(
            path, f"field {field!r} is {meta.get(field)!r}, expected {expected}", _META_HINT
        )

    if meta.get("format") not in ("metaio", "nrrd"):
        raise bad("format", '"metaio" or "nrrd"')
    target = meta.get("target")
    if not (
        isinstance(target, str)
        and target not in ("", ".", "..")
        and "/" not in target
        and "\\" not in target
        and target.isprintable()
    ):
        # the recording's file name, beside the journal: never a path elsewhere
        raise bad("target", "the recording's file name (no folder)")
    if not isinstance(meta.get("compress"), bool):
        raise bad("compress", "true or false")
    level = meta.get("level", 6)
    if not _is_int(level) or not -1 <= level <= 9:
        raise bad("level", "a zlib compression level 0..9")
    if meta.get("orientation") is not None:
        try:
            meta["orientation"] = normalize_orientation(meta["orientation"])
        except (AttributeError, ValueError):
            raise bad("orientation", "an image orientation code such as MF") from None
    if meta.get("image_type") is not None and meta["image_type"] not in IMAGE_TYPES:
        raise bad("image_type", f"one of {', '.join(IMAGE_TYPES)}")
    fields = meta.get("header_fields")
    if fields is not None and not (
        isinstance(fields, dict)
        and all(_is_text(k) and k.strip() and _is_text(v) for k, v in fields.items())
    ):
        raise bad("header_fields", "an object of one-line texts")
    for field in ("spacing", "offset"):
        value = meta.get(field)
        if value is not None and not (
            isinstance(value, list)
            and 1 <= len(value) <= 4
            and all(isinstance(x, int | float) and not isinstance(x, bool) for x in value)
            and all(math.isfinite(x) for x in value)
        ):
            raise bad(field, "null or a list of 1 to 4 finite numbers")
    directions = meta.get("directions")
    if directions is not None and not (
        isinstance(directions, list)
        and 1 <= len(directions) <= 3
        and all(
            isinstance(row, list)
            and len(row) == len(directions)
            and all(isinstance(x, int | float) and not isinstance(x, bool) for x in row)
            and all(math.isfinite(x) for x in row)
            for row in directions
        )
    ):
        raise bad("directions", "null or a square matrix (list of rows) of finite numbers")
    if meta.get("volume") not in (None, True, False):
        raise bad("volume", "null, true or false")
    return meta


def _frame_bytes(image: tuple[tuple[int, ...], np.dtype]) -> int:
    return math.prod(image[0]) * image[1].itemsize


def _image_layout(record: dict) -> tuple[tuple[int, ...], np.dtype] | None:
    """(shape, dtype) of an ``{"image": ...}`` line, or None if it does not make sense."""
    image = record["image"]
    if not isinstance(image, dict):
        return None
    shape, dtype = image.get("shape"), image.get("dtype")
    if not (
        isinstance(shape, list)
        and 2 <= len(shape) <= 4
        and all(_is_int(x) and x > 0 for x in shape)
    ):
        return None
    try:
        parsed = np.dtype(dtype) if isinstance(dtype, str) else None
    except TypeError:
        return None
    if parsed is None or parsed.kind not in "uif":
        return None
    return tuple(shape), parsed


def _frame_record(
    record: dict,
    line: int,
    previous: FrameRecord | None,
    image: tuple[tuple[int, ...], np.dtype] | None,
    compress: bool,
) -> FrameRecord | str:
    """A frame line checked against the lines before it; a text saying why not otherwise."""
    keys = ("i", "end", "raw", "check", "pending")
    numbers = [x for x in (record.get(k) for k in keys) if _is_int(x) and x >= 0]
    if len(numbers) != len(keys):
        return "a frame line without its numbers"
    index, end, raw, check, pending = numbers
    fields = record.get("fields")
    if not (
        isinstance(fields, dict)
        and all(_is_text(k) and k.strip() and _is_text(v) for k, v in fields.items())
    ):
        return "a frame line without its fields"
    if previous is not None and (
        index <= previous.index or end < previous.end or raw < previous.raw
    ):
        return f"frame {index} out of order"
    if pending:
        fits = image is None and pending == index + 1 and raw == 0
    else:
        fits = image is not None and raw == (index + 1) * _frame_bytes(image)
    if not fits or (not compress and end != raw):
        return f"frame {index} does not fit the frames before it"
    return FrameRecord(
        index=index, line=line, fields=fields, end=end, raw=raw, check=check, pending=pending
    )


def read_journal(journal: Path) -> JournalState:
    """Read a journal: its meta, every readable frame line, and the lines that are not.

    Raises
    ------
    InputError
        Not a usnav journal, a ``meta.json`` field that does not make sense, or no
        readable ``frames.jsonl``.
    """
    meta = _read_meta(journal)
    compress = bool(meta["compress"])
    try:
        data = (journal / FRAMES_FILE).read_bytes()
    except OSError as exc:
        raise InputError(journal, f"cannot read {FRAMES_FILE}: {exc.strerror}") from None
    pix_size = (journal / PIXELS_FILE).stat().st_size if (journal / PIXELS_FILE).exists() else 0
    records: list[FrameRecord] = []
    damaged: list[tuple[int, str]] = []
    image: tuple[tuple[int, ...], np.dtype] | None = None
    lines = data.split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):
                break  # the last line, cut by the crash: not a frame yet
            damaged.append((number, "not JSON"))
            continue
        if not isinstance(record, dict):
            damaged.append((number, f"a JSON {type(record).__name__}, not a record"))
        elif "image" in record:
            layout = _image_layout(record)
            if layout is None or image is not None or (records and records[-1].pending == 0):
                damaged.append((number, "an image layout that does not fit"))
            else:
                image = layout
        elif "orientation" in record:
            try:
                meta["orientation"] = normalize_orientation(record["orientation"])
            except (AttributeError, ValueError):
                damaged.append((number, "an unknown image orientation"))
        else:
            checked = _frame_record(
                record, number, records[-1] if records else None, image, compress
            )
            if isinstance(checked, str):
                damaged.append((number, checked))
            else:
                records.append(checked)
    # the frames assemble() copies as they are: complete from frame 0, without a gap
    frames: list[dict[str, str]] = []
    last: FrameRecord | None = None
    for record in records:
        if record.index != len(frames) or record.end > pix_size:
            break
        frames.append(record.fields)
        last = record
    fresh = 1 if meta["format"] == "metaio" else 0
    with_image = last is not None and last.pending == 0 and image is not None
    return JournalState(
        meta=meta,
        frames=frames,
        shape=image[0] if with_image and image else None,
        dtype=image[1].str if with_image and image else None,
        pix_end=last.end if last else 0,
        raw_bytes=last.raw if last else 0,
        checksum=last.check if last else fresh,
        pending=last.pending if last else 0,
        finished=False,
        records=records,
        damaged=damaged,
        image=image,
        pix_size=pix_size,
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
        # what `usnav convert` can salvage past a damaged line (an upper bound: the pixels
        # are checked against their checksums only when recovering), and the damaged lines
        "readable_frames": sum(1 for r in state.records if r.end <= state.pix_size),
        "damaged_lines": [[number, why] for number, why in state.damaged],
        "frame_shape": list(state.shape) if state.shape else [0, 0],
        "pixel_type": str(state.dtype) if state.dtype is not None else None,
    }


def _layout(
    meta: dict, image: tuple[tuple[int, ...], np.dtype] | None
) -> tuple[tuple[int, int, int], int, int, np.dtype]:
    """(spatial size, spatial dimensions, channels, dtype) of the file's pixel layout."""
    if image is None:  # no image at all (tracker-only): PLUS writes DimSize 0 0 N
        return (0, 0, 0), 2, 1, np.dtype("u1")
    shape, dtype = image
    if len(shape) == 2:
        return (shape[1], shape[0], 1), 2, 1, dtype
    if len(shape) == 3 and (
        meta.get("volume") is False or (shape[2] <= 4 and meta.get("volume") is not True)
    ):
        return (shape[1], shape[0], 1), 2, shape[2], dtype
    return (shape[2], shape[1], shape[0]), 3, (shape[3] if len(shape) == 4 else 1), dtype


def _header(
    meta: dict,
    image: tuple[tuple[int, ...], np.dtype] | None,
    frames: list[dict[str, str]],
    *,
    compressed: bool,
    compressed_size: int | None,
) -> bytes:
    """The sequence header for ``frames`` (their status set INVALID when there is no image)."""
    spatial, ndim_spatial, channels, dtype = _layout(meta, image)
    orientation = plus_orientation(meta.get("orientation") or "MF", ndim_spatial)
    status_field = "ImageStatus" if meta["format"] == "metaio" else "Status"
    if spatial[0] == 0:
        for f in frames:
            f[status_field] = "INVALID"
    common: dict[str, Any] = dict(
        n_frames=len(frames),
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
        directions=meta.get("directions"),
    )
    if meta["format"] == "metaio":
        return format_metaio_header(
            compressed_size=compressed_size if compressed else None, **common
        )
    return format_nrrd_header(compressed=compressed, **common)


def _write_assembled(journal: Path, partial: Path, state: JournalState) -> None:
    """Write header + the journal's pixels (copied as they are) to ``partial``."""
    meta = state.meta
    compress = bool(meta["compress"])
    if state.shape is None or state.pending:
        image = None
        compress = False  # tracker-only: uncompressed, as PLUS writes it
        frames = [dict(f) for f in state.frames]
    else:
        assert state.dtype is not None
        image = (state.shape, state.dtype)
        frames = state.frames
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
        body_len = state.pix_end if image is not None else 0
        compressed_size = None
    header = _header(meta, image, frames, compressed=compress, compressed_size=compressed_size)
    with open(partial, "wb") as out:
        out.write(header)
        out.write(prefix)
        if body_len:
            with open(journal / PIXELS_FILE, "rb") as src:
                _copy_range(src, out, body_len)
        out.write(ending)
        out.write(trailer)
        out.flush()
        os.fsync(out.fileno())


def _write_error(journal: Path, target: Path, n: int, exc: OSError) -> UsnavError:
    reason = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror
    return UsnavError(
        f"{target}: cannot write the recording: {reason}; its {n} frames are safe in "
        f"{journal} — fix that, then run `usnav convert {journal} {target}`"
    )


def _partial(target: Path) -> Path:
    return target.with_name(target.name + ".partial")


def assemble(journal: Path, target: Path, state: JournalState) -> None:
    """Write ``target`` (header + pixels from the journal) atomically; remove the journal."""
    partial = _partial(target)
    try:
        _write_assembled(journal, partial, state)
        os.replace(partial, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise _write_error(journal, target, len(state.frames), exc) from None
    remove_journal(journal)


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


@dataclass(kw_only=True)
class Recovery:
    """What :func:`recover_journal` wrote, and what it could not.

    Attributes
    ----------
    journal, path
        The journal read and the file written.
    frames
        Frames written to ``path``.
    listed
        Frames the journal's readable lines number (the highest frame number + 1).
    problems
        Why frames are missing, one text each (damaged lines by number, missing pixels).
    journal_kept
        The journal was left in place (frames were missing, or the caller asked to keep it).
    """

    journal: Path
    path: Path
    frames: int
    listed: int
    problems: list[str]
    journal_kept: bool = True

    @property
    def complete(self) -> bool:
        """Every frame the journal held is in ``path``."""
        return not self.problems and self.frames == self.listed

    def summary(self) -> str:
        """One line: what was recovered, what was not, and that the journal is kept."""
        text = f"{self.journal}: {self.frames} of {self.listed} frames recovered into {self.path}"
        if self.problems:
            text += "; " + "; ".join(self.problems)
        if self.journal_kept:
            text += f" — the journal is kept: check {self.path.name}, then delete the journal"
        return text


def _line_list(damaged: list[tuple[int, str]]) -> str:
    """``line 6 (why), line 21 (why)``, the first five of them."""
    shown = ", ".join(f"line {n} ({why})" for n, why in damaged[:5])
    return shown + (f" and {len(damaged) - 5} more lines" if len(damaged) > 5 else "")


def _pixel_blocks(path: Path, compress: bool, length: int) -> Iterator[bytes]:
    """The uncompressed pixel bytes of the first ``length`` bytes of ``pixels.bin``.

    Raises ``zlib.error`` where the compressed stream is damaged.
    """
    block = 1 << 20
    inflater = zlib.decompressobj(-15) if compress else None
    with open(path, "rb") as src:
        left = length
        while left > 0:
            data = src.read(min(block, left))
            if not data:
                return
            left -= len(data)
            if inflater is None:
                yield data
                continue
            while data:
                out = inflater.decompress(data, block)
                if out:
                    yield out
                data = inflater.unconsumed_tail


def _checked_length(journal: Path, state: JournalState) -> tuple[int, str | None]:
    """How many uncompressed pixel bytes agree with the frame lines' running checksums.

    Returns (bytes, problem): the stream is good up to the last frame line whose checksum
    matched; ``problem`` says why it ends earlier than the last frame line, if it does.
    """
    metaio = state.meta["format"] == "metaio"
    points = [r for r in state.records if r.pending == 0 and r.end <= state.pix_size]
    if not points:
        return 0, None
    checksum = 1 if metaio else 0
    position = good = 0
    at = 0
    try:
        for data in _pixel_blocks(journal / PIXELS_FILE, state.meta["compress"], points[-1].end):
            block = memoryview(data)
            while block.nbytes:
                take = block[: points[at].raw - position]
                checksum = zlib.adler32(take, checksum) if metaio else zlib.crc32(take, checksum)
                position += take.nbytes
                block = block[take.nbytes :]
                if position == points[at].raw:
                    if checksum != points[at].check:
                        break
                    good = position
                    at += 1
                    if at == len(points):
                        return good, None
            else:
                continue
            break
    except zlib.error:
        pass
    return good, (
        f"{PIXELS_FILE} is damaged before the pixels of frame {points[at].index} "
        f"({FRAMES_FILE} line {points[at].line})"
    )


def _salvage(journal: Path, partial: Path, state: JournalState) -> tuple[int, list[str]]:
    """Write every frame whose line and pixels both read back; (frames, problems)."""
    meta = state.meta
    problems: list[str] = []
    good, problem = _checked_length(journal, state)
    if problem:
        problems.append(problem)
    image = state.image
    size = _frame_bytes(image) if image is not None else 0
    if image is not None and good:
        kept = [r for r in state.records if (r.index + 1) * size <= good]
    else:  # no frame with pixels: the frames recorded before the first image, tracker-only
        kept = [r for r in state.records if r.pending]
        image = None
    missing = [r for r in state.records if r.end > state.pix_size]
    if missing and not problem:
        problems.append(
            f"{PIXELS_FILE} ends before the pixels of frame {missing[0].index} "
            f"({FRAMES_FILE} line {missing[0].line})"
        )
    frames = [dict(r.fields) for r in kept]
    compress = bool(meta["compress"]) and image is not None
    wanted = {r.index for r in kept}
    pixels = partial.with_name(partial.name + ".pixels")
    try:
        with open(pixels, "wb") as out:
            packer = None
            if compress:
                wbits = 15 if meta["format"] == "metaio" else 31
                packer = zlib.compressobj(int(meta.get("level", 6)), zlib.DEFLATED, wbits)
            if image is not None:
                buffer = bytearray()
                index = 0
                for block in _pixel_blocks(journal / PIXELS_FILE, bool(meta["compress"]), good):
                    buffer += block
                    start = 0
                    while len(buffer) - start >= size:
                        if index in wanted:
                            frame = memoryview(buffer)[start : start + size]
                            out.write(packer.compress(frame) if packer else frame)
                            frame.release()
                        start += size
                        index += 1
                    del buffer[:start]
            if packer is not None:
                out.write(packer.flush())
        header = _header(
            meta,
            image,
            frames,
            compressed=compress,
            compressed_size=pixels.stat().st_size,
        )
        with open(partial, "wb") as out:
            out.write(header)
            with open(pixels, "rb") as src:
                _copy_range(src, out, pixels.stat().st_size)
            out.flush()
            os.fsync(out.fileno())
    finally:
        with contextlib.suppress(OSError):
            pixels.unlink()
    return len(kept), problems


def reads_back(path: Path, frames: int) -> str | None:
    """None if ``path`` reads back with ``frames`` frames and all its pixels; why not if not."""
    from usnav.io.sequence_reader import read_sequence

    try:
        with read_sequence(path) as seq:
            if len(seq) != frames:
                return f"it reads back with {len(seq)} frames, not {frames}"
            seq.verify()
    except UsnavError as exc:
        return str(exc)
    return None


def recover_journal(
    journal: str | Path, target: str | Path, *, overwrite: bool = False, keep: bool = False
) -> Recovery:
    """Write the frames of a recording's journal to ``target``; remove the journal if all are.

    Every frame whose line and pixels read back is kept: a damaged ``frames.jsonl`` line is
    skipped (the frames after it are kept), pixels that end early or fail their checksum end
    the frames there. The file is checked by reading it back before it takes ``target``'s
    name. The journal is removed only when every frame it numbers was written and no line
    was damaged (and ``keep`` is false); otherwise it stays and
    :attr:`Recovery.problems` says what is missing.

    Parameters
    ----------
    journal
        The journal folder (``rec.igs.mha.journal``).
    target
        The file to write, in the journal's format (``.igs.mha``/``.mha`` or ``.seq.nrrd``).
    overwrite
        Replace ``target`` if it exists.
    keep
        Keep the journal even if every frame was recovered.

    Returns
    -------
    Recovery
        What was written and what was not.

    Raises
    ------
    InputError
        No journal there, not a usnav journal, a damaged ``meta.json``, no frame that can be
        recovered from a journal that lists some, ``target`` exists (without ``overwrite``)
        or names another format. Nothing is written and the journal is kept.
    UsnavError
        The file cannot be written or does not read back (the journal is kept).
    """
    journal, target = Path(journal), Path(target)
    if not journal.is_dir():
        raise InputError(journal, "no recording journal here (nothing to recover)")
    state = read_journal(journal)
    if target.exists() and not overwrite:
        raise InputError(target, "already exists", FORCE_HINT)
    if sequence_format(target) != state.meta["format"]:
        raise InputError(
            target,
            f"the journal holds a {state.meta['format']} recording, this names another format",
            "recover with usnav convert, which converts too",
        )
    listed = state.records[-1].index + 1 if state.records else 0
    problems = (
        [f"skipped damaged {FRAMES_FILE} {_line_list(state.damaged)}"] if state.damaged else []
    )
    partial = _partial(target)
    try:
        written, failure = len(state.frames), None
        whole = len(state.frames) == len(state.records) and not state.damaged
        if whole:
            _write_assembled(journal, partial, state)
            failure = reads_back(partial, written)
        if not whole or failure:
            written, salvage_problems = _salvage(journal, partial, state)
            problems += salvage_problems
            if written == 0 and (state.records or state.damaged):
                raise InputError(
                    journal / FRAMES_FILE,
                    f"no frame can be recovered: {'; '.join(problems)}",
                    "nothing was written; the journal is kept as it is",
                )
            failure = reads_back(partial, written)
        if failure:
            raise UsnavError(
                f"{target}: the recovered recording does not read back ({failure}); "
                f"nothing was written and {journal} is kept as it is"
            )
        os.replace(partial, target)
    except OSError as exc:
        raise _write_error(journal, target, listed, exc) from None
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()
    if written < listed and not problems:
        problems.append(f"{listed - written} frame lines are missing from {FRAMES_FILE}")
    result = Recovery(
        journal=journal, path=target, frames=written, listed=listed, problems=problems
    )
    if result.complete and not keep:
        remove_journal(journal)
        result.journal_kept = False
    return result


def recover_recording(path: str | Path, *, overwrite: bool = False) -> Path:
    """Assemble the recording a killed :class:`SequenceWriter` left as a journal.

    Keeps every frame whose line and pixels read back (see :func:`recover_journal`), in the
    file the journal is named after.

    Parameters
    ----------
    path
        The recording's target file (``rec.igs.mha``) or its journal folder
        (``rec.igs.mha.journal``).
    overwrite
        Replace the recording's file if it exists.

    Returns
    -------
    Path
        The assembled file.

    Raises
    ------
    InputError
        No journal there, not a usnav journal, nothing recoverable, or the file exists.
    UsnavError
        The file cannot be written (the journal is kept).
    """
    p = Path(path)
    if p.name.endswith(JOURNAL_SUFFIX) and p.is_dir():
        journal, target = p, p.with_name(p.name[: -len(JOURNAL_SUFFIX)])
    else:
        journal, target = journal_path(p), p
    return recover_journal(journal, target, overwrite=overwrite).path


def remove_journal(journal: Path) -> None:
    for name in (PIXELS_FILE, FRAMES_FILE, META_FILE):
        with contextlib.suppress(OSError):
            (journal / name).unlink()
    with contextlib.suppress(OSError):
        journal.rmdir()
