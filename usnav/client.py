"""Python client for the usnav ZeroMQ protocol: subscribe, check versions, see gaps, typed objects.

Example
-------
>>> from usnav.client import Subscriber
>>> with Subscriber("tcp://127.0.0.1:5556") as sub:            # doctest: +SKIP
...     latest = sub.receive_latest(timeout_s=0.1)              # newest per topic
...     margin = latest.get("margin")
...     if margin is not None and margin.in_view:
...         for contour in margin.contours:
...             print(contour.structure, contour.predicted_px.shape)

Displays should use :meth:`Subscriber.receive_latest`: it drains the socket and keeps the
newest message per topic, so what is drawn is milliseconds old even when drawing is slower
than publishing (ZeroMQ's CONFLATE does not work with multipart messages). Recorders and
analysers that need every message use :meth:`Subscriber.receive`.

Bad messages (unknown version, truncated, wrong buffer sizes...) raise a
:class:`~usnav.publish.protocol.ProtocolError` subclass with ``strict=True``; by default they
are skipped and counted in :attr:`Subscriber.stats` (``skipped[reason]``), so a display never
dies of one bad message. The wire format is specified in ``docs/protocol.md``.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from usnav.defaults import DISPLAY_ENDPOINT
from usnav.publish.protocol import (
    TOPIC_FRAME,
    TOPIC_MARGIN,
    TOPIC_REGISTRATION,
    TOPIC_STATUS,
    TOPICS,
    BufferSizeError,
    HeaderError,
    ProtocolError,
    RawMessage,
    TopicError,
    TruncatedMessageError,
    VersionError,
    decode,
)

DEFAULT_ADDRESS = DISPLAY_ENDPOINT

#: socket-monitor events of a failed security handshake (libzmq ≥ 4.3)
_HANDSHAKE_FAILURES = tuple(
    getattr(zmq, name)
    for name in (
        "EVENT_HANDSHAKE_FAILED_NO_DETAIL",
        "EVENT_HANDSHAKE_FAILED_PROTOCOL",
        "EVENT_HANDSHAKE_FAILED_AUTH",
    )
    if hasattr(zmq, name)
)
_HANDSHAKE_SUCCEEDED = getattr(zmq, "EVENT_HANDSHAKE_SUCCEEDED", 0)
_MECHANISM_MISMATCH = getattr(zmq, "PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH", -1)

__all__ = [
    "DEFAULT_ADDRESS",
    "TOPICS",
    "BufferSizeError",
    "ClientStats",
    "Contour",
    "FrameMessage",
    "Header",
    "HeaderError",
    "MarginMessage",
    "Message",
    "ProtocolError",
    "RegistrationMessage",
    "StatusMessage",
    "Subscriber",
    "TopicError",
    "TruncatedMessageError",
    "VersionError",
    "parse",
]


# -- typed messages ------------------------------------------------------------------------


def _float(value: Any) -> float:
    return (
        float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        else (float("nan"))
    )


def _matrix(value: Any, peer: str, where: str) -> np.ndarray | None:
    if value is None:
        return None
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise HeaderError(peer, f"{where} is not a 4×4 matrix") from exc
    if m.shape != (4, 4):
        raise HeaderError(peer, f"{where} has shape {m.shape}, expected 4×4")
    return m


@dataclass(frozen=True)
class Header:
    """Fields every message carries.

    Attributes
    ----------
    topic, seq, stream
        Topic, its per-publisher sequence number, and the publisher instance's id (a new id
        means the publisher restarted: ``seq`` starts again without a gap).
    frame_number
        The ultrasound frame the message is about (-1 if none).
    t_device, t_received, t_published
        Device time of the frame, host time it was received, host time it was published (s,
        epoch; None when not applicable).
    t_arrived
        Host time this client took it off the socket (s, epoch).
    image_to_mri
        4×4 pixel (col, row, 0, 1) → MRI RAS mm, or None.
    age_s, quality, accepted
        The registration behind the message: age at publish time (s), quality 0..1 and
        whether it was accepted. None/False when there is no registration yet.
    gap
        Messages of this topic missed just before this one (dropped at a high-water mark or
        never received).
    stale, stale_reason
        The publisher marked the message as not showing the present (probe link not
        streaming, tracking lost); a display must show it as stale.
    raw
        The whole decoded header map (for fields this client does not model).
    """

    topic: str
    seq: int
    stream: int
    frame_number: int
    t_device: float | None
    t_received: float | None
    t_published: float
    t_arrived: float
    image_to_mri: np.ndarray | None
    age_s: float | None
    quality: float | None
    accepted: bool
    gap: int
    raw: dict[str, Any] = field(repr=False)
    stale: bool = False
    stale_reason: str = ""

    @property
    def transport_latency_s(self) -> float:
        """Publish → arrival at this client, s."""
        return self.t_arrived - self.t_published

    @property
    def latency_s(self) -> float | None:
        """Frame received by usnav → arrival at this client (pipeline + transport), s."""
        return None if self.t_received is None else self.t_arrived - self.t_received


@dataclass(frozen=True)
class Contour:
    """One margin contour (see :class:`usnav.margins.MarginContour`).

    Arrays: ``predicted_px``/``observed_px`` (N, 2) image pixels (x = col, y = row);
    ``disagreement_mm``, ``confidence`` (N,); ``predicted_mri_mm`` (N, 3) MRI RAS mm;
    ``faces_tissue`` (N,) bool — False along the border between solid tumor and cyst.
    """

    structure: str
    label: int
    hole: bool
    predicted_px: np.ndarray
    observed_px: np.ndarray
    disagreement_mm: np.ndarray
    confidence: np.ndarray
    predicted_mri_mm: np.ndarray
    faces_tissue: np.ndarray

    def supported(self, threshold: float = 0.5) -> np.ndarray:
        """Boolean mask of the points the ultrasound supports."""
        return self.confidence >= threshold


@dataclass(frozen=True)
class MarginMessage:
    """Topic ``margin``: one frame's tumor margins."""

    header: Header
    in_view: bool
    reason: str
    image_shape: tuple[int, int]
    spacing_mm: tuple[float, float]
    contours: tuple[Contour, ...]
    label_image: np.ndarray | None
    extent: dict[str, float] | None
    distance_to_top_mm: float | None
    stylus: dict[str, Any] | None
    polarity: dict[str, str]
    supported_fraction: float
    median_abs_disagreement_mm: float | None
    registration_sequence: int


