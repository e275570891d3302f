"""Hostile or malformed messages on a real ZeroMQ socket: skipped and counted, never fatal."""

from __future__ import annotations

import os
import threading
import time

import msgpack
import pytest
import zmq
from waiting import wait_until

from usnav.client import HeaderError, MarginMessage, StatusMessage, Subscriber
from usnav.errors import InputError
from usnav.protocol import wire as p


def _header(topic: str, **fields) -> bytes:
    header = {
        "schema": p.SCHEMA,
        "version": p.VERSION,
        "topic": topic,
        "seq": 0,
        "frame_number": -1,
        "t_published": time.time(),
        "buffers": [],
    }
    header.update(fields)
    return msgpack.packb(header)


def _join(pub: zmq.Socket, sub: Subscriber) -> None:
    """Send status until the subscriber sees one (ZeroMQ's slow joiner), then take every join
    message still on its way: a connection keeps its order, so once the last one sent has
    arrived none is left for the test to take as its own (a fixed 50 ms drain left them in
    flight when loopback delivery took longer, as under load)."""
    deadline = time.monotonic() + 10
    sent = 0
    while time.monotonic() < deadline:
        sent += 1
        pub.send_multipart([b"status", _header("status", status={"join": sent})])
        got = sub.receive_latest(timeout_s=0.05).get("status")
        if got is not None:
            while got is None or got.status.get("join") != sent:
                assert time.monotonic() < deadline, "the last join message never arrived"
                got = sub.receive_latest(timeout_s=0.05).get("status")
            return
    raise AssertionError("subscriber never joined")


@pytest.fixture
def raw_pub():
    context = zmq.Context.instance()
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub = Subscriber(f"tcp://127.0.0.1:{port}")
    _join(pub, sub)
    yield pub, sub
    sub.close()
    pub.close(0)


BAD_MESSAGES = {
    "stream is text": [b"status", _header("status", stream="abc", status={})],
    "shape overflows int64": [
        b"frame",
        _header("frame", buffers=[{"name": "image", "dtype": "|u1", "shape": [2**32, 2**32]}]),
        b"",
    ],
    "shape beyond numpy": [
        b"frame",
        _header("frame", buffers=[{"name": "image", "dtype": "|u1", "shape": [2**63, 2]}]),
        b"",
    ],
    "extent not a map": [b"margin", _header("margin", extent=5)],
    "stylus not a map": [b"margin", _header("margin", stylus="tip")],
}


@pytest.mark.parametrize("name", list(BAD_MESSAGES))
def test_a_malformed_message_is_skipped_and_the_next_one_arrives(raw_pub, name) -> None:
    pub, sub = raw_pub
    before = sub.stats.skipped_total
    pub.send_multipart(BAD_MESSAGES[name])
    pub.send_multipart([b"status", _header("status", seq=1, status={"state": "streaming"})])
    received: dict = {}
    deadline = time.monotonic() + 5
    while "status" not in received and time.monotonic() < deadline:
        received.update(sub.receive_latest(timeout_s=0.1))  # must not raise
    assert isinstance(received.get("status"), StatusMessage)
    assert "margin" not in received and "frame" not in received
    assert sub.stats.skipped_total == before + 1
    assert sub.stats.skipped.get("header", 0) + sub.stats.skipped.get("buffer_size", 0) >= 1


def test_messages_refused_after_valid_ones_are_named_until_a_valid_one_comes(raw_pub) -> None:
    """A publisher that restarts speaking a newer protocol version after good data: every
    message of it is refused, and the display must say why, not only "no data" (it said why
    only when nothing valid had ever arrived; session 36)."""
    pub, sub = raw_pub
    assert sub.last_message_time is not None and sub.link_problem == ""
    deadline = time.monotonic() + 5
    while sub.stats.skipped.get("version", 0) < 2:
        assert time.monotonic() < deadline, sub.stats
        pub.send_multipart([b"status", _header("status", version=p.VERSION + 1, status={})])
        sub.receive_latest(timeout_s=0.05)
    assert "refused since the last valid one" in sub.link_problem
    assert f"protocol version {p.VERSION + 1}" in sub.link_problem
    pub.send_multipart([b"status", _header("status", seq=1, status={})])
    while not sub.receive_latest(timeout_s=0.05).get("status"):
        assert time.monotonic() < deadline
    assert sub.link_problem == ""


def test_strict_mode_raises_a_protocol_error_not_a_value_error(raw_pub) -> None:
    pub, sub = raw_pub
    sub.strict = True
    pub.send_multipart(BAD_MESSAGES["stream is text"])
    with pytest.raises(HeaderError, match="stream"):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            sub.receive(timeout_s=0.1)


def test_extent_and_stylus_numbers_are_floats(raw_pub) -> None:
    pub, sub = raw_pub
    header = _header(
        "margin",
        extent={"lateral_mm": "7", "axial_mm": 6.5},
        stylus={"signed_distance_mm": "near", "tip_px": [1.0, 2.0]},
    )
    pub.send_multipart([b"margin", header])
    message = sub.receive(timeout_s=5)
    assert isinstance(message, MarginMessage)
    assert message.extent is not None and message.extent["axial_mm"] == 6.5
    assert message.extent["lateral_mm"] != message.extent["lateral_mm"]  # NaN: not a number
    assert message.stylus is not None
    assert message.stylus["signed_distance_mm"] != message.stylus["signed_distance_mm"]


