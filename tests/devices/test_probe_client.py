"""Probe client against a real OpenIGTLink server on loopback: frame assembly, interpolation,
time offset, watchdog, states, queue policy, config."""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from igtl_helpers import raw_message, wait_until
from scipy.spatial.transform import Rotation
from waiting import repeat_until

from usnav.devices.base import DeviceState
from usnav.devices.config import ProbeConfig, load_device_set, load_probe_config
from usnav.devices.probe import ProbeClient
from usnav.errors import ConfigError
from usnav.frames import TransformStatus
from usnav.igtl import IgtlServer, ImageContent, Message, TransformContent

ROOT = Path(__file__).resolve().parents[2]


def pose(t: float) -> np.ndarray:
    """Ground truth: x = 100·t mm, rotation about z by 10·t degrees."""
    m = np.eye(4)
    m[:3, :3] = Rotation.from_euler("z", 10 * t, degrees=True).as_matrix()
    m[0, 3] = 100 * t
    return m


def transform(name: str, t: float, status: str = "OK") -> Message:
    return Message("TRANSFORM", name, TransformContent(pose(t)), t, {"TransformStatus": status})


def image(t: float, number: int, matrix: np.ndarray | None = None, **meta: str) -> Message:
    pixels = np.full((4, 6), number % 256, dtype=np.uint8)
    metadata = {"FrameNumber": str(number), **meta}
    return Message("IMAGE", "Image_Reference", ImageContent.from_array(pixels, matrix), t, metadata)


@pytest.fixture
def server():
    srv = IgtlServer(port=0, keepalive_s=0.2).start()
    yield srv
    srv.stop()


def connect(server: IgtlServer, **options) -> ProbeClient:
    probe = ProbeClient(ProbeConfig(port=server.port, **options))
    probe.start()
    assert server.wait_for_clients(1, timeout_s=30)
    assert wait_until(lambda: all(n > 0 for _, n in server.client_versions().values()), 30)
    return probe


def test_transforms_are_interpolated_to_the_image_time_even_when_the_image_comes_first(server):
    # the image waits up to pairing_wait_s of the wall clock for its bracketing sample: the
    # longest allowed, so that a test thread slowed by load still sends it in time
    probe = connect(server, transforms=["ProbeToReference"], pairing_wait_s=5.0)
    try:
        server.broadcast(transform("ProbeToReference", 1.00))
        server.broadcast(image(1.01, 1))  # before the sample that brackets it
        assert probe.get_frame(0.2) is None  # waits for the next sample
        server.broadcast(transform("ProbeToReference", 1.02))
        frame = probe.get_frame(5)
    finally:
        probe.close()
    assert frame is not None and frame.frame_number == 1
    got = frame.transforms["ProbeToReference"]
    assert got.status is TransformStatus.OK
    np.testing.assert_allclose(got.matrix, pose(1.01), atol=1e-5)  # float32 on the wire


def test_a_tracker_pose_with_a_scale_is_used_as_invalid(server):
    """A TRANSFORM whose rotation part is scaled (a broken tool definition, a corrupt peer)
    places the image wrongly however it is used: the frame's pose is INVALID, counted."""
    probe = connect(server, transforms=["ProbeToReference"], pairing_wait_s=2.0)
    try:
        scaled = pose(1.0)
        scaled[:3, :3] *= 3.0
        server.broadcast(
            Message("TRANSFORM", "ProbeToReference", TransformContent(scaled), 1.0, {})
        )
        server.broadcast(image(1.0, 1))
        frame = probe.get_frame(5)
        for t in (2.0, 2.02):  # a rigid pose again: OK again
            server.broadcast(transform("ProbeToReference", t))
        server.broadcast(image(2.01, 2))
        after = probe.get_frame(5)
    finally:
        probe.close()
    assert frame is not None and after is not None
    assert frame.transforms["ProbeToReference"].status is TransformStatus.INVALID
    assert after.transforms["ProbeToReference"].status is TransformStatus.OK
    assert probe.stats.other_messages["TRANSFORM not rigid (used as INVALID)"] == 1


def test_time_offset_from_temporal_calibration_shifts_the_pairing(server):
    probe = connect(server, transforms=["ProbeToReference"], time_offset_s=0.02)
    try:
        for k in range(6):
            server.broadcast(transform("ProbeToReference", 2.0 + 0.01 * k))
        server.broadcast(image(2.01, 7))
        frame = probe.get_frame(5)
    finally:
        probe.close()
    np.testing.assert_allclose(frame.transforms["ProbeToReference"].matrix, pose(2.03), atol=1e-5)