@dataclass(frozen=True)
class FrameMessage:
    """Topic ``frame``: an ultrasound image."""

    header: Header
    image: np.ndarray
    spacing_mm: tuple[float, float] | None
    orientation: str
    image_ok: bool


@dataclass(frozen=True)
class RegistrationMessage:
    """Topic ``registration``: a registration estimate (accepted or not)."""

    header: Header
    reference_to_mri: np.ndarray
    similarity: float | None
    uncertainty_mm: float | None
    t_computed: float
    estimate_sequence: int
    source: str
    reason: str


@dataclass(frozen=True)
class StatusMessage:
    """Topic ``status``: pipeline state (connection, fps, latency, drops...)."""

    header: Header
    status: dict[str, Any]


Message = MarginMessage | FrameMessage | RegistrationMessage | StatusMessage


def _opt_float(value: Any) -> float | None:
    return None if value is None else _float(value)


def _stream_id(header: dict[str, Any], peer: str) -> int:
    stream = header.get("stream", 0) or 0
    if not isinstance(stream, int) or isinstance(stream, bool):
        raise HeaderError(
            peer, f"{header.get('topic')} #{header.get('seq')}: 'stream' is not an int"
        )
    return stream


def _header_of(raw: RawMessage, gap: int, t_arrived: float, peer: str) -> Header:
    h = raw.header
    return Header(
        topic=raw.topic,
        seq=int(h["seq"]),
        stream=_stream_id(h, peer),
        frame_number=int(h["frame_number"]),
        t_device=_opt_float(h.get("t_device")),
        t_received=_opt_float(h.get("t_received")),
        t_published=float(h["t_published"]),
        t_arrived=t_arrived,
        image_to_mri=_matrix(h.get("ImageToMri"), peer, f"{raw.topic} #{h['seq']} ImageToMri"),
        age_s=_opt_float(h.get("age_s")),
        quality=_opt_float(h.get("quality")),
        accepted=bool(h.get("accepted", False)),
        gap=gap,
        raw=h,
        stale=bool(h.get("stale", False)),
        stale_reason=str(h.get("stale_reason", "") or ""),
    )


