"""Session 39: the reference-motion rule on a breathing patient, offline and deterministic.

One worker run per case and scenario (the session-37 offline harness: windows of 150 frames,
an update every 15 frames in this thread, 15 frames per scanning second); two monitors watch
the same frames: the session-38 rule (``breath_average_s=None``: the largest displacement
from any pose of the checked frames) and the breath-aware rule (the default since session 39).
The monitor does not steer the worker, so both see the same registration in use.

Scenarios: the session-37 harness's ``none``, ``bump``, ``drift``, ``back`` (the reference moves
against the anatomy from pass 3 on), and ``breath-A-P`` (the whole patient, reference and
anatomy together, moves against the tracker by A mm peak to peak with period P s of scanning,
along the patient's anterior axis and a third of it along the spine, from the first frame:
the registration stays right), and ``bump+breath-A-P``.

Per frame with a checked registration: the registration in use's error at the tumor centroid
against the truth in force (mm); "unsafe" = over 2 mm and not doubted, "doubted" = doubted.

Usage: ``python notes/session39_breathing.py CASE_DIR SCENARIO PASSES`` -> one JSON line.
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from session37_bump import _case_options, motion

from usnav.bench.bench_bump import breathing_motion
from usnav.config.calibration import load_calibration
from usnav.io.sequence_reader import read_sequence
from usnav.io.volume import load_volume
from usnav.pipeline.reference_motion import ReferenceMotionMonitor
from usnav.registration.sweep import load_sweep
from usnav.registration.worker import RegistrationWorker, WorkerOptions
from usnav.sim import load_truth

HZ = 15.0


def main() -> None:
    case, scenario, passes = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cal = load_calibration(f"{case}/calibration.toml").image_to_probe
    sweep = load_sweep(f"{case}/sweep.igs.mha", cal)
    seq = read_sequence(f"{case}/sweep.igs.mha")
    r2t = [
        np.asarray(seq.frame(i).transforms["ReferenceToTracker"].matrix) for i in range(len(seq))
    ]
    shape = seq.frame(0).image.shape[:2]
    seq.close()
    mri = load_volume(f"{case}/mri.nii.gz")
    label = load_volume(f"{case}/tumor_label.nii.gz")
    truth = load_truth(case)
    seed, _ = _case_options(Path(case))
    c = np.asarray(truth.landmarks["tumor_centroid"], float).reshape(3)
    T = truth.reference_to_mri
    move_kind = scenario.split("+")[0] if "+" in scenario else scenario
    breath_kind = next((p for p in scenario.split("+") if p.startswith("breath")), None)
    move, desc = motion("none" if move_kind.startswith("breath") else move_kind, seed, c)
    if breath_kind:
        _, a, per = breath_kind.split("-")
        breathe = breathing_motion(float(a), float(per), r2t[0], T)
        desc += f", breathing {a} mm p-p every {per} s"
    else:
        breathe = lambda t: np.eye(4)  # noqa: E731
    w = RegistrationWorker(
        mri, cal, truth.init_reference_to_mri, WorkerOptions(), tumor_label=label
    )
    monitors = {
        "old": ReferenceMotionMonitor(2.0, 150, None),
        "new": ReferenceMotionMonitor(2.0, 150),
    }
    n = len(sweep)
    bump_k = 3 * n
    frames: list = []
    counts = {k: {"checked": 0, "doubted": 0, "unsafe": 0, "over2": 0} for k in monitors}
    after = {k: {"checked": 0, "doubted": 0, "unsafe": 0, "first_doubt": None} for k in monitors}
    motion_max = {k: 0.0 for k in monitors}
    k = 0

    def off(m: np.ndarray, true: np.ndarray) -> float:
        ch = m @ np.linalg.inv(true)
        return float(np.linalg.norm(ch[:3, :3] @ c + ch[:3, 3] - c))

    for p in range(passes):
        for i in range(n) if p % 2 == 0 else range(n - 1, -1, -1):
            s = (k - bump_k) / HZ
            d = move(s / 2.0)  # the harness's motion runs on the recording clock (rate 0.5)
            t = k / HZ
            pose = np.linalg.inv(T) @ np.linalg.inv(d) @ T @ sweep.image_to_reference[i]
            reference_to_tracker = breathe(t) @ r2t[i] @ np.linalg.solve(T, d @ T)
            frames.append((sweep.images[i], pose, t))
            frames = frames[-150:]
            k += 1
            if len(frames) >= 45 and k % 15 == 0:
                w.update(list(frames))
            est = w.latest_accepted()
            key = (est.sequence, est.t_computed) if est.checked else None
            err = off(est.reference_to_mri, d @ T)
            for name, mon in monitors.items():
                why = mon.observe(
                    reference_to_tracker,
                    pose,
                    shape,
                    checked_key=key,
                    t_device=t,
                    checked_since_t=est.checked_since_t,
                )
                if key is None:
                    continue
                motion_max[name] = max(motion_max[name], mon.motion_mm or 0.0)
                bucket = [counts[name]] + ([after[name]] if k > bump_k else [])
                for b in bucket:
                    b["checked"] += 1
                    b["doubted"] += bool(why)
                    b["unsafe"] += (not why) and err > 2.0
                if "over2" in counts[name]:
                    counts[name]["over2"] += err > 2.0
                if why and k > bump_k and after[name]["first_doubt"] is None:
                    after[name]["first_doubt"] = k - bump_k
    print(
        json.dumps(
            {
                "case": Path(case).name,
                "scenario": scenario,
                "desc": desc,
                "all": counts,
                "after": after,
                "motion_max": {k2: round(v, 2) for k2, v in motion_max.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
