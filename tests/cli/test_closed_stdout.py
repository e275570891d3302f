"""A reader that stops early (``usnav bench --list | head -1``) is not a failed command: exit
status 0 and nothing on stderr, as for plain prints (session 36: a rich Console ended the
process with status 1, the README's "failed", where ``usnav info … | head -1`` gave 0)."""

from __future__ import annotations

import os
import subprocess
import sys

from cli_helpers import usnav_env


def _with_stdout_closed(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """``usnav ARGS`` writing into a pipe whose reader is already gone (every write: EPIPE)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "usnav", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env=usnav_env(tmp_path),
        )
    finally:
        os.close(write_end)


def test_a_closed_stdout_ends_a_command_printing_through_rich_with_status_0(tmp_path):
    result = _with_stdout_closed(tmp_path, "bench", "--list")  # a rich Console's table
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
