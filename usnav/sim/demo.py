"""The demo case ``usnav demo`` runs on: small, deterministic, generated on first use and cached.

Not committed to the repository (a case is ~3-5 MB and changes whenever the simulator does);
instead :func:`demo_case` simulates it once (seed :data:`DEMO_SEED`, :func:`demo_options`)
into a cache folder named after the simulator version, and returns that folder on every later
call. The folder is assembled under a temporary name and renamed into place when complete, so
an interrupted or concurrent first run never leaves a half-written case behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from usnav.errors import InputError
from usnav.sim.case import SIM_VERSION, simulate_case
from usnav.sim.options import SimOptions

#: Seed of the demo case.
DEMO_SEED = 7


def demo_options() -> SimOptions:
    """Options of the demo case: the default case with 120 frames and previews."""
    return SimOptions(frames=120, preview=True, tumor_echogenicity="hyperechoic", cyst="yes")


def default_cache_dir() -> Path:
    """``$USNAV_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/usnav`` or ``~/.cache/usnav``."""
    env = os.environ.get("USNAV_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "usnav"


def check_demo_cache(cache_dir: str | Path | None = None) -> Path:
    """The demo case's folder in ``cache_dir``; refuses one left incomplete (no truth.json).

    Raises
    ------
    InputError
        The folder exists but holds no complete case (copied by hand, cleaned in part).
    """
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = base / f"demo-v{SIM_VERSION}-seed{DEMO_SEED}"
    if target.exists() and not (target / "truth.json").is_file():
        raise InputError(
            target,
            "is an incomplete demo case (no truth.json)",
            "delete this folder and it will be simulated again",
        )
    return target


def demo_case_ready(cache_dir: str | Path | None = None) -> bool:
    """Whether the demo case is already cached (:func:`demo_case` then only returns it)."""
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return (check_demo_cache(base) / "truth.json").is_file()


def demo_case(cache_dir: str | Path | None = None) -> Path:
    """The folder of the demo case, simulating it on first use (about 10 s).

    Parameters
    ----------
    cache_dir
        Where to cache it (default :func:`default_cache_dir`); the case lands in
        ``<cache_dir>/demo-v<SIM_VERSION>-seed<DEMO_SEED>``.

    Raises
    ------
    InputError
        If the cache folder cannot be created or written.
    """
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = check_demo_cache(base)
    if (target / "truth.json").is_file():
        return target
    try:
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".demo-", dir=base))
    except OSError as exc:
        raise InputError(
            base,
            f"cannot create the demo cache folder: {exc.strerror}",
            "set USNAV_CACHE_DIR to a writable folder",
        ) from exc
    try:
        simulate_case(DEMO_SEED, tmp, demo_options())
        tmp.chmod(0o755)  # mkdtemp made it private; the cache is meant to be shared
        try:
            tmp.rename(target)
        except OSError:
            # another process finished first: keep its copy
            if not (target / "truth.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
