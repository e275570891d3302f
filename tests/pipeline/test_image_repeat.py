"""A slow scanner behind a faster frame grabber (session 43): PLUS takes a scanner's images by
capturing its screen at 30 frames/s while the scanner updates 8–15 times a second, so each image
comes 2–4 times, each time with a new pose. A repeat belongs to its image's first frame: drawn
at that frame's pose (marked ``repeat_of``), never called frozen, not offered to the
registration; a real freeze is still flagged once the image outlives a repeat."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pipeline_helpers import LoopbackDevice, wait_until
from test_live import Collector, _pipeline

from usnav.cli.cmd_run import _print_summary
from usnav.client import FrameMessage, MarginMessage
from usnav.frames import TrackedFrame
from usnav.pipeline.config import PipelineOptions
from usnav.pipeline.frozen import REPEAT_S, FrozenImageMonitor
from usnav.pipeline.live import LivePipeline

SHAPE = (128, 96)  # rows, cols
GRAB_S = 1.0 / 30.0


def _pose(shift_mm: float) -> np.ndarray:
    """ImageToReference: 0.2 mm pixels, moved ``shift_mm`` along the sweep (z)."""
    pose = np.diag([0.2, 0.2, 1.0, 1.0])
    pose[:3, 3] = [-10.0, 0.0, 40.0 + shift_mm]
    return pose


def _speckle(rng: np.random.Generator) -> np.ndarray:
    return rng.rayleigh(40.0, SHAPE).clip(0, 255).astype(np.uint8)


def _grabbed(rng: np.random.Generator, repeats: list[int], speed_mm_s: float, noise: bool):
    """(image, pose, t, index of the frame the image first came with) per grabber frame."""
    out, j = [], 0
    for k in repeats:
        image = _speckle(rng)
        first = j
        for _ in range(k):
            shown = image
            if noise:  # the grabber's own capture noise: ±1 grey level on 30 % of the pixels
                jitter = rng.integers(-1, 2, SHAPE) * (rng.random(SHAPE) < 0.3)
                shown = (image.astype(np.int16) + jitter).clip(0, 255)
            out.append((shown, _pose(speed_mm_s * j * GRAB_S), j * GRAB_S, first))
            j += 1
    return out


@pytest.mark.parametrize("noise", [False, True])
def test_each_repeat_is_drawn_at_its_image_first_pose_and_never_called_frozen(noise: bool) -> None:
    rng = np.random.default_rng(9431)
    repeats = list(rng.integers(2, 5, 60))  # a scanner at 7.5–15 images/s
    frames = _grabbed(rng, repeats, 28.0, noise)  # 28 mm/s: 0.9–2.8 mm between captures
    monitor = FrozenImageMonitor(2.0)
    for j, (image, pose, t, first) in enumerate(frames):
        assert monitor.observe(image, pose, t) == ""  # never frozen
        assert monitor.repeat == (j != first)
        assert monitor.image_pose is not None
        np.testing.assert_array_equal(monitor.image_pose, frames[first][1])
        assert monitor.image_age_s == pytest.approx((j - first) * GRAB_S)
    assert monitor.repeated_frames == sum(repeats) - len(repeats)
    assert monitor.frozen_frames == 0
    # session 41's rule (no repeats) drew them at their own poses and called the late ones
    # frozen: what this replaces
    old = FrozenImageMonitor(2.0, repeat_s=None)
    said = [old.observe(image, pose, t) for image, pose, t, _ in frames]
    assert any(said) and old.repeated_frames == 0


def test_a_freeze_behind_the_grabber_is_flagged_once_the_image_outlives_a_repeat() -> None:
    rng = np.random.default_rng(9432)
    image = _speckle(rng)
    monitor = FrozenImageMonitor(2.0)
    verdicts = []
    for j in range(30):  # 1 s of one image, the probe at 14 mm/s
        said = monitor.observe(image, _pose(14.0 * j * GRAB_S), j * GRAB_S)
        verdicts.append((monitor.repeat, bool(said)))
        if monitor.repeat:  # until then, at the image's own pose
            np.testing.assert_array_equal(monitor.image_pose, _pose(0.0))
    within = int(np.floor(REPEAT_S / GRAB_S + 1e-9))  # frames 1..7 are at most 0.25 s old
    assert verdicts[0] == (False, False)
    assert all(v == (True, False) for v in verdicts[1 : within + 1])
    assert all(v == (False, True) for v in verdicts[within + 1 :])  # 3.7 mm already
    assert monitor.frozen_frames == 30 - within - 1 and monitor.repeated_frames == within


def test_a_still_probe_with_a_repeating_image_is_never_flagged() -> None:
    rng = np.random.default_rng(9433)
    monitor = FrozenImageMonitor(2.0)
    frames = _grabbed(rng, [3] * 40, 0.0, True)
    jitter = rng.normal(0.0, 0.15, len(frames))
    assert not any(
        monitor.observe(im, _pose(j), t) for (im, _, t, _), j in zip(frames, jitter, strict=True)
    )
    assert monitor.repeated_frames == 80 and monitor.frozen_frames == 0
    # and an image unchanged for long on a still probe: not frozen, placed at its first pose
    image = _speckle(rng)
    held = [monitor.observe(image, _pose(j), k * GRAB_S) for k, j in enumerate(jitter[:60])]
    assert not any(held) and monitor.repeat and monitor.image_age_s == pytest.approx(59 * GRAB_S)
    np.testing.assert_array_equal(monitor.image_pose, _pose(jitter[0]))


def test_a_first_arrival_the_frame_path_skipped_is_still_the_pose_of_its_repeats() -> None:
    """see() takes every frame, judge() only those the frame path takes (the newest wins)."""
    rng = np.random.default_rng(9434)
    frames = _grabbed(rng, [3] * 10, 28.0, False)
    monitor = FrozenImageMonitor(2.0)
    arrivals = [monitor.see(image, j) for j, (image, *_) in enumerate(frames)]
    assert [a.first for a in arrivals] == [first for *_, first in frames]
    for j in (4, 5, 7, 8):  # frames 3 and 6 (first arrivals) were skipped
        first = arrivals[j].first
        monitor.judge(arrivals[j], frames[j][1], frames[j][2], frames[first][1],
                      frames[first][2], SHAPE)  # fmt: skip
        assert monitor.repeat
        np.testing.assert_array_equal(monitor.image_pose, frames[first][1])


def test_the_window_is_an_option_that_false_switches_off() -> None:
    assert PipelineOptions().image_repeat_s == REPEAT_S
    assert PipelineOptions(image_repeat_s=False).image_repeat_s is None
    with pytest.raises(ValueError, match="less than or equal to 1"):
        PipelineOptions(image_repeat_s=2.0)


class _SlowScanner(LoopbackDevice):
    """The sweep at 20 Hz, each image shown 3 times (the scanner at 6.7 images/s behind the
    grabber) with each frame's own, moving pose."""

    def __init__(self, case: Path):
        self._held: np.ndarray | None = None
        self._sent = 0
        super().__init__(case)

    def messages(self, frame: TrackedFrame, timestamp: float):
        if self._sent % 3 == 0 or self._held is None:
            self._held = frame.image
        self._sent += 1
        return super().messages(dataclasses.replace(frame, image=self._held), timestamp)


