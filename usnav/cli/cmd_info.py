"""``usnav info FILE``: what is in a recording (PLUS sequence file), a volume or a probe
calibration."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from usnav.io.info import describe_file, format_description


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="describe a recording (.igs.mha, .seq.nrrd), a volume (.nii, .nrrd) or a "
        "calibration (.toml)",
        description="For a recording: frames, image size, orientation, transforms with OK/INVALID "
        "counts (a non-finite matrix counts as INVALID), time span, mean frame rate, timestamps "
        "that go backwards or are missing/not a number, and dropped frames (FrameNumber jumps, "
        "timestamp gaps longer than twice the median period). For a volume: shape, spacing, RAS "
        "bounds. For a calibration file (usnav's .toml): the image size ImageToProbe was made "
        "for, its mm per pixel, the tracker lag, the stylus pivot, and whether usnav calibrate "
        "flagged a section (which depth preset a file is for, before giving several to usnav "
        "run).",
    )
    parser.add_argument("file", type=Path, help="recording, volume or calibration file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--tolerant",
        action="store_true",
        help="describe the readable part of a damaged recording and how many frames were "
        "recovered, instead of refusing it",
    )
    parser.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="do not inflate compressed pixels to check them (faster on big files)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.file.name.lower().endswith((".toml", ".xml")):
        from usnav.config.calibration import format_calibration, load_calibration
        from usnav.errors import InputError

        try:
            info = load_calibration(args.file, warn=False).describe()
        except InputError as exc:
            if not args.file.is_file():
                raise
            named = exc.problem.startswith("is not a probe calibration")
            raise InputError(
                args.file,
                exc.problem if named else f"is not a probe calibration ({exc.problem})",
                "usnav info reads a .xml as a PLUS device set holding ImageToProbe (usnav "
                "calibrate spatial --xml, fCal)"
                if args.file.name.lower().endswith(".xml")
                else "usnav info reads a .toml as a calibration file (usnav calibrate --out); a "
                "device or options file is not one",
            ) from exc
        print(json.dumps(info) if args.json else format_calibration(info))
        return 0
    info = describe_file(args.file, tolerant=args.tolerant, verify=args.verify)
    print(json.dumps(info) if args.json else format_description(info))
    return 0
