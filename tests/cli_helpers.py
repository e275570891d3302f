"""Running ``usnav`` as a user does: a real process, in a scratch folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def usnav_env(tmp_path: Path) -> dict[str, str]:
    """This checkout first on the path; caches and logs in the test's own folder."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["USNAV_CACHE_DIR"] = str(tmp_path / "usnav-cache")
    env["USNAV_LOG_DIR"] = str(tmp_path / "usnav-logs")
    env.pop("COLUMNS", None)
    return env


def usnav(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m usnav ARGS`` with ``tmp_path`` as the working folder."""
    return subprocess.run(
        [sys.executable, "-m", "usnav", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        env=usnav_env(tmp_path),
    )


#: ``python -m usnav`` with Ctrl-C handled as in a terminal, whatever the test runner's own
#: handling: a runner started in the background by a shell without job control ignores SIGINT
#: (POSIX), its children inherit the ignored SIGINT, and a command that stops on Python's own
#: KeyboardInterrupt (usnav web, evaluate) then never stops on a test's Ctrl-C (session 41:
#: two such tests timed out in a clean-clone run started that way). Without preexec_fn, which
#: is unsafe in a process with threads.
USNAV_CTRL_C = [
    sys.executable,
    "-c",
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'usnav'; runpy.run_module('usnav', run_name='__main__', alter_sys=True)",
]


def start_usnav(tmp_path: Path, *args: str, **popen) -> subprocess.Popen:
    """``python -m usnav ARGS`` started in the background (text pipes for stdout and stderr;
    ``popen`` adds or overrides Popen's arguments), as :func:`usnav` runs it, with Ctrl-C
    handled as in a terminal (:data:`USNAV_CTRL_C`)."""
    options = {
        "stdout": subprocess.PIPE,
        "stderr": subprocess.PIPE,
        "text": True,
        "cwd": tmp_path,
        "env": usnav_env(tmp_path),
        **popen,
    }
    return subprocess.Popen([*USNAV_CTRL_C, *args], **options)


def assert_bad_input(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit status 2, exactly one line on stderr, no traceback; returns that line."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def flagged_calibration(case: Path, out: Path) -> Path:
    """``case``'s ``calibration.toml`` as ``usnav calibrate`` writes a flagged one (a real file
    at ``out``, [spatial] flagged with one warning)."""
    from usnav.config.calibration import load_calibration, save_calibration

    cal = load_calibration(case / "calibration.toml")
    spatial = cal.spatial.model_copy(
        update={"flagged": True, "warnings": ["no validation recording: check it"]}
    )
    return save_calibration(cal.model_copy(update={"spatial": spatial}), out)