@contextlib.contextmanager
def _running(case: Path, device: LoopbackDevice) -> Iterator[tuple[LivePipeline, Collector]]:
    """A pipeline on ``device`` (no registration) and a display joined to it; all closed."""
    pipeline = _pipeline(case, device.server.port, registration=False)
    try:
        pipeline.prepare()
        display = Collector(pipeline.endpoint)
        try:
            display.join(pipeline)
            yield pipeline, display
        finally:
            pipeline.stop()
            display.close()
    finally:
        device.close()


def test_a_repeating_grabber_s_margins_are_drawn_at_each_image_own_pose(
    small_case: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    with _running(small_case, _SlowScanner(small_case)) as (pipeline, display):
        with caplog.at_level(logging.INFO, logger="usnav.pipeline"):
            pipeline.start()
            assert wait_until(lambda: pipeline.counters.repeated >= 20, 40)
            pipeline.stop()
        # the truth, from the images the display was sent: a frame showing the same pixels as
        # the frame before it repeats the first of that run
        images = {f.header.frame_number: f.image for f in display.of(FrameMessage)}
        numbers = sorted(images)
        first_of, run_start = {}, None
        for before, number in zip([None, *numbers[:-1]], numbers, strict=True):
            same = before is not None and np.array_equal(images[before], images[number])
            run_start = run_start if same else number
            first_of[number] = run_start
        first_of = {n: f for n, f in first_of.items() if f != numbers[0]}  # the run cut off
        margins = {
            m.header.frame_number: m
            for m in display.of(MarginMessage)
            if m.header.image_to_mri is not None and m.header.frame_number in first_of
        }
        checked = 0
        for number, m in margins.items():
            first = first_of[number]
            assert m.header.repeat_of == (None if first == number else first)
            assert "has not changed" not in m.header.display_reason  # never called frozen
            if m.header.repeat_of is not None and first in margins:
                # drawn at the pose its image came with, not at its own
                np.testing.assert_allclose(
                    m.header.image_to_mri, margins[first].header.image_to_mri, atol=1e-9
                )
                assert 0 < m.header.image_age_s <= REPEAT_S
                checked += 1
        assert checked >= 10, f"{checked} repeats had their first frame's margin to compare"
        # the images' own poses differ (a repeat drawn at its own would be elsewhere)
        news = sorted(n for n, m in margins.items() if m.header.repeat_of is None)
        placed = [margins[n].header.image_to_mri[:3, 3] for n in news[:2]]
        assert np.abs(placed[1] - placed[0]).max() > 0.1
        assert pipeline.counters.problems.get("image_frozen", 0) == 0
        assert pipeline.status()["frames_repeated"] == pipeline.counters.repeated >= checked
        said = [r.getMessage() for r in caplog.records if "repeats the image" in r.getMessage()]
        assert len(said) == 1, said  # once a run
        _print_summary(pipeline, 0.0, None)
        assert "repeated the image of an earlier frame" in capsys.readouterr().out
