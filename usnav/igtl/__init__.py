"""OpenIGTLink, the wire library: the codec (header v1/v2, IMAGE, TRANSFORM, STATUS, STRING,
POINT, POLYDATA, queries; POSITION, TDATA and QTDATA on receive) with its fast CRC-64
(``_kernels``), and the TCP transport: one
:mod:`~usnav.igtl.connection`, the reconnecting :mod:`~usnav.igtl.client` and the multi-client
:mod:`~usnav.igtl.server`. It imports nothing of usnav but :mod:`usnav.errors`; the devices
(probe client, playback server, recorder) and the Slicer re-export build on it."""

from usnav.igtl.client import IgtlClient, ReconnectPolicy
from usnav.igtl.codec import (
    ImageContent,
    Message,
    Point,
    PointContent,
    PolyDataContent,
    ProtocolError,
    RawContent,
    StatusContent,
    StringContent,
    TrackingDataContent,
    TrackingElement,
    TransformContent,
    crc64,
    decode_body,
    decode_header,
    encode,
    encode_parts,
)
from usnav.igtl.connection import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_PORT,
    Connection,
    LinkState,
    LinkStats,
    status_message,
)
from usnav.igtl.server import IgtlServer

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_PORT",
    "Connection",
    "IgtlClient",
    "IgtlServer",
    "ImageContent",
    "LinkState",
    "LinkStats",
    "Message",
    "Point",
    "PointContent",
    "PolyDataContent",
    "ProtocolError",
    "RawContent",
    "ReconnectPolicy",
    "StatusContent",
    "StringContent",
    "TrackingDataContent",
    "TrackingElement",
    "TransformContent",
    "crc64",
    "decode_body",
    "decode_header",
    "encode",
    "encode_parts",
    "status_message",
]
