"""Session-26 A/B (not shipped): the re-judgment of a first estimate from a short window, when
the full window's cold try is rejected only for a tie at the first estimate's pose — keep the
first estimate (``new``, shipped) or withdraw it (``old``, session 25).

Deterministic: ``usnav.pipeline.schedule.replay_fixed_schedule`` (4 passes of a 120-frame
sweep), both arms on the same case in one process. Per case: the error of the estimate in use
after each update (mean over the updates: what margins are drawn with), the final error, and
the re-judgments (kept / withdrawn).

``python notes/session26_rejudge_ab.py WORK_DIR SEED:FAMILY ...``; ``indep:FAMILY:SEED`` is a case
of the independent simulator (notes/indep-sim, generated as notes/session26_indep_live.py
does, scored against its own truth).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def load_case(work_dir: str, case: str) -> tuple:
    """``SEED:FAMILY`` (usnav's simulator) or ``indep:FAMILY:SEED`` (the independent one),
    generated under work_dir: (folder, truth with ``mtre(T)``, MRI, ImageToProbe, initial)."""
    from usnav.bench.bench_safety import _simulate
    from usnav.config.calibration import load_calibration
    from usnav.io.volume import load_volume
    from usnav.registration.files import read_initial
    from usnav.sim import load_truth

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from session26_indep_live import _generate, _IndepTruth

    if case.startswith("indep:"):
        _, family, seed = case.split(":")
        folder = Path(work_dir) / f"{family}_{seed}"
        _generate(folder, family, int(seed))
        truth = _IndepTruth(folder)
        cal_file, init_file = "cal.txt", "init.txt"
    else:
        seed, family = case.split(":")
        folder, _ = _simulate(int(seed), family, Path(work_dir) / case.replace(":", "_"), 120)
        truth = load_truth(folder)
        cal_file, init_file = "calibration.toml", "init_ReferenceToMri.txt"
    mri = load_volume(folder / "mri.nii.gz")
    cal = load_calibration(folder / cal_file).image_to_probe
    init = read_initial(folder / init_file)
    return folder, truth, mri, cal, init


def main(work_dir: str, *cases: str) -> None:
    from usnav.pipeline.schedule import replay_fixed_schedule
    from usnav.registration import worker as W

    new_rule = W.RegistrationWorker._rejudged

    def old_rule(self, problem, result, first, frames):
        keep, text = new_rule(self, problem, result, first, frames)
        return False, text if not keep else "rejected: withdrawn (session 25's rule)"

    original = W.RegistrationWorker._update
    trace: list = []

    def traced(self, window, t0, stacked):
        estimate = original(self, window, t0, stacked)
        if estimate is not None:
            trace.append((self.latest_accepted().reference_to_mri, estimate.reason))
        return estimate

    W.RegistrationWorker._update = traced
    for case in cases:
        folder, truth, mri, cal, init = load_case(work_dir, case)
        row = {"case": case, "init_mm": truth.mtre(init)}
        for arm, rule in (("old", old_rule), ("new", new_rule)):
            W.RegistrationWorker._rejudged = rule
            trace.clear()
            worker = replay_fixed_schedule(folder / "sweep.igs.mha", mri, cal, init, passes=4)
            errors = [truth.mtre(m) for m, _ in trace]
            row[arm] = {
                "final_mm": truth.mtre(worker.latest_accepted().reference_to_mri),
                "in_use_mean_mm": float(np.mean(errors)) if errors else None,
                "updates": len(errors),
                "kept": sum("estimate kept" in r for _, r in trace),
                "withdrawn": sum("withdrawn" in r for _, r in trace),
            }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
