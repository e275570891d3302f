"""``usnav simulate --seed N --out DIR``: a synthetic spinal cord tumor case with ground truth.

``usnav simulate --seeds 1-4 --out DIR [--families a,b] [--workers N]``: one case per seed and
``DIR/manifest.csv`` (see :mod:`usnav.sim.dataset`). ``usnav simulate --list-families``: the
appearance families.

Every :class:`usnav.sim.options.SimOptions` field is a flag (``--frames``, ``--depth-mm``,
``--family``, ``--tumor-length-mm MIN MAX``...); ``--options FILE.toml`` reads them from a file
first.
"""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from usnav.sim.options import SimOptions


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_option_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("case options (defaults: the standard case)")
    for name, info in SimOptions.model_fields.items():
        ann = info.annotation
        default = info.default
        helptext = f"{info.description or name} (default: {default})"
        origin = get_origin(ann)
        if ann is bool:
            group.add_argument(
                _flag(name),
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=helptext,
            )
        elif origin is Literal:
            group.add_argument(
                _flag(name), dest=name, choices=list(get_args(ann)), default=None, help=helptext
            )
        elif origin is tuple:
            inner = get_args(ann)
            group.add_argument(
                _flag(name),
                dest=name,
                type=float,
                nargs=len(inner),
                metavar=("MIN", "MAX") if len(inner) == 2 else ("I", "J", "K")[: len(inner)],
                default=None,
                help=helptext,
            )
        elif origin in (typing.Union, types.UnionType):  # float | None
            kind = next(a for a in get_args(ann) if a is not type(None))
            group.add_argument(_flag(name), dest=name, type=kind, default=None, help=helptext)
        else:
            group.add_argument(_flag(name), dest=name, type=ann, default=None, help=helptext)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="simulate a spinal cord tumor case: MRI, tumor label, tracked US sweep, truth",
        description="Writes one synthetic case into DIR: mri.nii.gz (T2, RAS), tumor_label.nii.gz "
        "(1 solid, 2 cyst), anatomy_{preop,intraop}.nii.gz, removed_label.nii.gz (the tissue the "
        "laminectomy removed, for usnav register --removed), sweep.igs.mha (tracked freehand "
        "sweep simulated by acoustic ray marching through the operated anatomy), "
        "calibration.toml, truth.json (ReferenceToMri, cord shift, landmarks in MRI space), "
        "init_ReferenceToMri.txt (truth perturbed by a random rigid offset) and, with "
        "--preview, PNGs. Same seed and options give the same case. With --seeds, one such "
        "folder per seed (<family>-<seed>) and DIR/manifest.csv; running it again into the "
        "same DIR simulates only the missing cases. See docs/simulator.md.",
    )
    parser.add_argument("--seed", type=int, help="random seed (>= 0) of one case")
    parser.add_argument(
        "--seeds",
        metavar="LIST",
        help="many cases: seeds like 1-40, 1,3,7 or 1-3,10 (one folder each + manifest.csv)",
    )
    parser.add_argument(
        "--families",
        metavar="A,B,...",
        help="with --seeds: families assigned round-robin over the seeds (default: all)",
    )
    parser.add_argument(
        "--list-families", action="store_true", help="list the appearance families and exit"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty DIR (--seed), or simulate every case again, even those "
        "already there, and accept other options (--seeds)",
    )
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="output folder (created if missing)"
    )
    parser.add_argument(
        "--options",
        type=Path,
        metavar="FILE.toml",
        help="read options from a TOML file (flags override it)",
    )
    _add_option_flags(parser)
    parser.set_defaults(func=run)


def _options(args: argparse.Namespace) -> SimOptions:
    from usnav.config.loader import load_toml_model
    from usnav.errors import InputError
    from usnav.sim.options import make_options

    values: dict[str, Any] = {}
    if args.options is not None:
        values = load_toml_model(args.options, SimOptions).model_dump(exclude_unset=True)
    flagged = []
    for name in SimOptions.model_fields:
        value = getattr(args, name, None)
        if value is not None:
            values[name] = tuple(value) if isinstance(value, list) else value
            flagged.append(name)
    try:
        return make_options(**values)
    except InputError as exc:
        # a value given as a flag is named as the flag the user typed (``--workers``), not as
        # the options' key (``key 'workers'``); a file's keys keep their names
        problem = exc.problem
        for name in flagged:
            problem = problem.replace(f"key '{name}'", _flag(name))
        raise InputError(exc.source, problem, exc.hint) from exc.__cause__


