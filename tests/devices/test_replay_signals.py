"""``usnav replay`` stopped by SIGINT (Ctrl-C) or SIGTERM (a service manager, ``timeout``)
prints its summary and exits 130, as ``usnav record`` does: SIGTERM killed it outright (exit
143, no summary) and Ctrl-C printed only "interrupted". Real processes, real signals."""

from __future__ import annotations

import re
import signal
import subprocess

import numpy as np
import pytest
from cli_helpers import start_usnav

from usnav.devices.config import ProbeConfig
from usnav.devices.probe import ProbeClient
from usnav.frames import TrackedFrame, TrackedTransform
from usnav.io.sequence import write_sequence

SUMMARY = re.compile(
    r"^usnav replay: sent (\d+) frames \(\d+ passes\), (\d+) messages; "
    r"\d+ dropped for slow clients; interrupted$"
)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    path = tmp_path_factory.mktemp("sweep") / "sweep.igs.mha"
    rng = np.random.default_rng(5)
    frames = [
        TrackedFrame(
            image=rng.integers(0, 256, (16, 24), dtype=np.uint8),
            transforms={"ProbeToTracker": TrackedTransform(np.eye(4))},
            t_device=10.0 + k / 30.0,
            frame_number=k,
        )
        for k in range(30)
    ]
    write_sequence(path, frames)
    return path


@pytest.mark.parametrize(
    "signals",
    [(signal.SIGINT,), (signal.SIGTERM,), (signal.SIGINT, signal.SIGINT, signal.SIGINT)],
    ids=["ctrl-c", "sigterm", "ctrl-c-thrice"],
)
def test_a_signal_stops_replay_with_its_summary(sweep, tmp_path, signals) -> None:
    process = start_usnav(
        tmp_path, "replay", str(sweep), "--port", "0", "--loop", stdin=subprocess.DEVNULL
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # blocks until it listens (or exits: "")
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", first)
        assert match, first + process.communicate(timeout=60)[1]
        config = ProbeConfig(port=int(match.group(1)), pairing_wait_s=0)
        with ProbeClient(config) as probe:
            got = [probe.get_frame(30) for _ in range(5)]  # it is playing
            assert None not in got
            for signum in signals:  # the later ones land while it stops
                process.send_signal(signum)
            _, err = process.communicate(timeout=60)  # a hang guard
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("usnav replay: sent")]
    assert len(lines) == 1, err
    summary = SUMMARY.match(lines[0])
    assert summary, lines[0]
    assert int(summary.group(1)) >= 5 and int(summary.group(2)) > 0
    assert "usnav replay: interrupted" not in err  # the old Ctrl-C path, without the counts


# -- a replay started by usnav ends with its parent (usnav/lifeline.py) --------------------


def test_replay_whose_parent_was_gone_before_it_started_stops(sweep, tmp_path) -> None:
    """The race the kernel's parent-death signal cannot cover: the parent died before the
    child set it. The child checks right after setting it, and stops."""
    import sys

    from cli_helpers import usnav_env

    from usnav.lifeline import PARENT_PID_ENV

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(30)
    env = {**usnav_env(tmp_path), PARENT_PID_ENV: str(gone.pid)}
    process = start_usnav(
        tmp_path, "replay", str(sweep), "--port", "0", "--loop", "--no-wait", env=env
    )
    try:
        process.communicate(timeout=60)  # a --loop server that kept going would time out
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    # SIGTERM to itself: killed by it before its handler is set, or stopped on it (130)
    assert process.returncode in (-signal.SIGTERM, 130)


_PARENT = """
import sys, threading, time
from usnav.devices import serve_in_subprocess
started = []
# from a thread: the kernel's signal follows the thread that started the child, so only the
# child's own watch of its parent pid can end it
thread = threading.Thread(target=lambda: started.append(
    serve_in_subprocess(sys.argv[1], port=0, loop=True, wait_for_client=False)))
thread.start()
thread.join()
print(started[0].process.pid, flush=True)
time.sleep(600)
"""


def test_replay_of_a_parent_killed_by_sigkill_stops(sweep, tmp_path) -> None:
    """SIGKILL runs none of the parent's code: its ``usnav replay --loop`` child used to
    stream forever. A child started from a non-main thread is ended by its own watch."""
    import sys

    import psutil
    from cli_helpers import usnav_env

    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(sweep)],
        stdout=subprocess.PIPE,
        text=True,
        env=usnav_env(tmp_path),
    )
    child = None
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line.strip().isdigit(), line
        child = psutil.Process(int(line))
        assert "replay" in " ".join(child.cmdline())
        parent.kill()
        parent.wait(30)
        _gone, alive = psutil.wait_procs([child], timeout=30)
        assert not alive, "the replay outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(30)
        if parent.stdout is not None:
            parent.stdout.close()
        if child is not None and child.is_running():
            child.kill()
