"""``usnav run``: the live pipeline on a tracked probe, with a status line."""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from usnav.defaults import DISPLAY_ENDPOINT

if TYPE_CHECKING:
    from rich.console import Console


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
    p.add_argument(
        "--mri", type=Path, required=True, help="preoperative MRI (NIfTI, NRRD or MetaIO .mha)"
    )
    p.add_argument("--label", type=Path, required=True, help="tumor label map (solid 1, cyst 2)")
    p.add_argument(
        "--removed",
        type=Path,
        metavar="REMOVED_LABEL",
        help="label map (MRI space, > 0) of the tissue the surgery removed (laminae, spinous "
        "processes, the wound): the registration compares the ultrasound with the MRI of the "
        "operated spine, as usnav register --removed",
    )
    p.add_argument(
        "--calibration",
        type=Path,
        required=True,
        nargs="+",
        metavar="FILE",
        help="probe calibration: calibration/*.toml, PLUS device-set XML, or a text file of "
        "16 numbers (ImageToProbe, row-major); several, one per image size (the scanner's depth "
        "presets, each from usnav calibrate spatial): each frame is placed with the one made "
        "for its size",
    )
    p.add_argument(
        "--init",
        type=Path,
        help="initial ReferenceToMri: a text file of 16 numbers (row-major), or the RESULT.json "
        "of usnav register / register-points (its ReferenceToMri)",
    )
    p.add_argument("--record", type=Path, help="also record every frame (.igs.mha/.seq.nrrd)")
    p.add_argument("--force", action="store_true", help="replace an existing --record or --log")
    p.add_argument("--options", type=Path, metavar="TOML", help="pipeline options file")
    p.add_argument("--publish", metavar="ADDR", help=f"ZeroMQ endpoint ({DISPLAY_ENDPOINT})")
    p.add_argument("--curve-key", type=Path, metavar="FILE", help="server.key_secret (usnav keys)")
    p.add_argument(
        "--slicer-port", type=int, metavar="PORT", help="OpenIGTLink re-export for Slicer"
    )
    p.add_argument("--no-registration", action="store_true", help="keep the initial registration")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument(
        "--log",
        type=Path,
        metavar="FILE",
        help="log file (default ~/.local/state/usnav/logs/usnav-run-*.log)",
    )
    p.add_argument("--quiet", action="store_true", help="no live status line")
    p.set_defaults(func=run)


def _num(value: float | None, spec: str = ".1f") -> str:
    return "–" if value is None or not math.isfinite(value) else format(value, spec)


def status_line(s: dict) -> str:
    """One line: link, rates, latency, registration, drops (also used by tests)."""
    from usnav.pipeline.spacing import SPACING_MISMATCH_PREFIX
    from usnav.protocol.display import OUTSIDE_MRI_PREFIX

    display = s.get("display_state", "")
    latest = " (last estimate not adopted)" if s["registration_latest_adopted"] is False else ""
    drops = (
        f"drops display {s['dropped_display']} link {s['dropped_link']} "
        f"record {s['dropped_record']}"
    )
    skipped = s["skipped_tracking"] + s["skipped_image"]
    line = (
        f"{s['state']} {s['peer']} | in {_num(s['fps_in'])} fps out {_num(s['fps_out'])} | "
        f"latency p50 {_num(s['latency_p50_ms'])} p99 {_num(s['latency_p99_ms'])} ms | "
        f"{display} | registration {s['registration_source']} "
        f"±{_num(s.get('registration_uncertainty_mm'), '.1f')} mm "
        f"age {_num(s['registration_age_s'], '.0f')} s{latest} | {drops} | "
        f"skipped {skipped}"
    )
    if s["state"] != "streaming" and s["last_error"]:
        line += f" | {s['last_error']}"
    if s["record_error"]:
        line += f" | RECORDING FAILED: {s['record_error']}"
    if s.get("calibration_flagged"):
        line += " | CALIBRATION FLAGGED (see the warning above and the log)"
    if OUTSIDE_MRI_PREFIX in s.get("display_reason", ""):
        line += " | IMAGE OUTSIDE THE MRI (wrong patient/MRI, or the registration far off?)"
    if SPACING_MISMATCH_PREFIX in s.get("display_reason", ""):
        line += " | PIXEL SIZE IS NOT THE CALIBRATION'S (depth changed on the scanner?)"
    if "patient reference moved " in s.get("display_reason", ""):
        line += (
            f" | REFERENCE MOVED {_num(s.get('reference_motion_mm'))} mm since the registration "
            "was checked"
        )
    return line


