"""Per-family table (markdown) from regstudy JSON lines: published error = candidate if accepted
else initial; coverage over accepted estimates."""

import json
import sys
from collections import defaultdict

import numpy as np

rows = []
for name in sys.argv[1:]:
    with open(name) as fh:
        rows += [json.loads(line) for line in fh]
by = defaultdict(list)
for r in rows:
    r["pub"] = r["cand"] if r["accepted"] else r["init"]
    r["pub_now"] = r["cand_now"] if r["accepted"] else float("nan")
    by[r["family"]].append(r)


def line(name, rs):
    e = np.array([r["pub"] for r in rs])
    acc = [r for r in rs if r["accepted"]]
    conf = [r for r in rs if r.get("confident")]
    cov = [r for r in acc if r["unc"] is not None and r["unc"] >= r["cand"]]
    cand = np.array([r["cand"] for r in rs])
    return (
        f"| {name} | {len(rs)} | {np.median(e):.2f} | {100 * np.mean(e < 2):.0f} % | "
        f"{np.median(cand):.2f} | {len(acc)} | {sum(r['cand'] > 2 for r in acc)} | {len(conf)} | "
        f"{sum(r['cand'] > 2 for r in conf)} | "
        + (f"{100 * len(cov) / len(acc):.0f} %" if acc else "–")
        + f" | {np.median([r['unc'] for r in acc if r['unc']]) if acc else float('nan'):.2f} |"
    )


print(
    "| family | cases | median error (published) | < 2 mm | median candidate | accepted | "
    "accepted > 2 mm | confident | confident > 2 mm | unc ≥ error | median unc |"
)
print("|---|---|---|---|---|---|---|---|---|---|---|")
for fam, rs in by.items():
    print(line(fam, rs))
print(line("**all**", rows))
