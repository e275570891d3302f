"""The one device interface every source and server in usnav implements.

A device is used the same way whether it is a probe client, a playback server or the
simulator::

    with ProbeClient(config) as probe:          # connect() + start() ... close()
        for frame in probe.frames(timeout_s=5):
            ...

Life cycle: :meth:`Device.connect` opens the link (a client starts connecting, a server
binds), :meth:`Device.start` begins the flow of frames, :meth:`Device.stop` pauses it (the
link stays up), :meth:`Device.close` releases everything. All four are idempotent and may be
called from any thread. The state is explicit (:class:`DeviceState`) and observable: read
:attr:`Device.state` or register a listener with :meth:`Device.add_state_listener`.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("usnav.devices")


class DeviceState(enum.Enum):
    """Where a device is in its life cycle.

    ``IDLE``: created, nothing opened. ``CONNECTING``: a client trying to reach its server
    (also while reconnecting). ``LISTENING``: a server waiting for its first client.
    ``STREAMING``: frames are flowing. ``NO_SIGNAL``: connected, but no frame within the
    device's timeout (a frozen probe, a paused server). ``STOPPED``: connected, frame flow
    paused by :meth:`Device.stop`. ``FINISHED``: a playback reached the end of its recording.
    ``CLOSED``: released.
    """

    IDLE = "idle"
    CONNECTING = "connecting"
    LISTENING = "listening"
    STREAMING = "streaming"
    NO_SIGNAL = "no-signal"
    STOPPED = "stopped"
    FINISHED = "finished"
    CLOSED = "closed"


@dataclass(frozen=True)
class StateChange:
    """One state transition, with the host time it happened (s since the epoch)."""

    old: DeviceState
    new: DeviceState
    time: float
    reason: str = ""


class Device(ABC):
    """Base class: explicit state, listeners, context manager, idempotent life cycle.

    Subclasses implement :meth:`_connect`, :meth:`_start`, :meth:`_stop`, :meth:`_close` and
    call :meth:`_set_state` when their state changes.
    """

    def __init__(self, name: str):
        self.name = name
        self._state = DeviceState.IDLE
        self._state_lock = threading.Lock()
        self._state_changed = threading.Condition(self._state_lock)
        self._listeners: list[Callable[[StateChange], None]] = []
        self.history: list[StateChange] = []
        self._connected = False
        self._started = False

    # -- state -----------------------------------------------------------------------------
    @property
    def state(self) -> DeviceState:
        """The current state."""
        return self._state

    def add_state_listener(self, listener: Callable[[StateChange], None]) -> None:
        """Call ``listener(change)`` on every state change (from the device's threads)."""
        self._listeners.append(listener)

    def wait_for_state(self, *states: DeviceState, timeout_s: float | None = None) -> bool:
        """Block until the state is one of ``states`` (True) or ``timeout_s`` passed."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._state_changed:
            while self._state not in states:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._state_changed.wait(0.1 if remaining is None else min(remaining, 0.1))
            return True

    def _set_state(self, new: DeviceState, reason: str = "") -> None:
        with self._state_changed:
            old = self._state
            if old is new or old is DeviceState.CLOSED:
                return
            self._state = new
            change = StateChange(old, new, time.time(), reason)
            self.history.append(change)
            del self.history[:-256]
            self._state_changed.notify_all()
        log.info(
            "%s: %s -> %s%s", self.name, old.value, new.value, f" ({reason})" if reason else ""
        )
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                log.exception("%s: state listener failed", self.name)

    # -- life cycle ------------------------------------------------------------------------
    def connect(self) -> Device:
        """Open the link (a client starts connecting in the background; a server binds)."""
        if self._state is DeviceState.CLOSED:
            raise RuntimeError(f"{self.name} is closed; create a new device")
        if not self._connected:
            self._connect()
            self._connected = True
        return self

    def start(self) -> Device:
        """Begin the flow of frames (connects first if needed)."""
        self.connect()
        if not self._started:
            self._start()
            self._started = True
        return self

    def stop(self) -> None:
        """Pause the flow of frames; the link stays open."""
        if self._started and self._state is not DeviceState.CLOSED:
            self._stop()
            self._started = False

    def close(self) -> None:
        """Release sockets and threads (idempotent)."""
        if self._state is DeviceState.CLOSED:
            return
        try:
            self._close()
        finally:
            self._set_state(DeviceState.CLOSED)
            self._started = False

    def __enter__(self) -> Device:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def _connect(self) -> None: ...

    @abstractmethod
    def _start(self) -> None: ...

    @abstractmethod
    def _stop(self) -> None: ...

    @abstractmethod
    def _close(self) -> None: ...
