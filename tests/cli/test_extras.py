"""Tools whose own dependencies are extras say which extra to install (one line, exit 2)."""

from __future__ import annotations

import pytest

from usnav.cli._checks import require_extra
from usnav.errors import InputError


def test_a_missing_extra_names_the_pip_command() -> None:
    with pytest.raises(InputError) as info:
        require_extra("usnav bench", "bench", ("json", "usnav_no_such_module_xyz"))
    message = str(info.value)
    # printed after "usnav bench: error: ": the command is named once, not twice
    assert message.startswith("usnav[bench]: usnav bench needs usnav_no_such_module_xyz,")
    assert "json" not in message.split("—")[0].split("needs")[1]  # installed ones not named
    assert "pip install 'usnav[bench]'" in message


def test_installed_extras_pass() -> None:
    require_extra("usnav bench", "bench", ("json", "csv"))


def test_register_help_names_the_real_default_metric(capsys) -> None:
    """The --metric help once said "lc2" after the default had become MIND-SSC."""
    from usnav.cli.main import main
    from usnav.registration.options import RegistrationOptions

    with pytest.raises(SystemExit):
        main(["register", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"default: the options' metric, {RegistrationOptions().metric}" in text


def test_bench_list_needs_no_extra_and_a_run_names_it(tmp_path) -> None:
    """`usnav bench --list` was refused without the bench extra (its modules imported psutil
    at import time); listing needs none of the baselines, running them does."""
    import subprocess
    import sys

    blocked = "import sys\nfor m in ('psutil', 'SimpleITK', 'pyigtl'): sys.modules[m] = None\n"
    code = blocked + "from usnav.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"

    def bench(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", code, "bench", *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )

    listed = bench("--list")
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) > 10 and "registration" in listed.stdout
    run = bench("--only", "CRC")
    assert run.returncode == 2
    assert "usnav[bench]: usnav bench needs pyigtl, psutil, SimpleITK" in run.stderr
