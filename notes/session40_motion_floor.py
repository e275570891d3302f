"""Session 40: the reference-motion monitor's floor on a breathing patient, no worker.

Breathing of A mm peak to peak with period P s (bench_bump.breathing_motion) on a case's
recorded ``ReferenceToTracker`` (its tracking jitter, looped back and forth), 15 frames per
second, a synthetic check every second on the last 150 frames from 10 s on; the motion the
monitor reports from 20 s to 60 s (median, 99th percentile, maximum) per breathing setting.

Usage: ``python notes/session40_motion_floor.py CASE_DIR``
"""

import sys

import numpy as np

from usnav.bench.bench_bump import breathing_motion
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
out = []
for amp, per in [
    (0, 5),
    (2, 5),
    (4, 3),
    (4, 4),
    (4, 5),
    (4, 6),
    (4, 7.5),
    (4, 10),
    (6, 5),
    (6, 7.5),
]:
    breathe = breathing_motion(float(amp), float(per), r2t[0], T) if amp else (lambda t: np.eye(4))
    mon = rm.ReferenceMotionMonitor(100.0, 150)
    motions = []
    for k in range(int(60 * HZ)):
        i = k % n if (k // n) % 2 == 0 else n - 1 - k % n
        t = k / HZ
        key = (int(t), float(int(t))) if t >= 10 else None
        mon.observe(
            breathe(t) @ r2t[i],
            sweep.image_to_reference[i],
            shape,
            checked_key=key,
            t_device=t,
            checked_since_t=max(0.0, int(t) - 150 / HZ) if key else None,
        )
        if t >= 20 and mon.motion_mm is not None:
            motions.append(mon.motion_mm)
    m = np.array(motions)
    out.append(
        (
            amp,
            per,
            round(float(np.median(m)), 2),
            round(float(np.percentile(m, 99)), 2),
            round(float(m.max()), 2),
        )
    )
    print(
        case.split("/")[-1],
        f"breath {amp} mm p-p / {per} s: motion p50 {out[-1][2]} p99 {out[-1][3]} max {out[-1][4]}",
        flush=True,
    )
