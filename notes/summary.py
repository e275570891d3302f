"""Per-family table (markdown) from regstudy JSON lines: published error = candidate if accepted
else initial; coverage over accepted estimates."""

import json
import sys
from collections import defaultdict

import numpy as np

BIAS = None
args = sys.argv[1:]
if args and args[0].startswith("--bias="):
    # recompute uncertainty_mm for another similarity_bias_mm (rows ran with 0.5 mm)
    BIAS = float(args.pop(0).split("=")[1])
rows = []
for name in args:
    with open(name) as fh:
        rows += [json.loads(line) for line in fh]
by = defaultdict(list)
for r in rows:
    if BIAS is not None and r["unc"] is not None:
        r["unc"] = float((r["unc"] ** 2 - 0.5**2 + BIAS**2) ** 0.5)
        r["confident"] = bool(r["accepted"] and r["unc"] <= 2.0)
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
TUNING = ("base", "calib", "sos", "echo", "gain", "geom", "sf:compressed-gain")
tuning = [r for r in rows if r["family"] in TUNING]
held = [r for r in rows if r["family"] not in TUNING]
if tuning:
    print(line("**tuned-on, all**", tuning))
if held:
    print(line("**held-out, all**", held))