def run(args: argparse.Namespace) -> int:
    from usnav.cli._checks import check_endpoint, check_port
    from usnav.cli._signals import sigterm_as_interrupt
    from usnav.errors import InputError
    from usnav.io.outputs import check_output
    from usnav.pipeline.run import default_log_path

    if args.duration is not None and not args.duration > 0:
        raise InputError("--duration", f"must be positive, got {args.duration}")
    if args.publish:
        check_endpoint(args.publish, "--publish")
    check_port(args.slicer_port, "--slicer-port", allow_zero=True)
    if args.record is not None:
        check_output(args.record, force=args.force, option="--record")
        if args.force and args.record.is_file():
            args.record.unlink()
    if args.log is not None:
        log_path = check_output(args.log, force=args.force, option="--log")
    else:  # usnav's own per-user log folder: a new name per run
        log_path = check_output(default_log_path(), force=True, option="--log")

    # the log file appears with its first message (delay): a run refused at once leaves none
    handler = logging.FileHandler(log_path, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG if args.debug else logging.INFO)
    usnav_logger = logging.getLogger("usnav")
    usnav_logger.addHandler(handler)
    previous_level = usnav_logger.level
    usnav_logger.setLevel(logging.DEBUG if args.debug else logging.INFO)
    for console_handler in logging.getLogger().handlers:  # the terminal keeps warnings only
        if not args.debug:
            console_handler.setLevel(logging.WARNING)
    try:
        with sigterm_as_interrupt():
            return _run(args, log_path)
    finally:
        usnav_logger.removeHandler(handler)
        usnav_logger.setLevel(previous_level)
        handler.close()


