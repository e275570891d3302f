"""The live pipeline end to end over real sockets: a playback server process, the pipeline,
a ZeroMQ subscriber — and the faults of issue 7."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pipeline_helpers import free_port, wait_until
from waiting import repeat_until

from usnav.client import MarginMessage, StatusMessage, Subscriber
from usnav.config.calibration import load_calibration
from usnav.devices import ProbeClient, serve_in_subprocess
from usnav.devices.base import DeviceState
from usnav.devices.config import ProbeConfig
from usnav.frames import TrackedFrame, TrackedTransform, TransformStatus
from usnav.io.sequence import read_sequence, write_sequence
from usnav.io.volume import load_volume
from usnav.pipeline.config import PipelineOptions
from usnav.pipeline.live import LivePipeline
from usnav.registration.files import read_initial

TRACKER = ["ProbeToTracker", "ReferenceToTracker"]


def _pipeline(case: Path, port: int, *, record: Path | None = None, **options) -> LivePipeline:
    calibration = load_calibration(case / "calibration.toml")
    probe = ProbeClient(ProbeConfig(port=port, transforms=TRACKER), calibration=calibration)
    opts = PipelineOptions(publish_address="tcp://127.0.0.1:*", status_interval_s=0.1, **options)
    return LivePipeline(
        probe,
        load_volume(case / "tumor_label.nii.gz"),
        calibration,
        read_initial(case / "init_ReferenceToMri.txt"),
        mri=load_volume(case / "mri.nii.gz"),
        options=opts,
        record_path=record,
    )


class Collector:
    """A display: subscribes and keeps every message (in a thread)."""

    def __init__(self, endpoint: str):
        self.subscriber = Subscriber(endpoint)
        self.messages: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.subscriber.receive(0.05)
            if message is not None:
                self.messages.append(message)

    def join(self, pipeline: LivePipeline) -> None:
        """Return once the subscription has reached the pipeline's publisher (a PUB socket
        drops everything sent before that): publish status until one arrives."""
        assert repeat_until(
            pipeline._publish_status, lambda: self.of(StatusMessage), 10, every_s=0.05
        ), "the display never joined the publisher"

    def of(self, kind: type) -> list:
        return [m for m in list(self.messages) if isinstance(m, kind)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.subscriber.close()


@contextlib.contextmanager
def streaming(case: Path, serve: dict, **options):
    """A playback server process (``serve``: of :func:`serve_in_subprocess`), a started
    pipeline (``options``: of :func:`_pipeline`) and a display that joined before the first
    frame; yields (server, pipeline, display), and stops all three."""
    server = serve_in_subprocess(case / "sweep.igs.mha", port=0, **serve)
    port = server.port  # bound by the server itself: no free port to lose meanwhile
    pipeline = _pipeline(case, port, **options)
    pipeline.prepare()
    display = Collector(pipeline.endpoint)
    display.join(pipeline)
    try:
        pipeline.start()
        yield server, pipeline, display
    finally:
        pipeline.stop()
        display.close()
        server.stop()


def worker_and_window(case: Path) -> tuple[Any, list]:
    """A registration worker for ``case`` (not started) and the case's whole sweep as one
    window of (image, ImageToReference, t) frames for :meth:`RegistrationWorker.update`."""
    from usnav.registration.sweep import load_sweep
    from usnav.registration.worker import RegistrationWorker, WorkerOptions

    calibration = load_calibration(case / "calibration.toml")
    worker = RegistrationWorker(
        load_volume(case / "mri.nii.gz"),
        calibration.image_to_probe,
        read_initial(case / "init_ReferenceToMri.txt"),
        WorkerOptions(min_frames=20),
    )
    sweep = load_sweep(case / "sweep.igs.mha", calibration.image_to_probe)
    return worker, list(zip(sweep.images, sweep.image_to_reference, sweep.timestamps, strict=True))


def run_and_collect(case: Path, **options) -> tuple[LivePipeline, Collector]:
    """The case's 60 frames once, at twice their pace, through a pipeline (``options``: of
    :func:`_pipeline`); a display that joined first collected every message."""
    with streaming(case, {"rate": 2.0}, **options) as (_, pipeline, display):
        assert wait_until(lambda: pipeline.counters.received >= 60, 30)
        assert wait_until(lambda: len(display.of(MarginMessage)) >= 20, 10)
    return pipeline, display


def test_frames_flow_to_margins_with_headers_and_recording(small_case: Path, tmp_path: Path):
    record = tmp_path / "live.igs.mha"
    pipeline, display = run_and_collect(small_case, record=record, registration=False)
    c = pipeline.counters
    assert c.received == 60 and c.errors == 0
    assert 0 <= c.received - c.published - pipeline.status()["dropped_display"] <= 1
    margins = display.of(MarginMessage)
    in_view = [m for m in margins if m.in_view]
    assert in_view, "the sweep crosses the tumor: some frames must show it"
    h = in_view[0].header
    assert h.image_to_mri is not None and h.image_to_mri.shape == (4, 4)
    assert h.t_published >= h.t_received and not h.stale
    assert all(m.header.gap == 0 for m in margins[1:])
    # ImageToMri is the chain ReferenceToMri · ProbeToReference · ImageToProbe
    with read_sequence(small_case / "sweep.igs.mha") as seq:
        frame = seq.frame(int(np.flatnonzero(seq.frame_numbers == h.frame_number)[0]))
    cal = load_calibration(small_case / "calibration.toml").image_to_probe
    probe_to_ref = np.linalg.inv(frame.transforms["ReferenceToTracker"].matrix) @ (
        frame.transforms["ProbeToTracker"].matrix
    )
    expected = read_initial(small_case / "init_ReferenceToMri.txt") @ probe_to_ref @ cal
    np.testing.assert_allclose(h.image_to_mri, expected, atol=1e-3)  # float32 on the wire
    assert display.of(StatusMessage)
    # every received frame was recorded
    assert c.recorded == 60 and c.record_dropped == 0
    with read_sequence(record) as seq:
        assert len(seq) == 60


def test_server_killed_and_restarted_five_times(small_case: Path) -> None:
    server = serve_in_subprocess(small_case / "sweep.igs.mha", port=0, loop=True)
    port = server.port  # bound by the server itself: no free port to lose meanwhile
    pipeline = _pipeline(small_case, port, registration=False, stale_after_s=1.0)
    pipeline.prepare()
    display = Collector(pipeline.endpoint)
    states_seen: set[str] = set()
    try:
        pipeline.start()
        assert wait_until(lambda: pipeline.counters.published >= 5, 20)
        for _ in range(5):
            server.kill()
            assert wait_until(lambda: pipeline.status()["state"] != "streaming", 30)
            states_seen.add(pipeline.status()["state"])
            # the status topic tells displays meanwhile
            assert wait_until(
                lambda: any(
                    m.status["state"] in ("no-signal", "connecting")
                    for m in display.of(StatusMessage)[-5:]
                ),
                30,
            )
            server = serve_in_subprocess(small_case / "sweep.igs.mha", port=port, loop=True)
            # streaming again once the server is back (the backoff is capped at 1 s; how soon
            # is a figure of usnav soak, not a test: 2 s of the wall clock failed under load)
            assert pipeline.probe.wait_for_state(DeviceState.STREAMING, timeout_s=30)
            target = pipeline.counters.published + 3
            assert wait_until(lambda t=target: pipeline.counters.published > t, 10)
            # streaming again: the link's error is history, not a failure shown while LIVE
            now = pipeline.status()
            assert now["last_error"] == "" and now["recovered_from"], now
    finally:
        pipeline.stop()
        display.close()
        server.stop()
    assert states_seen <= {"no-signal", "connecting"} and states_seen
    assert pipeline.counters.errors == 0
    assert pipeline.probe.stats.reconnects >= 5
    # every margin published while the link was down says so
    stale = [m for m in display.of(MarginMessage) if m.header.stale]
    assert all("probe" in m.header.stale_reason for m in stale)


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP/SIGCONT (POSIX)")
def test_frames_a_frozen_server_held_back_are_published_stale(small_case: Path) -> None:
    """The playback server frozen 3 s, then resumed: it flushes the frames it made meanwhile
    within a fraction of a second. Each was received just now but made up to 3 s ago; they
    went out with ``stale = false`` (LIVE-eligible) until the pipeline judged age by the
    device's clock (usnav.pipeline.arrival)."""
    session = streaming(small_case, {"loop": True}, registration=False, stale_after_s=1.0)
    with session as (server, pipeline, display):
        # more than the arrival clock's 2 s baseline of frames at the device's pace
        assert wait_until(lambda: pipeline.counters.published >= 100, 30)
        os.kill(server.process.pid, signal.SIGSTOP)
        time.sleep(3.0)
        resumed = time.time()
        os.kill(server.process.pid, signal.SIGCONT)
        target = pipeline.counters.published + 60
        # the status (what a display joining now starts from) says STALE while the backlog
        # goes out, not the state of the link alone (streaming again at once)
        statuses = []
        deadline = time.monotonic() + 20
        while pipeline.counters.published <= target and time.monotonic() < deadline:
            statuses.append(pipeline.status())
            time.sleep(0.01)
        assert pipeline.counters.published > target
        caught_up = time.time()
        # the display receives in its own thread, behind the pipeline's counter: the margins
        # checked below as "after it caught up" must be ones published after it, not the
        # backlog's that the display was still taking in (a lagging display failed this)
        assert wait_until(
            lambda: sum(m.header.t_published >= caught_up for m in display.of(MarginMessage)) >= 10,
            30,
        ), "no margin published after the catch-up reached the display"
    held_status = [s for s in statuses if "late by the device's clock" in s["display_reason"]]
    assert held_status, "the status never said the newest frames were late"
    assert all(s["display_state"] == "STALE" for s in held_status)
    assert statuses[-1]["display_state"] != "STALE", statuses[-1]
    margins = [m.header for m in display.of(MarginMessage)]
    # the replay runs at its recording's pace: device clock = host clock + a constant
    offset = float(np.median([h.t_received - h.t_device for h in margins[10:60]]))
    after = [h for h in margins if h.t_received >= resumed]
    held = [h for h in after if h.t_received - h.t_device - offset > 1.5]
    assert len(held) >= 3, "the frozen server's backlog never reached the pipeline"
    assert all(h.stale for h in held), [(h.frame_number, h.stale_reason) for h in held]
    assert any("late by the device's clock" in h.stale_reason for h in held)
    # and once it caught up, frames are fresh again
    assert not any(h.stale for h in after[-10:])


