"""``usnav run``: the live pipeline on a tracked probe, with a status line."""

from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path

from usnav.defaults import DISPLAY_ENDPOINT


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the live pipeline: probe → calibration → registration → margins → displays",
        description="Receives tracked ultrasound from an OpenIGTLink device (devices/*.toml), "
        "registers it to the MRI while the surgeon scans, and publishes tumor margins over "
        "ZeroMQ (usnav view, 3D Slicer re-export, any protocol client). Ctrl-C stops cleanly.",
    )
    p.add_argument(
        "--device", type=Path, required=True, help="device set, e.g. devices/plus-server.toml"
    )
    p.add_argument("--mri", type=Path, required=True, help="preoperative MRI (NIfTI or NRRD)")
    p.add_argument("--label", type=Path, required=True, help="tumor label map (solid 1, cyst 2)")
    p.add_argument(
        "--calibration",
        type=Path,
        required=True,
        help="probe calibration: calibration/*.toml, PLUS device-set XML, or 16 numbers",
    )
    p.add_argument("--init", type=Path, help="initial ReferenceToMri (16 numbers, row-major)")
    p.add_argument("--record", type=Path, help="also record every frame (.igs.mha/.seq.nrrd)")
    p.add_argument("--options", type=Path, metavar="TOML", help="pipeline options file")
    p.add_argument("--publish", metavar="ADDR", help=f"ZeroMQ endpoint ({DISPLAY_ENDPOINT})")
    p.add_argument("--curve-key", type=Path, metavar="FILE", help="server.key_secret (usnav keys)")
    p.add_argument(
        "--slicer-port", type=int, metavar="PORT", help="OpenIGTLink re-export for Slicer"
    )
    p.add_argument("--no-registration", action="store_true", help="keep the initial registration")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument(
        "--log", type=Path, metavar="FILE", help="log file (default logs/usnav-run-*.log)"
    )
    p.add_argument("--quiet", action="store_true", help="no live status line")
    p.set_defaults(func=run)


def _num(value: float | None, spec: str = ".1f") -> str:
    return "–" if value is None or not math.isfinite(value) else format(value, spec)


def status_line(s: dict) -> str:
    """One line: link, rates, latency, registration, drops (also used by tests)."""
    reg = "accepted" if s["registration_accepted"] else "REJECTED"
    latest = "" if s["registration_latest_accepted"] else " (last estimate rejected)"
    drops = (
        f"drops display {s['dropped_display']} link {s['dropped_link']} "
        f"record {s['dropped_record']}"
    )
    skipped = s["skipped_tracking"] + s["skipped_image"]
    line = (
        f"{s['state']} {s['peer']} | in {_num(s['fps_in'])} fps out {_num(s['fps_out'])} | "
        f"latency p50 {_num(s['latency_p50_ms'])} p99 {_num(s['latency_p99_ms'])} ms | "
        f"registration {s['registration_source']} q {_num(s['registration_quality'], '.2f')} "
        f"age {_num(s['registration_age_s'], '.0f')} s {reg}{latest} | {drops} | "
        f"skipped {skipped}"
    )
    if s["state"] != "streaming" and s["last_error"]:
        line += f" | {s['last_error']}"
    if s["record_error"]:
        line += f" | RECORDING FAILED: {s['record_error']}"
    return line


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    from usnav.errors import InputError
    from usnav.pipeline.config import PipelineOptions
    from usnav.pipeline.run import default_log_path, open_pipeline

    if args.duration is not None and args.duration <= 0:
        raise InputError("--duration", f"must be positive, got {args.duration}")

    log_path = args.log or default_log_path()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG if args.debug else logging.INFO)
    usnav_logger = logging.getLogger("usnav")
    usnav_logger.addHandler(handler)
    usnav_logger.setLevel(logging.DEBUG if args.debug else logging.INFO)
    for console_handler in logging.getLogger().handlers:  # the terminal keeps warnings only
        if not args.debug:
            console_handler.setLevel(logging.WARNING)

    overrides = {}
    if args.publish:
        overrides["publish_address"] = args.publish
    if args.curve_key:
        overrides["curve_secret_key"] = args.curve_key
    if args.slicer_port is not None:
        overrides["slicer_port"] = args.slicer_port
    if args.no_registration:
        overrides["registration"] = False
    options = None
    if args.options is not None:
        from usnav.config.loader import load_toml_model

        options = load_toml_model(args.options, PipelineOptions)
    options = (options or PipelineOptions()).model_copy(update=overrides)

    err = Console(stderr=True)
    pipeline = open_pipeline(
        args.device,
        args.mri,
        args.label,
        args.calibration,
        init=args.init,
        record=args.record,
        options=options,
    )
    with err.status("compiling kernels before the first frame…"):
        compile_s = pipeline.prepare()
    err.print(
        "compiled: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in compile_s.items())
        + f"; margins on {pipeline.endpoint}; log {log_path}"
    )
    start = time.monotonic()
    pipeline.start()
    try:
        if args.quiet:
            while args.duration is None or time.monotonic() - start < args.duration:
                time.sleep(0.2)
        else:
            with Live(status_line(pipeline.status()), console=err, refresh_per_second=4) as live:
                while args.duration is None or time.monotonic() - start < args.duration:
                    time.sleep(0.25)
                    live.update(status_line(pipeline.status()))
            err.line()  # the last status line stays; the summary starts on its own line
    except KeyboardInterrupt:
        err.print("stopping…")
    finally:
        t0 = time.monotonic()
        pipeline.stop()
        stopped_in = time.monotonic() - t0
    s = pipeline.status()
    c = pipeline.counters
    print(
        f"usnav run: {c.received} frames received, {c.published} with margins published, "
        f"{c.skipped_tracking} without tracking, {c.skipped_image} without image, "
        f"{s['dropped_display']} superseded before display, latency p50 "
        f"{_num(s['latency_p50_ms'])} ms p99 {_num(s['latency_p99_ms'])} ms; stopped in "
        f"{stopped_in:.2f} s"
    )
    if args.record:
        files = ", ".join(str(f) for f in c.record_files) or str(args.record)
        print(
            f"recording {files}: {c.recorded} frames written, {c.record_dropped} lost"
            + (f" — {c.record_error}" if c.record_error else "")
        )
        if len(c.record_files) > 1:
            print("  (the image size changed during the recording: one file per size)")
        return 1 if c.record_error else 0
    return 0
