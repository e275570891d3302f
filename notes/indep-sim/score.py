"""Score a usnav register result against our truth. Usage: python score.py CASEDIR [RESULT.json]"""

import json
import sys

import anatomy as A
import nibabel as nib
import numpy as np


def load_mat(path):
    vals = []
    for line in open(path):
        line = line.split("#")[0]
        vals += [float(v) for v in line.split()]
    return np.array(vals).reshape(4, 4)


def err(T, truth, pts):
    M = T @ np.linalg.inv(truth)
    q = pts @ M[:3, :3].T + M[:3, 3]
    return float(np.linalg.norm(q - pts, axis=1).mean())


def score(case, result="result.json"):
    truth = load_mat(f"{case}/truth.txt")
    init = load_mat(f"{case}/init.txt")
    meta = json.load(open(f"{case}/meta.json"))
    img = nib.load(f"{case}/tumor_label.nii.gz")
    pts = A.tumor_surface_points(np.asarray(img.dataobj), img.affine)
    r = json.load(open(f"{case}/{result}"))
    T = np.array(r["ReferenceToMri"])
    B = np.array(r.get("BonyReferenceToMri", r["ReferenceToMri"]))
    C = np.array(r["CandidateReferenceToMri"]) if r.get("CandidateReferenceToMri") else T
    out = dict(
        case=case.rstrip("/").split("/")[-1],
        family=meta["family"],
        seed=meta["seed"],
        init_err=err(init, truth, pts),
        final_err=err(T, truth, pts),
        bony_err=err(B, truth, pts),
        cand_err=err(C, truth, pts),
        accepted=r.get("accepted"),
        uncertainty_mm=r.get("uncertainty_mm"),
        seconds=r.get("seconds"),
        confident=r.get("confident"),
        reason=r.get("reason"),
    )
    s = np.array(meta.get("cord_shift", [0, 0, 0]))
    if np.linalg.norm(s) > 0:
        # tumour truth: surgical tumour = planned tumour + s (in the bony-aligned frame);
        # the ideal map sends Reference point of the surgical tumour to the planned one.
        Tt = np.eye(4)
        Tt[:3, 3] = -s
        out["shift_mm"] = float(np.linalg.norm(s))
        out["final_err_vs_tumor_truth"] = err(T, Tt @ truth, pts)
        out["bony_err_vs_tumor_truth"] = err(B, Tt @ truth, pts)
        out["cand_err_vs_tumor_truth"] = err(C, Tt @ truth, pts)
    return out


if __name__ == "__main__":
    print(json.dumps(score(sys.argv[1], *(sys.argv[2:3] or ["result.json"])), indent=1))
