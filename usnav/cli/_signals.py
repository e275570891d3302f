"""SIGTERM ends a long-running command the way Ctrl-C does.

A service manager, ``docker stop``, ``timeout`` or a CI runner stops a process with SIGTERM;
Python's default is to die at once (exit 143), skipping the summary and leaving a recording
as a bare journal. Within :func:`sigterm_as_interrupt`, SIGTERM raises KeyboardInterrupt in
the main thread instead, so the command's own Ctrl-C path runs: the pipeline stops, the
recording is closed, the summary is printed.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


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
