"""The usnav ZeroMQ wire framing: message layout, encoding and validated decoding.

A message is a ZeroMQ multipart message ``[topic, header, buffer...]``:

- ``topic``: ASCII, one of :data:`TOPICS` (subscribers filter on it);
- ``header``: a msgpack map (string keys) with the fields of :data:`COMMON_FIELDS`, the
  topic's own fields, and ``buffers``: a list of ``{"name", "dtype", "shape"}`` describing
  the parts that follow, in order;
- each buffer: the raw bytes of a C-contiguous little-endian array.

No pickle, no code on the wire: a header is plain msgpack and a buffer is bytes whose type
and shape the header states. The contract for display writers is ``docs/protocol.md``; the
per-topic fields are encoded and decoded side by side in :mod:`usnav.protocol.messages`.

Versioning: ``schema`` is ``"usnav"`` and ``version`` an integer. Additive changes (new
keys, new topics, new buffers) keep the version; readers ignore what they do not know. A
change that alters the meaning or layout of an existing field bumps it. Version 2 replaced the
misreadable ``accepted`` flag by ``display_state`` (see :mod:`usnav.protocol.display`); this
reader also reads version 1 publishers, whose messages are never LIVE. Readers of version 1
refuse version 2 messages with a "protocol version 2, this reader speaks 1 — update usnav"
error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from usnav.defaults import DISPLAY_ENDPOINT
from usnav.errors import UsnavError

#: Where usnav publishes by default (loopback only; see docs/protocol.md).
DEFAULT_ADDRESS = DISPLAY_ENDPOINT

SCHEMA = "usnav"
VERSION = 2
#: Versions this reader decodes (1: before display_state; never shown LIVE).
SUPPORTED_VERSIONS = (1, 2)

TOPIC_MARGIN = "margin"
TOPIC_FRAME = "frame"
TOPIC_REGISTRATION = "registration"
TOPIC_STATUS = "status"
TOPICS = (TOPIC_MARGIN, TOPIC_FRAME, TOPIC_REGISTRATION, TOPIC_STATUS)

#: Header keys every message carries.
COMMON_FIELDS = (
    "schema",
    "version",
    "topic",
    "seq",
    "stream",
    "frame_number",
    "t_device",
    "t_received",
    "t_published",
    "ImageToMri",
    "age_s",
    "quality",
    "uncertainty_mm",
    "registration_checked",
    "display_state",
    "display_reason",
    "live_max_uncertainty_mm",
    "buffers",
)

#: Buffer element types allowed on the wire (little-endian, numpy ``dtype.str``).
DTYPES = ("|u1", "<u2", "<i4", "<f4", "<f8")

#: Largest header accepted, bytes (a header describes; it never carries pixels).
MAX_HEADER_BYTES = 1 << 20

#: Largest message *part* a usnav subscriber takes by default, bytes (ZeroMQ's MAXMSGSIZE:
#: it drops the connection of a publisher that sends a larger one). The largest part usnav
#: publishes is a ``frame`` message's image, the pixels of the frame as the probe sent them;
#: the probe's OpenIGTLink side refuses a message body over ``max_message_bytes`` (64 MiB by
#: default, :data:`usnav.igtl.connection.DEFAULT_MAX_MESSAGE_BYTES`), so no frame image
#: exceeds 64 MiB. A ``margin``'s ``label_image`` is one byte per pixel of the same frame,
#: its contour buffers a few hundred points, a header at most :data:`MAX_HEADER_BYTES`.
#: Twice 64 MiB leaves a safe factor; a site that raises the probe's ``max_message_bytes``
#: raises the displays' ``max_message_bytes`` with it.
MAX_MESSAGE_BYTES = 128 * 1024 * 1024


class ProtocolError(UsnavError):
    """A message that does not follow the protocol.

    Attributes
    ----------
    reason
        Short machine-readable kind (``"version"``, ``"truncated"``, ``"buffer_size"``,
        ``"header"``, ``"topic"``), used as the key of the client's skip counters.
    """

    reason = "header"

    def __init__(self, peer: str, problem: str):
        self.peer = peer
        self.problem = problem
        super().__init__(f"{peer}: {problem}")


class VersionError(ProtocolError):
    """Unknown schema or an unsupported protocol version."""

    reason = "version"


class TruncatedMessageError(ProtocolError):
    """Fewer (or more) parts than the header describes, or no header at all."""

    reason = "truncated"


class BufferSizeError(ProtocolError):
    """A buffer whose byte length does not match its declared dtype and shape."""

    reason = "buffer_size"


class HeaderError(ProtocolError):
    """A header that is not a msgpack map with the required fields and types."""

    reason = "header"


class TopicError(ProtocolError):
    """A topic this reader does not know, or one that disagrees with the header."""

    reason = "topic"


def _plain(value: Any) -> Any:
    """msgpack ``default`` hook: numpy scalars/arrays to Python, anything else to its text."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def pack_header(header: dict[str, Any]) -> bytes:
    """msgpack bytes of a header map (numpy values become plain numbers/lists)."""
    return msgpack.packb(header, default=_plain, use_bin_type=True)


def matrix_to_wire(matrix: np.ndarray | None) -> list[list[float]] | None:
    """A 4×4 as a nested list (row-major), or None."""
    if matrix is None:
        return None
    return np.asarray(matrix, dtype=np.float64).reshape(4, 4).tolist()


