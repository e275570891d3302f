"""Session 42: the tables of notes/session-42-tumor-stage.md from the two per-case CSVs.

Reads ``rows.csv`` (notes/session42_tumor_stage.py) and ``refit.csv``
(notes/session42_tumor_refit.py) of the same accepted tuning cases, re-scores a few
translations from the bony estimate with :class:`usnav.evaluate.truth.TruthScorer` and prints
markdown::

    python notes/session42_tumor_summary.py DIR CASES RESULTS

(DIR holds the two CSVs; CASES and RESULTS as for the other two scripts.)
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

from usnav.evaluate.truth import load_scorer


def _read(path: Path) -> dict[str, dict]:
    with open(path, encoding="utf-8") as f:
        return {r["case"]: r for r in csv.DictReader(f)}


def _translated(start: np.ndarray, t: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = t
    return m @ start


def variants(rows: dict, refit: dict, cases_dir: Path, results_dir: Path) -> None:
    """Error at the tumor now of translations from the bony estimate (re-scored)."""
    out: dict[str, dict[str, float]] = {}
    for case in sorted(rows):
        res = json.loads((results_dir / "cases" / case / "result.json").read_text("utf-8"))
        bony = np.asarray(res.get("BonyReferenceToMri") or res["ReferenceToMri"], float)
        scorer = load_scorer(cases_dir / case / "truth.json")
        r = refit[case]
        lc2 = np.asarray(json.loads(r["t_refit"]))
        mind = np.asarray(json.loads(r["t_mind"])) if r["mind_applied"] == "True" else np.zeros(3)
        moves = {
            "bony estimate (no stage)": np.zeros(3),
            "LC² stage (shipped)": lc2,
            "MIND-SSC fit alone": mind,
            "mean of LC² and MIND-SSC fits": (lc2 + mind) / 2,
            "half the LC² move": lc2 / 2,
        }
        out[case] = {k: scorer.error_now_mm(_translated(bony, t)) for k, t in moves.items()}
    names = list(next(iter(out.values())))
    base = np.array([out[c][names[0]] for c in out])
    print(
        "| estimate, error at the tumor now (mm) | median | mean | p90 | p95 | max "
        "| worse than bony > 0.05 / > 0.3 | better > 0.05 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for k in names:
        x = np.array([out[c][k] for c in out])
        d = x - base
        print(
            f"| {k} | {np.median(x):.2f} | {x.mean():.2f} | {np.percentile(x, 90):.2f} "
            f"| {np.percentile(x, 95):.2f} | {x.max():.2f} | {(d > 0.05).sum()} / "
            f"{(d > 0.3).sum()} | {(d < -0.05).sum()} |"
        )


def signals(rows: dict, refit: dict) -> None:
    """Run-time signals: the bad moves (worse than bony by > 0.05 mm, or √resid > 1.1 mm)
    against the others."""
    cases = sorted(rows)

    def col(key: str, src: dict) -> np.ndarray:
        return np.array(
            [float(src[c][key]) if src[c][key] not in ("", "None") else np.nan for c in cases]
        )

    bad = (col("delta_now_mm", rows) > 0.05) | (col("sqrt_resid_mm", rows) > 1.1)
    feats = [
        ("shift_mm", rows, "stage: ‖t‖ (mm)"),
        ("similarity_gain", rows, "stage: similarity gain"),
        ("paired_t", rows, "stage: paired t"),
        ("frames", rows, "stage: frames"),
        ("global_paired_t", rows, "bony: paired t"),
        ("model_spread_mm", rows, "bony: model spread (mm)"),
        ("split_spread_mm", rows, "bony: split spread (mm)"),
        ("ambiguity_margin", rows, "bony: ambiguity margin"),
        ("local_margin", rows, "bony: local margin"),
        ("quality", rows, "bony: quality"),
        ("mind_disagree_mm", refit, "re-fit: ‖t_LC² − t_MIND‖ (mm)"),
        ("block_split_mm", refit, "re-fit: halves along the sweep (mm)"),
        ("inter_split_mm", refit, "re-fit: interleaved halves (mm)"),
        ("grid_ambiguity", refit, "re-fit: grid ambiguity"),
    ]
    print(f"bad: {', '.join(c for c, b in zip(cases, bad, strict=True) if b)}")
    print(
        "| signal | the bad ones | the others: median [p10, p90] | AUC | p (uncorrected) "
        "| bad among the 5 highest |"
    )
    print("|---|---|---|---|---|---|")
    for key, src, name in feats:
        x = col(key, src)
        xb, xg = x[bad], x[~bad]
        u = stats.mannwhitneyu(xb, xg)
        auc = u.statistic / (len(xb) * len(xg))
        top = np.argsort(-x)[:5]
        print(
            f"| {name} | {', '.join(f'{v:.3g}' for v in xb)} | {np.median(xg):.3g} "
            f"[{np.percentile(xg, 10):.3g}, {np.percentile(xg, 90):.3g}] | {auc:.2f} "
            f"| {u.pvalue:.2f} | {bad[top].sum()} |"
        )


def main(folder: str, cases: str, results: str) -> None:
    rows = _read(Path(folder, "rows.csv"))
    refit = _read(Path(folder, "refit.csv"))
    variants(rows, refit, Path(cases), Path(results))
    signals(rows, refit)


if __name__ == "__main__":
    main(*sys.argv[1:4])