def parse(
    raw: RawMessage, *, gap: int = 0, t_arrived: float | None = None, peer: str = "publisher"
) -> Message:
    """Turn a decoded message into its typed object.

    Raises
    ------
    TopicError
        Unknown topic.
    HeaderError, BufferSizeError
        Topic fields missing/mistyped, or contour buffers that disagree with the header.
    """
    arrived = time.time() if t_arrived is None else t_arrived
    header = _header_of(raw, gap, arrived, peer)
    h = raw.header
    where = f"{raw.topic} #{header.seq}"
    try:
        if raw.topic == TOPIC_MARGIN:
            return _parse_margin(raw, header, where, peer)
        if raw.topic == TOPIC_FRAME:
            image = raw.arrays.get("image")
            if image is None or image.ndim < 2:
                raise HeaderError(peer, f"{where}: no 2D buffer 'image'")
            spacing = h.get("spacing_mm")
            return FrameMessage(
                header,
                image,
                (float(spacing[0]), float(spacing[1])) if spacing else None,
                str(h.get("orientation", "MF")),
                bool(h.get("image_ok", True)),
            )
        if raw.topic == TOPIC_REGISTRATION:
            matrix = _matrix(h.get("ReferenceToMri"), peer, f"{where} ReferenceToMri")
            if matrix is None:
                raise HeaderError(peer, f"{where}: ReferenceToMri missing")
            return RegistrationMessage(
                header,
                matrix,
                _opt_float(h.get("similarity")),
                _opt_float(h.get("uncertainty_mm")),
                _float(h.get("t_computed")),
                int(h.get("estimate_sequence", -1)),
                str(h.get("source", "")),
                str(h.get("reason", "")),
            )
        if raw.topic == TOPIC_STATUS:
            status = h.get("status", {})
            if not isinstance(status, dict):
                raise HeaderError(peer, f"{where}: 'status' is not a map")
            return StatusMessage(header, status)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise HeaderError(peer, f"{where}: malformed field ({type(exc).__name__}: {exc})") from exc
    raise TopicError(peer, f"unknown topic {raw.topic!r}")


