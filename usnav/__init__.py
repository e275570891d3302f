"""usnav — intraoperative ultrasound navigation.

Tracked ultrasound in over OpenIGTLink, registered to the preoperative MRI with a
multimodal (LC²) Numba core, tumor margins out over ZeroMQ.

Conventions (see ``docs/conventions.md``): transforms are named ``FromToTo`` as in PLUS,
units are mm and seconds, the MRI world space is RAS.
"""

__version__ = "0.1.0"


def _numba_cache_dir() -> None:
    """Numba's ``cache=True`` writes next to the modules, or raises at import if it cannot.

    When the installed package is read-only and ``NUMBA_CACHE_DIR`` is unset, point it at a
    per-user folder so compiled kernels are cached (a cold JIT costs 10-14 s here).
    """
    import os
    import tempfile
    from pathlib import Path

    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    here = Path(__file__).resolve().parent
    if os.access(here, os.W_OK):
        return
    for base in (Path.home() / ".cache", Path(tempfile.gettempdir())):
        target = base / "usnav-numba"
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(target, os.W_OK):
            os.environ["NUMBA_CACHE_DIR"] = str(target)
            return


_numba_cache_dir()
