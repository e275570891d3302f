"""Session 42: compare two usnav evaluate results folders case by case (main against the
branch whose local search returns the best pose it evaluated), by the rule of
notes/session-42-nm.md.

    python notes/session42_nm_compare.py BASE_RESULTS BRANCH_RESULTS
"""

from __future__ import annotations

import csv
import statistics
import sys


def rows(folder: str) -> dict[str, dict[str, str]]:
    with open(f"{folder}/results.csv", encoding="utf-8", newline="") as f:
        return {r["case"]: r for r in csv.DictReader(f)}


def num(row: dict[str, str], key: str) -> float:
    try:
        return float(row[key])
    except (KeyError, ValueError):
        return float("nan")


def summary(table: dict[str, dict[str, str]]) -> dict[str, float]:
    acc = [r for r in table.values() if r["accepted"] == "true"]
    covered = [num(r, "uncertainty_mm") >= num(r, "error_now_mm") for r in acc]
    return {
        "cases": len(table),
        "accepted": len(acc),
        "accepted_over_2mm_now": sum(num(r, "error_now_mm") > 2.0 for r in acc),
        "median_error_now_mm": round(
            statistics.median(num(r, "error_now_mm") for r in table.values()), 4
        ),
        "under_2mm_now": sum(num(r, "error_now_mm") < 2.0 for r in table.values()),
        "bound_covers": sum(covered),
    }


def main(base_dir: str, branch_dir: str) -> None:
    base, branch = rows(base_dir), rows(branch_dir)
    print("base  ", summary(base))
    print("branch", summary(branch))
    moved = 0
    for case in sorted(base):
        a, b = base[case], branch.get(case)
        if b is None:
            print(f"{case}: missing in the branch")
            continue
        d = num(b, "error_now_mm") - num(a, "error_now_mm")
        moved += abs(d) > 1e-4
        if a["accepted"] != b["accepted"] or abs(d) > 0.05:
            print(
                f"{case}: accepted {a['accepted']} → {b['accepted']}, error now "
                f"{num(a, 'error_now_mm'):.3f} → {num(b, 'error_now_mm'):.3f} mm"
            )
    print(f"cases whose error now moved by more than 0.0001 mm: {moved} of {len(base)}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
