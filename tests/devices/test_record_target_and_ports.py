"""Bad targets and ports are refused at once with one line and exit 2, before any connection."""

from __future__ import annotations

import socket
import subprocess
import sys

import numpy as np
import pytest
from igtl_helpers import refused_port

from usnav.cli.main import main
from usnav.devices.recorder import record
from usnav.errors import ConfigError, InputError, UsnavError
from usnav.frames import TrackedFrame
from usnav.igtl import IgtlServer
from usnav.io.sequence import write_sequence


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in err if "error" in line]
    assert len(errors) == 1, err
    assert errors[0].startswith("usnav record: error:") or errors[0].startswith(
        "usnav replay: error:"
    ), err
    return errors[0]


def test_record_never_overwrites_an_existing_recording(tmp_path, capsys) -> None:
    existing = tmp_path / "case.igs.mha"
    existing.write_bytes(b"yesterday's case")
    # refused before connecting: a server listening on the port is never contacted (this
    # checked "under 5 s" by the clock, which a loaded machine's lazy imports can take)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        code = main(["record", "--port", str(server.getsockname()[1]), "--out", str(existing)])
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected
    assert code == 2
    line = _one_error_line(capsys)
    assert "case.igs.mha" in line and "already exists" in line
    assert existing.read_bytes() == b"yesterday's case"


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("folder", "is a folder"),
        ("missing/r.igs.mha", "no such folder"),
        ("r.txt", "unknown sequence file type"),
    ],
)
def test_record_refuses_an_unwritable_target_before_connecting(
    tmp_path, capsys, target, words
) -> None:
    (tmp_path / "folder").mkdir()
    with refused_port() as port, pytest.raises(InputError, match=words):
        # connect_timeout_s would make this wait 10 s if the target were checked late
        record(tmp_path / target, port=port, connect_timeout_s=10.0)


@pytest.mark.parametrize(
    ("args", "words"),
    [(["--port", "70000"], "--port"), (["--connect-timeout", "-1"], "--connect-timeout")],
)
def test_record_bad_numbers_are_one_line_exit_2(tmp_path, capsys, args, words) -> None:
    code = main(["record", "--out", str(tmp_path / "r.igs.mha"), *args])
    assert code == 2
    assert words in _one_error_line(capsys)


def test_record_error_is_on_its_own_line_after_the_progress_line(tmp_path) -> None:
    """stderr that is not a terminal (a log): the error does not run into the status line."""
    out = tmp_path / "r.igs.mha"
    with refused_port() as port:
        timeout_and_port = ["--connect-timeout", "0.3", "--port", str(port)]
        proc = subprocess.run(
            [sys.executable, "-m", "usnav", "record", "--out", str(out), *timeout_and_port],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert any(line.startswith("usnav record: error: no frame from") for line in lines), lines
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("port", [99999, -1, "18944"])
def test_server_port_out_of_range_is_a_config_error(port) -> None:
    with pytest.raises(ConfigError, match="not a TCP port"):
        IgtlServer(port=port)  # type: ignore[arg-type]


def test_replay_port_out_of_range_is_one_line_exit_2(tmp_path, capsys) -> None:
    recording = write_sequence(
        tmp_path / "x.igs.mha", [TrackedFrame(np.zeros((4, 5), np.uint8), t_device=1.0)]
    )
    code = main(["replay", str(recording), "--port", "99999"])
    assert code == 2
    assert "99999" in _one_error_line(capsys)


def test_bind_errors_say_what_is_wrong() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UsnavError, match="another server using the port"):
            IgtlServer(port=port).start()
    server = IgtlServer(host="no-such-host.invalid", port=0, allow=["10.0.0.1"])
    with pytest.raises(UsnavError, match="host name") as caught:
        server.start()
    assert "another server" not in str(caught.value)
