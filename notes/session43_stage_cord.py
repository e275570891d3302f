"""Session 43: is the tumor stage's undershoot caused by tissue that does not move with the
cord?  The stage re-fitted offline from each accepted case's bony estimate (tuning cases
only) with its ROI restricted by the *preoperative* cord (the simulator's anatomy_preop:
cord, tumor, cyst, central canal, rootlets; a plan-side label mapped through the same
estimate as the ROI, no truth), scored at the tumor now.

    python notes/session43_stage_cord.py cord CASES_DIR RESULTS_DIR OUT.csv
        the shipped ROI (tumor_roi_mm) ∩ pixels within d = 0, 0.5, 1 mm of the cord
    python notes/session43_stage_cord.py band CASES_DIR RESULTS_DIR OUT.csv
        pixels within R = 3, 4, 6 mm of the tumor ∩ within 1 mm of the cord (the cord's
        surface, which moves with it, taken in)

notes/session-43.md §2 has the result.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

import usnav.registration.tumor as tumor_module
from usnav.config.calibration import load_calibration
from usnav.evaluate.truth import load_scorer
from usnav.io.volume import Volume, load_volume
from usnav.registration.options import RegistrationOptions
from usnav.registration.search import SweepRegistration
from usnav.registration.sweep import load_sweep
from usnav.sim.tissues import Tissue

MOVES_WITH_CORD = [Tissue.CORD, Tissue.TUMOR, Tissue.CYST, Tissue.CENTRAL_ECHO, Tissue.NERVE_ROOT]
VALUES = {"cord": [None, 0.0, 0.5, 1.0], "band": [None, 3.0, 4.0, 6.0]}
_shipped_roi = tumor_module.roi_masks
STATE: dict = {}


def restricted_roi(frames, distance, reference_to_mri, roi_mm):
    """The stage's ROI as the variant in STATE defines it (``kept``: its size / shipped)."""
    shipped = _shipped_roi(frames, distance, reference_to_mri, roi_mm)
    value = STATE.get("value")
    if value is None:
        return shipped
    if STATE["mode"] == "cord":
        roi = shipped & _shipped_roi(frames, STATE["cord"], reference_to_mri, value)
    else:
        wide = _shipped_roi(frames, distance, reference_to_mri, value)
        roi = wide & _shipped_roi(frames, STATE["cord"], reference_to_mri, 1.0)
    STATE["kept"] = float(np.sum(roi)) / max(1.0, float(np.sum(shipped)))
    return roi


tumor_module.roi_masks = restricted_roi


def case_rows(case_dir: Path, result_path: Path, values: list) -> list[dict]:
    res = json.loads(result_path.read_text(encoding="utf-8"))
    if not res.get("accepted"):
        return []
    bony = np.asarray(res.get("BonyReferenceToMri") or res["ReferenceToMri"], float)
    scorer = load_scorer(case_dir / "truth.json")
    calibration = load_calibration(case_dir / "calibration.toml", warn=False)
    distance = tumor_module.tumor_distance_map(load_volume(case_dir / "tumor_label.nii.gz"))
    anatomy = load_volume(case_dir / "anatomy_preop.nii.gz")
    moving = np.isin(np.asarray(anatomy.data), np.array(MOVES_WITH_CORD, np.uint8))
    STATE["cord"] = tumor_module.tumor_distance_map(
        Volume(moving.astype(np.uint8), anatomy.affine, source="cord")
    )
    sweep = load_sweep(case_dir / "sweep.igs.mha", calibration)
    options = RegistrationOptions()
    problem = SweepRegistration(load_volume(case_dir / "mri.nii.gz"), sweep, bony, options)
    rows = []
    for value in values:
        STATE["value"], STATE["kept"] = value, 1.0
        stage = tumor_module.refine_at_tumor(problem, distance, bony, options)
        rows.append(
            {
                "case": case_dir.name,
                "value": "shipped" if value is None else value,
                "applied": stage.applied,
                "shift_mm": round(float(np.linalg.norm(stage.translation_mm)), 4),
                "kept": round(STATE["kept"], 3),
                "bony_now_mm": round(scorer.error_now_mm(bony), 4),
                "now_mm": round(scorer.error_now_mm(stage.reference_to_mri), 4),
            }
        )
    return rows


def main(mode: str, cases: str, results: str, out: str) -> None:
    STATE["mode"] = mode
    values = VALUES[mode]
    rows: list[dict] = []
    for result_path in sorted(Path(results, "cases").glob("*/result.json")):
        rows += case_rows(Path(cases) / result_path.parent.name, result_path, values)
    with open(out, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for value in values:
        key = "shipped" if value is None else value
        sel = [r for r in rows if r["value"] == key]
        now = np.array([r["now_mm"] for r in sel])
        bony = np.array([r["bony_now_mm"] for r in sel])
        kept = np.median([r["kept"] for r in sel])
        print(
            f"{mode} {key}: {now.size} accepted, ROI size {kept:.2f} of shipped, median now "
            f"{np.median(now):.3f}, mean {now.mean():.3f}, p90 {np.percentile(now, 90):.3f}, "
            f"max {now.max():.3f}, over 2 mm {int(np.sum(now > 2))}, worse than bony by "
            f"> 0.3 mm {int(np.sum(now > bony + 0.3))}, better {int(np.sum(now < bony - 0.3))}"
        )


if __name__ == "__main__":
    main(*sys.argv[1:5])