def test_slow_and_killed_viewers_do_not_hold_the_pipeline(small_case: Path) -> None:
    import subprocess
    import sys

    server = serve_in_subprocess(small_case / "sweep.igs.mha", port=0, rate=2.0, loop=True)
    port = server.port  # bound by the server itself: no free port to lose meanwhile
    pipeline = _pipeline(small_case, port, registration=False, publish_hwm=5)
    pipeline.prepare()
    # a display that subscribes and never reads
    never_reads = Subscriber(pipeline.endpoint, hwm=5)
    # a display in another process, killed mid-stream
    viewer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "usnav",
            "view",
            "--connect",
            pipeline.endpoint,
            "--snapshot",
            os.devnull + ".png",
            "--frames",
            "100000",
            "--timeout",
            "60",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        pipeline.start()
        assert wait_until(lambda: pipeline.counters.published >= 60, 30)
        viewer.kill()
        viewer.wait(5)
        before = pipeline.counters.published
        assert wait_until(lambda: pipeline.counters.published >= before + 60, 30)
    finally:
        pipeline.stop()
        never_reads.close()
        server.stop()
        if viewer.poll() is None:
            viewer.kill()
    c = pipeline.counters
    # the publisher never waited for them: every frame got its margins or was superseded by a
    # newer one (newest wins), and nothing failed
    assert c.errors == 0 and pipeline._publisher is not None
    # (a frame can still sit in the hand-over slot when the pipeline stops). How many were
    # superseded depends on the machine's load, not on the displays (123 of 152 published at
    # load 7): the displays not holding it is the 60 published after the kill, above
    assert 0 <= c.received - c.published - pipeline.status()["dropped_display"] <= 1


