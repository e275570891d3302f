"""The image frozen on the scanner while the probe moves on (session 41): the scanner's freeze
button, or a frame grabber capturing a frozen screen, keeps sending one image with the probe's
live pose. Its margins are not the present: published STALE with the reason, not offered to
the registration, said once in the log; live again when the image changes."""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path

import numpy as np
import pytest
from pipeline_helpers import LoopbackDevice, wait_until
from test_live import Collector, _pipeline

from usnav.cli.cmd_run import _print_summary
from usnav.client import MarginMessage
from usnav.frames import TrackedFrame
from usnav.pipeline import frozen
from usnav.pipeline.config import PipelineOptions
from usnav.pipeline.frozen import FrozenImageMonitor
from usnav.protocol.display import STALE

SHAPE = (128, 96)  # rows, cols
PIXEL_MM = 0.2


def _pose(shift_mm: float) -> np.ndarray:
    """ImageToReference: 0.2 mm pixels, moved ``shift_mm`` along the sweep (z)."""
    pose = np.diag([PIXEL_MM, PIXEL_MM, 1.0, 1.0])
    pose[:3, 3] = [-10.0, 0.0, 40.0 + shift_mm]
    return pose


def _speckle(rng: np.random.Generator) -> np.ndarray:
    return rng.rayleigh(40.0, SHAPE).clip(0, 255).astype(np.uint8)


def test_an_unchanged_image_is_frozen_once_the_probe_moved_over_the_limit() -> None:
    rng = np.random.default_rng(1)
    image = _speckle(rng)
    monitor = FrozenImageMonitor(2.0)
    said = [monitor.observe(image, _pose(0.1 * k)) for k in range(40)]  # 0 .. 3.9 mm
    # 2.0 mm is not over the limit (frame 20); from 2.1 mm on, every frame says so
    assert not any(said[:21]) and all(said[21:])
    assert "moved 2.10 mm" in said[21] and "frozen on the scanner" in said[21]
    assert monitor.frozen_frames == 19
    # said as new once
    monitor2 = FrozenImageMonitor(2.0)
    news = []
    for k in range(40):
        monitor2.observe(image, _pose(0.1 * k))
        news.append(monitor2.newly_frozen)
    assert news.count(True) == 1 and news.index(True) == 21
    # a changed image ends it at once, and is the new reference to compare with
    assert monitor.observe(_speckle(rng), _pose(4.0)) == ""
    assert not monitor.frozen and monitor.moved_mm == 0.0


def test_a_live_image_never_is_and_a_still_probe_never_is() -> None:
    rng = np.random.default_rng(2)
    live = FrozenImageMonitor(2.0)
    # live speckle, the probe sweeping 10 mm: each frame differs
    assert not any(live.observe(_speckle(rng), _pose(0.05 * k)) for k in range(200))
    # a frozen image on a still probe (tracker jitter well under 2 mm): the overlay is right
    image = _speckle(rng)
    still = FrozenImageMonitor(2.0)
    jitter = rng.normal(0.0, 0.15, 200)
    assert not any(still.observe(image, _pose(j)) for j in jitter)
    # nothing watched when switched off
    off = FrozenImageMonitor(None)
    assert not any(off.observe(image, _pose(0.1 * k)) for k in range(60))


def test_a_re_encoded_frozen_image_is_still_unchanged_and_an_image_of_another_size_resets() -> None:
    rng = np.random.default_rng(3)
    image = _speckle(rng).astype(np.int16)
    monitor = FrozenImageMonitor(2.0)
    said = ""
    for k in range(40):
        # a compressed video's re-encoding noise: ±1 grey level on a tenth of the pixels
        noise = rng.integers(-1, 2, SHAPE) * (rng.random(SHAPE) < 0.1)
        said = monitor.observe((image + noise).clip(0, 255), _pose(0.1 * k))
    assert said, "re-encoded frames of one frozen image were taken for live ones"
    # another size (the depth changed): compared afresh, never with the old image
    bigger = np.pad(image, ((0, 32), (0, 0)))
    assert monitor.observe(bigger, _pose(10.0)) == "" and not monitor.frozen


