"""Issue #17: SIGTERM (a service manager, ``timeout``, ``docker stop``) ends ``usnav run``,
``usnav record`` and ``usnav demo`` the way Ctrl-C does: the summary is printed and the
recording closed, not a bare journal left behind; the demo's playback server is stopped (and
ends by itself when the demo is killed by SIGKILL). Real processes, real signals."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from cli_helpers import start_usnav
from pipeline_helpers import wait_until

from usnav.devices import serve_in_subprocess
from usnav.io.sequence import journal_path, read_sequence


def _terminate_after_frames(args, tmp_path, journal, frames=10):
    process = start_usnav(tmp_path, *args)
    try:
        assert wait_until(lambda: journal.exists() or process.poll() is not None, 90)
        assert process.poll() is None, process.communicate()
        # frames are being recorded: the journal holds a line per complete frame (+ a few meta)
        lines = journal / "frames.jsonl"
        assert wait_until(
            lambda: lines.exists() and lines.read_bytes().count(b"\n") > frames + 3, 60
        )
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, out, err


def test_sigterm_stops_run_like_ctrl_c(small_case, tmp_path):
    server = serve_in_subprocess(small_case / "sweep.igs.mha", port=0, loop=True)
    port = server.port  # bound by the server itself: no free port to lose meanwhile
    device = tmp_path / "probe.toml"
    device.write_text(
        f'[probe]\nport = {port}\ntransforms = ["ProbeToTracker", "ReferenceToTracker"]\n'
    )
    record = tmp_path / "term.igs.mha"
    args = [
        "run",
        "--device",
        str(device),
        "--mri",
        str(small_case / "mri.nii.gz"),
        "--label",
        str(small_case / "tumor_label.nii.gz"),
        "--calibration",
        str(small_case / "calibration.toml"),
        "--init",
        str(small_case / "init_ReferenceToMri.txt"),
        "--record",
        str(record),
        "--publish",
        "tcp://127.0.0.1:0",
        "--no-registration",
        "--quiet",
    ]
    try:
        code, out, err = _terminate_after_frames(args, tmp_path, journal_path(record))
    finally:
        server.stop()
    assert code == 0, err  # as after Ctrl-C, not 143
    assert "stopped in" in out and "frames written, 0 lost" in out
    written = int(out.split("recording")[1].split(":")[1].split("frames written")[0])
    with read_sequence(record) as seq:
        assert len(seq) == written > 10
    assert not journal_path(record).exists()
    assert not (tmp_path / "logs").exists()  # the log went to the per-user folder
    assert list((tmp_path / "usnav-logs").glob("usnav-run-*.log"))


def test_sigterm_stops_record_like_ctrl_c(small_case, tmp_path):
    server = serve_in_subprocess(small_case / "sweep.igs.mha", port=0, loop=True)
    port = server.port  # bound by the server itself: no free port to lose meanwhile
    out_file = tmp_path / "rec.igs.mha"
    args = ["record", "--out", str(out_file), "--port", str(port)]
    try:
        code, out, err = _terminate_after_frames(args, tmp_path, journal_path(out_file))
    finally:
        server.stop()
    assert code == 130, err  # what Ctrl-C gives
    assert "ended by interrupted" in out
    written = int(out.split("written ")[1].split(",")[0])
    with read_sequence(out_file) as seq:
        assert len(seq) == written > 10
    assert not journal_path(out_file).exists()


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``--cache`` folder holding the demo case, simulated once for both signals (~10 s
    each time; what these tests check begins once the demo streams). The first-run path that
    simulates it is ``test_demo_end_to_end``'s (tests/pipeline/test_cli.py)."""
    from usnav.sim import demo_case

    cache = tmp_path_factory.mktemp("demo-cache")
    demo_case(cache)
    return cache


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_stopped_or_killed_demo_ends_its_playback_server(tmp_path, demo_cache, signum):
    """``usnav demo`` runs ``usnav replay --loop`` in a child process. SIGTERM to the demo
    (``timeout``, a service manager) used to kill the demo at once and leave that server
    streaming forever; now the demo's own stop path runs and ends the child too. SIGKILL (the
    OOM killer, ``kill -9``) runs none of the demo's code: the child ends by itself, from the
    kernel's parent-death signal or its own watch of its parent (usnav/lifeline.py; session
    34 — it had streamed forever)."""
    import threading

    import psutil

    args = ["demo", "--out", str(tmp_path / "demo"), "--cache", str(demo_cache)]
    args += ["--publish", "tcp://127.0.0.1:0", "--passes", "100"]
    process = start_usnav(tmp_path, *args)
    phases: list[str] = []
    reader = threading.Thread(target=lambda: phases.extend(process.stderr), daemon=True)
    reader.start()
    children: list[psutil.Process] = []
    try:
        # streaming: the playback server has its client (before that it only waits)
        assert wait_until(
            lambda: any("streaming" in p for p in phases) or process.poll() is not None, 120
        )
        assert process.poll() is None, phases
        children = [
            c
            for c in psutil.Process(process.pid).children(recursive=True)
            if "replay" in " ".join(c.cmdline())
        ]
        assert children, "the demo's playback server runs in a child process"
        time.sleep(1.0)  # a second of streaming
        process.send_signal(signum)
        process.wait(timeout=60)
        reader.join(10)
        _gone, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, [c.cmdline() for c in alive]
        # interrupted, as after Ctrl-C; or killed
        assert process.returncode == (130 if signum == signal.SIGTERM else -signum), phases
    finally:
        if process.poll() is None:
            process.kill()
        for child in children:  # adopted by init once the demo is killed: not our children
            if child.is_running():
                child.kill()
        process.wait(timeout=30)
        reader.join(10)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