def _corrupt_recording(case: Path, out: Path) -> int:
    """The case's sweep with ProbeToTracker INVALID on every 5th frame; returns that count."""
    frames: list[TrackedFrame] = []
    invalid = 0
    with read_sequence(case / "sweep.igs.mha") as seq:
        for i in range(30):
            f = seq.frame(i)
            if i % 5 == 2:
                f.transforms["ProbeToTracker"] = TrackedTransform(
                    f.transforms["ProbeToTracker"].matrix, TransformStatus.INVALID
                )
                invalid += 1
            frames.append(f)
    write_sequence(out, frames)
    return invalid


def test_invalid_tracking_is_skipped_counted_and_shown(small_case: Path, tmp_path: Path):
    recording = tmp_path / "corrupt.igs.mha"
    invalid = _corrupt_recording(small_case, recording)
    server = serve_in_subprocess(recording, port=0, rate=1.0)
    port = server.port  # bound by the server itself: no free port to lose meanwhile
    pipeline = _pipeline(small_case, port, registration=False)
    pipeline.prepare()
    display = Collector(pipeline.endpoint)
    display.join(pipeline)
    try:
        pipeline.start()
        assert wait_until(lambda: pipeline.counters.received >= 30, 30)
        # every frame is processed or superseded by a newer one (by design the frame path
        # takes the newest; a loaded machine supersedes some, and then waiting for 30
        # processed frames failed in a full CI-sized run)
        assert wait_until(
            lambda: pipeline.counters.processed + pipeline.status()["dropped_display"] >= 30, 30
        )
        # the display has been told about the frames without tracking
        assert wait_until(
            lambda: any(
                not m.in_view and "tracking" in m.reason for m in display.of(MarginMessage)
            ),
            5,
        )
    finally:
        status = pipeline.status()
        pipeline.stop()
        display.close()
        server.stop()
    superseded = status["dropped_display"]
    # each invalid frame that was processed is counted; all of them when none was superseded
    assert invalid - superseded <= pipeline.counters.skipped_tracking <= invalid
    assert pipeline.counters.skipped_tracking >= 1
    assert status["skipped_tracking"] == pipeline.counters.skipped_tracking
    assert "tracking" in status["last_problem"] or pipeline.counters.problems["tracking"] == invalid
    lost = [m for m in display.of(MarginMessage) if not m.in_view and "tracking" in m.reason]
    assert lost and all(m.header.stale for m in lost)