def buffer_descriptor(name: str, array: np.ndarray) -> dict[str, Any]:
    """The header entry for one buffer."""
    return {"name": name, "dtype": array.dtype.str, "shape": list(array.shape)}


def wire_array(array: np.ndarray, dtype: str) -> np.ndarray:
    """``array`` as a C-contiguous array of wire dtype ``dtype`` (no copy if already so)."""
    return np.ascontiguousarray(array, dtype=np.dtype(dtype))


def encode(
    topic: str, header: dict[str, Any], buffers: list[tuple[str, np.ndarray]]
) -> list[bytes | memoryview]:
    """Build the multipart frames of one message.

    ``header`` must already hold the common fields except ``buffers`` (added here). Arrays
    are sent without copying when they are contiguous and of a wire dtype.
    """
    descriptors = []
    parts: list[bytes | memoryview] = []
    for name, array in buffers:
        if array.dtype.str not in DTYPES:
            raise ValueError(f"buffer {name!r}: dtype {array.dtype.str} is not a wire dtype")
        array = np.ascontiguousarray(array)
        descriptors.append(buffer_descriptor(name, array))
        parts.append(array.data.cast("B") if array.size else b"")
    full = dict(header)
    full["buffers"] = descriptors
    return [topic.encode("ascii"), pack_header(full), *parts]


@dataclass(frozen=True)
class RawMessage:
    """A decoded but untyped message: topic, header map and named arrays."""

    topic: str
    header: dict[str, Any]
    arrays: dict[str, np.ndarray]


_REQUIRED_TYPES: dict[str, tuple[type, ...]] = {
    "seq": (int,),
    "frame_number": (int,),
    "t_published": (int, float),
    "buffers": (list,),
}


def decode(parts: Sequence[bytes | memoryview], peer: str = "publisher") -> RawMessage:
    """Validate and decode the frames of one message.

    Parameters
    ----------
    parts
        The multipart frames as received.
    peer
        Address for error messages.

    Raises
    ------
    TruncatedMessageError, HeaderError, VersionError, TopicError, BufferSizeError
        With a message naming the peer, topic and what is wrong.
    """
    if len(parts) < 2:
        raise TruncatedMessageError(
            peer, f"message with {len(parts)} part(s); expected [topic, header, buffers...]"
        )
    try:
        topic = bytes(parts[0]).decode("ascii")
    except UnicodeDecodeError as exc:
        raise TopicError(peer, "topic is not ASCII") from exc
    raw_header = bytes(parts[1])
    if len(raw_header) > MAX_HEADER_BYTES:
        raise HeaderError(peer, f"{topic}: header of {len(raw_header)} bytes is too large")
    try:
        header = msgpack.unpackb(raw_header, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise HeaderError(peer, f"{topic}: header is not msgpack ({type(exc).__name__})") from exc
    if not isinstance(header, dict):
        raise HeaderError(peer, f"{topic}: header is a {type(header).__name__}, not a map")
    if header.get("schema") != SCHEMA:
        raise VersionError(peer, f"{topic}: schema {header.get('schema')!r}, expected {SCHEMA!r}")
    if header.get("version") not in SUPPORTED_VERSIONS:
        raise VersionError(
            peer,
            f"{topic}: protocol version {header.get('version')!r}, this reader speaks "
            f"{', '.join(str(v) for v in SUPPORTED_VERSIONS)} — update usnav (client and "
            "publisher must share the version)",
        )
    if header.get("topic", topic) != topic:
        raise TopicError(peer, f"topic frame {topic!r} but header says {header.get('topic')!r}")
    for key, types in _REQUIRED_TYPES.items():
        value = header.get(key)
        if not isinstance(value, types) or isinstance(value, bool):
            raise HeaderError(peer, f"{topic}: header field {key!r} missing or of wrong type")
    descriptors = header["buffers"]
    if len(parts) - 2 != len(descriptors):
        raise TruncatedMessageError(
            peer,
            f"{topic} #{header['seq']}: header describes {len(descriptors)} buffer(s), "
            f"{len(parts) - 2} arrived",
        )
    arrays: dict[str, np.ndarray] = {}
    for descriptor, part in zip(descriptors, parts[2:], strict=True):
        name, array = _decode_buffer(descriptor, part, topic, header["seq"], peer)
        arrays[name] = array
    return RawMessage(topic, header, arrays)


def _decode_buffer(
    descriptor: Any, part: bytes | memoryview, topic: str, seq: int, peer: str
) -> tuple[str, np.ndarray]:
    where = f"{topic} #{seq}"
    if not isinstance(descriptor, dict):
        raise HeaderError(peer, f"{where}: buffer descriptor is not a map")
    name, dtype, shape = descriptor.get("name"), descriptor.get("dtype"), descriptor.get("shape")
    if not isinstance(name, str) or dtype not in DTYPES:
        raise HeaderError(peer, f"{where}: buffer {name!r} has dtype {dtype!r}; allowed {DTYPES}")
    if (
        not isinstance(shape, list)
        or len(shape) > 4
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise HeaderError(peer, f"{where}: buffer {name!r} has shape {shape!r}")
    # exact integers: numpy's int64 product would wrap (and warn) on a hostile shape
    expected = math.prod(shape) * np.dtype(dtype).itemsize
    data = memoryview(part)
    if data.nbytes != expected:
        raise BufferSizeError(
            peer,
            f"{where}: buffer {name!r} has {data.nbytes} bytes, {dtype} {shape} needs {expected}",
        )
    array = np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)
    return name, array
