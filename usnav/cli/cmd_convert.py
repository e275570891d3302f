"""``usnav convert IN OUT``: between ``.igs.mha`` and ``.seq.nrrd``, or recover a recording."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from usnav.cli.progress import ProgressBar
from usnav.io.sequence import convert_sequence
from usnav.io.sequence_journal import Recovery


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a recording between .igs.mha and .seq.nrrd (or recover a journal)",
        description="Streams frame by frame and keeps every per-frame field; every frame "
        "written also carries a FrameNumber (the source's, or the frame's index when the "
        "source had none), as PLUS recordings do. IN may also be "
        "the journal folder of an interrupted recording (REC.igs.mha.journal): its complete "
        "frames are assembled into OUT (and only OUT). A damaged journal gives up its readable "
        "frames: what was skipped is said on one line and the journal is kept.",
    )
    parser.add_argument("source", type=Path, help="recording (.igs.mha, .seq.nrrd) or journal")
    parser.add_argument("target", type=Path, help="file to write (.igs.mha or .seq.nrrd)")
    compression = parser.add_mutually_exclusive_group()
    compression.add_argument(
        "--compress",
        dest="compress",
        action="store_true",
        default=None,
        help="compress the pixels (default: as the source)",
    )
    compression.add_argument(
        "--no-compress",
        dest="compress",
        action="store_false",
        help="write uncompressed pixels (memory-mappable)",
    )
    parser.add_argument(
        "--tolerant", action="store_true", help="convert the readable part of a damaged recording"
    )
    parser.add_argument("--force", action="store_true", help="overwrite TARGET if it exists")
    parser.set_defaults(func=run)


def _report(recovery: Recovery) -> None:
    """One warning line when a journal could not be recovered whole (the journal is kept)."""
    if not recovery.complete:
        print(f"usnav convert: warning: {recovery.summary()}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from usnav.io.outputs import check_output

    check_output(args.target, force=args.force, option="TARGET", inputs=[args.source])
    progress = ProgressBar(enabled=sys.stderr.isatty())
    try:
        written = convert_sequence(
            args.source,
            args.target,
            compress=args.compress,
            tolerant=args.tolerant,
            overwrite=args.force,
            progress=lambda done, total: progress.update("converting frames", done, total),
            on_recovery=_report,
            on_problems=lambda line: print(f"usnav convert: warning: {line}", file=sys.stderr),
        )
    finally:
        progress.stop()
    print(written)
    return 0
