"""Accuracy-lever experiment (#16 item 3, not shipped): does a finer or larger search budget
lower the error at the tumor? Registers every simulated case under ROOT (``<family>-<seed>``
folders with truth.json) with each named variant of RegistrationOptions, one JSON line per
case and variant (via notes/dnhstudy.py's ``run``, variant ``nom``: the case's own initial
estimate), then ``--summary FILE`` prints the per-variant table.

    python notes/acclevers.py ROOT VARIANT[,VARIANT...] > rows.jsonl
    python notes/acclevers.py --summary rows.jsonl
    python notes/acclevers.py --truth ROOT [VARIANT] > truth.jsonl

``--truth`` separates the search from the similarity: with the default options it starts the
search at the true pose, and scores the true pose, the candidate from the case's own initial
estimate and the candidate from the truth with the finest level's similarity over all frames
(150) - a candidate that scores above the truth means the similarity's optimum, not the search,
is displaced.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

VARIANTS: dict[str, dict] = {
    "default": {},
    # a third level at 0.5 mm, 3x3 patches (1.5 mm)
    "level05": {
        "level_spacings_mm": [1.5, 1.0, 0.5],
        "patch_half": [1, 1, 1],
        "max_frames": [40, 40, 40],
        "max_evaluations": [160, 100, 80],
    },
    # the same with 5x5 patches (2.5 mm) at 0.5 mm
    "level05p2": {
        "level_spacings_mm": [1.5, 1.0, 0.5],
        "patch_half": [1, 1, 2],
        "max_frames": [40, 40, 40],
        "max_evaluations": [160, 100, 80],
    },
    "frames80": {"max_frames": [40, 80]},
    "patch2": {"patch_half": [1, 2]},
    "nobeam": {"beam_restarts_mm": []},
    "evals200": {"max_evaluations": [160, 200]},
    # MIND-SSC in place of LC² (notes/mind-ssc.md); keys starting with "_" set module
    # constants of usnav.registration.similarity (the search builds its similarities with them)
    "mind": {"metric": "mind_ssc", "_MIND_WEIGHTING": "uniform"},
    "mind_std": {"metric": "mind_ssc", "_MIND_WEIGHTING": "us_std"},
    "mind_d2": {"metric": "mind_ssc", "_MIND_DISTANCE_PX": 2},
    "mind_std_d2": {"metric": "mind_ssc", "_MIND_WEIGHTING": "us_std", "_MIND_DISTANCE_PX": 2},
    # 5x5 patches (2.5 mm) at the 0.5 mm level
    "mind_std_p2": {"metric": "mind_ssc", "_MIND_WEIGHTING": "us_std", "patch_half": [1, 1, 2]},
}
_MODULE_DEFAULTS: dict[str, object] = {}


def options(tag: str):
    """RegistrationOptions of variant ``tag``, with its ``_NAME`` similarity constants set (the
    others back at their defaults)."""
    from usnav.registration import similarity
    from usnav.registration.rigid import RegistrationOptions

    if not _MODULE_DEFAULTS:
        _MODULE_DEFAULTS.update(
            MIND_WEIGHTING=similarity.MIND_WEIGHTING, MIND_DISTANCE_PX=similarity.MIND_DISTANCE_PX
        )
    variant = VARIANTS[tag]
    for name, default in _MODULE_DEFAULTS.items():
        setattr(similarity, name, variant.get("_" + name, default))
    return RegistrationOptions(**{k: v for k, v in variant.items() if not k.startswith("_")})


def summary(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["tag"], []).append(r)
    print(
        "| variant | n | median cand | max cand | median published | accepted >2 mm | "
        "harm | accepted | median s | total s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for tag, rs in by.items():
        cand = np.array([r["cand"] for r in rs])
        pub = np.array([r["cand"] if r["accepted"] else r["init"] for r in rs])
        init = np.array([r["init"] for r in rs])
        acc = np.array([r["accepted"] for r in rs])
        secs = np.array([r["secs"] for r in rs])
        print(
            f"| {tag} | {len(rs)} | {np.median(cand):.2f} | {cand.max():.2f} | "
            f"{np.median(pub):.2f} | {int(np.sum(acc & (cand > 2.0)))} | "
            f"{int(np.sum(pub > init))} | {int(acc.sum())} | {np.median(secs):.2f} | "
            f"{secs.sum():.0f} |"
        )


def truth_mode(root: Path, tag: str = "default") -> None:
    from dnhstudy import emit
    from regstudy import load_family

    from usnav.evaluate.truth import load_scorer
    from usnav.registration.rigid import SweepRegistration

    opts = options(tag)
    frames = list(opts.max_frames)
    frames[-1] = 150
    full = opts.model_copy(update={"max_frames": frames})
    for folder in sorted(p for p in root.iterdir() if (p / "truth.json").exists()):
        seed = int(folder.name.rsplit("-", 1)[1])
        mri, sweep, truth, _ = load_family(folder, "base", seed)
        scorer = load_scorer(folder / "truth.json")
        problem = SweepRegistration(mri, sweep, truth.init_reference_to_mri, opts)
        nominal = problem.run(truth.init_reference_to_mri).candidate
        from_truth = problem.run(truth.reference_to_mri).candidate
        sim = SweepRegistration(mri, sweep, truth.init_reference_to_mri, full).level(-1).similarity
        emit(
            {
                "tag": tag,
                "case": folder.name,
                "cand": scorer.error_mm(nominal),
                "cand_from_truth": scorer.error_mm(from_truth),
                "sim_truth": float(sim(truth.reference_to_mri)),
                "sim_cand": float(sim(nominal)),
                "sim_cand_from_truth": float(sim(from_truth)),
            }
        )


def main() -> None:
    if sys.argv[1] == "--truth":
        from usnav.registration import warm_up

        warm_up()
        truth_mode(Path(sys.argv[2]), *sys.argv[3:4])
        return
    if sys.argv[1] == "--summary":
        summary(Path(sys.argv[2]))
        return
    from dnhstudy import emit, run

    from usnav.registration import warm_up

    warm_up()
    root = Path(sys.argv[1])
    folders = sorted(p for p in root.iterdir() if (p / "truth.json").exists())
    for tag in sys.argv[2].split(","):
        opts = options(tag)
        for folder in folders:
            seed = int(folder.name.rsplit("-", 1)[1])
            row = run(folder, seed, "nom", opts)
            emit(
                {
                    "tag": tag,
                    **{
                        k: row[k]
                        for k in (
                            "case",
                            "family",
                            "init",
                            "cand",
                            "accepted",
                            "unc",
                            "secs",
                            "reason",
                        )
                    },
                }
            )


if __name__ == "__main__":
    main()