def test_unwritable_recording_fails_clearly_and_the_pipeline_goes_on(small_case: Path):
    server = serve_in_subprocess(small_case / "sweep.igs.mha", port=0, rate=3.0)
    port = server.port  # bound by the server itself: no free port to lose meanwhile
    # /proc refuses new files even to root (tests run as root in CI)
    pipeline = _pipeline(
        small_case, port, record=Path("/proc/usnav-test.igs.mha"), registration=False
    )
    try:
        pipeline.start()
        assert wait_until(lambda: pipeline.counters.received >= 60, 30)
        assert wait_until(
            lambda: pipeline.counters.processed + pipeline.status()["dropped_display"] >= 60, 10
        )
    finally:
        pipeline.stop()
        server.stop()
    c = pipeline.counters
    assert "/proc/usnav-test.igs.mha" in c.record_error
    assert c.record_dropped == c.received and c.recorded == 0
    assert 0 <= 60 - c.published - pipeline.status()["dropped_display"] <= 1


@pytest.mark.slow
def test_registration_of_another_patients_mri_is_rejected(small_case: Path, other_case: Path):
    """Divergence: the worker's estimates are all rejected, the initial one is kept, the
    registration topic says so and the display does not show LIVE."""
    from usnav.registration.worker import RegistrationWorker, WorkerOptions
    from usnav.viewer.state import LIVE, ViewerOptions, ViewModel, assess

    server = serve_in_subprocess(small_case / "sweep.igs.mha", port=0, rate=3.0, loop=True)
    port = server.port  # bound by the server itself: no free port to lose meanwhile
    wrong_mri = load_volume(other_case / "mri.nii.gz")
    calibration = load_calibration(small_case / "calibration.toml")
    initial = read_initial(small_case / "init_ReferenceToMri.txt")
    worker = RegistrationWorker(
        wrong_mri,
        calibration.image_to_probe,
        initial,
        WorkerOptions(min_frames=40, min_new_frames=20, min_extent_first_mm=8.0, min_extent_mm=5.0),
    )
    pipeline = _pipeline(small_case, port)
    pipeline.worker = worker
    pipeline.prepare()
    display = Collector(pipeline.endpoint)
    display.join(pipeline)
    try:
        pipeline.start()
        assert wait_until(lambda: worker.stats.updates >= 2, 90)
    finally:
        pipeline.stop()
        display.close()
        server.stop()
    assert worker.stats.accepted == 0 and worker.stats.rejected >= 1
    assert pipeline.current_estimate().source == "init"
    np.testing.assert_allclose(pipeline.current_estimate().reference_to_mri, initial)
    from usnav.client import RegistrationMessage

    published = [m for m in display.of(RegistrationMessage) if not m.in_use]
    assert published, "rejected estimates are published, marked not in use"
    assert all(m.header.display_state != "LIVE" for m in published)
    model = ViewModel("test")
    newest = {type(m).__name__: m for m in display.messages}
    state = model.update(
        {"margin": display.of(MarginMessage)[-1], "registration": published[-1]},
        connected=True,
        last_message_s=time.time(),
    )
    assert newest and assess(state, ViewerOptions()).word != LIVE


