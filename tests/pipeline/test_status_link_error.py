"""The status's ``last_error`` is the link's error while it has none: once connected (no image
yet), the error of an earlier attempt is history (``recovered_from``), not a failure to show."""

from __future__ import annotations

import socket

from pipeline_helpers import wait_until
from test_live import _pipeline

from usnav.igtl import IgtlServer, LinkState


def test_a_connected_probe_without_images_is_not_said_to_be_refused(small_case):
    # the port stays bound (never listening) until the server takes it: no other process
    # (another pytest worker) can start a server on it meanwhile
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    port = held.getsockname()[1]
    pipeline = _pipeline(small_case, port, registration=False)
    pipeline.prepare()
    server = None
    try:
        pipeline.start()
        # nothing listens yet: the attempts are refused, and the status says so
        assert wait_until(lambda: "cannot connect" in pipeline.status()["last_error"], 30)
        # a server that accepts and keeps the link alive (STATUS keep-alives) but sends no image
        held.close()
        server = IgtlServer(port=port, keepalive_s=0.2).start()
        assert wait_until(
            lambda: (
                pipeline.probe.link_state is LinkState.CONNECTED
                and pipeline.status()["state"] == "no-signal"
            ),
            30,
        )
        status = pipeline.status()
        assert status["link"] == "connected" and status["state"] == "no-signal", status
        assert status["last_error"] == "", status  # said "cannot connect ... refused"
        assert "cannot connect" in status["recovered_from"]
        # the link drops: its error is the current one again
        server.stop()
        server = None
        assert wait_until(lambda: pipeline.status()["last_error"] != "", 30)
    finally:
        held.close()
        pipeline.stop()
        if server is not None:
            server.stop()
