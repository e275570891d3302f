"""Not a test module: code as a user embeds usnav, type-checked by mypy (pyproject's
[tool.mypy] files, run by tests/test_types.py). A method the base class types as returning the
base class (``Device``) instead of the device itself makes mypy fail here."""

from __future__ import annotations

from pathlib import Path

from usnav.client import Subscriber
from usnav.devices import PlaybackServer, ProbeClient, ProbeConfig
from usnav.frames import TrackedFrame, TransformStatus


def read_a_playback(recording: Path) -> list[TrackedFrame]:
    frames: list[TrackedFrame] = []
    with PlaybackServer(recording, port=0, rate="max") as playback:
        port: int = playback.port
        with ProbeClient(ProbeConfig(port=port)) as probe:
            for frame in probe.frames(timeout_s=5.0):
                status: TransformStatus = frame.transform("ProbeToReference").status
                if status is TransformStatus.OK:
                    frames.append(frame)
        finished: bool = playback.wait(1.0)
        assert finished or not frames
    return frames


def connect_then_start(recording: Path) -> int:
    playback = PlaybackServer(recording, port=0).connect()
    try:
        return playback.start().frame_count
    finally:
        playback.close()


def newest_margin(address: str) -> object:
    with Subscriber(address) as subscriber:
        return subscriber.receive_latest(timeout_s=0.1).get("margin")
