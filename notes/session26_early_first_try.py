"""Session-26 study (not shipped): an earlier first try (``min_frames`` 30,
``min_extent_first_mm`` 10) against the defaults (45, 15). The fixed window schedule (4
passes) is replicated here with the error of the estimate in use recorded per *frame* (the
navigation registration's before the first accepted estimate), so the time spent on the
navigation registration counts.

``python notes/session26_early_first_try.py WORK_DIR SEED:FAMILY ...``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

#: the shipped gate, and the earlier one tried
ARMS = {"45/15": {}, "30/10": {"min_frames": 30, "min_extent_first_mm": 10.0}}


def _per_frame(sweep, worker, opts, truth) -> dict:
    """Run the fixed schedule (4 passes); the in-use error after every frame."""
    window, new, errors, first = [], 0, [], None
    duration = float(np.ptp(sweep.timestamps)) + 1.0
    frames = zip(sweep.images, sweep.image_to_reference, sweep.timestamps, strict=True)
    frames = list(frames)
    for p in range(4):
        for i, (image, pose, t) in enumerate(frames):
            window.append((image, pose, p * duration + float(t)))
            window = window[-opts.window_frames :]
            new += 1
            if new >= opts.min_new_frames and len(window) >= opts.min_frames:
                new = 0
                worker.update(window)
            in_use = worker.latest_accepted()
            errors.append(truth.mtre(in_use.reference_to_mri))
            if first is None and in_use.source == "image":
                first = p * len(frames) + i
    return {
        "mean": float(np.mean(errors)),
        "first_pass": float(np.mean(errors[: len(frames)])),
        "final": errors[-1],
        "first_accepted_frame": first,
        "max_after_first": None if first is None else float(max(errors[first:])),
    }


def main(work_dir: str, *cases: str) -> None:
    from usnav.bench.bench_safety import _simulate
    from usnav.config.calibration import load_calibration
    from usnav.io.volume import load_volume
    from usnav.registration.files import read_initial
    from usnav.registration.sweep import load_sweep
    from usnav.registration.worker import RegistrationWorker, WorkerOptions
    from usnav.sim import load_truth

    for case in cases:
        seed, family = case.split(":")
        folder, _ = _simulate(int(seed), family, Path(work_dir) / case.replace(":", "_"), 120)
        truth = load_truth(folder)
        mri = load_volume(folder / "mri.nii.gz")
        cal = load_calibration(folder / "calibration.toml").image_to_probe
        init = read_initial(folder / "init_ReferenceToMri.txt")
        sweep = load_sweep(folder / "sweep.igs.mha", cal)
        row = {"case": case, "nav": truth.mtre(init)}
        for arm, extra in ARMS.items():
            opts = WorkerOptions(**extra)
            worker = RegistrationWorker(mri, cal, init, opts)
            row[arm] = _per_frame(sweep, worker, opts, truth)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
