"""Deterministic (offline) bump: the harness's motion D from pass 3 on, windows of 150 frames
every 15 frames (update() in this thread, no timing). Per update: the estimate in use's error at
the tumor centroid against the truth in force (mm). Prints the first update after the bump whose
estimate in use is < 2 mm off, in frames after the bump (15 frames = 1 s of live scanning).

Usage: ``python notes/session37_recover_offline.py CASE_DIR bump|back|none PASSES [--recover]
[-v]`` (``--recover``: ``WorkerOptions.recover_when_contradicted``; session 37 ran it as the
default of a copy of the tree, which is the same)."""

import json
import sys

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from session37_bump import _case_options, motion

from usnav.config.calibration import load_calibration
from usnav.io.volume import load_volume
from usnav.registration.sweep import load_sweep
from usnav.registration.worker import RegistrationWorker, WorkerOptions
from usnav.sim import load_truth

case, scenario, passes = sys.argv[1], sys.argv[2], int(sys.argv[3])
cal = load_calibration(f"{case}/calibration.toml").image_to_probe
sweep = load_sweep(f"{case}/sweep.igs.mha", cal)
mri = load_volume(f"{case}/mri.nii.gz")
label = load_volume(f"{case}/tumor_label.nii.gz")
truth = load_truth(case)
seed, _ = _case_options(__import__("pathlib").Path(case))
c = np.asarray(truth.landmarks["tumor_centroid"], float).reshape(3)
move, desc = motion(scenario, seed, c)
T = truth.reference_to_mri
w = RegistrationWorker(
    mri,
    cal,
    truth.init_reference_to_mri,
    WorkerOptions(recover_when_contradicted="--recover" in sys.argv),
    tumor_label=label,
)
n = len(sweep)
period = n / 15.0
frames = []
k = 0
bump_k = 3 * n
rows = []


def off(m, true):
    ch = m @ np.linalg.inv(true)
    return float(np.linalg.norm(ch[:3, :3] @ c + ch[:3, 3] - c))


for p in range(passes):
    for i in range(n) if p % 2 == 0 else range(n - 1, -1, -1):
        s = (k - bump_k) / 15.0  # scanning seconds since the bump (recording clock x 2 at rate .5)
        d = move(s / 2.0)  # the harness's motion is in recording seconds
        pose = np.linalg.inv(T) @ np.linalg.inv(d) @ T @ sweep.image_to_reference[i]
        frames.append((sweep.images[i], pose, k / 15.0))
        frames = frames[-150:]
        k += 1
        if len(frames) >= 45 and k % 15 == 0:
            e = w.update(list(frames))
            a = w.latest_accepted()
            rows.append(
                (
                    k - bump_k,
                    off(a.reference_to_mri, d @ T),
                    bool(a.contradicted),
                    e is not None and e.accepted,
                    "" if e is None else e.reason[:100],
                )
            )
after = [r for r in rows if r[0] > 0]
fixed = next((r[0] for r in after if r[1] < 2.0), None)
contra = next((r[0] for r in after if r[2]), None)
print(
    json.dumps(
        {
            "case": case.split("/")[-1],
            "opt": w.options.model_dump().get("recover_when_contradicted"),
            "desc": desc,
            "err_at_bump": round(
                rows[[r[0] for r in rows].index(max(r[0] for r in rows if r[0] <= 0))][1], 2
            ),
            "first_contradicted_frames": contra,
            "first_under_2mm_frames": fixed,
            "final_err": round(rows[-1][1], 2),
            "updates_over_2mm_after": sum(r[1] > 2 for r in after),
            "updates_after": len(after),
            "adopted_after": sum(r[3] for r in after),
        }
    )
)
if "-v" in sys.argv:
    for r in after:
        print(r)
