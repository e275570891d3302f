"""Session 44: which of the tumor stage's pixels pull its LC² towards the bony estimate?
(tuning set A only; notes/session-44-stage.md, "E4").

For each case of notes/session44_stage_controls.py's CSV, the stage's LC² is recomputed per
ROI pixel (numpy, the kernel's sums: 5×5 patches of the ROI's pixels only, weight = the
patch's US standard deviation; checked against ``FrameSimilarity.frame_scores``) at the bony
estimate (t = 0) and at the needed in-plane move t*⊥.  Each pixel's w·(R²(t*⊥) − R²(0)),
summed by what the pixel shows *intraoperatively* (the simulator's intraoperative labels
through the true ReferenceToMri), over Σw: the classes with a negative share pull the fit
towards zero.  Done on the recorded (simulated) ultrasound and on the E1 frames.

    python notes/session44_stage_pull.py CASES_DIR RESULTS_DIR CONTROLS.csv OUT.csv
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from session44_stage_controls import (
    _translated,
    load_case,
    render_intraop,
    run_cases,
    sample_frames,
)

import usnav.registration.tumor as T
from usnav.io.volume import load_volume
from usnav.registration import _kernels as K
from usnav.registration.options import RegistrationOptions
from usnav.registration.similarity import FrameSimilarity
from usnav.sim.tissues import Tissue

CLASSES = {
    "tumor": (Tissue.TUMOR, Tissue.CYST),
    "cord": (Tissue.CORD, Tissue.CENTRAL_ECHO, Tissue.NERVE_ROOT),
    "csf": (Tissue.CSF,),
    "dura+outside": None,  # everything else
}
DEPTH_BINS = [(-99.0, 0.0), (0.0, 1.0), (1.0, 2.0), (2.0, 99.0)]


def patch_r2(us, p, g, valid, half=2, min_fraction=0.5):
    """(R², w) per pixel of one frame as the LC² kernel computes them (NaN where unusable)."""
    v = valid.astype(np.float64)
    chans = [v, us, us * us, p, g, p * p, g * g, p * g, us * p, us * g]
    size = 2 * half + 1
    s = [ndimage.uniform_filter(c * v, size, mode="constant") * size * size for c in chans]
    n = s[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        inv = 1.0 / n
        mu, mp, mg = s[1] * inv, s[3] * inv, s[4] * inv
        cuu = s[2] * inv - mu * mu
        cpp = s[5] * inv - mp * mp
        cgg = s[6] * inv - mg * mg
        cpg = s[7] * inv - mp * mg
        cup = s[8] * inv - mu * mp
        cug = s[9] * inv - mu * mg
        eps = 1e-6 * (cpp + cgg) + 1e-12
        a, d = cpp + eps, cgg + eps
        det = a * d - cpg * cpg
        r2 = np.clip((d * cup * cup - 2 * cpg * cup * cug + a * cug * cug) / det / cuu, 0, 1)
    ok = (valid > 0) & (n >= min_fraction * size * size - 1e-9) & (cuu > 1e-9)
    r2 = np.where(ok & (det > 1e-18), r2, 0.0)
    w = np.where(ok, np.sqrt(np.maximum(cuu, 0.0)), 0.0)
    return r2, w


def frame_maps(sim: FrameSimilarity, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R², w) per pixel of every frame of ``sim`` at ``pose``."""
    fr = sim.frames
    aff = sim.frame_affines(pose)
    n, rows, cols = fr.us.shape
    r2s, ws = np.zeros((n, rows, cols)), np.zeros((n, rows, cols))
    p = np.empty((rows, cols), np.float32)
    g = np.empty_like(p)
    inside = np.empty((rows, cols), np.uint8)
    for f in range(n):
        K.sample2_plane(sim.mri.vol2, aff[f, :, 2].copy(), aff[f, :, 0].copy(),
                        aff[f, :, 1].copy(), p, g, inside)  # fmt: skip
        valid = (fr.valid[f] > 0) & (inside > 0)
        r2s[f], ws[f] = patch_r2(fr.us[f].astype(np.float64), p, g, valid)
    return r2s, ws


def case_rows(cd: Path, res: dict, opts: RegistrationOptions) -> list[dict]:
    c = load_case(cd, res, opts)
    roi = T.roi_masks(c.frames, c.context.distance, c.bony, opts.tumor_roi_mm)
    keep = np.nonzero(roi.reshape(len(roi), -1).sum(axis=1) >= opts.tumor_min_pixels)[0]
    intra = load_volume(cd / "anatomy_intraop.nii.gz")
    labels = np.asarray(intra.data)
    moving = np.isin(labels, [*CLASSES["tumor"], *CLASSES["cord"]])
    depth = ndimage.distance_transform_edt(moving, sampling=intra.spacing_mm) - (
        ndimage.distance_transform_edt(~moving, sampling=intra.spacing_mm)
    )
    to_vox = intra.world_to_voxel @ c.sim.reference_to_mri @ c.frames.pixel_to_reference
    lab = np.rint(sample_frames(labels.astype(np.float32), to_vox, c.frames, order=0))
    dep = sample_frames(depth.astype(np.float32), to_vox, c.frames)
    e1 = render_intraop(cd, c)
    rows = []
    for source, frames in (("us", c.frames), ("e1", e1)):
        sub = T._subset_level(frames, keep)
        sub.valid = roi[keep]
        sim = FrameSimilarity(c.context.mri_level, sub, metric="lc2", patch_half=2)
        r0, w = frame_maps(sim, c.bony)
        r1, _ = frame_maps(sim, _translated(c.bony, c.t_star_fit))
        check = float(np.nanmax(np.abs(
            (w * r0).sum(axis=(1, 2)) / np.maximum(w.sum(axis=(1, 2)), 1e-12)
            - np.nan_to_num(sim.frame_scores(c.bony))
        )))  # fmt: skip
        gain = w * (r1 - r0)  # w is the US's: the same at both poses
        total = w.sum()
        row = {"case": cd.name, "source": source, "check": check}
        row["gain_total"] = float(gain.sum() / total)
        lk, dk = lab[keep], dep[keep]
        for name, codes in CLASSES.items():
            sel = ~np.isin(lk, [*CLASSES["tumor"], *CLASSES["cord"], *CLASSES["csf"]])
            if codes is not None:
                sel = np.isin(lk, codes)
            row[f"share_{name}"] = float(w[sel].sum() / total)
            row[f"gain_{name}"] = float(gain[sel].sum() / total)
        for lo, hi in DEPTH_BINS:
            sel = (dk >= lo) & (dk < hi)
            row[f"share_depth_{lo:g}_{hi:g}"] = float(w[sel].sum() / total)
            row[f"gain_depth_{lo:g}_{hi:g}"] = float(gain[sel].sum() / total)
        rows.append(row)
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    return rows


def main(cases: str, results: str, controls: str, out: str) -> None:
    rows = run_cases(case_rows, cases, results, controls, out)
    for source in ("us", "e1"):
        sel = [r for r in rows if r["source"] == source]
        keys = [k for k in sel[0] if k.startswith(("share_", "gain_"))]
        print(source, {k: round(float(np.median([r[k] for r in sel])), 4) for k in keys})


if __name__ == "__main__":
    main(*sys.argv[1:5])
