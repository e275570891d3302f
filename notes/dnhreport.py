"""Report tables of the do-no-harm confirmation (#16) with the rule and with it off, from
`usnav evaluate` results (held-out families) or notes/dnhresect.py lines (Case 24). The rule is
the verdict's last test, so a run it rejected is, with the rule off, accepted with the same
candidate, uncertainty and confidence: the table without it is exact, not re-run.

    python notes/dnhreport.py evaluate RESULTS_DIR
    python notes/dnhreport.py resect RESECT.jsonl
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np


def evaluate_rows(folder: Path) -> list[dict]:
    out = []
    with open(folder / "results.csv", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["status"] != "ok":
                out.append({"group": r["family"], "failed": True})
                continue
            doc = json.loads((folder / "cases" / r["case"] / "result.json").read_text())
            out.append(
                {
                    "group": r["family"],
                    "case": r["case"],
                    "init": float(r["init_error_mm"]),
                    "cand": float(r["candidate_error_mm"]),
                    "accepted": r["accepted"].lower() == "true",
                    "unc": doc["uncertainty_mm"],
                    "confident": doc["confident"],
                    "reason": doc["reason"],
                    "diagnostics": doc["diagnostics"],
                    "failed": False,
                }
            )
    return out


def resect_rows(path: Path) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            out.append(
                {
                    "group": f"{r['grid']} {'unperturbed' if r['run'] == 'unperturbed' else ''}",
                    "case": r["run"],
                    "init": r["init"],
                    "cand": r["cand"],
                    "accepted": r["accepted"],
                    "unc": r["unc"],
                    "confident": r["confident"],
                    "reason": r["reason"],
                    "diagnostics": {
                        k: r.get(k) for k in ("local_distance_mm", "local_margin") if k in r
                    },
                    "failed": False,
                }
            )
    return out


def judged(r: dict, rule: bool, margin: float) -> tuple[bool, float]:
    """(accepted, published error) with the rule at ``margin`` or off."""
    d = r["diagnostics"]
    unconfirmed_now = r["reason"].startswith("rejected: unconfirmed")
    passed_others = r["accepted"] or unconfirmed_now
    if not passed_others:
        return False, r["init"]
    reached = d.get("local_distance_mm") is not None
    rejects = (
        rule
        and reached
        and d["local_distance_mm"] > 2.0
        and d["local_margin"] is not None
        and d["local_margin"] < margin
    )
    return (False, r["init"]) if rejects else (True, r["cand"])


def summary(rows: list[dict], rule: bool, margin: float) -> dict:
    ok = [r for r in rows if not r["failed"]]
    finals, acc, acc2, harm, cov, conf2, conf = [], 0, 0, 0, 0, 0, 0
    for r in ok:
        a, f = judged(r, rule, margin)
        finals.append(f)
        if a:
            acc += 1
            acc2 += f > 2.0
            harm += f > r["init"] + 1e-9
            cov += r["unc"] is not None and r["unc"] >= f
            conf += bool(r["confident"])
            conf2 += bool(r["confident"]) and f > 2.0
    finals = np.array(finals) if finals else np.array([np.nan])
    return {
        "n": len(ok),
        "failed": len(rows) - len(ok),
        "median": float(np.median(finals)),
        "lt2": float(np.mean(finals < 2.0)),
        "accepted": acc,
        "acc2": acc2,
        "harm": harm,
        "covered": cov,
        "confident": conf,
        "conf2": conf2,
    }


def table(rows: list[dict], margin: float) -> None:
    print(
        "| group | rule | cases | median error mm | < 2 mm | accepted | accepted > 2 mm | "
        "harm (final > initial) | bound ≥ error (accepted) | confident | confident > 2 mm |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    groups = sorted({r["group"] for r in rows})
    for g in [*groups, "all"]:
        sel = rows if g == "all" else [r for r in rows if r["group"] == g]
        for rule in (True, False):
            s = summary(sel, rule, margin)
            name = f"**{g}**" if g == "all" else g
            print(
                f"| {name} | {'on' if rule else 'off'} | {s['n']} | {s['median']:.2f} | "
                f"{100 * s['lt2']:.0f} % | {s['accepted']} | {s['acc2']} | {s['harm']} | "
                f"{s['covered']}/{s['accepted']} | {s['confident']} | {s['conf2']} |"
            )


def main() -> None:
    kind, path = sys.argv[1], Path(sys.argv[2])
    margin = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    rows = evaluate_rows(path) if kind == "evaluate" else resect_rows(path)
    table(rows, margin)
    print("\nruns the rule changes, and harm either way:")
    for r in rows:
        if r["failed"]:
            continue
        on, off = judged(r, True, margin), judged(r, False, margin)
        if on != off or off[1] > r["init"] or on[1] > r["init"]:
            d = r["diagnostics"]
            print(
                f"  {r['group']} {r['case']}: init {r['init']:.2f}, candidate {r['cand']:.2f}, "
                f"with rule {'accepted' if on[0] else 'rejected'} {on[1]:.2f}, without "
                f"{'accepted' if off[0] else 'rejected'} {off[1]:.2f}; local "
                f"{d.get('local_distance_mm')} mm, margin {d.get('local_margin')}"
            )


if __name__ == "__main__":
    main()
