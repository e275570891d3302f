"""Issue #13: ``import usnav`` works where ``os.getuid`` does not exist (Windows)."""

from __future__ import annotations

import subprocess
import sys

from cli_helpers import usnav_env

PROBE = """
import os, sys
del os.getuid  # as on Windows
os.environ.pop("NUMBA_CACHE_DIR", None)
import usnav, usnav.cli.main
assert not hasattr(os, "getuid")
print("cache", os.environ.get("NUMBA_CACHE_DIR", "package"))
"""


def test_import_without_getuid(tmp_path):
    env = usnav_env(tmp_path)
    env["HOME"] = str(tmp_path / "home")  # a fresh home: the cache folder is made there
    env.pop("NUMBA_CACHE_DIR", None)
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("cache")


def test_numba_cache_choice_without_getuid_uses_the_home_folder(tmp_path, monkeypatch):
    """Installed (not writable beside the modules): the private home cache is chosen."""
    import usnav

    monkeypatch.delattr("os.getuid")
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    installed = tmp_path / "site-packages" / "usnav"
    installed.mkdir(parents=True)
    usnav._numba_cache_dir(installed)
    import os

    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / ".cache" / "usnav-numba")
