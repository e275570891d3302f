"""MIND-SSC against LC² (#16 item 3, not shipped): the similarity's profile around the true
pose and the time per evaluation, per metric, on simulated cases (``<family>-<seed>`` folders
with truth.json).

    python notes/mindssc.py profile ROOT [METRIC[:DIST[:WEIGHTING]],...] [N_CASES]
    python notes/mindssc.py families ROWS.jsonl     # per-family table of acclevers.py rows
    python notes/mindssc.py truth TRUTH.jsonl ...   # table of acclevers.py --truth rows
    python notes/mindssc.py dnh LABEL=ROWS.jsonl ... # table of dnhstudy.py small/decoy/gain rows

RESECT Case 24 (report only): ``python notes/dnhresect.py DATA_DIR same|regrid lc2,mind_ssc``.

For each case and metric, at the finest level of the default search (0.5 mm, 40 frames):
the similarity at the true pose, the mean drop of the similarity when the truth is shifted by
1, 2, 4 and 15 mm along the three MRI axes (a sharper, deeper peak is a better cost for the
search and the prior/threshold scales), and the median seconds per evaluation (one thread).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def parse_metric(spec: str) -> tuple[str, dict]:
    """``mind_ssc:2:us_std`` → ("mind_ssc", {"mind_distance": 2, "mind_weighting": "us_std"})."""
    parts = spec.split(":")
    kw: dict = {}
    if len(parts) > 1 and parts[1]:
        kw["mind_distance"] = int(parts[1])
    if len(parts) > 2 and parts[2]:
        kw["mind_weighting"] = parts[2]
    return parts[0], kw


def profile(root: Path, specs: list[str], n_cases: int) -> None:
    from dnhstudy import emit
    from regstudy import load_family

    from usnav.registration.rigid import RegistrationOptions, SweepRegistration
    from usnav.registration.similarity import FrameSimilarity

    folders = sorted(p for p in root.iterdir() if (p / "truth.json").exists())
    folders = folders[:: max(1, len(folders) // n_cases)][:n_cases]
    for folder in folders:
        seed = int(folder.name.rsplit("-", 1)[1])
        mri, sweep, truth, _ = load_family(folder, "base", seed)
        problem = SweepRegistration(mri, sweep, truth.init_reference_to_mri, RegistrationOptions())
        level = problem.level(-1)
        for spec in specs:
            metric, kw = parse_metric(spec)
            sim = FrameSimilarity(
                level.mri, level.frames, metric=metric, patch_half=level.similarity.patch_half, **kw
            )
            t = truth.reference_to_mri
            s0 = sim(t)
            row = {"case": folder.name, "metric": spec, "sim_truth": s0}
            for d in (1.0, 2.0, 4.0, 15.0):
                drops = []
                for axis in range(3):
                    for sign in (-1, 1):
                        m = t.copy()
                        m[axis, 3] += sign * d
                        drops.append(s0 - sim(m))
                row[f"drop{d:g}"] = float(np.mean(drops))
                row[f"min_drop{d:g}"] = float(np.min(drops))
            secs = []
            for k in range(7):
                m = t.copy()
                m[0, 3] += 0.01 * (k + 1)  # a new pose each time (no cache hit)
                t0 = time.perf_counter()
                sim(m)
                secs.append(time.perf_counter() - t0)
            row["ms_per_eval"] = 1000 * float(np.median(secs))
            emit(row)


def _rows(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line[:1] == "{"]


def families(path: str) -> None:
    """Median candidate error per family and variant; accepted > 2 mm and published < 2 mm."""
    rows = _rows(path)
    tags = list(dict.fromkeys(r["tag"] for r in rows))
    fams = sorted({r["family"] for r in rows})
    print(
        "| family | n | "
        + " | ".join(f"{t}: median cand (acc >2 mm, pub <2 mm)" for t in tags)
        + " |"
    )
    print("|---|---|" + "---|" * len(tags))
    for fam in [*fams, "all"]:
        cells = []
        n = 0
        for t in tags:
            rs = [r for r in rows if r["tag"] == t and fam in ("all", r["family"])]
            n = len(rs)
            cand = np.array([r["cand"] for r in rs])
            acc = np.array([r["accepted"] for r in rs])
            pub = np.where(acc, cand, [r["init"] for r in rs])
            cells.append(
                f"{np.median(cand):.2f} ({int(np.sum(acc & (cand > 2)))}, {int(np.sum(pub < 2))})"
            )
        print(f"| {fam} | {n} | " + " | ".join(cells) + " |")


def truth_table(paths: list[str]) -> None:
    """acclevers.py --truth rows: how far the search walks from the truth, and whether the
    candidates score above the truth."""
    print(
        "| variant | from truth: median / max mm | nominal cand: median | "
        "cand above truth (nominal / from truth) | median gain of from-truth optimum |"
    )
    print("|---|---|---|---|---|")
    for path in paths:
        rows = _rows(path)
        walk = np.array([r["cand_from_truth"] for r in rows])
        cand = np.array([r["cand"] for r in rows])
        n = len(rows)
        above = sum(r["sim_cand"] > r["sim_truth"] for r in rows)
        above_t = sum(r["sim_cand_from_truth"] > r["sim_truth"] for r in rows)
        gain = np.median([r["sim_cand_from_truth"] - r["sim_truth"] for r in rows])
        print(
            f"| {rows[0]['tag']} | {np.median(walk):.2f} / {walk.max():.2f} | "
            f"{np.median(cand):.2f} | {above}/{n} / {above_t}/{n} | {gain:+.4f} |"
        )


def dnh_table(specs: list[str]) -> None:
    """dnhstudy.py rows per variant: median candidate and published error, accepted, accepted
    > 2 mm, harm (accepted and worse than the start); for decoys, the ones the image prefers
    to their start (similarity above it) and how many of those were accepted."""
    print(
        "| metric | variant | n | median cand | median published | accepted | accepted > 2 mm "
        "| harm | decoys scoring above their start: accepted |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for spec in specs:
        label, path = spec.split("=", 1)
        rows = _rows(path)
        for variant in dict.fromkeys(r["variant"] for r in rows):
            rs = [r for r in rows if r["variant"] == variant]
            cand = np.array([r["cand"] for r in rs])
            init = np.array([r["init"] for r in rs])
            acc = np.array([r["accepted"] for r in rs])
            pub = np.where(acc, cand, init)
            preferred = [r for r in rs if r["sim"] > r["sim0"] and r["cand"] > r["init"]]
            decoys = (
                f"{sum(r['accepted'] for r in preferred)}/{len(preferred)}"
                if variant.startswith("decoy")
                else "-"
            )
            print(
                f"| {label} | {variant} | {len(rs)} | {np.median(cand):.2f} | "
                f"{np.median(pub):.2f} | {int(acc.sum())} | {int(np.sum(acc & (cand > 2)))} | "
                f"{int(np.sum(acc & (cand > init)))} | {decoys} |"
            )


def main() -> None:
    if sys.argv[1] == "dnh":
        dnh_table(sys.argv[2:])
        return
    if sys.argv[1] == "families":
        families(sys.argv[2])
        return
    if sys.argv[1] == "truth":
        truth_table(sys.argv[2:])
        return
    from usnav.registration import warm_up

    warm_up()
    if sys.argv[1] == "profile":
        specs = sys.argv[3].split(",") if len(sys.argv) > 3 else ["lc2", "mind_ssc"]
        profile(Path(sys.argv[2]), specs, int(sys.argv[4]) if len(sys.argv) > 4 else 4)


if __name__ == "__main__":
    main()
