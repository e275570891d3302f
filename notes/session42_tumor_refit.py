"""Session 42: run-time evidence of the tumor stage, re-fitted offline from the bony estimate.

For every accepted case of a ``usnav evaluate`` run, re-fits the stage's translation from
RESULT.json's ``BonyReferenceToMri`` with the default options (and checks it reproduces the
published ``tumor_stage.translation_mm``), then computes quantities the stage could know at run
time without the truth:

- ``mind``: the same fit with MIND-SSC (ROI 3 mm, 3×3: session 14's second member), and the
  distance between the two fits (MRI mm);
- ``split``: the fit on the frames that show the tumor's surroundings split in two contiguous
  halves along the sweep, and in two interleaved halves: the distance between the halves' fits;
- ``grid``: the LC² similarity over the stage's 0.5 mm grid (its fitted plane, within 3 mm):
  the best score farther than 1 mm from the fit minus the fit's score (``ambiguity``; > 0:
  another basin scores better), and the count of grid points within 0.002 of the fit's score
  (``flat_points``: how flat the landscape is).

Writes one CSV row per case (translations in MRI mm). Tuning data only::

    python notes/session42_tumor_refit.py /tmp/s42/data/tune /tmp/s42/data/tune-res out.csv
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

from usnav.config.calibration import load_calibration
from usnav.io.volume import load_volume
from usnav.registration.options import RegistrationOptions
from usnav.registration.pose import _subset_level
from usnav.registration.search import SweepRegistration
from usnav.registration.similarity import prepare_frame_level
from usnav.registration.sweep import load_sweep
from usnav.registration.tumor import (
    TumorContext,
    _fit_member,
    _translated,
    roi_masks,
    tumor_distance_map,
)


def _round(v: np.ndarray) -> list[float]:
    return [round(float(x), 4) for x in v]


def refit(case_dir: Path, result_path: Path, opts: RegistrationOptions) -> dict | None:
    """One accepted case's re-fit and run-time evidence (None when rejected)."""
    res = json.loads(result_path.read_text(encoding="utf-8"))
    if not res.get("accepted"):
        return None
    bony = np.asarray(res.get("BonyReferenceToMri") or res["ReferenceToMri"], float)
    published = np.asarray(res["tumor_stage"]["translation_mm"], float)
    calibration = load_calibration(case_dir / "calibration.toml")
    mri = load_volume(case_dir / "mri.nii.gz")
    label = load_volume(case_dir / "tumor_label.nii.gz")
    sweep = load_sweep(case_dir / "sweep.igs.mha", calibration)
    problem = SweepRegistration(mri, sweep, bony, opts)
    context = TumorContext(tumor_distance_map(label), problem.level(-1).mri)
    frames = prepare_frame_level(
        sweep,
        context.mri_level.spacing_mm,
        max_frames=opts.tumor_max_frames,
        **opts.frame_mask_arguments(),
    )
    lc2 = ("lc2", opts.tumor_roi_mm, opts.tumor_patch_half)
    full = _fit_member(frames, context, bony, opts, *lc2)
    mind = _fit_member(frames, context, bony, opts, "mind_ssc", 3.0, 1)

    roi = roi_masks(frames, context.distance, bony, opts.tumor_roi_mm)
    keep = np.nonzero(roi.reshape(len(roi), -1).sum(axis=1) >= opts.tumor_min_pixels)[0]
    half = len(keep) // 2
    halves = {
        "block": (keep[:half], keep[half:]),
        "inter": (keep[0::2], keep[1::2]),
    }
    row: dict = {
        "case": case_dir.name,
        "t_published": _round(published),
        "t_refit": _round(full.translation_mm),
        "refit_diff_mm": round(float(np.linalg.norm(full.translation_mm - published)), 4),
        "t_mind": _round(mind.translation_mm),
        "mind_applied": mind.applied,
        "mind_gain": round(float(mind.similarity_gain), 6),
        "mind_disagree_mm": round(
            float(np.linalg.norm(full.translation_mm - mind.translation_mm)), 4
        ),
    }
    for name, (a, b) in halves.items():
        fa = _fit_member(_subset_level(frames, a), context, bony, opts, *lc2)
        fb = _fit_member(_subset_level(frames, b), context, bony, opts, *lc2)
        row[f"t_{name}_a"] = _round(fa.translation_mm)
        row[f"t_{name}_b"] = _round(fb.translation_mm)
        row[f"{name}_split_mm"] = round(
            float(np.linalg.norm(fa.translation_mm - fb.translation_mm)), 4
        )

    # the similarity over the stage's grid (full.similarity is the LC² over the kept frames)
    basis = context.translation_basis(opts)
    step, radius = 0.5, opts.tumor_max_shift_mm
    n = int(np.floor(radius / step))
    axis = np.arange(-n, n + 1) * step
    grid = np.stack(np.meshgrid(*([axis] * basis.shape[1]), indexing="ij"), -1)
    grid = grid.reshape(-1, basis.shape[1]) @ basis.T
    grid = grid[np.linalg.norm(grid, axis=1) <= radius + 1e-9]
    sim = full.similarity
    at_fit = sim(_translated(bony, full.translation_mm))
    scores = np.array([sim(_translated(bony, g)) for g in grid])
    far = np.linalg.norm(grid - full.translation_mm, axis=1) > 1.0
    row["grid_ambiguity"] = round(float(scores[far].max() - at_fit), 6) if far.any() else ""
    row["flat_points"] = int((scores >= at_fit - 0.002).sum())
    row["grid_points"] = len(grid)
    row["grid_range"] = round(float(scores.max() - scores.min()), 6)
    return row


def main(cases: str, results: str, out: str) -> None:
    opts = RegistrationOptions()
    rows = []
    for folder in sorted(Path(results, "cases").iterdir()):
        row = refit(Path(cases, folder.name), folder / "result.json", opts)
        if row is not None:
            rows.append(row)
            with open(out, "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)


if __name__ == "__main__":
    main(*sys.argv[1:4])
