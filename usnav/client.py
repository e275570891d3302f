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
than publishing (ZeroMQ's CONFLATE does not work with multipart messages); its ``"frame"`` is
the newest margin's own frame when that was received, so a margin is drawn over the image it
was computed on. Recorders and
analysers that need every message use :meth:`Subscriber.receive`.

Bad messages (unknown version, truncated, wrong buffer sizes...) raise a
:class:`~usnav.protocol.wire.ProtocolError` subclass with ``strict=True``; by default they
are skipped and counted in :attr:`Subscriber.stats` (``skipped[reason]``), so a display never
dies of one bad message. The wire format is specified in ``docs/protocol.md`` and implemented in
:mod:`usnav.protocol` (the typed messages are re-exported here for display code).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import zmq
from zmq.utils.monitor import recv_monitor_message

from usnav.protocol.curve import is_ipv6_endpoint
from usnav.protocol.messages import (
    Contour,
    FrameMessage,
    Header,
    MarginMessage,
    Message,
    RegistrationMessage,
    StatusMessage,
    parse,
    stream_id,
)
from usnav.protocol.wire import (
    DEFAULT_ADDRESS,
    MAX_HEADER_BYTES,
    MAX_MESSAGE_BYTES,
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
#: socket-monitor events of ZeroMQ (re)connecting by itself
_CONNECTING = (zmq.EVENT_CONNECT_DELAYED, zmq.EVENT_CONNECT_RETRIED)
#: how long after a drop ZeroMQ has to show that it reconnects by itself before this client
#: reconnects, s: after an established connection it drops one for good only when the
#: publisher broke the protocol (a part over MAXMSGSIZE); its own retry follows at once
PROTOCOL_DROP_WAIT_S = 0.5
_MECHANISM_MISMATCH = getattr(zmq, "PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH", -1)

__all__ = [
    "DEFAULT_ADDRESS",
    "MAX_MESSAGE_BYTES",
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
        ``header``, ``topic``; ``oversize``: connections ZeroMQ dropped because the publisher
        sent a message part over ``max_message_bytes`` — or otherwise broke the ZeroMQ
        protocol after the handshake, which it cannot tell apart — each re-opened).
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
        """Messages skipped as bad, over every reason."""
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


def _resolve_problem(address: str) -> str:
    """Why the host of a TCP endpoint does not resolve ("" if it does, or is not a name).
    ZeroMQ keeps retrying such an address without a word."""
    if not address.startswith("tcp://"):
        return ""
    host = address[len("tcp://") :].rpartition(":")[0].strip("[]")
    if host in ("", "*"):
        return ""
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return ""
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return (
            f"the host name {host!r} does not resolve ({reason}): check it, or give an IP address"
        )
    return ""


#: frames kept to pair the newest margin with its own image (a margin lags its frame by the
#: time usnav took to compute it: a few frames at 30 fps)
PAIRED_FRAMES_KEPT = 16

#: A :meth:`Subscriber.receive_latest` caller that did not look for longer than this (s) and
#: then finds messages queued has them counted as old as that gap (they may have waited that
#: long): a display that froze shows what it then drains as STALE, not as the present. A
#: display loop looks every frame (~0.03 s); 0.5 s is a freeze, well under the 1.5 s after
#: which data count as lost.
BACKLOG_GAP_S = 0.5
#: longest single wait on the socket, s: a close() from another thread is seen within it
_POLL_SLICE_S = 0.1


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
    max_message_bytes
        Largest message part taken, bytes (ZeroMQ's MAXMSGSIZE, set before connect; default
        :data:`MAX_MESSAGE_BYTES`, 128 MiB: twice the largest frame image the probe's side
        accepts). ZeroMQ drops the connection of a publisher that sends a larger part, before
        allocating it; this client then counts it (``stats.skipped["oversize"]``), names it in
        :attr:`link_problem` until data arrive again (and from the first moment of the same
        publisher's next drop), and reconnects (ZeroMQ does not). It
        bounds each part, not a whole multipart message.
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
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        strict: bool = False,
        context: zmq.Context | None = None,
        curve_server_key: str | Path | None = None,
        curve_client_secret: str | Path | None = None,
    ):
        unknown = [t for t in topics if t not in TOPICS]
        if unknown:
            raise ValueError(f"unknown topic(s) {unknown}; known: {', '.join(TOPICS)}")
        if not MAX_HEADER_BYTES <= max_message_bytes <= 2**31:
            raise ValueError(
                f"max_message_bytes must be between {MAX_HEADER_BYTES} (a header's limit) and "
                f"2**31, got {max_message_bytes}"
            )
        self.address = address
        self.max_message_bytes = int(max_message_bytes)
        self.topics = tuple(topics)
        self.strict = strict
        self.stats = ClientStats()
        self._closed = False
        self._sockets_closed = False
        self._life = threading.Lock()
        self._reader: threading.Thread | None = None  # the thread in receive(), if any
        # recent frames by (stream, frame number): the newest margin is returned with its own
        # frame, which a drain has usually already superseded (frames run ahead of margins)
        self._recent_frames: OrderedDict[tuple[int, int], Message] = OrderedDict()
        self._context = context or zmq.Context.instance()
        self._socket = self._context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.RCVHWM, int(hwm))
        self._socket.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
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
            from usnav.protocol.curve import secure_client_socket

            try:
                secure_client_socket(self._socket, curve_server_key, curve_client_secret)
            except Exception:
                self._socket.close(0)
                raise
        self._curve = curve_server_key is not None
        #: why the security handshake with the publisher failed ("" when it did not)
        self.handshake_error = ""
        events = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | _HANDSHAKE_SUCCEEDED
        for event in (*_HANDSHAKE_FAILURES, *_CONNECTING):
            events |= event
        self._monitor = self._socket.get_monitor_socket(events)
        problem = _endpoint_problem(address)
        if problem:
            self.close()
            from usnav.errors import InputError

            raise InputError(address, problem, "use an endpoint like tcp://127.0.0.1:5556")
        #: why the address's host name does not resolve ("" when it does; looked up in the
        #: background, as a slow name server must not hold up a display)
        self.address_problem = ""
        threading.Thread(target=self._look_up, name="usnav-resolve", daemon=True).start()
        if is_ipv6_endpoint(address):
            self._socket.setsockopt(zmq.IPV6, 1)
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
        #: the stream id of the newest message (None before the first)
        self._stream: int | None = None
        self._connected = False
        self.ever_connected = False
        #: host time of the last valid message (None before the first); after a drain that
        #: found a backlog the caller left for over :data:`BACKLOG_GAP_S`, when it last looked
        self.last_message_time: float | None = None
        #: monotonic time the last :meth:`receive_latest` returned (None before the first)
        self._last_drain_end: float | None = None
        #: the headers of the margins the last :meth:`receive_latest` drained but did not
        #: return (a newer margin came in the same drain), oldest first: a display that holds
        #: a better state against worse ones said recently (``usnav.viewer``) counts theirs too
        self.superseded_margins: list[Header] = []
        #: the newest refused message's problem, without the address ("" if none)
        self._refused = ""
        #: messages refused since the last valid one (a publisher that restarted speaking
        #: another protocol version is refused after good data: the display says why)
        self._refused_since_valid = 0
        #: the connection up now has passed the security handshake
        self._handshaken = False
        #: when an established connection dropped and ZeroMQ has not yet said it reconnects
        self._dropped_at: float | None = None
        #: why ZeroMQ dropped the connection, until data arrive again ("" if it did not)
        self._drop_problem = ""
        #: the newest protocol drop's reason, kept across the reconnect and the data that
        #: followed it: the same publisher's next drop is named from its first moment, not
        #: only once the drop is classified (until session 36 a display said "connection
        #: lost" alone for ``PROTOCOL_DROP_WAIT_S`` at each drop); "" after a plain drop
        self._last_drop_problem = ""

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
                self._dropped_at = None
                # without the event (libzmq < 4.3) a connection counts as handshaken
                self._handshaken = not _HANDSHAKE_SUCCEEDED
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self._connected = False
                if self._handshaken:
                    self._dropped_at = time.monotonic()
                    # most likely the publisher's last reason again: shown at once
                    self._drop_problem = self._drop_problem or self._last_drop_problem
                self._handshaken = False
            elif event["event"] in _CONNECTING:
                if self._dropped_at is not None:
                    # ZeroMQ reconnects by itself: a plain drop (the publisher stopped or
                    # restarted), so no earlier drop's reason applies to it
                    self._drop_problem = self._last_drop_problem = ""
                self._dropped_at = None
            elif event["event"] in _HANDSHAKE_FAILURES:
                self._connected = False
                self.handshake_error = self._handshake_hint(event["event"], event["value"])
                self.stats.last_error = self.handshake_error
            elif _HANDSHAKE_SUCCEEDED and event["event"] == _HANDSHAKE_SUCCEEDED:
                self.handshake_error = ""
                self._handshaken = True

    def _watch(self) -> None:
        """Follow the connection; re-open one ZeroMQ dropped for good.

        After the handshake libzmq drops a connection without retrying only for a protocol
        error: with MAXMSGSIZE set, a message part over ``max_message_bytes`` (or a broken
        ZeroMQ frame). Every other drop is followed at once by its own reconnect events.
        """
        if self._closed:
            return
        self._poll_monitor()
        dropped = self._dropped_at
        if dropped is None or time.monotonic() - dropped < PROTOCOL_DROP_WAIT_S:
            return
        self._dropped_at = None
        self._drop_problem = self._last_drop_problem = (
            f"the publisher sent a message part over {self.max_message_bytes} bytes "
            "(max_message_bytes) or broke the ZeroMQ protocol: ZeroMQ dropped the connection; "
            "reconnecting"
        )
        self.stats.skipped["oversize"] = self.stats.skipped.get("oversize", 0) + 1
        self.stats.last_error = f"{self.address}: {self._drop_problem}"
        self._refused = self._drop_problem
        with contextlib.suppress(zmq.ZMQError):  # ZeroMQ may have forgotten the endpoint
            self._socket.disconnect(self.address)
        self._socket.connect(self.address)

    def _handshake_hint(self, event: int, value: int) -> str:
        """What a failed handshake means for the user, in words.

        A display without keys can only fail a handshake against a secured publisher, whatever
        detail libzmq reports: the server may close the connection before the client has read
        the mechanism-mismatch error, and then the event is ``NO_DETAIL`` (seen in CI)."""
        if not self._curve:
            return (
                "the publisher requires CURVE keys — give --server-key KEYDIR/server.key "
                "and --client-key KEYDIR/client.key_secret (usnav keys)"
            )
        if value == _MECHANISM_MISMATCH:
            return (
                "the publisher does not use CURVE encryption — drop --server-key/"
                "--client-key (a loopback publisher needs none)"
            )
        return (
            "the publisher refused the security handshake — --server-key is not its key, or "
            "this display's public key is not in its authorized/ folder"
        )

    def _look_up(self) -> None:
        self.address_problem = _resolve_problem(self.address)

    @property
    def link_problem(self) -> str:
        """Why no publisher is reached, as far as known: the security handshake failed, the
        host name does not resolve, ZeroMQ dropped the publisher for a message part over
        ``max_message_bytes`` (until data arrive again; at once when it drops again, before
        the drop is told from a plain disconnect), or every message so far, or since the last
        valid one, was refused (e.g. a publisher of a newer protocol version, or one that
        restarted as one) ("" otherwise)."""
        problem = self.handshake_error if self.connected else ""
        if not self.connected:
            problem = self.handshake_error or self.address_problem
        if not problem:
            problem = self._drop_problem
        if not problem and self.last_message_time is None and self._refused:
            count = self.stats.skipped_total
            problem = f"{count} message{'s' if count != 1 else ''} refused: {self._refused}"
        elif not problem and self._refused_since_valid:
            count = self._refused_since_valid
            problem = (
                f"{count} message{'s' if count != 1 else ''} refused since the last valid one: "
                f"{self._refused}"
            )
        return problem

    @property
    def connected(self) -> bool:
        """Whether a TCP connection to the publisher is up (from socket monitor events)."""
        self._watch()
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
            self._refused = wrapped.problem
            self._refused_since_valid += 1
            if self.strict:
                raise wrapped from exc
            return None
        except ProtocolError as exc:
            self.stats.skipped[exc.reason] = self.stats.skipped.get(exc.reason, 0) + 1
            self.stats.last_error = str(exc)
            self._refused = exc.problem
            self._refused_since_valid += 1
            if self.strict:
                raise
            return None
        self.stats.received[raw.topic] += 1
        self.last_message_time = t_arrived
        self._drop_problem = ""  # data flow again
        self._refused_since_valid = 0
        return message

    def _gap(self, raw: RawMessage) -> int:
        stream = stream_id(raw.header, self.address)
        seq = int(raw.header["seq"])
        previous = self._last.get(raw.topic)
        self._last[raw.topic] = (stream, seq)
        if self._stream is not None and stream != self._stream:
            self.stats.restarts += 1  # once per restart, not once per topic it is seen on
        self._stream = stream
        if previous is None or previous[0] != stream:
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

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise RuntimeError(
                f"the subscriber to {self.address} is closed; create a new Subscriber"
            )

    def _enter_call(self) -> None:
        with self._life:
            self._refuse_if_closed()
            if self._reader is not None:
                raise RuntimeError(
                    f"the subscriber to {self.address} is being read by another thread; "
                    "a ZeroMQ socket is used by one thread at a time"
                )
            self._reader = threading.current_thread()

    def _leave_call(self) -> None:
        with self._life:
            self._reader = None
            if self._closed:  # close() came from another thread while this one read
                self._close_sockets()

    def _wait_readable(self, deadline: float | None) -> bool:
        """Poll in short slices until a message is queued (True), ``deadline`` (monotonic)
        passed or another thread closed the subscriber (False)."""
        while not self._closed:
            remaining = _POLL_SLICE_S if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._poller.poll(max(1, int(min(remaining, _POLL_SLICE_S) * 1000))):
                return True
            self._watch()
        return False

    def receive(self, timeout_s: float | None = None) -> Message | None:
        """The next valid message, in arrival order.

        Parameters
        ----------
        timeout_s
            Longest wait, s: None waits until a message comes (or another thread closes the
            subscriber), 0 does not wait.

        Returns
        -------
        Message or None
            The message (its header has ``t_published``, and the receiving host's
            ``t_arrived``, s since the epoch), or None when ``timeout_s`` passed or another
            thread closed the subscriber while this call waited.

        Raises
        ------
        RuntimeError
            The subscriber was closed before the call, or another thread is reading it.
        ProtocolError
            A bad message, with ``strict=True`` (else it is skipped and counted).
        """
        self._enter_call()
        try:
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            while not self._closed:
                self._watch()
                parts = self._recv_now()
                if parts is not None:
                    message = self._take(parts, time.time())
                    if message is not None:
                        return message
                    continue
                if not self._wait_readable(deadline):
                    return None
            return None
        finally:
            self._leave_call()

    def receive_latest(self, timeout_s: float = 0.0) -> dict[str, Message]:
        """Drain the socket; the newest valid message per topic (empty if none), except that
        ``"frame"`` is the newest margin's own frame when that frame was received (in this
        drain or one of the last few), so a display draws a margin over the image it was
        computed on.

        Waits up to ``timeout_s`` (s) for the first message, then takes everything already
        queued without waiting. Older messages of a topic are counted in
        ``stats.superseded``; gaps are still detected on every message. Closed by another
        thread while it waits, it returns empty.

        Raises
        ------
        RuntimeError
            The subscriber was closed before the call, or another thread is reading it.
        """
        self._enter_call()
        newest: dict[str, Message] = {}
        self.superseded_margins = []
        called = time.monotonic()
        try:
            backlog = self._drain(newest, timeout_s)
        finally:
            self._leave_call()
        looked = self._last_drain_end
        self._last_drain_end = time.monotonic()
        if backlog and looked is not None and called - looked > BACKLOG_GAP_S:
            # the caller did not look for a while (a display that froze): what was queued then
            # may have waited since it last looked, and ZeroMQ keeps the oldest at the
            # high-water mark, so the newest of it can be seconds old. Its age counts from when
            # the caller last looked (a lower bound on its arrival), so a display shows it
            # STALE, not as the present; the next drain's fresh data count from their arrival
            # (session 36: a display stalled 3-6 s showed margins 1.6-1.9 s old, no warning)
            self.last_message_time = time.time() - (called - looked)
        return newest

    def _drain(self, newest: dict[str, Message], timeout_s: float) -> bool:
        """Take every queued message into ``newest``; True when the first one was already
        queued when the call began (a backlog), False when it was waited for (or none)."""
        self._watch()
        parts = self._recv_now()
        backlog = parts is not None
        if parts is None and timeout_s > 0:
            if not self._wait_readable(time.monotonic() + timeout_s):
                return False
            parts = self._recv_now()
        while parts is not None:
            message = self._take(parts, time.time())
            if message is not None:
                if message.header.topic in newest:
                    self.stats.superseded += 1
                    if message.header.topic == "margin":
                        self.superseded_margins.append(newest["margin"].header)
                newest[message.header.topic] = message
                if message.header.topic == "frame":
                    key = (message.header.stream, message.header.frame_number)
                    self._recent_frames[key] = message
                    while len(self._recent_frames) > PAIRED_FRAMES_KEPT:
                        self._recent_frames.popitem(last=False)
            parts = self._recv_now()
        margin = newest.get("margin")
        if margin is not None:
            own = self._recent_frames.get((margin.header.stream, margin.header.frame_number))
            if own is not None:
                newest["frame"] = own
        return backlog and bool(newest)

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Close the sockets. Safe to call twice, and from any thread: a :meth:`receive` or
        :meth:`receive_latest` waiting in another thread returns (None / empty) within
        0.1 s and the sockets are closed as it returns (a ZeroMQ socket is never used by two
        threads at once). Any later call raises :class:`RuntimeError`."""
        with self._life:
            if self._closed:
                return
            self._closed = True
            if self._reader is None or self._reader is threading.current_thread():
                self._close_sockets()

    def _close_sockets(self) -> None:
        if self._sockets_closed:
            return
        self._sockets_closed = True
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
