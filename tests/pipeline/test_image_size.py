"""The depth changed on the scanner mid-run: frames of another image size than the calibration
was made for are not placed with its mm per pixel. They get no margin (published STALE, pixel
size unknown), are counted as a problem with the reason, said once in the log, and the status
a display reads is not LIVE; the pipeline keeps running and draws again once the calibrated
size is back. (Until session 40 the old calibration was applied to the new size.)"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from pathlib import Path

import numpy as np
import pytest
from pipeline_helpers import LoopbackDevice, wait_until
from test_live import Collector, _pipeline

from usnav.client import MarginMessage, StatusMessage
from usnav.config.calibration import load_calibration
from usnav.protocol.display import LIVE, STALE


class _Scanner(LoopbackDevice):
    """The sweep at 20 Hz; while :attr:`deeper` is set, each image has 64 more rows below
    (the depth was increased on the scanner)."""

    def __init__(self, case: Path):
        self.deeper = threading.Event()
        super().__init__(case)

    def messages(self, frame, timestamp: float):
        if self.deeper.is_set():
            frame = dataclasses.replace(frame, image=np.pad(frame.image, ((0, 64), (0, 0))))
        return super().messages(frame, timestamp)


def test_frames_of_another_size_are_not_placed_and_the_pipeline_keeps_running(
    small_case: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calibration = load_calibration(small_case / "calibration.toml")
    cols, rows = calibration.spatial.image_size_px
    scanner = _Scanner(small_case)
    pipeline = _pipeline(small_case, scanner.server.port, registration=False)
    pipeline.prepare()
    display = Collector(pipeline.endpoint)
    try:
        display.join(pipeline)
        with caplog.at_level(logging.WARNING, logger="usnav.pipeline"):
            pipeline.start()
            assert wait_until(lambda: pipeline.counters.published >= 5, 30)
            placed = pipeline.counters.published
            scanner.deeper.set()
            assert wait_until(lambda: pipeline.counters.problems.get("image_size", 0) >= 5, 15)
        # no margin drawn with the wrong scale: nothing published as placed meanwhile (one
        # frame of the calibrated size may still have been on its way)
        assert pipeline.counters.published <= placed + 1
        assert pipeline.counters.skipped_image >= 5 and pipeline.counters.errors == 0
        size = f"{cols} × {rows + 64} px"
        assert size in pipeline.counters.last_problem, pipeline.counters.last_problem
        # said once in the log (not per frame), naming the calibration file and both sizes
        said = [r.getMessage() for r in caplog.records if "made for" in r.getMessage()]
        assert len(said) == 1, said
        assert "calibration.toml" in said[0] and f"{cols} × {rows} px" in said[0]
        assert size in said[0]

        # the display is told: the frames' margins STALE, nothing in view, not placed, the
        # pixel size unknown (not the calibration's); the status not LIVE, with the reason
        def refused() -> list[MarginMessage]:
            return [m for m in display.of(MarginMessage) if size in m.header.stale_reason]

        assert wait_until(lambda: len(refused()) >= 3, 15)
        for m in refused():
            assert m.header.display_state == STALE and not m.in_view and not m.contours
            assert m.header.image_to_mri is None
            assert m.image_shape == (rows + 64, cols)
            assert all(math.isnan(v) for v in m.spacing_mm), m.spacing_mm
        status = pipeline.status()
        assert status["display_state"] == STALE and size in status["display_reason"]
        seen = len(display.messages)
        assert wait_until(
            lambda: [m for m in display.messages[seen:] if isinstance(m, StatusMessage)], 10
        )
        told = next(m for m in display.messages[seen:] if isinstance(m, StatusMessage))
        assert told.header.display_state != LIVE and size in told.header.display_reason

        # the calibrated size back: placed and published again, the reason gone
        scanner.deeper.clear()
        target = pipeline.counters.published + 3
        assert wait_until(lambda: pipeline.counters.published >= target, 15)
        assert wait_until(lambda: size not in pipeline.status()["display_reason"], 10)
    finally:
        pipeline.stop()
        display.close()
        scanner.close()
