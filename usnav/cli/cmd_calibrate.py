"""``usnav calibrate spatial|temporal|pivot``: probe and stylus calibration (PLUS fCal data)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from usnav.cli.progress import ProgressBar
from usnav.errors import InputError

if TYPE_CHECKING:
    from usnav.calibration.precision import CalibrationPrecision

#: The exit statuses, as --help states them ({what}: the warnings of that kind of calibration).
EXIT_STATUS = (
    "Exit status: 0 when the calibration is done and no warning flags it; 1 when it is done "
    "(and every output asked for is written) but a warning flags it ({what}), so a scripted "
    "check does not take it as it stands; 2 for bad input or a refused calibration: one line "
    "on stderr, no calibration written; 3 for an internal error of usnav (one line; please "
    "report it)."
)
#: Exit status of a calibration that was done but is flagged by a warning.
EXIT_FLAGGED = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="spatial (N-wire), temporal (water tank) and pivot calibration",
        description="Calibrate a tracked probe or stylus from PLUS recordings. Results go to a "
        "usnav calibration file (calibration/<name>.toml); an existing file is updated, its "
        "other sections kept.",
    )
    sub = parser.add_subparsers(dest="kind", metavar="KIND")
    parser.set_defaults(func=lambda args: (parser.print_help(sys.stderr), 2)[1])

    sp = sub.add_parser(
        "spatial",
        help="ImageToProbe from N-wire phantom recordings (PLUS fCal)",
        description="N-wire spatial calibration: segments the wire dots of every frame, solves "
        "ImageToProbe by least squares with 3-sigma outlier rejection and reports PLUS's 3D "
        "reprojection error (mean and SD of the lowest 95 %) on calibration and validation "
        "frames. Frames whose wires are not found, whose transforms are not OK or whose "
        "orientation contradicts the phantom are skipped and counted. "
        + EXIT_STATUS.format(
            what="no validation recording, a validation error well above the calibration's, "
            "a pose-image lag that fits clearly better, mirrored frames, a lag other than the "
            "--out file's, a precision that under-states"
        ),
    )
    sp.add_argument(
        "--config",
        required=True,
        type=Path,
        help="PLUS device-set XML with <PhantomDefinition>, PhantomToReference and "
        "<Segmentation> (PlusDeviceSet_fCal_*.xml)",
    )
    sp.add_argument("--calibration", required=True, type=Path, help="calibration recording")
    sp.add_argument("--validation", type=Path, help="validation recording")
    sp.add_argument("--out", type=Path, help="calibration file to write/update (.toml)")
    sp.add_argument("--xml", type=Path, help="also write PLUS <CoordinateDefinitions> here")
    sp.add_argument("--report", type=Path, help="write a PNG report (segmented wires, errors)")
    sp.add_argument(
        "--min-frames",
        type=int,
        default=10,
        help="fewest usable calibration frames accepted (default 10)",
    )
    sp.add_argument(
        "--tracker-lag-s",
        type=float,
        default=None,
        help="pair each image with the tracker pose this much later than the recording pairs "
        "it, s (a PLUS recording pairs as received: give the temporal calibration's "
        "tracker_lag_s). Default: the [temporal] lag of the --out file, the one the probe will "
        "use live (none: as recorded). Other lags are tried too and a clearly better one is "
        "warned of",
    )
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    sp.add_argument(
        "--force", action="store_true", help="replace an existing --xml or --report file"
    )
    sp.set_defaults(func=_spatial)

    tp = sub.add_parser(
        "temporal",
        help="tracker lag from a water-tank recording",
        description="Temporal calibration (PLUS water-tank method): the tank bottom's depth in "
        "the video against the probe's tracked motion; prints TrackerLagSec (use the tracker "
        "pose at t_image + lag). "
        + EXIT_STATUS.format(
            what="a recording too short to tell, a polarity kept against PLUS's rule or not "
            "told apart, a lag at the search's edge, a spatial calibration in the --out file "
            "made at another lag"
        ),
    )
    tp.add_argument("--video", required=True, type=Path, help="video recording")
    tp.add_argument(
        "--tracker", type=Path, help="tracker recording (default: the poses in the video recording)"
    )
    tp.add_argument(
        "--tool",
        default="ProbeToReference",
        help="tracked transform whose motion is compared (default ProbeToReference; "
        "ProbeToTracker is used when no Reference was recorded)",
    )
    tp.add_argument(
        "--clip",
        type=int,
        nargs=4,
        metavar=("X", "Y", "W", "H"),
        help="video region to search for the line, px",
    )
    tp.add_argument(
        "--clamp-ends",
        action="store_true",
        help="PLUS's exact procedure (tracker range shrunk by 0.5 s, end values held): "
        "reproduces PLUS's error figure, but biases the lag by a few ms",
    )
    tp.add_argument("--out", type=Path, help="calibration file to write/update (.toml)")
    tp.add_argument("--report", type=Path, help="write a PNG report (signals, SSD curve)")
    tp.add_argument("--json", action="store_true", help="print one JSON object")
    tp.add_argument("--force", action="store_true", help="replace an existing --report file")
    tp.set_defaults(func=_temporal)

    pp = sub.add_parser(
        "pivot",
        help="stylus tip offset by pivoting",
        description="Pivot calibration: tip offset (tool frame) and pivot point (reference "
        "frame) by least squares over the OK poses of a recording. Exit status: 0 when done; 2 "
        "for bad input or a refused calibration (fewer than 10 OK poses, a stylus not swung "
        "enough): one line on stderr, no calibration written; 3 for an internal error of usnav.",
    )
    pp.add_argument("recording", type=Path, help="recording of the stylus pivoting")
    pp.add_argument(
        "--tool",
        default="StylusToReference",
        help="tool transform (computed from the recorded ones; default StylusToReference)",
    )
    pp.add_argument("--out", type=Path, help="calibration file to write/update (.toml)")
    pp.add_argument("--xml", type=Path, help="also write PLUS <CoordinateDefinitions> here")
    pp.add_argument("--json", action="store_true", help="print one JSON object")
    pp.add_argument("--force", action="store_true", help="replace an existing --xml file")
    pp.set_defaults(func=_pivot)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def _check_outputs(args: argparse.Namespace, *names: str) -> None:
    """The output rule before any segmentation: --xml and --report are replaced only with
    --force; --out is a calibration file that is updated (its other sections kept)."""
    from usnav.io.outputs import check_output

    for name in names:
        path = getattr(args, name, None)
        if path is None:
            continue
        if name == "out" and Path(path).is_file():
            continue  # an existing calibration file is updated, not replaced
        check_output(path, force=args.force or name == "out", option=f"--{name}")


def _matrix_text(m: np.ndarray) -> str:
    return "\n".join("  " + "  ".join(f"{v:+12.6f}" for v in row) for row in m)


def _spatial(args: argparse.Namespace) -> int:
    from usnav.calibration.workflow import run_spatial

    if args.min_frames < 1:
        raise InputError("--min-frames", f"must be at least 1, got {args.min_frames}")
    if args.tracker_lag_s is not None and not abs(args.tracker_lag_s) <= 2.0:
        raise InputError(
            "--tracker-lag-s",
            f"must be within ±2 s (a temporal calibration's lag), got {args.tracker_lag_s}",
        )
    _check_outputs(args, "out", "xml", "report")
    bar = ProgressBar(transient=False)
    try:
        result = run_spatial(
            args.config,
            args.calibration,
            args.validation,
            out=args.out,
            report=args.report,
            xml=args.xml,
            min_frames=args.min_frames,
            tracker_lag_s=args.tracker_lag_s,
            progress=lambda stage, done, total: bar.update(f"segmenting {stage}", done, total),
        )
    finally:
        bar.stop()
    if args.json:
        d = result.as_dict()
        d["out"] = str(args.out) if args.out else None
        print(json.dumps(d))
        return _status("spatial", result.flagged, len(result.warnings), args, json_out=True)
    print("ImageToProbe (Image px -> Probe mm):")
    print(_matrix_text(result.image_to_probe))
    sx, sy = result.spacing_mm
    print(f"spacing {sx:.5f} x {sy:.5f} mm/px, axes {result.skew_deg:.3f} deg from perpendicular")
    ce = result.calibration_error
    print(
        f"calibration error (PRE3D, lowest 95 %): {ce.mean:.4f} +- {ce.sd:.4f} mm "
        f"(max {ce.max:.3f}, {ce.count}/{ce.total} points)"
    )
    if result.validation_error is not None:
        ve = result.validation_error
        print(
            f"validation error  (PRE3D, lowest 95 %): {ve.mean:.4f} +- {ve.sd:.4f} mm "
            f"(max {ve.max:.3f}, {ve.count}/{ve.total} points)"
        )
    print(
        f"images paired with the tracker poses at t {result.tracker_lag_s:+.4f} s"
        + (f" ({result.tracker_lag_source})" if result.tracker_lag_source else "")
    )
    if result.precision is not None:
        _print_precision(result.precision)
    for name, seq in (("calibration", result.calibration), ("validation", result.validation)):
        if seq is not None:
            skipped = ", ".join(f"{v} {k}" for k, v in seq.counts.items() if k != "ok")
            print(
                f"{name}: {len(seq.used)} of {len(seq.frames)} frames used"
                + (f"; skipped: {skipped}" if skipped else "")
            )
    for w in result.warnings:
        print(f"warning: {w}")
    if result.precision is not None:
        scan = result.tracker_lag_scan
        _print_budget(result.precision, lagged=scan is not None and scan.warning() is not None)
    for what, path in (
        ("calibration file", args.out),
        ("PLUS XML", args.xml),
        ("report", args.report),
    ):
        if path is not None:
            print(f"wrote {what}: {path}")
    return _status("spatial", result.flagged, len(result.warnings), args)


def _status(
    kind: str, flagged: bool, warnings: int, args: argparse.Namespace, *, json_out: bool = False
) -> int:
    """0, or :data:`EXIT_FLAGGED` with one line on stderr saying why and what was written."""
    if not flagged:
        return 0
    where = 'in the JSON "warnings"' if json_out else "above"
    plural = "" if warnings == 1 else "s"
    what = f"{warnings} warning{plural} {where}" if warnings else f"the precision's warning {where}"
    written = [str(p) for p in (args.out, getattr(args, "xml", None), args.report) if p]
    print(
        f"usnav calibrate {kind}: exit status {EXIT_FLAGGED}: the calibration is flagged by "
        f"{what}; "
        + (f"it was written all the same ({', '.join(written)})" if written else "nothing written"),
        file=sys.stderr,
    )
    return EXIT_FLAGGED


def _print_precision(p: CalibrationPrecision) -> None:
    """The calibration's precision: image points, rotation, the validation check."""
    pts = p.points_mm
    print(
        f"calibration precision (95 %, bootstrap: {p.replicates} resamples of {p.frames} "
        f"frames in blocks of {p.block_frames}): image points top centre "
        f"{pts['top_centre']:.2f}, centre {pts['centre']:.2f}, bottom corners "
        f"{pts['bottom_left']:.2f} / {pts['bottom_right']:.2f} mm; "
        f"rotation {p.rotation_deg:.2f} deg"
    )
    if len(p.block_lengths) > 1:
        each = "; ".join(
            f"{b}: {mm:.2f} mm + {deg:.2f} deg"
            for b, (mm, deg) in sorted(zip(p.block_lengths, p.bounds_by_block, strict=True))
        )
        print(
            f"  the bound moves with the block length (blocks of {each}): the one stated "
            f"covers them all ({p.bootstrap_mm:.2f} mm + {p.bootstrap_deg:.2f} deg)"
        )
    lo, hi = p.predicted_pre3d_mm
    line = f"  predicted PRE3D of a new recording {lo:.3f} mm (95 %: {hi:.3f} mm)"
    if p.validation_pre3d_mm is not None:
        line += f"; validation {p.validation_pre3d_mm:.3f} mm: " + (
            "LARGER, the bootstrap under-states" if p.understated else "within it"
        )
    print(line)
    for w in p.warnings:
        print(f"warning: precision: {w}")


