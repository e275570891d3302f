"""``usnav record``: record an OpenIGTLink stream into a PLUS sequence file."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from rich.console import Console
from rich.live import Live
from rich.text import Text

from usnav.defaults import IGTL_PORT
from usnav.devices.config import ProbeConfig, load_probe_config
from usnav.devices.recorder import RecordProgress, RecordResult, record

if TYPE_CHECKING:
    from usnav.cli._signals import InterruptToStop


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "record",
        help="record tracked frames from an OpenIGTLink server into a PLUS sequence file",
        description="Record every frame (image, all transforms with status, timestamps) from "
        "a PLUS server, `usnav replay` or any OpenIGTLink device. Ctrl-C ends the recording "
        "and keeps the file; after a crash, `usnav convert FILE.journal FILE` recovers it.",
    )
    parser.add_argument("--out", required=True, help="FILE.igs.mha, .mha or .seq.nrrd")
    parser.add_argument("--config", help="a devices/*.toml with a [probe] section")
    parser.add_argument("--host", help="server address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help=f"server port (default {IGTL_PORT})")
    parser.add_argument("--duration", type=float, help="stop after S seconds")
    parser.add_argument("--frames", type=int, help="stop after N frames")
    parser.add_argument(
        "--stop-on-disconnect",
        action="store_true",
        help="end when the server closes the connection instead of reconnecting",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        help="give up when no frame arrives within S seconds (default 10)",
    )
    parser.add_argument("--no-compress", action="store_true", help="store raw pixels")
    parser.add_argument("--force", action="store_true", help="replace an existing --out file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from usnav.cli._checks import check_port
    from usnav.cli._signals import InterruptToStop
    from usnav.devices.probe import load_device_calibration
    from usnav.devices.recorder import check_recording_target
    from usnav.errors import InputError
    from usnav.io.outputs import check_output

    # everything that can be refused is refused before "waiting for frames…"
    check_port(args.port)
    for name in ("duration", "connect_timeout"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise InputError(f"--{name.replace('_', '-')}", f"must be positive, got {value}")
    if args.frames is not None and args.frames < 1:
        raise InputError("--frames", f"must be at least 1, got {args.frames}")
    out = check_output(Path(args.out), force=args.force)
    if args.force and out.is_file():
        out.unlink()
    check_recording_target(out)
    config = load_probe_config(args.config) if args.config else ProbeConfig()
    load_device_calibration(config, args.config)  # a missing [probe] calibration: said now
    if not getattr(args, "debug", False):
        # the end line counts malformed messages by reason and the error line names the last:
        # the OpenIGTLink layer's per-peer warning would only say it twice, in log format
        logging.getLogger("usnav.igtl").setLevel(logging.ERROR)
    console = Console(stderr=True)

    def interrupted(n: int) -> None:
        if n > 1:
            console.print("already stopping — closing the recording", highlight=False)

    # Ctrl-C and SIGTERM only ask the loop to stop (it looks every 50 ms): an exception raised
    # wherever the main thread happened to be could land inside the probe's locks or the
    # journal write, and a second Ctrl-C while closing could lose the summary
    with InterruptToStop(interrupted) as interrupt:
        return _record(args, config, console, interrupt)


def _record(
    args: argparse.Namespace, config: ProbeConfig, console: Console, interrupt: InterruptToStop
) -> int:
    line = Text("waiting for frames…")
    try:
        with Live(line, console=console, refresh_per_second=4, transient=False) as live:

            def show(p: RecordProgress) -> None:
                live.update(
                    Text(
                        f"recording {p.path or args.out}: {p.frames} frames, {p.fps:.1f} fps, "
                        f"{p.dropped} dropped"
                        + (f" ({p.missed} missing in the server's numbering)" if p.missed else "")
                        + f", {p.elapsed_s:.1f} s, {p.state.value}"
                    )
                )

            result = record(
                args.out,
                config=config,
                host=args.host,
                port=args.port,
                duration_s=args.duration,
                frames=args.frames,
                stop_on_disconnect=args.stop_on_disconnect,
                connect_timeout_s=args.connect_timeout,
                compress=not args.no_compress,
                progress=show,
                stop=interrupt.stop,
                config_path=args.config,
            )
            if interrupt.count and result.stopped_by == "stop requested":
                result.stopped_by = "interrupted"
    finally:
        if not console.is_terminal:
            console.line()  # rich ends the live line only on a terminal; keep errors apart
    bad = ", ".join(f"{n} {reason}" for reason, n in result.messages_dropped.items())
    print(
        f"usnav record: {_files(result)}: received {result.received}, written "
        f"{result.written}, dropped {result.dropped} frames ({result.missed} missing in the "
        f"server's numbering{'; malformed messages: ' + bad if bad else ''}); "
        f"{result.duration_s:.1f} s, ended by {result.stopped_by}{_why_parts(result)}",
    )
    for warning in result.warnings:
        print(f"usnav record: warning: {warning}", file=sys.stderr)
    if result.error:
        print(f"usnav record: error: {result.error}", file=sys.stderr)
        return 1
    return 130 if result.stopped_by == "interrupted" else 0


def _files(result: RecordResult) -> str:
    """The file written or, after image size changes, each part with its frames and size
    (columns x rows, as ``usnav info`` says it)."""
    if len(result.parts) < 2:
        return str(result.path)
    return ", ".join(
        f"{part.path} ({part.frames} frames, "
        f"{' x '.join(str(n) for n in (part.shape or ())[1::-1])} pixels, {part.dtype})"
        for part in result.parts
    )


def _why_parts(result: RecordResult) -> str:
    """Why there are several files ("" for one)."""
    if len(result.parts) < 2:
        return ""
    what = "image size" if len({part.shape for part in result.parts}) > 1 else "pixel type"
    return f"; the {what} changed during the recording: one file per {what}"
