"""Session 35 helper C: similarity profiles along the sweep (elevation) and across the image
(lateral) at the truth, for several similarities, with per-frame sums of the shipped one.

Reuses notes/session34_along_sweep_profile.py's construction (truth shifted by s·direction,
direction = truth rotation @ the sweep's elevation / lateral direction, about the field of
view's centre). Writes /tmp/s35/C/out/<case>.npz. No registration is run.

    PYTHONPATH=/work/main python /tmp/s35/C/profiles.py CASE_DIR ...
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from usnav.io.volume import load_volume
from usnav.registration.pose import correction
from usnav.registration.reconstruct import (
    ReconstructionOptions,
    load_image_to_probe,
    reconstruct_volume,
)
from usnav.registration.search import SweepRegistration
from usnav.registration.similarity import FrameSimilarity, VolumeSimilarity, set_threads
from usnav.registration.sweep import load_sweep
from usnav.sim import load_truth

SHIFTS = np.arange(-10, 10.5, 1.0)
OUT = Path("/tmp/s35/C/out")


def label_extent(path: Path, axis: np.ndarray, origin: np.ndarray) -> tuple[float, float]:
    """Min / max of (voxel centre − origin)·axis over the label's voxels (> 0), mm."""
    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    idx = np.argwhere(data > 0)
    if len(idx) == 0:
        return (float("nan"), float("nan"))
    pts = idx @ img.affine[:3, :3].T + img.affine[:3, 3]
    proj = (pts - origin) @ axis
    return float(proj.min()), float(proj.max())


def run(case: Path) -> None:
    t0 = time.perf_counter()
    truth = load_truth(case).reference_to_mri
    sweep = load_sweep(case / "sweep.igs.mha", load_image_to_probe(case / "calibration.toml"))
    reg = SweepRegistration(load_volume(case / "mri.nii.gz"), sweep, truth)
    centre = truth[:3, :3] @ reg.points_reference.mean(axis=0) + truth[:3, 3]
    dirs = {
        "elevation": truth[:3, :3] @ reg.elevation_direction,
        "lateral": truth[:3, :3] @ reg.lateral_direction,
    }
    poses = {
        axis: [correction(np.r_[s * d, 0, 0, 0], centre) @ truth for s in SHIFTS]
        for axis, d in dirs.items()
    }
    fine = reg.level(-1)
    sims: dict[str, object] = {
        "mind_0.5": fine.similarity,
        "mind_1.0": reg.level(1).similarity,
        "mind_1.5": reg.level(0).similarity,
        "lc2_0.5": FrameSimilarity(fine.mri, fine.frames, metric="lc2", patch_half=1),
        "lc2beam_0.5": FrameSimilarity(fine.mri, fine.frames, metric="lc2_beam", patch_half=1),
        "lc2_1.0": FrameSimilarity(
            reg.level(1).mri, reg.level(1).frames, metric="lc2", patch_half=1
        ),
    }
    rec = reconstruct_volume(
        sweep,
        ReconstructionOptions(
            spacing_mm=(1.0, 1.0, 1.0), interpolation="linear", fill_holes=False, use_fov_mask=True
        ),
    )
    sims["vol_lc2_1.0"] = VolumeSimilarity(reg.level(1).mri, rec.volume, rec.filled, patch_half=1)
    sims["vol_lc2_1.0_p2"] = VolumeSimilarity(
        reg.level(1).mri, rec.volume, rec.filled, patch_half=2
    )
    rec5 = reconstruct_volume(
        sweep,
        ReconstructionOptions(
            spacing_mm=(0.5, 0.5, 0.5), interpolation="linear", fill_holes=False, use_fov_mask=True
        ),
    )
    sims["vol_lc2_0.5"] = VolumeSimilarity(fine.mri, rec5.volume, rec5.filled, patch_half=1)
    out: dict[str, np.ndarray] = {"shifts": SHIFTS}
    timing = {}
    for name, sim in sims.items():
        t1 = time.perf_counter()
        for axis in dirs:
            out[f"{name}/{axis}"] = np.array([sim(p) for p in poses[axis]])
        timing[name] = round((time.perf_counter() - t1) / (2 * len(SHIFTS)), 4)
    # per-frame sums of the shipped finest level at every shift (cached: no new evaluations)
    # and of LC² 0.5 mm (the same frames)
    for name in ("mind_0.5", "lc2_0.5"):
        for axis in dirs:
            num, den, inside = zip(*(sims[name].per_frame(p) for p in poses[axis]), strict=True)
            out[f"pf_{name}/{axis}/num"] = np.array(num)
            out[f"pf_{name}/{axis}/den"] = np.array(den)
            out[f"pf_{name}/{axis}/inside"] = np.array(inside)
    # frame centres along the cord (MRI mm from the field of view's centre, along the
    # elevation axis in MRI space)
    fr = fine.frames
    rows, cols = fr.us.shape[1:]
    pix = np.array([cols / 2, rows / 2, 0, 1.0])
    centres_ref = np.einsum("fij,j->fi", fr.pixel_to_reference, pix)[:, :3]
    centres_mri = centres_ref @ truth[:3, :3].T + truth[:3, 3]
    axis = dirs["elevation"] / np.linalg.norm(dirs["elevation"])
    out["frame_along_mm"] = (centres_mri - centre) @ axis
    out["frame_valid_px"] = fr.valid.reshape(len(fr), -1).sum(axis=1)
    doc = json.loads((case / "truth.json").read_text())
    lm = doc["landmarks"]
    features = {
        "tumor_pole_superior": float((np.array(lm["tumor_pole_superior"]) - centre) @ axis),
        "tumor_pole_inferior": float((np.array(lm["tumor_pole_inferior"]) - centre) @ axis),
        "tumor_centroid": float((np.array(lm["tumor_centroid"]) - centre) @ axis),
    }
    lo, hi = label_extent(case / "removed_label.nii.gz", axis, centre)
    features["wound_end_lo"], features["wound_end_hi"] = lo, hi
    tlo, thi = label_extent(case / "tumor_label.nii.gz", axis, centre)
    features["tumor_label_lo"], features["tumor_label_hi"] = tlo, thi
    features["vertebral_bodies"] = [
        float((np.array(p) - centre) @ axis) for p in lm["vertebral_body_posterior"]
    ]
    meta = {
        "case": case.name,
        "features_along_mm": features,
        "timing_s_per_eval": timing,
        "seconds": round(time.perf_counter() - t0, 1),
        "n_frames": len(fr),
    }
    out["meta"] = np.array(json.dumps(meta))
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / f"{case.name}.npz", **out)
    print(case.name, meta["seconds"], timing, flush=True)


if __name__ == "__main__":
    set_threads(1)
    for arg in sys.argv[1:]:
        if (OUT / f"{Path(arg).name}.npz").exists():
            continue
        run(Path(arg))
