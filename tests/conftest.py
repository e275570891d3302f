"""Shared fixtures: outside data (skips with a reason when absent; fails under CI: ci_rules)."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest
from ci_rules import skip_or_fail
from hypothesis import settings

from usnav.data import shared_data_dir

# Numba caches compiled kernels; make sure there is a writable place for them in CI.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "usnav-numba"))

# No per-example deadline for any property test: on a 2-core machine loaded by the other
# pytest workers an example can take longer than Hypothesis's 200 ms by the load alone, and
# the test then fails by chance (Hypothesis drops the deadline only when it sees CI set). The
# active profile's other settings are kept (the "ci" profile's fixed examples among them).
settings.register_profile("usnav", settings(), deadline=None)
settings.load_profile("usnav")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` or ``$USNAV_TEST_DATA``.

    When neither exists the test skips with the reason locally, and fails under ``CI=true``:
    in CI a missing data folder must not pass as a green run with the data tests skipped.
    """
    found = shared_data_dir()
    if found is None:
        reason = "outside data not found: set USNAV_TEST_DATA or place it at ../shared/data"
        skip_or_fail(reason)
    return found


@pytest.fixture(scope="session")
def plus_images(shared_data: Path) -> Path:
    """The PLUS TestImages folder."""
    return shared_data / "plus" / "TestImages"


# the variables a leaked change of which has changed other tests' outcomes elsewhere (a GUI
# backend, a display, where compiled kernels are cached); monkeypatch restores them, a bare
# os.environ write does not
_WATCHED_ENV = ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND", "QT_QPA_PLATFORM", "NUMBA_CACHE_DIR")


# the signals whose handling a process's children inherit when it is "ignore" (SIG_IGN)
_WATCHED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


# helpers that Python's multiprocessing starts once and keeps for the whole session (killing
# one breaks every later pool): not a leak
_SESSION_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def _session_helper(process) -> bool:
    import psutil

    try:
        command = " ".join(process.cmdline())
    except psutil.Error:
        return False
    return any(helper in command for helper in _SESSION_HELPERS)


def _describe(process) -> str:
    import psutil

    try:
        return f"pid {process.pid}: {' '.join(process.cmdline())[:160]}"
    except psutil.Error:
        return f"pid {process.pid}"


@pytest.fixture(scope="module", autouse=True)
def _module_leaves_no_processes_or_environment_behind():
    """Each test module ends with the processes it started ended (servers, viewers, Xvfb,
    browsers, worker pools) and the watched environment variables as it found them: a process
    or a DISPLAY left behind makes a later module's outcome depend on the order of the run.
    Leftovers are killed, so one leak is reported once, where it happened."""
    import psutil

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    environment = {name: os.environ.get(name) for name in _WATCHED_ENV}
    handlers = {sig: signal.getsignal(sig) for sig in _WATCHED_SIGNALS}
    yield
    started = []
    for process in me.children(recursive=True):
        try:
            if process.pid in before or process.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.NoSuchProcess:
            continue
        if not _session_helper(process):
            started.append(process)
    _, alive = psutil.wait_procs(started, timeout=10)  # a moment for a clean exit under way
    leaked = [_describe(p) for p in alive]
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    changed = [
        f"{name}: {value!r} -> {os.environ.get(name)!r}"
        for name, value in environment.items()
        if os.environ.get(name) != value
    ]
    for name, value in environment.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    # a Ctrl-C left ignored is inherited by every process the worker starts later: a usnav
    # command then never stops on SIGINT (session 41: two Ctrl-C tests timed out so, in
    # whichever worker ran after the leak)
    moved = [
        f"{signal.Signals(sig).name} handler: {handler!r} -> {signal.getsignal(sig)!r}"
        for sig, handler in handlers.items()
        if signal.getsignal(sig) != handler
    ]
    for sig, handler in handlers.items():
        if handler is not None:
            signal.signal(sig, handler)
    problems = [f"process still running: {text}" for text in leaked]
    problems += [f"environment changed: {text}" for text in changed]
    problems += [f"signal handling changed: {text}" for text in moved]
    if problems:
        pytest.fail("the module left behind:\n" + "\n".join(problems), pytrace=False)
