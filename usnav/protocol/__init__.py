"""The usnav display protocol over ZeroMQ: framing, per-topic schema, and CURVE security.

- :mod:`usnav.protocol.wire` — the multipart framing (``[topic, msgpack header, buffers...]``),
  its validated decoding and the protocol errors;
- :mod:`usnav.protocol.messages` — per topic, the typed message with its encoder beside its
  decoder (the publisher encodes with these, :mod:`usnav.client` decodes with them);
- :mod:`usnav.protocol.curve` — ZeroMQ CURVE keys and socket setup for publishing beyond
  loopback.

This room imports no usnav stage (registration, margins...): the publisher converts its own
objects into the plain fields the encoders take. The contract is ``docs/protocol.md``.
"""

from usnav.protocol.messages import (
    Contour,
    FrameMessage,
    Header,
    MarginMessage,
    Message,
    RegistrationMessage,
    StatusMessage,
    parse,
)
from usnav.protocol.wire import (
    DEFAULT_ADDRESS,
    SCHEMA,
    TOPIC_FRAME,
    TOPIC_MARGIN,
    TOPIC_REGISTRATION,
    TOPIC_STATUS,
    TOPICS,
    VERSION,
    BufferSizeError,
    HeaderError,
    ProtocolError,
    RawMessage,
    TopicError,
    TruncatedMessageError,
    VersionError,
    decode,
    encode,
)

__all__ = [
    "DEFAULT_ADDRESS",
    "SCHEMA",
    "TOPICS",
    "TOPIC_FRAME",
    "TOPIC_MARGIN",
    "TOPIC_REGISTRATION",
    "TOPIC_STATUS",
    "VERSION",
    "BufferSizeError",
    "Contour",
    "FrameMessage",
    "Header",
    "HeaderError",
    "MarginMessage",
    "Message",
    "ProtocolError",
    "RawMessage",
    "RegistrationMessage",
    "StatusMessage",
    "TopicError",
    "TruncatedMessageError",
    "VersionError",
    "decode",
    "encode",
    "parse",
]
