"""Publisher and subscriber over real ZeroMQ sockets on loopback."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import zmq
from waiting import wait_until

from usnav.client import FrameMessage, MarginMessage, RegistrationMessage, StatusMessage, Subscriber
from usnav.errors import InputError
from usnav.frames import TrackedFrame
from usnav.margins import MarginEstimator
from usnav.margins.phantom import make_phantom
from usnav.protocol import wire as p
from usnav.publish import Publisher
from usnav.registration.estimate import RegistrationEstimate


@pytest.fixture(scope="module")
def case():
    return make_phantom(cyst=True, seed=2, shift_mm=(0.0, 0.8, 0.5))


@pytest.fixture(scope="module")
def estimator(case):
    return MarginEstimator(case.label)


@pytest.fixture
def pair():
    publisher = Publisher("tcp://127.0.0.1:*", hwm=100)
    subscriber = Subscriber(publisher.endpoint, strict=True)
    _join(publisher, subscriber)
    yield publisher, subscriber
    subscriber.close()
    publisher.close()


def _join(publisher: Publisher, subscriber: Subscriber) -> None:
    """Publish status until the subscriber sees one (ZeroMQ's slow-joiner), then take every
    join message still on its way: a connection keeps its order, so once the last one sent has
    arrived none is left for the test to take as its own (a drain that waited a fixed 50 ms
    left them in flight when loopback delivery took longer, as under load)."""
    deadline = time.monotonic() + 10
    sent = 0
    while time.monotonic() < deadline:
        sent += 1
        publisher.publish_status({"hello": sent})
        message = subscriber.receive(timeout_s=0.05)
        if message is not None:
            while message is None or message.status.get("hello") != sent:
                assert time.monotonic() < deadline, "the last join message never arrived"
                message = subscriber.receive(timeout_s=0.05)
            return
    raise AssertionError("subscriber never joined")


def test_margin_messages_carry_correct_headers_and_contours(pair, case, estimator) -> None:
    publisher, subscriber = pair
    reg = RegistrationEstimate(np.eye(4), quality=0.83, t_computed=time.time() - 2.0, sequence=5)
    sent = []
    for number in range(3):
        frame = TrackedFrame(case.image, frame_number=100 + number, t_device=50.0 + number)
        margins = estimator.estimate(case.image, case.image_to_mri, reg, frame_number=100 + number)
        assert publisher.publish_margins(frame, margins, reg)
        sent.append((frame, margins))
    received = [subscriber.receive(timeout_s=5) for _ in range(3)]
    first_seq = received[0].header.seq
    for k, ((frame, margins), message) in enumerate(zip(sent, received, strict=True)):
        assert isinstance(message, MarginMessage)
        h = message.header
        assert h.topic == "margin" and h.raw["schema"] == "usnav" and h.raw["version"] == 2
        assert h.seq == first_seq + k and h.gap == 0 and h.stream == publisher.stream
        assert h.frame_number == frame.frame_number
        assert h.t_device == frame.t_device
        assert frame.t_received <= h.t_published <= h.t_arrived
        np.testing.assert_array_equal(h.image_to_mri, case.image_to_mri)
        # the navigation registration (source "init") is never shown as good, and has no
        # age or score: it was never estimated on the images
        assert h.display_state == "UNCERTAIN" and not h.registration_checked
        assert h.age_s is None and h.quality is None
        assert message.in_view and message.image_shape == case.image.shape
        assert message.spacing_mm == pytest.approx(margins.spacing_mm)
        assert len(message.contours) == len(margins.contours)
        for got, want in zip(message.contours, margins.contours, strict=True):
            assert got.structure == want.structure and got.label == want.label
            np.testing.assert_allclose(got.predicted_px, want.predicted_px, atol=1e-4)
            np.testing.assert_allclose(got.observed_px, want.observed_px, atol=1e-4)
            np.testing.assert_allclose(got.confidence, want.confidence, atol=1e-6)
            np.testing.assert_allclose(got.predicted_mri_mm, want.predicted_mri_mm, atol=1e-3)
            np.testing.assert_array_equal(got.faces_tissue, want.faces_tissue)
        np.testing.assert_array_equal(message.label_image, margins.label_image)
        assert message.extent["lateral_mm"] == pytest.approx(margins.extent.lateral_mm)
        assert message.polarity == margins.polarity
    # seq is per topic: a registration message starts its own count
    publisher.publish_registration(reg)
    message = subscriber.receive(timeout_s=5)
    assert isinstance(message, RegistrationMessage)
    np.testing.assert_array_equal(message.reference_to_mri, np.eye(4))
    assert message.estimate_sequence == 5 and message.header.seq == 0
    # an image-based estimate carries its age and score
    checked = RegistrationEstimate(
        np.eye(4), quality=0.83, t_computed=time.time() - 2.0, source="streaming window"
    )
    frame = TrackedFrame(case.image, frame_number=200, t_device=60.0)
    margins = estimator.estimate(case.image, case.image_to_mri, checked, frame_number=200)
    assert publisher.publish_margins(frame, margins, checked)
    h = subscriber.receive(timeout_s=5).header
    assert h.registration_checked
    assert h.age_s == pytest.approx(2.0, abs=0.5) and h.quality == pytest.approx(0.83)


def test_no_tumor_in_view_goes_over_as_such(pair, case, estimator) -> None:
    publisher, subscriber = pair
    away = case.image_to_mri.copy()
    away[:3, 3] += 60.0
    margins = estimator.estimate(case.image, away, None)
    publisher.publish_margins(None, margins)
    message = subscriber.receive(timeout_s=5)
    assert not message.in_view and message.contours == () and message.label_image is None
    assert "no tumor" in message.reason
    assert message.header.display_state == "UNCERTAIN"


def test_frame_and_status_topics(pair, case) -> None:
    publisher, subscriber = pair
    frame = TrackedFrame(case.image, frame_number=7)
    publisher.publish_frame(frame, case.image_to_mri)
    publisher.publish_status({"fps": np.float64(30.0), "state": "streaming", "odd": object()})
    got = [subscriber.receive(timeout_s=5) for _ in range(2)]
    image = next(m for m in got if isinstance(m, FrameMessage))
    status = next(m for m in got if isinstance(m, StatusMessage))
    np.testing.assert_array_equal(image.image, case.image)
    assert image.spacing_mm == pytest.approx((0.15, 0.15))
    assert status.status["fps"] == 30.0 and status.status["state"] == "streaming"
    assert isinstance(status.status["odd"], str)
    # an unknown number goes out as nil: NaN is not JSON, and a display re-serialising the
    # map must not choke on it
    publisher.publish_status({"latency_p99_ms": float("nan"), "nested": {"x": np.float32("inf")}})
    status = subscriber.receive(timeout_s=5)
    assert status.status == {"latency_p99_ms": None, "nested": {"x": None}}


def _ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_the_ipv6_loopback_is_a_loopback_endpoint() -> None:
    """``tcp://[::1]:port`` is loopback: published without keys, and a subscriber reaches it
    (ZeroMQ binds and connects IPv6 only with its IPV6 option set)."""
    with Publisher("tcp://[::1]:*") as publisher, Subscriber(publisher.endpoint) as subscriber:
        assert publisher.endpoint.startswith("tcp://[::1]:")
        _join(publisher, subscriber)


def _raw_pub() -> tuple[zmq.Socket, str]:
    socket = zmq.Context.instance().socket(zmq.PUB)
    socket.setsockopt(zmq.LINGER, 0)
    socket.bind("tcp://127.0.0.1:*")
    return socket, socket.getsockopt_string(zmq.LAST_ENDPOINT)


def _header_map(seq: int, stream: int) -> dict:
    return {
        "schema": "usnav",
        "version": 1,
        "topic": "status",
        "seq": seq,
        "stream": stream,
        "frame_number": -1,
        "t_device": None,
        "t_received": None,
        "t_published": time.time(),
        "ImageToMri": None,
        "age_s": None,
        "quality": None,
        "status": {},
    }


def _status(seq: int, stream: int = 1, **changes) -> list[bytes]:
    header = _header_map(seq, stream) | changes
    return [bytes(x) for x in p.encode("status", header, [])]


def _frame(seq: int, stream: int) -> list[bytes]:
    header = {k: v for k, v in _header_map(seq, stream).items() if k != "status"}
    return [
        bytes(x)
        for x in p.encode(
            "frame", header | {"topic": "frame"}, [("image", np.zeros((4, 4), np.uint8))]
        )
    ]


def _raw_join(socket: zmq.Socket, subscriber: Subscriber) -> None:
    """As :func:`_join`, on a bare socket: every join message taken, the last one sent last."""
    deadline = time.monotonic() + 10
    sent = 0
    while time.monotonic() < deadline:
        sent += 1
        socket.send_multipart(_status(0, stream=999, status={"hello": sent}))
        message = subscriber.receive(timeout_s=0.05)
        if message is not None:
            while message is None or message.status.get("hello") != sent:
                assert time.monotonic() < deadline, "the last join message never arrived"
                message = subscriber.receive(timeout_s=0.05)
            return
    raise AssertionError("subscriber never joined")


def test_gaps_and_restarts_are_detected() -> None:
    socket, address = _raw_pub()
    with Subscriber(address) as subscriber:
        _raw_join(socket, subscriber)
        for seq in (0, 1, 2, 5, 6):
            socket.send_multipart(_status(seq, stream=7))
        got = [subscriber.receive(timeout_s=5) for _ in range(5)]
        assert [m.header.seq for m in got] == [0, 1, 2, 5, 6]
        assert [m.header.gap for m in got] == [0, 0, 0, 2, 0]
        assert subscriber.stats.gaps["status"] == 2
        restarts = subscriber.stats.restarts
        socket.send_multipart(_frame(0, stream=7))
        assert subscriber.receive(timeout_s=5).header.gap == 0
        # a restarted publisher (new stream id) starts at 0: not a gap
        socket.send_multipart(_status(0, stream=8))
        assert subscriber.receive(timeout_s=5).header.gap == 0
        assert subscriber.stats.restarts == restarts + 1
        assert subscriber.stats.gaps["status"] == 2
        # one restart, whatever the number of topics it is seen on (it was counted per topic)
        socket.send_multipart(_frame(0, stream=8))
        assert subscriber.receive(timeout_s=5).header.gap == 0
        assert subscriber.stats.restarts == restarts + 1
    socket.close(0)


def test_bad_messages_are_skipped_and_counted_or_raised() -> None:
    socket, address = _raw_pub()
    good = _status(1, stream=3)
    frame_parts = [
        bytes(x)
        for x in p.encode(
            "frame",
            {k: v for k, v in _header_map(0, 3).items() if k != "status"} | {"topic": "frame"},
            [("image", np.zeros((4, 4), np.uint8))],
        )
    ]
    bad = {
        "version": _status(2, stream=3, version=99),
        "truncated": [b"status"],
        "buffer_size": [frame_parts[0], frame_parts[1], frame_parts[2][:15]],
        "header": [b"status", b"\xc1"],
    }
    with Subscriber(address) as subscriber:
        _raw_join(socket, subscriber)
        for parts in bad.values():
            socket.send_multipart(parts)
        socket.send_multipart(good)
        message = subscriber.receive(timeout_s=5)
        assert message is not None and message.header.seq == 1  # survived, still delivering
        for reason in bad:
            assert subscriber.stats.skipped.get(reason) == 1, (reason, subscriber.stats.skipped)
        assert subscriber.stats.last_error
    with Subscriber(address, strict=True) as strict:
        _raw_join(socket, strict)
        errors = {
            "version": p.VersionError,
            "truncated": p.TruncatedMessageError,
            "buffer_size": p.BufferSizeError,
            "header": p.HeaderError,
        }
        for reason, parts in bad.items():
            socket.send_multipart(parts)
            with pytest.raises(errors[reason]):
                strict.receive(timeout_s=5)
    socket.close(0)


def test_draining_keeps_the_newest_per_topic(pair) -> None:
    publisher, subscriber = pair
    for k in range(20):
        publisher.publish_status({"k": k})
    publisher.publish_registration(RegistrationEstimate(np.eye(4)))
    deadline = time.monotonic() + 5
    latest: dict = {}
    # the registration is sent right after the 20th status, so a drain may end between them:
    # drain until both arrived (stopping at status 19 alone made this test racy)
    while time.monotonic() < deadline and (
        "status" not in latest or latest["status"].status["k"] != 19 or "registration" not in latest
    ):
        latest.update(subscriber.receive_latest(timeout_s=0.2))
    assert latest["status"].status["k"] == 19
    assert "registration" in latest
    assert subscriber.stats.superseded >= 1
    assert subscriber.stats.gaps["status"] == 0


def test_what_a_frozen_display_drains_counts_as_old_as_its_freeze(pair) -> None:
    """A display that stopped looking for 2 s (a frozen window) drains messages that waited
    in its queue: they count as old as the freeze, so the display state is STALE, not the
    present (session 36: 1.6-1.9 s old margins were shown as current). The next drain's
    fresh messages count from their arrival again."""
    from usnav.protocol.display import STALE, DisplayState, display_state

    publisher, subscriber = pair
    sent = time.time()
    publisher.publish_status({"k": 0})
    assert wait_until(lambda: "status" in subscriber.receive_latest(timeout_s=0.1), 30)
    assert subscriber.last_message_time >= sent  # counted from its arrival (no clock bound)
    publisher.publish_status({"k": 1})  # queued while the display does not look
    time.sleep(2.0)
    assert subscriber.receive_latest(timeout_s=0.1)["status"].status["k"] == 1
    age = time.time() - subscriber.last_message_time
    assert age >= 1.9
    published = DisplayState("LIVE", "")
    state = display_state(
        published,
        now=time.time(),
        last_message_s=subscriber.last_message_time,
        data_arrived_s=None,
        connected=True,
        lost_after_s=1.5,
    )
    assert state.state == STALE and "no data for" in state.reason
    sent = time.time()
    publisher.publish_status({"k": 2})  # the present again: waited for, not queued
    assert subscriber.receive_latest(timeout_s=1.0)["status"].status["k"] == 2
    assert subscriber.last_message_time >= sent  # from its arrival, not from the freeze


def test_draining_returns_the_newest_margin_with_its_own_frame(pair, case, estimator) -> None:
    """Frames run ahead of margins: a drain holding frames 10-13 and the margin of frame 11
    returns frame 11 (kept from this drain), and a later drain with only the margin of frame
    12 returns frame 12 (kept from the earlier one). Before, the viewer drew margin 11 over
    frame 13."""
    publisher, subscriber = pair
    reg = RegistrationEstimate(np.eye(4), source="image")
    frames = {n: TrackedFrame(case.image, frame_number=n) for n in range(10, 14)}
    for frame in frames.values():
        publisher.publish_frame(frame, case.image_to_mri, reg)
    margins = estimator.estimate(case.image, case.image_to_mri, reg, frame_number=11)
    publisher.publish_margins(frames[11], margins, reg)

    def drain_until_margin() -> dict:
        deadline = time.monotonic() + 5
        got: dict = {}
        while time.monotonic() < deadline and "margin" not in got:
            got = subscriber.receive_latest(timeout_s=0.2)
        return got

    first = drain_until_margin()
    assert first["margin"].header.frame_number == 11
    assert first["frame"].header.frame_number == 11
    margins = estimator.estimate(case.image, case.image_to_mri, reg, frame_number=12)
    publisher.publish_margins(frames[12], margins, reg)
    second = drain_until_margin()
    assert second["margin"].header.frame_number == 12
    assert second["frame"].header.frame_number == 12
    # a margin whose frame never came (frames not published): the newest frame, if any
    publisher.publish_frame(TrackedFrame(case.image, frame_number=30), case.image_to_mri, reg)
    margins = estimator.estimate(case.image, case.image_to_mri, reg, frame_number=29)
    publisher.publish_margins(TrackedFrame(case.image, frame_number=29), margins, reg)
    third = drain_until_margin()
    assert third["margin"].header.frame_number == 29
    assert "frame" not in third or third["frame"].header.frame_number == 30


def test_a_stalled_subscriber_never_blocks_the_publisher(case) -> None:
    publisher = Publisher("tcp://127.0.0.1:*", hwm=5)
    stalled = Subscriber(publisher.endpoint, hwm=5)  # connected, never reads
    _join(publisher, stalled)
    frame = TrackedFrame(np.zeros((512, 512), np.uint8), frame_number=0)
    done = threading.Event()

    def flood() -> None:
        for number in range(3000):
            frame.frame_number = number
            publisher.publish_frame(frame)
        done.set()

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    # 3000 × 256 KiB is 750 MiB: a blocking publisher would still be stuck after a minute
    assert done.wait(timeout=60), "publisher blocked on a stalled subscriber"
    assert publisher.sent["frame"] == 3000 and publisher.failed == 0
    # the stalled subscriber lost messages, and can tell how many
    deadline = time.monotonic() + 10
    while stalled.receive_latest(timeout_s=0.3) and time.monotonic() < deadline:
        pass
    frame.frame_number = 3000
    publisher.publish_frame(frame)  # one more after the queues emptied: arrives
    last = stalled.receive(timeout_s=5)
    assert last is not None and last.header.frame_number == 3000
    total = stalled.stats.received["frame"] + stalled.stats.gaps["frame"]
    assert stalled.stats.gaps["frame"] > 0
    assert total == publisher.sent["frame"]
    stalled.close()
    publisher.close()


def test_address_in_use_is_a_clear_error() -> None:
    with (
        Publisher("tcp://127.0.0.1:*") as first,
        pytest.raises(InputError, match="already in use|cannot bind"),
    ):
        Publisher(first.endpoint)
    with pytest.raises(InputError, match="endpoint"):
        Publisher("not-an-address")


def test_subscriber_connection_state_follows_the_publisher() -> None:
    publisher = Publisher("tcp://127.0.0.1:*")
    subscriber = Subscriber(publisher.endpoint)
    _join(publisher, subscriber)
    assert subscriber.connected
    publisher.close()
    assert wait_until(lambda: not subscriber.connected, 30)
    subscriber.close()


def test_an_unconfirmed_navigation_registration_goes_out_as_such(pair, case) -> None:
    """The registration in use after rejected image-based tries: still UNCERTAIN, and the
    display is told why rather than "not yet checked"."""
    publisher, subscriber = pair
    note = "3 image-based tries rejected (latest: ambiguous along the sweep)"
    estimate = RegistrationEstimate(np.eye(4), source="init", unconfirmed=note)
    publisher.publish_registration(estimate, in_use=True, resent=True)
    publisher.publish_frame(TrackedFrame(case.image, frame_number=3), case.image_to_mri)
    got = [subscriber.receive(timeout_s=5) for _ in range(2)]
    assert {type(m) for m in got} == {RegistrationMessage, FrameMessage}
    for message in got:
        assert message.header.display_state == "UNCERTAIN"
        assert message.header.display_reason.endswith(f"not confirmed on the ultrasound: {note}")
        assert not message.header.registration_checked


def test_a_contradicted_registration_goes_out_uncertain(pair, case) -> None:
    """An image-based estimate the newest frames contradict (session 37: the patient reference
    was bumped) is sent UNCERTAIN with the reason, though its bound and age would be LIVE."""
    publisher, subscriber = pair
    good = RegistrationEstimate(np.eye(4), source="image", uncertainty_mm=1.0)
    note = "a pose 3.1 mm from it scores clearly better on the newest frames"
    publisher.publish_registration(good, in_use=True, resent=True)
    publisher.publish_registration(replace(good, contradicted=note), in_use=True, resent=True)
    got = [subscriber.receive(timeout_s=5) for _ in range(2)]
    assert [m.header.display_state for m in got] == ["LIVE", "UNCERTAIN"]
    assert got[1].header.display_reason.endswith(note)
    assert "contradicted by the newest frames" in got[1].header.display_reason
    assert got[1].header.registration_checked


def test_the_documented_python_client_runs(case, estimator) -> None:
    """docs/protocol.md's "Python client" example, run as written (only the address changed)
    in its own process against a real publisher: a third-party developer's first copy-paste
    must work (attribute names, methods, the drained loop)."""
    import subprocess
    import sys
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    example = doc.split("## Python client", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert 'Subscriber("tcp://127.0.0.1:5556")' in example
    with Publisher("tcp://127.0.0.1:*", hwm=100) as publisher:
        code = example.replace("tcp://127.0.0.1:5556", publisher.endpoint)
        client = subprocess.Popen(
            [sys.executable, "-u", "-c", code],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(client.stdout), daemon=True)
        reader.start()
        try:
            reg = RegistrationEstimate(np.eye(4), source="image", uncertainty_mm=1.5)
            margins = estimator.estimate(case.image, case.image_to_mri, reg)
            assert margins.in_view
            deadline = time.monotonic() + 60  # the client's interpreter start included
            number = 0
            while time.monotonic() < deadline and client.poll() is None:
                frame = TrackedFrame(case.image, frame_number=number)
                publisher.publish_margins(frame, margins, reg)
                number += 1
                time.sleep(0.02)
                if sum(line.startswith("frame ") for line in list(lines)) >= 3:
                    break
        finally:
            client.terminate()
            client.wait(timeout=10)
            reader.join(timeout=10)  # stdout is the reader's alone
            err = client.stderr.read()
            client.stdout.close()
            client.stderr.close()
    assert "Traceback" not in err, err
    frames = [line for line in lines if line.startswith("frame ")]
    assert frames, (lines, err)
    assert "LIVE" in frames[0] and "registration ±1.5 mm" in frames[0] and "lost" in frames[0]
    assert any("seen on ultrasound" in line and line.startswith("cyst") for line in lines)


def test_a_standing_doubt_keeps_every_message_from_live(case, estimator) -> None:
    """``usnav run`` with a calibration ``usnav calibrate`` flagged gives its publisher a
    standing doubt: an estimate that would be LIVE (checked, 1.0 mm, just computed) goes out
    UNCERTAIN with that reason on every topic, while a message's own doubt still comes first."""
    doubt = "calibration flagged by usnav calibrate (see the run's log)"
    reg = RegistrationEstimate(
        np.eye(4), quality=0.9, t_computed=time.time(), source="image", uncertainty_mm=1.0
    )
    margins = estimator.estimate(case.image, case.image_to_mri, reg)
    assert margins.in_view
    for standing, expected in (("", "LIVE"), (doubt, "UNCERTAIN")):
        publisher = Publisher("tcp://127.0.0.1:*", hwm=100, standing_doubt=standing)
        subscriber = Subscriber(publisher.endpoint, strict=True)
        try:
            _join(publisher, subscriber)
            publisher.publish_margins(TrackedFrame(case.image, frame_number=1), margins, reg)
            publisher.publish_registration(reg)
            publisher.publish_status({"state": "streaming"})
            got = [subscriber.receive(timeout_s=5) for _ in range(3)]
            assert all(m is not None for m in got)
            assert [m.header.display_state for m in got] == [expected] * 3
            if standing:
                assert all(m.header.display_reason == doubt for m in got)
                own = publisher.display_of(reg, time.time(), doubt="its own doubt")
                assert own.reason == "its own doubt"
        finally:
            subscriber.close()
            publisher.close()


@pytest.mark.parametrize(
    "pixels",
    [
        np.linspace(0.0, 1.0, 48 * 64, dtype=np.float32).reshape(48, 64),  # a float frame, 0..1
        (np.arange(48 * 64, dtype=np.int16) * 7 - 9000).reshape(48, 64),  # signed, below 0
        np.linspace(-1e6, 3e6, 48 * 64 * 3).reshape(48, 64, 3),  # float64 colour
    ],
    ids=["float32-unit", "int16-signed", "float64-rgb"],
)
def test_a_frame_of_another_pixel_type_arrives_with_its_contrast(pair, pixels) -> None:
    """A device may send any OpenIGTLink scalar type: the frame topic carries it as uint16
    stretched over the frame's own range (it was clipped to 0-255: a 0..1 frame went black)."""
    publisher, subscriber = pair
    image = pixels.copy()
    image.flat[5] = np.nan if image.dtype.kind == "f" else image.flat[5]
    publisher.publish_frame(TrackedFrame(image, frame_number=7))
    message = None
    while message is None or not isinstance(message, FrameMessage):
        message = subscriber.receive(timeout_s=10)
        assert message is not None, "no frame arrived"
    got = message.image
    assert got.dtype == np.uint16 and got.shape == image.shape
    values = image.astype(np.float64)
    finite = np.isfinite(values)
    low, high = values[finite].min(), values[finite].max()
    expected = np.where(finite, (values - low) / (high - low) * 65535.0, 0.0)
    np.testing.assert_allclose(got, expected, atol=0.5 + 1e-9)
    assert got.max() == 65535 and np.unique(got).size > 1000  # contrast kept, not clipped


def test_uint8_and_uint16_frames_go_unchanged(pair) -> None:
    publisher, subscriber = pair
    for dtype in (np.uint8, np.uint16):
        image = (np.arange(32 * 40) % 200).astype(dtype).reshape(32, 40)
        publisher.publish_frame(TrackedFrame(image, frame_number=8))
        message = None
        while not isinstance(message, FrameMessage):
            message = subscriber.receive(timeout_s=10)
            assert message is not None, "no frame arrived"
        assert message.image.dtype == dtype
        np.testing.assert_array_equal(message.image, image)


def _doc_sections() -> dict[str, str]:
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    return {part.split("\n", 1)[0]: part for part in doc.split("\n### ")[1:]}


def _table_keys(section: str) -> set[str]:
    """The `key` cells of a section's first table."""
    import re

    table = section.split("\n| key |", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"^\| `([^`]+)` \|", table, re.MULTILINE))


