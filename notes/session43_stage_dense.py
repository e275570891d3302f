"""Session 43 diagnostic (tuning set A only): is the tumor stage's undershoot the optimiser's
or the similarity's?  The stage's cost on a dense 0.1 mm grid (radius 3 mm) against the
shipped grid-start + Nelder-Mead; each move's component along the needed in-plane move.

Usage: python notes/session43_stage_dense.py CASES_DIR RESULTS_DIR (notes/session-43.md §2)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from session42_tumor_stage import needed_translation

import usnav.registration.tumor as T
from usnav.config.calibration import load_calibration
from usnav.evaluate.truth import load_scorer
from usnav.io.volume import load_volume
from usnav.registration.options import RegistrationOptions
from usnav.registration.search import SweepRegistration
from usnav.registration.sweep import load_sweep

_grid = T._grid_start
STATE: dict = {}


def dense(cost, k, step_mm, radius_mm):
    if STATE.get("dense"):
        p = _grid(cost, k, 0.1, radius_mm)
        STATE["grid"] = p
        return p
    return _grid(cost, k, step_mm, radius_mm)


T._grid_start = dense


def main(cases: str, results: str) -> None:
    rows = []
    for rp in sorted(Path(results, "cases").glob("*/result.json")):
        res = json.loads(rp.read_text())
        if not res.get("accepted"):
            continue
        cd = Path(cases) / rp.parent.name
        scorer = load_scorer(cd / "truth.json")
        sim = scorer.sim
        bony = np.asarray(res["BonyReferenceToMri"], float)
        t_star = needed_translation(sim, bony)
        label = load_volume(cd / "tumor_label.nii.gz")
        dist = T.tumor_distance_map(label)
        ax, el = T.tumor_long_axis(dist)
        opts = RegistrationOptions()
        proj = np.eye(3) - np.outer(ax, ax) if el >= opts.tumor_min_elongation else np.eye(3)
        ts = proj @ t_star
        ns = max(np.linalg.norm(ts), 1e-9)
        cal = load_calibration(cd / "calibration.toml", warn=False)
        problem = SweepRegistration(
            load_volume(cd / "mri.nii.gz"), load_sweep(cd / "sweep.igs.mha", cal), bony, opts
        )
        out = {"case": cd.name, "need": ns}
        for name, flag in (("ship", False), ("dense", True)):
            STATE["dense"] = flag
            st = T.refine_at_tumor(problem, dist, bony, opts)
            t = st.translation_mm
            out[name + "_along"] = float(t @ ts / ns)
            out[name + "_now"] = scorer.error_now_mm(st.reference_to_mri)
        g = np.asarray(STATE["grid"])
        basis = T.TumorContext(dist, problem.level(-1).mri).translation_basis(opts)
        tg = basis @ g
        out["grid_along"] = float(tg @ ts / ns)
        out["grid_now"] = scorer.error_now_mm(T._translated(bony, tg))
        rows.append(out)
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items()}, flush=True)
    need = np.array([r["need"] for r in rows])
    big = need > 0.5
    for name in ("ship", "grid", "dense"):
        ratio = np.array([r[name + "_along"] for r in rows]) / need
        nowv = np.array([r[name + "_now"] for r in rows])
        print(
            f"{name}: ratio along needed (need > 0.5 mm, n={big.sum()}) median "
            f"{np.median(ratio[big]):.2f}; now median {np.median(nowv):.3f} p90 "
            f"{np.percentile(nowv, 90):.3f} max {nowv.max():.3f}"
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