def test_recording_continues_in_a_new_file_when_the_image_size_changes(
    small_case: Path, tmp_path: Path
) -> None:
    """The depth is changed on the scanner: frames of another size cannot go into the same
    sequence file, so the recording goes on in ``<name>-2`` and nothing is lost."""
    from usnav.devices.recorder import next_part_path

    deeper = tmp_path / "deeper.igs.mha"
    with read_sequence(small_case / "sweep.igs.mha") as seq:
        frames = [seq.frame(i) for i in range(20)]
    for f in frames:
        f.image = np.vstack([f.image, f.image[-64:]])  # 64 more rows: a deeper image
    write_sequence(deeper, frames)
    record = tmp_path / "case.igs.mha"
    server = serve_in_subprocess(small_case / "sweep.igs.mha", port=0, rate=3.0)
    port = server.port  # bound by the server itself: no free port to lose meanwhile
    pipeline = _pipeline(small_case, port, record=record, registration=False)
    try:
        pipeline.start()
        assert wait_until(lambda: pipeline.counters.received >= 60, 30)
        server.stop()
        server = serve_in_subprocess(deeper, port=port, rate=3.0)
        assert wait_until(lambda: pipeline.counters.received >= 80, 30)
        assert wait_until(lambda: pipeline.counters.recorded >= 80, 10)
    finally:
        pipeline.stop()
        server.stop()
    c = pipeline.counters
    assert c.record_error == "" and c.record_dropped == 0
    second = record.with_name("case-2.igs.mha")
    assert c.record_files == [record, second]
    assert next_part_path(record, 2).name == "case-3.igs.mha"  # the next free name
    with read_sequence(record) as first, read_sequence(second) as other:
        assert len(first) == 60 and first.image_size == (256, 256)
        assert len(other) == 20 and other.image_size == (256, 320)


def test_a_taken_port_is_said_before_the_kernels_are_compiled(small_case: Path) -> None:
    """prepare() binds the publisher and the Slicer re-export first: a taken --slicer-port
    fails at once (nothing compiled, the publisher's address freed again), not after the
    warm-up."""
    import socket

    from usnav.errors import UsnavError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        pipeline = _pipeline(small_case, free_port(), slicer_port=port)
        with pytest.raises(UsnavError, match="--slicer-port"):
            pipeline.prepare()
    assert pipeline._estimator is None and pipeline.worker is None
    assert pipeline._publisher is not None and pipeline._publisher._closed


def test_two_estimates_between_two_frames_both_go_out(small_case: Path) -> None:
    """Every estimate goes out on the registration topic, in order, even two made between
    two frames (session 37, live on the independent simulator: a first estimate, adopted and
    drawn LIVE, then the full window's judgment of it; the pipeline published the newest
    only, so the adopted one never went out as an estimate)."""
    from usnav.client import RegistrationMessage

    worker, window = worker_and_window(small_case)
    pipeline = _pipeline(small_case, free_port())
    pipeline.worker = worker
    pipeline.prepare()
    display = Collector(pipeline.endpoint)
    try:
        display.join(pipeline)
        pipeline._publish_estimate_if_new()  # the navigation registration, as at frame 1
        made = [worker.update(window[:30]), worker.update(window)]  # no frame in between
        assert all(made)
        pipeline._publish_estimate_if_new()  # the next frame
        pipeline._publish_estimate_if_new()  # and the one after: nothing new

        # the periodic re-sends come too: wait for the three estimates themselves
        def estimates() -> list:
            return [m for m in display.of(RegistrationMessage) if not m.resent]

        assert wait_until(lambda: len(estimates()) >= 3, 30)
    finally:
        display.close()
        pipeline._publisher.close()
    got = estimates()
    assert [m.estimate_sequence for m in got] == [0, made[0].sequence, made[1].sequence]
    in_use = pipeline.current_estimate().sequence
    for message, estimate in zip(got[1:], made, strict=True):
        assert message.reason == estimate.reason
        assert message.in_use == (estimate.accepted and estimate.sequence == in_use)