def _print_budget(p: CalibrationPrecision, *, lagged: bool = False) -> None:
    """The ``[registration_budget]`` lines to paste, after the warning of what they omit (and,
    ``lagged``, that the calibration they describe is blurred by a pose-image lag)."""
    print(
        "warning: these numbers state the calibration's PRECISION only (not its accuracy): the "
        "phantom's geometry and registration, a wire-segmentation bias and the tracker's error "
        "are not in them"
    )
    print("[registration_budget] lines for the usnav run --options file:")
    if lagged:
        print(
            "# not before the pose-image lag warned of above is settled: these numbers "
            "describe a calibration that lag blurs"
        )
    print(p.budget_snippet(), end="")


def _temporal(args: argparse.Namespace) -> int:
    from usnav.calibration.workflow import run_temporal

    if args.tracker is not None and _same_file(args.tracker, args.video):
        raise InputError(
            "--tracker",
            f"{args.tracker} is the same file as --video",
            "give the tracker recording, or leave --tracker out when the video recording "
            "carries the probe poses",
        )
    _check_outputs(args, "out", "report")
    bar = ProgressBar(transient=False)
    try:
        result = run_temporal(
            args.video,
            args.tracker,
            tool=args.tool,
            clip=tuple(args.clip) if args.clip else None,
            clamp_ends=args.clamp_ends,
            out=args.out,
            report=args.report,
            progress=lambda done, total: bar.update("segmenting video", done, total),
        )
    finally:
        bar.stop()
    if args.json:
        d = result.as_dict()
        d["out"] = str(args.out) if args.out else None
        print(json.dumps(d))
        return _status("temporal", result.flagged, len(result.warnings), args, json_out=True)
    print(f"TrackerLagSec = {result.tracker_lag_s:+.4f} s ({_lag_meaning(result.tracker_lag_s)})")
    print(
        f"error (PLUS CalibrationError) {result.error:.3f}, max {result.max_error:.3f}; "
        f"RMS {result.rms_error_mm:.3f} mm"
    )
    print(
        f"line found in {result.video_frames_used} of {result.video_frames} frames; "
        f"{result.tracker_samples} {result.tool} samples"
    )
    for w in result.warnings:
        print(f"warning: {w}")
    for what, path in (("calibration file", args.out), ("report", args.report)):
        if path is not None:
            print(f"wrote {what}: {path}")
    return _status("temporal", result.flagged, len(result.warnings), args)


