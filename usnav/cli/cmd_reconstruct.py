"""``usnav reconstruct``: PLUS-compatible freehand volume reconstruction of a sweep."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reconstruct",
        help="reconstruct a tracked sweep into a volume (PLUS-compatible grid and compounding)",
        description="Pastes every tracked frame into a Reference-frame volume: PLUS's output "
        "grid, nearest-neighbour or linear pasting, MEAN or MAXIMUM compounding (LINEAR with "
        "MAXIMUM is voxel-equal to PLUS's), STICK hole filling. The volume is written in PLUS's "
        "orientation (a .mha as PLUS writes it), to compare side by side with PLUS's. "
        "Options come from a PLUS <VolumeReconstruction> element (--config, or CAL itself when "
        "it is a PLUS XML), then the flags below.",
    )
    p.add_argument("recording", type=Path, help="PLUS sequence file")
    p.add_argument(
        "--calibration",
        type=Path,
        required=True,
        metavar="CAL",
        help="ImageToProbe: usnav .toml, PLUS device-set XML or a text file of 16 numbers "
        "(row-major)",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="VOL",
        help="output volume (.mha, .nii, .nii.gz or .nrrd)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing output volume")
    p.add_argument(
        "--spacing",
        type=float,
        nargs="+",
        metavar="MM",
        help="voxel size, one or three numbers (default 0.5 or the PLUS config)",
    )
    p.add_argument(
        "--config", type=Path, metavar="XML", help="PLUS device-set XML with <VolumeReconstruction>"
    )
    p.add_argument("--interpolation", choices=["nearest", "linear"])
    p.add_argument(
        "--no-fill-holes",
        dest="fill_holes",
        action="store_false",
        default=None,
        help="leave empty voxels empty",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from usnav.io.outputs import check_output, input_paths
    from usnav.registration.files import reconstruct_recording

    check_output(args.out, force=args.force, inputs=input_paths(args))
    rec = reconstruct_recording(
        args.recording,
        args.calibration,
        args.out,
        spacing_mm=args.spacing,
        config=args.config,
        interpolation=args.interpolation,
        fill_holes=args.fill_holes,
    )
    v = rec.volume
    origin = ", ".join(f"{x:.4f}" for x in v.affine[:3, 3])
    # frames with INVALID/MISSING tracking or an invalid image are left out; say how many,
    # as `usnav register` does (frames_dropped), rather than only the frames pasted
    left_out = (
        f" ({rec.dropped} of {rec.frames + rec.dropped} left out: invalid image or tracking not OK)"
        if rec.dropped
        else ""
    )
    print(
        f"{rec.frames} frames{left_out} → {v.shape[0]}×{v.shape[1]}×{v.shape[2]} voxels of "
        # the Reference frame's (PLUS's Offset): usnav info shows a .nii/.nrrd's RAS, which
        # differs in x and y's sign (docs/registration.md); "origin" alone read as either
        f"{' × '.join(f'{s:g}' for s in v.spacing_mm)} mm, origin ({origin}) mm in Reference, "
        f"{100 * rec.filled.mean():.1f}% pasted, {rec.seconds:.2f} s → {args.out}"
    )
    return 0
