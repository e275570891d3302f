"""Numba's kernel cache never goes inside an installed package (pip would leave it behind)."""

from __future__ import annotations

import os

import usnav


def test_installed_package_caches_kernels_in_the_user_cache(tmp_path, monkeypatch) -> None:
    package = tmp_path / "venv" / "lib" / "python3.11" / "site-packages" / "usnav"
    package.mkdir(parents=True)  # writable, as in any virtual environment
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.delenv("USNAV_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    usnav._numba_cache_dir(str(package))
    assert os.environ.get("NUMBA_CACHE_DIR") == str(tmp_path / "home" / ".cache" / "usnav-numba")
    assert not any(package.iterdir())


def test_moved_usnav_caches_take_the_kernels_along(tmp_path, monkeypatch) -> None:
    """$USNAV_CACHE_DIR moved every cache but the kernels (still in ~/.cache/usnav-numba)."""
    package = tmp_path / "venv" / "lib" / "python3.11" / "site-packages" / "usnav"
    package.mkdir(parents=True)
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("USNAV_CACHE_DIR", str(tmp_path / "caches"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    usnav._numba_cache_dir(str(package))
    assert os.environ.get("NUMBA_CACHE_DIR") == str(tmp_path / "caches" / "numba")
    assert not (tmp_path / "home" / ".cache" / "usnav-numba").exists()


def test_source_checkout_keeps_numba_default(tmp_path, monkeypatch) -> None:
    checkout = tmp_path / "usnav-src" / "usnav"
    checkout.mkdir(parents=True)
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    usnav._numba_cache_dir(str(checkout))
    assert "NUMBA_CACHE_DIR" not in os.environ


def test_an_explicit_cache_dir_wins(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    usnav._numba_cache_dir(str(tmp_path / "site-packages" / "usnav"))
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "mine")


def test_a_shared_world_writable_cache_folder_is_not_used(tmp_path, monkeypatch) -> None:
    """Numba's cache files are pickles: a folder others can write to is never trusted."""
    package = tmp_path / "site-packages" / "usnav"
    package.mkdir(parents=True)
    home_cache = tmp_path / "home" / ".cache" / "usnav-numba"
    home_cache.mkdir(parents=True)
    home_cache.chmod(0o777)  # e.g. made by someone else, open to everyone
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.delenv("USNAV_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    usnav._numba_cache_dir(str(package))
    chosen = os.environ.get("NUMBA_CACHE_DIR", "")
    assert chosen != str(home_cache)
    assert chosen == str(tmp_path / "tmp" / f"usnav-numba-{os.getuid()}")
    assert oct(os.stat(chosen).st_mode & 0o777) == "0o700"