def _parse_margin(raw: RawMessage, header: Header, where: str, peer: str) -> MarginMessage:
    h = raw.header
    contours = []
    for k, entry in enumerate(h.get("contours", [])):
        n = int(entry["n"])
        shapes = {
            "predicted_px": (n, 2),
            "observed_px": (n, 2),
            "disagreement_mm": (n,),
            "confidence": (n,),
            "predicted_mri_mm": (n, 3),
            "faces_tissue": (n,),
        }
        arrays = {}
        for name, shape in shapes.items():
            array = raw.arrays.get(f"c{k}.{name}")
            if array is None:
                raise HeaderError(peer, f"{where}: contour {k} has no buffer {name!r}")
            if array.shape != shape:
                raise BufferSizeError(
                    peer, f"{where}: contour {k} {name} has shape {array.shape}, expected {shape}"
                )
            arrays[name] = array
        arrays["faces_tissue"] = arrays["faces_tissue"].astype(bool)
        contours.append(
            Contour(str(entry["structure"]), int(entry["label"]), bool(entry["hole"]), **arrays)
        )
    shape = h.get("image_shape") or [0, 0]
    label_image = raw.arrays.get("label_image")
    if label_image is not None and tuple(label_image.shape) != (int(shape[0]), int(shape[1])):
        raise BufferSizeError(
            peer, f"{where}: label_image has shape {label_image.shape}, header says {shape}"
        )
    in_view = bool(h.get("in_view", False))
    if in_view and not contours:
        raise HeaderError(peer, f"{where}: in_view with no contours")
    spacing = h.get("spacing_mm") or [float("nan"), float("nan")]
    extent, stylus = h.get("extent"), h.get("stylus")
    if extent is not None:
        if not isinstance(extent, dict):
            raise HeaderError(peer, f"{where}: 'extent' is not a map")
        extent = {str(k): _float(v) for k, v in extent.items()}
    if stylus is not None and not isinstance(stylus, dict):
        raise HeaderError(peer, f"{where}: 'stylus' is not a map")
    if stylus is not None and "signed_distance_mm" in stylus:
        stylus = {**stylus, "signed_distance_mm": _opt_float(stylus["signed_distance_mm"])}
    return MarginMessage(
        header=header,
        in_view=in_view,
        reason=str(h.get("reason", "")),
        image_shape=(int(shape[0]), int(shape[1])),
        spacing_mm=(_float(spacing[0]), _float(spacing[1])),
        contours=tuple(contours),
        label_image=label_image,
        extent=extent,
        distance_to_top_mm=_opt_float(h.get("distance_to_top_mm")),
        stylus=stylus,
        polarity=dict(h.get("polarity") or {}),
        supported_fraction=_float(h.get("supported_fraction", 0.0)),
        median_abs_disagreement_mm=_opt_float(h.get("median_abs_disagreement_mm")),
        registration_sequence=int(h.get("registration_sequence", -1)),
    )


# -- subscriber ----------------------------------------------------------------------------


@dataclass
class ClientStats:
    """Counters of a :class:`Subscriber`.

    Attributes
    ----------
    received
        Valid messages per topic.
    gaps
        Messages missed per topic (sequence numbers that never arrived).
    superseded
        Valid messages drained by :meth:`Subscriber.receive_latest` but not returned because
        a newer one of the same topic arrived in the same drain.
    skipped
        Invalid messages skipped, per reason (``version``, ``truncated``, ``buffer_size``,
        ``header``, ``topic``).
    restarts
        Times a publisher's stream id changed (a restart; its sequence starts again).
    last_error
        The latest problem, in words ("" if none).
    """

    received: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOPICS, 0))
    gaps: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOPICS, 0))
    superseded: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    restarts: int = 0
    last_error: str = ""

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


def _endpoint_problem(address: str) -> str:
    """Why a TCP endpoint cannot work ("" if it may): ZeroMQ accepts some of these and then
    waits forever."""
    if not address.startswith("tcp://"):
        return ""
    host, _, port = address[len("tcp://") :].rpartition(":")
    if not host:
        return "no host:port in the address"
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"port {port!r} is not a TCP port (1-65535)"
    return ""


