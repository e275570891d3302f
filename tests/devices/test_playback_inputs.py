"""What the playback server does with a recording's own calibration and clock: the calibration
given wins over the file's (as in every other command, and said once), a relative clock that
starts below 0 is sent from 0, frames without a timestamp are refused with one line."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from igtl_helpers import served_frames

from usnav.devices.playback import PlaybackServer
from usnav.errors import InputError
from usnav.frames import TrackedFrame, TrackedTransform
from usnav.io.sequence import write_sequence

FILE_CALIBRATION = np.diag([0.3, 0.3, 1.0, 1.0])
GIVEN_CALIBRATION = np.diag([0.1, 0.12, 1.0, 1.0])


def _recording(path: Path, stamps: list[float]) -> Path:
    frames = []
    for k, t in enumerate(stamps):
        pose = np.eye(4)
        pose[:3, 3] = [k, 0, 0]
        frames.append(
            TrackedFrame(
                image=np.full((8, 10), k, np.uint8),
                transforms={
                    "ProbeToReference": TrackedTransform(pose),
                    "ImageToProbe": TrackedTransform(FILE_CALIBRATION),
                },
                t_device=t,
                frame_number=k,
            )
        )
    return write_sequence(path, frames)


def _play(recording: Path, calibration: np.ndarray | None) -> list[TrackedFrame]:
    return served_frames(recording, 4, calibration, ["ProbeToReference"])


def test_the_calibration_given_wins_over_the_file_s_and_is_said(tmp_path: Path, caplog) -> None:
    recording = _recording(tmp_path / "cal.igs.mha", [0.0, 0.1, 0.2, 0.3])
    with caplog.at_level(logging.WARNING, logger="usnav.devices.playback"):
        frames = _play(recording, GIVEN_CALIBRATION)
    said = [r.getMessage() for r in caplog.records if "ImageToProbe" in r.getMessage()]
    assert len(said) == 1 and "calibration given is used" in said[0]
    for k, frame in enumerate(frames):
        pose = np.eye(4)
        pose[:3, 3] = [k, 0, 0]
        np.testing.assert_allclose(
            frame.transforms["ImageToReference"].matrix, pose @ GIVEN_CALIBRATION, atol=1e-5
        )
    # without one, the file's own is used, and nothing is said
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="usnav.devices.playback"):
        frames = _play(recording, None)
    assert not [r for r in caplog.records if "ImageToProbe" in r.getMessage()]
    np.testing.assert_allclose(
        frames[0].transforms["ImageToReference"].matrix, FILE_CALIBRATION, atol=1e-5
    )


def test_a_clock_starting_below_zero_is_sent_from_zero(tmp_path: Path) -> None:
    recording = _recording(tmp_path / "neg.igs.mha", [-2.0, -1.9, -1.8, -1.7])
    frames = _play(recording, None)
    np.testing.assert_allclose([f.t_device for f in frames], [0.0, 0.1, 0.2, 0.3], atol=1e-6)


def test_frames_without_a_timestamp_are_refused_naming_the_file(tmp_path: Path) -> None:
    recording = _recording(tmp_path / "nan.igs.mha", [0.0, float("nan"), 0.2, 0.3])
    playback = PlaybackServer(recording, port=0)
    with pytest.raises(InputError, match=r"nan\.igs\.mha.*1 of 4 frame\(s\) have no finite"):
        playback.connect()
    playback.close()
