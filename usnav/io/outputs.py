"""The one rule every usnav command applies to the files and folders it writes.

* An output that already exists (a link to nothing included) is refused unless the command
  is given ``--force`` (then it is replaced).
* A missing parent folder is created (``mkdir -p``); a parent that is a file, or a folder that
  cannot be created or written into, is refused.

:func:`check_output` applies the rule before any long work starts, so a wrong ``--out`` is
reported in one line at once, not after minutes of processing.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from usnav.errors import InputError

FORCE_HINT = "choose another name, or pass --force to replace it"


def check_output(
    path: str | Path,
    *,
    force: bool = False,
    folder: bool = False,
    option: str = "--out",
    inputs: Iterable[str | Path | None] = (),
) -> Path:
    """Check (and prepare) an output path under the project's rule.

    Parameters
    ----------
    path
        The file (or, with ``folder``, the folder) a command is about to write.
    force
        Replace an existing output.
    folder
        The output is a folder (``usnav keys --out KEYDIR``, ``usnav demo --out``): an existing
        empty folder is accepted; a non-empty one needs ``force``.
    option
        The command-line option that named the path (for the message).
    inputs
        The files the command reads: the output may not be one of them, even with ``force``
        (``reconstruct REC --out REC --force`` replaced the only copy of the sweep with its
        volume).

    Returns
    -------
    Path
        ``path``, with its parent folder created.

    Raises
    ------
    InputError
        The output exists (without ``force``), is the wrong kind (a folder where a file is
        written, or the reverse), or its folder cannot be created or written into.
    """
    p = Path(path)
    if str(path) == "":
        raise InputError(option, "is empty", "give a file name")
    if p.is_symlink() and not p.exists() and not force:
        # a link to nothing: "not there" to exists(), but a writer that opens the path creates
        # the link's target, anywhere (a link planted in a shared /tmp names the victim's
        # file). It is something in the way, like an existing file.
        raise InputError(p, f"is a link to {os.readlink(p)}, which does not exist", FORCE_HINT)
    if p.exists():
        if folder:
            if not p.is_dir():
                raise InputError(p, f"{option} is a file, not a folder", "give a folder")
            if any(p.iterdir()) and not force:
                raise InputError(p, "already exists and is not empty", FORCE_HINT)
        else:
            if p.is_dir():
                raise InputError(p, f"{option} is a folder", "give a file name")
            for source in inputs:
                if source is not None and _same_file(p, Path(source)):
                    raise InputError(
                        p, f"{option} is one of the inputs ({source})", "write to another file"
                    )
            if not force:
                raise InputError(p, "already exists", FORCE_HINT)
    parent = p if folder else p.parent
    _make_folder(parent, option)
    if not os.access(parent, os.W_OK):
        raise InputError(parent, "cannot be written into", f"choose another {option}")
    try:  # os.access says yes to root everywhere; only a real file says whether one can be made
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise InputError(
            parent, f"cannot be written into ({exc.strerror or exc})", f"choose another {option}"
        ) from exc
    return p


def _same_file(a: Path, b: Path) -> bool:
    try:
        return b.exists() and a.samefile(b)
    except OSError:
        return False


def input_paths(args) -> list[Path]:
    """Every path-valued option of a parsed command line except ``--out``: the files
    :func:`check_output` keeps the output from replacing."""
    return [v for k, v in vars(args).items() if isinstance(v, Path) and k != "out"]


#: Folders :func:`check_output` created in this process, outermost first: a command that is
#: then refused or interrupted removes those still empty (:func:`remove_unused_folders`).
_CREATED: list[Path] = []


def _make_folder(folder: Path, option: str) -> None:
    """``mkdir -p folder`` with one-line errors; the folders it creates are remembered."""
    missing = []
    for ancestor in [folder, *folder.parents]:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise InputError(ancestor, f"is a file, so {option} cannot go under it")
            break
        missing.append(ancestor)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            folder, f"cannot create this folder ({exc.strerror or exc})", f"choose another {option}"
        ) from exc
    _CREATED.extend(reversed(missing))


def remove_unused_folders() -> list[Path]:
    """Remove the folders :func:`check_output` created in this process that are still empty,
    deepest first, and forget them all: a command refused after its outputs were checked
    (a bad input found later, Ctrl-C) leaves no empty ``--out`` folder behind (session 42:
    ``usnav reconstruct … --spacing 0 --out new/v.nii.gz`` left ``new/``). A folder anything
    was written into is kept. Returns the folders removed."""
    removed = []
    for created in reversed(_CREATED):
        try:
            created.rmdir()
        except OSError:  # not empty, or already gone
            continue
        removed.append(created)
    _CREATED.clear()
    return removed


def forget_created_folders() -> None:
    """Keep every folder created so far (the command succeeded)."""
    _CREATED.clear()