def test_a_sparse_live_image_is_live() -> None:
    """A water bath's N-wire phantom: 99 % of the pixels black, a few wire echoes moving. A
    mean difference called such live frames frozen (142 of 158 replayed, session 41's review);
    the changed pixels are counted instead. Then the same image held still is frozen."""
    rng = np.random.default_rng(4)
    monitor = FrozenImageMonitor(2.0)
    said = []
    for k in range(60):
        image = np.zeros(SHAPE, np.uint8)
        image[100:104, :] = 255  # the bath's bottom, bright and still
        for wire in range(9):  # nine faint wire echoes, 4 × 4 px, drifting with the probe
            row = 20 + 8 * wire + (k // 3) % 6
            col = 20 + 6 * wire + rng.integers(0, 3)
            image[row : row + 4, col : col + 4] = 40
        said.append(monitor.observe(image, _pose(0.5 * k)))
    assert not any(said), next(s for s in said if s)
    still = np.zeros(SHAPE, np.uint8)
    still[60:64, 50:54] = 200  # one echo, then held: the first frame is the change
    held = [monitor.observe(still, _pose(40.0 + 0.5 * k)) for k in range(10)]
    assert not any(held[:5]) and all(held[5:])


class _FreezingScanner(LoopbackDevice):
    """The sweep at 20 Hz; while :attr:`freeze` is set, every frame carries the image of the
    frame the freeze began on, with its own (moving) pose."""

    def __init__(self, case: Path):
        self.freeze = threading.Event()
        self._held: np.ndarray | None = None
        super().__init__(case)

    def messages(self, frame: TrackedFrame, timestamp: float):
        if self.freeze.is_set():
            if self._held is None:
                self._held = frame.image
            frame = dataclasses.replace(frame, image=self._held)
        else:
            self._held = None
        return super().messages(frame, timestamp)


def test_frames_frozen_on_the_scanner_are_stale_until_the_image_changes(
    small_case: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    scanner = _FreezingScanner(small_case)
    pipeline = _pipeline(small_case, scanner.server.port, registration=False)
    pipeline.prepare()
    display = Collector(pipeline.endpoint)

    def frozen() -> list[MarginMessage]:
        return [m for m in display.of(MarginMessage) if "has not changed" in m.header.stale_reason]

    try:
        display.join(pipeline)
        with caplog.at_level(logging.INFO, logger="usnav.pipeline"):
            pipeline.start()
            assert wait_until(lambda: pipeline.counters.published >= 5, 30)
            assert not frozen()
            scanner.freeze.set()
            assert wait_until(lambda: len(frozen()) >= 3, 20)
            status = pipeline.status()
            assert status["display_state"] == STALE
            assert "has not changed" in status["display_reason"]
            for m in frozen():
                assert m.header.display_state == STALE
            assert pipeline.counters.problems.get("image_frozen", 0) >= 3
            scanner.freeze.clear()
            assert wait_until(
                lambda: "has not changed" not in pipeline.status()["display_reason"], 15
            )
        said = [r.getMessage() for r in caplog.records if "has not changed" in r.getMessage()]
        assert len(said) == 1, said  # once, not per frame
        assert any("changes again" in r.getMessage() for r in caplog.records)
        # the run's summary counts them
        _print_summary(pipeline, 0.0, None)
        frozen_count = pipeline.counters.problems["image_frozen"]
        assert f"({frozen_count} of the margins published went out STALE" in capsys.readouterr().out
    finally:
        pipeline.stop()
        display.close()
        scanner.close()


def test_the_watch_is_an_option_that_false_switches_off() -> None:
    assert PipelineOptions().frozen_image_motion_mm == 2.0
    assert PipelineOptions(frozen_image_motion_mm=False).frozen_image_motion_mm is None
    with pytest.raises(ValueError, match="true is not a number"):
        PipelineOptions(frozen_image_motion_mm=True)


def test_a_float_image_with_pixels_outside_the_field_of_view_is_judged_on_the_others() -> None:
    """A float image whose pixels outside the field of view are NaN (a scan-converted sector's
    corners): live frames were all "unchanged" (every comparison with NaN is false), so a
    sweeping probe was STALE on nearly every frame, and a frozen one must still be seen."""
    rng = np.random.default_rng(4)

    def sector(image: np.ndarray) -> np.ndarray:
        out = image.astype(np.float32) / 255.0
        out[:16, :16] = np.nan
        return out

    live = FrozenImageMonitor(2.0)
    assert not any(live.observe(sector(_speckle(rng)), _pose(0.1 * k)) for k in range(60))
    frozen = FrozenImageMonitor(2.0)
    image = sector(_speckle(rng))
    said = [frozen.observe(image, _pose(0.1 * k)) for k in range(40)]
    assert not any(said[:21]) and all(said[21:])
    # an image with no finite pixel at all cannot be compared: not called frozen
    blank = FrozenImageMonitor(2.0)
    nothing = np.full(SHAPE, np.nan, np.float32)
    assert not any(blank.observe(nothing, _pose(0.1 * k)) for k in range(40))


def _narrow(rng: np.random.Generator) -> np.ndarray:
    """A narrow-range image: grey levels 104–186 (2 % of the range: 1.6 levels, under a
    frame grabber's re-encoding noise; PLUS's water-tank video has frames spanning 28)."""
    return (104 + rng.rayleigh(20.0, SHAPE)).clip(104, 186).astype(np.uint8)


def _captured(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A frame grabber's capture: ±2 grey levels on 30 % of the pixels, every capture anew."""
    noise = rng.integers(-2, 3, SHAPE) * (rng.random(SHAPE) < 0.3)
    return (image.astype(np.int16) + noise).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("floor", [frozen.NOISE_GREY_LEVELS, 0])
def test_grabber_noise_on_a_narrow_range_image_is_unchanged(monkeypatch, floor: int) -> None:
    """Each image captured 3 times, each capture noisy: every repeat recognised (at its first
    capture's pose), whatever the image's range; without the floor in grey levels (floor 0,
    session 43's first rule) many were taken for new images."""
    monkeypatch.setattr(frozen, "NOISE_GREY_LEVELS", floor)
    rng = np.random.default_rng(5)
    monitor = FrozenImageMonitor(2.0)
    repeats = recognised = 0
    for k in range(90):
        if k % 3 == 0:
            image = _narrow(rng)
        monitor.observe(_captured(image, rng), _pose(0.9 * k), k / 30.0)
        if k % 3:
            repeats += 1
            recognised += monitor.repeat and not monitor.frozen
        else:
            assert not monitor.repeat, f"frame {k}: a new image taken for a repeat"
    if floor:
        assert recognised == repeats == 60
    else:
        assert recognised < repeats - 10


def test_a_live_narrow_range_frame_is_changed_and_a_held_noisy_one_frozen() -> None:
    """The probe moving 0.5 mm a frame over a narrow-range scene: speckle shifts a pixel or
    more and partly decorrelates — changed, never frozen. The same image then held while the
    probe moves on, captured with noise: frozen once past the repeat window and 2 mm."""
    rng = np.random.default_rng(6)
    scene = 104 + rng.rayleigh(20.0, (SHAPE[0], SHAPE[1] + 200)).clip(0, 82)
    monitor = FrozenImageMonitor(2.0)
    for k in range(60):
        fresh = 104 + rng.rayleigh(20.0, SHAPE).clip(0, 82)  # half decorrelated
        image = (0.5 * scene[:, 2 * k : 2 * k + SHAPE[1]] + 0.5 * fresh).astype(np.uint8)
        assert monitor.observe(image, _pose(0.5 * k), k / 30.0) == "", f"frame {k}"
        assert not monitor.repeat, f"live frame {k} taken for a repeat"
    said = [
        monitor.observe(_captured(image, rng), _pose(30 + 0.5 * k), 2 + k / 30) for k in range(20)
    ]
    assert not any(said[:7]) and all(said[8:])


def test_a_sparse_image_with_faint_echoes_and_a_float_image_stay_changed() -> None:
    """The floor is in grey levels of integer images: an N-wire-like frame whose wire echoes
    are only 12 levels above black still changes as they move; a float image (any scale, NaN
    outside) keeps the 2 %-of-range rule alone — its small changes are changes."""
    rng = np.random.default_rng(7)
    monitor = FrozenImageMonitor(2.0)
    for k in range(40):
        image = np.zeros(SHAPE, np.uint8)
        image[100:104, :] = 255
        for wire in range(9):
            row = 20 + 8 * wire + 2 * (k % 4)  # 2 pixels a frame: the sampled grid sees it
            col = 20 + 6 * wire + rng.integers(0, 3)
            image[row : row + 4, col : col + 4] = 12
        assert monitor.observe(image, _pose(0.5 * k), k / 30.0) == ""
        assert k == 0 or not monitor.repeat, f"live frame {k} taken for a repeat"
    float_monitor = FrozenImageMonitor(2.0)
    for k in range(20):
        image = rng.rayleigh(0.01, SHAPE).astype(np.float32)  # range ~0.05
        image[:, :8] = np.nan
        float_monitor.observe(image, _pose(0.5 * k), k / 30.0)
        assert not float_monitor.repeat, f"float frame {k} taken for a repeat"
