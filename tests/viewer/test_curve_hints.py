"""A display whose CURVE keys do not fit the publisher says so instead of waiting silently."""

from __future__ import annotations

import threading

import pytest

from usnav.protocol.curve import generate_keys
from usnav.publish import Publisher
from usnav.viewer.app import run_viewer
from usnav.viewer.state import WAITING


@pytest.fixture
def curve_publisher(tmp_path):
    keys = generate_keys(tmp_path / "keys")
    publisher = Publisher("tcp://127.0.0.1:*", curve_secret_key=keys.server_secret)
    stop = threading.Event()

    def publish() -> None:
        while not stop.is_set():
            publisher.publish_status({"state": "streaming"})
            stop.wait(0.05)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    yield publisher, keys
    stop.set()
    thread.join()
    publisher.close()


def _snapshot(tmp_path, publisher, **keys):
    return run_viewer(
        publisher.endpoint, snapshot=tmp_path / "view.png", frames=1, timeout_s=1.5, **keys
    )


def test_display_without_keys_is_told_the_publisher_needs_them(tmp_path, curve_publisher):
    publisher, _ = curve_publisher
    result = _snapshot(tmp_path, publisher)
    assert result.verdict == WAITING
    assert "requires CURVE keys" in result.reason and "--server-key" in result.reason


def test_display_with_the_wrong_server_key_is_told_so(tmp_path, curve_publisher):
    publisher, keys = curve_publisher
    result = _snapshot(
        tmp_path,
        publisher,
        curve_server_key=keys.client_public,  # not the publisher's key
        curve_client_secret=keys.client_secret,
    )
    assert result.verdict == WAITING
    assert "refused the security handshake" in result.reason


def test_display_with_the_right_keys_has_no_complaint(tmp_path, curve_publisher):
    publisher, keys = curve_publisher
    result = _snapshot(
        tmp_path,
        publisher,
        curve_server_key=keys.server_public,
        curve_client_secret=keys.client_secret,
    )
    assert "handshake" not in result.reason and "CURVE" not in result.reason
    assert result.stats.received["status"] > 0


def test_a_second_secured_publisher_in_the_same_process(curve_publisher) -> None:
    """E.g. a pipeline restarted in-process while the old one closes: no inproc clash."""
    _, keys = curve_publisher
    with Publisher("tcp://127.0.0.1:*", curve_secret_key=keys.server_secret) as second:
        assert second.publish_status({"state": "streaming"})
