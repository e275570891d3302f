"""Frames whose image lies entirely outside the MRI (session 43), end to end: a loopback
OpenIGTLink scanner, the pipeline and a ZeroMQ display. With a checked registration whose
stated bound passes, the frames in the MRI go out LIVE; once the probe's pose puts the images
300 mm away (another patient's sweep, a registration far off), not one goes out LIVE, the
status says so too and counts them, and LIVE comes back when the images lie in the MRI again."""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from pipeline_helpers import LoopbackDevice, wait_until
from test_live import Collector, _pipeline

from usnav.cli.cmd_run import _print_summary, status_line
from usnav.client import MarginMessage
from usnav.frames import TrackedFrame, TrackedTransform
from usnav.protocol.display import LIVE, OUTSIDE_MRI_PREFIX, UNCERTAIN, DisplayRules
from usnav.registration.estimate import RegistrationEstimate
from usnav.registration.files import read_initial


class _FarScanner(LoopbackDevice):
    """The sweep at 20 Hz; while :attr:`far` is set, the probe's pose is moved 300 mm."""

    def __init__(self, case: Path):
        self.far = threading.Event()
        super().__init__(case)

    def messages(self, frame: TrackedFrame, timestamp: float):
        if self.far.is_set():
            probe = frame.transforms["ProbeToTracker"]
            moved = probe.matrix.copy()
            moved[:3, 3] += (300.0, 0.0, 0.0)
            transforms = dict(frame.transforms)
            transforms["ProbeToTracker"] = TrackedTransform(moved, probe.status)
            frame = dataclasses.replace(frame, transforms=transforms)
        return super().messages(frame, timestamp)


class _CheckedRegistration:
    """The registration worker's place, holding one estimate checked on the images (a ±1 mm
    bound): the optimiser itself has nothing to check on images outside the MRI, and one
    that confirms the navigation registration takes minutes of this machine."""

    def __init__(self, reference_to_mri: np.ndarray):
        self.estimate = RegistrationEstimate(
            reference_to_mri, quality=0.9, uncertainty_mm=0.5, sequence=1, source="full"
        )

    def start(self) -> None:
        self.estimate = dataclasses.replace(self.estimate, t_computed=time.time())

    submitted = 0

    def submit(self, image: np.ndarray, image_to_reference: np.ndarray, t: float) -> None:
        self.submitted += 1

    def latest_accepted(self) -> RegistrationEstimate:
        return self.estimate

    latest = latest_accepted

    def stop(self, timeout: float = 1.0) -> None:
        pass


def test_frames_outside_the_mri_are_never_live(
    small_case: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    scanner = _FarScanner(small_case)
    # the reported run's threshold; the doubts of the tracker and the seen points are not
    # what is tested here
    rules = DisplayRules(
        live_max_uncertainty_mm=0.6,  # the most a site may state (0.62 mm)
        max_reference_motion_mm=None,
        max_reference_step_mm=None,
        max_seen_disagreement_mm=None,
    )
    pipeline = _pipeline(small_case, scanner.server.port, display=rules)
    pipeline.worker = _CheckedRegistration(read_initial(small_case / "init_ReferenceToMri.txt"))
    pipeline.prepare()
    display = Collector(pipeline.endpoint)

    def outside() -> list[MarginMessage]:
        return [
            m for m in display.of(MarginMessage) if OUTSIDE_MRI_PREFIX in m.header.display_reason
        ]

    try:
        display.join(pipeline)
        with caplog.at_level(logging.INFO, logger="usnav.pipeline"):
            pipeline.start()
            assert wait_until(
                lambda: any(m.header.display_state == LIVE for m in display.of(MarginMessage)),
                30,
            ), "frames in the MRI under a checked registration within its bound go out LIVE"
            assert not outside() and pipeline.counters.outside_mri == 0
            scanner.far.set()
            assert wait_until(lambda: len(outside()) >= 10, 20)
            status = pipeline.status()
            assert status["display_state"] == UNCERTAIN
            assert OUTSIDE_MRI_PREFIX in status["display_reason"]
            assert status["frames_outside_mri"] >= 10
            assert "IMAGE OUTSIDE THE MRI" in status_line(status)
            scanner.far.clear()
            assert wait_until(lambda: pipeline.status()["display_state"] == LIVE, 15)
        said = [r.getMessage() for r in caplog.records if OUTSIDE_MRI_PREFIX in r.getMessage()]
        assert len(said) == 1, said  # once when they begin, not per frame
        assert any("in the MRI again" in r.getMessage() for r in caplog.records)
        _print_summary(pipeline, 0.0, None)
        count = pipeline.counters.outside_mri
        assert f"({count} of the frames lay entirely outside the MRI" in capsys.readouterr().out
    finally:
        pipeline.stop()
        display.close()
        scanner.close()
    margins = display.of(MarginMessage)
    far = [m for m in margins if OUTSIDE_MRI_PREFIX in m.header.display_reason]
    assert far and all(m.header.display_state == UNCERTAIN and not m.in_view for m in far)
    # every frame the pose put far away said so: none of them went out LIVE
    for m in margins:
        if m.header.display_state == LIVE:
            assert abs(m.header.image_to_mri[0, 3] - far[0].header.image_to_mri[0, 3]) > 100


def test_frames_outside_the_mri_are_not_offered_to_the_registration(
    small_case: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real registration worker is not given frames whose image lies entirely outside the
    MRI (session 44): it could only find that no window holds them. Its own counter says so in
    the run's summary; frames in the MRI are offered again once the probe is back."""
    scanner = _FarScanner(small_case)
    scanner.far.set()
    pipeline = _pipeline(small_case, scanner.server.port)
    try:
        pipeline.prepare()
        worker = pipeline.worker
        assert worker is not None and worker.stats.submitted == 0
        pipeline.start()
        counters = pipeline.counters
        assert wait_until(lambda: counters.withheld_from_registration >= 20, 30)
        assert worker.stats.submitted == 0 and counters.outside_mri >= 20
        withheld = counters.withheld_from_registration
        _print_summary(pipeline, 0.0, None)  # frames still come: the count only grows
        said = re.search(
            r"\(registration: 0 frames offered to the worker, (\d+) lying outside the MRI or of "
            "another pixel size not offered;",
            capsys.readouterr().out,
        )
        assert said is not None and int(said[1]) >= withheld
        scanner.far.clear()
        assert wait_until(lambda: worker.stats.submitted >= 5, 20), "in the MRI: offered again"
    finally:
        pipeline.stop()
        scanner.close()
