"""Session-26 study (not shipped): an earlier first try (``min_frames`` 30,
``min_extent_first_mm`` 10) against the defaults (45, 15), on the fixed window schedule (4
passes) with the error of the estimate in use recorded per *frame*
(``replay_fixed_schedule(on_frame=...)``: the navigation registration's before the first
accepted estimate), so the time spent on the navigation registration counts.

``python notes/session26_early_first_try.py WORK_DIR SEED:FAMILY ...``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

#: the shipped gate, and the earlier one tried
ARMS = {"45/15": {}, "30/10": {"min_frames": 30, "min_extent_first_mm": 10.0}}


def _per_frame(folder: Path, mri, cal, init, opts, truth) -> dict:
    """The fixed schedule (4 passes); the in-use error after every frame."""
    from usnav.pipeline.schedule import replay_fixed_schedule

    errors: list[float] = []
    first: list[int] = []

    def record(worker) -> None:
        in_use = worker.latest_accepted()
        errors.append(truth.mtre(in_use.reference_to_mri))
        if not first and in_use.source == "image":
            first.append(len(errors) - 1)

    replay_fixed_schedule(
        folder / "sweep.igs.mha", mri, cal, init, passes=4, options=opts, on_frame=record
    )
    frames = len(errors) // 4
    return {
        "mean": float(np.mean(errors)),
        "first_pass": float(np.mean(errors[:frames])),
        "final": errors[-1],
        "first_accepted_frame": first[0] if first else None,
        "max_after_first": float(max(errors[first[0] :])) if first else None,
    }


def main(work_dir: str, *cases: str) -> None:
    from usnav.bench.bench_safety import _simulate
    from usnav.config.calibration import load_calibration
    from usnav.io.volume import load_volume
    from usnav.registration.files import read_initial
    from usnav.registration.worker import WorkerOptions
    from usnav.sim import load_truth

    for case in cases:
        seed, family = case.split(":")
        folder, _ = _simulate(int(seed), family, Path(work_dir) / case.replace(":", "_"), 120)
        truth = load_truth(folder)
        mri = load_volume(folder / "mri.nii.gz")
        cal = load_calibration(folder / "calibration.toml").image_to_probe
        init = read_initial(folder / "init_ReferenceToMri.txt")
        row = {"case": case, "nav": truth.mtre(init)}
        for arm, extra in ARMS.items():
            row[arm] = _per_frame(folder, mri, cal, init, WorkerOptions(**extra), truth)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