def test_embedded_matrix_status_and_fields_come_from_the_image(server):
    image_to_reference = np.diag([0.2, 0.25, 0.22, 1.0])
    image_to_reference[:3, 3] = [10, -4, 3]
    probe = connect(server)
    try:
        server.broadcast(
            image(
                3.0,
                5,
                image_to_reference,
                ImageToReferenceTransformStatus="OUT_OF_VIEW",
                UltrasoundImageOrientation="MF",
                Depth="60",
            )
        )
        frame = probe.get_frame(5)
    finally:
        probe.close()
    embedded = frame.transforms["ImageToReference"]
    np.testing.assert_allclose(embedded.matrix, image_to_reference, atol=1e-6)
    assert embedded.status is TransformStatus.INVALID
    assert frame.image.shape == (4, 6) and frame.t_device == pytest.approx(3.0)
    # PLUS's finer word stays beside the INVALID it means, as the sequence reader keeps it
    assert frame.fields == {"Depth": "60", "ImageToReferenceTransformStatus": "OUT_OF_VIEW"}
    assert frame.orientation == "MF"
    assert frame.t_received > 1e9  # host time, s since the epoch


def test_watchdog_marks_a_stale_transform_missing_and_states_follow(server):
    probe = connect(
        server,
        transforms=["ProbeToReference", "StylusToReference"],
        watchdog_s=0.3,
        no_signal_s=0.5,
        pairing_wait_s=0.0,
    )
    changes: list[tuple[str, TransformStatus]] = []
    probe.add_transform_listener(lambda name, status: changes.append((name, status)))
    try:
        t = 10.0
        server.broadcast(
            [transform("ProbeToReference", t), transform("StylusToReference", t), image(t, 1)]
        )
        first = probe.get_frame(5)
        assert first.transforms["StylusToReference"].status is TransformStatus.OK
        assert probe.wait_for_state(DeviceState.STREAMING, timeout_s=30)
        # The stylus leaves the camera's view: only the probe keeps updating.
        sent = [t]

        def probe_only() -> None:
            sent.append(sent[-1] + 0.02)
            server.broadcast([transform("ProbeToReference", sent[-1]), image(sent[-1], len(sent))])
            probe.get_frame(5)

        # the probe keeps streaming at 50 Hz until the stylus's watchdog fires
        assert repeat_until(
            probe_only,
            lambda: probe.transform_states()["StylusToReference"] is TransformStatus.MISSING,
            5,
            every_s=0.02,
        )
        t = sent[-1]
        assert probe.transform_states() == {
            "ProbeToReference": TransformStatus.OK,
            "StylusToReference": TransformStatus.MISSING,
        }
        server.broadcast([transform("ProbeToReference", t + 0.02), image(t + 0.02, 99)])
        stale = probe.get_frame(5)
        assert stale.transforms["StylusToReference"].status is TransformStatus.MISSING
        assert stale.transforms["ProbeToReference"].status is TransformStatus.OK
        assert ("StylusToReference", TransformStatus.MISSING) in changes
        # No more images: the connection stays up but the device says no signal.
        assert probe.wait_for_state(DeviceState.NO_SIGNAL, timeout_s=30)
    finally:
        probe.close()
    assert probe.state is DeviceState.CLOSED


def test_a_configured_transform_never_sent_is_absent_and_hides_no_valid_chain(server):
    """devices/plus-server.toml expects ProbeToReference, ProbeToTracker and
    ReferenceToTracker; a server that sends only the last two must still place every image
    (the never-sent one used to be filled in as a MISSING identity, which won the tree and
    left every frame unplaced, and which a recording then stored as a pose)."""
    from usnav.calibration.stage import CalibrationStage

    probe = connect(
        server,
        transforms=["ProbeToReference", "ProbeToTracker", "ReferenceToTracker"],
        pairing_wait_s=0.0,
    )
    try:
        t = 3.0
        reference = Message("TRANSFORM", "ReferenceToTracker", TransformContent(pose(0.5)), t, {})
        server.broadcast([transform("ProbeToTracker", t), reference, image(t, 1)])
        frame = probe.get_frame(5)
    finally:
        probe.close()
    assert frame is not None
    assert "ProbeToReference" not in frame.transforms
    assert frame.transform("ProbeToReference").status is TransformStatus.MISSING
    matrix, status = CalibrationStage(np.eye(4)).image_to_reference(frame)
    assert status is TransformStatus.OK
    np.testing.assert_allclose(matrix, np.linalg.inv(pose(0.5)) @ pose(t), atol=1e-4)


