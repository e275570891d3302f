"""Local stage experiment: after the global estimate, a translation around the tumor (ROI from
the tumor label) with a Gaussian prior; judged by the error at the tumor now."""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, "notes")
from regstudy import load_family, tre_now
from scipy import ndimage

from usnav.io.volume import load_volume
from usnav.registration import warm_up
from usnav.registration.pose import _optimise, _subset_level
from usnav.registration.rigid import RegistrationOptions, SweepRegistration
from usnav.registration.similarity import FrameLevel, FrameSimilarity

warm_up()
root = Path(sys.argv[1])
fam = sys.argv[2]
seeds = [int(s) for s in sys.argv[3].split(",")]
R = float(sys.argv[4]) if len(sys.argv) > 4 else 5.0
W = float(sys.argv[5]) if len(sys.argv) > 5 else 0.002
for seed in seeds:
    folder = root / (f"{fam[3:]}-{seed}" if fam.startswith("sf:") else f"s{seed}")
    mri, sweep, truth, info = load_family(folder, fam, seed)
    label = load_volume(folder / "tumor_label.nii.gz")
    prob = SweepRegistration(mri, sweep, truth.init_reference_to_mri, RegistrationOptions())
    res = prob.run(truth.init_reference_to_mri)
    g = res.candidate
    lev = prob.level(-1)
    fr = lev.frames
    # distance map of the tumor label (mm), sampled at each frame pixel under g
    lab = np.asarray(label.data) > 0
    sp = label.spacing_mm
    dist = ndimage.distance_transform_edt(~lab, sampling=sp).astype(np.float32)
    w2v = label.world_to_voxel
    n, rows, cols = fr.us.shape
    rr, cc = np.mgrid[0:rows, 0:cols]
    pix = np.stack([cc.ravel(), rr.ravel(), np.zeros(rr.size), np.ones(rr.size)], 1)
    roi = np.zeros_like(fr.valid)
    for f in range(n):
        v = pix @ (w2v @ g @ fr.pixel_to_reference[f]).T
        d = ndimage.map_coordinates(dist, v[:, :3].T, order=1, cval=1e9).reshape(rows, cols)
        roi[f] = (d <= R) & (fr.valid[f] > 0)
    keep = np.nonzero(roi.reshape(n, -1).sum(1) > 20)[0]
    if keep.size < 3:
        print(json.dumps({"seed": seed, "skip": int(keep.size)}))
        continue
    sub = _subset_level(fr, keep)
    sub = FrameLevel(
        sub.spacing_mm, sub.us, sub.us_grad, roi[keep], sub.pixel_to_reference, sub.frame_index
    )
    sim = FrameSimilarity(lev.mri, sub, metric="lc2", patch_half=1)

    def cost(t, sim=sim, g=g):
        m = np.eye(4)
        m[:3, 3] = t
        return -sim(m @ g) + W * float(t @ t)

    x, _, _ = _optimise(cost, np.zeros(3), np.r_[0.5, 0.5, 0.5], 80, 0.02)
    loc = np.eye(4)
    loc[:3, 3] = x
    row = {
        "family": fam,
        "seed": seed,
        "glob": truth.mtre(g),
        "glob_now": tre_now(truth, g),
        "local_now": tre_now(truth, loc @ g),
        "shift": float(np.linalg.norm(x)),
        "truth_now": tre_now(truth, truth.reference_to_mri),
        "frames": int(keep.size),
        "cordshift": truth.cord_shift_max_mm,
    }
    print(
        json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}),
        flush=True,
    )
