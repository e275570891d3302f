"""The alternative to slice-to-volume: register a compounded US volume (reconstructed from the
sweep) to the MRI with 3D LC² patches.

Kept for the comparison in ``usnav bench`` (``registration: frames vs compounded volume``);
on the tuning cases it was slower and no more accurate than the frames (docs/registration.md),
so :func:`usnav.registration.register_sweep` works on the frames.
"""

from __future__ import annotations

import time

import numpy as np

from usnav.io.volume import Volume
from usnav.registration.reconstruct import ReconstructionOptions, reconstruct_volume
from usnav.registration.rigid import (
    RegistrationOptions,
    RegistrationResult,
    _optimise,
    check_inputs,
    correction,
    mean_displacement,
)
from usnav.registration.similarity import VolumeSimilarity, build_mri_levels, crop_box
from usnav.registration.sweep import Sweep


def register_sweep_compounded(
    mri: Volume, sweep: Sweep, initial: np.ndarray, options: RegistrationOptions | None = None
) -> RegistrationResult:
    """Rigid registration of the sweep's compounded volume (3D LC², same levels, optimiser and
    similarity-gain test as :func:`register_sweep`; no split-sweep uncertainty)."""
    t0 = time.perf_counter()
    opts = options or RegistrationOptions()
    check_inputs(mri, sweep, initial)
    initial = np.asarray(initial, dtype=np.float64)
    volumes = []
    for s in opts.level_spacings_mm:
        rec = reconstruct_volume(
            sweep,
            ReconstructionOptions(
                spacing_mm=(s, s, s), interpolation="linear", fill_holes=False, use_fov_mask=True
            ),
        )
        volumes.append(rec)
    fine = volumes[-1]
    idx = np.argwhere(fine.filled)[:: max(1, int(fine.filled.sum()) // 4000)]
    pts_ref = np.c_[idx, np.ones(len(idx))] @ fine.volume.affine[:3].T
    pts_mri = pts_ref @ initial[:3, :3].T + initial[:3, 3]
    box = crop_box(mri, pts_mri, opts.roi_margin_mm)
    levels = build_mri_levels(mri, opts.level_spacings_mm, box)
    centre = pts_mri.mean(axis=0)
    params = np.zeros(6)
    evaluations = 0
    notes = []
    sims = []
    for i, (level, rec) in enumerate(zip(levels, volumes, strict=True)):
        sim = VolumeSimilarity(
            level, rec.volume, rec.filled, patch_half=opts.level("patch_half", i)
        )
        sims.append(sim)
        s = opts.level_spacings_mm[i]
        step = (
            np.r_[[opts.initial_step[0]] * 3, [opts.initial_step[1]] * 3]
            if i == 0
            else np.r_[[0.6 * s] * 3, [0.6 * s] * 3]
        )

        def cost(p: np.ndarray, sim: VolumeSimilarity = sim) -> float:
            return -sim(correction(p, centre) @ initial)

        params, f, n = _optimise(
            cost, params, step, opts.level("max_evaluations", i), xtol=0.05 * s
        )
        evaluations += n
        notes.append({"spacing_mm": s, "similarity": round(-f, 5)})
    candidate = correction(params, centre) @ initial
    new_sim = sims[-1](candidate)
    cur_sim = sims[-1](initial)
    accepted = new_sim - cur_sim >= opts.min_similarity_gain
    corr = mean_displacement(candidate, initial, pts_ref)
    return RegistrationResult(
        reference_to_mri=candidate if accepted else initial.copy(),
        candidate=candidate,
        initial=initial,
        accepted=bool(accepted),
        similarity=float(new_sim),
        initial_similarity=float(cur_sim),
        uncertainty_mm=float("nan"),
        correction_mm=corr,
        seconds=time.perf_counter() - t0,
        evaluations=evaluations + 2,
        reason="accepted" if accepted else "rejected: similarity gain too small",
        metric="lc2 (3D, compounded)",
        levels=notes,
    )
