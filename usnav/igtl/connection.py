"""OpenIGTLink over TCP: one connection (reader and writer threads, bounded send queue).

The reconnecting client is in :mod:`usnav.igtl.client`, the multi-client server in
:mod:`usnav.igtl.server`.

Design (against pyigtl's measured faults, ``docs/architecture.md``):

- every received message is delivered, in order, to a callback (nothing is "latest only");
- each connection has a reader thread and a writer thread; sends go through a bounded queue
  (messages and bytes) and a full queue drops the new bundle and counts it — a slow peer never
  blocks the caller, and a peer that stops reading is disconnected after ``send_timeout_s``;
- a closed peer is seen at once (EOF or a send error), a silent one after ``receive_timeout_s``
  (the client then asks ``GET_STATUS`` and gives up after a second period);
- the client reconnects with exponential backoff; the server serves many clients at once;
- no signal handlers, so everything runs outside the main thread;
- every message's CRC is verified; malformed input is dropped or the connection closed,
  counted per reason and logged once per peer host and reason (bounded).

Header versions follow PLUS: a server answers each client in v1 until the client sends a v2
message; a client sends a v2 STATUS on connect (as 3D Slicer does) so a PLUS server switches to
v2 and sends its metadata (``TransformStatus``...).
"""

from __future__ import annotations

import collections
import contextlib
import enum
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from usnav.defaults import IGTL_PORT
from usnav.igtl.codec import (
    HEADER_SIZE,
    STATUS_OK,
    Message,
    ProtocolError,
    StatusContent,
    crc64,
    decode_body,
    decode_header,
    encode_parts,
)

log = logging.getLogger("usnav.igtl")
#: Default port of OpenIGTLink (PLUS, Slicer).
DEFAULT_PORT = IGTL_PORT
#: Default largest accepted message body: a 2048×2048×4-channel float32 frame fits.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_POLL_S = 0.2
#: Slowest accepted delivery of a message once started, bytes/s (on top of the body timeout).
MIN_RATE_BYTES_S = 64 * 1024


@dataclass
class LinkStats:
    """Counters of one connection (or summed over a server's connections)."""

    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    dropped_in: collections.Counter[str] = field(default_factory=collections.Counter)
    dropped_out: int = 0
    disconnects: int = 0

    def add(self, other: LinkStats) -> None:
        self.messages_in += other.messages_in
        self.messages_out += other.messages_out
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.dropped_in.update(other.dropped_in)
        self.dropped_out += other.dropped_out
        self.disconnects += other.disconnects


def warm_up() -> None:
    """Load the CRC kernel (JIT or cache) now, outside the frame path."""
    crc64(bytes(64))
    crc64(bytes(8192))


class _OnceLogger:
    """Logs the first problem of each (peer host, reason) at WARNING, repeats at DEBUG.

    Keyed by the host, not host:port: a peer that reconnects gets a new port each time, and
    ``usnav soak igtl`` showed 17,000 warnings (and as many remembered keys) for 25,000 bad
    messages from one reconnecting host. The memory of what was logged is bounded.
    """

    MAX_KEYS = 4096

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def __call__(self, peer: str, reason: str, detail: str) -> None:
        key = (peer.rsplit(":", 1)[0], reason)
        with self._lock:
            first = key not in self._seen
            if first and len(self._seen) >= self.MAX_KEYS:
                self._seen.clear()
            self._seen.add(key)
        if first:
            log.warning(
                "OpenIGTLink peer %s: %s (%s); further ones from this host are counted, not logged",
                peer,
                reason,
                detail,
            )
        else:
            log.debug("OpenIGTLink peer %s: %s (%s)", peer, reason, detail)


_LOG_ONCE = _OnceLogger()


