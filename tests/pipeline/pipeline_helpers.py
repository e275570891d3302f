"""Helpers shared by the pipeline tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from waiting import wait_until

from usnav.config.calibration import load_calibration
from usnav.devices.playback import frame_messages
from usnav.frames import TrackedFrame
from usnav.igtl import IgtlServer
from usnav.igtl.codec import Message
from usnav.io.sequence import read_sequence

__all__ = ["LoopbackDevice", "free_port", "wait_until"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LoopbackDevice:
    """A PLUS-like OpenIGTLink server on loopback serving a case's sweep at 20 Hz, each frame's
    messages passed through ``alter`` first (a test changes what a real device would: drops
    the TRANSFORMs when tracking is lost, grows the image when the depth changes).

    Parameters
    ----------
    case
        A simulated case folder (its ``sweep.igs.mha`` and ``calibration.toml``).
    alter
        ``(frame, messages) -> messages`` for each frame sent (None: sent as recorded).
    """

    def __init__(
        self,
        case: Path,
        alter: Callable[[TrackedFrame, list[Message]], list[Message]] | None = None,
    ):
        with read_sequence(case / "sweep.igs.mha") as seq:
            self.frames = [seq.frame(i) for i in range(len(seq))]
        self.image_to_probe = load_calibration(case / "calibration.toml").image_to_probe
        self.alter = alter
        self.server = IgtlServer(port=0).start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def messages(self, frame: TrackedFrame, timestamp: float) -> list[Message]:
        """What a device sends for ``frame``: its IMAGE and TRANSFORMs."""
        return frame_messages(frame, timestamp=timestamp, image_to_probe=self.image_to_probe)

    def _run(self) -> None:
        i = 0
        t0 = time.time()
        while not self._stop.wait(0.05):
            frame = self.frames[i % len(self.frames)]
            messages = self.messages(frame, t0 + 0.05 * i)
            if self.alter is not None:
                messages = self.alter(frame, messages)
            self.server.broadcast(messages)
            i += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.server.stop()