class Subscriber:
    """Subscribes to a usnav publisher.

    Parameters
    ----------
    address
        The publisher's endpoint (``tcp://127.0.0.1:5556`` by default).
    topics
        Topics to receive (default: all).
    hwm
        Receive high-water mark (messages queued before ZeroMQ drops), set before connect.
    strict
        Raise :class:`ProtocolError` subclasses on bad messages instead of skipping them.
    context
        ZeroMQ context (default: the shared instance).
    curve_server_key, curve_client_secret
        For a publisher beyond loopback (ZeroMQ CURVE, see ``usnav keys``): the publisher's
        public key file (``server.key``) and this client's ``*.key_secret`` file.

    Notes
    -----
    Connecting succeeds whether or not a publisher is there yet; ZeroMQ reconnects by itself.
    :attr:`connected` follows the TCP connection (socket monitor events);
    :attr:`handshake_error` says why a publisher refused this client (missing or wrong CURVE
    keys), updated whenever :attr:`connected` is read.
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        topics: tuple[str, ...] | list[str] = TOPICS,
        *,
        hwm: int = 100,
        strict: bool = False,
        context: zmq.Context | None = None,
        curve_server_key: str | Path | None = None,
        curve_client_secret: str | Path | None = None,
    ):
        unknown = [t for t in topics if t not in TOPICS]
        if unknown:
            raise ValueError(f"unknown topic(s) {unknown}; known: {', '.join(TOPICS)}")
        self.address = address
        self.topics = tuple(topics)
        self.strict = strict
        self.stats = ClientStats()
        self._closed = False
        self._context = context or zmq.Context.instance()
        self._socket = self._context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.RCVHWM, int(hwm))
        self._socket.setsockopt(zmq.RECONNECT_IVL, 100)
        self._socket.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        for topic in self.topics:
            self._socket.setsockopt(zmq.SUBSCRIBE, topic.encode("ascii"))
        if (curve_server_key is None) != (curve_client_secret is None):
            self._socket.close(0)
            from usnav.errors import InputError

            raise InputError(
                "CURVE keys",
                "the publisher's public key and this display's secret key go together",
                "give both (--server-key KEYDIR/server.key --client-key "
                "KEYDIR/client.key_secret), or neither for a loopback publisher",
            )
        if curve_server_key is not None and curve_client_secret is not None:
            from usnav.publish.curve import secure_client_socket

            try:
                secure_client_socket(self._socket, curve_server_key, curve_client_secret)
            except Exception:
                self._socket.close(0)
                raise
        self._curve = curve_server_key is not None
        #: why the security handshake with the publisher failed ("" when it did not)
        self.handshake_error = ""
        events = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | _HANDSHAKE_SUCCEEDED
        for event in _HANDSHAKE_FAILURES:
            events |= event
        self._monitor = self._socket.get_monitor_socket(events)
        problem = _endpoint_problem(address)
        if problem:
            self.close()
            from usnav.errors import InputError

            raise InputError(address, problem, "use an endpoint like tcp://127.0.0.1:5556")
        try:
            self._socket.connect(address)
        except zmq.ZMQError as exc:
            self.close()
            from usnav.errors import InputError

            raise InputError(
                address, f"cannot connect: {exc}", "use an endpoint like tcp://127.0.0.1:5556"
            ) from exc
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)
        self._last: dict[str, tuple[int, int]] = {}  # topic → (stream, seq)
        self._connected = False
        self.ever_connected = False
        #: host time of the last valid message (None before the first)
        self.last_message_time: float | None = None

    # -- connection state ------------------------------------------------------------------

    def _poll_monitor(self) -> None:
        while True:
            try:
                event = recv_monitor_message(self._monitor, flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError:
                return
            if event["event"] == zmq.EVENT_CONNECTED:
                self._connected = True
                self.ever_connected = True
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self._connected = False
            elif event["event"] in _HANDSHAKE_FAILURES:
                self._connected = False
                self.handshake_error = self._handshake_hint(event["event"], event["value"])
                self.stats.last_error = self.handshake_error
            elif _HANDSHAKE_SUCCEEDED and event["event"] == _HANDSHAKE_SUCCEEDED:
                self.handshake_error = ""

    def _handshake_hint(self, event: int, value: int) -> str:
        """What a failed handshake means for the user, in words."""
        if value == _MECHANISM_MISMATCH:
            if self._curve:
                return (
                    "the publisher does not use CURVE encryption — drop --server-key/"
                    "--client-key (a loopback publisher needs none)"
                )
            return (
                "the publisher requires CURVE keys — give --server-key KEYDIR/server.key "
                "and --client-key KEYDIR/client.key_secret (usnav keys)"
            )
        return (
            "the publisher refused the security handshake — --server-key is not its key, or "
            "this display's public key is not in its authorized/ folder"
        )

    @property
    def connected(self) -> bool:
        """Whether a TCP connection to the publisher is up (from socket monitor events)."""
        if not self._closed:
            self._poll_monitor()
        return self._connected

    # -- receiving -------------------------------------------------------------------------

    def _take(self, parts: list[zmq.Frame], t_arrived: float) -> Message | None:
        """Validate one raw multipart message; update counters; None if skipped."""
        try:
            raw = decode([f.buffer for f in parts], self.address)
            if raw.topic not in TOPICS:
                raise TopicError(self.address, f"unknown topic {raw.topic!r}")
            gap = self._gap(raw)
            message = parse(raw, gap=gap, t_arrived=t_arrived, peer=self.address)
        except (KeyError, TypeError, ValueError, IndexError, OverflowError) as exc:
            # whatever slipped past the checks is still one bad message, never a dead display
            wrapped = HeaderError(self.address, f"malformed message ({type(exc).__name__}: {exc})")
            self.stats.skipped[wrapped.reason] = self.stats.skipped.get(wrapped.reason, 0) + 1
            self.stats.last_error = str(wrapped)
            if self.strict:
                raise wrapped from exc
            return None
        except ProtocolError as exc:
            self.stats.skipped[exc.reason] = self.stats.skipped.get(exc.reason, 0) + 1
            self.stats.last_error = str(exc)
            if self.strict:
                raise
            return None
        self.stats.received[raw.topic] += 1
        self.last_message_time = t_arrived
        return message

    def _gap(self, raw: RawMessage) -> int:
        stream = _stream_id(raw.header, self.address)
        seq = int(raw.header["seq"])
        previous = self._last.get(raw.topic)
        self._last[raw.topic] = (stream, seq)
        if previous is None:
            return 0
        if previous[0] != stream:
            self.stats.restarts += 1
            return 0
        missed = seq - previous[1] - 1
        if missed > 0:
            self.stats.gaps[raw.topic] += missed
            return missed
        return 0

    def _recv_now(self) -> list[zmq.Frame] | None:
        try:
            return self._socket.recv_multipart(flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None

    def receive(self, timeout_s: float | None = None) -> Message | None:
        """The next valid message, in arrival order; None when ``timeout_s`` passes.

        ``timeout_s=None`` waits indefinitely; 0 does not wait.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            parts = self._recv_now()
            if parts is not None:
                message = self._take(parts, time.time())
                if message is not None:
                    return message
                continue
            if deadline is None:
                wait_ms = 1000
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                wait_ms = max(1, int(remaining * 1000))
            if not self._poller.poll(wait_ms) and deadline is None:
                continue

    def receive_latest(self, timeout_s: float = 0.0) -> dict[str, Message]:
        """Drain the socket; the newest valid message per topic (empty if none).

        Waits up to ``timeout_s`` for the first message, then takes everything already
        queued without waiting. Older messages of a topic are counted in
        ``stats.superseded``; gaps are still detected on every message.
        """
        newest: dict[str, Message] = {}
        parts = self._recv_now()
        if parts is None and timeout_s > 0 and self._poller.poll(max(1, int(timeout_s * 1000))):
            parts = self._recv_now()
        while parts is not None:
            message = self._take(parts, time.time())
            if message is not None:
                if message.header.topic in newest:
                    self.stats.superseded += 1
                newest[message.header.topic] = message
            parts = self._recv_now()
        return newest

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Close the sockets. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(zmq.ZMQError):
            self._socket.disable_monitor()
        self._monitor.close(0)
        self._socket.close(0)

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# keep the names importable from here for client code
MARGIN, FRAME, REGISTRATION, STATUS = TOPIC_MARGIN, TOPIC_FRAME, TOPIC_REGISTRATION, TOPIC_STATUS
