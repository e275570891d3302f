"""SIGTERM ends a long-running command the way Ctrl-C does.

A service manager, ``docker stop``, ``timeout`` or a CI runner stops a process with SIGTERM;
Python's default is to die at once (exit 143), skipping the summary and leaving a recording
as a bare journal. Within :func:`sigterm_as_interrupt`, SIGTERM raises KeyboardInterrupt in
the main thread instead, so the command's own Ctrl-C path runs: the pipeline stops, the
recording is closed, the summary is printed.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
from collections.abc import Callable, Iterator

log = logging.getLogger("usnav.cli")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM as Ctrl-C while the block runs (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


#: the signals that ask a running command to stop (SIGTERM: service managers, ``timeout``)
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name)
)


class InterruptToStop:
    """Ctrl-C (SIGINT) and SIGTERM as a request to stop, never an exception, while the block
    runs.

    The first Ctrl-C sets :attr:`stop` (and calls ``on_interrupt(1)``); later ones only call
    ``on_interrupt(n)``. So a second Ctrl-C while the pipeline shuts down and writes out its
    recording cannot lose the recording or the run's summary. Both happen on a helper thread,
    moments after the signal: the handler itself only queues, so handlers nested by quick
    Ctrl-Cs cannot deadlock. Only the main thread receives signals; elsewhere (and for code
    that never waits on :attr:`stop`) this changes nothing.
    ``ignore_after``: leave Ctrl-C ignored after the block (the process is about to exit; a
    late one would otherwise kill it by signal while it shuts down).

    Examples
    --------
    >>> with InterruptToStop(lambda n: None) as interrupt:       # doctest: +SKIP
    ...     while not interrupt.stop.wait(0.25):
    ...         pass                                            # run until Ctrl-C
    ...     pipeline.stop()                                     # Ctrl-C here is only noted
    """

    def __init__(self, on_interrupt: Callable[[int], None], *, ignore_after: bool = False):
        self.on_interrupt = on_interrupt
        self.ignore_after = ignore_after
        self.stop = threading.Event()
        self.count = 0
        self._previous: dict = {}
        self._installed = False
        # the handler only queues (SimpleQueue.put is reentrant: safe in a signal handler);
        # a thread counts, sets `stop` and calls on_interrupt. The handler takes no lock:
        # Ctrl-Cs in quick succession run one handler inside another, and one that set `stop`
        # itself waited forever for the Event's lock, held by the handler it had interrupted
        # (a 4-Ctrl-C test hung so in two full CI-sized runs; faulthandler showed the nesting).
        # Printing never happens in the handler either (it could deadlock on a stream the
        # interrupted code was writing).
        self._queue: queue.SimpleQueue[bool | None] = queue.SimpleQueue()
        self._notifier: threading.Thread | None = None

    def _handler(self, signum: int, frame: object) -> None:
        self._queue.put(True)

    def _notify(self) -> None:
        while self._queue.get() is not None:
            self.count += 1
            self.stop.set()
            try:
                self.on_interrupt(self.count)
            except Exception:  # a failing message never stops the stop
                log.exception("interrupt callback failed")

    def __enter__(self) -> InterruptToStop:
        if threading.current_thread() is threading.main_thread():
            self._notifier = threading.Thread(
                target=self._notify, name="usnav-interrupts", daemon=True
            )
            self._notifier.start()
            self._previous = {sig: signal.signal(sig, self._handler) for sig in STOP_SIGNALS}
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            for sig, previous in self._previous.items():
                signal.signal(sig, signal.SIG_IGN if self.ignore_after else previous)
            self._installed = False
        if self._notifier is not None:
            self._queue.put(None)
            self._notifier.join(1.0)
            self._notifier = None
