"""The one device interface every source and server in usnav implements.

A device is used the same way whether it is a probe client or a playback server::

    with ProbeClient(config) as probe:          # connect() + start() ... close()
        for frame in probe.frames(timeout_s=5):
            ...

Life cycle: :meth:`Device.connect` opens the link (a client starts connecting, a server
binds), :meth:`Device.start` begins the flow of frames, :meth:`Device.stop` pauses it (the
link stays up), :meth:`Device.close` releases everything. All four are idempotent and may be
called from any thread (they are serialised: two threads connecting at once bind once), also
from a state listener or a frame callback. The state is explicit (:class:`DeviceState`) and
observable: read :attr:`Device.state` or register a listener with
:meth:`Device.add_state_listener`.

Every call is valid in every state except on a closed device: ``connect()`` and ``start()``
after ``close()`` raise :class:`RuntimeError` naming the device and saying to create a new
one; ``stop()`` and ``close()`` on a closed device do nothing. ``start()`` before
``connect()`` connects first; ``stop()`` before ``start()`` does nothing. Leaving a ``with``
block, by an exception or Ctrl-C too, closes the device (the exception propagates).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

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
        self._closing = False
        # connect/start/stop run one at a time (two threads connecting at once bound a
        # server's port twice); close() takes it only to mark the device closing, so a
        # listener or callback running in a device thread may close it
        self._life = threading.RLock()

    # -- state -----------------------------------------------------------------------------
    @property
    def state(self) -> DeviceState:
        """The current state."""
        return self._state

    def add_state_listener(self, listener: Callable[[StateChange], None]) -> None:
        """Call ``listener(change)`` on every state change (from the device's threads)."""
        self._listeners.append(listener)

    def wait_for_state(self, *states: DeviceState, timeout_s: float | None = None) -> bool:
        """Block until the state is one of ``states``.

        Parameters
        ----------
        states
            The states waited for.
        timeout_s
            Longest wait, s (None: no limit).

        Returns
        -------
        bool
            True once the state is one of ``states``; False after ``timeout_s``, or at once
            when the device is (or becomes) closed and ``CLOSED`` is not among ``states``
            (a closed device never changes state again).
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._state_changed:
            while self._state not in states:
                if self._state is DeviceState.CLOSED:
                    return False
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
    def _refuse_if_closed(self, action: str) -> None:
        if self._closing or self._state is DeviceState.CLOSED:
            raise RuntimeError(
                f"{self.name}: cannot {action} a closed device (state {self._state.value}); "
                f"create a new {type(self).__name__}"
            )

    def connect(self) -> Self:
        """Open the link (a client starts connecting in the background; a server binds).

        Returns
        -------
        Self
            The device, so that ``device = Device(...).connect()`` reads naturally.

        Raises
        ------
        RuntimeError
            The device is closed (create a new one).
        """
        with self._life:
            self._refuse_if_closed("connect")
            if not self._connected:
                self._connect()
                self._connected = True
        return self

    def start(self) -> Self:
        """Begin the flow of frames (connects first if needed; resumes after :meth:`stop`).

        Returns
        -------
        Self
            The device.

        Raises
        ------
        RuntimeError
            The device is closed (create a new one).
        """
        with self._life:
            self._refuse_if_closed("start")
            self.connect()
            if not self._started:
                self._start()
                self._started = True
        return self

    def stop(self) -> None:
        """Pause the flow of frames; the link stays open (nothing to do unless started)."""
        with self._life:
            if self._started and not self._closing and self._state is not DeviceState.CLOSED:
                self._stop()
                self._started = False

    def close(self) -> None:
        """Release sockets and threads; the state becomes ``closed`` (idempotent: a second
        call, or one while another thread closes, returns at once)."""
        with self._life:
            if self._closing or self._state is DeviceState.CLOSED:
                return
            self._closing = True
        try:
            self._close()
        finally:
            self._set_state(DeviceState.CLOSED)
            self._started = False

    def __enter__(self) -> Self:
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
