"""Session 21: the four ways of reg_removed.sh side by side. Usage: python compare_removed.py"""

import glob
import os

import numpy as np
import score

VARIANTS = ("plain", "exact", "shift2", "bone")


def main():
    rows = []
    for ready in sorted(glob.glob("cases/*/READY")):
        d = os.path.dirname(ready)
        if not all(os.path.exists(f"{d}/result_{v}.json") for v in VARIANTS):
            continue
        rows.append({v: score.score(d, f"result_{v}.json") for v in VARIANTS})
    for v in VARIANTS:
        res = [r[v] for r in rows]
        acc = [a for a in res if a["accepted"]]
        fe = np.array([a["final_err"] for a in res])
        ce = np.array([a["cand_err"] for a in res])
        covered = sum((a["uncertainty_mm"] or 0) >= a["final_err"] for a in acc)
        print(
            f"{v:6s} cases {len(res)}: accepted {len(acc)}, accepted > 2 mm "
            f"{sum(a['final_err'] > 2 for a in acc)}, bound >= error {covered}/{len(acc)}, "
            f"published median {np.median(fe):.2f} mm, under 2 mm {int((fe < 2).sum())}, "
            f"candidate median {np.median(ce):.2f} mm"
        )


if __name__ == "__main__":
    main()
