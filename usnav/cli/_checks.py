"""Checks the commands run on their arguments before any long work (one line, exit 2)."""

from __future__ import annotations

from usnav.errors import InputError


def check_port(port: int | None, option: str = "--port", *, allow_zero: bool = False) -> None:
    """A TCP port number: 1..65535 (0 too when ``allow_zero``: pick a free one / off)."""
    if port is None:
        return
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise InputError(option, f"{port} is not a TCP port", f"give a number {low}..65535")


def check_endpoint(address: str, option: str = "--publish") -> str:
    """A ZeroMQ endpoint: ``tcp://HOST:PORT`` (PORT a number or ``*``), ``ipc://`` or
    ``inproc://``."""
    hint = "write it like tcp://127.0.0.1:5556"
    if address.startswith(("ipc://", "inproc://")) and len(address.split("://", 1)[1]) > 0:
        return address
    if not address.startswith("tcp://"):
        raise InputError(option, f"{address!r} is not a ZeroMQ endpoint", hint)
    host, sep, port = address[len("tcp://") :].rpartition(":")
    if not sep or not host:
        raise InputError(option, f"{address!r} has no HOST:PORT", hint)
    if port != "*":
        if not port.isdigit():
            raise InputError(option, f"{address!r}: the port {port!r} is not a number", hint)
        check_port(int(port), option, allow_zero=True)  # 0: any free port
    return address


def require_extra(command: str, extra: str, modules: tuple[str, ...]) -> None:
    """Refuse to run ``command`` when a module of its optional ``extra`` is not installed.

    The tools (bench, soak, evaluate) ship with usnav but their own dependencies do not: running
    the pipeline never needs them.
    """
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        # the error line already starts with the command ("usnav bench: error: ..."): the
        # source is the extra that brings what is missing
        raise InputError(
            f"usnav[{extra}]",
            f"{command} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'}"
            " not installed",
            f"pip install 'usnav[{extra}]'",
        )
