"""Session 40: per-frame trace of the reference-motion rule under a site budget (offline).

The session-37/39 harness (windows of 150 frames, an update every 15 frames, 15 frames per
scanning second), with the registration worker under the bench's site budget
(similarity_bias 0.5 mm, calibration 0.5 mm / 0.5 deg) so that bounds are as a site would see
them. Scenarios: the session-37 harness's (none, bump, drift, back), ``breath-A-P`` and
``small-MM-DEG`` (a bump under the 2 mm motion limit, drawn like the bench's bump, at pass 3).
One JSON line per frame: the error at the tumor of the registration in use (``err``), its
bound (``unc``), whether it is contradicted, the session-38 (``old``) and session-39 (``new``)
motion and whether each doubts the frame, and the session-39 rule's terms (``step``,
``inside``, ``rawmax`` = the session-38 measure, ``swing``). notes/session-40.md says what was
learned with it.

Usage: ``python notes/session40_motion_trace.py CASE_DIR SCENARIO PASSES OUT.jsonl``
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
from usnav.pipeline import reference_motion as rm
from usnav.registration.sweep import load_sweep
from usnav.registration.worker import RegistrationWorker, WorkerOptions
from usnav.sim import load_truth

HZ = 15.0


class Traced(rm.ReferenceMotionMonitor):
    def observe(self, r2t, i2r, shape, *, checked_key, t_device=0.0, checked_since_t=None):
        why = super().observe(
            r2t,
            i2r,
            shape,
            checked_key=checked_key,
            t_device=t_device,
            checked_since_t=checked_since_t,
        )
        self.terms = None
        if r2t is not None and checked_key is not None and self.breath_average_s is not None:
            corners = rm.image_corners_mm(i2r, shape)
            moved = rm.displacements_mm(self._step_poses, r2t, corners)
            self.terms = dict(
                step=float(moved.min()),
                inside=self._inside_step_mm,
                rawmax=float(moved[-len(self._anchor) :].max()),
                swing=self._swing_mm,
            )
        return why


case, scenario, passes, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
cal = load_calibration(f"{case}/calibration.toml").image_to_probe
sweep = load_sweep(f"{case}/sweep.igs.mha", cal)
seq = read_sequence(f"{case}/sweep.igs.mha")
r2t = [np.asarray(seq.frame(i).transforms["ReferenceToTracker"].matrix) for i in range(len(seq))]
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
if move_kind.startswith("small"):  # small-MM-DEG: a bump under the motion limit
    from usnav.bench.bench_bump import draw_bump, rigid_about

    _, mm_, deg_ = move_kind.split("-")
    b = draw_bump(seed, c)
    M = rigid_about(c, b.axis, b.direction, float(mm_), float(deg_))
    move, desc = (lambda s_: M if s_ >= 0 else np.eye(4)), f"small bump {mm_} mm {deg_} deg"
else:
    move, desc = motion("none" if move_kind.startswith("breath") else move_kind, seed, c)
if breath_kind:
    _, a, per = breath_kind.split("-")
    breathe = breathing_motion(float(a), float(per), r2t[0], T)
else:
    breathe = lambda t: np.eye(4)  # noqa: E731
budget = dict(similarity_bias_mm=0.5, calibration_error_mm=0.5, calibration_error_deg=0.5)
wo = WorkerOptions()
wo = wo.model_copy(
    update={"full": wo.full.model_copy(update=budget), "warm": wo.warm.model_copy(update=budget)}
)
w = RegistrationWorker(mri, cal, truth.init_reference_to_mri, wo, tumor_label=label)
mons = {"old": Traced(2.0, 150, None), "new": Traced(2.0, 150)}
n = len(sweep)
bump_k = 3 * n
frames = []
k = 0
rows = []


def off(m, true):
    ch = m @ np.linalg.inv(true)
    return float(np.linalg.norm(ch[:3, :3] @ c + ch[:3, 3] - c))


for p in range(passes):
    for i in range(n) if p % 2 == 0 else range(n - 1, -1, -1):
        s = (k - bump_k) / HZ
        d = move(s / 2.0)
        t = k / HZ
        pose = np.linalg.inv(T) @ np.linalg.inv(d) @ T @ sweep.image_to_reference[i]
        ref = breathe(t) @ r2t[i] @ np.linalg.solve(T, d @ T)
        frames.append((sweep.images[i], pose, t))
        frames = frames[-150:]
        k += 1
        if len(frames) >= 45 and k % 15 == 0:
            w.update(list(frames))
        est = w.latest_accepted()
        key = (est.sequence, est.t_computed) if est.checked else None
        err = off(est.reference_to_mri, d @ T)
        row = dict(
            k=k,
            err=round(err, 3),
            contra=bool(est.contradicted),
            key=None if key is None else est.sequence,
            unc=None if est.uncertainty_mm is None else round(est.uncertainty_mm, 2),
        )
        for name, mon in mons.items():
            why = mon.observe(
                ref, pose, shape, checked_key=key, t_device=t, checked_since_t=est.checked_since_t
            )
            row[name] = None if mon.motion_mm is None else round(mon.motion_mm, 3)
            row[name + "_d"] = bool(why)
        if mons["new"].terms:
            row.update({k2: round(v, 3) for k2, v in mons["new"].terms.items()})
        rows.append(row)
Path(out).write_text("\n".join(json.dumps(r) for r in rows))
print(desc, "bump_k", bump_k)
