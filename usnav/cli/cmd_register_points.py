"""``usnav register-points``: paired-fiducial rigid registration with FRE and expected TRE."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "register-points",
        help="initial ReferenceToMri from paired fiducials (least squares), with FRE and "
        "expected TRE",
        description="Least-squares rigid fit (SVD, Arun/Umeyama) of paired points: the moving "
        "points (Reference mm, e.g. touched with the tracked stylus) onto the fixed points (MRI "
        "RAS mm). Prints FRE and Fitzpatrick's expected TRE; writes ReferenceToMri to JSON.",
    )
    p.add_argument(
        "tag",
        nargs="?",
        type=Path,
        help="MNI .tag file with point pairs (volume 1 = MRI, volume 2 = Reference)",
    )
    p.add_argument("--moving", type=Path, help="Reference points: x y z rows, .fcsv or .mrk.json")
    p.add_argument("--fixed", type=Path, help="MRI points, paired with --moving in order")
    p.add_argument(
        "--fle",
        type=float,
        metavar="MM",
        help="fiducial localisation error, RMS mm (default: estimated from the FRE)",
    )
    p.add_argument(
        "--targets",
        type=Path,
        help="MRI points where to estimate the TRE (default: the fiducials' centroid)",
    )
    p.add_argument("--out", type=Path, required=True, metavar="RESULT.json")
    p.add_argument("--force", action="store_true", help="replace an existing RESULT.json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from usnav.io.outputs import check_output, input_paths
    from usnav.registration.files import register_point_files

    check_output(args.out, force=args.force, inputs=input_paths(args))
    doc = register_point_files(
        args.out,
        tag=args.tag,
        moving=args.moving,
        fixed=args.fixed,
        fle_mm=args.fle,
        targets=args.targets,
    )
    tre = ", ".join("–" if v is None else f"{v:.2f}" for v in doc["expected_tre_mm"])
    print(
        f"{doc['points']} pairs: FRE {doc['fre_rms_mm']:.2f} mm RMS (max "
        f"{max(doc['fre_mm']):.2f}), expected TRE {tre} mm → {args.out}"
    )
    return 0
