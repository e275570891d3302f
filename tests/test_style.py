"""The project's habits are checked, not hoped for: ruff lint and format are clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if exe is None:
        pytest.skip("ruff is not installed (it comes with the [test] extra)")
    return [exe]


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]])
def test_ruff_is_clean(args: list[str]) -> None:
    result = subprocess.run([*_ruff(), *args], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_the_checkers_are_the_pinned_versions() -> None:
    """Another ruff or mypy release brings other rules: the clean verdict above means something
    only with the versions the [test] extra pins."""
    import re
    import tomllib

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = dict(re.fullmatch(r"([a-z]+)==(\S+)", d).groups() for d in extra["test"] if "==" in d)
    assert set(pins) >= {"ruff", "mypy"}
    ruff = subprocess.run([*_ruff(), "--version"], capture_output=True, text=True, check=True)
    assert ruff.stdout.split()[1] == pins["ruff"], (
        "install the pinned ruff: pip install -e '.[test]'"
    )
    mypy = pytest.importorskip("mypy.version", reason="mypy comes with the [test] extra")
    assert mypy.__version__ == pins["mypy"], "install the pinned mypy: pip install -e '.[test]'"
