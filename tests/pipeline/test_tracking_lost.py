"""Tracking lost while images keep coming: every output of ``usnav run`` says STALE, not only
the margin of each frame — the status (and the registration re-sent beside it) that a display
joining now reads, and the Slicer re-export, which gets no frame while tracking is lost."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from pipeline_helpers import LoopbackDevice, free_port, wait_until
from test_live import Collector, _pipeline

from usnav.client import MarginMessage, RegistrationMessage, StatusMessage
from usnav.igtl import IgtlClient
from usnav.igtl.codec import Message, StringContent
from usnav.protocol.display import STALE


class _Device(LoopbackDevice):
    """The sweep at 20 Hz, its TRANSFORMs left out once :attr:`tracking` is cleared (the
    tracker lost the probe; the scanner keeps imaging)."""

    def __init__(self, case: Path):
        self.tracking = threading.Event()
        self.tracking.set()
        super().__init__(case, self._tracked)

    def _tracked(self, frame, messages: list[Message]) -> list[Message]:
        if not self.tracking.is_set():
            return [m for m in messages if m.type == "IMAGE"]
        return messages


def test_status_registration_and_slicer_say_stale_while_tracking_is_lost(small_case):
    device = _Device(small_case)
    port = device.server.port
    pipeline = _pipeline(small_case, port, registration=False, slicer_port=free_port())
    pipeline.prepare()
    display = Collector(pipeline.endpoint)
    slicer_messages: list[Message] = []
    slicer = IgtlClient(port=pipeline._slicer.port, on_message=slicer_messages.append)
    try:
        display.join(pipeline)
        pipeline.start()
        slicer.start()
        assert wait_until(lambda: pipeline.counters.published >= 5, 30)
        assert wait_until(lambda: any(m.type == "IMAGE" for m in slicer_messages), 10)
        device.tracking.clear()
        assert wait_until(lambda: pipeline.counters.skipped_tracking >= 3, 10)

        # the frames' margins say it (as before). The display receives in its own thread:
        # the pipeline's counter can be ahead of what has arrived there (under load)
        def lost_margins() -> list:
            return [m for m in display.of(MarginMessage) if "tracking" in m.header.stale_reason]

        assert wait_until(lost_margins, 30), "no margin of a frame without tracking arrived"
        lost = lost_margins()
        assert all(m.header.display_state == STALE for m in lost)
        # the frame cannot be placed: ImageToMri is nil on the wire (it went out as a NaN
        # matrix, and usnav view --mri died reslicing through it), its pixel size the
        # calibration's (it went out as 1 mm per pixel: a depth ruler 6x too deep)
        placed = next(m for m in display.of(MarginMessage) if m.header.image_to_mri is not None)
        for m in lost:
            assert m.header.raw["ImageToMri"] is None and m.header.image_to_mri is None
            assert np.allclose(m.spacing_mm, placed.spacing_mm, rtol=1e-3), m.spacing_mm
        seen = len(display.messages)

        def newer(kind: type) -> list:
            return [m for m in display.messages[seen:] if isinstance(m, kind)]

        # the status and the re-sent registration say it too (they told UNCERTAIN)
        assert wait_until(lambda: newer(StatusMessage) and newer(RegistrationMessage), 10)
        status = newer(StatusMessage)[0]
        assert status.status["state"] == "streaming"  # frames still arrive
        assert status.header.display_state == STALE, status.header.display_reason
        assert "tracking" in status.header.display_reason
        assert status.status["display_state"] == STALE
        resent = [m for m in newer(RegistrationMessage) if m.resent]
        assert resent and resent[0].header.display_state == STALE

        # Slicer is told: the overlay's transforms INVALID and usnav_status STALE (they stayed
        # OK and UNCERTAIN, the last frame placed, through the whole loss)
        def slicer_told() -> bool:
            texts = [
                m.content.text
                for m in slicer_messages[-20:]
                if isinstance(m.content, StringContent)
            ]
            return any(t.startswith("STALE: tracking") for t in texts)

        assert wait_until(slicer_told, 10)
        invalid = [
            m
            for m in slicer_messages
            if m.type == "TRANSFORM"
            and m.device_name == "ImageToReference"
            and m.metadata.get("TransformStatus") == "INVALID"
        ]
        assert invalid

        # tracking back: the status is no longer STALE for it
        device.tracking.set()
        target = pipeline.counters.published + 3
        assert wait_until(lambda: pipeline.counters.published >= target, 10)
        assert wait_until(
            lambda: (
                "tracking" not in pipeline.status()["display_reason"]
                and pipeline.status()["display_state"] != STALE
            ),
            10,
        )
    finally:
        slicer.stop()
        pipeline.stop()
        display.close()
        device.close()
