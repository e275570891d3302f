"""Session 42: the one- and two-similarity tumor stage on the same cases, by the rule of
notes/session-42.md §5 (accepted cases; the bony estimates are the same in both runs).

    python notes/session42_stage_compare.py ONE_RESULTS TWO_RESULTS
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np


def accepted(folder: str) -> dict[str, dict]:
    out = {}
    with open(Path(folder) / "results.csv", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if row["status"] == "ok" and row["accepted"] == "true":
                res = json.loads((Path(folder) / "cases" / row["case"] / "result.json").read_text())
                stage = res.get("tumor_stage") or {}
                row["stage_seconds"] = float(stage.get("seconds") or 0.0)
                out[row["case"]] = row
    return out


def figures(rows: list[dict]) -> dict[str, float]:
    now = np.array([float(r["error_now_mm"]) for r in rows])
    bony_now = np.array([float(r["candidate_error_now_mm"]) for r in rows])
    return {
        "accepted": len(rows),
        "median_now": round(float(np.median(now)), 3),
        "p90_now": round(float(np.percentile(now, 90)), 3),
        "p95_now": round(float(np.percentile(now, 95)), 3),
        "max_now": round(float(now.max()), 3),
        "over_2mm_now": int(np.sum(now > 2.0)),
        "worse_than_bony_0.3": int(np.sum(now > bony_now + 0.3)),
        "median_registration_s": round(
            float(np.median([float(r["registration_seconds"]) for r in rows])), 3
        ),
        "median_stage_s": round(float(np.median([r["stage_seconds"] for r in rows])), 3),
    }


def main(one_dir: str, two_dir: str) -> None:
    one, two = accepted(one_dir), accepted(two_dir)
    common = sorted(set(one) & set(two))
    if set(one) != set(two):
        print(
            "accepted only in one:",
            sorted(set(one) - set(two)),
            "only in two:",
            sorted(set(two) - set(one)),
        )
    print("one", figures([one[c] for c in common]))
    print("two", figures([two[c] for c in common]))
    for c in common:
        a, b = float(one[c]["error_now_mm"]), float(two[c]["error_now_mm"])
        if abs(a - b) > 0.3:
            bony = float(one[c]["candidate_error_now_mm"])
            print(f"  {c}: {a:.2f} → {b:.2f} mm (bony now {bony:.2f})")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
