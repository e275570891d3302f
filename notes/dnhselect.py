"""Selection of the do-no-harm confirmation rule on the tuning rows of notes/dnhstudy.py
(#16): each candidate rule is applied offline to the accepted estimates (a rule can only turn
an acceptance into a rejection, which publishes the initial estimate), and its effect printed
as a markdown table; decoy rows (wrong basins judged against a fair initial estimate) measure
each rule's power on its own (the other tests are ignored for them).

    python notes/dnhselect.py RUNS.jsonl [MORE.jsonl ...]
"""

from __future__ import annotations

import json
import sys

import numpy as np


def load(path: str) -> list[dict]:
    """Rows as the verdict without the confirmation would have judged them (the confirmation
    is the verdict's last test: a row it rejected passed every other one)."""
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for r in rows:
        if r["reason"].startswith("rejected: unconfirmed"):
            r["accepted"] = True
    return rows


def get(r: dict, key: str, default: float = np.nan) -> float:
    """A statistic of the verdict, or the one the harness measured beside it (``x_``)."""
    return r.get(key, r.get("x_" + key, default))


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
        "median": float(np.median(final)),
        "lt2": float(np.mean(final < 2.0)),
        "accepted": acc,
        "acc_gt2": acc_bad,
        "harm": harm,
        "caught": caught,
        "lost": lost,
    }


def confirm(m: float):
    return lambda r: get(r, "local_distance_mm", 0.0) > 2.0 and get(r, "local_margin", 1.0) < m


def rules() -> dict:
    out = {"none (rule off)": lambda r: False}
    for m in (-0.005, 0.0, 0.005, 0.01, 0.02):
        out[f"confirm: distinct & margin < {m:g}"] = confirm(m)
    for c in (8.0, 10.0, 12.0):
        out[f"correction > {c:g} mm"] = lambda r, c=c: r["corr"] > c
    for q in (0.1, 0.15):
        out[f"split spread > {q:g} × correction"] = lambda r, q=q: (
            get(r, "split_spread_mm", 0.0) > q * r["corr"]
        )
    for q in (0.1, 0.2):
        out[f"model term > {q:g} × correction"] = lambda r, q=q: (
            get(r, "model_spread_mm", 0.0) > q * r["corr"]
        )
    for m in (0.01, 0.015):
        out[f"ambiguity margin < {m:g}"] = lambda r, m=m: get(r, "ambiguity_margin", 1.0) < m
    return out


def main() -> None:
    rows = [r for path in sys.argv[1:] for r in load(path)]
    decoys = [r for r in rows if r["variant"].startswith("decoy")]
    rows = [r for r in rows if not r["variant"].startswith("decoy")]
    # wrong decoys (worse than the start) that the image prefers to the start
    above = [d for d in decoys if d["gain"] > 0 and d["cand"] > d["init"]]
    print(
        f"{len(rows)} runs ({len({r['case'] for r in rows})} cases), {len(decoys)} decoys "
        f"({len(above)} scoring above the current estimate)\n"
    )
    print(
        "| rule (rejects an accepted candidate if) | median final mm | < 2 mm | accepted | "
        "accepted > 2 mm | harm | bad caught | good lost | decoys rejected |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, rule in rules().items():
        o = outcome(rows, rule)
        power = sum(bool(rule(d)) for d in above)
        print(
            f"| {name} | {o['median']:.2f} | {100 * o['lt2']:.0f} % | {o['accepted']} | "
            f"{o['acc_gt2']} | {o['harm']} | {o['caught']} | {o['lost']} | "
            f"{power}/{len(above)} |"
        )
    print("\naccepted rows whose confirmation search ended > 2 mm away (margin, error):")
    dist = sorted(
        (r["local_margin"], r["cand"], r["init"], r["case"], r["variant"])
        for r in rows
        if r["accepted"] and r.get("local_distance_mm", 0) > 2.0
    )
    for m, c, i, case, v in dist:
        print(f"  {m:+.4f}  {case} {v}: {i:.2f} -> {c:.2f} mm")
    print("decoys above the start (margin, error):")
    for d in sorted(above, key=lambda d: -d["x_local_margin"]):
        print(
            f"  {d['x_local_margin']:+.4f} at {d['x_local_distance_mm']:.1f} mm  {d['case']}: "
            f"{d['init']:.2f} -> {d['cand']:.2f} mm ({d['reason'][:40]})"
        )


if __name__ == "__main__":
    main()
