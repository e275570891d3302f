"""Errors a user can act on.

Every exception derived from :class:`UsnavError` carries a message meant to be printed on one
line by the CLI (exit status 2): it names the file, field or peer and says what to do. Library
code raises these; it never prints or exits.
"""

from __future__ import annotations

from pathlib import Path


class UsnavError(Exception):
    """A problem the user can fix (bad input, bad config, unreachable peer)."""


class InputError(UsnavError):
    """A file, field or value that cannot be used.

    Parameters
    ----------
    source
        The file path, config key or peer address the problem is in.
    problem
        What is wrong, in plain words.
    hint
        What to do about it (optional).
    """

    def __init__(self, source: str | Path, problem: str, hint: str | None = None):
        self.source = str(source)
        # one line, whatever a library's text held (nibabel's reasons span lines)
        self.problem = " ".join(str(problem).split())
        self.hint = " ".join(hint.split()) if hint else hint
        message = f"{self.source}: {self.problem}"
        if self.hint:
            message += f" — {self.hint}"
        super().__init__(message)

    @classmethod
    def unreadable(cls, source: str | Path, exc: OSError) -> InputError:
        """A file that exists but cannot be read (its permissions, an I/O error)."""
        return cls(
            source, f"cannot be read ({exc.strerror or exc})", "check the file's permissions"
        )


class ConfigError(InputError):
    """A device-set or calibration file that does not validate."""


class TransformError(UsnavError):
    """A transform that cannot be computed (bad name, no path through the tree)."""


class ExtrapolationError(TransformError):
    """A pose was asked for at a time too far from any tracked sample."""
