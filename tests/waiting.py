"""Waiting in tests: on a condition, with a timeout — never a bare sleep that hopes.

``wait_until(predicate, timeout_s)`` polls a condition; ``repeat_until`` also does something
each round (resend until an answer arrives, stream until a watchdog fires). The timeout is a
bound that turns a hang into a failure, never a speed assertion.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

_POLL_S = 0.01


def wait_until(predicate: Callable[[], object], timeout_s: float = 5.0) -> bool:
    """True as soon as ``predicate()`` is true; False if it is still false after ``timeout_s``."""
    return repeat_until(lambda: None, predicate, timeout_s, every_s=_POLL_S)


def repeat_until(
    action: Callable[[], object],
    predicate: Callable[[], object],
    timeout_s: float,
    *,
    every_s: float,
) -> bool:
    """Call ``action()`` every ``every_s`` until ``predicate()`` is true (checked after each
    action) or ``timeout_s`` passed; returns whether the predicate became true."""
    pause = threading.Event()  # never set: a wait that cannot be confused with a sync point
    deadline = time.monotonic() + timeout_s
    while True:
        action()
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return bool(predicate())
        pause.wait(every_s)
