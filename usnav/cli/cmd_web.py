"""``usnav web``: the surgeon's display in a browser (any OR screen or tablet)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from usnav.cli.cmd_view import (
    _size,
    add_mri_arguments,
    add_subscriber_arguments,
    load_mri_context,
)
from usnav.defaults import DISPLAY_ENDPOINT, WEB_PORT


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "web",
        help="serve the surgeon's display as a web page (WebSocket bridge from the margins)",
        description="Subscribes to a usnav publisher like `usnav view`, renders the same "
        "picture (same states: LIVE, UNCERTAIN, STALE, WAITING) and serves it to browsers: "
        "open the printed address on any screen or tablet, nothing to install there. Bound "
        "to 127.0.0.1 by default; another --host needs --token (the page address then "
        "carries ?token=...). TLS with --cert and --key.",
    )
    p.add_argument(
        "--connect",
        default=DISPLAY_ENDPOINT,
        metavar="ADDR",
        help=f"publisher address (default {DISPLAY_ENDPOINT})",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (127.0.0.1)")
    p.add_argument(
        "--port", type=int, default=WEB_PORT, help=f"port to serve on ({WEB_PORT}; 0 = any)"
    )
    p.add_argument("--token", metavar="T", help="access token (required beyond loopback)")
    p.add_argument("--cert", type=Path, metavar="C", help="TLS certificate (PEM)")
    p.add_argument("--key", type=Path, metavar="K", help="TLS private key (PEM)")
    p.add_argument(
        "--max-fps", type=float, default=60.0, metavar="N", help="pictures per second, at most"
    )
    p.add_argument("--server-key", type=Path, metavar="FILE", help="CURVE: publisher's key")
    p.add_argument("--client-key", type=Path, metavar="FILE", help="CURVE: this secret key")
    p.add_argument(
        "--size",
        type=_size,
        default=None,
        metavar="WxH",
        help="picture size (default: 720 high; smaller pictures cost the bridge and the "
        "browser less)",
    )
    add_mri_arguments(p)
    add_subscriber_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from usnav.errors import InputError
    from usnav.viewer.state import ViewerOptions
    from usnav.web.server import WebDisplay, WebOptions

    try:
        options = WebOptions(
            connect=args.connect,
            host=args.host,
            port=args.port,
            token=args.token,
            cert=args.cert,
            key=args.key,
            max_fps=args.max_fps,
        )
        viewer = ViewerOptions(
            max_message_bytes=args.max_message_bytes,
            **({"width": args.size[0], "height": args.size[1]} if args.size else {}),
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0])
        message = str(first["msg"]).removeprefix("Value error, ")
        if name in ("width", "height"):
            raise InputError("--size", f"{name}: {message}") from exc
        raise InputError("--" + name.replace("_", "-"), message) from exc
    mri = load_mri_context(args.mri, args.label)
    display = WebDisplay(
        options,
        viewer=viewer,
        mri=mri,
        curve_server_key=args.server_key,
        curve_client_secret=args.client_key,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    display.start()
    interrupted = False
    try:
        # announced inside the try: a Ctrl-C right after the line is read must still stop the
        # display and print the summary (it ended as a bare "interrupted", no summary)
        print(f"usnav web: open {display.url}  (margins from {options.connect}; Ctrl-C to stop)")
        if options.token and display.url.startswith("http://"):
            print(
                "usnav web: the token travels unencrypted; give --cert/--key for TLS",
                file=sys.stderr,
            )
        sys.stdout.flush()
        display.serve_forever(stop)
    except KeyboardInterrupt:
        display.stop()
        interrupted = True
    stats = display.stats
    print(f"usnav web stopped: {stats.opened} page(s) served, {stats.sent} pictures sent")
    # Ctrl-C is 130, as for every command (it was 0); SIGTERM, a service manager's stop, is a
    # clean end (0)
    return 130 if interrupted else 0