def test_every_header_key_sent_is_documented_and_every_documented_one_is_sent(
    pair, case, estimator
) -> None:
    """docs/protocol.md is the contract a display is written from: a key the publisher sends
    that the doc does not name, or a documented key it does not send, is drift (an outside
    client written from the doc alone found none in session 36; this keeps it so)."""
    import re

    publisher, subscriber = pair
    sections = _doc_sections()
    common = _table_keys(sections["Common header fields (every topic)"])
    margin_keys = _table_keys(sections["Topic `margin` — the tumor margins in one frame"])
    assert {"schema", "display_state", "buffers"} <= common and "in_view" in margin_keys
    reg = RegistrationEstimate(np.eye(4), source="image", uncertainty_mm=1.5, sequence=3)
    frame = TrackedFrame(case.image, frame_number=7, t_device=1.0)
    assert publisher.publish_margins(
        frame, estimator.estimate(case.image, case.image_to_mri, reg, frame_number=7), reg
    )
    assert publisher.publish_frame(frame, case.image_to_mri, reg)
    assert publisher.publish_registration(reg, in_use=True)
    assert publisher.publish_status({"state": "streaming"})
    headers = {}
    deadline = time.monotonic() + 10
    while len(headers) < 4:
        assert time.monotonic() < deadline, sorted(headers)
        message = subscriber.receive(timeout_s=0.1)
        if message is not None:
            headers[message.header.topic] = message.header.raw
    for topic, header in headers.items():
        assert common <= set(header), (topic, common - set(header))
        title = next(t for t in sections if t.startswith(f"Topic `{topic}`"))
        documented = common | set(re.findall(r"`([^`]+)`", sections[title]))
        assert set(header) <= documented, (topic, set(header) - documented)
    assert margin_keys <= set(headers["margin"]), margin_keys - set(headers["margin"])


