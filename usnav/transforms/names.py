"""PLUS transform names: ``<From>To<To>``; a frame name never contains ``To``."""

from __future__ import annotations

import re

from usnav.errors import TransformError

_FRAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def check_frame_name(frame: str) -> str:
    """Return ``frame`` if it is a valid coordinate frame name.

    Raises
    ------
    TransformError
        If it is empty, has characters other than letters, digits and ``_``, or contains
        ``To`` (which would make ``AToB`` ambiguous).
    """
    if not _FRAME.match(frame or ""):
        raise TransformError(f"invalid coordinate frame name {frame!r}: use letters and digits")
    if "To" in frame:
        raise TransformError(
            f"coordinate frame name {frame!r} contains 'To', which makes transform names "
            "ambiguous (PLUS rule); rename it"
        )
    return frame


def split_name(name: str) -> tuple[str, str]:
    """``"ProbeToReference"`` → ``("Probe", "Reference")``.

    A trailing ``Transform`` (as in sequence-file field names) is accepted and removed.
    """
    base = name[: -len("Transform")] if name.endswith("Transform") else name
    parts = base.split("To")
    if len(parts) != 2:
        raise TransformError(
            f"transform name {name!r} must be <From>To<To> with exactly one 'To' "
            "(e.g. ProbeToReference)"
        )
    return check_frame_name(parts[0]), check_frame_name(parts[1])


def join_name(source: str, target: str) -> str:
    """``("Probe", "Reference")`` → ``"ProbeToReference"``."""
    return f"{check_frame_name(source)}To{check_frame_name(target)}"
