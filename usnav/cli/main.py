"""``usnav`` entry point.

Subcommands live in ``usnav/cli/cmd_*.py``; each module defines ``register(subparsers)`` that
adds its parser and sets ``func(args) -> int``. A subcommand parses, calls one library
function, prints. Library code raises :class:`~usnav.errors.UsnavError` for anything a user can
fix; here it becomes one line on stderr and exit status 2 (the traceback only with
``--debug``). Any other exception is an internal error: one line too, and exit status 3
(:data:`EXIT_INTERNAL_ERROR`), which no command uses for an answer.

Exit statuses: 0 ok; 1 the command's own "failure" or "flagged" answer (``calibrate`` flagged by
a warning, ``bench --strict`` on a missed target, ``soak`` on a failed item, ``record`` when
writing failed); 2 bad input; 3 an internal error of usnav; 130 Ctrl-C (or SIGTERM where the
command treats it as Ctrl-C), except ``usnav run``, whose normal end is Ctrl-C or SIGTERM: its
summary, then 0 (1 if the recording failed).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import pkgutil
import signal
import sys
import threading
import traceback
from typing import NoReturn

import usnav
from usnav.errors import InputError, UsnavError
from usnav.lifeline import follow_parent

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
#: An internal error (a bug of usnav, not the user's input): its own status, so a script can
#: tell a crash from a command's answer of 1 (a flagged calibration, a missed bench target)
EXIT_INTERNAL_ERROR = 3
EXIT_INTERRUPTED = 130

#: The statuses every command shares, as the --help of ``usnav`` says them.
EXIT_STATUS_HELP = (
    "Exit status: 0 ok; 1 the command's failure or flagged answer (see its --help); 2 bad "
    "input, one line on stderr; 3 an internal error of usnav (one line; --debug shows the "
    "traceback; please report it); 130 interrupted (Ctrl-C; usnav run, which Ctrl-C ends "
    "normally, prints its summary and exits 0)."
)


class UsnavArgumentParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line plus where to look.

    argparse prints the whole usage block (19 lines for ``usnav simulate``) before the error;
    usnav prints ``usnav simulate: error: argument --seed: invalid int value: 'abc' (see usnav
    simulate --help)`` and exits with status 2. Sub-commands inherit this class.
    """

    def error(self, message: str):  # type: ignore[override]
        message = " ".join(str(message).split())
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = UsnavArgumentParser(
        prog="usnav",
        description="Intraoperative ultrasound navigation: tracked ultrasound over OpenIGTLink, "
        "US-MRI registration, tumor margins over ZeroMQ.",
        epilog=EXIT_STATUS_HELP,
    )
    parser.add_argument("--version", action="version", version=f"usnav {usnav.__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks and debug logs on errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import usnav.cli as cli_pkg

    for info in sorted(pkgutil.iter_modules(cli_pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("cmd_"):
            module = importlib.import_module(f"usnav.cli.{info.name}")
            module.register(sub)
    #: each sub-command's parser, by name (its usage errors point at its own --help)
    parser.commands = dict(sub.choices)  # type: ignore[attr-defined]
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``usnav``; returns the exit status (0 ok, 1 failure, 2 bad input, 3 internal error,
    130 Ctrl-C)."""
    # first: a child of a usnav process (the demo's playback server) ends with its parent,
    # even one killed by SIGKILL (usnav/lifeline.py)
    follow_parent()
    _closed_stdout_is_done()
    argv = sys.argv[1:] if argv is None else argv
    # accepted anywhere before a "--", as the error lines suggest ("run with --debug"), not
    # only first; after "--" it is an argument (a file named --debug)
    options_end = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:options_end]
    if debug:
        argv = ["--debug", *(a for a in argv[:options_end] if a != "--debug"), *argv[options_end:]]
    else:
        argv = list(argv)
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        # importing every command's module takes about a second: a Ctrl-C then (a typo seen
        # at once) printed a 20-line KeyboardInterrupt traceback through the imports
        parser = build_parser()
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("usnav: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # said by the sub-command's parser, so the line points at its --help
        command = getattr(args, "command", None)
        _subparser(parser, command).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)  # a usage error (exit 2): stdout stays for answers
        return EXIT_BAD_INPUT
    handlers = _stop_signal_handlers()
    status = EXIT_INTERNAL_ERROR
    try:
        _refuse_empty(argv)
        _refuse_non_finite(args)
        status = int(args.func(args) or 0)
        return status
    except UsnavError as exc:
        if debug:
            traceback.print_exc()
        print(f"usnav {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"usnav {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader stopped early (`usnav bench --list | head -1`): done
        _stdout_to_devnull()
        status = EXIT_OK
        return status
    except Exception as exc:  # an internal error: one line, traceback with --debug
        if debug:
            traceback.print_exc()
        if type(exc).__name__ == "ValidationError" and hasattr(exc, "errors"):
            # a value pydantic refused (a config file or an option): still the user's to fix
            print(f"usnav {args.command}: error: {_validation_line(exc)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(
            f"usnav {args.command}: internal error: {type(exc).__name__}: {exc} "
            "(run with --debug for the traceback, and please report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL_ERROR
    finally:
        # an output folder made for a command that then failed, and still empty, goes too
        from usnav.io.outputs import forget_created_folders, remove_unused_folders

        if status == EXIT_OK:
            forget_created_folders()
        else:
            remove_unused_folders()
        # a command may leave Ctrl-C ignored while its process shuts down (`usnav run`); a
        # caller running usnav in-process (tests, notebooks) keeps its own handlers, and the
        # processes it starts later do not inherit an ignored Ctrl-C
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def entry() -> NoReturn:
    """The ``usnav`` command (console script and ``python -m usnav``): :func:`main`, then exit.

    Once the command has returned, its summary is out and the process only winds down (the
    interpreter's finalizers, Numba's, thread joins): a Ctrl-C then is ignored. :func:`main`
    gives the caller's Ctrl-C handler back when it returns (for in-process callers), and a
    Ctrl-C in that last moment printed a KeyboardInterrupt traceback after the summary
    (session 36, CI: the later of several quick Ctrl-Cs on a fast stop).
    """
    status = main()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(status)


def _closed_stdout_is_done() -> None:
    """A reader that stops early ends usnav with status 0, through ``BrokenPipeError`` in
    :func:`main`: rich's own answer, ``SystemExit(1)``, is the status of a failed command
    (session 36: ``usnav bench --list | head -1`` exited 1, ``usnav info … | head -1`` 0)."""
    from rich.console import Console

    def on_broken_pipe(console: Console) -> None:
        console.quiet = True  # nothing more to write for this console
        raise BrokenPipeError

    Console.on_broken_pipe = on_broken_pipe  # type: ignore[method-assign]


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush of what is left in its buffer
    does not fail again on the closed pipe (the recipe of Python's signal docs)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no file descriptor (stdout replaced in-process)
        pass


def _subparser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser:
    """The parser of sub-command ``command`` (``parser`` itself when there is none)."""
    return getattr(parser, "commands", {}).get(command, parser)


def _refuse_empty(argv: list[str]) -> None:
    """No option takes an empty value (``--out ''`` became the current folder, ".")."""
    for i, arg in enumerate(argv):
        if arg == "" or (arg.startswith("--") and arg.endswith("=")):
            name = arg.rstrip("=") if arg else (argv[i - 1] if i > 0 else "an argument")
            raise InputError(name, "is empty", "give a value")


def _refuse_non_finite(args: argparse.Namespace) -> None:
    """No option takes NaN or infinity (argparse's ``float`` accepts "nan" and "inf"; a NaN
    timeout passed every ``<= 0`` check and waited forever)."""
    for name, value in vars(args).items():
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise InputError(f"--{name.replace('_', '-')}", f"must be a finite number, got {v}")


def _stop_signal_handlers() -> dict:
    """The SIGINT and SIGTERM handlers now (main thread only: elsewhere none are set)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    from usnav.cli._signals import STOP_SIGNALS

    handlers = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    # None: set outside Python, cannot be restored from here
    return {signum: h for signum, h in handlers.items() if h is not None}


def _validation_line(exc) -> str:
    """The first problem of a pydantic ValidationError, on one line."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ())) or getattr(exc, "title", "value")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    # pydantic prefixes a validator's own message with "Value error, ": the user reads the message
    message = " ".join(str(first.get("msg", exc)).removeprefix("Value error, ").split())
    return f"{where}: {message}{more}"


if __name__ == "__main__":  # pragma: no cover
    entry()