def _zmtp_subscriber_peer(endpoint: str):
    """A raw TCP peer that completes ZMTP 3.0's NULL handshake as a SUB socket."""
    import socket
    import struct

    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    peer = socket.create_connection((host, int(port)), timeout=20)
    peer.sendall(b"\xff" + bytes(8) + b"\x7f\x03\x00" + b"NULL".ljust(20, b"\0") + bytes(32))
    greeting = b""
    while len(greeting) < 64:
        greeting += peer.recv(64 - len(greeting))
    ready = b"\x05READY\x0bSocket-Type" + struct.pack(">I", 3) + b"SUB"
    peer.sendall(bytes([0x04, len(ready)]) + ready)
    return peer


def test_a_peer_sending_an_oversized_subscription_is_dropped_and_others_still_served() -> None:
    """Security review (session 36): the PUB socket had no MAXMSGSIZE, so ZeroMQ allocated
    whatever size a peer declared for a "subscription" (400 MiB sent of a declared 1 GiB grew
    the publisher by 400 MiB). Now that peer's connection is closed at the frame header."""
    import struct

    with Publisher("tcp://127.0.0.1:*") as publisher, Subscriber(publisher.endpoint) as good:
        peer = _zmtp_subscriber_peer(publisher.endpoint)
        with peer:
            peer.sendall(b"\x02" + struct.pack(">Q", 1 << 30) + b"\x01" + bytes(65536))
            # the publisher's READY, then the close (a reset: the peer's bytes were unread);
            # before the fix the publisher kept reading and this recv timed out
            with contextlib.suppress(ConnectionResetError):
                while peer.recv(65536):
                    pass
        _join(publisher, good)
