"""Session 44 ("E0 + noise"): does the stage's machinery (fixed ROI, masked patches, LC²) pull
a weak signal towards its start?  (tuning set A only; notes/session-44-stage.md)

E0's frames (the stage's own MRI level moved rigidly by t*, notes/session44_stage_controls.py)
with noise added, at levels given as the noise's standard deviation over the frames' standard
deviation on the ROI: ``white`` i.i.d. Gaussian, ``speckle`` multiplicative (the frames times a
Rayleigh field smoothed over ~1 pixel and renormalised, plus the same additive part).  An
unbiased machinery gives a ratio near 1 at every level (noisier, not smaller).

    python notes/session44_stage_noise.py CASES_DIR RESULTS_DIR CONTROLS.csv OUT.csv [MAX_CASES]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from session44_stage_controls import _translated, load_case, run_cases, sample_frames, with_content

import usnav.registration.tumor as T
from usnav.registration.options import RegistrationOptions

LEVELS = [1.0, 3.0, 6.0]
NOISE_SEED = 9144


def case_rows(cd: Path, res: dict, opts: RegistrationOptions) -> list[dict]:
    c = load_case(cd, res, opts)
    level = c.context.mri_level
    to_vox = level.world_to_voxel @ _translated(c.bony, c.t_star)
    mri0 = np.ascontiguousarray(level.vol2[..., 0])
    clean = sample_frames(mri0, to_vox @ c.frames.pixel_to_reference, c.frames)
    roi = T.roi_masks(c.frames, c.context.distance, c.bony, opts.tumor_roi_mm) > 0
    sd = float(clean[roi].std())
    rng = np.random.default_rng([NOISE_SEED, int(c.doc["seed"])])
    white = rng.standard_normal(clean.shape).astype(np.float32)
    rayleigh = np.hypot(*rng.standard_normal((2, *clean.shape))).astype(np.float32)
    rayleigh = ndimage.gaussian_filter(rayleigh, (0, 0.7, 0.7))
    rayleigh = (rayleigh - rayleigh.mean()) / rayleigh.std()
    rows = []
    for kind in ("white", "speckle"):
        for k in LEVELS:
            if kind == "white":
                us = clean + np.float32(k * sd) * white
            else:  # multiplicative, scaled so its sd on the ROI is k times the signal's
                mult = clean * (1.0 + np.float32(0.5) * rayleigh)
                extra = mult - clean
                us = clean + extra * np.float32(k * sd / max(float(extra[roi].std()), 1e-9))
            frames = with_content(c.frames, us.astype(np.float32))
            fit = T._fit_member(
                frames, c.context, c.bony, opts, "lc2", opts.tumor_roi_mm, opts.tumor_patch_half
            )
            t, ts = fit.translation_mm, c.t_star_fit
            row = {
                "case": cd.name,
                "noise": kind,
                "level": k,
                "ratio": float(t @ ts / (ts @ ts)),
                "miss_mm": float(np.linalg.norm(t - ts)),
                "gain": fit.similarity_gain,
            }
            rows.append(row)
            print({a: round(b, 3) if isinstance(b, float) else b for a, b in row.items()})
    return rows


def main(cases: str, results: str, controls: str, out: str, max_cases: int = 0) -> None:
    rows = run_cases(case_rows, cases, results, controls, out, max_cases)
    for kind in ("white", "speckle"):
        for k in LEVELS:
            r = np.array([x["ratio"] for x in rows if x["noise"] == kind and x["level"] == k])
            g = np.median([x["gain"] for x in rows if x["noise"] == kind and x["level"] == k])
            p10, p90 = np.percentile(r, [10, 90])
            print(
                f"{kind} {k:g}: n {r.size}, ratio median {np.median(r):.2f} "
                f"[{p10:.2f}, {p90:.2f}], similarity gain median {g:.4f}"
            )


if __name__ == "__main__":
    main(*sys.argv[1:5], *(int(a) for a in sys.argv[5:6]))
