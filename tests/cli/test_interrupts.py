"""Ctrl-C as a request to stop (usnav.cli._signals.InterruptToStop), with real signals."""

from __future__ import annotations

import os
import signal
import threading

from waiting import wait_until

from usnav.cli._signals import InterruptToStop


def test_ctrl_c_in_quick_succession_sets_stop_and_counts_each() -> None:
    seen: list[int] = []
    with InterruptToStop(seen.append) as interrupt:
        for _ in range(4):
            os.kill(os.getpid(), signal.SIGINT)
        assert interrupt.stop.wait(30)
        assert wait_until(lambda: seen == [1, 2, 3, 4], 30), seen
    assert interrupt.count == 4


def test_a_handler_run_inside_another_takes_no_lock() -> None:
    """Quick Ctrl-Cs nest handlers: one ran while the handler it interrupted was inside
    ``stop.set()`` holding the Event's lock, and waited for that lock forever (a full CI run's
    4-Ctrl-C test hung there). Here the handler runs while its thread holds that lock."""
    with InterruptToStop(lambda n: None) as interrupt:
        held = interrupt.stop._cond  # the lock Event.set() holds
        returned = threading.Event()

        def nested() -> None:
            with held:
                interrupt._handler(signal.SIGINT, None)
                returned.set()

        threading.Thread(target=nested, daemon=True).start()
        ok = returned.wait(10)
        if not ok:  # free the stuck thread (a plain Lock may be released by any thread)
            held.release()
        assert ok, "the signal handler waited for a lock its own thread held"
        assert interrupt.stop.wait(30)
