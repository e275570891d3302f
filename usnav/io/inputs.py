"""The check every reader applies to a path it was given, before opening it."""

from __future__ import annotations

from pathlib import Path

from usnav.errors import InputError


def require_existing(path: Path) -> None:
    """Refuse, in one line, a path that cannot be read as a file or folder.

    A dangling or looping symbolic link is named as such (not "no such file"), and anything
    that is neither a regular file nor a folder (a FIFO, a device) is refused: reading one
    would block or never end. A file that cannot be opened for reading (its permissions) is
    refused here too, in one line, rather than by whatever library first opens it.

    Raises
    ------
    InputError
        The path is missing, a broken or looping link, not a regular file or folder, or a file
        that cannot be opened for reading.
    """
    if path.is_symlink() and not path.exists():
        raise InputError(path, "is a broken or looping symbolic link", "point it at the file")
    if not path.exists():
        raise InputError(path, "no such file")
    if not (path.is_file() or path.is_dir()):
        raise InputError(path, "is not a regular file (a pipe or a device?)", "give a file")
    if path.is_file():
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise InputError.unreadable(path, exc) from None


def refuse_empty(path: Path) -> None:
    """Refuse a regular file of 0 bytes by what it is (not by the first field it lacks).

    Raises
    ------
    InputError
        The file is empty.
    """
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(
            path,
            "the file is empty (0 bytes)",
            "it was not written or was cut off: use the original file",
        )
