"""A patient reference moved against the tracker since the registration was checked
(session 38): the display is told at the first frame after the move, not 8 s later when
the images contradict the registration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pipeline_helpers import free_port, wait_until
from scipy.spatial.transform import Rotation
from test_live import Collector, _pipeline, worker_and_window

from usnav.cli.cmd_run import status_line
from usnav.client import MarginMessage, StatusMessage
from usnav.devices import serve_in_subprocess
from usnav.frames import TrackedFrame, TrackedTransform, TransformStatus
from usnav.io.sequence import read_sequence, write_sequence
from usnav.pipeline.reference_motion import (
    ReferenceMotionMonitor,
    image_corners_mm,
    moved_mm,
    reference_to_tracker,
)
from usnav.protocol.display import REFERENCE_MOVED_PREFIX

SHAPE = (80, 100)  # rows, cols
IMAGE_TO_REFERENCE = np.diag([0.2, 0.2, 1.0, 1.0])
IMAGE_TO_REFERENCE[:3, 3] = [-10.0, 5.0, 30.0]


def _pose(rotvec_deg=(0.0, 0.0, 0.0), shift_mm=(0.0, 0.0, 0.0)) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = Rotation.from_rotvec(rotvec_deg, degrees=True).as_matrix()
    m[:3, 3] = shift_mm
    return m


BASE = _pose((10.0, -20.0, 5.0), (100.0, -50.0, 900.0))


def test_moved_mm_is_the_anatomys_displacement_at_the_points() -> None:
    """Reference: each point placed through the old pose into the tracker, back through the
    new one (explicit inverses, one point at a time)."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        then = _pose(rng.normal(0, 20, 3), rng.normal(0, 200, 3))
        now = then @ _pose(rng.normal(0, 3, 3), rng.normal(0, 3, 3))
        pts = rng.normal(0, 40, (5, 3))
        expected = max(
            np.linalg.norm((np.linalg.inv(now) @ then @ np.append(p, 1.0))[:3] - p) for p in pts
        )
        assert moved_mm(then, now, pts) == pytest.approx(expected, abs=1e-9)
    # a pure shift of the reference by 3 mm moves every point by 3 mm
    assert moved_mm(BASE, _pose(shift_mm=(0, 3, 0)) @ BASE, np.zeros((1, 3))) == pytest.approx(3)
    corners = image_corners_mm(IMAGE_TO_REFERENCE, SHAPE)
    assert corners.shape == (4, 3)
    assert corners[3] == pytest.approx([-10.0 + 0.2 * 99, 5.0 + 0.2 * 79, 30.0])


def _watch(monitor: ReferenceMotionMonitor, pose: np.ndarray, key) -> str:
    return monitor.observe(pose, IMAGE_TO_REFERENCE, SHAPE, checked_key=key)


def test_a_move_is_doubted_at_once_and_cleared_only_by_a_check_on_agreeing_frames() -> None:
    monitor = ReferenceMotionMonitor(2.0, window_frames=10)
    jitter = np.random.default_rng(5)
    for _ in range(10):  # checked on steady frames (tracking jitter ~0.1 mm)
        assert _watch(monitor, _pose(shift_mm=jitter.normal(0, 0.1, 3)) @ BASE, (1, 1.0)) == ""
    assert monitor.motion_mm is not None and monitor.motion_mm < 0.5
    bumped = _pose((0, 0, 1.0), (3.0, 0, 0)) @ BASE
    why = _watch(monitor, bumped, (1, 1.0))
    assert why.startswith(REFERENCE_MOVED_PREFIX) and "since the frames the registration" in why
    assert "; " not in why  # the bench's restatement splits reasons there
    # the move as the worker is offered it (Reference now -> Reference at the check), once
    last_checked = monitor._anchor[-1]  # the newest pose of the frames checked on
    assert monitor.newly_moved
    assert monitor.reference_change == pytest.approx(np.linalg.inv(last_checked) @ bumped)
    assert monitor.motion_mm is not None and monitor.motion_mm > 3.0
    # a check (a confirmation) made while the window still holds frames from before the move
    # says nothing about now: the doubt stays
    for _ in range(5):
        assert _watch(monitor, bumped, (1, 2.0)).startswith(REFERENCE_MOVED_PREFIX)
        assert not monitor.newly_moved  # the same move
    # a check on frames that all agree (the window has turned over) anchors the new pose
    for _ in range(10):
        _watch(monitor, bumped, (1, 2.0))
    assert _watch(monitor, bumped, (2, 3.0)) == ""
    assert _watch(monitor, bumped, (2, 3.0)) == "" and monitor.motion_mm == pytest.approx(0)
    # moving back is a move too
    assert _watch(monitor, BASE, (2, 3.0)).startswith(REFERENCE_MOVED_PREFIX)
    assert monitor.doubted_frames == 1 + 5 + 10 + 1


def test_a_first_check_across_a_move_is_doubted() -> None:
    monitor = ReferenceMotionMonitor(2.0, window_frames=10)
    for _ in range(5):  # the navigation registration: never LIVE, nothing to say
        assert _watch(monitor, BASE, None) == ""
    bumped = _pose(shift_mm=(0, 0, 4.0)) @ BASE
    why = _watch(monitor, bumped, (1, 1.0))
    assert why.startswith(f"{REFERENCE_MOVED_PREFIX}4.0 mm")
    assert _watch(monitor, bumped, (1, 1.0)) == why  # until a check on agreeing frames
    for _ in range(10):
        _watch(monitor, bumped, (1, 1.0))
    assert _watch(monitor, bumped, (1, 2.0)) == ""


