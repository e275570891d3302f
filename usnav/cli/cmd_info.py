"""``usnav info FILE``: what is in a recording (PLUS sequence file) or a volume."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from usnav.io.info import describe_file, format_description


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="describe a recording (.igs.mha, .seq.nrrd) or a volume (.nii, .nrrd)",
        description="For a recording: frames, image size, orientation, transforms with OK/INVALID "
        "counts (a non-finite matrix counts as INVALID), time span, mean frame rate, timestamps "
        "that go backwards or are missing/not a number, and dropped frames (FrameNumber jumps, "
        "timestamp gaps longer than twice the median period). For a volume: shape, spacing, RAS "
        "bounds.",
    )
    parser.add_argument("file", type=Path, help="recording or volume file")
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
    info = describe_file(args.file, tolerant=args.tolerant, verify=args.verify)
    print(json.dumps(info) if args.json else format_description(info))
    return 0
