"""``usnav demo``: the whole pipeline on the embedded simulated case."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from usnav.defaults import DISPLAY_ENDPOINT


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole system on the embedded simulated spinal cord tumor case",
        description="Replays the simulated case through a PLUS-like OpenIGTLink server on "
        "loopback, registers it to the MRI while it streams, publishes the tumor margins over "
        "ZeroMQ, writes a viewer snapshot and prints a summary (frames, fps, latency, "
        "registration error against the simulator's ground truth).",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder for snapshot.png (default: ~/.cache/usnav/demo-output, whose snapshot "
        "each run replaces); in a folder you name, an existing snapshot.png is replaced only "
        "with --force",
    )
    p.add_argument("--force", action="store_true", help="replace DIR/snapshot.png")
    p.add_argument("--passes", type=int, default=3, help="times the sweep is scanned (3)")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (1.0)")
    p.add_argument("--live", action="store_true", help="open the viewer window (needs a display)")
    p.add_argument("--cache", type=Path, default=None, help="where the demo case is cached")
    p.add_argument("--publish", default=DISPLAY_ENDPOINT, metavar="ADDR", help="ZeroMQ endpoint")
    p.set_defaults(func=run)


def _ms(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:.1f} ms"


def _run(args: argparse.Namespace, out: Path, progress):
    from usnav.cli._signals import sigterm_as_interrupt
    from usnav.cli.demo import run_demo

    # SIGTERM as Ctrl-C: the demo's stop path ends its playback server (a child process that
    # Python's default SIGTERM death left streaming forever)
    with sigterm_as_interrupt():
        return run_demo(
            out,
            passes=args.passes,
            rate=args.rate,
            live=args.live,
            cache_dir=args.cache,
            publish_address=args.publish,
            progress=progress,
        )


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from usnav.cli._checks import check_endpoint
    from usnav.devices.config import MAX_RATE
    from usnav.errors import InputError
    from usnav.io.outputs import check_output
    from usnav.sim.demo import check_demo_cache, default_cache_dir

    # the demo's playback server takes no faster rate: past it, the demo prepared the case and
    # compiled its kernels, then failed quoting `usnav replay`'s own --rate error
    if not 0 < args.rate <= MAX_RATE:
        raise InputError(
            "--rate", f"must be a positive speed factor of at most {MAX_RATE:g}, got {args.rate:g}"
        )
    if args.passes < 1:
        raise InputError("--passes", f"must be at least 1, got {args.passes}")
    check_endpoint(args.publish, "--publish")
    from usnav.protocol.curve import is_loopback_endpoint, loopback_endpoint_like

    if not is_loopback_endpoint(args.publish):  # before any folder is made
        raise InputError(
            "--publish",
            f"{args.publish}: the demo publishes on this machine only",
            f"use {loopback_endpoint_like(args.publish)} (usnav run publishes beyond "
            "loopback, with keys)",
        )
    if args.cache is not None:
        check_output(args.cache, folder=True, force=True, option="--cache")
    check_demo_cache(args.cache)
    if args.out is None:  # the snapshot goes under the cache: a problem there is --cache's
        out = (Path(args.cache) if args.cache else default_cache_dir()) / "demo-output"
        check_output(out, folder=True, force=True, option="--cache")
    else:
        out = check_output(args.out, folder=True, force=True)
        check_output(out / "snapshot.png", force=args.force)

    err = Console(stderr=True)
    if err.is_terminal:
        with err.status("usnav demo") as status:
            s = _run(args, out, lambda m: status.update(f"usnav demo: {m}"))
    else:  # a log or a pipe: one line per phase, so a CI log shows where the time goes
        s = _run(args, out, lambda m: print(f"usnav demo: {m}", file=sys.stderr, flush=True))
    compile_s = ", ".join(f"{k} {v:.1f} s" for k, v in s.compile_seconds.items())
    print("usnav demo — simulated intramedullary tumor case")
    print(f"  case            {s.case_dir}")
    swept = s.passes * s.frames_in_recording
    beyond = s.frames_received - swept
    unused = s.frames_received - s.frames_published - s.dropped_display
    print(
        f"  frames          {s.frames_received} received ({s.passes} "
        f"{'pass' if s.passes == 1 else 'passes'} of "
        f"{s.frames_in_recording}"
        + (
            f" + {beyond} streamed on until margins used an image-checked registration"
            if beyond > 0 and s.streamed_on
            else f" + {beyond} before the stream stopped"
            if beyond > 0
            else ""
        )
        + (f"; {-beyond} never arrived" if beyond < 0 else "")
        + f"): {s.frames_published} with margins published + {s.dropped_display} "
        "superseded before display"
        + (f" + {other} skipped or in flight at the stop" if (other := unused) else "")
    )
    print(f"  rate            {s.fps_in:.1f} fps over {s.seconds:.1f} s")
    print(
        f"  latency         frame received → margin published: p50 {_ms(s.latency_p50_ms)}, "
        f"p99 {_ms(s.latency_p99_ms)}"
    )
    print(f"  compile         {compile_s} (before the first frame)")
    print(
        f"  registration    mTRE {s.initial_mtre_mm:.2f} mm (navigation) → "
        f"{s.final_mtre_mm:.2f} mm ({s.final_source}, quality {s.final_quality:.2f}); "
        f"{s.estimates} estimates, {s.accepted} accepted, {s.rejected} rejected "
        f"({s.confirmed} of those confirmed the accepted one)"
    )
    print(tumor_line(s))
    print(f"  margins         were published on {s.endpoint} while the demo ran")
    if s.snapshot:
        print(f"  snapshot        {s.snapshot} (viewer: {_viewer_words(s)})")
    elif s.viewer_state:
        print(f"  viewer          {_viewer_words(s)}")
    if s.problems:
        print("  skipped         " + ", ".join(f"{k}: {v}" for k, v in s.problems.items()))
    ok = math.isfinite(s.final_mtre_mm) and s.final_mtre_mm < 2.0
    if not ok:
        print("  WARNING: the registration did not reach 2 mm on the demo case", file=sys.stderr)
    return 0 if ok else 1


def tumor_line(s) -> str:
    """The summary's "at the tumor" line: the errors where the tumor is now, of the estimate
    in use and of the one the margins were drawn with (they differ when the final estimate
    was accepted after the last frame, which no margin then used)."""
    if s.margins_after_last_frame:
        how = (
            f" (the {s.margins_source} registration: the {s.final_source} one was accepted "
            "after the last frame)"
        )
    else:
        how = " (tumor stage)" if s.margins_now_mm != s.final_now_mm else ""
    return (
        f"  at the tumor    {s.initial_now_mm:.2f} mm (navigation) → {s.final_now_mm:.2f} mm "
        f"where it is now (cord shift included); margins drawn with {s.margins_now_mm:.2f} mm" + how
    )


def _viewer_words(s) -> str:
    """``LIVE`` or ``STALE: reason`` (no stray space when there is no reason)."""
    return s.viewer_state + (f": {s.viewer_reason}" if s.viewer_reason else "")
