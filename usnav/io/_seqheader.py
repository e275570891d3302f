"""Header text of PLUS sequence files, shared by the MetaIO and NRRD flavours.

A PLUS sequence header is text: sequence-level fields, then per-frame fields named
``Seq_FrameNNNN_<Field>``, then the pixel data. This module finds where the header ends
without reading the pixels, splits it into lines and sorts the frame fields by frame index.
The two flavours differ only in line syntax (``Key = Value`` versus ``key: value`` /
``key:=value``) and in how the header ends (``ElementDataFile = LOCAL`` versus an empty line).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from usnav.errors import InputError

#: Read the header in blocks of this many bytes (a 5000-frame tracker header is ~4 MB).
_BLOCK = 1 << 20
#: A header longer than this is not a header (about a million frames).
_MAX_HEADER_BYTES = 512 << 20
#: Prefix of per-frame fields.
FRAME_PREFIX = "Seq_Frame"
_FRAME_PREFIX_LOWER = FRAME_PREFIX.lower()


@dataclass
class RawHeader:
    """The header text of a sequence file, split into fields.

    Attributes
    ----------
    fields
        Sequence-level fields in file order (key as spelled in the file → stripped value).
    frames
        Per-frame fields by frame index (field name without the ``Seq_FrameNNNN_`` prefix).
    data_offset
        Byte offset of the first pixel byte in the file.
    problems
        Lines that were skipped, in words (kept for tolerant mode and ``usnav info``).
    """

    fields: dict[str, str] = field(default_factory=dict)
    frames: dict[int, dict[str, str]] = field(default_factory=dict)
    data_offset: int = 0
    problems: list[str] = field(default_factory=list)

    def get(self, key: str, default: str | None = None) -> str | None:
        """A sequence-level field, looked up case-insensitively (PLUS compares that way)."""
        if key in self.fields:
            return self.fields[key]
        lower = key.lower()
        for name, value in self.fields.items():
            if name.lower() == lower:
                return value
        return default


def read_header_block(
    path: Path, end: re.Pattern[bytes], what: str, missing_hint: str, literal: bytes = b""
) -> tuple[bytes, int]:
    """Read the file from the start up to and including the header's last line.

    Parameters
    ----------
    path
        The sequence file.
    end
        Pattern whose first match ends the header (its ``end()`` is the data offset).
    what
        Name of the terminating line, for the error message.
    missing_hint
        What to tell the user when the header never ends.
    literal
        Bytes that a match usually contains (``ElementDataFile``): found with a plain search
        first, so a 4 MB header is not scanned by the regex engine (which still decides).

    Returns
    -------
    (header bytes, data offset in bytes)
    """
    buf = bytearray()
    searched = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(_BLOCK)
            at_eof = len(block) < _BLOCK
            buf += block
            # binary data starts at the first NUL: the header must end before it
            nul = buf.find(b"\x00", max(0, searched - 8))
            limit = nul if nul >= 0 else len(buf)
            low = max(0, searched - 4096)
            near = buf.find(literal, low, limit) if literal else -1
            match = end.search(buf, max(low, near - 256) if near >= 0 else low, limit)
            if match is not None and (match.group(0).endswith(b"\n") or at_eof):
                return bytes(buf[: match.end()]), match.end()
            if nul >= 0 or at_eof:
                where = "before the binary data" if nul >= 0 else "before the end of the file"
                raise InputError(path, f"no {what} line {where}", missing_hint)
            searched = len(buf)
            if len(buf) > _MAX_HEADER_BYTES:
                raise InputError(
                    path,
                    f"header longer than {_MAX_HEADER_BYTES >> 20} MB without {what}",
                    missing_hint,
                )


def split_lines(
    path: Path,
    text: bytes,
    split_field: Callable[[str], tuple[str, str] | None],
    header: RawHeader,
    comment: str | None = None,
) -> None:
    """Split header text into sequence-level and per-frame fields (into ``header``).

    ``split_field(line)`` returns (key, value) or None for a line that is not a field;
    lines starting with ``comment`` are skipped.
    """
    frames = header.frames
    fields = header.fields
    prefix_len = len(FRAME_PREFIX)
    last_index = ""
    current: dict[str, str] = {}
    decoded = text.decode("utf-8", errors="surrogateescape")
    for number, line in enumerate(decoded.split("\n"), start=1):
        if comment is not None and line.startswith(comment):
            continue
        kv = split_field(line)
        if kv is None:
            if line.strip():
                header.problems.append(f"line {number} skipped: not a field ({line[:60]!r})")
            continue
        key, value = kv
        if key[:prefix_len] == FRAME_PREFIX or key[:prefix_len].lower() == _FRAME_PREFIX_LOWER:
            index_text, sep, name = key[prefix_len:].partition("_")
            if index_text != last_index:
                if not index_text.isdigit():
                    header.problems.append(f"line {number} skipped: bad frame field {key!r}")
                    continue
                current = frames.setdefault(int(index_text), {})
                last_index = index_text
            if not sep or not name:
                header.problems.append(f"line {number} skipped: bad frame field {key!r}")
                continue
            current[name] = value
        else:
            fields[key] = value
    del path  # kept in the signature for symmetry with the callers' messages


def frame_field_name(index: int, name: str) -> str:
    """``Seq_Frame0007_Timestamp`` (index zero-padded to at least 4 digits, as PLUS)."""
    return f"{FRAME_PREFIX}{index:04d}_{name}"


def pad_last_token(key_and_separator: str, tokens: list[str], width: int = 40) -> str:
    """Value of a padded field as PLUS writes it: all tokens but the last, spaces, the last.

    PLUS pads ``DimSize``/``Kinds`` (``sizes``/``kinds`` in NRRD) so that the whole line is
    ``width`` characters and the last entry (the frame count) can be rewritten in place.
    """
    head = "".join(t + " " for t in tokens[:-1])
    last = tokens[-1]
    pad = width - (len(key_and_separator) + len(head) + len(last))
    return head + " " * max(pad, 0) + last


@dataclass
class Layout:
    """Everything needed to read a sequence file, decoded from its header.

    Attributes
    ----------
    path
        The header file.
    format
        ``"metaio"`` (``.igs.mha``/``.mha``) or ``"nrrd"`` (``.seq.nrrd``/``.igs.nrrd``).
    raw
        The header fields as read.
    n_frames
        Frames the header declares (the ``list``/``time`` axis; 1 if there is none).
    spatial
        Pixel grid of one frame: (cols, rows, slices); slices = 1 for 2D frames; (0, 0, 0)
        for a tracker-only file.
    ndim_spatial
        2 for B-mode frames, 3 for volumes.
    channels
        Components per pixel (1 grey, 3 RGB).
    dtype
        Pixel type with byte order.
    encoding
        ``"raw"``, ``"zlib"`` (MetaIO CompressedData) or ``"gzip"`` (NRRD gz).
    data_path, data_offset
        Where the pixel bytes (or the compressed stream) start.
    data_length
        Bytes of the pixel region (compressed size if compressed), None = to the end of file.
    orientation, image_type
        The header's ultrasound image orientation code and image type (raw text).
    status_field
        Per-frame image status field name: ``ImageStatus`` (MetaIO) or ``Status`` (NRRD).
    """

    path: Path
    format: str
    raw: RawHeader
    n_frames: int
    spatial: tuple[int, int, int]
    ndim_spatial: int
    channels: int
    dtype: np.dtype[Any]
    encoding: str
    data_path: Path
    data_offset: int
    data_length: int | None
    orientation: str | None
    image_type: str | None
    status_field: str
    axis_kinds: tuple[str, ...] = ()
    axis_sizes: tuple[int, ...] = ()

    @property
    def frame_axis(self) -> int | None:
        """Position of the frame (``list``/``time``) axis in the size line, None if absent."""
        return self.axis_kinds.index("list") if "list" in self.axis_kinds else None

    @property
    def frames_interleaved(self) -> bool:
        """Whether the frames are not one after the other in the data.

        The first axis of a size line varies fastest in memory. PLUS writes the components
        first (``vector``), then the pixel axes, then the frame axis last; any other order
        (3D Slicer's volume sequences put the frame axis first) interleaves the frames.
        """
        kinds = [k for k, size in zip(self.axis_kinds, self.axis_sizes, strict=True) if size > 1]
        ranks = [{"vector": 0, "domain": 1, "list": 2}[k] for k in kinds]
        return ranks != sorted(ranks)

    @property
    def data_shape(self) -> tuple[int, ...]:
        """C-order shape of all the data: the size line reversed (a leading 1 without a
        frame axis, so that :attr:`permutation` always puts a frame axis first)."""
        shape = tuple(reversed(self.axis_sizes))
        return shape if "list" in self.axis_kinds else (1, *shape)

    @property
    def permutation(self) -> tuple[int, ...]:
        """Axes of :attr:`data_shape`, reordered to (frame, z, y, x, vector).

        The data of a size line ``s0 s1 ... sk`` (s0 fastest) is the C-order array of shape
        ``(sk, ..., s1, s0)``; this is the ``transpose`` that puts its frame axis first, then
        the pixel axes slowest first, then the components.
        """
        n = len(self.axis_kinds)
        extra = 0 if "list" in self.axis_kinds else 1  # the leading 1 of data_shape
        rev = {k: n - 1 - k + extra for k in range(n)}
        frame = [rev[k] for k, kind in enumerate(self.axis_kinds) if kind == "list"] or [0]
        domains = [rev[k] for k, kind in enumerate(self.axis_kinds) if kind == "domain"]
        vector = [rev[k] for k, kind in enumerate(self.axis_kinds) if kind == "vector"]
        return tuple(frame + sorted(domains) + vector)

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """numpy shape of one frame: (rows, cols[, ch]) or (slices, rows, cols[, ch])."""
        cols, rows, slices = self.spatial
        if cols == 0 or rows == 0:
            return (0, 0)
        shape: tuple[int, ...] = (rows, cols) if self.ndim_spatial == 2 else (slices, rows, cols)
        return (*shape, self.channels) if self.channels > 1 else shape

    @property
    def frame_bytes(self) -> int:
        cols, rows, slices = self.spatial
        import numpy as np

        return cols * rows * slices * self.channels * np.dtype(self.dtype).itemsize


def interpret_axes(
    path: Path,
    sizes: list[int],
    kinds: list[str] | None,
    has_frame_fields: bool,
    channels_field: int,
) -> tuple[int, tuple[int, int, int], int, int, tuple[str, ...]]:
    """Decode sizes + kinds into (n_frames, (cols, rows, slices), ndim_spatial, channels, axes).

    ``kinds``: ``domain``/``space`` = a pixel axis, ``list``/``time`` = the frame axis,
    ``vector`` = the components. Without kinds, PLUS takes the last axis as the frame axis
    when the file carries frame fields; a plain image (no ``Seq_Frame`` fields) is one frame.
    ``axes`` is each axis's role in size-line order: ``"domain"``, ``"list"`` or ``"vector"``.
    """
    if kinds is None:
        kinds = ["domain"] * len(sizes)
        if has_frame_fields and len(sizes) >= 3:
            kinds[-1] = "list"
    if len(kinds) != len(sizes):
        raise InputError(
            path,
            f"{len(sizes)} sizes ({' '.join(map(str, sizes))}) but {len(kinds)} kinds "
            f"({' '.join(kinds)})",
            "each axis needs one size and one kind",
        )
    spatial: list[int] = []
    n_frames: int | None = None
    channels = channels_field
    axes: list[str] = []
    for size, kind in zip(sizes, kinds, strict=True):
        kind_l = kind.lower()
        if kind_l in ("domain", "space"):
            spatial.append(size)
            axes.append("domain")
        elif kind_l in ("list", "time"):
            if n_frames is not None:
                raise InputError(path, "more than one frame axis (list/time) in kinds")
            n_frames = size
            axes.append("list")
        elif kind_l in ("vector", "rgb-color", "rgba-color", "3-color", "4-color"):
            channels = size
            axes.append("vector")
        else:
            raise InputError(
                path, f"unknown axis kind {kind!r}", "expected domain, list, time or vector"
            )
    if len(spatial) not in (2, 3):
        raise InputError(
            path, f"{len(spatial)} pixel axes; a PLUS sequence has 2 (B-mode) or 3 (volume)"
        )
    if any(s < 0 for s in sizes):
        raise InputError(
            path,
            f"negative size in the size line (DimSize/sizes) {sizes}",
            "fix it to the image's columns, rows and frame count",
        )
    ndim_spatial = 3 if len(spatial) == 3 and spatial[2] > 1 else 2
    if len(spatial) == 2:
        spatial.append(1)
    if spatial[0] == 0 or spatial[1] == 0:
        spatial = [0, 0, 0]
    return (
        (1 if n_frames is None else n_frames),
        (spatial[0], spatial[1], spatial[2]),
        ndim_spatial,
        max(channels, 1),
        tuple(axes),
    )


def parse_int_list(path: Path, key: str, text: str | None) -> list[int]:
    """Whitespace-separated non-negative integers of field ``key``."""
    if text is None:
        raise InputError(path, f"header has no {key}", f"a sequence file needs {key}")
    try:
        return [int(t) for t in text.split()]
    except ValueError:
        raise InputError(
            path,
            f"{key} is not a list of integers: {text.strip()!r}",
            f"fix {key} (whole numbers: columns, rows, frames)",
        ) from None


def direction_matrix(directions: Any, size: int, ndim_spatial: int) -> np.ndarray:
    """A ``size`` × ``size`` identity whose top-left pixel-axis block is ``directions``.

    ``directions`` (row i = direction of pixel axis i) may be None (identity) or larger than
    the pixel axes (its top-left block is used).
    """
    matrix = np.eye(size)
    if directions is not None:
        block = np.asarray(directions, dtype=np.float64)
        k = min(block.shape[0], ndim_spatial, size)
        matrix[:k, :k] = block[:k, :k]
    return matrix
