"""``usnav replay``: serve a recording over OpenIGTLink like a PLUS server."""

from __future__ import annotations

import argparse
import sys

from usnav.defaults import IGTL_PORT
from usnav.devices.config import MAX_RATE, load_device_set
from usnav.devices.playback import PlaybackServer, run_playback
from usnav.errors import ConfigError, InputError


def _rate(text: str) -> float | str:
    if text == "max":
        return "max"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not 'max' or a number") from None
    if not 0 < value <= MAX_RATE:
        raise argparse.ArgumentTypeError(f"must be 'max' or a speed factor in (0, {MAX_RATE:g}]")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="serve a recorded sweep over OpenIGTLink (like a PLUS server)",
        description="Serve a PLUS sequence file over OpenIGTLink: TRANSFORM messages named by "
        "their transforms and an IMAGE 'Image_Reference' carrying ImageToReference, paced by "
        "the file's timestamps. 3D Slicer or `usnav record`/`usnav run` connect unchanged.",
    )
    parser.add_argument("recording", nargs="?", help=".igs.mha / .mha / .seq.nrrd file")
    parser.add_argument("--config", help="a devices/*.toml with a [playback] section")
    parser.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, help=f"TCP port (default {IGTL_PORT}; 0 = any free port)"
    )
    parser.add_argument("--rate", type=_rate, help="speed factor or 'max' (default 1.0)")
    parser.add_argument("--loop", action="store_true", default=None, help="play forever")
    parser.add_argument("--calibration", help="calibration file with ImageToProbe")
    parser.add_argument(
        "--allow", action="append", help="peer address allowed to connect (repeatable)"
    )
    parser.add_argument(
        "--no-wait",
        dest="wait_for_client",
        action="store_false",
        default=None,
        help="start playing at once instead of when the first client connects",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from usnav.cli._checks import check_port
    from usnav.cli._signals import InterruptToStop

    check_port(args.port, allow_zero=True)  # 0: a free port, printed when listening
    overrides = {
        key: value
        for key, value in (
            ("recording", args.recording),
            ("host", args.host),
            ("port", args.port),
            ("rate", args.rate),
            ("loop", args.loop),
            ("calibration", args.calibration),
            ("allow", args.allow),
            ("wait_for_client", args.wait_for_client),
        )
        if value is not None
    }
    if args.config:
        device_set = load_device_set(args.config)
        if device_set.playback is None:
            raise ConfigError(args.config, "has no [playback] section")
        server = PlaybackServer.from_config(device_set.playback, args.config, **overrides)
    else:
        if not args.recording:
            raise InputError("RECORDING", "no recording given", "usnav replay FILE.igs.mha")
        if "host" in overrides and "allow" not in overrides:
            overrides["allow"] = []
        server = PlaybackServer(**overrides)

    def listening(s: PlaybackServer) -> None:
        print(
            f"usnav replay: {s.recording.name} ({s.frame_count} frames) "
            f"listening on {s.host}:{s.port}",
            flush=True,
        )

    def interrupted(n: int) -> None:
        if n > 1:
            print("usnav replay: already stopping — the summary follows", file=sys.stderr)

    # Ctrl-C and SIGTERM only ask the player to stop: an exception raised wherever the main
    # thread was lost the summary line (SIGTERM killed the process outright, exit 143), and a
    # second Ctrl-C while the server closed could interrupt the close
    with InterruptToStop(interrupted) as interrupt:
        stats = run_playback(server, on_listening=listening, stop=interrupt.stop)
        stopped = interrupt.stop.is_set()
        link = server.link_stats()
        print(
            f"usnav replay: sent {stats.frames_sent} frames ({stats.loops} "
            f"pass{'' if stats.loops == 1 else 'es'}), "
            f"{link.messages_out} messages; {link.dropped_out} dropped for slow clients"
            + ("; interrupted" if stopped else ""),
            file=sys.stderr,
            flush=True,
        )
    return 130 if stopped else 0  # what Ctrl-C gives, as `usnav record` after either signal