def test_close_from_another_thread_ends_a_waiting_read_and_later_use_is_refused(
    raw_pub,
) -> None:
    """A display closing its subscriber from its UI thread while the reader waits: the reader
    returns (it got ZeroMQ's 'Socket operation on non-socket' from a socket closed under it),
    no socket is left open, and a later call says the subscriber is closed."""
    _pub, sub = raw_pub
    fds_before = set(os.listdir("/proc/self/fd"))
    got: dict[str, object] = {}

    def read() -> None:
        try:
            got["message"] = sub.receive(None)
        except BaseException as exc:  # the test reports it
            got["error"] = exc

    reader = threading.Thread(target=read)
    reader.start()
    assert wait_until(lambda: sub._reader is reader, 30)
    sub.close()
    reader.join(10)  # a bound against a hang
    assert not reader.is_alive() and got == {"message": None}
    assert wait_until(lambda: set(os.listdir("/proc/self/fd")) < fds_before, 30)
    for call in (lambda: sub.receive(0), lambda: sub.receive_latest(0.1)):
        with pytest.raises(RuntimeError, match="subscriber to tcp://127.0.0.1:.* is closed"):
            call()
    sub.close()  # twice: nothing


def test_bad_endpoint_is_an_input_error() -> None:
    with pytest.raises(InputError, match="garbage"):
        Subscriber("garbage")


def test_half_a_curve_key_pair_is_an_input_error(tmp_path) -> None:
    with pytest.raises(InputError, match="--client-key"):
        Subscriber("tcp://127.0.0.1:5556", curve_server_key=tmp_path / "server.key")


def test_a_port_that_cannot_exist_is_refused_at_once() -> None:
    from usnav.client import Subscriber
    from usnav.errors import InputError

    with pytest.raises(InputError, match="not a TCP port"):
        Subscriber("tcp://127.0.0.1:99999")
    with pytest.raises(InputError, match="no host:port"):
        Subscriber("tcp://5556")


# -- a message over max_message_bytes (ZeroMQ's MAXMSGSIZE) -------------------------------


def test_every_subscriber_bounds_a_message_part_by_default() -> None:
    """Without a bound a publisher on the configured address could make a display allocate
    gigabytes (session 33 left it). The default is twice the largest frame image the probe's
    OpenIGTLink side accepts, the largest part usnav publishes."""
    from usnav.igtl.connection import DEFAULT_MAX_MESSAGE_BYTES

    assert p.MAX_MESSAGE_BYTES >= 2 * DEFAULT_MAX_MESSAGE_BYTES
    with Subscriber("tcp://127.0.0.1:9") as sub:
        assert sub._socket.getsockopt(zmq.MAXMSGSIZE) == p.MAX_MESSAGE_BYTES
    with pytest.raises(ValueError, match="max_message_bytes"):
        Subscriber("tcp://127.0.0.1:9", max_message_bytes=100)


def test_a_publisher_sending_an_oversize_part_is_dropped_counted_and_heard_again() -> None:
    """libzmq drops the connection of a peer that sends a part over MAXMSGSIZE, before
    allocating it, and never reconnects by itself: the subscriber says so and reconnects, and
    the same publisher's normal messages arrive again."""
    limit = 1 << 20
    pub, sub = _raw_publisher_and_subscriber(limit)
    seq = 0

    def send_status() -> None:
        nonlocal seq
        pub.send_multipart([b"status", _header("status", seq=seq, status={})])
        seq += 1

    try:
        deadline = time.monotonic() + 30  # a bound against a hang, not a speed target
        while not sub.receive_latest(timeout_s=0.05):
            assert time.monotonic() < deadline, "subscriber never joined"
            send_status()
        assert sub.connected
        oversize = {"name": "image", "dtype": "|u1", "shape": [limit + 1]}
        pub.send_multipart([b"frame", _header("frame", buffers=[oversize]), bytes(limit + 1)])
        seq_after = seq
        dropped = False
        heard = None
        deadline = time.monotonic() + 30
        while heard is None:
            assert time.monotonic() < deadline, (sub.stats, sub.link_problem)
            send_status()
            dropped |= not sub.connected
            if dropped and sub.stats.skipped.get("oversize"):
                assert "over 1048576 bytes (max_message_bytes)" in sub.link_problem
            heard = sub.receive_latest(timeout_s=0.05).get("status")
            if heard is not None and not sub.stats.skipped.get("oversize"):
                heard = None  # sent before the oversize part reached the subscriber
        assert dropped, "the connection never dropped"
        assert heard.header.seq >= seq_after  # the same publisher, heard again
        assert sub.stats.skipped == {"oversize": 1}
        assert "frame" not in sub.stats.received or sub.stats.received["frame"] == 0
        assert sub.stats.last_error.startswith(f"{sub.address}: the publisher sent a message part")
        assert sub.link_problem == ""  # data flow again
    finally:
        sub.close()
        pub.close(0)


