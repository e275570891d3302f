"""What `usnav record` says when its server is not an OpenIGTLink server."""

from __future__ import annotations

import contextlib
import socket
import threading

from cli_helpers import usnav


def _junk_server(stop: threading.Event) -> int:
    """A TCP server on loopback that answers every connection with HTTP, not OpenIGTLink."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.1)

    def serve() -> None:
        with server:
            while not stop.is_set():
                try:
                    peer, _ = server.accept()
                except TimeoutError:
                    continue
                with peer, contextlib.suppress(OSError):
                    peer.sendall(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 200)

    threading.Thread(target=serve, daemon=True).start()
    return int(server.getsockname()[1])


def test_a_server_that_speaks_no_openigtlink_is_said_once(tmp_path) -> None:
    """It printed a logged WARNING line, then the error line saying the same thing."""
    stop = threading.Event()
    port = _junk_server(stop)
    try:
        result = usnav(
            tmp_path, "record", "--port", str(port), "--out", "r.igs.mha", "--connect-timeout", "3"
        )
    finally:
        stop.set()
    assert result.returncode == 2, result.stdout + result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "bad header" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