def _run(args: argparse.Namespace, log_path: Path) -> int:
    from rich.console import Console
    from rich.live import Live

    from usnav.cli._signals import InterruptToStop
    from usnav.pipeline.config import PipelineOptions
    from usnav.pipeline.run import open_pipeline

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
        removed=args.removed,
    )

    def interrupted(n: int) -> None:
        if n == 1:
            err.print("stopping… (the run's summary follows)", highlight=False)
        else:
            err.print("already stopping — the run's summary follows", highlight=False)

    try:
        with err.status("compiling kernels before the first frame…"):
            compile_s = pipeline.prepare()
    except KeyboardInterrupt:
        with InterruptToStop(interrupted, ignore_after=True):
            interrupted(1)
            pipeline.stop()
            return _print_summary(pipeline, 0.0, args.record, connected=False)
    err.print(
        "compiled: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in compile_s.items())
        + f"; margins on {pipeline.endpoint}; log {log_path}",
        # one line, as it was written: wrapped at 80 columns (a log, a service's journal) the
        # log's path was cut in two; and no markup or colour read into an address or a path
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    # Ctrl-C (and SIGTERM) only ask to stop: another one while stopping cannot lose the
    # summary or the recording
    with InterruptToStop(interrupted, ignore_after=True) as interrupt:
        start = time.monotonic()
        try:
            pipeline.start()

            silent_peer = _SilentPeer(pipeline, err)

            def running() -> bool:
                end = None if args.duration is None else start + args.duration
                silent_peer.check(time.monotonic() - start)
                return not interrupt.stop.wait(0.25) and (end is None or time.monotonic() < end)

            if args.quiet or not err.is_terminal:
                while running():
                    pass
            else:
                first = status_line(pipeline.status())
                with Live(first, console=err, refresh_per_second=4) as live:
                    while running():
                        live.update(status_line(pipeline.status()))
                err.line()  # the last status line stays; the summary starts on its own line
        finally:
            t0 = time.monotonic()
            pipeline.stop()
            status = _print_summary(pipeline, time.monotonic() - t0, args.record)
    return status


#: seconds without a single frame before ``usnav run`` says so (it keeps trying)
NO_FRAME_WARNING_S = 5.0


class _SilentPeer:
    """One warning line when no frame has arrived ``NO_FRAME_WARNING_S`` into the run: a
    dead or wrong peer otherwise looked like a quiet run (exit 0, "0 frames received")."""

    def __init__(self, pipeline, console: Console):
        self.pipeline = pipeline
        self.console = console
        self.warned = False

    def check(self, elapsed_s: float) -> None:
        if self.warned or elapsed_s < NO_FRAME_WARNING_S or self.pipeline.counters.received:
            return
        self.warned = True
        self.console.print(
            f"usnav run: warning: {elapsed_s:.0f} s and {_no_frame(self.pipeline)} (still trying)",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


def _no_frame(pipeline) -> str:
    """'no frame from HOST:PORT (why)': what the probe knows of its peer."""
    probe = pipeline.probe
    hint = probe.device_hint()
    if probe.last_error is None and hint is not None:
        # the peer streams, but not what was asked: what the probe knows says what to change
        return f"no frame from {probe.config.host}:{probe.config.port}: {hint}"
    why = probe.last_error or "nothing arrived"
    return (
        f"no frame from {probe.config.host}:{probe.config.port} ({why}); is the server running "
        f"and streaming IMAGE '{probe.config.image_device}'?"
    )


def _print_summary(
    pipeline, stopped_in: float, record: Path | None, *, connected: bool = True
) -> int:
    """The run's summary (and the recording's); returns the exit status.

    ``connected``: False when the run was stopped before the probe was started (Ctrl-C while
    the kernels compiled): no frame could have come, so none is not the peer's fault.
    """
    s = pipeline.status()
    c = pipeline.counters
    # skipped_image (and the status's) counts both; the summary says which was which: a frame
    # of an uncalibrated size had an image (session 43: they were called "without image")
    wrong_size = c.problems.get("image_size", 0)
    print(
        f"usnav run: {c.received} frames received, {c.published} with margins published, "
        f"{c.skipped_tracking} without tracking, {c.skipped_image - wrong_size} without image, "
        + (f"{wrong_size} of an uncalibrated image size, " if wrong_size else "")
        + f"{s['dropped_display']} superseded before display, latency p50 "
        f"{_num(s['latency_p50_ms'])} ms p99 {_num(s['latency_p99_ms'])} ms; stopped in "
        f"{stopped_in:.2f} s",
        flush=True,
    )
    if wrong_size:
        print(
            f"  ({wrong_size} frames were of an image size no calibration given was made for: "
            "not placed, no margins drawn on them — calibrate for that depth and give every "
            "depth's calibration: --calibration A.toml B.toml)",
            flush=True,
        )
    frozen = c.problems.get("image_frozen", 0)
    if frozen:
        print(
            f"  ({frozen} of the margins published went out STALE because the ultrasound image "
            "had not changed while the probe moved: frozen on the scanner)",
            flush=True,
        )
    if c.outside_mri:
        print(
            f"  ({c.outside_mri} of the frames lay entirely outside the MRI: their margins went "
            "out UNCERTAIN, never LIVE — check that the MRI is this patient's and the "
            "registration (--init), or the probe scanned far from the imaged region)",
            flush=True,
        )
    if c.spacing_mismatch:
        print(
            f"  ({c.spacing_mismatch} of the frames stated a pixel size other than the "
            "calibration's — the depth changed on the scanner? Their margins went out "
            "UNCERTAIN, not offered to the registration: recalibrate at that depth, or give "
            "the calibration made for it)",
            flush=True,
        )
    stats = getattr(pipeline.worker, "stats", None)
    if stats is not None:  # the registration worker's own counters: what it was given and did
        withheld = c.withheld_from_registration
        print(
            f"  (registration: {stats.submitted} frames offered to the worker"
            + (
                f", {withheld} lying outside the MRI or of another pixel size not offered"
                if withheld
                else ""
            )
            + f"; {stats.updates} windows registered, {stats.accepted} estimates adopted)",
            flush=True,
        )
    if c.repeated:
        print(
            f"  ({c.repeated} of the frames repeated the image of an earlier frame — a frame "
            "grabber capturing faster than the scanner updates, or a still probe over an "
            "unchanged image: their margins were drawn at the pose of the image's first frame, "
            "marked repeat_of, and not offered to the registration)",
            flush=True,
        )
    if record:
        files = ", ".join(str(f) for f in c.record_files) or str(record)
        print(
            f"recording {files}: {c.recorded} frames written, {c.record_dropped} lost"
            + (f" — {c.record_error}" if c.record_error else ""),
            flush=True,
        )
        if len(c.record_files) > 1:
            print("  (the image size changed during the recording: one file per size)")
        if c.record_error:
            return 1
    if not connected:
        # stopped while compiling: asking whether the server runs (exit 2) blamed a probe
        # that was never tried (session 42)
        probe = pipeline.probe.config
        print(
            f"usnav run: stopped while compiling the kernels, before connecting to the probe at "
            f"{probe.host}:{probe.port}",
            file=sys.stderr,
            flush=True,
        )
        return 0
    if c.received == 0:
        print(f"usnav run: error: {_no_frame(pipeline)}", file=sys.stderr, flush=True)
        return 2
    return 0
