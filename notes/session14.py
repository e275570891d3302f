"""Session-14 study scripts (not shipped; tuning cases only unless a root says otherwise).

python notes/session14.py verdict OUT.jsonl ROOT [ROOT ...] [key=json ...]
    the shipped registration on every ``<family>-<seed>`` case under the roots, one JSON line
    per case: accepted, candidate error, initial error, reason, the verdict's diagnostics
    (margin over chance, ambiguity margins, ...). Used to re-scale the chance margin.
python notes/session14.py stage OUT.jsonl GLOBALS.jsonl ROOT [ROOT ...]
    the tumor stage with LC² alone and with MIND-SSC (ROI 3 mm, 3×3), and their mean, over
    each accepted global estimate (computed once and cached in GLOBALS.jsonl): the error
    now of each, for docs/registration.md's "Two similarities at the tumor".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from regstudy import load_family

from usnav.io.volume import load_volume
from usnav.registration import warm_up
from usnav.registration.rigid import RegistrationOptions, SweepRegistration
from usnav.registration.tumor import refine_at_tumor, tumor_distance_map

PAIR = {"tumor_metric": "mind_ssc", "tumor_roi_mm": 3.0, "tumor_patch_half": 1}


def cases(roots: list[str]) -> list[Path]:
    return sorted(p for root in roots for p in Path(root).iterdir() if (p / "truth.json").exists())


def verdict(out: Path, roots: list[str], over: dict) -> None:
    opts = RegistrationOptions(**over)
    with out.open("a") as fh:
        for folder in cases(roots):
            seed = int(folder.name.rsplit("-", 1)[1])
            mri, sweep, truth, _ = load_family(folder, "base", seed)
            res = SweepRegistration(mri, sweep, truth.init_reference_to_mri, opts).run(
                truth.init_reference_to_mri
            )
            row = {
                "case": folder.name,
                "accepted": bool(res.accepted),
                "cand": truth.mtre(res.candidate),
                "init": truth.mtre(truth.init_reference_to_mri),
                "reason": res.reason,
                "diag": {k: float(v) for k, v in (res.diagnostics or {}).items()},
            }
            fh.write(json.dumps(row) + "\n")
            fh.flush()


def stage(out: Path, cache: Path, roots: list[str]) -> None:
    known = {}
    if cache.exists():
        known = {json.loads(x)["case"]: json.loads(x) for x in cache.read_text().splitlines()}
    base = RegistrationOptions()

    def moved(t: np.ndarray, g: np.ndarray) -> np.ndarray:
        m = np.eye(4)
        m[:3, 3] = t
        return m @ g

    with out.open("a") as fh:
        for folder in cases(roots):
            seed = int(folder.name.rsplit("-", 1)[1])
            mri, sweep, truth, _ = load_family(folder, "base", seed)
            problem = SweepRegistration(mri, sweep, truth.init_reference_to_mri, base)
            if folder.name not in known:
                res = problem.run(truth.init_reference_to_mri)
                known[folder.name] = {
                    "case": folder.name,
                    "accepted": bool(res.accepted),
                    "g": res.reference_to_mri.tolist(),
                }
                with cache.open("a") as c:
                    c.write(json.dumps(known[folder.name]) + "\n")
            if not known[folder.name]["accepted"]:
                continue
            g = np.array(known[folder.name]["g"])
            dist = tumor_distance_map(load_volume(folder / "tumor_label.nii.gz"))
            ts = {}
            for name, over in (("lc2", {}), ("mind", PAIR)):
                st = refine_at_tumor(problem, dist, g, base.model_copy(update=over))
                ts[name] = np.asarray(st.translation_mm) if st.applied else np.zeros(3)
            row = {
                "case": folder.name,
                "bony": truth.mtre(g),
                "bony_now": truth.mtre_now(g),
                "lc2_now": truth.mtre_now(moved(ts["lc2"], g)),
                "mind_now": truth.mtre_now(moved(ts["mind"], g)),
                "mean_now": truth.mtre_now(moved(0.5 * (ts["lc2"] + ts["mind"]), g)),
                "disagreement_mm": float(np.linalg.norm(ts["lc2"] - ts["mind"])),
            }
            fh.write(json.dumps(row) + "\n")
            fh.flush()


def main() -> None:
    warm_up()
    what, out = sys.argv[1], Path(sys.argv[2])
    if what == "verdict":
        roots = [a for a in sys.argv[3:] if "=" not in a]
        over = {k: json.loads(v) for k, v in (a.split("=", 1) for a in sys.argv[3:] if "=" in a)}
        verdict(out, roots, over)
    elif what == "stage":
        stage(out, Path(sys.argv[3]), sys.argv[4:])
    else:
        raise SystemExit(f"unknown study {what!r}: verdict or stage")


if __name__ == "__main__":
    main()
