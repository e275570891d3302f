"""A patient reference moved against the tracker since the registration was checked
(session 38): the display is told at the first frame after the move, not 8 s later when
the images contradict the registration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pipeline_helpers import wait_until
from scipy.spatial.transform import Rotation
from test_live import Collector, _pipeline, worker_and_window

from usnav.cli.cmd_run import status_line
from usnav.client import MarginMessage, StatusMessage
from usnav.devices import serve_in_subprocess
from usnav.frames import TrackedFrame, TrackedTransform, TransformStatus
from usnav.io.sequence import read_sequence, write_sequence
from usnav.pipeline.reference_motion import (
    UNHELD_CHECK_DOUBT,
    ReferenceMotionMonitor,
    displacements_mm,
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


HZ = 15.0  # frames per second of device time


def _watch(monitor: ReferenceMotionMonitor, pose: np.ndarray, key, since=None) -> str:
    """One frame, 1/15 s of device time after the one before (``key``: the check in use)."""
    t = monitor.watched_frames / HZ
    return monitor.observe(
        pose, IMAGE_TO_REFERENCE, SHAPE, checked_key=key, t_device=t, checked_since_t=since
    )


def _watch_at(monitor: ReferenceMotionMonitor, pose: np.ndarray, key, t: float, since) -> str:
    """One frame at device time ``t`` (s)."""
    return monitor.observe(
        pose, IMAGE_TO_REFERENCE, SHAPE, checked_key=key, t_device=t, checked_since_t=since
    )


def _breathing(t: float, peak_to_peak_mm: float = 4.0, period_s: float = 5.0) -> np.ndarray:
    """The whole patient, reference with it, moved by a breath (Tracker mm)."""
    return _pose(shift_mm=(0.0, 0.5 * peak_to_peak_mm * np.sin(2 * np.pi * t / period_s), 0.0))


def test_a_move_is_doubted_at_once_and_cleared_only_by_a_check_on_agreeing_frames() -> None:
    monitor = ReferenceMotionMonitor(2.0, window_frames=10)
    jitter = np.random.default_rng(5)
    for _ in range(120):  # 8 s checked on steady frames (tracking jitter ~0.1 mm)
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
    assert _watch(monitor, bumped, (2, 3.0)) == "" and monitor.motion_mm < 0.5
    # moving back is a move too
    assert _watch(monitor, BASE, (2, 3.0)).startswith(REFERENCE_MOVED_PREFIX)
    assert monitor.doubted_frames == 1 + 5 + 10 + 1


def test_a_check_on_frames_from_before_the_clock_went_back_anchors_nothing() -> None:
    """Session 43: another recording started (its device clock earlier than the last one's)
    with the reference 139 mm away; a confirmation on the old frames (their device times
    after every frame still held) took the newest frame as the checked pose, and the
    registration was LIVE again. It stays in doubt until a check on frames held."""
    monitor = ReferenceMotionMonitor(2.0, window_frames=10)
    for k in range(30):  # checked on the first recording, device times 100-102 s
        assert _watch_at(monitor, BASE, (1, 1.0), 100.0 + k / HZ, 100.0) == ""
    elsewhere = _pose(shift_mm=(0.0, 139.0, 0.0)) @ BASE
    for k in range(5):  # another recording from device time 0: a move, as before
        why = _watch_at(monitor, elsewhere, (1, 1.0), k / HZ, 100.0)
        assert why.startswith(REFERENCE_MOVED_PREFIX)
    # a confirmation on the worker's window, the first recording's frames (100.5 s on)
    for k in range(5, 40):
        why = _watch_at(monitor, elsewhere, (1, 2.0), k / HZ, 100.5)
        assert why == UNHELD_CHECK_DOUBT, (k, why)
        assert monitor.motion_mm is None
    # a check on the new recording's frames anchors them
    assert _watch_at(monitor, elsewhere, (2, 3.0), 40 / HZ, 1.0) == ""
    assert monitor.motion_mm is not None and monitor.motion_mm < 0.5


def test_a_first_check_across_a_move_is_doubted() -> None:
    monitor = ReferenceMotionMonitor(2.0, window_frames=10)
    for _ in range(100):  # the navigation registration: never LIVE, nothing to say
        assert _watch(monitor, BASE, None) == ""
    bumped = _pose(shift_mm=(0, 0, 4.0)) @ BASE
    for _ in range(3):
        assert _watch(monitor, bumped, None) == ""
    why = _watch(monitor, bumped, (1, 1.0))  # checked on frames from both sides of the move
    assert why.startswith(f"{REFERENCE_MOVED_PREFIX}4.0 mm")
    assert _watch(monitor, bumped, (1, 1.0)) == why  # until a check on agreeing frames
    for _ in range(100):
        _watch(monitor, bumped, (1, 1.0))
    assert _watch(monitor, bumped, (1, 2.0)) == ""


def test_a_drift_is_doubted_although_every_update_is_checked() -> None:
    """A reference drifting 0.5 mm/s, checked every second on the last 10 s: an estimate may
    fit any pose of its window, so the motion counts from the oldest — a drift cannot hide
    behind updates that follow it (from the newest it would stay under 0.5 mm)."""
    monitor = ReferenceMotionMonitor(2.0, window_frames=150)
    said = []
    for i in range(int(40 * HZ)):
        t = i / HZ
        pose = _pose(shift_mm=(0.5 * max(0.0, t - 10.0), 0, 0)) @ BASE
        said.append(_watch(monitor, pose, (int(t), float(int(t))), since=t - 10.0))
    assert not any(said[: int(13 * HZ)])  # 1.5 mm at most
    assert all(said[int(20 * HZ) :])  # the breath averages moved over 2 mm from the oldest


def test_a_drift_is_doubted_about_as_soon_as_by_session_38s_rule() -> None:
    """Averaging a breath lags a drift's onset by half a breath; the onset term (the old
    measure less breathing's swing before the check) does not: with tracking jitter and no
    breathing, a 0.5 mm/s drift is doubted within 0.5 s of when every pose counted."""
    jitter = np.random.default_rng(8)
    new = ReferenceMotionMonitor(2.0, window_frames=150)
    old = ReferenceMotionMonitor(2.0, window_frames=150, breath_average_s=None)
    first: dict[str, float] = {}
    for i in range(int(50 * HZ)):
        t = i / HZ
        shift = jitter.normal(0, 0.1, 3) + np.array([0.5 * max(0.0, t - 30.0), 0, 0])
        rotation = jitter.normal(0, 0.05, 3)  # degrees, about the reference
        pose = BASE @ _pose(rotation, shift)
        key = (int(t), float(int(t)))
        for name, monitor in (("new", new), ("old", old)):
            why = _watch_at(monitor, pose, key, t, since=t - 10.0)
            if why and name not in first:
                first[name] = t
    assert first["old"] > 30.0 and first["new"] > 30.0  # nothing before the drift
    assert first["new"] <= first["old"] + 0.5


def test_breathing_is_not_a_move_and_a_bump_while_breathing_is() -> None:
    """A patient breathing 4 mm peak to peak (a spinous-process clamp moves 1.96 ± 1.32 mm
    with ventilation): the registration is right at every phase, so nothing is doubted once a
    breath was seen; a 3 mm bump during it is doubted at its first frame. The session-38
    rule (``breath_average_s=None``) doubted every breath."""
    for period_s in (3.0, 5.0, 7.5):
        new = ReferenceMotionMonitor(2.0, window_frames=150)
        old = ReferenceMotionMonitor(2.0, window_frames=150, breath_average_s=None)
        said_new, said_old = [], []
        for i in range(int(60 * HZ)):
            t = i / HZ
            bump = _pose(shift_mm=(3.0, 0, 0)) if t >= 40.0 else np.eye(4)
            pose = bump @ _breathing(t, 4.0, period_s) @ BASE
            key = (int(t), float(int(t))) if t >= 8.0 else None
            said_new.append(_watch_at(new, pose, key, t, since=t - 10.0))
            said_old.append(_watch_at(old, pose, key, t, since=t - 10.0))
        before = slice(int(8 * HZ), int(40 * HZ))
        assert not any(said_new[before]), period_s
        assert sum(map(bool, said_old[before])) > 0.9 * (32 * HZ), period_s
        assert said_new[int(40 * HZ)].startswith(REFERENCE_MOVED_PREFIX), period_s
        assert all(said_new[int(40 * HZ) : int(50 * HZ)]), period_s


def test_a_knock_under_the_motion_limit_is_a_sudden_move() -> None:
    """A 1.5 mm knock moves the image corners under the 2 mm motion limit, yet on a
    registration 0.6 mm off it put the overlay over 2 mm off (session 40). Its step (the
    distance from the nearest pose the check or the breath before it saw) is over the 1 mm
    step limit at its first frame; breathing 4-6 mm peak to peak at 3-10 s a breath, with
    tracking jitter, never is (its poses recur), and neither is a slow drift's first mm."""
    from usnav.protocol.display import DisplayRules

    step_mm = DisplayRules().max_reference_step_mm
    assert step_mm == 1.0
    knock = _pose((0.0, 0.0, 0.3), (1.2, 0.5, 0.0))
    jitter = np.random.default_rng(11)
    for amplitude, period_s in ((4.0, 3.0), (4.0, 5.0), (6.0, 7.5), (4.0, 10.0)):
        new = ReferenceMotionMonitor(2.0, window_frames=150, step_limit_mm=step_mm)
        plain = ReferenceMotionMonitor(2.0, window_frames=150)
        said, said_plain, steps, motion = [], [], [], []
        for i in range(int(70 * HZ)):
            t = i / HZ
            shake = _pose(jitter.normal(0, 0.05, 3), jitter.normal(0, 0.1, 3))
            moved = knock if t >= 50.0 else np.eye(4)
            pose = moved @ _breathing(t, amplitude, period_s) @ BASE @ shake
            key = (int(t), float(int(t))) if t >= 12.0 else None
            said.append(_watch_at(new, pose, key, t, since=t - 10.0))
            said_plain.append(_watch_at(plain, pose, key, t, since=t - 10.0))
            steps.append(new.step_mm or 0.0)
            motion.append(new.motion_mm or 0.0)
        case = (amplitude, period_s)
        before = slice(int(22 * HZ), int(50 * HZ))  # once a check has seen two breaths
        # (a 10 s breath can still ripple the 6 s mean to the 2 mm motion limit: not a step)
        assert not any("sudden" in why for why in said[before]), case
        assert max(steps[before]) < 0.5 * step_mm, case
        first = said[int(50 * HZ)]
        assert first.startswith(REFERENCE_MOVED_PREFIX) and "a sudden move over 1 mm" in first
        # until the images check on frames that all follow it (the window: 10 s)
        assert all(said[int(50 * HZ) : int(60 * HZ)]), case
        assert not any(said[int(61 * HZ) :]), case
        assert 1.0 < motion[int(50 * HZ)] < 2.0, case  # under the motion limit: a step
        assert not any(said_plain[int(50 * HZ) : int(51 * HZ)]), case  # missed without it
    # the live pipeline's watch takes the limit from its display rules
    from usnav.pipeline.live import _reference_motion_monitor

    assert _reference_motion_monitor(DisplayRules(), None).step_limit_mm == 1.0
    off = DisplayRules(max_reference_step_mm=None)
    assert _reference_motion_monitor(off, None).step_limit_mm is None
    # a slow drift (0.1 mm/s) leaves the checked poses gradually: no step over 1 mm while its
    # first mm accrues between checks 1 s apart
    new = ReferenceMotionMonitor(2.0, window_frames=150, step_limit_mm=step_mm)
    for i in range(int(30 * HZ)):
        t = i / HZ
        pose = _pose(shift_mm=(0.1 * max(0.0, t - 15.0), 0, 0)) @ BASE
        assert _watch_at(new, pose, (int(t), float(int(t))), t, since=t - 10.0) == "", t


def test_a_sudden_move_stays_said_until_the_images_check_again() -> None:
    """A knock whose step hovers at the 1 mm limit (tracking jitter moves it either side)
    was said on a few frames only (held-out seeds 7589-7592, session 40): once said, it stays
    said until another check, which anchors on frames that all follow it."""
    monitor = ReferenceMotionMonitor(2.0, window_frames=30, step_limit_mm=1.0)
    for _ in range(200):
        assert _watch(monitor, BASE, (1, 1.0)) == ""
    said = []
    for i in range(20):  # 1.2 mm, then 0.9 mm (jitter's other side), alternately
        shift = 1.2 if i % 2 == 0 else 0.9
        said.append(_watch(monitor, _pose(shift_mm=(shift, 0, 0)) @ BASE, (1, 1.0)))
    assert all("a sudden move over 1 mm" in why for why in said), said
    knocked = _pose(shift_mm=(1.2, 0, 0)) @ BASE
    for _ in range(40):  # the window turns over with the reference where the knock left it
        _watch(monitor, knocked, (1, 1.0))
    assert _watch(monitor, knocked, (2, 2.0)) == ""  # a check on frames that all follow it


def test_small_motion_an_unwatched_stream_or_no_limit_says_nothing() -> None:
    monitor = ReferenceMotionMonitor(2.0)
    assert _watch(monitor, BASE, (1, 1.0)) == ""
    assert _watch(monitor, _pose(shift_mm=(1.5, 0, 0)) @ BASE, (1, 1.0)) == ""  # under 2 mm
    assert _watch(monitor, None, (1, 1.0)) == "" and monitor.motion_mm is None  # type: ignore[arg-type]
    off = ReferenceMotionMonitor(None)
    assert _watch(off, BASE, (1, 1.0)) == ""
    assert _watch(off, _pose(shift_mm=(9, 0, 0)) @ BASE, (1, 1.0)) == ""
    assert not off.watching


def test_displacements_are_moved_mm_for_each_pose() -> None:
    rng = np.random.default_rng(4)
    then = np.stack([_pose(rng.normal(0, 5, 3), rng.normal(0, 5, 3)) @ BASE for _ in range(7)])
    now = _pose((1.0, 0, 0), (2.0, 0, 0)) @ BASE
    pts = rng.normal(0, 40, (4, 3))
    each = displacements_mm(then, now, pts)
    assert each == pytest.approx([moved_mm(pose, now, pts) for pose in then], abs=1e-9)
    # a mean of poses moves each point to the mean of its positions
    mean = then.mean(axis=0)
    positions = np.einsum("nij,mj->nmi", then[:, :3, :3], pts) + then[:, None, :3, 3]
    expected = np.linalg.norm(positions.mean(axis=0) - (pts @ now[:3, :3].T + now[:3, 3]), axis=1)
    assert displacements_mm(mean[None], now, pts)[0] == pytest.approx(expected.max(), abs=1e-9)


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
    server = serve_in_subprocess(recording, port=0, rate=1.0)
    port = server.port  # bound by the server itself: no free port to lose meanwhile
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
    assert all(REFERENCE_MOVED_PREFIX in m.header.display_reason for m in after), [
        (m.header.frame_number, m.header.display_reason[:80])
        for m in after
        if REFERENCE_MOVED_PREFIX not in m.header.display_reason
    ][:5]
    assert all(m.header.display_state != "LIVE" for m in after)
    assert status["reference_watched"] and status["reference_motion_mm"] > 4.0
    assert status["reference_step_mm"] > 1.0  # the bump is a sudden move too
    told = next(
        s for s in display.of(StatusMessage) if REFERENCE_MOVED_PREFIX in s.header.display_reason
    )
    assert "REFERENCE MOVED" in status_line(told.status)  # usnav run's status line
    assert "REFERENCE MOVED" not in status_line({**told.status, "display_reason": ""})


def test_a_breathing_recording_moves_the_whole_patient(small_case: Path, tmp_path: Path) -> None:
    """The bench's breathing patient (session 39): reference and probe move together against
    the tracker, so ``ProbeToReference`` — and the registration — is unchanged, while the
    reference breathes the stated peak to peak; a monitor fed its frames says nothing."""
    from usnav.bench.bench_bump import write_bumped_recording
    from usnav.sim import load_truth

    out = tmp_path / "breathing.igs.mha"
    truth = load_truth(small_case).reference_to_mri
    write_bumped_recording(
        small_case, out, truth, np.eye(4), passes=5, bump_pass=5, breathing=(4.0, 2.0)
    )
    with read_sequence(small_case / "sweep.igs.mha") as seq:
        original = [seq.frame(i) for i in range(len(seq))]
    with read_sequence(out) as seq:
        breathing = [seq.frame(i) for i in range(len(seq))]
    assert len(breathing) == 5 * len(original)

    def matrix(frame: TrackedFrame, name: str) -> np.ndarray:
        return np.asarray(frame.transforms[name].matrix, dtype=np.float64)

    def probe_to_reference(frame: TrackedFrame) -> np.ndarray:
        return np.linalg.solve(matrix(frame, "ReferenceToTracker"), matrix(frame, "ProbeToTracker"))

    shifts = []
    for i, frame in enumerate(breathing):
        source = original[i % len(original)]
        assert probe_to_reference(frame) == pytest.approx(probe_to_reference(source), abs=1e-4)
        change = matrix(frame, "ReferenceToTracker") @ np.linalg.inv(
            matrix(source, "ReferenceToTracker")
        )
        assert change[:3, :3] == pytest.approx(np.eye(3), abs=1e-9)
        shifts.append(change[:3, 3])
    extent = np.linalg.norm(np.ptp(np.array(shifts), axis=0))
    assert 3.5 < extent <= 4.0 + 1e-6
    # checked every second of device time, on the frames of the last two (the worker's)
    t0 = breathing[0].t_device

    def watch(monitor: ReferenceMotionMonitor, frame: TrackedFrame) -> str:
        second = int(frame.t_device - t0)
        return monitor.observe(
            reference_to_tracker(frame),
            IMAGE_TO_REFERENCE,
            SHAPE,
            checked_key=(second, float(second)),
            t_device=frame.t_device,
            checked_since_t=frame.t_device - 2.0,
        )

    new = ReferenceMotionMonitor(2.0, window_frames=30, breath_average_s=2.5)
    old = ReferenceMotionMonitor(2.0, window_frames=30, breath_average_s=None)
    # once a breath was seen before a check (the first check of a stream can come sooner)
    said = [(f.t_device - t0, watch(new, f)) for f in breathing]
    assert not any(why for t, why in said if t >= 3.0)
    assert any(watch(old, f) for f in breathing if f.t_device - t0 >= 3.0)
