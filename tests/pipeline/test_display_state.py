"""What a display is told must match how right the overlay is (issue 11), end to end over real
sockets: a playback server process, the live pipeline, ZeroMQ subscribers, ``usnav run``."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from pipeline_helpers import free_port, wait_until
from test_cli import _device_file, _run_args
from test_live import Collector, _pipeline

from usnav.client import MarginMessage, RegistrationMessage, Subscriber
from usnav.devices import serve_in_subprocess
from usnav.protocol.display import LIVE, STALE, UNCERTAIN
from usnav.registration.files import read_initial
from usnav.viewer.state import ViewerOptions, ViewModel, assess


def test_no_registration_is_never_live(small_case: Path) -> None:
    """``usnav run --no-registration``: the navigation registration is unchecked, so no margin,
    frame, registration or status message says LIVE — in view or not."""
    port = free_port()
    server = serve_in_subprocess(small_case / "sweep.igs.mha", port=port, rate=2.0)
    pipeline = _pipeline(small_case, port, registration=False)
    pipeline.prepare()
    display = Collector(pipeline.endpoint)
    try:
        pipeline.start()
        assert wait_until(lambda: pipeline.counters.received >= 60, 30)
        assert wait_until(lambda: len(display.of(MarginMessage)) >= 20, 10)
    finally:
        pipeline.stop()
        display.close()
        server.stop()
    margins = display.of(MarginMessage)
    assert any(m.in_view for m in margins), "the sweep crosses the tumor"
    assert all(m.header.display_state != LIVE for m in display.messages)
    live_frames = [m for m in margins if not m.header.stale]
    assert live_frames and all(
        m.header.display_state == UNCERTAIN and "not yet checked" in m.header.display_reason
        for m in live_frames
    )
    assert all(not m.header.registration_checked for m in margins)
    assert pipeline.status()["display_state"] != LIVE


def test_a_display_started_late_learns_the_registration_and_the_state(small_case: Path) -> None:
    """A display that joins long after the registration was published still gets the
    registration in use and the display state (re-sent every status interval), both while
    frames flow and when they have stopped."""
    port = free_port()
    server = serve_in_subprocess(small_case / "sweep.igs.mha", port=port, rate=1.0, loop=True)
    pipeline = _pipeline(small_case, port, registration=False)
    pipeline.prepare()
    initial = read_initial(small_case / "init_ReferenceToMri.txt")
    try:
        pipeline.start()
        assert wait_until(lambda: pipeline.counters.published >= 10, 30)
        # frames flow; a display joins now, long after the registration went out first
        state = _late_display_state(pipeline.endpoint)
        assert state["registration"].in_use and state["registration"].resent
        np.testing.assert_allclose(state["registration"].reference_to_mri, initial, atol=1e-9)
        assert state["verdict"].word == UNCERTAIN
        assert "not yet checked" in state["verdict"].reason
        # the probe goes away; a display that joins now is told STALE, not left waiting
        server.stop()
        assert wait_until(lambda: pipeline.link_stale_reason() != "", 15)
        state = _late_display_state(pipeline.endpoint)
        assert state["verdict"].word == STALE, state["verdict"]
        assert state["registration"].header.display_state == STALE
    finally:
        pipeline.stop()
        server.stop()


def _late_display_state(endpoint: str, timeout_s: float = 10.0) -> dict:
    """Subscribe now; once a registration and a status arrived, the viewer's verdict."""
    model = ViewModel(endpoint)
    got: dict = {}
    with Subscriber(endpoint, hwm=1000) as sub:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not {"registration", "status"} <= got.keys():
            latest = sub.receive_latest(timeout_s=0.05)
            got.update(latest)
            model.update(latest, connected=sub.connected, last_message_s=sub.last_message_time)
        assert isinstance(got.get("registration"), RegistrationMessage), got.keys()
        verdict = assess(model.state, ViewerOptions(lost_after_s=5.0))
    return {"registration": got["registration"], "verdict": verdict}


def test_a_second_ctrl_c_while_stopping_still_prints_the_summary(small_case, tmp_path) -> None:
    """``usnav run`` with a recording: Ctrl-C twice in quick succession, the second while it
    stops and writes the recording out. It still stops cleanly and prints the run's summary
    and the recording's."""
    port = free_port()
    server = serve_in_subprocess(small_case / "sweep.igs.mha", port=port, loop=True)
    record = tmp_path / "twice.igs.mha"
    args = [
        *_run_args(small_case, _device_file(tmp_path, port)),
        "--record",
        str(record),
        "--publish",
        f"tcp://127.0.0.1:{free_port()}",
        "--no-registration",
        "--quiet",
        "--log",
        str(tmp_path / "run.log"),
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "usnav", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        frames = record.with_name(record.name + ".journal") / "frames.jsonl"

        def recorded() -> int:
            return len(frames.read_text().splitlines()) if frames.exists() else 0

        assert wait_until(lambda: recorded() >= 30, 90)  # frames are being recorded
        process.send_signal(signal.SIGINT)
        for _ in range(3):  # and again, while it stops
            time.sleep(0.05)
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        server.stop()
    assert process.returncode == 0, err
    assert "usnav run:" in out and "stopped in" in out, (out, err)
    assert "frames written, 0 lost" in out
    assert "already stopping" in err
    assert "interrupted" not in err and "Traceback" not in err
