"""Estimates of a worker over fixed windows of an ordinary looping sweep (no bump), in order:
run with PYTHONPATH at one code tree; prints one line per update and a digest."""

import hashlib
import sys
import time

from usnav.config.calibration import load_calibration
from usnav.io.volume import load_volume
from usnav.registration.sweep import load_sweep
from usnav.registration.worker import RegistrationWorker, WorkerOptions
from usnav.sim import load_truth

case = sys.argv[1]
passes = int(sys.argv[2]) if len(sys.argv) > 2 else 3
cal = load_calibration(f"{case}/calibration.toml").image_to_probe
sweep = load_sweep(f"{case}/sweep.igs.mha", cal)
mri = load_volume(f"{case}/mri.nii.gz")
label = load_volume(f"{case}/tumor_label.nii.gz")
truth = load_truth(case)
w = RegistrationWorker(mri, cal, truth.init_reference_to_mri, WorkerOptions(), tumor_label=label)
print("recover option:", w.options.model_dump().get("recover_when_contradicted"))
frames = []
n = len(sweep)
t = 0.0
order = []
for p in range(passes):
    order += list(range(n)) if p % 2 == 0 else list(range(n))[::-1]
digest = hashlib.sha256()
t0 = time.perf_counter()
for k, i in enumerate(order):
    frames.append((sweep.images[i], sweep.image_to_reference[i], k / 15.0))
    frames = frames[-150:]
    if len(frames) >= 45 and (k + 1) % 15 == 0:
        e = w.update(list(frames))
        a = w.latest_accepted()
        if e is not None:
            digest.update(e.reference_to_mri.tobytes())
            digest.update(a.reference_to_mri.tobytes())
            digest.update(repr((e.accepted, a.contradicted)).encode())
            print(
                k,
                e.accepted,
                round(truth.mtre(a.reference_to_mri), 3),
                bool(a.contradicted),
                e.reason[:90],
            )
print(
    "digest",
    digest.hexdigest()[:16],
    "contradicted",
    w.stats.contradicted,
    f"{time.perf_counter() - t0:.0f} s",
)
