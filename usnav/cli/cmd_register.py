"""``usnav register``: US→MRI registration of a tracked sweep (MIND-SSC or LC² on a Numba core)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from usnav.cli.progress import ProgressBar


def register(sub: argparse._SubParsersAction) -> None:
    from usnav.registration.options import RegistrationOptions  # pydantic only, no Numba

    p = sub.add_parser(
        "register",
        help="register a tracked ultrasound sweep to the preoperative MRI (rigid, MIND-SSC)",
        description="Refines the initial ReferenceToMri from the ultrasound itself and writes "
        "RESULT.json with ReferenceToMri (the candidate if accepted, else the initial one), "
        "accepted, similarity, uncertainty and seconds. Pixel → MRI = ReferenceToMri · "
        "inv(ReferenceToTracker) · ProbeToTracker · ImageToProbe · [col, row, 0, 1].",
    )
    p.add_argument(
        "recording",
        type=Path,
        help="PLUS sequence file (.igs.mha, .seq.nrrd) with "
        "ProbeToTracker + ReferenceToTracker (or ProbeToReference)",
    )
    p.add_argument(
        "--mri", type=Path, required=True, help="MRI volume (NIfTI, NRRD or MetaIO .mha)"
    )
    p.add_argument(
        "--calibration",
        type=Path,
        required=True,
        metavar="CAL",
        help="ImageToProbe: usnav calibration .toml, PLUS device-set XML or a text file of 16 "
        "numbers (row-major)",
    )
    p.add_argument(
        "--init",
        type=Path,
        required=True,
        help="initial ReferenceToMri: a text file of 16 numbers (row-major), or the RESULT.json "
        "of an earlier usnav register / register-points (its ReferenceToMri)",
    )
    p.add_argument("--out", type=Path, required=True, metavar="RESULT.json")
    p.add_argument(
        "--label",
        type=Path,
        metavar="TUMOR_LABEL",
        help="the planned tumor's label map (MRI space, tumor > 0): an accepted estimate is "
        "then refined at the tumor to follow the cord shift (ReferenceToMri; the global one "
        "stays in BonyReferenceToMri)",
    )
    p.add_argument(
        "--removed",
        type=Path,
        metavar="REMOVED_LABEL",
        help="label map (MRI space, > 0) of the tissue the surgery removed: the laminae and "
        "spinous processes over the decompressed levels and the wound above them. The sweep is "
        "then compared with the MRI of the operated spine (that tissue filled with fluid), "
        "not with bone the ultrasound cannot see",
    )
    p.add_argument("--force", action="store_true", help="replace an existing RESULT.json")
    p.add_argument(
        "--config",
        type=Path,
        metavar="TOML",
        help="registration options (a [registration] table, see docs/registration.md); "
        "frames cut from a 3D volume, zero outside it, need ignore_zero_pixels = true",
    )
    p.add_argument(
        "--metric",
        choices=["lc2", "lc2_beam", "ncc_gradient", "mind_ssc"],
        help="similarity (default: the options' metric, "
        f"{RegistrationOptions.model_fields['metric'].default})",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from usnav.io.outputs import check_output, input_paths
    from usnav.registration.files import register_recording
    from usnav.registration.rigid import load_registration_options

    check_output(args.out, force=args.force, inputs=input_paths(args))
    options = load_registration_options(args.config, metric=args.metric)
    bar = ProgressBar(enabled=not args.quiet, counts=False)
    try:
        result = register_recording(
            args.recording,
            args.mri,
            args.calibration,
            args.init,
            args.out,
            options,
            progress=lambda message, fraction: bar.update("registering", fraction, 1.0, message),
            label=args.label,
            removed=args.removed,
        )
    finally:
        bar.stop()
    verdict = "accepted" if result.accepted else "REJECTED (initial ReferenceToMri kept)"
    bound = (
        f"{result.uncertainty_mm:.2f} mm" if math.isfinite(result.uncertainty_mm) else "not bounded"
    )
    uncertainty = (
        f"uncertainty {bound}"
        if result.accepted
        # a rejected candidate's bound holds only if it were the right pose, which the
        # rejection says the images could not establish (a wrong-level candidate 23 mm off
        # printed "the candidate's: 3.19 mm", session 37): not printed as a bound
        else "the kept estimate's error is not bounded by the images"
    )
    print(
        f"{verdict}: similarity {result.initial_similarity:.4f} → {result.similarity:.4f}, "
        f"correction {result.correction_mm:.2f} mm, {uncertainty}, {result.seconds:.2f} s → "
        f"{args.out}"
    )
    if result.tumor_stage is not None:
        print(result.tumor_stage["reason"])
    return 0
