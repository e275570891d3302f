"""Hostile or malformed messages on a real ZeroMQ socket: skipped and counted, never fatal."""

from __future__ import annotations

import time

import msgpack
import pytest
import zmq

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


@pytest.fixture
def raw_pub():
    context = zmq.Context.instance()
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub = Subscriber(f"tcp://127.0.0.1:{port}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # slow joiner: wait until a status arrives
        pub.send_multipart([b"status", _header("status", status={})])
        if sub.receive_latest(timeout_s=0.05):
            break
    else:
        raise AssertionError("subscriber never joined")
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
