"""OpenIGTLink over TCP: a connection, a reconnecting client and a multi-client server.

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
  counted per reason and logged once per peer and reason.

Header versions follow PLUS: a server answers each client in v1 until the client sends a v2
message; a client sends a v2 STATUS on connect (as 3D Slicer does) so a PLUS server switches to
v2 and sends its metadata (``TransformStatus``...).
"""

from __future__ import annotations

import collections
import contextlib
import enum
import errno
import ipaddress
import logging
import operator
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from usnav.defaults import IGTL_PORT
from usnav.devices.igtl.codec import (
    HEADER_SIZE,
    STATUS_NOT_FOUND,
    STATUS_OK,
    ImageContent,
    Message,
    PointContent,
    PolyDataContent,
    ProtocolError,
    RawContent,
    StatusContent,
    StringContent,
    TransformContent,
    crc64,
    decode_body,
    decode_header,
    encode_parts,
)
from usnav.errors import ConfigError, UsnavError

log = logging.getLogger("usnav.devices.igtl")

#: Default port of OpenIGTLink (PLUS, Slicer).
DEFAULT_PORT = IGTL_PORT
#: Default largest accepted message body: a 2048×2048×4-channel float32 frame fits.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_POLL_S = 0.2


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
    """Logs the first problem of each (peer, reason) at WARNING, repeats at DEBUG."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def __call__(self, peer: str, reason: str, detail: str) -> None:
        with self._lock:
            first = (peer, reason) not in self._seen
            self._seen.add((peer, reason))
        if first:
            log.warning(
                "OpenIGTLink peer %s: %s (%s); further ones are counted, not logged",
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
        A body that makes no progress for this long closes the connection.
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
        """Fill ``buffer``; returns bytes read (< len on EOF). Raises _Closed / _Stalled."""
        view = memoryview(buffer)
        got = 0
        last_progress = time.monotonic()
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
            got += n
            last_progress = self.last_receive = time.monotonic()
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
                f"no data for {self.body_timeout_s:.1f} s after {exc.args[0]} bytes",
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


# -- client --------------------------------------------------------------------------------
class LinkState(enum.Enum):
    """Connection state of a client (or of a server: LISTENING / CONNECTED)."""

    IDLE = "idle"
    CONNECTING = "connecting"
    LISTENING = "listening"
    CONNECTED = "connected"
    CLOSED = "closed"


@dataclass(frozen=True)
class ReconnectPolicy:
    """Exponential backoff between connection attempts, s."""

    initial_s: float = 0.05
    max_s: float = 1.0
    factor: float = 2.0

    def delays(self) -> Iterable[float]:
        delay = self.initial_s
        while True:
            yield delay
            delay = min(self.max_s, delay * self.factor)


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


class IgtlClient:
    """An OpenIGTLink client that stays connected: reconnects with backoff, detects silence.

    Parameters
    ----------
    host, port
        Server address.
    on_message
        Called in the receiving thread with every valid message.
    on_state
        Called with the new :class:`LinkState` whenever it changes.
    header_version
        2 (default): send v2 and a Slicer-like STATUS on connect so a PLUS server answers v2.
    receive_timeout_s
        Silence after which the client asks GET_STATUS; after twice this it reconnects.
    reconnect
        Backoff policy.
    connect_timeout_s
        TCP connect timeout.
    max_message_bytes
        Largest accepted body.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        on_message: Callable[[Message], None],
        on_state: Callable[[LinkState], None] | None = None,
        header_version: int = 2,
        receive_timeout_s: float = 2.0,
        reconnect: ReconnectPolicy | None = None,
        connect_timeout_s: float = 2.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        send_queue_messages: int = 64,
    ):
        self.host = host
        self.port = port
        self._on_message = on_message
        self._on_state = on_state
        self.header_version = header_version
        self.receive_timeout_s = receive_timeout_s
        self.reconnect = reconnect or ReconnectPolicy()
        self.connect_timeout_s = connect_timeout_s
        self.max_message_bytes = max_message_bytes
        self.send_queue_messages = send_queue_messages
        self.state = LinkState.IDLE
        self.stats = LinkStats()
        self.connections = 0
        self.last_error: str | None = None
        self._connection: Connection | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def peer(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> IgtlClient:
        """Start connecting in a background thread (returns at once)."""
        warm_up()
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"igtl-client {self.peer}", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Disconnect and stop reconnecting (idempotent)."""
        self._stop.set()
        self._wake.set()
        conn = self._connection
        if conn is not None:
            conn.close("client stopped")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None
        self._set_state(LinkState.CLOSED)

    close = stop

    def send(self, message: Message | Sequence[Message], *, wait_s: float = 0.0) -> bool:
        """Send to the server if connected; False when not connected or dropped."""
        conn = self._connection
        if conn is None or not conn.alive:
            return False
        return conn.send(message, wait_s=wait_s)

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until connected (True) or ``timeout_s`` passed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.state is LinkState.CONNECTED:
                return True
            time.sleep(0.01)
        return self.state is LinkState.CONNECTED

    def _set_state(self, state: LinkState) -> None:
        with self._lock:
            if state is self.state:
                return
            self.state = state
        if self._on_state is not None:
            try:
                self._on_state(state)
            except Exception:
                log.exception("OpenIGTLink client %s: state handler failed", self.peer)

    def _run(self) -> None:
        delays = iter(self.reconnect.delays())
        while not self._stop.is_set():
            self._set_state(LinkState.CONNECTING)
            try:
                sock = socket.create_connection(
                    (self.host, self.port), timeout=self.connect_timeout_s
                )
            except OSError as exc:
                self.last_error = f"cannot connect to {self.peer}: {exc}"
                log.debug(self.last_error)
                self._wake.wait(next(delays))
                self._wake.clear()
                continue
            delays = iter(self.reconnect.delays())
            conn = Connection(
                sock,
                self.peer,
                on_message=lambda _c, m: self._on_message(m),
                version=self.header_version,
                max_message_bytes=self.max_message_bytes,
                send_queue_messages=self.send_queue_messages,
            )
            self._connection = conn
            self.connections += 1
            conn.start()
            if self.header_version == 2:
                # As 3D Slicer: a v2 STATUS makes a PLUS server answer in v2 (with metadata).
                conn.send(status_message(metadata={"dummy": "dummy"}))
            self._set_state(LinkState.CONNECTED)
            asked = False
            while conn.alive and not self._stop.is_set():
                time.sleep(0.02)
                silent = time.monotonic() - conn.last_receive
                if silent > 2 * self.receive_timeout_s:
                    conn.close(f"no data for {silent:.1f} s (peer silent)")
                elif silent > self.receive_timeout_s and not asked:
                    conn.send(Message("GET_STATUS", "", RawContent()))
                    asked = True
                elif silent < self.receive_timeout_s:
                    asked = False
            conn.close("client stopped" if self._stop.is_set() else "connection lost")
            self.last_error = conn.close_reason
            self.stats.add(conn.stats)
            self._connection = None
            if not self._stop.is_set():
                self._set_state(LinkState.CONNECTING)
                self._wake.wait(next(delays))
                self._wake.clear()

    def link_stats(self) -> LinkStats:
        """Counters over all connections so far, including the current one."""
        total = LinkStats()
        total.add(self.stats)
        conn = self._connection
        if conn is not None:
            total.add(conn.stats)
        return total


# -- server --------------------------------------------------------------------------------
def _parse_allow(allow: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    networks = []
    for entry in allow:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as exc:
            raise ConfigError(
                "allow",
                f"{entry!r} is not an IP address or network",
                "write e.g. 192.168.1.20 or 192.168.1.0/24",
            ) from exc
    return networks


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class IgtlServer:
    """An OpenIGTLink server that serves several clients at once (like a PLUS server).

    Use it to stream to 3D Slicer or any client: :meth:`broadcast` (or :meth:`send_image`,
    :meth:`send_transform`...) goes to every connected client, each with its own bounded send
    queue, in the header version that client speaks.

    Parameters
    ----------
    host
        Interface to listen on; ``127.0.0.1`` by default. Any other interface requires
        ``allow``.
    port
        TCP port (0 = any free port; read :attr:`port` after :meth:`start`).
    allow
        Peer addresses or networks (``"192.168.1.20"``, ``"10.0.0.0/24"``) allowed to connect
        in addition to loopback peers. Others are refused and counted.
    allow_loopback
        Accept peers on this machine (default True).
    max_clients
        More simultaneous clients are refused.
    keepalive_s
        A client that got nothing for this long is sent a STATUS OK (PLUS keep-alive).
    on_message
        Called with ``(peer, message)`` for every message a client sends (after the built-in
        replies to GET_STATUS / GET_<type>).
    send_queue_messages, send_queue_bytes, send_timeout_s, max_message_bytes
        See :class:`Connection`.

    Raises
    ------
    ConfigError
        A non-loopback ``host`` without an allow-list, or a bad allow-list entry.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        allow: Iterable[str] = (),
        allow_loopback: bool = True,
        max_clients: int = 16,
        keepalive_s: float = 0.5,
        on_message: Callable[[str, Message], None] | None = None,
        send_queue_messages: int = 256,
        send_queue_bytes: int = 256 * 1024 * 1024,
        send_timeout_s: float = 5.0,
        max_message_bytes: int = 1024 * 1024,
        name: str = "OpenIGTLink server",
    ):
        try:
            valid = 0 <= operator.index(port) <= 65535
        except TypeError:
            valid = False
        if not valid:
            raise ConfigError(
                f"{name} port", f"{port!r} is not a TCP port", "use 1-65535 (0: any free port)"
            )
        port = operator.index(port)
        self.allow = _parse_allow(allow)
        self.allow_loopback = allow_loopback
        if not _is_loopback(host) and not self.allow:
            raise ConfigError(
                f"{name} host",
                f"listening on {host!r} needs an allow-list of peer addresses",
                'give --allow ADDRESS (or allow = ["ADDRESS"] in the config), or keep '
                "host 127.0.0.1",
            )
        self.host = host
        self.port = port
        self.max_clients = max_clients
        self.keepalive_s = keepalive_s
        self.on_message = on_message
        self.send_queue_messages = send_queue_messages
        self.send_queue_bytes = send_queue_bytes
        self.send_timeout_s = send_timeout_s
        self.max_message_bytes = max_message_bytes
        self.name = name
        self.state = LinkState.IDLE
        self.refused = collections.Counter[str]()
        self._closed_stats = LinkStats()
        self._clients: dict[str, Connection] = {}
        self._latest: dict[tuple[str, str], Message] = {}
        self._lock = threading.Lock()
        self._client_event = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> IgtlServer:
        """Bind and listen; accept clients in a background thread.

        Raises
        ------
        UsnavError
            The address is in use or cannot be bound.
        """
        if self._listener is not None:
            return self
        warm_up()
        listener = socket.socket(
            socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM
        )
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self.port))
        except OSError as exc:
            listener.close()
            if isinstance(exc, socket.gaierror):
                hint = "check the host name or give an IP address of this machine"
            elif exc.errno == errno.EADDRINUSE:
                hint = "is another server using the port? choose another with --port"
            else:
                hint = "give an address of this machine (127.0.0.1 by default) and a free port"
            raise UsnavError(
                f"{self.name}: cannot listen on {self.host}:{self.port}: "
                f"{exc.strerror or exc} — {hint}"
            ) from exc
        listener.listen(64)
        listener.settimeout(_POLL_S)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._stop.clear()
        self.state = LinkState.LISTENING
        for target, label in ((self._accept_loop, "accept"), (self._keepalive_loop, "keepalive")):
            t = threading.Thread(
                target=target, name=f"igtl-server-{label} :{self.port}", daemon=True
            )
            t.start()
            self._threads.append(t)
        log.info("%s listening on %s:%d", self.name, self.host, self.port)
        return self

    def stop(self) -> None:
        """Close every client and the listening socket (idempotent)."""
        self._stop.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            # Stop accepting first, so no client reconnects into a closing server.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=2)
        self._threads.clear()
        with self._lock:
            clients = list(self._clients.values())
        for conn in clients:
            conn.close("server stopped")
        self.state = LinkState.CLOSED

    close = stop

    def __enter__(self) -> IgtlServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- clients ---------------------------------------------------------------------------
    @property
    def clients(self) -> list[str]:
        """``host:port`` of the connected clients."""
        with self._lock:
            return [p for p, c in self._clients.items() if c.alive]

    def wait_for_clients(self, count: int = 1, timeout_s: float | None = None) -> bool:
        """Block until at least ``count`` clients are connected (or ``timeout_s`` passed)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._client_event:
            while len(self._clients) < count and not self._stop.is_set():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._client_event.wait(_POLL_S if remaining is None else min(remaining, _POLL_S))
            return len(self._clients) >= count

    def client_versions(self) -> dict[str, tuple[int, int]]:
        """``peer -> (header version, messages received from it)`` of connected clients."""
        with self._lock:
            return {p: (c.version, c.stats.messages_in) for p, c in self._clients.items()}

    def stats(self) -> LinkStats:
        """Counters over all clients, past and present."""
        total = LinkStats()
        with self._lock:
            total.add(self._closed_stats)
            for conn in self._clients.values():
                total.add(conn.stats)
        return total

    def _allowed(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return (ip.is_loopback and self.allow_loopback) or any(ip in net for net in self.allow)

    def _accept_loop(self) -> None:
        listener = self._listener
        while listener is not None and not self._stop.is_set():
            try:
                sock, address = listener.accept()
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(_POLL_S)
                continue
            peer = f"{address[0]}:{address[1]}"
            if not self._allowed(address[0]):
                self.refused["not in allow-list"] += 1
                _LOG_ONCE(address[0], "connection refused", "peer is not in the allow-list")
                sock.close()
                continue
            with self._lock:
                full = len(self._clients) >= self.max_clients
            if full:
                self.refused["too many clients"] += 1
                _LOG_ONCE(peer, "connection refused", f"already {self.max_clients} clients")
                sock.close()
                continue
            conn = Connection(
                sock,
                peer,
                on_message=self._handle,
                on_close=self._closed,
                version=1,
                negotiate=True,
                max_message_bytes=self.max_message_bytes,
                send_queue_messages=self.send_queue_messages,
                send_queue_bytes=self.send_queue_bytes,
                send_timeout_s=self.send_timeout_s,
            )
            with self._lock:
                self._clients[peer] = conn
                self._client_event.notify_all()
            conn.start()
            log.info("%s: client %s connected", self.name, peer)

    def _closed(self, conn: Connection, reason: str) -> None:
        with self._lock:
            if self._clients.get(conn.peer) is conn:
                del self._clients[conn.peer]
                self._closed_stats.add(conn.stats)
            self._client_event.notify_all()

    def _keepalive_loop(self) -> None:
        while not self._stop.wait(min(self.keepalive_s, _POLL_S) / 2):
            now = time.monotonic()
            with self._lock:
                idle = [
                    c
                    for c in self._clients.values()
                    if c.alive and not c.queued and now - c.last_send > self.keepalive_s
                ]
            for conn in idle:
                conn.last_send = now
                conn.send(status_message())

    def _handle(self, conn: Connection, message: Message) -> None:
        kind = message.type
        if kind == "GET_STATUS":
            conn.send(status_message(device_name=message.device_name))
        elif kind.startswith("GET_"):
            wanted = {"GET_TRANS": "TRANSFORM", "GET_TRANSFOR": "TRANSFORM"}.get(kind, kind[4:])
            with self._lock:
                found = [
                    m
                    for (t, n), m in self._latest.items()
                    if t == wanted and (not message.device_name or n == message.device_name)
                ]
            if found:
                conn.send(found)
            else:
                conn.send(
                    status_message(
                        STATUS_NOT_FOUND,
                        message.device_name,
                        f"no {wanted} {message.device_name!r} to send",
                    )
                )
        elif kind.startswith(("STT_", "STP_")):
            # Everything is streamed to every client already; say so with RTS (1 = error for
            # types this server does not stream on request).
            conn.send(Message("RTS_" + kind[4:], message.device_name, RawContent(b"\x01")))
        if self.on_message is not None:
            self.on_message(conn.peer, message)

    # -- sending ---------------------------------------------------------------------------
    def broadcast(self, messages: Message | Sequence[Message], *, wait_s: float = 0.0) -> int:
        """Send ``messages`` (one bundle) to every connected client.

        Each client gets it in its own header version; a client whose queue is full after
        ``wait_s`` misses this bundle (counted in its ``dropped_out``).

        Returns
        -------
        int
            Number of clients the bundle was queued for.
        """
        batch = [messages] if isinstance(messages, Message) else list(messages)
        with self._lock:
            for m in batch:
                self._latest[(m.type, m.device_name)] = m
            clients = [c for c in self._clients.values() if c.alive]
        encoded: dict[int, list] = {}
        delivered = 0
        for conn in clients:
            version = conn.version
            if version not in encoded:
                parts: list = []
                for m in batch:
                    parts.extend(encode_parts(m, version))
                encoded[version] = parts
            if conn.send_parts(encoded[version], len(batch), wait_s=wait_s):
                delivered += 1
        return delivered

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every client's send queue is empty."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            clients = list(self._clients.values())
        return all(c.flush(max(0.0, deadline - time.monotonic())) for c in clients)

    def send_image(
        self,
        device_name: str,
        image: np.ndarray,
        ijk_to_ras: np.ndarray,
        *,
        timestamp: float | None = None,
        metadata: dict[str, str] | None = None,
        channels: bool = False,
    ) -> int:
        """Send an IMAGE to every client (see :class:`ImageContent`; matrix in RAS, mm)."""
        return self.broadcast(
            Message(
                "IMAGE",
                device_name,
                ImageContent.from_array(image, ijk_to_ras, channels=channels),
                time.time() if timestamp is None else timestamp,
                dict(metadata or {}),
            )
        )

    def send_transform(
        self,
        device_name: str,
        matrix: np.ndarray,
        *,
        timestamp: float | None = None,
        status: str = "OK",
        metadata: dict[str, str] | None = None,
    ) -> int:
        """Send a TRANSFORM to every client, with PLUS's ``TransformStatus`` metadata."""
        meta = {"TransformStatus": status, "TransformValid": "1" if status == "OK" else "0"}
        meta.update(metadata or {})
        return self.broadcast(
            Message(
                "TRANSFORM",
                device_name,
                TransformContent(matrix),
                time.time() if timestamp is None else timestamp,
                meta,
            )
        )

    def send_string(self, device_name: str, text: str) -> int:
        """Send a STRING (UTF-8 when not ASCII) to every client."""
        encoding = 3 if text.isascii() else 106
        return self.broadcast(
            Message("STRING", device_name, StringContent(text, encoding), time.time())
        )

    def send_points(self, device_name: str, points: PointContent) -> int:
        """Send a POINT list to every client."""
        return self.broadcast(Message("POINT", device_name, points, time.time()))

    def send_polydata(self, device_name: str, polydata: PolyDataContent) -> int:
        """Send a POLYDATA (e.g. a tumor surface, RAS mm) to every client."""
        return self.broadcast(Message("POLYDATA", device_name, polydata, time.time()))


def port_is_free(host: str, port: int) -> bool:
    """True if nothing listens on ``host:port``."""
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) != 0


def wait_readable(sock: socket.socket, timeout_s: float) -> bool:
    """True if ``sock`` has data (or EOF) within ``timeout_s``."""
    readable, _, _ = select.select([sock], [], [], timeout_s)
    return bool(readable)
