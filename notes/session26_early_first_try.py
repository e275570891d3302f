"""Session-26 study (not shipped): an earlier first try (``min_frames`` 30,
``min_extent_first_mm`` 10) against the defaults (45, 15). The fixed window schedule (4
passes) is replicated here with the error of the estimate in use recorded per *frame* (the
navigation registration's before the first accepted estimate), so the time spent on the
navigation registration counts.

``python notes/session26_early_first_try.py WORK_DIR SEED:FAMILY ...``
"""
import json, sys
from pathlib import Path
import numpy as np
from usnav.bench.bench_safety import _simulate
from usnav.config.calibration import load_calibration
from usnav.io.volume import load_volume
from usnav.registration.files import read_initial
from usnav.registration.sweep import load_sweep
from usnav.registration.worker import RegistrationWorker, WorkerOptions
from usnav.sim import load_truth

ARMS = {"45/15": {}, "30/10": {"min_frames": 30, "min_extent_first_mm": 10.0}}
for case in sys.argv[2:]:
    seed, family = case.split(":")
    folder, _ = _simulate(int(seed), family, Path(sys.argv[1]) / case.replace(":", "_"), 120)
    truth = load_truth(folder)
    mri = load_volume(folder / "mri.nii.gz")
    cal = load_calibration(folder / "calibration.toml").image_to_probe
    init = read_initial(folder / "init_ReferenceToMri.txt")
    sweep = load_sweep(folder / "sweep.igs.mha", cal)
    row = {"case": case, "nav": truth.mtre(init)}
    for arm, extra in ARMS.items():
        opts = WorkerOptions(**extra)
        worker = RegistrationWorker(mri, cal, init, opts)
        window, new, errs, first_acc = [], 0, [], None
        duration = float(np.ptp(sweep.timestamps)) + 1.0
        for p in range(4):
            for i, (image, pose, t) in enumerate(zip(sweep.images, sweep.image_to_reference, sweep.timestamps)):
                window.append((image, pose, p * duration + float(t)))
                window = window[-opts.window_frames:]
                new += 1
                if new >= opts.min_new_frames and len(window) >= opts.min_frames:
                    new = 0
                    worker.update(window)
                in_use = worker.latest_accepted()
                errs.append(truth.mtre(in_use.reference_to_mri))
                if first_acc is None and in_use.source == "image":
                    first_acc = p * len(sweep) + i
        row[arm] = {"mean": float(np.mean(errs)), "first_pass": float(np.mean(errs[: len(sweep)])),
                    "final": errs[-1], "first_accepted_frame": first_acc, "max_after_first": float(max(errs[first_acc:])) if first_acc is not None else None}
    print(json.dumps(row), flush=True)
