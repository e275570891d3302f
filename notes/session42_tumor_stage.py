"""Session 42: the tumor stage's moves against the truth on the tuning cases (diagnosis only).

For every accepted case of a ``usnav evaluate`` run over simulator cases, compares the tumor
stage's translation t (RESULT.json ``tumor_stage.translation_mm``, MRI mm, applied on the left:
``ReferenceToMri = T(t) · BonyReferenceToMri``) with

- ``-u``: the negated true cord shift at the tumor centroid (truth.json landmarks: a point X
  lies at X + u during surgery, so an overlay through ``T(t) · bony`` is right when t = -u and
  the bony estimate is exact; docs/simulator.md);
- ``t*``: the translation that would have been right for *this* bony estimate, the mean over
  the tumor landmarks of ``X - B · inv(T_true) · Y`` (Y = X + u(X)): it removes the cord shift
  and the bony estimate's own error at the tumor; its projection on the plane the stage fits
  in (normal to the tumor's long axis when the label is elongated) is the best the stage could
  have done.

Errors are scored with :class:`usnav.evaluate.truth.TruthScorer` (what ``usnav evaluate``
uses). Writes one CSV row per case. Tuning data only::

    python notes/session42_tumor_stage.py /tmp/s42/data/tune /tmp/s42/data/tune-res out.csv
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

from usnav.evaluate.truth import load_scorer
from usnav.io.volume import load_volume
from usnav.registration.options import RegistrationOptions
from usnav.registration.tumor import tumor_distance_map, tumor_long_axis
from usnav.sim.truth import TUMOR_LANDMARKS


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 1e-9 and nb > 1e-9 else float("nan")


def needed_translation(sim, bony: np.ndarray) -> np.ndarray:
    """``t*``: the translation (MRI mm, applied on the left) that would have been right for
    the bony estimate ``bony``, the mean over the tumor landmarks of ``X - B · inv(T_true) · Y``
    (module docstring)."""
    pre = sim.points(TUMOR_LANDMARKS)
    now = np.concatenate(
        [
            np.atleast_2d(sim.landmarks_intraoperative[n])
            for n in TUMOR_LANDMARKS
            if sim.landmarks.get(n) is not None
        ]
    )
    m = bony @ np.linalg.inv(sim.reference_to_mri)
    return (pre - (now @ m[:3, :3].T + m[:3, 3])).mean(axis=0)


def case_row(case_dir: Path, result_path: Path) -> dict | None:
    """One accepted case's comparison (None when the estimate was rejected)."""
    res = json.loads(result_path.read_text(encoding="utf-8"))
    if not res.get("accepted"):
        return None
    scorer = load_scorer(case_dir / "truth.json")
    sim = scorer.sim
    bony = np.asarray(res.get("BonyReferenceToMri") or res["ReferenceToMri"], float)
    staged = np.asarray(res["ReferenceToMri"], float)
    stage = res.get("tumor_stage") or {}
    t = np.asarray(stage.get("translation_mm") or [0.0, 0.0, 0.0], float)
    applied = bool(stage.get("applied"))
    t_used = t if applied else np.zeros(3)

    t_star = needed_translation(sim, bony)
    u = np.asarray(sim.landmarks_intraoperative["tumor_centroid"], float).reshape(3) - np.asarray(
        sim.landmarks["tumor_centroid"], float
    ).reshape(3)
    truth = json.loads((case_dir / "truth.json").read_text(encoding="utf-8"))["cord_shift"]
    u_doc = truth["at_tumor_centroid_mm"] * np.asarray(truth["direction_mri"], float)

    label = load_volume(case_dir / "tumor_label.nii.gz")
    axis, elongation = tumor_long_axis(tumor_distance_map(label))
    opts = RegistrationOptions()
    transverse = opts.tumor_transverse_only and elongation >= opts.tumor_min_elongation
    project = (np.eye(3) - np.outer(axis, axis)) if transverse else np.eye(3)
    t_star_fit = project @ t_star

    bony_err = scorer.error_mm(bony)
    bony_now = scorer.error_now_mm(bony)
    staged_now = scorer.error_now_mm(staged)
    best_now = scorer.error_now_mm(_translated(bony, t_star_fit))
    diag = res.get("diagnostics") or {}
    members = stage.get("members") or []
    return {
        "case": case_dir.name,
        "applied": applied,
        "fitted_axes": members[0].get("fitted_axes") if members else "",
        "elongation": round(elongation, 2),
        "cord_shift_max_mm": round(truth["max_mm"], 3),
        "u_mm": round(float(np.linalg.norm(u)), 3),
        "u_doc_check_mm": round(float(np.linalg.norm(u - u_doc)), 4),
        "u_along_axis_mm": round(abs(float(u @ axis)), 3),
        "shift_mm": round(float(np.linalg.norm(t)), 3),
        "t_star_mm": round(float(np.linalg.norm(t_star)), 3),
        "t_star_fit_mm": round(float(np.linalg.norm(t_star_fit)), 3),
        "cos_t_minus_u": round(_cos(t, -u), 3),
        "cos_t_tstar": round(_cos(t, t_star), 3),
        "cos_t_tstar_fit": round(_cos(t, t_star_fit), 3),
        "gain_along_tstar_mm": round(
            float(t @ t_star_fit / max(np.linalg.norm(t_star_fit), 1e-9)), 3
        ),
        "miss_mm": round(float(np.linalg.norm(t_used - t_star_fit)), 3),
        "bony_err_mm": round(bony_err, 3),
        "bony_now_mm": round(bony_now, 3),
        "staged_now_mm": round(staged_now, 3),
        "best_fit_now_mm": round(best_now, 3),
        "delta_now_mm": round(staged_now - bony_now, 3),
        "sqrt_resid_mm": round(float(np.sqrt(max(staged_now**2 - bony_err**2, 0.0))), 3),
        "frames": stage.get("frames"),
        "similarity_gain": stage.get("similarity_gain"),
        "paired_t": stage.get("paired_t"),
        "global_paired_t": diag.get("paired_t"),
        "global_gain": diag.get("gain"),
        "model_spread_mm": diag.get("model_spread_mm"),
        "split_spread_mm": diag.get("split_spread_mm"),
        "ambiguity_margin": diag.get("ambiguity_margin"),
        "local_margin": diag.get("local_margin"),
        "local_distance_mm": diag.get("local_distance_mm"),
        "quality": res.get("quality"),
        "uncertainty_mm": res.get("uncertainty_mm"),
    }


def _translated(start: np.ndarray, t: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = t
    return m @ start


def main(cases: str, results: str, out: str) -> None:
    rows = []
    for folder in sorted(Path(results, "cases").iterdir()):
        row = case_row(Path(cases, folder.name), folder / "result.json")
        if row is not None:
            rows.append(row)
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main(*sys.argv[1:4])
