"""A child process that usnav starts ends when its parent ends, however the parent ended.

``usnav demo`` serves its sweep from ``usnav replay --loop`` in a child process; the soak and
some benchmarks start ``usnav run``, ``usnav replay`` or a load generator the same way. A
parent that is stopped by SIGTERM or Ctrl-C ends its children itself, but a parent killed by
SIGKILL (the OOM killer, ``kill -9``, a crashed desktop session) runs no code: its
``usnav replay --loop`` child kept streaming forever, on a port the next run wants (session 33
left it).

The parent marks a child it owns with :func:`child_env` (the variable :data:`PARENT_PID_ENV`
holds its pid); the child calls :func:`follow_parent` first thing (``usnav``'s entry point does
so for every command). A process pool's workers get the mark as an argument instead
(``ProcessPoolExecutor(initializer=follow_parent, initargs=(parent_mark(watch_only=True),))``:
``usnav simulate --seeds``; an orphaned worker waited for its next job forever). Then:

- on Linux, the kernel sends the child SIGTERM when its parent dies
  (``prctl(PR_SET_PDEATHSIG, SIGTERM)``, set in the child itself, so no ``preexec_fn`` runs in
  a threaded parent). The signal follows the *thread* that started the child, so it is set
  only when the parent started the child from its main thread (whose end is the process's
  end); a child started from another thread relies on the next point alone;
- everywhere, a daemon thread checks every :data:`POLL_S` whether the child's parent pid is
  still the parent's (an orphan is adopted by init or a subreaper, so its parent pid changes)
  and sends the child SIGTERM when it is not — also at once, when the parent was gone before
  the child got this far (the race the kernel's signal cannot cover).

SIGTERM, not SIGKILL: a usnav command stops on it as on Ctrl-C (its summary printed, files
closed); before the command installs its handler, SIGTERM ends the process at once, which is
also right for a child that has done nothing yet.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping

log = logging.getLogger("usnav.lifeline")

#: The environment variable by which a usnav parent marks a child it owns: the parent's pid,
#: followed by ``:thread`` when the child was started from a thread other than the main one.
PARENT_PID_ENV = "USNAV_PARENT_PID"
#: How often the child checks that its parent is alive, s (the portable fallback).
POLL_S = 0.25

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def child_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The environment for a child process this process owns: ``base`` (default: this
    process's environment) and ``extra``, with :data:`PARENT_PID_ENV` set to this process.

    Parameters
    ----------
    base
        The environment to start from (default ``os.environ``).
    **extra
        More variables to set.

    Returns
    -------
    dict
        The child's environment. Pass it as ``env=`` to :class:`subprocess.Popen`; the child
        must call :func:`follow_parent` (every ``usnav`` command does).
    """
    env = dict(os.environ if base is None else base, **extra)
    env[PARENT_PID_ENV] = parent_mark()
    return env


def parent_mark(*, watch_only: bool = False) -> str:
    """This process, as the parent a child is to follow: its pid, then ``:thread`` when the
    child must not rely on the kernel's signal (see the module's docstring).

    Parameters
    ----------
    watch_only
        The child only watches its parent pid, even when this is the main thread: for a child
        that a thread which may end first starts (a process pool's workers).

    Returns
    -------
    str
        The mark, for :func:`follow_parent` in the child (or :data:`PARENT_PID_ENV`).
    """
    main = threading.current_thread() is threading.main_thread()
    return str(os.getpid()) + ("" if main and not watch_only else ":thread")


def _set_parent_death_signal(signum: int) -> bool:
    """Ask Linux to send this process ``signum`` when its parent thread ends; False elsewhere
    or if the call failed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signum), 0, 0, 0) != 0:
            log.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
            return False
    except (OSError, AttributeError) as exc:
        log.debug("prctl(PR_SET_PDEATHSIG) unavailable: %s", exc)
        return False
    return True


def _terminate_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def follow_parent(
    mark: str | None = None,
    *,
    on_orphaned: Callable[[], None] = _terminate_self,
    poll_s: float = POLL_S,
) -> bool:
    """End this process when the parent that started it ends (see the module's docstring).

    Does nothing unless the parent marked this process (:func:`child_env`, or ``mark``).
    Removes the mark from the environment, so this process's own children are not taken for
    its parent's.

    Parameters
    ----------
    mark
        The parent's :func:`parent_mark`; None: from :data:`PARENT_PID_ENV`.
    on_orphaned
        Called once when the parent is found gone (default: SIGTERM to this process, the signal
        the kernel sends on Linux too). From the watching thread, or from here when the parent
        was already gone.
    poll_s
        How often the parent pid is checked, s.

    Returns
    -------
    bool
        Whether this process follows a parent (False: not started as a usnav child).
    """
    inherited = os.environ.pop(PARENT_PID_ENV, "")
    pid_text, _, where = (inherited if mark is None else mark).partition(":")
    if not pid_text.isdigit():
        return False
    parent = int(pid_text)
    if where != "thread":
        _set_parent_death_signal(signal.SIGTERM)
    # after the kernel's signal is set, so a parent that dies from here on is caught by it or
    # by the check; one that died before is caught here
    if os.getppid() != parent:
        log.debug("parent %d was gone before this process started following it", parent)
        on_orphaned()
        return True

    def watch() -> None:
        stop = threading.Event()
        while not stop.wait(poll_s):
            if os.getppid() != parent:
                log.debug("parent %d is gone: stopping", parent)
                on_orphaned()
                return

    threading.Thread(target=watch, name="usnav-follow-parent", daemon=True).start()
    return True
