"""Session 37 (helper "level"): summary of notes/session37_level.py rows.

A candidate is at the wrong level when its error now is over 12 mm (half a vertebra).
``lead`` = min(ambiguity_margin_22mm, ambiguity_margin_25mm) of config B (elevation probes
one vertebra up and down); for a rule "reject when lead < θ" evaluated on B's rows.

``T`` = the tumor stage's frames / the sweep's frames of each accepted row (rule T flags
< 0.30), read from the row's RESULT.json in ``results/`` beside ROWS.jsonl.

    python notes/session37_level_summary.py ROWS.jsonl [ROWS.jsonl ...]
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path


def outcome(r: dict) -> str:
    if r["status"] != 0:
        return f"exit {r['status']}"
    if not r["accepted"]:
        kind = r["reason"].split(":")[1].split("(")[0].strip().split(" ")[0]
        return f"rejected ({kind})"
    return "accepted RIGHT" if r["error_now_mm"] < 12 else "accepted WRONG level"


def main(paths: list[str]) -> None:
    rows = []
    for p in paths:
        for ln in Path(p).read_text().splitlines():
            if ln.strip():
                rows.append(dict(json.loads(ln), results=str(Path(p).parent / "results")))
    for start in ("ordinary", "level+", "level-"):
        for cfg in ("A", "B"):
            sel = [r for r in rows if r["start"] == start and r["config"] == cfg]
            if not sel:
                continue
            c = Counter(outcome(r) for r in sel)
            acc = [r["error_now_mm"] for r in sel if r.get("accepted")]
            over2 = sum(e > 2 for e in acc)
            print(f"{start:8s} {cfg}: n={len(sel)} {dict(sorted(c.items()))} accepted>2mm={over2}")
    print("\nlead (min of 22/25 mm elevation margins, config B), by candidate:")
    for r in rows:
        if r["config"] != "B" or r["status"] != 0:
            continue
        m = r["margins"]
        if "ambiguity_margin_22mm" not in m and "ambiguity_margin_25mm" not in m:
            continue
        lead = min(m.get("ambiguity_margin_22mm", 9), m.get("ambiguity_margin_25mm", 9))
        wrong = r["candidate_error_now_mm"] > 12
        print(
            f"  {r['name']:34s} cand {r['candidate_error_now_mm']:6.2f} "
            f"{'WRONG' if wrong else 'right':5s} lead {lead:+.4f} corr {r['correction_mm']:5.1f} "
            f"{'acc' if r['accepted'] else 'rej'} {r['reason'][:50]}"
        )

    print("\nrule T (tumor stage frames / sweep frames < 0.30), accepted rows:")
    for r in rows:
        if r["status"] != 0 or not r["accepted"]:
            continue
        res = json.loads((Path(r["results"]) / f"{r['name']}.json").read_text())
        seen = ((res["tumor_stage"] or {}).get("frames") or 0) / min(res["frames"], 150)
        wrong = r["error_now_mm"] > 12
        print(
            f"  {r['name']:34s} {'WRONG' if wrong else 'right':5s} T {seen:.3f}"
            f"{'  FLAG' if seen < 0.30 else ''}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