class Connection:
    """One TCP peer speaking OpenIGTLink.

    Parameters
    ----------
    sock
        A connected socket (the connection owns it from now on).
    peer
        ``host:port`` of the peer, for messages.
    on_message
        Called in the reader thread with ``(connection, message)`` for every valid message.
    on_close
        Called once, in whichever thread closes, with ``(connection, reason)``.
    version
        Header version to send with (raised to the peer's version when ``negotiate``).
    negotiate
        Server behaviour (PLUS): raise :attr:`version` to min(2, version of a received message).
    max_message_bytes
        Largest body accepted; a larger claim closes the connection before allocating.
    send_queue_messages, send_queue_bytes
        Bounds of the send queue; a bundle that does not fit is dropped and counted.
    send_timeout_s
        A peer that takes no bytes for this long is disconnected.
    body_timeout_s
        A message that makes no progress for this long, or takes longer than this plus its
        size at :data:`MIN_RATE_BYTES_S` once started, closes the connection.
    verify_crc
        Check the CRC of every body (on by default; off only for measurements).
    """

    def __init__(
        self,
        sock: socket.socket,
        peer: str,
        *,
        on_message: Callable[[Connection, Message], None],
        on_close: Callable[[Connection, str], None] | None = None,
        version: int = 1,
        negotiate: bool = False,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        send_queue_messages: int = 256,
        send_queue_bytes: int = 256 * 1024 * 1024,
        send_timeout_s: float = 5.0,
        body_timeout_s: float = 5.0,
        verify_crc: bool = True,
    ):
        self.sock = sock
        self.peer = peer
        self.version = version
        self._negotiate = negotiate
        self._on_message = on_message
        self._on_close = on_close
        self.max_message_bytes = max_message_bytes
        self.send_queue_messages = send_queue_messages
        self.send_queue_bytes = send_queue_bytes
        self.send_timeout_s = send_timeout_s
        self.body_timeout_s = body_timeout_s
        self.verify_crc = verify_crc
        self.stats = LinkStats()
        self.last_receive = time.monotonic()
        self.last_send = time.monotonic()
        self.connected_at = time.monotonic()  # when this connection was made
        self.close_reason: str | None = None
        self._queue: collections.deque[tuple[list, int, int]] = collections.deque()
        self._queued_bytes = 0
        self._cond = threading.Condition()
        self._closed = threading.Event()
        self._close_lock = threading.Lock()
        sock.settimeout(_POLL_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = threading.Thread(
            target=self._read_loop, name=f"igtl-read {peer}", daemon=True
        )
        self._writer = threading.Thread(
            target=self._write_loop, name=f"igtl-write {peer}", daemon=True
        )

    def start(self) -> Connection:
        self._reader.start()
        self._writer.start()
        return self

    @property
    def alive(self) -> bool:
        return not self._closed.is_set()

    # -- sending ---------------------------------------------------------------------------
    def send(self, messages: Message | Sequence[Message], *, wait_s: float = 0.0) -> bool:
        """Queue ``messages`` as one bundle (all or none are sent).

        Parameters
        ----------
        messages
            One message or several that belong together (e.g. a frame's TRANSFORMs + IMAGE).
        wait_s
            How long to wait for room in the queue; 0 drops at once when full.

        Returns
        -------
        bool
            False when the bundle was dropped (queue full or connection closed).
        """
        batch = [messages] if isinstance(messages, Message) else list(messages)
        parts: list = []
        for m in batch:
            parts.extend(encode_parts(m, self.version))
        return self.send_parts(parts, len(batch), wait_s=wait_s)

    def send_parts(self, parts: list, count: int, *, wait_s: float = 0.0) -> bool:
        """Queue already-encoded buffers holding ``count`` messages (see :meth:`send`)."""
        size = sum(memoryview(p).nbytes for p in parts)
        deadline = time.monotonic() + wait_s
        with self._cond:
            while True:
                if self._closed.is_set():
                    self.stats.dropped_out += count
                    return False
                fits = len(self._queue) < self.send_queue_messages and (
                    self._queued_bytes + size <= self.send_queue_bytes or not self._queue
                )
                if fits:
                    self._queue.append((parts, size, count))
                    self._queued_bytes += size
                    self._cond.notify_all()
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.stats.dropped_out += count
                    _LOG_ONCE(self.peer, "send queue full", "slow peer; dropping messages for it")
                    return False
                self._cond.wait(min(remaining, _POLL_S))

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until the send queue is empty (True) or ``timeout_s`` passed (False)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._queue and not self._closed.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, _POLL_S))
            return not self._queue

    @property
    def queued(self) -> int:
        """Bundles waiting to be sent."""
        return len(self._queue)

    def _write_loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._closed.is_set():
                        self._cond.wait(_POLL_S)
                    if self._closed.is_set():
                        return
                    parts, size, count = self._queue[0]
                self._send_all(parts)
                with self._cond:
                    if not self._queue or self._queue[0][0] is not parts:
                        return  # closed (and the queue cleared) while sending
                    self._queue.popleft()
                    self._queued_bytes -= size
                    self.stats.messages_out += count
                    self.stats.bytes_out += size
                    self.last_send = time.monotonic()
                    self._cond.notify_all()
        except _Closed:
            return
        except OSError as exc:
            self.close(f"send failed: {exc}")

    def _send_all(self, parts: list) -> None:
        views = [memoryview(p).cast("B") for p in parts if memoryview(p).nbytes]
        last_progress = time.monotonic()
        while views:
            if self._closed.is_set():
                raise _Closed
            try:
                sent = self.sock.sendmsg(views[:64])
            except (TimeoutError, BlockingIOError, InterruptedError):
                sent = 0
            if sent == 0:
                if time.monotonic() - last_progress > self.send_timeout_s:
                    self.close(f"peer took no data for {self.send_timeout_s:.1f} s")
                    raise _Closed
                continue
            last_progress = time.monotonic()
            while sent and views:
                if sent >= len(views[0]):
                    sent -= len(views[0])
                    views.pop(0)
                else:
                    views[0] = views[0][sent:]
                    sent = 0

    # -- receiving -------------------------------------------------------------------------
    def _recv_exact(self, buffer: bytearray | memoryview, timeout_s: float | None) -> int:
        """Fill ``buffer``; returns bytes read (< len on EOF). Raises _Closed / _Stalled.

        Once the first byte is in, the whole buffer must arrive within ``timeout_s`` plus its
        size at :data:`MIN_RATE_BYTES_S` (a trickle of a byte a second, slowloris, would
        otherwise hold the connection and its threads forever), and never pause longer than
        ``timeout_s``.
        """
        view = memoryview(buffer)
        got = 0
        last_progress = time.monotonic()
        budget_s = None if timeout_s is None else timeout_s + len(view) / MIN_RATE_BYTES_S
        started = 0.0
        while got < len(view):
            if self._closed.is_set():
                raise _Closed
            try:
                n = self.sock.recv_into(view[got:])
            except (TimeoutError, BlockingIOError, InterruptedError):
                if timeout_s is not None and got and time.monotonic() - last_progress > timeout_s:
                    raise _Stalled(got) from None
                continue
            if n == 0:
                return got
            if not got:
                started = time.monotonic()
            got += n
            last_progress = self.last_receive = time.monotonic()
            if budget_s is not None and got < len(view) and last_progress - started > budget_s:
                raise _Stalled(got)
        return got

    def _read_loop(self) -> None:
        header_buf = bytearray(HEADER_SIZE)
        try:
            while not self._closed.is_set():
                got = self._recv_exact(header_buf, self.body_timeout_s)
                if got < HEADER_SIZE:
                    if got:
                        self._count_in("truncated header", f"{got} of 58 bytes, then EOF")
                    self.close("peer closed the connection")
                    return
                try:
                    header = decode_header(header_buf, self.max_message_bytes)
                except ProtocolError as exc:
                    self._count_in(exc.reason, exc.detail)
                    self.close(f"{exc.reason}: {exc.detail}")
                    return
                body = bytearray(header.body_size)
                got = self._recv_exact(body, self.body_timeout_s) if header.body_size else 0
                if got < header.body_size:
                    self._count_in(
                        "truncated body",
                        f"{header.type}: {got} of {header.body_size} bytes, then EOF",
                    )
                    self.close("peer closed the connection mid-message")
                    return
                self.stats.bytes_in += HEADER_SIZE + header.body_size
                try:
                    message = decode_body(header, body, verify_crc=self.verify_crc)
                except ProtocolError as exc:
                    self._count_in(exc.reason, exc.detail)
                    if exc.fatal:
                        self.close(f"{exc.reason}: {exc.detail}")
                        return
                    continue
                self.stats.messages_in += 1
                if self._negotiate and message.version > self.version:
                    self.version = min(2, message.version)
                try:
                    self._on_message(self, message)
                except Exception:  # a consumer bug must not kill the connection
                    log.exception(
                        "OpenIGTLink peer %s: handler failed on %s %r",
                        self.peer,
                        message.type,
                        message.device_name,
                    )
        except _Closed:
            return
        except _Stalled as exc:
            self._count_in(
                "stalled message",
                f"no data for {self.body_timeout_s:.1f} s, or too slow to finish, after "
                f"{exc.args[0]} bytes",
            )
            self.close("peer stalled mid-message")
        except OSError as exc:
            self.close(f"receive failed: {exc}")

    def _count_in(self, reason: str, detail: str) -> None:
        self.stats.dropped_in[reason] += 1
        _LOG_ONCE(self.peer, reason, detail)

    # -- closing ---------------------------------------------------------------------------
    def close(self, reason: str = "closed locally") -> None:
        """Close the connection (idempotent, callable from any thread)."""
        with self._close_lock:
            if self._closed.is_set():
                return
            self.close_reason = reason
            self.stats.disconnects += 1
            self._closed.set()
        with self._cond:
            self.stats.dropped_out += sum(c for _, _, c in self._queue)
            self._queue.clear()
            self._queued_bytes = 0
            self._cond.notify_all()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        log.info("OpenIGTLink peer %s: connection closed (%s)", self.peer, reason)
        if self._on_close is not None:
            try:
                self._on_close(self, reason)
            except Exception:
                log.exception("OpenIGTLink peer %s: close handler failed", self.peer)
        current = threading.current_thread()
        for t in (self._reader, self._writer):
            if t is not current and t.is_alive():
                t.join(timeout=2 * _POLL_S + 0.5)
        if current not in (self._reader, self._writer):
            self.sock.close()
        else:
            threading.Thread(target=self._late_close, daemon=True).start()

    def _late_close(self) -> None:
        for t in (self._reader, self._writer):
            if t is not threading.current_thread() and t.is_alive():
                t.join(timeout=2 * _POLL_S + 0.5)
        self.sock.close()


class _Closed(Exception):
    pass


class _Stalled(Exception):
    pass


class LinkState(enum.Enum):
    """Connection state of a client (or of a server: LISTENING / CONNECTED)."""

    IDLE = "idle"
    CONNECTING = "connecting"
    LISTENING = "listening"
    CONNECTED = "connected"
    CLOSED = "closed"


def status_message(
    code: int = STATUS_OK,
    device_name: str = "",
    message: str = "",
    metadata: dict[str, str] | None = None,
) -> Message:
    """A STATUS message (code 1 = OK)."""
    return Message(
        "STATUS", device_name, StatusContent(code, 0, "", message), metadata=dict(metadata or {})
    )