def test_a_drift_is_doubted_although_every_update_is_checked() -> None:
    """A reference drifting 0.25 mm per frame, checked every 5 frames on a 10-frame window:
    an estimate may fit any pose of its window, so the motion counts from the oldest — a
    drift cannot hide behind updates that follow it (from the newest it would stay
    1.25 mm)."""
    monitor = ReferenceMotionMonitor(2.0, window_frames=10)
    said = []
    for i in range(40):
        pose = _pose(shift_mm=(0.25 * i, 0, 0)) @ BASE
        said.append(_watch(monitor, pose, (i // 5, float(i // 5))))
    assert not any(said[:8])  # 1.75 mm at most
    assert all(said[15:]) and monitor.motion_mm == pytest.approx(0.25 * 13)


def test_small_motion_an_unwatched_stream_or_no_limit_says_nothing() -> None:
    monitor = ReferenceMotionMonitor(2.0)
    assert _watch(monitor, BASE, (1, 1.0)) == ""
    # 1.5 mm (breathing under the limit) is not doubted
    assert _watch(monitor, _pose(shift_mm=(1.5, 0, 0)) @ BASE, (1, 1.0)) == ""
    assert _watch(monitor, None, (1, 1.0)) == "" and monitor.motion_mm is None  # type: ignore[arg-type]
    off = ReferenceMotionMonitor(None)
    assert _watch(off, BASE, (1, 1.0)) == ""
    assert _watch(off, _pose(shift_mm=(9, 0, 0)) @ BASE, (1, 1.0)) == ""
    assert not off.watching


def test_reference_to_tracker_is_read_when_valid_only() -> None:
    image = np.zeros(SHAPE, np.uint8)
    ok = TrackedFrame(image=image, transforms={"ReferenceToTracker": TrackedTransform(BASE)})
    assert reference_to_tracker(ok) == pytest.approx(BASE)
    inverse = TrackedFrame(
        image=image, transforms={"TrackerToReference": TrackedTransform(np.linalg.inv(BASE))}
    )
    assert reference_to_tracker(inverse) == pytest.approx(BASE)
    invalid = TrackedFrame(
        image=image,
        transforms={"ReferenceToTracker": TrackedTransform(BASE, TransformStatus.INVALID)},
    )
    assert reference_to_tracker(invalid) is None
    assert reference_to_tracker(TrackedFrame(image=image, transforms={})) is None


def _bumped_recording(case: Path, out: Path, first_bumped: int) -> int:
    """The case's sweep with its reference moved 4 mm (and 2°) against the tracker from frame
    ``first_bumped`` on; the images and the probe's pose unchanged (the anatomy did not move).
    Returns that frame's number."""
    move = _pose((0.0, 2.0, 0.0), (4.0, 0.0, 0.0))
    frames: list[TrackedFrame] = []
    with read_sequence(case / "sweep.igs.mha") as seq:
        for i in range(len(seq)):
            f = seq.frame(i)
            if i >= first_bumped:
                f.transforms["ReferenceToTracker"] = TrackedTransform(
                    move @ f.transforms["ReferenceToTracker"].matrix
                )
            frames.append(f)
    write_sequence(out, frames)
    return frames[first_bumped].frame_number


def test_a_bumped_reference_is_told_on_every_topic(small_case: Path, tmp_path: Path) -> None:
    """Through the real chain (playback server process → OpenIGTLink → pipeline → ZeroMQ):
    the registration in use was checked on the images, then the reference moves; every margin
    after the move says so, none before it, and the status names the motion."""
    recording = tmp_path / "bumped.igs.mha"
    bumped = _bumped_recording(small_case, recording, first_bumped=30)
    worker, window = worker_and_window(small_case)
    assert worker.update(window).accepted  # checked on the images before the stream starts
    port = free_port()
    server = serve_in_subprocess(recording, port=port, rate=1.0)
    pipeline = _pipeline(small_case, port, registration=False)
    pipeline.worker = worker  # not started: the checked estimate stays in use
    pipeline.prepare()
    display = Collector(pipeline.endpoint)
    display.join(pipeline)
    try:
        pipeline.start()
        assert wait_until(lambda: pipeline.counters.received >= 60, 30)
        assert wait_until(
            lambda: any(m.header.frame_number >= bumped + 25 for m in display.of(MarginMessage)),
            10,
        )
        status = pipeline.status()
        pipeline._publish_status()
        assert wait_until(
            lambda: any(
                REFERENCE_MOVED_PREFIX in s.header.display_reason for s in display.of(StatusMessage)
            ),
            5,
        )
    finally:
        pipeline.stop()
        display.close()
        server.stop()
    margins = [m for m in display.of(MarginMessage) if not m.header.stale]
    numbers = {m.header.frame_number for m in margins}
    before = [m for m in margins if m.header.frame_number < bumped]
    after = [m for m in margins if m.header.frame_number >= bumped]
    assert before and after, numbers
    assert not any(REFERENCE_MOVED_PREFIX in m.header.display_reason for m in before)
    assert all(REFERENCE_MOVED_PREFIX in m.header.display_reason for m in after)
    assert all(m.header.display_state != "LIVE" for m in after)
    assert status["reference_watched"] and status["reference_motion_mm"] > 4.0
    told = next(
        s for s in display.of(StatusMessage) if REFERENCE_MOVED_PREFIX in s.header.display_reason
    )
    assert "REFERENCE MOVED" in status_line(told.status)  # usnav run's status line
    assert "REFERENCE MOVED" not in status_line({**told.status, "display_reason": ""})