def test_full_queue_drops_the_oldest_frames_and_counts_them(server):
    probe = connect(server, frame_queue=2, pairing_wait_s=0.0)
    try:
        for k in range(10):
            server.broadcast(image(20.0 + k * 0.01, k + 1))
        assert wait_until(lambda: probe.stats.images == 10, 30)
        numbers = [probe.get_frame(1).frame_number for _ in range(2)]
    finally:
        probe.close()
    assert numbers == [9, 10]
    assert probe.stats.frames_dropped == 8 and probe.stats.frames_missed == 0


def test_gaps_in_the_servers_frame_numbers_are_counted(server):
    probe = connect(server, pairing_wait_s=0.0)
    try:
        for number in (1, 2, 5, 6):
            server.broadcast(image(30.0 + number * 0.01, number))
        assert wait_until(lambda: probe.stats.images == 4, 30)
    finally:
        probe.close()
    assert probe.stats.frames_missed == 2


def test_device_configs_load_and_bad_keys_are_named(tmp_path):
    probe = load_probe_config(ROOT / "devices" / "plus-server.toml")
    assert probe.port == 18944 and probe.image_device == "Image_Reference"
    assert probe.watchdog_s == 0.5
    playback = load_device_set(ROOT / "devices" / "playback.toml").playback
    assert playback.host == "127.0.0.1" and playback.rate == 1.0
    bad = tmp_path / "bad.toml"
    bad.write_text("[probe]\nport = 18944\nwatchdog = 0.5\n")
    with pytest.raises(ConfigError, match="watchdog"):
        load_probe_config(bad)
    bad.write_text('[probe]\ntransforms = ["Probe"]\n')
    with pytest.raises(ConfigError, match="transforms"):
        load_probe_config(bad)
    bad.write_text('[playback]\nrecording = "x.mha"\nhost = "0.0.0.0"\n')
    with pytest.raises(ConfigError, match="allow"):
        load_device_set(bad)
    # a string is not a boolean ('loop = "yes"' was read as true, "no" as false)
    bad.write_text('[playback]\nrecording = "x.mha"\nloop = "no"\n')
    with pytest.raises(ConfigError, match=r"playback\.loop.*expected true or false.*got .no."):
        load_device_set(bad)


def test_the_recorder_s_live_line_does_not_call_frames_lost_upstream_dropped(
    server, tmp_path
) -> None:
    """Frames missing in the server's numbering were never received: the live line keeps them
    apart from frames usnav dropped, as the summary does (it said "2 dropped" beside a
    summary of "dropped 0 (2 missing in the server's numbering)")."""
    import threading

    from usnav.devices.recorder import record

    def serve() -> None:
        assert server.wait_for_clients(1, timeout_s=30)
        assert wait_until(lambda: all(n > 0 for _, n in server.client_versions().values()), 30)
        for n, number in enumerate((1, 2, 5, 6)):  # 3 and 4 lost before reaching usnav
            server.broadcast(image(20.0 + 0.05 * n, number))

    seen = []
    sender = threading.Thread(target=serve, daemon=True)
    sender.start()
    result = record(
        tmp_path / "gap.igs.mha",
        config=ProbeConfig(port=server.port, transforms=[], pairing_wait_s=0.0),
        frames=4,
        progress=seen.append,
        progress_interval_s=0.01,
    )
    sender.join(10)
    assert result.written == 4 and result.dropped == 0 and result.missed == 2
    last = seen[-1]
    assert last.dropped == 0 and last.missed == 2


