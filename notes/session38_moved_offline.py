"""Session 38: the pose that follows a moved patient reference, judged by the worker, offline.

Like ``session37_recover_offline.py`` (the bump harness's motion D from pass 3 on, windows of
150 frames every 15 frames through ``RegistrationWorker.update`` in this thread), but at the
first frame after the move the worker is told what the tracker saw:
``propose_moved_reference(inv(ReferenceToTracker before) · ReferenceToTracker after)``,
computed from the frames' own ``ImageToReference`` before and after the move (the same image
index: ``ImageToReference_before · inv(ImageToReference_after)``), as the pipeline does.

Scenarios: ``bump`` (the reference moved, the anatomy stayed); ``camera`` (the reference and
the probe moved together — a moved camera or a patient moved with the reference: the frames
are unchanged, and the proposal is the bump's change anyway: it must never be adopted);
``none`` (no move, no proposal).

Usage: ``python notes/session38_moved_offline.py CASE_DIR bump|camera|none PASSES [--test]``
(``--test``: ``WorkerOptions.test_moved_reference``). Prints one JSON line; ``-v`` the
per-update rows.
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
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
seed, _ = _case_options(Path(case))
c = np.asarray(truth.landmarks["tumor_centroid"], float).reshape(3)
move, desc = motion("bump" if scenario == "camera" else scenario, seed, c)
T = truth.reference_to_mri
w = RegistrationWorker(
    mri,
    cal,
    truth.init_reference_to_mri,
    WorkerOptions(test_moved_reference="--test" in sys.argv),
    tumor_label=label,
)
n = len(sweep)
frames: list = []
k = 0
bump_k = 3 * n
rows = []
proposed = None


def off(m, true):
    ch = m @ np.linalg.inv(true)
    return float(np.linalg.norm(ch[:3, :3] @ c + ch[:3, 3] - c))


for p in range(passes):
    for i in range(n) if p % 2 == 0 else range(n - 1, -1, -1):
        s = (k - bump_k) / 15.0
        d = move(s / 2.0)
        moved = np.linalg.inv(T) @ np.linalg.inv(d) @ T @ sweep.image_to_reference[i]
        pose = sweep.image_to_reference[i] if scenario == "camera" else moved
        true = T if scenario == "camera" else d @ T
        if k == bump_k and scenario in ("bump", "camera"):
            change = sweep.image_to_reference[i] @ np.linalg.inv(moved)  # what the tracker saw
            proposed = w.propose_moved_reference(change, k / 15.0, 0.0)
        frames.append((sweep.images[i], pose, k / 15.0))
        frames = frames[-150:]
        k += 1
        if len(frames) >= 45 and k % 15 == 0:
            e = w.update(list(frames))
            a = w.latest_accepted()
            rows.append(
                (
                    k - bump_k,
                    off(a.reference_to_mri, true),
                    e is not None and e.accepted,
                    "" if e is None else e.reason[:120],
                )
            )
after = [r for r in rows if r[0] > 0]
fixed = next((r[0] for r in after if r[1] < 2.0), None)
print(
    json.dumps(
        {
            "case": case.rstrip("/").split("/")[-1],
            "scenario": scenario,
            "test": w.options.test_moved_reference,
            "desc": desc if scenario != "none" else "no motion",
            "proposed": proposed,
            "moved_adopted": w.stats.moved_adopted,
            "moved_dropped": w.stats.moved_dropped,
            "err_at_bump": round(max((r for r in rows if r[0] <= 0), key=lambda r: r[0])[1], 2),
            "first_under_2mm_frames": fixed,
            "final_err": round(rows[-1][1], 2),
            "updates_over_2mm_after": sum(r[1] > 2 for r in after),
            "per_update_after": [round(r[1], 2) for r in after],
        }
    )
)
if "-v" in sys.argv:
    for r in rows:
        print(r)
