"""CURVE: an authorised client receives, an unknown client does not, keys are never clobbered."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import zmq

from usnav.errors import InputError
from usnav.protocol.curve import (
    generate_keys,
    interface_name,
    is_loopback_endpoint,
    secure_client_socket,
    secure_server_socket,
)


def _receive(sub: zmq.Socket, pub: zmq.Socket, wait_s: float) -> bytes | None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        pub.send(b"margin hello")
        if sub.poll(50):
            return sub.recv()
    return None


def test_only_authorised_clients_receive(tmp_path: Path) -> None:
    keys = generate_keys(tmp_path / "keys")
    assert oct(keys.server_secret.stat().st_mode & 0o777) == "0o600"
    intruder = generate_keys(tmp_path / "other")  # a key pair the publisher never authorised
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    auth = secure_server_socket(pub, keys.server_secret, keys.authorized_dir)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    try:
        good = ctx.socket(zmq.SUB)
        secure_client_socket(good, keys.server_public, keys.client_secret)
        good.setsockopt(zmq.SUBSCRIBE, b"")
        good.connect(f"tcp://127.0.0.1:{port}")
        bad = ctx.socket(zmq.SUB)
        secure_client_socket(bad, keys.server_public, intruder.client_secret)
        bad.setsockopt(zmq.SUBSCRIBE, b"")
        bad.connect(f"tcp://127.0.0.1:{port}")
        plain = ctx.socket(zmq.SUB)
        plain.setsockopt(zmq.SUBSCRIBE, b"")
        plain.connect(f"tcp://127.0.0.1:{port}")
        assert _receive(good, pub, 5.0) == b"margin hello"
        assert _receive(bad, pub, 0.5) is None
        assert _receive(plain, pub, 0.5) is None
        for s in (good, bad, plain):
            s.close(0)
    finally:
        pub.close(0)
        auth.stop()
        ctx.term()


def test_existing_keys_are_not_overwritten(tmp_path: Path) -> None:
    generate_keys(tmp_path)
    with pytest.raises(InputError, match="already exists"):
        generate_keys(tmp_path)


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("tcp://127.0.0.1:5556", True),
        ("tcp://localhost:5556", True),
        ("ipc:///tmp/usnav", True),
        ("tcp://0.0.0.0:5556", False),
        ("tcp://192.168.1.20:5556", False),
        ("tcp://lo:5556", False),  # an interface name: its addresses are not checked
    ],
)
def test_loopback_detection(address: str, loopback: bool) -> None:
    assert is_loopback_endpoint(address) is loopback


@pytest.mark.parametrize(
    ("address", "name"),
    [
        ("tcp://lo:5556", "lo"),
        ("tcp://eth0:5556", "eth0"),
        ("tcp://127.0.0.1:5556", None),
        ("tcp://[::1]:5556", None),
        ("tcp://localhost:5556", None),
        ("tcp://*:5556", None),
        ("tcp://eth0;127.0.0.1:5556", None),  # source;destination: the generic refusal
        ("ipc:///tmp/usnav", None),
    ],
)
def test_interface_names_are_told_apart(address: str, name: str | None) -> None:
    assert interface_name(address) == name
    if name is not None:
        assert not is_loopback_endpoint(address)  # the safe default stays


@pytest.mark.parametrize("interface", ["lo", "eth0"])
def test_an_interface_name_is_refused_saying_what_to_write_instead(interface: str) -> None:
    """Session 30's protocol audit: ``tcp://lo:PORT`` was refused as 'beyond loopback' with
    the advice to bind tcp://127.0.0.1 (no port, no word on why 'lo' is not loopback). An
    interface's addresses are the machine's configuration, so it stays refused; the message
    says so and gives the endpoint to write, port included."""
    from usnav.publish.publisher import Publisher

    with pytest.raises(InputError) as info:
        Publisher(f"tcp://{interface}:56008")
    message = str(info.value)
    assert f"'{interface}' names a network interface, not an address" in message
    assert "write tcp://127.0.0.1:56008" in message and "--curve-key" in message
    assert "\n" not in message


def test_an_address_beyond_loopback_is_told_the_loopback_endpoint_with_its_port() -> None:
    from usnav.publish.publisher import Publisher

    with pytest.raises(InputError, match=r"or bind tcp://127\.0\.0\.1:56001\)"):
        Publisher("tcp://0.0.0.0:56001")


def test_publisher_refuses_plain_network_bind_and_serves_curve_clients(tmp_path: Path) -> None:
    from usnav.client import StatusMessage, Subscriber
    from usnav.publish.publisher import Publisher

    with pytest.raises(InputError, match="beyond loopback needs encryption"):
        Publisher("tcp://0.0.0.0:*")
    keys = generate_keys(tmp_path / "keys")
    # CURVE on loopback here (the test must not open a network port); the same code path
    # is what a non-loopback bind uses
    with Publisher("tcp://127.0.0.1:*", curve_secret_key=keys.server_secret) as publisher:
        good = Subscriber(
            publisher.endpoint,
            curve_server_key=keys.server_public,
            curve_client_secret=keys.client_secret,
        )
        plain = Subscriber(publisher.endpoint)
        try:
            got_good, got_plain = None, None
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline and got_good is None:
                publisher.publish_status({"state": "streaming"})
                got_good = good.receive(0.05)
                got_plain = got_plain or plain.receive(0.0)
            assert isinstance(got_good, StatusMessage)
            assert got_good.status["state"] == "streaming"
            assert got_plain is None
        finally:
            good.close()
            plain.close()
