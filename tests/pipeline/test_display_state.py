"""What a display is told must match how right the overlay is (issue 11), end to end over real
sockets: a playback server process, the live pipeline, ZeroMQ subscribers. (A second Ctrl-C:
tests/pipeline/test_cli.py.)"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from pipeline_helpers import wait_until
from test_live import _pipeline, run_and_collect

from usnav.client import MarginMessage, RegistrationMessage, StatusMessage, Subscriber
from usnav.devices import serve_in_subprocess
from usnav.protocol.display import LIVE, STALE, UNCERTAIN
from usnav.registration.files import read_initial
from usnav.registration.worker import RegistrationWorker
from usnav.viewer.state import ViewerOptions, ViewModel, assess


def test_no_registration_is_never_live(small_case: Path) -> None:
    """``usnav run --no-registration``: the navigation registration is unchecked, so no margin,
    frame, registration or status message says LIVE — in view or not."""
    pipeline, display = run_and_collect(small_case, registration=False)
    margins = display.of(MarginMessage)
    assert any(m.in_view for m in margins), "the sweep crosses the tumor"
    assert all(m.header.display_state != LIVE for m in display.messages)
    live_frames = [m for m in margins if not m.header.stale]
    assert live_frames and all(
        m.header.display_state == UNCERTAIN and "not yet checked" in m.header.display_reason
        for m in live_frames
    )
    assert all(not m.header.registration_checked for m in margins)
    # never estimated on the images: no age, no score, nothing a display could read as a check
    assert all(m.header.age_s is None and m.header.quality is None for m in margins)
    status = pipeline.status()
    assert status["display_state"] != LIVE and status["registration_checked"] is False
    assert status["registration_age_s"] is None and status["registration_quality"] is None
    assert status["registration_latest_adopted"] is None  # no image-based try at all
    statuses = display.of(StatusMessage)
    assert statuses and all("registration_accepted" not in m.status for m in statuses)
    # on the wire the status map holds no NaN (not JSON): an unknown value is nil
    assert all(
        not (isinstance(v, float) and np.isnan(v)) for m in statuses for v in m.status.values()
    )


def test_no_image_based_try_yet_is_not_adopted(small_case: Path) -> None:
    """With the registration worker on but no image-based try made yet, the status says so
    (``registration_latest_adopted`` nil, docs/protocol.md) instead of reporting the navigation
    registration as an adopted try (it said true until session 41)."""
    pipeline = _pipeline(small_case, port=1)
    calibration = pipeline.image_to_probe
    assert pipeline.mri is not None and calibration is not None
    pipeline.worker = RegistrationWorker(
        pipeline.mri, calibration, pipeline.initial.reference_to_mri, tumor_label=pipeline.label
    )  # never started: no try
    status = pipeline.status()
    assert status["registration_source"] == "init" and status["registration_checked"] is False
    assert status["registration_latest_adopted"] is None


def test_a_display_started_late_learns_the_registration_and_the_state(small_case: Path) -> None:
    """A display that joins long after the registration was published still gets the
    registration in use and the display state (re-sent every status interval), both while
    frames flow and when they have stopped."""
    server = serve_in_subprocess(small_case / "sweep.igs.mha", port=0, rate=1.0, loop=True)
    port = server.port  # bound by the server itself: no free port to lose meanwhile
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
