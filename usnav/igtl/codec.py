"""OpenIGTLink message codec (protocol 1–3, header v1 and v2), written from the specification.

Wire facts (OpenIGTLink ``Documents/Protocol``; digest in ``docs/references.md`` §1):

- 58-byte big-endian header: version uint16, type char[12], device name char[20],
  timestamp uint64 (high 32 bits Unix seconds, low 32 bits fraction·2³²), body size uint64,
  CRC-64/ECMA-182 of the body uint64. Names are NUL-padded and not NUL-terminated at full width.
- Header v2 body: 12-byte extended header (ext header size, meta header size, meta size,
  message id), the content, then the metadata (index count, n × {key size, value encoding,
  value size}, then keys and values). The CRC covers the whole body.
- IMAGE matrices here are always **RAS** (O = 1 on send; an LPS image is converted on receive)
  and in the **centre convention** on the wire (P = centre of the image), while
  :class:`ImageContent` holds ``ijk_to_ras``: voxel index (i = column, j = row, k = slice)
  → RAS mm with the first voxel at the origin.

Decoding never trusts the peer: every size is checked against the bytes actually present and a
message that does not add up raises :class:`ProtocolError` (``fatal`` when the stream framing is
lost and the connection must close; otherwise only that message is dropped).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from usnav.igtl._kernels import TABLES, crc64_update

HEADER_SIZE = 58
EXT_HEADER_SIZE = 12
IMAGE_HEADER_SIZE = 72
TRANSFORM_CONTENT_SIZE = 48
STATUS_HEADER_SIZE = 30
POINT_ELEMENT_SIZE = 136
POLYDATA_HEADER_SIZE = 40
TDATA_ELEMENT_SIZE = 70
QTDATA_ELEMENT_SIZE = 50

_HEADER = struct.Struct(">H12s20sQQQ")
_EXT_HEADER = struct.Struct(">HHII")
_IMAGE_HEADER = struct.Struct(">HBBBB3H12f3H3H")
_STATUS_HEADER = struct.Struct(">Hq20s")
_STRING_HEADER = struct.Struct(">HH")
_POINT = struct.Struct(">64s32s4B3ff20s")
_TDATA = struct.Struct(">20sBB12f")
_QTDATA = struct.Struct(">20sBB3f4f")
_META_ENTRY = struct.Struct(">HHI")

#: OpenIGTLink IMAGE scalar type codes ↔ numpy dtypes (native byte order).
SCALAR_TYPES: dict[int, np.dtype] = {
    2: np.dtype(np.int8),
    3: np.dtype(np.uint8),
    4: np.dtype(np.int16),
    5: np.dtype(np.uint16),
    6: np.dtype(np.int32),
    7: np.dtype(np.uint32),
    10: np.dtype(np.float32),
    11: np.dtype(np.float64),
}
_SCALAR_CODES = {dtype: code for code, dtype in SCALAR_TYPES.items()}

#: STATUS codes (OpenIGTLink status.md).
STATUS_INVALID = 0
STATUS_OK = 1
STATUS_UNKNOWN_ERROR = 2
STATUS_NOT_FOUND = 4
STATUS_TIMEOUT = 7
STATUS_CHECKSUM_ERROR = 9
STATUS_SHUTDOWN = 19

#: Value encodings of metadata and STRING (IANA MIBenum).
ENCODING_US_ASCII = 3
ENCODING_UTF8 = 106

#: Message types this codec decodes into typed content; queries are kept as raw bytes.
KNOWN_TYPES = frozenset(
    {"IMAGE", "TRANSFORM", "POSITION", "TDATA", "QTDATA", "STATUS", "STRING", "POINT", "POLYDATA"}
)
QUERY_PREFIXES = ("GET_", "STT_", "STP_", "RTS_")


class ProtocolError(Exception):
    """A message that violates the wire format.

    Attributes
    ----------
    reason
        Short reason, the key under which it is counted (``"bad CRC"``, ``"unknown type"``...).
    fatal
        True when the byte stream can no longer be framed: the connection must be closed.
    """

    def __init__(self, reason: str, detail: str = "", *, fatal: bool = False):
        self.reason = reason
        self.detail = detail
        self.fatal = fatal
        super().__init__(f"{reason}: {detail}" if detail else reason)


# -- CRC and timestamps --------------------------------------------------------------------
def crc64(data: bytes | bytearray | memoryview | np.ndarray, crc: int = 0) -> int:
    """CRC-64/ECMA-182 of ``data`` (continuing from ``crc``), as OpenIGTLink computes it.

    ``crc64(b"123456789") == 0x6C40DF5F0B497347``.
    """
    if isinstance(data, np.ndarray):
        array = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    else:
        view = memoryview(data)
        if view.nbytes == 0:
            return crc
        array = np.frombuffer(view.cast("B") if view.format != "B" else view, dtype=np.uint8)
    if array.size == 0:
        return crc
    if array.flags.writeable:
        # one kernel type for all callers: Numba compiles writable and read-only arrays
        # separately, and warm_up() loads only the read-only one; a bytearray body from the
        # socket would otherwise compile the kernel in the receive path on the first message
        # (6-12 s with a cold cache, as in a fresh CI clone, while keep-alives piled up)
        array = array.view()
        array.flags.writeable = False
    return int(crc64_update(np.uint64(crc), array, TABLES))


def nanoseconds_to_fraction(nanoseconds: int) -> int:
    """OpenIGTLink's nanosecond → 32-bit fraction conversion (bitwise halving of 10⁹).

    Matches ``igtl_nanosec_to_frac``: 500000000 → 0x80000000, 1 → 0x4,
    999999999 → 0xFFFFFFD8.
    """
    base = 1_000_000_000
    mask = 0x80000000
    result = 0
    ns = int(nanoseconds)
    while mask:
        base = (base + 1) >> 1
        if ns >= base:
            result |= mask
            ns -= base
        mask >>= 1
    return result


def fraction_to_nanoseconds(fraction: int) -> int:
    """Inverse of :func:`nanoseconds_to_fraction` (``igtl_frac_to_nanosec``)."""
    base = 1_000_000_000
    mask = 0x80000000
    result = 0
    while mask:
        base = (base + 1) >> 1
        if fraction & mask:
            result += base
        mask >>= 1
    return result


def timestamp_to_wire(t_s: float | None) -> int:
    """Seconds (since the Unix epoch, or any non-negative clock) → the 64-bit wire timestamp.

    ``None`` or 0 gives 0 ("unused"). Negative times cannot be sent.

    Raises
    ------
    ValueError
        If ``t_s`` is negative, not finite or beyond 2³² s.
    """
    if t_s is None or t_s == 0:
        return 0
    if not np.isfinite(t_s) or t_s < 0 or t_s >= 2**32:
        raise ValueError(f"timestamp {t_s!r} s cannot be sent (must be 0 ≤ t < 2^32 s)")
    seconds = int(t_s)
    nanoseconds = round((t_s - seconds) * 1e9)
    if nanoseconds >= 1_000_000_000:
        seconds, nanoseconds = seconds + 1, nanoseconds - 1_000_000_000
    return (seconds << 32) | nanoseconds_to_fraction(nanoseconds)


def timestamp_from_wire(value: int) -> float:
    """The 64-bit wire timestamp → seconds (0.0 when unused)."""
    return (value >> 32) + fraction_to_nanoseconds(value & 0xFFFFFFFF) * 1e-9


# -- message contents ----------------------------------------------------------------------
@dataclass(slots=True)
class ImageContent:
    """IMAGE content.

    Attributes
    ----------
    pixels
        Shape (slices, rows, cols, components): i = column is the fastest axis on the wire.
        Use :meth:`from_array` to build one from a 2D/3D array and :attr:`array` to get it back.
    ijk_to_ras
        4×4: voxel index (i = column, j = row, k = slice) → RAS mm, first voxel at the origin;
        columns 0–2 carry the spacing (mm per voxel).
    """

    pixels: np.ndarray
    ijk_to_ras: np.ndarray = field(default_factory=lambda: np.eye(4))

    @classmethod
    def from_array(
        cls, array: np.ndarray, ijk_to_ras: np.ndarray | None = None, *, channels: bool = False
    ) -> ImageContent:
        """Wrap a (rows, cols) image, a (slices, rows, cols) volume, or with ``channels=True``
        a (rows, cols, components) / (slices, rows, cols, components) array."""
        a = np.asarray(array)
        if channels:
            if a.ndim == 3:
                a = a[np.newaxis]
            elif a.ndim != 4:
                raise ValueError(f"expected 3 or 4 dimensions with channels, got {a.shape}")
        else:
            if a.ndim == 2:
                a = a[np.newaxis, :, :, np.newaxis]
            elif a.ndim == 3:
                a = a[..., np.newaxis]
            else:
                raise ValueError(f"expected a 2D image or a 3D volume, got shape {a.shape}")
        matrix = np.eye(4) if ijk_to_ras is None else np.asarray(ijk_to_ras, dtype=np.float64)
        if matrix.shape != (4, 4):
            raise ValueError(f"ijk_to_ras must be 4×4, got {matrix.shape}")
        return cls(a, matrix)

    @property
    def array(self) -> np.ndarray:
        """The pixels without singleton slice/component axes: (rows, cols), (rows, cols, c),
        (slices, rows, cols) or (slices, rows, cols, c)."""
        p = self.pixels
        if p.shape[3] == 1:
            p = p[..., 0]
            return p[0] if p.shape[0] == 1 else p
        return p[0] if p.shape[0] == 1 else p

    @property
    def spacing_mm(self) -> np.ndarray:
        """Voxel size along i, j, k (norms of the matrix columns), mm."""
        return np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)


@dataclass(slots=True)
class TransformContent:
    """TRANSFORM content: a 4×4 matrix (mm); the wire carries the upper 3×4 as float32."""

    matrix: np.ndarray


@dataclass(slots=True)
class StatusContent:
    """STATUS content (code 1 = OK; see the ``STATUS_*`` constants)."""

    code: int = STATUS_OK
    subcode: int = 0
    error_name: str = ""
    message: str = ""


@dataclass(slots=True)
class StringContent:
    """STRING content."""

    text: str
    encoding: int = ENCODING_US_ASCII


@dataclass(slots=True)
class Point:
    """One POINT element (position in RAS mm)."""

    name: str = ""
    group: str = ""
    rgba: tuple[int, int, int, int] = (255, 255, 255, 255)
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    diameter: float = 0.0
    owner: str = ""


@dataclass(slots=True)
class PointContent:
    """POINT content: a list of points."""

    points: list[Point]


@dataclass(slots=True)
class PolyDataContent:
    """POLYDATA content (geometry only; no attributes).

    Attributes
    ----------
    points
        (n, 3) float, RAS mm.
    vertices, lines, polygons, triangle_strips
        Lists of index sequences into ``points`` (each cell a sequence of point indices).
    """

    points: np.ndarray
    vertices: list[Iterable[int]] = field(default_factory=list)
    lines: list[Iterable[int]] = field(default_factory=list)
    polygons: list[Iterable[int]] = field(default_factory=list)
    triangle_strips: list[Iterable[int]] = field(default_factory=list)


@dataclass(slots=True)
class TrackingElement:
    """One tool of a TDATA or QTDATA message.

    Attributes
    ----------
    name
        The tool's name (PLUS: the transform name, e.g. ``ProbeToTracker``).
    kind
        Tracking data type: 1 tracker, 2 6D, 3 3D, 4 5D.
    matrix
        4×4 pose, mm (QTDATA's quaternion turned into a rotation; NaN when it has no length).
    """

    name: str
    kind: int
    matrix: np.ndarray


@dataclass(slots=True)
class TrackingDataContent:
    """TDATA or QTDATA content (receive only): one pose per tool, all at the header's time."""

    elements: list[TrackingElement]


@dataclass(slots=True)
class RawContent:
    """Content kept as bytes: queries (GET_/STT_/STP_/RTS_) and anything not decoded."""

    data: bytes = b""


Content = (
    ImageContent
    | TransformContent
    | StatusContent
    | StringContent
    | PointContent
    | PolyDataContent
    | TrackingDataContent
    | RawContent
)


@dataclass(slots=True)
class Message:
    """One OpenIGTLink message.

    Attributes
    ----------
    type
        Message type (``IMAGE``, ``TRANSFORM``, ``GET_STATUS``...), ≤ 12 ASCII characters.
    device_name
        Device name (≤ 20 ASCII characters on the wire; longer names are cut and, in v2, sent
        in full in the metadata key ``IGTL_DEVICE_NAME``, as PLUS does).
    content
        The typed content.
    timestamp
        Seconds on the sender's clock (PLUS: UTC); 0 = unused.
    metadata
        v2 metadata (str → str); ignored when the message is sent as v1.
    version
        Header version it was received with (1 or 2).
    message_id
        v2 message id.
    """

    type: str
    device_name: str
    content: Content
    timestamp: float = 0.0
    metadata: dict[str, str] = field(default_factory=dict)
    version: int = 1
    message_id: int = 0


@dataclass(slots=True)
class Header:
    """A decoded 58-byte header."""

    version: int
    type: str
    device_name_raw: bytes
    timestamp: int
    body_size: int
    crc: int


# -- encoding ------------------------------------------------------------------------------
def _fixed_ascii(text: str, width: int, what: str) -> bytes:
    raw = text.encode("ascii")
    if len(raw) > width:
        raise ValueError(f"{what} {text!r} is longer than {width} characters")
    return raw.ljust(width, b"\0")


def _content_parts(content: Content) -> list[bytes | memoryview]:
    """The content as a list of buffers (the big IMAGE pixel buffer is not copied)."""
    if isinstance(content, ImageContent):
        return _image_parts(content)
    if isinstance(content, TransformContent):
        m = np.asarray(content.matrix, dtype=np.float64)
        if m.shape != (4, 4):
            raise ValueError(f"TRANSFORM matrix must be 4×4, got {m.shape}")
        # R11 R21 R31 R12 R22 R32 R13 R23 R33 TX TY TZ: the 3×4 block in column order.
        with np.errstate(over="ignore", invalid="ignore"):  # beyond float32: ±inf on the wire
            return [m[:3, :4].T.astype(">f4").tobytes()]
    if isinstance(content, StatusContent):
        name = content.error_name.encode("ascii")[:20].ljust(20, b"\0")
        text = content.message.encode("utf-8") + b"\0"
        return [_STATUS_HEADER.pack(content.code, content.subcode, name), text]
    if isinstance(content, StringContent):
        data = content.text.encode("ascii" if content.encoding == ENCODING_US_ASCII else "utf-8")
        if len(data) > 0xFFFF:
            raise ValueError("STRING longer than 65535 bytes")
        return [_STRING_HEADER.pack(content.encoding, len(data)), data]
    if isinstance(content, PointContent):
        parts = []
        for p in content.points:
            parts.append(
                _POINT.pack(
                    p.name.encode("ascii")[:64].ljust(64, b"\0"),
                    p.group.encode("ascii")[:32].ljust(32, b"\0"),
                    *(int(c) for c in p.rgba),
                    *(float(c) for c in p.position),
                    float(p.diameter),
                    p.owner.encode("ascii")[:20].ljust(20, b"\0"),
                )
            )
        return parts
    if isinstance(content, PolyDataContent):
        return _polydata_parts(content)
    if isinstance(content, RawContent):
        return [bytes(content.data)]
    raise TypeError(f"cannot encode content of type {type(content).__name__}")


def _image_parts(content: ImageContent) -> list[bytes | memoryview]:
    pixels = np.ascontiguousarray(content.pixels)
    if pixels.ndim != 4:
        raise ValueError(
            f"IMAGE pixels must be (slices, rows, cols, components), got {pixels.shape}"
        )
    dtype = pixels.dtype.newbyteorder("=")
    code = _SCALAR_CODES.get(np.dtype(dtype.type))
    if code is None:
        raise ValueError(f"IMAGE pixel type {pixels.dtype} cannot be sent")
    if pixels.dtype.byteorder == ">":
        pixels = pixels.astype(pixels.dtype.newbyteorder("<"))
    rk, rj, ri, comps = pixels.shape
    if max(ri, rj, rk) > 0xFFFF or comps > 0xFF or min(ri, rj, rk, comps) < 1:
        raise ValueError(f"IMAGE of shape {pixels.shape} cannot be sent")
    m = np.asarray(content.ijk_to_ras, dtype=np.float64)
    centre = m[:3, :3] @ np.array([(ri - 1) / 2, (rj - 1) / 2, (rk - 1) / 2]) + m[:3, 3]
    endian = 1 if (pixels.dtype.itemsize > 1 and np.little_endian is False) else 2
    header = _IMAGE_HEADER.pack(
        1, comps, code, endian, 1,  # version, components, scalar type, endian, RAS
        ri, rj, rk,
        *m[:3, 0], *m[:3, 1], *m[:3, 2], *centre,
        0, 0, 0, ri, rj, rk,
    )  # fmt: skip
    return [header, memoryview(pixels).cast("B")]


def _cells(cells: list[Iterable[int]]) -> tuple[int, np.ndarray]:
    flat: list[int] = []
    for cell in cells:
        indices = [int(i) for i in cell]
        flat.append(len(indices))
        flat.extend(indices)
    return len(cells), np.asarray(flat, dtype=">u4")


def _polydata_parts(content: PolyDataContent) -> list[bytes | memoryview]:
    points = np.asarray(content.points, dtype=">f4").reshape(-1, 3)
    groups = [
        _cells(c)
        for c in (content.vertices, content.lines, content.polygons, content.triangle_strips)
    ]
    counts: list[int] = [len(points)]
    for n, arr in groups:
        counts += [n, arr.nbytes]
    for _, arr in groups:
        idx = _cell_indices(arr)
        if idx.size and int(idx.max()) >= len(points):
            raise ValueError("POLYDATA cell refers to a point index beyond the points")
    header = struct.pack(">10I", *counts, 0)
    return [header, points.tobytes(), *(arr.tobytes() for _, arr in groups)]


def _cell_indices(flat: np.ndarray) -> np.ndarray:
    out = []
    i = 0
    values = flat.astype(np.int64)
    while i < len(values):
        n = int(values[i])
        out.append(values[i + 1 : i + 1 + n])
        i += n + 1
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _metadata_parts(metadata: Mapping[str, str]) -> tuple[bytes, bytes]:
    """(meta header, meta data) for v2, entries sorted by key as the C++ library does."""
    entries = []
    for key in sorted(metadata):
        k = key.encode("utf-8")
        value = str(metadata[key])
        try:
            v = value.encode("ascii")
            encoding = ENCODING_US_ASCII
        except UnicodeEncodeError:
            v = value.encode("utf-8")
            encoding = ENCODING_UTF8
        if len(k) > 0xFFFF:
            raise ValueError(f"metadata key {key[:40]!r}... longer than 65535 bytes")
        entries.append((k, v, encoding))
    head = struct.pack(">H", len(entries)) + b"".join(
        _META_ENTRY.pack(len(k), enc, len(v)) for k, v, enc in entries
    )
    data = b"".join(k + v for k, v, _ in entries)
    return head, data


def encode_parts(message: Message, version: int = 1) -> list[bytes | memoryview]:
    """Encode ``message`` as a list of buffers: the 58-byte header first, then the body.

    Parameters
    ----------
    message
        What to send.
    version
        Header version: 1 (no metadata) or 2 (extended header + metadata).

    Raises
    ------
    ValueError
        A name that is not ASCII or too long, a content that cannot be encoded.
    """
    if version not in (1, 2):
        raise ValueError(f"header version must be 1 or 2, got {version}")
    type_bytes = _fixed_ascii(message.type, 12, "message type")
    name = message.device_name
    metadata = dict(message.metadata)
    if len(name) > 20:
        if version == 2:
            metadata.setdefault("IGTL_DEVICE_NAME", name)
        name = name[:20]
    name_bytes = _fixed_ascii(name, 20, "device name")
    content = _content_parts(message.content)
    body: list[bytes | memoryview]
    if version == 2:
        meta_head, meta_data = _metadata_parts(metadata)
        ext = _EXT_HEADER.pack(
            EXT_HEADER_SIZE, len(meta_head), len(meta_data), message.message_id & 0xFFFFFFFF
        )
        body = [ext, *content, meta_head, meta_data]
    else:
        body = content
    crc = 0
    size = 0
    for part in body:
        crc = crc64(part, crc)
        size += memoryview(part).nbytes
    header = _HEADER.pack(
        version, type_bytes, name_bytes, timestamp_to_wire(message.timestamp), size, crc
    )
    return [header, *body]


def encode(message: Message, version: int = 1) -> bytes:
    """Encode ``message`` into one bytes object (see :func:`encode_parts`)."""
    return b"".join(
        bytes(p) if isinstance(p, memoryview) else p for p in encode_parts(message, version)
    )


# -- decoding ------------------------------------------------------------------------------
def _printable_ascii(raw: bytes) -> bool:
    return all(0x20 < b < 0x7F for b in raw)


def decode_header(raw: bytes | bytearray | memoryview, max_body_bytes: int) -> Header:
    """Decode and sanity-check a 58-byte header.

    Raises
    ------
    ProtocolError
        ``fatal``: unknown header version, a type that is not printable ASCII, or a body larger
        than ``max_body_bytes`` (refused before anything is allocated).
    """
    version, type_raw, name_raw, ts, body_size, crc = _HEADER.unpack(bytes(raw[:HEADER_SIZE]))
    if version not in (1, 2):
        raise ProtocolError("bad header", f"header version {version} (expected 1 or 2)", fatal=True)
    type_cut = type_raw.split(b"\0", 1)[0]
    if not type_cut or not _printable_ascii(type_cut):
        raise ProtocolError("bad header", f"message type {type_raw!r} is not ASCII", fatal=True)
    if body_size > max_body_bytes:
        raise ProtocolError(
            "message too large",
            f"{type_cut.decode()} body of {body_size} bytes exceeds max_message_bytes "
            f"{max_body_bytes}",
            fatal=True,
        )
    return Header(version, type_cut.decode("ascii"), name_raw, ts, body_size, crc)


def decode_body(
    header: Header, body: bytes | bytearray | memoryview, *, verify_crc: bool = True
) -> Message:
    """Decode a message body that belongs to ``header``.

    The returned IMAGE pixels may share memory with ``body`` (pass a fresh buffer per message).

    Raises
    ------
    ProtocolError
        Not fatal: a CRC mismatch, a non-ASCII device name, malformed metadata, an unknown
        message type, or content whose sizes disagree with the body.
    """
    view = memoryview(body)
    if len(view) != header.body_size:
        raise ProtocolError("truncated body", f"{len(view)} of {header.body_size} bytes")
    if verify_crc:
        actual = crc64(view)
        if actual != header.crc:
            raise ProtocolError(
                "bad CRC", f"{header.type} body CRC {actual:#018x}, header says {header.crc:#018x}"
            )
    name_cut = header.device_name_raw.split(b"\0", 1)[0]
    try:
        device_name = name_cut.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("non-ASCII device name", repr(name_cut)) from None
    metadata: dict[str, str] = {}
    message_id = 0
    content_view = view
    if header.version == 2 and len(view) > 0:
        content_view, metadata, message_id = _split_v2(view)
        if "IGTL_DEVICE_NAME" in metadata and metadata["IGTL_DEVICE_NAME"].startswith(device_name):
            device_name = metadata["IGTL_DEVICE_NAME"]
    try:
        content = decode_content(header.type, content_view)
    except ProtocolError as exc:  # the log line names the device whose message is dropped
        raise ProtocolError(
            exc.reason, f"{header.type} {device_name!r}: {exc.detail}", fatal=exc.fatal
        ) from None
    return Message(
        header.type,
        device_name,
        content,
        timestamp_from_wire(header.timestamp),
        metadata,
        header.version,
        message_id,
    )


def _split_v2(view: memoryview) -> tuple[memoryview, dict[str, str], int]:
    if len(view) < EXT_HEADER_SIZE:
        raise ProtocolError("malformed extended header", f"v2 body of only {len(view)} bytes")
    ext_size, meta_head_size, meta_size, msg_id = _EXT_HEADER.unpack(view[:EXT_HEADER_SIZE])
    if ext_size < EXT_HEADER_SIZE or ext_size + meta_head_size + meta_size > len(view):
        raise ProtocolError(
            "malformed extended header",
            f"ext header {ext_size} + meta header {meta_head_size} + meta {meta_size} bytes "
            f"do not fit a {len(view)}-byte body",
        )
    content_end = len(view) - meta_head_size - meta_size
    content = view[ext_size:content_end]
    meta_head = view[content_end : content_end + meta_head_size]
    meta_data = view[content_end + meta_head_size :]
    return content, _decode_metadata(meta_head, meta_data), msg_id


def _decode_metadata(head: memoryview, data: memoryview) -> dict[str, str]:
    if len(head) == 0:
        if len(data):
            raise ProtocolError("malformed metadata", f"{len(data)} metadata bytes, no index")
        return {}
    if len(head) < 2:
        raise ProtocolError("malformed metadata", "meta header shorter than its count")
    (count,) = struct.unpack(">H", head[:2])
    if len(head) != 2 + 8 * count:
        raise ProtocolError(
            "malformed metadata", f"meta header of {len(head)} bytes for {count} entries"
        )
    out: dict[str, str] = {}
    pos = 0
    for e in range(count):
        key_size, encoding, value_size = _META_ENTRY.unpack(head[2 + 8 * e : 10 + 8 * e])
        if pos + key_size + value_size > len(data):
            raise ProtocolError("malformed metadata", f"entry {e} runs past the metadata")
        key_raw = bytes(data[pos : pos + key_size])
        value_raw = bytes(data[pos + key_size : pos + key_size + value_size])
        pos += key_size + value_size
        try:
            key = key_raw.decode("utf-8")
            if encoding == ENCODING_US_ASCII:
                value = value_raw.decode("ascii")
            elif encoding == ENCODING_UTF8:
                value = value_raw.decode("utf-8")
            else:
                value = value_raw.decode("latin-1")
        except UnicodeDecodeError:
            raise ProtocolError(
                "malformed metadata", f"entry {e} is not valid text in its encoding"
            ) from None
        out[key] = value
    if pos != len(data):
        raise ProtocolError(
            "malformed metadata", f"{len(data) - pos} metadata bytes not covered by the index"
        )
    return out


def decode_content(message_type: str, view: memoryview) -> Content:
    """Decode the content of a message of ``message_type``.

    Raises
    ------
    ProtocolError
        Unknown type or sizes that disagree with the content (not fatal).
    """
    if message_type == "IMAGE":
        return _decode_image(view)
    if message_type == "TRANSFORM":
        if len(view) != TRANSFORM_CONTENT_SIZE:
            raise ProtocolError("bad TRANSFORM", f"content of {len(view)} bytes (expected 48)")
        with np.errstate(invalid="ignore"):  # a signalling NaN from the peer stays a NaN
            values = np.frombuffer(view, dtype=">f4").astype(np.float64)
        m = np.eye(4)
        m[:3, :4] = values.reshape(4, 3).T
        return TransformContent(m)
    if message_type == "STATUS":
        if len(view) < STATUS_HEADER_SIZE:
            raise ProtocolError("bad STATUS", f"content of {len(view)} bytes (at least 30)")
        code, subcode, name = _STATUS_HEADER.unpack(view[:STATUS_HEADER_SIZE])
        text = bytes(view[STATUS_HEADER_SIZE:]).split(b"\0", 1)[0]
        return StatusContent(
            code,
            subcode,
            name.split(b"\0", 1)[0].decode("latin-1"),
            text.decode("utf-8", errors="replace"),
        )
    if message_type == "STRING":
        if len(view) < 4:
            raise ProtocolError("bad STRING", f"content of {len(view)} bytes")
        encoding, length = _STRING_HEADER.unpack(view[:4])
        if 4 + length != len(view):
            raise ProtocolError("bad STRING", f"length {length} disagrees with {len(view)} bytes")
        raw = bytes(view[4:])
        codec = {ENCODING_US_ASCII: "ascii", ENCODING_UTF8: "utf-8"}.get(encoding, "latin-1")
        try:
            return StringContent(raw.decode(codec), encoding)
        except UnicodeDecodeError:
            raise ProtocolError("bad STRING", "text not valid in its encoding") from None
    if message_type == "POINT":
        if len(view) % POINT_ELEMENT_SIZE:
            raise ProtocolError("bad POINT", f"content of {len(view)} bytes, not n × 136")
        points = []
        for off in range(0, len(view), POINT_ELEMENT_SIZE):
            name, group, r, g, b, a, x, y, z, d, owner = _POINT.unpack(
                view[off : off + POINT_ELEMENT_SIZE]
            )
            points.append(
                Point(_cstr(name), _cstr(group), (r, g, b, a), (x, y, z), d, _cstr(owner))
            )
        return PointContent(points)
    if message_type == "POLYDATA":
        return _decode_polydata(view)
    if message_type == "POSITION":
        return _decode_position(view)
    if message_type in ("TDATA", "QTDATA"):
        return _decode_tracking_data(message_type, view)
    if message_type.startswith(QUERY_PREFIXES):
        return RawContent(bytes(view))
    raise ProtocolError("unknown type", message_type)


def _pose(position: np.ndarray, quaternion: np.ndarray) -> np.ndarray:
    """4×4 from a position (mm) and a quaternion (x, y, z, w); NaN rotation when the
    quaternion has no length or is not finite (the pose is then not usable: INVALID)."""
    from scipy.spatial.transform import Rotation  # only for QTDATA and POSITION

    m = np.eye(4)
    m[:3, 3] = position
    norm = float(np.linalg.norm(quaternion))
    if not np.isfinite(norm) or norm < 1e-6:
        m[:3, :3] = np.nan
    else:
        m[:3, :3] = Rotation.from_quat(quaternion / norm).as_matrix()
    return m


def _decode_position(view: memoryview) -> TransformContent:
    """POSITION: x, y, z and a quaternion (ox, oy, oz, w) — 28 bytes; 24 without w (the
    quaternion is then normalised, w ≥ 0); 12 with no orientation (rotation NaN: a position
    alone cannot place an image)."""
    size = len(view)
    if size not in (12, 24, 28):
        raise ProtocolError("bad POSITION", f"content of {size} bytes (expected 12, 24 or 28)")
    with np.errstate(invalid="ignore"):
        values = np.frombuffer(view, dtype=">f4").astype(np.float64)
    if size == 12:
        m = np.eye(4)
        m[:3, :3] = np.nan
        m[:3, 3] = values
        return TransformContent(m)
    quaternion = values[3:]
    if size == 24:
        w2 = 1.0 - float(np.dot(quaternion, quaternion))
        quaternion = np.append(quaternion, np.sqrt(w2) if w2 > 0 else 0.0)
    return TransformContent(_pose(values[:3], quaternion))


def _decode_tracking_data(message_type: str, view: memoryview) -> TrackingDataContent:
    size = TDATA_ELEMENT_SIZE if message_type == "TDATA" else QTDATA_ELEMENT_SIZE
    if len(view) % size:
        raise ProtocolError(f"bad {message_type}", f"content of {len(view)} bytes, not n × {size}")
    elements = []
    with np.errstate(invalid="ignore"):  # a signalling NaN from the peer stays a NaN
        for off in range(0, len(view), size):
            if message_type == "TDATA":
                name, kind, _, *values = _TDATA.unpack(view[off : off + size])
                m = np.eye(4)
                m[:3, :4] = np.array(values, dtype=np.float64).reshape(4, 3).T
            else:
                name, kind, _, *values = _QTDATA.unpack(view[off : off + size])
                numbers = np.array(values, dtype=np.float64)
                m = _pose(numbers[:3], numbers[3:])
            elements.append(TrackingElement(_cstr(name), kind, m))
    return TrackingDataContent(elements)


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("latin-1")


def _decode_image(view: memoryview) -> ImageContent:
    if len(view) < IMAGE_HEADER_SIZE:
        raise ProtocolError("bad IMAGE", f"content of {len(view)} bytes (header alone is 72)")
    fields = _IMAGE_HEADER.unpack(view[:IMAGE_HEADER_SIZE])
    _, comps, scalar, endian, coord = fields[:5]
    ri, rj, rk = fields[5:8]
    tsn = np.array(fields[8:17], dtype=np.float64).reshape(3, 3).T  # columns T, S, N
    centre = np.array(fields[17:20], dtype=np.float64)
    di, dj, dk, dri, drj, drk = fields[20:26]
    dtype = SCALAR_TYPES.get(scalar)
    if dtype is None:
        raise ProtocolError("bad IMAGE", f"unknown scalar type {scalar}")
    if endian not in (1, 2) or coord not in (1, 2) or comps < 1:
        raise ProtocolError("bad IMAGE", f"endian {endian}, coordinate {coord}, components {comps}")
    if min(ri, rj, rk, dri, drj, drk) < 1 or di + dri > ri or dj + drj > rj or dk + drk > rk:
        raise ProtocolError(
            "bad IMAGE",
            f"size {ri}×{rj}×{rk} with sub-volume offset ({di},{dj},{dk}) size ({dri},{drj},{drk})",
        )
    expected = dri * drj * drk * comps * dtype.itemsize
    if expected != len(view) - IMAGE_HEADER_SIZE:
        raise ProtocolError(
            "IMAGE dimensions disagree with body",
            f"{dri}×{drj}×{drk}×{comps} {dtype} needs {expected} bytes, body "
            f"has {len(view) - IMAGE_HEADER_SIZE}",
        )
    if not (np.all(np.isfinite(tsn)) and np.all(np.isfinite(centre))):
        raise ProtocolError("bad IMAGE", "matrix has NaN or infinite values")
    wire_dtype = dtype.newbyteorder(">" if endian == 1 else "<")
    pixels = np.frombuffer(
        view, dtype=wire_dtype, count=expected // dtype.itemsize, offset=IMAGE_HEADER_SIZE
    ).reshape(drk, drj, dri, comps)
    if wire_dtype.byteorder not in ("=", "|") and wire_dtype != dtype:
        with np.errstate(invalid="ignore"):
            pixels = pixels.astype(dtype)
    matrix = np.eye(4)
    matrix[:3, :3] = tsn
    # P is the centre of the whole image; the first voxel is half the extent away.
    origin = centre - tsn @ np.array([(ri - 1) / 2, (rj - 1) / 2, (rk - 1) / 2])
    matrix[:3, 3] = origin + tsn @ np.array([di, dj, dk], dtype=np.float64)
    if coord == 2:  # LPS → RAS
        matrix = np.diag([-1.0, -1.0, 1.0, 1.0]) @ matrix
    return ImageContent(pixels, matrix)


def _decode_polydata(view: memoryview) -> PolyDataContent:
    if len(view) < POLYDATA_HEADER_SIZE:
        raise ProtocolError("bad POLYDATA", f"content of {len(view)} bytes")
    counts = struct.unpack(">10I", view[:POLYDATA_HEADER_SIZE])
    npoints = counts[0]
    sizes = counts[2:9:2]
    if counts[9] != 0:
        raise ProtocolError("bad POLYDATA", "attributes are not supported on receive")
    total = POLYDATA_HEADER_SIZE + 12 * npoints + sum(sizes)
    if total != len(view) or any(s % 4 for s in sizes):
        raise ProtocolError("bad POLYDATA", f"sizes add up to {total}, body has {len(view)}")
    pos = POLYDATA_HEADER_SIZE
    with np.errstate(invalid="ignore"):
        points = np.frombuffer(view, ">f4", 3 * npoints, pos).reshape(-1, 3).astype(np.float64)
    pos += 12 * npoints
    groups: list[list[list[int]]] = []
    for size in sizes:
        flat = np.frombuffer(view, ">u4", size // 4, pos).astype(np.int64)
        pos += size
        cells = []
        i = 0
        while i < len(flat):
            n = int(flat[i])
            if i + 1 + n > len(flat) or (n and int(flat[i + 1 : i + 1 + n].max()) >= npoints):
                raise ProtocolError("bad POLYDATA", "cell runs past its array or its points")
            cells.append(flat[i + 1 : i + 1 + n].tolist())
            i += n + 1
        groups.append(cells)
    return PolyDataContent(points, *groups)
