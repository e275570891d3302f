"""``usnav margins RECORDING ... --out MARGINS``: the per-frame margins the live pipeline
publishes, computed for a recorded sweep and written to a margins file (docs/evaluation.md)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "margins",
        help="per-frame tumor margins of a recorded sweep, written to a file",
        description="Computes, for every frame of RECORDING, the margins usnav run publishes "
        "(same estimator, same calibration path) with a fixed ReferenceToMri, and writes them "
        "as JSON Lines (gzip if MARGINS ends with .gz). Format: docs/evaluation.md.",
    )
    p.add_argument("recording", type=Path, help="PLUS sequence file (.igs.mha, .seq.nrrd)")
    p.add_argument("--mri", type=Path, required=True, help="MRI volume (NIfTI or NRRD)")
    p.add_argument(
        "--label", type=Path, required=True, help="tumor label map on the MRI (solid 1, cyst 2)"
    )
    p.add_argument(
        "--calibration",
        type=Path,
        required=True,
        metavar="CAL",
        help="ImageToProbe: usnav calibration .toml, PLUS device-set XML or 16 numbers",
    )
    p.add_argument(
        "--reference-to-mri",
        type=Path,
        required=True,
        metavar="FILE",
        help="ReferenceToMri: 16 numbers (row-major) or a usnav RESULT.json",
    )
    p.add_argument("--out", type=Path, required=True, metavar="MARGINS", help="e.g. margins.jsonl")
    p.add_argument("--force", action="store_true", help="replace an existing MARGINS file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from usnav.evaluate.margins_file import write_margins
    from usnav.io.outputs import check_output

    check_output(args.out, force=args.force)
    s = write_margins(
        args.recording, args.mri, args.label, args.calibration, args.reference_to_mri, args.out
    )
    extra = []
    if s.skipped_image:
        extra.append(f"{s.skipped_image} skipped (invalid image)")
    if s.no_tracking:
        extra.append(f"{s.no_tracking} without valid tracking")
    print(
        f"{s.frames} frame(s), tumor in view in {s.in_view}"
        + (f"; {', '.join(extra)}" if extra else "")
        + f" → {s.path}"
    )
    return 0
