"""``usnav margins RECORDING ... --out MARGINS``: the per-frame margins the live pipeline
publishes, computed for a recorded sweep and written to a margins file (docs/evaluation.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from usnav.io.volume import Volume


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "margins",
        help="per-frame tumor margins of a recorded sweep, written to a file",
        description="Computes, for every frame of RECORDING, the margins usnav run publishes "
        "(same estimator, same calibration path) with a fixed ReferenceToMri, and writes them "
        "as JSON Lines (gzip if MARGINS ends with .gz). Format: docs/evaluation.md.",
    )
    p.add_argument("recording", type=Path, help="PLUS sequence file (.igs.mha, .seq.nrrd)")
    p.add_argument(
        "--mri", type=Path, required=True, help="MRI volume (NIfTI, NRRD or MetaIO .mha)"
    )
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


def check_inputs(args: argparse.Namespace) -> tuple[Volume, Volume]:
    """Judge the inputs as ``usnav run``, ``register`` and ``reconstruct`` judge them, before
    any frame is estimated: the tumor label map (:func:`~usnav.pipeline.run.check_label_map`,
    :func:`~usnav.pipeline.run.check_label_fits_mri`), the recording as a tracked sweep
    (:func:`~usnav.registration.sweep.check_tracked_recording`) and ``--reference-to-mri``
    (:func:`~usnav.registration.files.read_initial`). Returns the label map and the MRI as
    loaded (each is read once)."""
    from usnav.config.calibration import load_calibration
    from usnav.errors import InputError
    from usnav.io.sequence import read_sequence
    from usnav.io.volume import load_volume
    from usnav.margins.options import MarginOptions
    from usnav.pipeline.run import check_label_fits_mri, check_label_map
    from usnav.registration.files import read_initial
    from usnav.registration.sweep import check_tracked_recording

    read_initial(args.reference_to_mri, "ReferenceToMri of --reference-to-mri", truth_ok=True)
    # a flagged calibration is warned of once, when write_margins loads it to use it
    calibration = load_calibration(args.calibration, warn=False)
    if not args.recording.exists():
        raise InputError(args.recording, "no such recording")
    with read_sequence(args.recording) as seq:  # (its image size the calibration's, too)
        check_tracked_recording(seq, calibration)
    options = MarginOptions()
    label = load_volume(args.label)
    check_label_map(
        label,
        options.solid_label,
        options.cyst_label,
        hint="give the tumor segmentation of this MRI (solid tumor 1, cyst 2)",
    )
    mri = load_volume(args.mri)
    mri.check_finite()
    check_label_fits_mri(label, mri)
    return label, mri


def run(args: argparse.Namespace) -> int:
    from usnav.evaluate.margins_file import write_margins
    from usnav.io.outputs import check_output, input_paths

    check_output(args.out, force=args.force, inputs=input_paths(args))
    label, mri = check_inputs(args)
    s = write_margins(
        args.recording,
        mri,
        label,
        args.calibration,
        args.reference_to_mri,
        args.out,
        checked=True,  # by check_inputs: a warning of the label map is said once
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
    if s.in_view == 0 and s.frames > s.no_tracking + s.skipped_image:
        # an inverse or another patient's registration places the sweep away from the tumor
        # yet partly inside the label map: nothing here can tell that from a sweep that
        # missed the tumor, so say what to check
        print(
            "no frame shows the tumor: if the sweep crossed it, check --reference-to-mri "
            "(ReferenceToMri for this MRI, not its inverse)"
        )
    return 0