def test_a_publisher_dropped_again_for_an_oversize_part_is_named_from_the_drop() -> None:
    """The client needs ``PROTOCOL_DROP_WAIT_S`` to tell a protocol drop from a plain
    disconnect; the same publisher's next oversize drop is named at once (the last drop's
    reason is kept across the reconnect and the data that came over it), so a display never
    says "connection lost" alone for it (session 36)."""
    limit = 1 << 20
    pub, sub = _raw_publisher_and_subscriber(limit)
    oversize = {"name": "image", "dtype": "|u1", "shape": [limit + 1]}
    deadline = time.monotonic() + 30  # a bound against a hang, not a speed target

    def heard_over_a_live_connection() -> None:
        while not (sub.receive_latest(timeout_s=0.05).get("status") and sub.connected):
            assert time.monotonic() < deadline, (sub.stats, sub.link_problem)
            pub.send_multipart([b"status", _header("status", status={})])
        assert sub.link_problem == ""  # data flow: nothing to name

    try:
        heard_over_a_live_connection()
        pub.send_multipart([b"frame", _header("frame", buffers=[oversize]), bytes(limit + 1)])
        while not sub.stats.skipped.get("oversize"):  # the first drop, classified
            assert time.monotonic() < deadline, (sub.stats, sub.link_problem)
            sub.receive_latest(timeout_s=0.05)
        heard_over_a_live_connection()  # reconnected; data came over the new connection
        pub.send_multipart([b"frame", _header("frame", buffers=[oversize]), bytes(limit + 1)])
        while sub.connected:
            assert time.monotonic() < deadline, (sub.stats, sub.link_problem)
            sub.receive_latest(timeout_s=0.01)
        # the first look after the drop, before the client could classify it
        assert sub.stats.skipped == {"oversize": 1}, "the test looked too late"
        assert "over 1048576 bytes (max_message_bytes)" in sub.link_problem
        while sub.stats.skipped.get("oversize") != 2:  # then classified and counted
            assert time.monotonic() < deadline, (sub.stats, sub.link_problem)
            assert "over 1048576 bytes (max_message_bytes)" in sub.link_problem
            sub.receive_latest(timeout_s=0.05)
    finally:
        sub.close()
        pub.close(0)


def test_a_plain_disconnect_after_an_oversize_drop_is_not_named_for_it() -> None:
    """The kept reason is the last protocol drop's: a publisher that then stops (ZeroMQ
    reconnects by itself) is not said to have sent an oversize part."""
    limit = 1 << 20
    context = zmq.Context.instance()
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    address = f"tcp://127.0.0.1:{port}"
    sub = Subscriber(address, max_message_bytes=limit)
    oversize = {"name": "image", "dtype": "|u1", "shape": [limit + 1]}
    deadline = time.monotonic() + 30  # a bound against a hang, not a speed target
    try:
        _join(pub, sub)
        pub.send_multipart([b"frame", _header("frame", buffers=[oversize]), bytes(limit + 1)])
        # a status heard after the drop (one sent before the oversize part is not)
        while not (
            sub.receive_latest(timeout_s=0.05).get("status")
            and sub.connected
            and sub.stats.skipped.get("oversize")
        ):
            assert time.monotonic() < deadline, (sub.stats, sub.link_problem)
            pub.send_multipart([b"status", _header("status", status={})])
        assert sub.stats.skipped == {"oversize": 1}
        pub.close(0)  # the publisher stops: a plain disconnect
        while sub.connected:
            assert time.monotonic() < deadline
            sub.receive_latest(timeout_s=0.01)
        # ZeroMQ's own reconnect attempts show it is a plain drop
        while sub.link_problem:
            assert time.monotonic() < deadline, sub.link_problem
            sub.receive_latest(timeout_s=0.05)
        assert sub.stats.skipped == {"oversize": 1}
    finally:
        sub.close()
        pub.close(0)


def _raw_publisher_and_subscriber(limit: int) -> tuple[zmq.Socket, Subscriber]:
    """A bare ZeroMQ PUB on a loopback port and a usnav Subscriber to it that refuses parts
    over ``limit`` bytes."""
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    address = f"tcp://127.0.0.1:{pub.bind_to_random_port('tcp://127.0.0.1')}"
    return pub, Subscriber(address, max_message_bytes=limit)


def test_a_margin_marked_stale_is_never_read_better_than_stale(raw_pub) -> None:
    """protocol.md, topic margin: ``stale`` true means "show as stale". A publisher that
    also said LIVE (another program, a bug) was read LIVE: ``display_state`` alone decided
    (session 43). The state is made worse by it, never better."""
    pub, sub = raw_pub
    for state in ("LIVE", "UNCERTAIN"):
        header = _header(
            "margin",
            display_state=state,
            display_reason="",
            stale=True,
            stale_reason="probe link lost",
        )
        pub.send_multipart([b"margin", header])
        message = sub.receive(timeout_s=5)
        assert isinstance(message, MarginMessage)
        assert message.header.display_state == "STALE", state
        assert message.header.display_reason == "probe link lost"
