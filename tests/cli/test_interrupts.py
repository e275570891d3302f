"""Ctrl-C as a request to stop (usnav.cli._signals.InterruptToStop), with real signals."""

from __future__ import annotations

import os
import signal
import socket
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


def test_usnav_in_process_leaves_the_callers_ctrl_c_as_it_was(tmp_path) -> None:
    """``usnav record`` run in-process (as tests and notebooks do) used to leave Ctrl-C
    ignored: every process started afterwards inherited SIG_IGN, and playback servers stopped
    with Ctrl-C never stopped (19 tests of one clean-clone run timed out so)."""
    from usnav.cli.main import main

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    out = tmp_path / "r.igs.mha"
    code = main(["record", "--out", str(out), "--port", str(port), "--connect-timeout", "0.3"])
    assert code == 2  # nothing was listening: "no frame from …"
    after = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    assert after == before
