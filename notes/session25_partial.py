"""Session-25 study (not shipped): would a rejected-as-ambiguous candidate help if only its
well-determined part were used?

For every case whose verdict is "ambiguous along the sweep", the *partial* estimate is the
candidate moved back along the sweep direction (principal axis of the frame centres, mapped by
the candidate's rotation into the MRI) so that the field-of-view centre keeps the initial
(navigation) estimate's position along the sweep; everything else (the position across the
sweep and the rotation) is the candidate's. Its error at the tumor is compared with the
initial estimate's and the candidate's. Report only: nothing here is tuned.

``python notes/session25_partial.py usnav RESULTS_DIR MANIFEST``   (usnav evaluate output)
``python notes/session25_partial.py indep CASES_DIR``               (notes/indep-sim cases,
    registered as its README says, result.json in each case folder)
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np


def sweep_axis(recording: Path, calibration: Path) -> tuple[np.ndarray, np.ndarray]:
    """(unit sweep direction, mean image centre), Reference mm."""
    from usnav.config.calibration import load_calibration
    from usnav.registration.sweep import load_sweep

    sweep = load_sweep(recording, load_calibration(calibration).image_to_probe)
    cols, rows = sweep.image_size
    centres = sweep.image_to_reference @ np.array([cols / 2, rows / 2, 0.0, 1.0])
    c = centres[:, :3]
    mean = c.mean(axis=0)
    _, _, vt = np.linalg.svd(c - mean, full_matrices=False)
    return vt[0], mean


def partial(init: np.ndarray, cand: np.ndarray, axis_ref: np.ndarray, centre_ref: np.ndarray):
    """The candidate with the initial estimate's position along the sweep (at the centre)."""
    s = cand[:3, :3] @ axis_ref
    s /= np.linalg.norm(s)
    h = np.r_[centre_ref, 1.0]
    d = float(((cand @ h)[:3] - (init @ h)[:3]) @ s)
    m = np.eye(4)
    m[:3, 3] = -d * s
    return m @ cand, d


def along_across(err_fn_points, T, truth, s_mri):
    """Mean |error| along s and across it at the points (error vectors of T against truth)."""
    pts = err_fn_points
    M = T @ np.linalg.inv(truth)
    e = pts @ M[:3, :3].T + M[:3, 3] - pts
    a = e @ s_mri
    across = np.linalg.norm(e - np.outer(a, s_mri), axis=1)
    return float(np.abs(a).mean()), float(across.mean())


def rows_usnav(results: Path, manifest: Path):
    from usnav.evaluate.truth import load_scorer

    base = manifest.parent
    with open(manifest) as f:
        cases = {r["case"]: r for r in csv.DictReader(f)}
    for case, r in cases.items():
        res = results / case / "result.json"
        if not res.exists():
            continue
        doc = json.loads(res.read_text())
        reason = doc.get("reason", "")
        if "ambiguous" not in reason:
            continue
        scorer = load_scorer(base / r["truth"])
        init = np.array(doc["InitialReferenceToMri"])
        cand = np.array(doc["CandidateReferenceToMri"])
        axis, centre = sweep_axis(base / r["recording"], base / r["calibration"])
        part, d = partial(init, cand, axis, centre)
        truth = scorer.sim.reference_to_mri
        row = dict(
            case=case,
            family=r.get("family", ""),
            init=scorer.error_now_mm(init),
            cand=scorer.error_now_mm(cand),
            part=scorer.error_now_mm(part),
            moved_along=d,
            reason=reason[:60],
        )
        pts = scorer.sim.points()
        s_mri = truth[:3, :3] @ axis
        for name, T in (("init", init), ("cand", cand), ("part", part)):
            a, c = along_across(pts, T, truth, s_mri)
            row[f"{name}_along"], row[f"{name}_across"] = a, c
        yield row


def rows_indep(cases: Path):
    here = Path(__file__).parent / "indep-sim"
    sys.path.insert(0, str(here))
    import anatomy as A
    import nibabel as nib
    import score as S

    for d in sorted(p for p in cases.iterdir() if (p / "result.json").exists()):
        doc = json.loads((d / "result.json").read_text())
        reason = doc.get("reason", "")
        truth = S.load_mat(d / "truth.txt")
        init = np.array(doc["InitialReferenceToMri"])
        cand = np.array(doc["CandidateReferenceToMri"])
        img = nib.load(d / "tumor_label.nii.gz")
        pts = A.tumor_surface_points(np.asarray(img.dataobj), img.affine)
        axis, centre = sweep_axis(d / "sweep.igs.mha", d / "cal.txt")
        part, moved = partial(init, cand, axis, centre)
        s_mri = truth[:3, :3] @ axis
        row = dict(
            case=d.name,
            accepted=doc["accepted"],
            init=S.err(init, truth, pts),
            cand=S.err(cand, truth, pts),
            part=S.err(part, truth, pts),
            moved_along=moved,
            reason=reason[:60],
        )
        for name, T in (("init", init), ("cand", cand), ("part", part)):
            a, c = along_across(pts, T, truth, s_mri)
            row[f"{name}_along"], row[f"{name}_across"] = a, c
        yield row


def show(rows):
    rows = list(rows)
    for r in rows:
        print(
            "  ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items())
        )
    amb = [r for r in rows if "ambiguous" in r["reason"]]
    if amb:
        for k in ("init", "cand", "part"):
            v = np.array([r[k] for r in amb])
            print(
                f"ambiguous ({len(amb)}): {k} median {np.median(v):.2f} mm, "
                f"under 2 mm {np.sum(v < 2)}"
            )


if __name__ == "__main__":
    if sys.argv[1] == "usnav":
        show(rows_usnav(Path(sys.argv[2]), Path(sys.argv[3])))
    else:
        show(rows_indep(Path(sys.argv[2])))