def test_a_3d_image_is_refused_naming_the_device_not_read_as_rows_cols_channels(server):
    # A (slices, rows, cols) volume delivered as a frame's image was read downstream as
    # (rows, cols, channels): 2 rows of 4 "pixels" with 6 channels, silently wrong.
    probe = connect(server)
    try:
        volume = np.arange(2 * 4 * 6, dtype=np.uint8).reshape(2, 4, 6)
        server.broadcast(
            [Message("IMAGE", "Image_Reference", ImageContent.from_array(volume), 1.0)]
        )
        assert wait_until(lambda: probe.stats.images_not_2d == 1, 30)
        assert probe.get_frame(0.3) is None
        hint = probe.device_hint()
        assert hint is not None and "'Image_Reference' is a 3D volume (6×4×2 voxels)" in hint
        server.broadcast([image(2.0, 7)])
        frame = probe.get_frame(5.0)
        assert frame is not None and frame.image.shape == (4, 6) and frame.frame_number == 7
        assert probe.device_hint() is None  # frames flow: nothing to hint
    finally:
        probe.close()


def _image_header(scalar_type: int = 3) -> bytes:
    """An IMAGE v1 header for 4 cols x 3 rows x 1 slice of ``scalar_type``, 1 channel."""
    return struct.pack(
        ">HBBBB3H12f3H3H", 1, 1, scalar_type, 2, 1, 4, 3, 1, *np.eye(3).ravel(), 1.5, 1, 0, 0,
        0, 0, 4, 3, 1,
    )  # fmt: skip


@contextlib.contextmanager
def _raw_peer():
    """A v1 ProbeClient connected to a raw listening socket: yields (probe, socket)."""
    listener = socket.create_server(("127.0.0.1", 0))
    probe = ProbeClient(ProbeConfig(port=listener.getsockname()[1], header_version=1))
    probe.start()
    try:
        conn, _ = listener.accept()
        with conn:
            yield probe, conn
    finally:
        probe.close()
        listener.close()


def test_a_stream_whose_crcs_are_0_is_named_in_the_hint_not_taken_for_silence():
    # A sender that leaves the CRC 0 streams, but every message is dropped as bad CRC; the
    # only trace was one log line, and `usnav record` asked whether the server was running.
    pixels = bytes(range(12))  # 4 cols x 3 rows uint8
    with _raw_peer() as (probe, conn):
        conn.sendall(
            raw_message(1, "IMAGE", "Image_Reference", _image_header() + pixels, crc=0) * 3
        )
        assert wait_until(lambda: probe.link_stats().dropped_in["bad CRC"] == 3, 30)
        hint = probe.device_hint()
        assert hint is not None and "dropped as malformed: bad CRC (3)" in hint
        assert "'Image_Reference'" in hint


def test_an_image_of_an_unknown_pixel_type_is_refused_naming_its_device(caplog):
    # scalar type 8 is not an OpenIGTLink type: the message is dropped, and the log line
    # (debug after the first from a host) names the device, not only "unknown scalar type 8"
    with _raw_peer() as (probe, conn), caplog.at_level(logging.DEBUG, logger="usnav.igtl"):
        conn.sendall(raw_message(1, "IMAGE", "UsProbe_Left", _image_header(8) + bytes(48)))
        assert wait_until(lambda: probe.link_stats().dropped_in["bad IMAGE"] == 1, 30)
        assert "IMAGE 'UsProbe_Left': unknown scalar type 8" in caplog.text


def test_a_server_status_other_than_ok_is_logged_once_naming_what_it_said(caplog):
    # a scanner's STATUS "probe unplugged" (code 18) used to be only counted as a STATUS
    body = struct.pack(">Hq20s", 18, 0, b"DISCONNECTED") + b"probe unplugged\x00"
    with _raw_peer() as (probe, conn), caplog.at_level(logging.WARNING, "usnav.devices.probe"):
        for _ in range(3):
            conn.sendall(raw_message(1, "STATUS", "UsProbe", body))
        key = "STATUS 18 from 'UsProbe': DISCONNECTED probe unplugged"
        assert wait_until(lambda: probe.stats.other_messages[key] == 3, 30)
        assert caplog.text.count(key) == 1  # once, not per message


def test_usnav_run_names_what_arrived_when_it_is_not_what_was_asked():
    # usnav run's "no frame" line asked "is the server running?" of a peer streaming another
    # IMAGE name; it now gives the probe's hint (the name that arrived, the key to set)
    from usnav.cli.cmd_run import _no_frame

    with _raw_peer() as (probe, conn):
        conn.sendall(raw_message(1, "IMAGE", "Video_Left", _image_header() + bytes(12)))
        assert wait_until(lambda: probe.seen_devices()["IMAGE"], 30)
        line = _no_frame(SimpleNamespace(probe=probe))
        assert "Video_Left" in line and "image_device" in line, line
        assert "is the server running" not in line, line
