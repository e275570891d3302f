"""A recording whose timestamps step back (``usnav record`` of a server that restarted) is
replayed at its own pace on a clock that keeps running: the frames after the step were sent in
a burst (every one overdue against the raw timestamps) and stamped back in time.

Real files, a real server and client on loopback; wall-clock bounds are lower bounds only
(a slow machine can only make a replay longer), and hang guards.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest

from usnav.devices.config import ProbeConfig
from usnav.devices.playback import PlaybackServer, device_clock
from usnav.devices.probe import ProbeClient
from usnav.frames import TrackedFrame, TrackedTransform
from usnav.io.sequence import write_sequence

FPS = 30.0
N = 60
STEP_AFTER = 20  # frames 0..19 at 50 s on, then the recorded server restarted at 1 s
RATE = 2.0


def _stamps() -> np.ndarray:
    k = np.arange(N, dtype=np.float64)
    return np.where(k < STEP_AFTER, 50.0 + k / FPS, 1.0 + (k - STEP_AFTER) / FPS)


@pytest.fixture(scope="module")
def restarted(tmp_path_factory) -> Path:
    """60 frames at 30 fps whose timestamps go back 49 s after frame 19."""
    path = tmp_path_factory.mktemp("restart") / "restarted.igs.mha"
    rng = np.random.default_rng(7)
    pose = np.eye(4)
    frames = [
        TrackedFrame(
            image=rng.integers(0, 256, (16, 24), dtype=np.uint8),
            transforms={"ProbeToTracker": TrackedTransform(pose)},
            t_device=float(t),
            frame_number=k,
        )
        for k, t in enumerate(_stamps())
    ]
    write_sequence(path, frames)
    return path


# -- the clock itself ------------------------------------------------------------------------
def test_a_recording_without_a_step_back_keeps_its_timestamps_exactly() -> None:
    t = 100.0 + np.arange(30) / FPS
    t[7] = t[6]  # a repeated stamp is not a step back
    clock, period = device_clock(t)
    assert np.array_equal(clock, t)
    assert period == pytest.approx(1 / FPS)


def test_a_step_back_counts_as_one_frame_period_and_the_rest_keep_their_intervals() -> None:
    t = _stamps()
    clock, period = device_clock(t)
    assert period == pytest.approx(1 / FPS)
    assert np.array_equal(clock[:STEP_AFTER], t[:STEP_AFTER])  # the same values up to the step
    assert clock[STEP_AFTER] - clock[STEP_AFTER - 1] == pytest.approx(period)
    np.testing.assert_allclose(np.diff(clock[STEP_AFTER:]), np.diff(t[STEP_AFTER:]))
    # the clock spans the frames' own length: 59 periods, not 59 periods minus the 49 s step
    assert clock[-1] - clock[0] == pytest.approx((N - 1) / FPS)


def test_every_step_back_and_non_finite_stamp_counts_as_one_period() -> None:
    t = np.array([10.0, 10.1, 10.2, 3.0, 3.1, np.nan, 7.0, 7.1, 0.5])
    clock, period = device_clock(t)
    assert period == pytest.approx(0.1)
    assert np.all(np.isfinite(clock)) and np.all(np.diff(clock) > 0)
    np.testing.assert_allclose(np.diff(clock), 0.1)


def test_the_qa_recording_with_a_server_restart_lasts_as_long_as_its_frames() -> None:
    """239 frames at 30 fps with one step of −4.5 s after frame 135, as ``usnav record`` wrote
    it across a restart: the replay clock spans 238 periods (7.9 s), not 3.4 s."""
    period = 0.0333824
    t = 13.282936332 + period * np.arange(239)
    t[136:] -= 4.5 + period
    clock, found = device_clock(t)
    assert found == pytest.approx(period)
    assert clock[-1] - clock[0] == pytest.approx(238 * period)


# -- on the wire -----------------------------------------------------------------------------
def _receive(probe: ProbeClient, count: int) -> list[TrackedFrame]:
    frames = [probe.get_frame(30) for _ in range(count)]  # 30 s per frame: a hang guard
    assert None not in frames, f"{frames.count(None)} of {count} frames never came"
    return frames  # type: ignore[return-value]


def test_replay_after_a_step_back_is_paced_and_stamped_on_a_running_clock(restarted) -> None:
    playback = PlaybackServer(restarted, port=0, rate=RATE).connect()
    with playback, ProbeClient(ProbeConfig(port=playback.port, pairing_wait_s=0)) as probe:
        frames = _receive(probe, N)
        assert playback.wait(30)
    assert [f.frame_number for f in frames] == list(range(N))
    stamps = np.array([f.t_device for f in frames])
    # the frames before the step go out with the file's timestamps, as for any recording
    np.testing.assert_allclose(stamps[:STEP_AFTER], _stamps()[:STEP_AFTER], atol=1e-6)
    # then the device's clock runs on: no step back on the wire, one period at the restart
    assert all(b > a for a, b in itertools.pairwise(stamps))
    np.testing.assert_allclose(np.diff(stamps), 1 / FPS, atol=1e-3)
    # paced by the frames' intervals: the whole replay takes (N − 1) periods at RATE (a slow
    # machine only adds); the frames after the step came in a burst, ~1/3 of that
    took = frames[-1].t_received - frames[0].t_received
    assert took >= 0.8 * (N - 1) / FPS / RATE, f"{took:.2f} s"


def test_a_pause_after_a_step_back_still_runs_the_clock_on(restarted) -> None:
    """``stop()`` pauses the replay; its clock runs on meanwhile (the frames after the pause
    are stamped later by it) and the frames after it are paced, not sent in a burst."""
    pause_s = 1.0
    resume_at = STEP_AFTER + 10
    playback = PlaybackServer(restarted, port=0, rate=RATE).connect()
    with playback, ProbeClient(ProbeConfig(port=playback.port, pairing_wait_s=0)) as probe:
        frames = _receive(probe, resume_at)
        playback.stop()
        time.sleep(pause_s)  # the length of the pause, not a wait for something
        playback.start()
        frames += _receive(probe, N - resume_at)
        assert playback.wait(30)
    stamps = np.array([f.t_device for f in frames])
    steps = np.diff(stamps)
    assert np.all(steps > 0)
    jumps = np.flatnonzero(steps > 2 / FPS)
    assert len(jumps) == 1, steps  # the pause, and no other jump (not the file's step back)
    paused = int(jumps[0])
    assert paused >= resume_at - 1
    # the player noticed the pause within a frame or so of stop(): half of it is a safe floor
    assert steps[paused] >= 0.5 * pause_s * RATE
    rest = frames[paused + 1 :]
    took = rest[-1].t_received - rest[0].t_received
    assert took >= 0.8 * (len(rest) - 1) / FPS / RATE, f"{took:.2f} s"
