"""The arrival clock: how late a frame arrived, by the device's own clock (a backlog flushed
after a stall must not look fresh)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usnav.pipeline.arrival import ArrivalClock


def feed(clock: ArrivalClock, frames: list[tuple[float, float]]) -> np.ndarray:
    """Lateness of each (device s, host s) frame, in order."""
    return np.array([clock.lateness_s(d, h) for d, h in frames])


def steady(t0_host: float, seconds: float, rate: float, fps: float = 30.0, t0_dev: float = 100.0):
    n = int(seconds * fps)
    host = t0_host + np.arange(n) / fps
    return [(t0_dev + (h - t0_host) * rate, h) for h in host]


@settings(max_examples=40, deadline=None)
@given(
    rate=st.floats(0.1, 10.0),
    jitter=st.floats(0.0, 0.02),
    seed=st.integers(0, 1000),
)
def test_a_steady_stream_is_never_late(rate: float, jitter: float, seed: int) -> None:
    """Any replay rate (the bench replays at 0.5×), receipt jitter up to 20 ms."""
    rng = np.random.default_rng(seed)
    frames = [(d, h + rng.uniform(0, jitter)) for d, h in steady(0.0, 6.0, rate)]
    assert feed(ArrivalClock(1.0), frames).max() == 0.0


@pytest.mark.parametrize("rate", [1.0, 0.5])
def test_a_backlog_flushed_after_a_stall_is_late_until_it_catches_up(rate: float) -> None:
    """The device stalls 8 s holding its frames, then sends them all within 0.4 s (what a
    frozen `usnav replay` did when resumed: 51 margins of 0.8-7.9 s old images went out as
    LIVE)."""
    clock = ArrivalClock(1.0)
    before = steady(0.0, 4.0, rate)
    assert feed(clock, before).max() == 0.0
    last_dev, last_host = before[-1]
    made = np.arange(1, 241) / 30.0  # the 8 s of frames the device made meanwhile
    burst_host = last_host + 8.0 + np.linspace(0.0, 0.4, made.size)
    late = feed(clock, [(last_dev + m * rate, h) for m, h in zip(made, burst_host, strict=True)])
    expected = burst_host - (last_host + made)  # when each arrived minus when it was made
    judged = expected > clock.tolerance_s
    np.testing.assert_allclose(late[judged], expected[judged], atol=1e-6)
    assert late[0] == pytest.approx(8.0 - 1 / 30.0)
    assert clock.in_backlog  # the last of the burst is still ~0.4 s old
    after = steady(burst_host[-1] + 1 / 30.0, 1.0, rate, t0_dev=last_dev + 8.4 * rate)
    assert feed(clock, after).max() == 0.0 and not clock.in_backlog


def test_a_silence_with_the_clock_running_is_not_a_backlog() -> None:
    """A frozen scanner whose clock runs on: the next frame is new."""
    clock = ArrivalClock(1.0)
    feed(clock, steady(0.0, 3.0, 1.0))
    assert feed(clock, steady(8.0, 2.0, 1.0, t0_dev=108.0)).max() == 0.0


def test_a_clock_that_goes_back_starts_over() -> None:
    """A restarted server, or a replay from its start: nothing judged until the rate is known."""
    clock = ArrivalClock(1.0)
    feed(clock, steady(0.0, 3.0, 1.0, t0_dev=500.0))
    late = feed(clock, steady(9.0, 3.0, 1.0, t0_dev=0.0))
    assert late.max() == 0.0 and clock.restarts == 1


def test_a_device_that_stamps_nothing_is_not_judged() -> None:
    """Every frame stamped 0: no rate, so only the receipt age counts (as before)."""
    clock = ArrivalClock(1.0)
    frames = [(0.0, h) for _, h in steady(0.0, 3.0, 1.0)] + [(0.0, 10.0), (0.0, 10.03)]
    assert feed(clock, frames).max() == 0.0 and clock.rate is None


def test_a_clock_left_behind_is_dropped_after_frames_arrive_at_its_pace() -> None:
    """A device whose clock stopped while it paused (5 s): then frames come at its pace. Late
    for ``paced_s``, then taken for an offset."""
    clock = ArrivalClock(1.0, paced_s=1.0)
    feed(clock, steady(0.0, 3.0, 1.0))
    resumed = steady(8.0, 3.0, 1.0, t0_dev=103.0 + 1 / 30.0)
    late = feed(clock, resumed)
    hosts = np.array([h for _, h in resumed])
    assert np.all(late[hosts < 8.9] > 4.5)
    assert np.all(late[hosts > 9.1] == 0.0) and clock.offsets_dropped == 1