def _lag_meaning(lag_s: float) -> str:
    """What a tracker lag (s) means, in PLUS's words for its sign (PLUS prints TrackerLagSec
    as "> 0 if the tracker data lags"): the tracker's stamp of a moment is ``|lag|`` earlier
    (negative) or later (positive) than the video's stamp of the image of it."""
    ms = abs(lag_s) * 1000.0
    if ms < 0.5:
        return "use the tracker pose at t_image + lag: both streams stamp a moment alike"
    side, verb = ("earlier", "leads") if lag_s < 0 else ("later", "lags")
    return (
        f"use the tracker pose at t_image + lag: the tracker's stamp of a moment is {ms:.0f} ms "
        f"{side} than the image's, i.e. the tracker stream {verb} the video"
    )


def _pivot(args: argparse.Namespace) -> int:
    from usnav.calibration.workflow import run_pivot

    if args.tool.count("To") != 1:
        raise InputError("--tool", f"{args.tool!r} is not a <From>To<To> transform name")
    _check_outputs(args, "out", "xml")
    result = run_pivot(args.recording, tool=args.tool, out=args.out, xml=args.xml)
    if args.json:
        d = result.as_dict()
        d["out"] = str(args.out) if args.out else None
        print(json.dumps(d))
        return 0
    from usnav.transforms import split_name

    # the frames --tool names: the pivot lies in its To frame (Tracker for StylusToTracker)
    tool_frame, to_frame = split_name(result.tool)
    tip = ", ".join(f"{v:.3f}" for v in result.tip_in_tool_mm)
    pivot = ", ".join(f"{v:.3f}" for v in result.pivot_in_reference_mm)
    print(f"tip in {tool_frame} frame ({tool_frame}TipTo{tool_frame}): ({tip}) mm")
    print(f"pivot in {to_frame} frame: ({pivot}) mm")
    print(
        f"RMS error {result.rms_error_mm:.3f} mm over {result.poses_used} of "
        f"{result.poses_total} poses (stylus swung {result.rotation_spread_deg:.1f} deg)"
    )
    for what, path in (("calibration file", args.out), ("PLUS XML", args.xml)):
        if path is not None:
            print(f"wrote {what}: {path}")
    return 0
