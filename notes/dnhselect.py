"""Selection of the do-no-harm confirmation rule on the tuning rows of notes/dnhstudy.py
(#16): each candidate rule is applied offline to the accepted estimates (a rule can only turn
an acceptance into a rejection, which publishes the initial estimate), and its effect printed.

    python notes/dnhselect.py TUNE.jsonl
"""

from __future__ import annotations

import json
import sys

import numpy as np


def load(path: str) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


def outcome(rows: list[dict], reject) -> dict:
    """Figures over rows with the rule ``reject(row) -> bool`` applied to accepted rows."""
    final, acc_bad, harm, lost, caught, acc = [], 0, 0, 0, 0, 0
    for r in rows:
        accepted = r["accepted"] and not reject(r)
        bad = r["accepted"] and (r["cand"] > 2.0 or r["cand"] > r["init"])
        if r["accepted"] and not accepted:
            caught += bad
            lost += not bad
        f = r["cand"] if accepted else r["init"]
        final.append(f)
        acc += accepted
        acc_bad += accepted and f > 2.0
        harm += accepted and f > r["init"]
    final = np.array(final)
    return {
        "n": len(rows),
        "median": float(np.median(final)),
        "lt2": float(np.mean(final < 2.0)),
        "accepted": acc,
        "acc_gt2": acc_bad,
        "harm": harm,
        "caught": caught,
        "lost": lost,
    }


def rules() -> dict:
    out = {"none": lambda r: False}
    for c in (8.0, 10.0, 12.0, 14.0):
        out[f"correction > {c:g} mm"] = lambda r, c=c: r["corr"] > c
    for m in (0.0, 0.005, 0.01, 0.02):
        out[f"local distinct & margin < {m:g}"] = lambda r, m=m: (
            r.get("local_distance_mm", 0) > 2.0 and r.get("local_margin", 1) < m
        )
    for k in (0.001, 0.002, 0.003, 0.005):
        out[f"local distinct & margin < {k:g}/mm × corr"] = lambda r, k=k: (
            r.get("local_distance_mm", 0) > 2.0 and r.get("local_margin", 1) < k * r["corr"]
        )
    for q in (0.1, 0.15, 0.2):
        out[f"split spread > {q:g} × corr"] = lambda r, q=q: (
            r.get("split_spread_mm", 0) > q * r["corr"]
        )
    for q in (0.1, 0.2, 0.3):
        out[f"model > {q:g} × corr"] = lambda r, q=q: r.get("model_spread_mm", 0) > q * r["corr"]
    for m in (0.008, 0.01, 0.015):
        out[f"ambiguity margin < {m:g}"] = lambda r, m=m: r.get("ambiguity_margin", 1) < m
    return out


def main() -> None:
    rows = load(sys.argv[1])
    groups = {"all": rows}
    for v in sorted({r["variant"] for r in rows}):
        groups[v] = [r for r in rows if r["variant"] == v]
    print(f"{len(rows)} rows")
    for name, rule in rules().items():
        o = outcome(rows, rule)
        per = " ".join(
            f"{v}:{outcome(g, rule)['caught']}/{outcome(g, rule)['lost']}"
            for v, g in groups.items()
            if v != "all"
        )
        print(
            f"| {name} | {o['median']:.2f} | {100 * o['lt2']:.0f} % | {o['accepted']} | "
            f"{o['acc_gt2']} | {o['harm']} | {o['caught']} | {o['lost']} | {per} |"
        )
    print("\naccepted bad rows (cand > 2 mm or > init):")
    for r in rows:
        if r["accepted"] and (r["cand"] > 2.0 or r["cand"] > r["init"]):
            print(
                f"{r['case']:24s} {r['variant']:5s} init {r['init']:5.2f} cand {r['cand']:5.2f} "
                f"corr {r['corr']:5.2f} spread {r.get('split_spread_mm', np.nan):.2f} "
                f"model {r.get('model_spread_mm', np.nan):.2f} amb {r.get('ambiguity_margin', np.nan):.4f} "
                f"local d {r.get('local_distance_mm', np.nan):.2f} m {r.get('local_margin', np.nan):+.4f}"
            )


if __name__ == "__main__":
    main()
