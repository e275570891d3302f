"""usnav — intraoperative ultrasound navigation.

Tracked ultrasound in over OpenIGTLink, registered to the preoperative MRI with a
multimodal (MIND-SSC) Numba core, tumor margins out over ZeroMQ.

Conventions (see ``docs/conventions.md``): transforms are named ``FromToTo`` as in PLUS,
units are mm and seconds, the MRI world space is RAS.
"""

__version__ = "0.1.0"


def _numba_cache_dir(package_dir: str | None = None) -> None:
    """Numba's ``cache=True`` writes next to the modules, or raises at import if it cannot.

    When ``NUMBA_CACHE_DIR`` is unset and the package is installed (site-packages) or
    read-only, point it at a per-user folder so compiled kernels are cached (a cold JIT costs
    25-60 s on 2 cores). Never inside an installed package: ``pip uninstall`` leaves such files
    behind, and the leftover ``site-packages/usnav`` folder then shadows a later editable
    install as an empty namespace package (``usnav`` stops starting). A source checkout keeps
    Numba's default (``__pycache__`` beside the modules).
    """
    import os
    import tempfile
    from pathlib import Path

    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    here = Path(package_dir) if package_dir else Path(__file__).resolve().parent
    installed = any(part in ("site-packages", "dist-packages") for part in here.parts)
    if os.access(here, os.W_OK) and not installed:
        return
    # Numba's cache files are pickles: the folder must be this user's alone (0700), never a
    # shared one another user could plant files in.
    # os.getuid does not exist on Windows, where the home folder is the user's own anyway
    getuid = getattr(os, "getuid", None)
    # beside usnav's other caches when they were moved ($USNAV_CACHE_DIR), else per user
    moved = os.environ.get("USNAV_CACHE_DIR")
    candidates = [Path(moved).expanduser() / "numba"] if moved else []
    candidates.append(Path.home() / ".cache" / "usnav-numba")
    if getuid is not None:
        candidates.append(Path(tempfile.gettempdir()) / f"usnav-numba-{getuid()}")
    for target in candidates:
        try:
            target.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = target.stat()
        except OSError:
            continue
        private = getuid is None or (info.st_uid == getuid() and not info.st_mode & 0o022)
        if private and os.access(target, os.W_OK):
            os.environ["NUMBA_CACHE_DIR"] = str(target)
            return


_numba_cache_dir()
