import glob
import json
import os

import numpy as np
from score import score

rows = []
for d in sorted(glob.glob("cases/*/DONE")):
    c = os.path.dirname(d)
    if json.load(open(c + "/meta.json")).get("mri_as_us"):
        continue
    if not os.path.exists(c + "/result.json"):
        rows.append(dict(case=os.path.basename(c), error=open(c + "/reg.err").read()[-300:]))
        continue
    s = score(c)
    rc = open(c + "/reg.rc").read().strip() if os.path.exists(c + "/reg.rc") else "0"
    s["rc"] = rc
    if os.path.exists(c + "/result_truth.json"):
        t = score(c, "result_truth.json")
        s["truth_final"] = t["final_err"]
        s["truth_acc"] = t["accepted"]
        s["truth_cand"] = t["cand_err"]
        s["truth_unc"] = t["uncertainty_mm"]
    rows.append(s)
json.dump(rows, open("results.json", "w"), indent=1)
print(
    "| case | family | init err mm | final err mm | accepted | uncertainty_mm | seconds | candidate err mm | bony err mm | note |"
)
print("|---|---|---|---|---|---|---|---|---|---|")
for s in rows:
    if "error" in s:
        print(f"| {s['case']} | ERROR {s['error']} |")
        continue
    note = ""
    if "shift_mm" in s:
        note = f"shift {s['shift_mm']:.2f} mm; vs tumour truth: final {s['final_err_vs_tumor_truth']:.2f}, bony {s['bony_err_vs_tumor_truth']:.2f}, cand {s['cand_err_vs_tumor_truth']:.2f};"
    if not s["accepted"]:
        note += " " + s["reason"][:110]
    print(
        f"| {s['case']} | {s['family']} | {s['init_err']:.2f} | {s['final_err']:.2f} | {s['accepted']} | {s['uncertainty_mm']} | {s['seconds']} | {s['cand_err']:.2f} | {s['bony_err']:.2f} | {note} |"
    )
ok = [s for s in rows if "error" not in s]
fe = np.array([s["final_err"] for s in ok])
ce = np.array([s["cand_err"] for s in ok])
acc = [s for s in ok if s["accepted"]]
print(
    f"\nN={len(ok)}  median final {np.median(fe):.2f} mm (mean {fe.mean():.2f}); under 2 mm: {(fe < 2).sum()}/{len(ok)} = {100 * (fe < 2).mean():.0f}%"
)
print(
    f"median candidate (before verdict) {np.median(ce):.2f}; candidate <2 mm {(ce < 2).sum()}/{len(ok)}"
)
print(
    f"accepted {len(acc)}/{len(ok)}; accepted with err>2: {sum(s['final_err'] > 2 for s in acc)}; unc>=err among accepted: {sum(s['uncertainty_mm'] >= s['final_err'] for s in acc)}/{len(acc)}"
)
print(
    f"confident (acc & unc<=2): {sum(bool(s['confident']) for s in ok)}; confident with err>2: {sum(bool(s['confident']) and s['final_err'] > 2 for s in ok)}"
)
if acc:
    print(
        f"median err accepted {np.median([s['final_err'] for s in acc]):.2f}; median unc accepted {np.median([s['uncertainty_mm'] for s in acc]):.2f}"
    )
fams = sorted(set(s["family"] for s in ok))
for f in fams:
    e = [s["final_err"] for s in ok if s["family"] == f]
    a = sum(s["accepted"] for s in ok if s["family"] == f)
    c = [s["cand_err"] for s in ok if s["family"] == f]
    print(
        f"  {f:8s} n={len(e)} median final {np.median(e):.2f}  median cand {np.median(c):.2f}  accepted {a}"
    )
tr = [s for s in ok if "truth_final" in s]
print("\nfrom truth (do-no-harm):")
for s in tr:
    print(
        f"  {s['case']}: accepted={s['truth_acc']} final {s['truth_final']:.2f} mm, candidate {s['truth_cand']:.2f} mm, unc {s['truth_unc']}"
    )
