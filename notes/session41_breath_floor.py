"""Session 41: the reference-motion monitor's floor on a breathing patient, span fixed (session
40) against span following the measured breathing period (session 41), no worker.

As notes/session40_motion_floor.py (a case's recorded ``ReferenceToTracker`` with its tracking
jitter, looped back and forth, 15 frames per second, a synthetic check every second on the last
150 frames from 10 s on), but 90 s long, with two breath shapes: ``sine`` (the bench's) and
``lujan`` (a ventilator's: a short inspiration, a long expiration and a pause, cos⁴ of the
phase; Lujan et al., Med Phys 1999), and optionally the period varying ±5 % breath to breath.
Printed per setting and monitor: the motion and the step from 40 s to 90 s (median, 99th
percentile, maximum) and the largest motion from 10 s to 40 s (the start, before the period
is known), and the span in use at the end.

Needs notes/session41-follow-breathing.patch applied (the candidate was not merged).

Usage: ``python notes/session41_breath_floor.py CASE_DIR``
"""

import sys

import numpy as np

from usnav.config.calibration import load_calibration
from usnav.io.sequence_reader import read_sequence
from usnav.pipeline import reference_motion as rm
from usnav.registration.sweep import load_sweep
from usnav.sim import load_truth

case = sys.argv[1]
cal = load_calibration(f"{case}/calibration.toml").image_to_probe
sweep = load_sweep(f"{case}/sweep.igs.mha", cal)
seq = read_sequence(f"{case}/sweep.igs.mha")
r2t = [np.asarray(seq.frame(i).transforms["ReferenceToTracker"].matrix) for i in range(len(seq))]
shape = seq.frame(0).image.shape[:2]
seq.close()
T = load_truth(case).reference_to_mri
n = len(sweep)
HZ = 15.0
DURATION = 90.0
to_tracker = r2t[0][:3, :3] @ np.linalg.inv(T)[:3, :3]
axis = to_tracker @ np.array([0.0, 1.0, 1.0 / 3.0])
axis /= np.linalg.norm(axis)


def breathing(amp: float, per: float, kind: str, vary: float, seed: int = 0):
    """Seconds → 4×4 motion in the tracker's frame: ``amp`` mm peak to peak."""
    rng = np.random.default_rng(seed)
    periods = per * (1 + vary * rng.uniform(-1, 1, 200))
    starts = np.concatenate([[0.0], np.cumsum(periods)])

    def motion(t: float) -> np.ndarray:
        k = int(np.searchsorted(starts, t, side="right")) - 1
        phase = (t - starts[k]) / periods[k]
        if kind == "sine":
            w = 0.5 * np.sin(2 * np.pi * phase)
        else:  # lujan: 0 at end-expiration, 1 at end-inspiration
            w = np.cos(np.pi * phase + np.pi / 2) ** 4 - 0.5
        m = np.eye(4)
        m[:3, 3] = axis * amp * w
        return m

    return motion


settings = [
    ("sine", 0, 5, 0.0),
    ("sine", 4, 3, 0.0),
    ("sine", 4, 4, 0.0),
    ("sine", 4, 5, 0.0),
    ("sine", 4, 7.5, 0.0),
    ("sine", 4, 10, 0.0),
    ("sine", 6, 7.5, 0.0),
    ("sine", 6, 10, 0.0),
    ("lujan", 4, 5, 0.0),
    ("lujan", 4, 10, 0.0),
    ("lujan", 6, 12, 0.0),
    ("lujan", 4, 5, 0.05),
    ("lujan", 6, 10, 0.05),
]
for kind, amp, per, vary in settings:
    breathe = breathing(float(amp), float(per), kind, vary) if amp else (lambda t: np.eye(4))
    mons = {
        "fixed": rm.ReferenceMotionMonitor(100.0, 150, follow_breathing=False),
        "follow": rm.ReferenceMotionMonitor(100.0, 150),
    }
    rec = {name: ([], [], []) for name in mons}
    for k in range(int(DURATION * HZ)):
        i = k % n if (k // n) % 2 == 0 else n - 1 - k % n
        t = k / HZ
        key = (int(t), float(int(t))) if t >= 10 else None
        for name, mon in mons.items():
            mon.observe(
                breathe(t) @ r2t[i],
                sweep.image_to_reference[i],
                shape,
                checked_key=key,
                t_device=t,
                checked_since_t=max(0.0, int(t) - 150 / HZ) if key else None,
            )
            if mon.motion_mm is None:
                continue
            if t >= 40:
                rec[name][0].append(mon.motion_mm)
                rec[name][1].append(mon.step_mm)
            else:
                rec[name][2].append(mon.motion_mm)
    parts = []
    for name, mon in mons.items():
        m, st, early = (np.array(v) for v in rec[name])
        parts.append(
            f"{name}: motion p50 {np.median(m):.2f} p99 {np.percentile(m, 99):.2f} "
            f"max {m.max():.2f} | step max {st.max():.2f} | start max {early.max():.2f} | "
            f"span {mon.breath_span_s:.2f}"
        )
    print(
        case.rstrip("/").split("/")[-1],
        f"{kind} {amp} mm / {per} s ±{vary:.0%}:",
        " || ".join(parts),
        flush=True,
    )
