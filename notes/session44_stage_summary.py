"""Session 44: the table of notes/session-44-stage.md from the CSV of
notes/session44_stage_controls.py (median and p10/p90 of each experiment's move along the
needed in-plane move over its length, and the error at the tumor now).

    python notes/session44_stage_summary.py controls.csv
"""

from __future__ import annotations

import csv
import sys

import numpy as np

ROWS = [
    ("real", "shipped stage on the simulated ultrasound"),
    ("e0_lc2", "E0 the MRI moved rigidly by t*, LC²"),
    ("e0_ncc_gradient", "E0 the MRI moved rigidly by t*, NCC of gradients"),
    ("e1_lc2", "E1 intraoperative anatomy, MRI appearance, true poses, LC²"),
    ("e1_ncc_gradient", "E1 the same, NCC of gradients"),
    ("e1pre", "E1 control: preoperative anatomy rendered (ratio against t_pre)"),
    ("e2", "E2 ultrasound, ROI ≥ patch + 1 px inside the plan's cord"),
    ("e2t", "E2 and inside the intraoperative cord too (truth-side)"),
    ("e3_uniform", "E3 mean needed move of the ROI's pixels (no fit)"),
    ("e3_e1_grad", "E3 the same, weighted by the E1 frames' gradient"),
    ("e3_us_grad", "E3 the same, weighted by the ultrasound's gradient"),
    ("e3_tumor", "E3 the ROI's pixels inside the planned tumor only"),
    ("e3_shell", "E3 the ROI's pixels outside the planned tumor only"),
]


def main(path: str) -> None:
    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    print(f"n = {len(rows)} cases (‖t*⊥‖ > 0.5 mm)\n")
    print("| experiment | ratio median | p10 | p90 | error now median (mm) | p90 |")
    print("|---|---|---|---|---|---|")
    for key, label in ROWS:
        if f"{key}_ratio" not in rows[0]:
            continue
        ratio = np.array([float(r[f"{key}_ratio"]) for r in rows])
        cells = [f"{np.median(ratio):.2f}", *(f"{np.percentile(ratio, q):.2f}" for q in (10, 90))]
        if f"{key}_now" in rows[0]:
            now = np.array([float(r[f"{key}_now"]) for r in rows])
            cells += [f"{np.median(now):.2f}", f"{np.percentile(now, 90):.2f}"]
        else:
            cells += ["–", "–"]
        print(f"| {label} | " + " | ".join(cells) + " |")
    bony = np.array([float(r["bony_now"]) for r in rows])
    med, p90 = np.median(bony), np.percentile(bony, 90)
    print(f"| bony estimate (no stage) | – | – | – | {med:.2f} | {p90:.2f} |\n")
    for key in ("w_landmarks", "w_roi", "e2_kept", "e2t_kept", "pose_check_mm"):
        v = np.array([float(r[key]) for r in rows])
        p10 = np.percentile(v, 10)
        print(f"{key}: median {np.median(v):.3f} [p10 {p10:.3f}, max {v.max():.3f}]")
    fam: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        fam.setdefault(r["case"].rsplit("-", 1)[0], []).append(
            (float(r["real_ratio"]), float(r["e1_lc2_ratio"]))
        )
    for name, v in sorted(fam.items()):
        a = np.array(v)
        print(f"{name}: n {len(a)}, real {np.median(a[:, 0]):.2f}, e1 lc2 {np.median(a[:, 1]):.2f}")


if __name__ == "__main__":
    main(sys.argv[1])
