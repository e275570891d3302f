"""A transform absent from some frames of a recording stays absent through replay → record.

A PLUS server that sends valid transforms only, or ``usnav record`` (which writes only what
arrived), leaves frames without a transform. Replayed without it, the recorder paired those
images with the last pose it had received, as OK (the hold of ``max_interpolation_gap_s``):
the copy claimed tracking the original never had. Real files, real sockets on loopback.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from igtl_helpers import wait_until

from usnav.devices.playback import serve_in_subprocess
from usnav.devices.recorder import record
from usnav.frames import TrackedFrame, TrackedTransform, TransformStatus
from usnav.io.sequence import read_sequence, write_sequence

FPS = 30.0
GAP = range(10, 15)  # ProbeToTracker absent (the tool out of view), 167 ms: under the hold
STYLUS = range(20, 24)  # a tool seen for four frames, then gone


def _pose(k: int) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = [10.0 + 2 * k, 5.0, 30.0]
    return m


@pytest.fixture
def recording(tmp_path):
    rng = np.random.default_rng(5)
    frames = []
    for k in range(40):
        transforms = {"ReferenceToTracker": TrackedTransform(np.eye(4))}
        if k not in GAP:
            transforms["ProbeToTracker"] = TrackedTransform(_pose(k))
        if k in STYLUS:
            transforms["StylusToTracker"] = TrackedTransform(_pose(100 + k))
        frames.append(
            TrackedFrame(
                image=rng.integers(0, 256, (24, 32), dtype=np.uint8),
                transforms=transforms,
                t_device=50.0 + k / FPS,
                frame_number=k,
            )
        )
    path = tmp_path / "gaps.igs.mha"
    write_sequence(path, frames)
    return path


@pytest.mark.parametrize("rate", ["max", 1.0])
def test_a_transform_absent_in_the_file_is_not_recorded_as_a_held_ok_pose(
    recording, tmp_path, rate
):
    out = tmp_path / "copy.igs.mha"
    # `usnav replay` in its own process: it exits at the end, which ends the recording
    with serve_in_subprocess(recording, rate=rate) as server:
        result = record(out, port=server.port, stop_on_disconnect=True, connect_timeout_s=20)
    assert (result.received, result.written, result.dropped) == (40, 40, 0)
    assert result.warnings == []  # header v2: the statuses are in the copy
    with read_sequence(out) as copy:
        for k in range(40):
            frame = copy.frame(k)
            probe = frame.transforms.get("ProbeToTracker")
            if k in GAP:
                assert probe is None or probe.status is not TransformStatus.OK, k
            else:
                assert probe is not None and probe.status is TransformStatus.OK, k
                np.testing.assert_allclose(probe.matrix, _pose(k), atol=1e-4)
            stylus = frame.transforms.get("StylusToTracker")
            if k in STYLUS:
                assert stylus is not None and stylus.status is TransformStatus.OK, k
            else:
                assert stylus is None or stylus.status is not TransformStatus.OK, k


def test_a_header_v1_client_gets_no_pose_the_file_did_not_hold_as_valid(recording, tmp_path):
    """A v1 client cannot be told a status, so a pose that is not OK is not sent to it. Only
    the word INVALID was withheld: a transform absent from the file (sent as MISSING with its
    last matrix) and PLUS's other words (OUT_OF_VIEW...) reached it looking valid."""
    from usnav.devices.playback import PlaybackServer
    from usnav.igtl.client import IgtlClient

    with read_sequence(recording) as source:
        frames = list(source)
    frames[30] = replace(
        frames[30],
        transforms={
            **frames[30].transforms,
            "ProbeToTracker": TrackedTransform(_pose(30), TransformStatus.INVALID),
        },
        fields={**frames[30].fields, "ProbeToTrackerTransformStatus": "OUT_OF_VIEW"},
    )
    path = tmp_path / "words.igs.mha"
    write_sequence(path, frames)
    received: list = []
    server = PlaybackServer(path, port=0, rate="max")
    server.connect()
    client = IgtlClient("127.0.0.1", server.port, on_message=received.append, header_version=1)
    try:
        client.start()
        server.start()
        assert server.wait(60)
        assert wait_until(lambda: sum(m.type == "IMAGE" for m in received) >= 40, 30)
    finally:
        client.stop()
        server.close()
    sent = {}
    for m in received:
        if m.type == "TRANSFORM":
            k = round((m.timestamp - 50.0) * FPS)
            sent.setdefault(m.device_name, set()).add(k)
    assert sent["ProbeToTracker"] == set(range(40)) - set(GAP) - {30}
    assert sent["StylusToTracker"] == set(STYLUS)


def test_a_client_joining_a_replay_gets_no_frame_before_it_said_it_speaks_v2(recording):
    """A client counts as header v1 until its first message: one that joined while the replay
    played got its first frames without metadata (statuses, frame numbers, fields), and its
    recording held the poses withheld from v1 (non-OK) from their neighbours as OK."""
    import socket
    import time

    from igtl_helpers import recv_message

    from usnav.devices.playback import PlaybackServer
    from usnav.igtl.client import IgtlClient
    from usnav.igtl.codec import encode
    from usnav.igtl.connection import status_message

    first: list = []
    server = PlaybackServer(recording, port=0, rate=1.0, loop=True)
    server.connect()
    client = IgtlClient("127.0.0.1", server.port, on_message=first.append)
    try:
        client.start()
        server.start()
        assert wait_until(lambda: sum(m.type == "IMAGE" for m in first) >= 3, 30)
        with socket.create_connection(("127.0.0.1", server.port)) as late:
            time.sleep(0.25)  # frames go on meanwhile; it says "v2" a little after connecting
            late.sendall(encode(status_message(), version=2))
            images = []
            while len(images) < 5:
                version, mtype, _, _ = recv_message(late, timeout_s=10)
                if mtype == "IMAGE":
                    images.append(version)
    finally:
        client.stop()
        server.close()
    assert images == [2] * 5


