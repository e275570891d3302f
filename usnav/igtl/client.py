"""OpenIGTLink client that stays connected: reconnects with exponential backoff, detects a
silent server (asks GET_STATUS, then reconnects) and sends a v2 STATUS on connect so a PLUS
server answers in header v2."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from usnav.igtl.codec import (
    Message,
    RawContent,
)
from usnav.igtl.connection import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_PORT,
    Connection,
    LinkState,
    LinkStats,
    log,
    status_message,
    warm_up,
)


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
            if self.header_version == 2:
                # As 3D Slicer: a v2 STATUS makes a PLUS server answer in v2 (with metadata).
                conn.send(status_message(metadata={"dummy": "dummy"}))  # queued until start
            # connected before the reader runs: a first message handled before the state
            # changed saw CONNECTING (the probe flickered streaming → no-signal → streaming)
            self._set_state(LinkState.CONNECTED)
            conn.start()
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
