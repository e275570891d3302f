"""``usnav resect-sweeps --out DIR``: RESECT Case 24 sweeps written as a dataset (files and a
manifest) that ``usnav evaluate`` runs like any other."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "resect-sweeps",
        help="RESECT Case 24 sweeps as a dataset with a manifest (for usnav evaluate)",
        description="Cuts freehand-like sweeps out of RESECT Case 24's 3D ultrasound, perturbs "
        "the navigation alignment (3-8 mm, 3-8°) and writes per sweep a PLUS sequence file, "
        "a calibration and the initial ReferenceToMri, plus DIR/manifest.csv whose truth is the "
        "case's expert landmarks (.tag). The MRI and .tag are referenced, not copied.",
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument(
        "--data",
        type=Path,
        metavar="DATA_DIR",
        help="folder holding resect/case24 (default: $USNAV_TEST_DATA or ../shared/data)",
    )
    p.add_argument("--sweeps", type=int, default=4, metavar="N", help="sweeps (default 4)")
    p.add_argument("--frames", type=int, default=150, metavar="N", help="frames per sweep (150)")
    p.add_argument("--seed", type=int, default=24, help="perturbation seed (default 24)")
    p.add_argument("--force", action="store_true", help="write into a non-empty DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from usnav.errors import InputError
    from usnav.evaluate.resect import write_resect_dataset
    from usnav.io.outputs import check_output

    # before the folder is made and the outside data read (a negative seed reached numpy:
    # an internal error, exit 3, after an empty DIR was created)
    if args.sweeps < 1:
        raise InputError("--sweeps", f"must be at least 1, got {args.sweeps}")
    if args.frames < 2:
        raise InputError("--frames", f"must be at least 2, got {args.frames}")
    if args.seed < 0:
        raise InputError("--seed", f"must be a non-negative integer, got {args.seed}")
    check_output(args.out, folder=True, force=args.force)
    manifest = write_resect_dataset(
        args.data, args.out, sweeps=args.sweeps, frames=args.frames, seed=args.seed
    )
    print(f"{args.sweeps} sweep(s) of RESECT Case 24 → {manifest}")
    return 0
