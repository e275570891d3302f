"""OpenIGTLink server that serves several clients at once (like a PLUS server): each client
has its own bounded send queue and header version; peers beyond loopback only from an
allow-list; built-in answers to GET_STATUS and GET_<type>; a keep-alive STATUS."""

from __future__ import annotations

import collections
import contextlib
import errno
import ipaddress
import operator
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from usnav.errors import ConfigError, UsnavError
from usnav.frames import TransformStatus
from usnav.igtl.codec import (
    STATUS_NOT_FOUND,
    ImageContent,
    Message,
    PointContent,
    PolyDataContent,
    RawContent,
    StringContent,
    TransformContent,
    encode_parts,
)
from usnav.igtl.connection import (
    _LOG_ONCE,
    _POLL_S,
    DEFAULT_PORT,
    Connection,
    LinkState,
    LinkStats,
    log,
    status_message,
    warm_up,
)


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
    send_queue_messages, send_queue_bytes, send_timeout_s, body_timeout_s, max_message_bytes
        See :class:`Connection` (a peer trickling a message, slowloris, is closed after
        ``body_timeout_s``).
    name
        What the server is, in messages.
    port_option
        The command-line option that set ``port``, named when the port is taken.

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
        body_timeout_s: float = 5.0,
        max_message_bytes: int = 1024 * 1024,
        name: str = "OpenIGTLink server",
        port_option: str = "--port",
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
        self.port_option = port_option
        self.body_timeout_s = body_timeout_s
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
                hint = f"is another server using the port? choose another with {self.port_option}"
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
                body_timeout_s=self.body_timeout_s,
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
            if conn.version < 2:  # as broadcast: a v1 client cannot read an INVALID status
                found = [m for m in found if not _invalid_transform(m)]
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
    def broadcast(
        self, messages: Message | Sequence[Message], *, wait_s: float = 0.0, hold_new_s: float = 0.0
    ) -> int:
        """Send ``messages`` (one bundle) to every connected client.

        Each client gets it in its own header version; a client whose queue is full after
        ``wait_s`` misses this bundle (counted in its ``dropped_out``). A header-v1 client
        cannot be told a transform's status (metadata is v2's), so a TRANSFORM whose
        ``TransformStatus`` metadata is not OK is not sent to it — what PLUS's
        ``SendValidTransformsOnly`` does — rather than arrive looking valid.

        ``hold_new_s``: a client connected less than this long ago (s) that has sent nothing
        yet is skipped: until it speaks it counts as v1, and a v2 client (which says so on
        connecting) would get its first bundles without metadata — no statuses, frame
        numbers or fields. 0: every client gets every bundle.

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
        encoded: dict[int, tuple[list, int]] = {}
        delivered = 0
        now = time.monotonic()
        for conn in clients:
            if (
                hold_new_s > 0
                and conn.stats.messages_in == 0
                and now - conn.connected_at < hold_new_s
            ):
                continue  # still to say which header version it speaks
            version = conn.version
            if version not in encoded:
                kept = batch if version >= 2 else [m for m in batch if not _invalid_transform(m)]
                parts: list = []
                for m in kept:
                    parts.extend(encode_parts(m, version))
                encoded[version] = (parts, len(kept))
            parts, count = encoded[version]
            if count == 0 or conn.send_parts(parts, count, wait_s=wait_s):
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


def _invalid_transform(message: Message) -> bool:
    """A TRANSFORM whose metadata says it is not a valid pose: a ``TransformStatus`` word other
    than OK (INVALID, MISSING, PLUS's OUT_OF_VIEW, REQ_TIMEOUT...: ``TransformStatus.parse``)
    or ``TransformValid`` 0. Only INVALID itself was caught before, so a header-v1 client got
    a MISSING or OUT_OF_VIEW pose (a replay's held last matrix, say) looking valid."""
    if message.type != "TRANSFORM":
        return False
    word = message.metadata.get("TransformStatus")
    if word is not None and TransformStatus.parse(word) is not TransformStatus.OK:
        return True
    return message.metadata.get("TransformValid") == "0"
