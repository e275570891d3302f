"""An exclusive lock on an output folder for the length of one run (``usnav evaluate --out``).

``fcntl.flock`` on a lock file inside the folder, taken without waiting: a second run into the
same folder is refused at once, naming the run that holds it (its pid, host and start time are
written into the lock file). The kernel releases a flock when its process ends however it ends
(Ctrl-C, SIGKILL, a crash), so a lock left by a killed run never blocks the next one; a pid
file alone could not tell a dead holder from a live one. The lock file is removed when the
lock is released; one left by a killed run is simply locked again.

On Linux, flock works across hosts on NFS (emulated with POSIX record locks). Where ``fcntl``
does not exist (Windows) no lock is taken.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from usnav.errors import InputError

LOCK_NAME = ".usnav-evaluate.lock"


@contextlib.contextmanager
def folder_lock(folder: Path, *, command: str = "usnav evaluate") -> Iterator[Path | None]:
    """Hold an exclusive lock on ``folder`` (which must exist) while the block runs.

    Yields the lock file's path (None where locks are not available).

    Raises
    ------
    InputError
        Another process holds the lock: names the folder and that run (pid, host, start).
    """
    try:
        import fcntl
    except ImportError:  # Windows: no flock
        yield None
        return
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise InputError(
                folder,
                f"another {command} is writing to this folder ({holder})",
                "wait for it to finish, or give another --out",
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # the holder before us may have removed the file between our open and our lock: the
        # lock is then on a file nobody else will see; take it again on the one at the path
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n".encode())
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still locked: a run that opens it now retries on a new file
        os.close(fd)  # releases the lock


def folder_lock_holder(folder: Path) -> str | None:
    """What the run holding ``folder``'s lock says of itself, or None when no run holds it
    (no lock file, one left by a killed run, or no flock on this system). Takes no lock that
    outlives the call and creates no file."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock
        return None
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_holder(fd)
    except OSError:
        return None
    finally:
        os.close(fd)  # (releases the shared lock if it was taken)
    return None


def _read_holder(fd: int) -> str:
    """What the lock file says of the run holding it."""
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "it has not written its pid yet"