def test_plus_status_words_and_non_ascii_field_names_survive_replay_and_record(tmp_path):
    """PLUS's finer status words (OUT_OF_VIEW, REQ_TIMEOUT) came back as INVALID, and a field
    whose name is not ASCII was not sent at all: the copy said less than the original."""
    rng = np.random.default_rng(9)
    frames = []
    for k in range(8):
        out = k in (2, 3)
        frames.append(
            TrackedFrame(
                image=rng.integers(0, 256, (16, 20), dtype=np.uint8),
                transforms={
                    "ProbeToTracker": TrackedTransform(
                        _pose(k), TransformStatus.INVALID if out else TransformStatus.OK
                    )
                },
                t_device=5.0 + k / FPS,
                frame_number=k,
                fields={"Größe": f"{k} µm"}
                | ({"ProbeToTrackerTransformStatus": "OUT_OF_VIEW"} if out else {}),
            )
        )
    source = tmp_path / "words.igs.mha"
    write_sequence(source, frames)
    out = tmp_path / "copy.igs.mha"
    with serve_in_subprocess(source, rate="max") as server:
        result = record(out, port=server.port, stop_on_disconnect=True, connect_timeout_s=20)
    assert result.written == 8
    with read_sequence(source) as original, read_sequence(out) as copy:
        for k in range(8):
            assert copy.fields(k).get("ProbeToTrackerTransformStatus") == original.fields(k).get(
                "ProbeToTrackerTransformStatus"
            ), k
            assert copy.fields(k)["Größe"] == f"{k} µm"
            assert copy.frame(k).transforms["ProbeToTracker"].status is (
                original.frame(k).transforms["ProbeToTracker"].status
            )
            # the IMAGE's matrix could not be computed here: no word of it is kept
            assert "ImageToReferenceTransformStatus" not in copy.fields(k)


def test_a_recording_at_a_positive_lag_pairs_each_image_with_the_pose_of_t_plus_lag(
    recording, tmp_path
):
    """The poses of t + lag arrive after the image; an image waited for them only when its
    transforms were listed in the device file's ``transforms``. Otherwise it was paired at
    once with the newest pose (of t) and the copy, saying ``UsnavTrackerLagSec`` = lag, held
    the poses of t."""
    from usnav.devices.config import ProbeConfig

    lag = 0.05  # 1.5 frame periods
    out = tmp_path / "lagged.igs.mha"
    with serve_in_subprocess(recording, rate="max") as server:
        record(
            out,
            config=ProbeConfig(time_offset_s=lag),
            port=server.port,
            stop_on_disconnect=True,
            connect_timeout_s=20,
        )
    with read_sequence(out) as copy:
        assert copy.paired_tracker_lag_s == pytest.approx(lag)
        for k in range(len(copy) - 2):  # the last ones have no pose after t + lag: held
            if k + 1 in GAP or k + 2 in GAP or k in GAP:
                continue
            probe = copy.frame(k).transforms["ProbeToTracker"]
            x = 10.0 + 2 * (k + lag * FPS)  # _pose is linear in k
            assert probe.matrix[0, 3] == pytest.approx(x, abs=1e-3), k


def test_a_recording_of_the_replay_keeps_the_ultrasound_image_type(tmp_path):
    """The image type (RF_REAL, a header field) was not sent, so the copy of an RF recording
    said BRIGHTNESS: B-mode it never held."""
    rng = np.random.default_rng(11)
    frames = [
        TrackedFrame(
            image=rng.integers(-2000, 2000, (16, 20), dtype=np.int16),
            transforms={"ProbeToTracker": TrackedTransform(_pose(k))},
            t_device=1.0 + k / FPS,
            frame_number=k,
        )
        for k in range(5)
    ]
    source = tmp_path / "rf.igs.mha"
    write_sequence(source, frames, image_type="RF_REAL")
    out = tmp_path / "copy.igs.mha"
    with serve_in_subprocess(source, rate="max") as server:
        record(out, port=server.port, stop_on_disconnect=True, connect_timeout_s=20)
    with read_sequence(out) as copy:
        assert copy.image_type == "RF_REAL"
        assert all("UltrasoundImageType" not in copy.fields(k) for k in range(len(copy)))
        assert len(copy) == 5 and copy.dtype == np.int16


def test_a_recording_over_a_header_v1_link_says_its_poses_are_all_marked_ok(recording, tmp_path):
    # v1 carries no transform status: the copy marks every pose OK, and the result says so
    from usnav.devices.config import ProbeConfig

    out = tmp_path / "v1.igs.mha"
    with serve_in_subprocess(recording, rate="max") as server:
        config = ProbeConfig(header_version=1)
        result = record(
            out, config=config, port=server.port, stop_on_disconnect=True, connect_timeout_s=20
        )
    assert result.written > 0
    assert len(result.warnings) == 1 and "header_version = 2" in result.warnings[0]
