"""The pixel size a live IMAGE states, against the calibration's (session 44), end to end: a
loopback OpenIGTLink scanner, the pipeline and a ZeroMQ display. The depth changed on the
scanner with the image size kept: the IMAGE's matrix now states 1.25 times the mm per pixel
the calibration places the pixels at, and every overlay would be drawn at the old depth's
scale. Such frames go out UNCERTAIN with a reason that says what to do, are counted, said once
when it begins and when it ends, and not offered to the registration; an IMAGE stating 1 × 1 mm
(PLUS's ``ElementSpacing 1 1 1``, its pixels placed by ImageToProbe) is not compared."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from pipeline_helpers import LoopbackDevice, wait_until
from test_live import Collector, _pipeline
from test_outside_mri import _CheckedRegistration

from usnav.cli.cmd_run import _print_summary, status_line
from usnav.client import MarginMessage
from usnav.config.calibration import load_calibration
from usnav.devices.playback import frame_messages
from usnav.frames import TrackedFrame
from usnav.igtl.codec import ImageContent
from usnav.pipeline.spacing import SPACING_MISMATCH_PREFIX, SpacingWatch
from usnav.protocol.display import LIVE, UNCERTAIN, DisplayRules
from usnav.registration.files import read_initial


class _Scanner(LoopbackDevice):
    """The sweep at 20 Hz. :attr:`mode` ``"calibrated"``: the IMAGE's matrix is
    ImageToReference with the calibration's scale (as PLUS's ``Image_Reference``);
    ``"deeper"``: with 1.25 times the mm per pixel (the depth changed from 4 to 5 cm, the image
    size kept); ``"plus-unit"``: the identity, 1 × 1 mm (PLUS's ElementSpacing 1 1 1)."""

    mode = "calibrated"

    def messages(self, frame: TrackedFrame, timestamp: float):
        if self.mode == "deeper":
            deeper = self.image_to_probe.copy()
            deeper[:3, :2] *= 1.25
            return frame_messages(frame, timestamp=timestamp, image_to_probe=deeper)
        messages = super().messages(frame, timestamp)
        if self.mode == "plus-unit":
            messages = [
                dataclasses.replace(m, content=ImageContent(m.content.pixels, np.eye(4)))
                if m.type == "IMAGE"
                else m
                for m in messages
            ]
        return messages


def test_a_stated_pixel_size_other_than_the_calibrations_is_never_live(
    small_case: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    scanner = _Scanner(small_case)
    rules = DisplayRules(  # the doubts of the tracker and the seen points are not tested here
        live_max_uncertainty_mm=0.6,  # the most a site may state (0.62 mm)
        max_reference_motion_mm=None,
        max_reference_step_mm=None,
        max_seen_disagreement_mm=None,
    )
    pipeline = _pipeline(small_case, scanner.server.port, display=rules)
    worker = _CheckedRegistration(read_initial(small_case / "init_ReferenceToMri.txt"))
    pipeline.worker = worker
    pipeline.prepare()
    display = Collector(pipeline.endpoint)

    def margins() -> list[MarginMessage]:
        return display.of(MarginMessage)

    def doubted() -> list[MarginMessage]:
        return [m for m in margins() if SPACING_MISMATCH_PREFIX in m.header.display_reason]

    def live_after(count: int) -> bool:
        return any(m.header.display_state == LIVE for m in margins()[count:])

    try:
        display.join(pipeline)
        with caplog.at_level(logging.INFO, logger="usnav.pipeline"):
            pipeline.start()
            assert wait_until(lambda: live_after(0), 30), "the calibrated scale goes out LIVE"
            # PLUS's 1 × 1 mm states no pixel size: not compared, LIVE as before
            scanner.mode = "plus-unit"
            seen = len(margins())
            assert wait_until(lambda: len(margins()) >= seen + 20, 20)
            assert live_after(seen + 5)
            assert not doubted() and pipeline.counters.spacing_mismatch == 0
            # the depth changed on the scanner, the image size kept
            scanner.mode = "deeper"
            assert wait_until(lambda: doubted(), 20)
            offered = worker.submitted
            assert wait_until(lambda: len(doubted()) >= 10, 20)
            status = pipeline.status()
            assert status["display_state"] == UNCERTAIN
            reason = status["display_reason"]
            assert SPACING_MISMATCH_PREFIX in reason
            cx, cy = load_calibration(small_case / "calibration.toml").spatial.spacing_mm
            stated = re.search(r"states ([0-9.]+) × ([0-9.]+) mm per pixel", reason)
            assert stated is not None
            assert float(stated[1]) == pytest.approx(1.25 * cx, abs=1e-3)
            assert float(stated[2]) == pytest.approx(1.25 * cy, abs=1e-3)
            assert f"made for {cx:.3g} × {cy:.3g} mm" in reason
            assert "recalibrate at this depth, or give the calibration made for it" in reason
            assert str(small_case / "calibration.toml") in reason
            assert status["frames_spacing_mismatch"] >= 10
            assert "PIXEL SIZE IS NOT THE CALIBRATION'S" in status_line(status)
            assert worker.submitted == offered, "not offered to the registration"
            # the counter is raised after the frame's margins go out: wait for it
            assert wait_until(lambda: pipeline.counters.withheld_from_registration >= 10, 10)
            scanner.mode = "calibrated"
            back = len(margins())
            assert wait_until(lambda: live_after(back), 15), "LIVE again at the calibrated scale"
            assert wait_until(lambda: worker.submitted > offered, 10), "offered again"
        said = [r.getMessage() for r in caplog.records if SPACING_MISMATCH_PREFIX in r.getMessage()]
        assert len(said) == 1, said  # once when it begins, not per frame
        ended = [r for r in caplog.records if "agrees with the calibration again" in r.getMessage()]
        assert len(ended) == 1
        _print_summary(pipeline, 0.0, None)
        count = pipeline.counters.spacing_mismatch
        out = capsys.readouterr().out
        assert f"({count} of the frames stated a pixel size other than the calibration's" in out
    finally:
        pipeline.stop()
        display.close()
        scanner.close()
    for m in doubted():
        assert m.header.display_state == UNCERTAIN


def test_the_tolerance_and_what_states_no_pixel_size() -> None:
    """2 % per axis is within the speed-of-sound term the stated bound allows; 1 × 1 mm and a
    calibration-free run compare nothing."""
    watch = SpacingWatch()
    watch.use((0.2, 0.25), "cal.toml")

    def matrix(sx: float, sy: float) -> np.ndarray:
        m = np.eye(4)
        m[:3, 0], m[:3, 1] = (0.0, sx, 0.0), (0.0, 0.0, sy)  # any rotation: the column norms
        return m

    assert watch.see(matrix(0.2 * 1.019, 0.25 * 0.981)) == ""
    assert watch.see(matrix(0.2 * 1.021, 0.25)).startswith(SPACING_MISMATCH_PREFIX)
    assert watch.newly
    assert watch.see(matrix(0.2 * 1.021 * (1 + 1e-7), 0.25)) and not watch.newly  # float32
    assert watch.see(matrix(0.2, 0.25 * 0.97)) and watch.newly  # another disagreement
    assert watch.see(np.eye(4)) == ""  # PLUS's 1 × 1 mm: not stated
    assert watch.see(None) == ""  # no matrix (image_transform = "", or MISSING)
    watch.use(None, "cal.toml")  # placed by the IMAGE's own matrix: nothing to compare
    assert watch.see(matrix(0.5, 0.5)) == ""
    unit = SpacingWatch()
    unit.use((1.0, 1.0), "rigid.txt")  # an ImageToProbe without scale: 0.2 mm stated disagrees
    assert "rigid.txt was made for 1 × 1 mm" in unit.see(matrix(0.2, 0.2))
