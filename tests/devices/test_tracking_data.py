"""A tracker's poses as TDATA, QTDATA or POSITION (not TRANSFORM): PLUS and trackers may send
them; until session 35 usnav dropped them as "unknown type" (counted among malformed
messages), the frames went untracked and the device hint asked to set ``transforms``.

The reference peers are the OpenIGTLink C++ library's TrackingDataServer and
QuaternionTrackingDataServer (they stream after ``STT_TDATA`` / ``STT_QTDATA``, and give the
same pose sequence, one as matrices, the other as quaternions); the probe test uses byte
streams packed by hand from the specification over a real loopback socket.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from ci_rules import skip_or_fail
from igtl_helpers import build_examples, free_port, raw_message, wait_until

from usnav.devices.config import ProbeConfig
from usnav.devices.probe import ProbeClient
from usnav.devices.recorder import SplitRecording
from usnav.frames import TransformStatus
from usnav.igtl import IgtlClient, LinkState, Message, RawContent, TrackingDataContent
from usnav.igtl.codec import ImageContent, encode
from usnav.io.sequence import read_sequence


@pytest.fixture(scope="module")
def bins() -> dict[str, Path]:
    found = build_examples(
        (
            "TrackingData/TrackingDataServer",
            "QuaternionTrackingData/QuaternionTrackingDataServer",
        )
    )
    if found is None:
        skip_or_fail("openigtlink-examples / libopenigtlink-dev / g++ missing (.ci/run installs)")
    return found


def _first_poses(binary: Path, kind: str) -> dict[str, np.ndarray]:
    """The poses of the first TDATA/QTDATA message the reference server streams."""
    port = free_port()
    process = subprocess.Popen(
        [str(binary), str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    got: list[Message] = []
    client = IgtlClient(port=port, on_message=got.append, header_version=1)
    try:
        client.start()
        assert client.wait_connected(30)
        # resolution 50 ms, coordinate name: STT_TDATA's body (36 bytes)
        start = Message(f"STT_{kind}", "", RawContent(struct.pack(">i32s", 50, b"")))
        assert client.send(start)
        assert wait_until(lambda: any(m.type == kind for m in got), 30)
    finally:
        client.stop()
        process.kill()
        process.wait(10)
    assert client.link_stats().dropped_in == {}, client.link_stats().dropped_in
    first = next(m for m in got if m.type == kind)
    assert isinstance(first.content, TrackingDataContent)
    return {e.name: e.matrix for e in first.content.elements}


def test_tdata_and_qtdata_of_the_reference_servers_decode_to_the_same_poses(bins):
    matrices = _first_poses(bins["TrackingDataServer"], "TDATA")
    quaternions = _first_poses(bins["QuaternionTrackingDataServer"], "QTDATA")
    assert sorted(matrices) == sorted(quaternions) == ["Channel 0", "Channel 1", "Channel 2"]
    for name, m in matrices.items():
        # the first pose of each channel: position 50·(cos 0, sin 0, cos 0)
        np.testing.assert_allclose(m[:3, 3], [50.0, 0.0, 50.0], atol=1e-4)
        np.testing.assert_allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-5)
        np.testing.assert_allclose(quaternions[name], m, atol=1e-5)


def _timestamp(t_s: float) -> int:
    seconds = int(t_s)
    return (seconds << 32) | round((t_s - seconds) * 2**32)


def _pose(angle_deg: float, shift_mm: float) -> np.ndarray:
    a = np.radians(angle_deg)
    m = np.eye(4)
    m[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    m[:3, 3] = [shift_mm, 2.0 * shift_mm, -shift_mm]
    return m


def _tdata(t_s: float, poses: dict[str, np.ndarray]) -> bytes:
    body = b"".join(
        struct.pack(">20sBB12f", name.encode(), 2, 0, *m[:3, :4].T.reshape(-1))
        for name, m in poses.items()
    )
    return raw_message(1, "TDATA", "Tracker", body, ts=_timestamp(t_s))


def _qtdata(t_s: float, poses: dict[str, np.ndarray]) -> bytes:
    from scipy.spatial.transform import Rotation

    body = b"".join(
        struct.pack(
            ">20sBB3f4f",
            name.encode(),
            2,
            0,
            *m[:3, 3],
            *Rotation.from_matrix(m[:3, :3]).as_quat(),  # x, y, z, w
        )
        for name, m in poses.items()
    )
    return raw_message(1, "QTDATA", "Tracker", body, ts=_timestamp(t_s))


def _position(t_s: float, name: str, m: np.ndarray) -> bytes:
    from scipy.spatial.transform import Rotation

    body = struct.pack(">3f4f", *m[:3, 3], *Rotation.from_matrix(m[:3, :3]).as_quat())
    return raw_message(1, "POSITION", name, body, ts=_timestamp(t_s))


@pytest.mark.parametrize("kind", ["TDATA", "QTDATA", "POSITION"])
def test_frames_are_tracked_by_tdata_qtdata_or_position_and_recorded(kind, tmp_path):
    image = (np.arange(24 * 32) % 251).astype(np.uint8).reshape(24, 32)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    sent: list[tuple[float, dict[str, np.ndarray]]] = []
    stop = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            t0 = 1000.0
            for i in range(400):
                if stop.is_set():
                    return
                t = t0 + 0.05 * i
                poses = {"ProbeToTracker": _pose(3.0 * i, i), "ReferenceToTracker": _pose(-5, 7)}
                if kind == "TDATA":
                    tracking = _tdata(t, poses)
                elif kind == "QTDATA":
                    tracking = _qtdata(t, poses)
                else:
                    tracking = b"".join(_position(t, n, m) for n, m in poses.items())
                img = Message("IMAGE", "Image_Reference", ImageContent.from_array(image), t)
                try:
                    conn.sendall(tracking + encode(img, 1))
                except OSError:
                    return
                sent.append((t, poses))
                time.sleep(0.02)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    config = ProbeConfig(port=port, transforms=["ProbeToTracker", "ReferenceToTracker"])
    probe = ProbeClient(config)
    frames = []
    try:
        probe.start()
        assert wait_until(lambda: probe.link_state is LinkState.CONNECTED, 30)
        while len(frames) < 5:
            frame = probe.get_frame(30)
            assert frame is not None, "no frame"
            frames.append(frame)
    finally:
        stop.set()
        probe.close()
        thread.join(10)
        listener.close()
    assert probe.link_stats().dropped_in == {}  # not "unknown type"
    assert probe.device_hint() is None  # the configured names arrived
    by_time = dict(sent)
    for frame in frames:
        for name in ("ProbeToTracker", "ReferenceToTracker"):
            tracked = frame.transform(name)
            assert tracked.status is TransformStatus.OK, (name, tracked.status)
            np.testing.assert_allclose(tracked.matrix, by_time[frame.t_device][name], atol=1e-4)
    # what was received is what is recorded
    recording = SplitRecording(tmp_path / "tracked.igs.mha")
    for frame in frames:
        recording.append(frame)
    recording.close()
    with read_sequence(tmp_path / "tracked.igs.mha") as seq:
        assert len(seq) == len(frames)
        last = seq.frame(len(seq) - 1).transform("ProbeToTracker")
        assert last.status is TransformStatus.OK
        np.testing.assert_allclose(last.matrix, frames[-1].transform("ProbeToTracker").matrix)