def _list_families() -> int:
    from usnav.sim.families import FAMILIES

    width = max(len(n) for n in FAMILIES)
    for name, fam in FAMILIES.items():
        print(f"{name:<{width}}  {fam.description}")
    return 0


def _run_dataset(args: argparse.Namespace, options: SimOptions) -> int:
    from rich.console import Console

    from usnav.errors import InputError
    from usnav.sim.dataset import parse_families, parse_seeds, simulate_dataset

    seeds = parse_seeds(args.seeds)
    if args.family is not None and args.families is not None:
        raise InputError("--family", "give either --family or --families with --seeds")
    families = parse_families(args.family if args.families is None else args.families)
    err = Console(stderr=True)
    with err.status(f"simulating {len(seeds)} cases…") as status:
        result = simulate_dataset(
            seeds,
            args.out,
            options,
            families,
            workers=options.workers,
            force=args.force,
            progress=lambda name, done, total: status.update(
                f"simulating: {done}/{total} done ({name})"
            ),
        )
    print(
        f"{len(result.cases)} cases in {result.manifest.parent} "
        f"({len(result.simulated)} simulated, {len(result.skipped)} already there)"
    )
    print(f"  manifest   {result.manifest}")
    return 0


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from usnav.errors import InputError
    from usnav.sim import simulate_case

    if args.list_families:
        return _list_families()
    if args.out is None:
        raise InputError("--out", "missing", "give the output folder: --out DIR")
    if (args.seed is None) == (args.seeds is None):
        raise InputError(
            "--seed", "give exactly one of --seed N (one case) or --seeds LIST (many cases)"
        )
    options = _options(args)
    if args.seeds is not None:
        return _run_dataset(args, options)
    if args.families is not None:
        raise InputError("--families", "only with --seeds", "use --family NAME for one case")
    if args.seed < 0:  # before the output folder is made (it was left behind, empty)
        raise InputError("--seed", f"must be a non-negative integer, got {args.seed}")
    from usnav.io.outputs import check_output

    check_output(args.out, folder=True, force=args.force)
    err = Console(stderr=True)
    with err.status("simulating…") as status:
        files = simulate_case(
            args.seed,
            args.out,
            options,
            progress=lambda stage: status.update(f"simulating: {stage}"),
        )
    import json

    truth = json.loads(files.truth.read_text(encoding="utf-8"))
    tumor = truth["tumor"]
    print(
        f"case seed {files.seed}, family {truth['family']}, in {files.folder} "
        f"({files.timings_s['total']:.1f} s)"
    )
    print(
        f"  tumor      {tumor['echogenicity']}, {tumor['length_mm']:.1f} mm long"
        f"{', with a cyst' if tumor['has_cyst'] else ''}"
    )
    print(
        f"  cord shift {truth['cord_shift']['max_mm']:.2f} mm "
        f"({truth['cord_shift']['at_tumor_centroid_mm']:.2f} mm at the tumor centroid)"
    )
    from usnav.sim.families import Appearance

    default = Appearance().as_dict()
    drawn = {k: v for k, v in truth["appearance"].items() if k in default and k != "family"}
    changed = [
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in drawn.items()
        if v != default[k] and not isinstance(v, list)
    ]
    if changed:
        print("  appearance " + ", ".join(changed))
    off = truth["init_offset"]
    print(
        f"  init guess {off['translation_mm']:.1f} mm, {off['rotation_deg']:.1f} deg off "
        f"(mean error {off['tre_tumor_boundary_mean_mm']:.1f} mm on the tumor boundary)"
    )
    names = [
        files.mri,
        files.tumor_label,
        files.sweep,
        files.calibration,
        files.truth,
        files.init_reference_to_mri,
        files.anatomy_preop,
        files.anatomy_intraop,
        files.removed_label,
        *files.previews,
    ]
    print("  files      " + ", ".join(p.name for p in names if p is not None))
    return 0
