"""RESECT Case 24 as `usnav bench --only RESECT --full` runs it (same sweep, the same 10
perturbations from seed 24, the unperturbed alignment; same grid and MRI re-gridded), printing
one JSON line per run with the verdict's statistics, so that the confirmation rule's effect can
be read off (a run it rejected is, with the rule off, accepted with the same candidate: the rule
is the verdict's last test). Report only (#16): never tune on it.

    python notes/dnhresect.py DATA_DIR [same|regrid|both] [METRIC[,METRIC]]

METRIC: ``RegistrationOptions.metric`` values, each run with otherwise default options
(default: the default options only); notes/mind-ssc.md compares lc2 and mind_ssc.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from dnhstudy import emit

    from usnav.registration import warm_up
    from usnav.registration.cases import (
        load_resect_case24,
        random_perturbation,
        regrid_volume,
        slice_sweep,
    )
    from usnav.registration.rigid import RegistrationOptions, SweepRegistration

    warm_up()
    data = Path(sys.argv[1])
    which = sys.argv[2] if len(sys.argv) > 2 else "both"
    metrics = sys.argv[3].split(",") if len(sys.argv) > 3 else [None]
    case = load_resect_case24(data)
    sweep = slice_sweep(case.us, n_frames=150)
    rng = np.random.default_rng(24)
    centre = case.landmarks_reference.mean(axis=0)
    perturbations = [random_perturbation(rng, centre) for _ in range(10)]
    grids = []
    if which in ("same", "both"):
        grids.append(("same grid", case.mri))
    if which in ("regrid", "both"):
        grids.append(("MRI re-gridded", regrid_volume(case.mri)))
    for label, mri in grids:
        for metric in metrics:
            opts = RegistrationOptions(**({"metric": metric} if metric else {}))
            problem = SweepRegistration(mri, sweep, np.eye(4), opts)
            run_all(problem, label, opts.metric, case, perturbations, emit)


def run_all(problem, label, metric, case, perturbations, emit) -> None:
    """The unperturbed alignment and every perturbation, one JSON line each."""
    for k, p in enumerate([np.eye(4), *perturbations]):
        res = problem.run(p)
        row = {
            "grid": label,
            "metric": metric,
            "run": "unperturbed" if k == 0 else f"p{k}",
            "init": case.mtre(p),
            "cand": case.mtre(res.candidate),
            "final": case.mtre(res.reference_to_mri),
            "accepted": bool(res.accepted),
            "confident": bool(res.confident),
            "unc": res.uncertainty_mm,
            "corr": res.correction_mm,
            "secs": res.seconds,
            "reason": res.reason[:200],
            **res.diagnostics,
        }
        emit(row)


if __name__ == "__main__":
    main()
