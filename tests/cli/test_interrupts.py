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


def test_ctrl_c_while_the_commands_load_is_one_line_and_status_130(tmp_path) -> None:
    """Loading every command's module takes about a second before any command runs; a Ctrl-C
    then (a typo seen at once) printed a KeyboardInterrupt traceback through the imports and
    no "interrupted" line. The signal is sent 0.5 s in, inside that second here; where it
    lands later, the command's own Ctrl-C handling must give the same answer."""
    import subprocess
    import sys
    import time

    from cli_helpers import usnav_env

    with socket.socket() as probe:  # a port nobody publishes on: the snapshot would wait
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = ["view", "--snapshot", "v.png", "--timeout", "30"]
    args += ["--connect", f"tcp://127.0.0.1:{port}"]
    process = subprocess.Popen(
        [sys.executable, "-m", "usnav", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=usnav_env(tmp_path),
        # a Ctrl-C the test's own runner ignores is not inherited as ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        time.sleep(0.5)  # Python is up (its Ctrl-C handler set), the commands loading
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    # 130, or death by SIGINT, which a shell also reports as 130: CPython 3.11 marks a
    # KeyboardInterrupt that escapes an exec() of a string (dataclasses build methods so, while
    # a module loads) as unhandled, though usnav caught it, and ends the process by SIGINT
    assert process.returncode in (130, -signal.SIGINT), err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith("interrupted"), err
