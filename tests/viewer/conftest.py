"""Shared pieces of the viewer tests: a phantom case published like the pipeline would."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from usnav.frames import TrackedFrame
from usnav.margins import MarginEstimator
from usnav.margins.phantom import make_phantom
from usnav.publish import Publisher
from usnav.registration.estimate import RegistrationEstimate


@pytest.fixture(scope="session")
def viewer_case():
    """A hyperechoic tumor with a cyst, shown 1.5 mm off so the ultrasound disagrees."""
    return make_phantom(cyst=True, echo="hyper", seed=11, shift_mm=(0.0, -1.5, 1.2))


@pytest.fixture(scope="session")
def viewer_margins(viewer_case):
    """Margins of the case's frame after a few frames of the same scene (the estimator judges
    how the tumor looks over recent frames before it claims an ultrasound-supported margin)."""
    estimator = MarginEstimator(viewer_case.label)
    for seed in range(5):
        other = make_phantom(cyst=True, echo="hyper", seed=20 + seed, shift_mm=(0.0, -1.5, 1.2))
        estimator.estimate(other.image, other.image_to_mri, None)
    return estimator.estimate(viewer_case.image, viewer_case.image_to_mri, None, frame_number=3)


class PublishingThread:
    """Publishes the phantom's frame, margins and status at ~30 Hz until stopped.

    ``skimming``: each turn publishes two frames, the first's margins UNCERTAIN (a ±3 mm
    registration) and the second's LIVE, back to back — an imaging plane skimming the tumor;
    every LIVE margin then has an UNCERTAIN one published just before it.
    """

    def __init__(self, address: str, case, margins, quality: float = 0.9, skimming=False):
        self.publisher = Publisher(address)
        self.case, self.margins, self.quality = case, margins, quality
        self.skimming = skimming
        self.sent = 0  # frames published so far
        #: frames still to publish over a display's 1 MiB max_message_bytes (a frame image of
        #: 1024 x 1100 pixels) instead of the case's own
        self.oversize_frames = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> PublishingThread:
        self._thread.start()
        return self

    def _run(self) -> None:
        number = 0
        while not self._stop.is_set():
            if self.skimming:
                doubtful = RegistrationEstimate(
                    np.eye(4), uncertainty_mm=3.0, source="image", t_computed=time.time() - 1
                )
                before = TrackedFrame(self.case.image, frame_number=number, t_received=time.time())
                self.publisher.publish_frame(before, self.case.image_to_mri, doubtful)
                self.publisher.publish_margins(before, self.margins, doubtful)
                number += 1
            reg = RegistrationEstimate(
                np.eye(4),
                quality=self.quality,
                uncertainty_mm=1.0,
                source="image",
                t_computed=time.time() - 1,
            )
            frame = TrackedFrame(self.case.image, frame_number=number, t_received=time.time())
            if self.oversize_frames > 0:
                self.oversize_frames -= 1
                big = np.zeros((1024, 1100), np.uint8)
                self.publisher.publish_frame(
                    TrackedFrame(big, frame_number=number, t_received=time.time()),
                    self.case.image_to_mri,
                    reg,
                )
            else:
                self.publisher.publish_frame(frame, self.case.image_to_mri, reg)
            self.publisher.publish_margins(frame, self.margins, reg)
            self.publisher.publish_status({"fps": 30.0})
            number += 1
            self.sent = number
            self._stop.wait(1 / 30)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.publisher.close()


@pytest.fixture
def publishing():
    """Factory: start a publishing thread; all are stopped at teardown."""
    started: list[PublishingThread] = []

    def start(address: str, case, margins, **kwargs) -> PublishingThread:
        thread = PublishingThread(address, case, margins, **kwargs).start()
        started.append(thread)
        return thread

    yield start
    for thread in started:
        thread.stop()
