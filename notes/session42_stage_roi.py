"""Session 42: the tumor stage's ROI (``tumor_roi_mm``) re-fitted offline from each accepted
case's bony estimate, scored at the tumor now (simulator truth). The stage's move is pulled
towards zero by tissue that does not move with the cord (dura, the CSF's outer wall) when its
ROI reaches it: helper-99 found a median undershoot to 0.61 of the needed move.

    python notes/session42_stage_roi.py CASES_DIR RESULTS_DIR OUT.csv [ROI_MM ...]
    STAGE_OPTION=tumor_patch_half python notes/session42_stage_roi.py ... 1 2 3

Writes one row per (case, value): the staged error now, whether the stage applied, its move
(``STAGE_OPTION`` names another stage option to vary instead of ``tumor_roi_mm``).
Tuning data only (the rule is in notes/session-42.md §6).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np

from usnav.config.calibration import load_calibration
from usnav.evaluate.truth import load_scorer
from usnav.io.volume import load_volume
from usnav.registration.options import RegistrationOptions
from usnav.registration.search import SweepRegistration
from usnav.registration.sweep import load_sweep
from usnav.registration.tumor import refine_at_tumor, tumor_distance_map


def case_rows(case_dir: Path, result_path: Path, rois: list[float]) -> list[dict]:
    res = json.loads(result_path.read_text(encoding="utf-8"))
    if not res.get("accepted"):
        return []
    bony = np.asarray(res.get("BonyReferenceToMri") or res["ReferenceToMri"], float)
    scorer = load_scorer(case_dir / "truth.json")
    calibration = load_calibration(case_dir / "calibration.toml", warn=False)
    mri = load_volume(case_dir / "mri.nii.gz")
    distance = tumor_distance_map(load_volume(case_dir / "tumor_label.nii.gz"))
    sweep = load_sweep(case_dir / "sweep.igs.mha", calibration)
    base = RegistrationOptions()
    problem = SweepRegistration(mri, sweep, bony, base)
    rows = []
    for roi in rois:
        key = os.environ.get("STAGE_OPTION", "tumor_roi_mm")
        value = int(roi) if key == "tumor_patch_half" else roi
        opts = base.model_copy(update={key: value})
        stage = refine_at_tumor(problem, distance, bony, opts)
        rows.append(
            {
                "case": case_dir.name,
                "roi_mm": roi,
                "applied": stage.applied,
                "shift_mm": round(float(np.linalg.norm(stage.translation_mm)), 4),
                "frames": stage.frames,
                "bony_now_mm": round(scorer.error_now_mm(bony), 4),
                "now_mm": round(scorer.error_now_mm(stage.reference_to_mri), 4),
                "published_now_mm": round(
                    scorer.error_now_mm(np.asarray(res["ReferenceToMri"])), 4
                ),
            }
        )
    return rows


def main(cases: str, results: str, out: str, rois: list[float]) -> None:
    rows: list[dict] = []
    for result_path in sorted(Path(results, "cases").glob("*/result.json")):
        rows += case_rows(Path(cases) / result_path.parent.name, result_path, rois)
    with open(out, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for roi in rois:
        now = np.array([r["now_mm"] for r in rows if r["roi_mm"] == roi])
        bony = np.array([r["bony_now_mm"] for r in rows if r["roi_mm"] == roi])
        print(
            f"ROI {roi:g} mm: {now.size} accepted, median now {np.median(now):.3f}, p90 "
            f"{np.percentile(now, 90):.3f}, p95 {np.percentile(now, 95):.3f}, max {now.max():.3f}, "
            f"over 2 mm {int(np.sum(now > 2))}, worse than bony by > 0.3 mm "
            f"{int(np.sum(now > bony + 0.3))}, better by > 0.3 mm {int(np.sum(now < bony - 0.3))}"
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], [float(v) for v in sys.argv[4:]] or [2.0])
