"""Session 41: how much a verdict probe's climb still gains after its k-th evaluation.

The ``trace`` and ``ab`` modes need notes/session41-probe-stop.patch applied (the early-stop
option was measured and not merged: notes/session-41-probes.md).

Two modes, both in one process, registration as ``usnav evaluate --no-margins`` runs a case
(:func:`usnav.evaluate.case.evaluate_case`, tumor label included), one thread:

``trace MANIFEST OUT.jsonl``
    The options as given (default: the ambiguity early stop off). Every ambiguity probe climb
    (:func:`usnav.registration.verdict._climb` under ``_sweep_probes``, the climb along the
    sweep's and the verdict's) and every confirmation search (``_optimise`` under
    ``_confirm``) is recorded: the similarity at each evaluation (``sims``), the similarity it
    is compared with (``ref``: the candidate's at the finest level), the stage. One JSON line
    per climb.

``analyse OUT.jsonl``
    For each k and threshold X: the largest similarity a climb still gained after its k-th
    evaluation among climbs whose gain (``ref`` − best so far) at an evaluation n ≥ k exceeded X
    (the early-stop rule stops there), and the evaluations the rule would save.

``ab MANIFEST OUTDIR ROUNDS X K``
    Each case registered with the early stop off and on (``ambiguity_stop_gain`` X,
    ``ambiguity_stop_after`` K), ROUNDS times, alternating (off first on even cases),
    CPU time (``time.process_time``) of each registration; writes OUTDIR/ab.jsonl: per case
    and variant the verdict, accepted, ReferenceToMri, candidate, similarity, uncertainty_mm,
    diagnostics and cpu seconds. notes/session-41-probes.md says what was learned with it.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

import usnav.registration.verdict as V
from usnav.evaluate.case import evaluate_case
from usnav.io.manifest import read_manifest
from usnav.registration.options import RegistrationOptions

STATE: dict = {"stage": None, "ref": None, "case": None, "cand": None}
RECORDS: list[dict] = []


def _install_trace() -> None:
    orig_climb = V._climb
    orig_optimise = V._optimise
    orig_probes = V.VerdictMixin._sweep_probes
    orig_confirm = V.VerdictMixin._confirm
    orig_amb = V.VerdictMixin._ambiguity
    orig_along = V.VerdictMixin._climb_along_sweep

    def climb(cost, x0, spacing_mm, evaluations, *args, **kw):
        sims: list[float] = []

        def traced(p):
            f = cost(p)
            sims.append(-float(f))
            return f

        res = orig_climb(traced, x0, spacing_mm, evaluations, *args, **kw)
        RECORDS.append(
            dict(
                case=STATE["case"],
                kind="probe",
                stage=STATE["stage"],
                cand=STATE["cand"],
                ref=STATE["ref"],
                sims=sims,
                nfev=res[1],
                x0=[float(v) for v in x0[:3]],
            )
        )
        return res

    def optimise(cost, x0, step, max_evaluations, xtol):
        if STATE["stage"] != "confirm":
            return orig_optimise(cost, x0, step, max_evaluations, xtol)
        sims: list[float] = []

        def traced(p):
            f = cost(p)
            sims.append(-float(f))
            return f

        x, f, k = orig_optimise(traced, x0, step, max_evaluations, xtol)
        RECORDS.append(
            dict(
                case=STATE["case"],
                kind="confirm",
                stage="confirm",
                ref=STATE["ref"],
                sims=sims,
                nfev=k,
                fun=-f,
            )
        )
        return x, f, k

    def probes(self, candidate, *a, **kw):
        STATE["ref"] = float(self.level(-1).similarity(candidate))
        STATE["cand"] = hashlib.sha1(np.ascontiguousarray(candidate).tobytes()).hexdigest()[:10]
        return orig_probes(self, candidate, *a, **kw)

    def confirm(self, candidate, current, similarity, *a, **kw):
        STATE["stage"], STATE["ref"] = "confirm", float(similarity)
        try:
            return orig_confirm(self, candidate, current, similarity, *a, **kw)
        finally:
            STATE["stage"] = None

    def amb(self, *a, **kw):
        STATE["stage"] = "verdict"
        try:
            return orig_amb(self, *a, **kw)
        finally:
            STATE["stage"] = None

    def along(self, *a, **kw):
        STATE["stage"] = "climb"
        try:
            return orig_along(self, *a, **kw)
        finally:
            STATE["stage"] = None

    V._climb = climb
    V._optimise = optimise
    V.VerdictMixin._sweep_probes = probes
    V.VerdictMixin._confirm = confirm
    V.VerdictMixin._ambiguity = amb
    V.VerdictMixin._climb_along_sweep = along


def trace(manifest: str, out: str, options: RegistrationOptions) -> None:
    _install_trace()
    cases = read_manifest(manifest)
    with open(out, "w") as fh:
        for case in cases:
            STATE["case"] = case.case
            RECORDS.clear()
            row = evaluate_case(case, f"{out}.cases", registration_options=options, margins=False)
            for r in RECORDS:
                fh.write(json.dumps(r) + "\n")
            fh.write(json.dumps(dict(case=case.case, kind="row", verdict=row["verdict"])) + "\n")
            print(case.case, row["status"], row["verdict"][:90], flush=True)


def _read(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]


def _gain_table(sims: np.ndarray, ref: float) -> tuple[np.ndarray, np.ndarray]:
    """(gain after n evaluations, similarity still gained after n) for n = 1..len."""
    best = np.maximum.accumulate(sims)
    return ref - best, best[-1] - best


def analyse(path: str) -> None:
    recs = _read(path)
    probes = [r for r in recs if r["kind"] == "probe"]
    confirms = [r for r in recs if r["kind"] == "confirm"]
    # the verdict's probes repeat the climb's last set (same candidate, scores from the cache)
    first = {}
    for r in probes:
        key = (r["case"], r["cand"], tuple(r["x0"]))
        first.setdefault(key, r)
    unique = list(first.values())
    print(f"probe climbs {len(probes)}, distinct {len(unique)}; confirm searches {len(confirms)}")
    final_gain = np.array([r["ref"] - max(r["sims"]) for r in unique])
    print(
        "final probe gain quantiles (0, 5, 25, 50, 75, 95, 100 %):",
        np.round(np.quantile(final_gain, [0, 0.05, 0.25, 0.5, 0.75, 0.95, 1]), 4),
    )
    print(f"probe climbs ending within 0.005 (gain < 0.005): {(final_gain < 0.005).sum()}")
    nfev = np.array([len(r["sims"]) for r in unique])
    print(f"probe evaluations per climb: median {np.median(nfev)}, total {nfev.sum()}")
    for label, group in (("probe", unique), ("confirm", confirms)):
        if not group:
            continue
        total = sum(len(r["sims"]) for r in group)
        print(f"\n== {label}: {len(group)} climbs, {total} evaluations")
        print("largest climb still to come after evaluation k (any gain at k):")
        for k in (7, 8, 10, 12, 15, 20, 25):
            rem = [
                _gain_table(np.array(r["sims"]), r["ref"])[1][k - 1]
                for r in group
                if len(r["sims"]) >= k
            ]
            print(
                f"  k={k:2d}: climbs {len(rem):3d}  max {max(rem):.4f}  "
                f"p99 {np.quantile(rem, 0.99):.4f}  median {np.median(rem):.4f}"
            )
        print("rule 'stop at the first evaluation n >= k whose gain exceeds X':")
        print("   k     X  stopped  saved evals (share)  max remaining climb  worst final gain")
        for k in (7, 8, 10, 12, 15):
            for x in (0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.10):
                stopped = saved = 0
                worst_rem = 0.0
                worst_final = np.inf
                for r in group:
                    gain, rem = _gain_table(np.array(r["sims"]), r["ref"])
                    idx = np.nonzero(gain[k - 1 :] > x)[0]
                    if idx.size == 0:
                        continue
                    n = k - 1 + idx[0]  # 0-based index of the stopping evaluation
                    if n + 1 >= len(gain):
                        continue
                    stopped += 1
                    saved += len(gain) - (n + 1)
                    worst_rem = max(worst_rem, float(rem[n]))
                    worst_final = min(worst_final, float(gain[-1]))
                print(
                    f"  {k:2d}  {x:.2f}  {stopped:7d}  {saved:5d} ({saved / total:5.1%})"
                    f"          {worst_rem:.4f}           {worst_final:.4f}"
                )


def ab(manifest: str, outdir: str, rounds: int, stop_gain: float, stop_after: int) -> None:
    cases = read_manifest(manifest)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    variants = {
        "off": RegistrationOptions(threads=1, ambiguity_stop_gain=None),
        "on": RegistrationOptions(
            threads=1, ambiguity_stop_gain=stop_gain, ambiguity_stop_after=stop_after
        ),
    }
    with open(out / "ab.jsonl", "a") as fh:
        for i, case in enumerate(cases):
            order = ["off", "on"] if i % 2 == 0 else ["on", "off"]
            for rnd in range(rounds):
                for name in order:
                    folder = out / name
                    t0 = time.process_time()
                    row = evaluate_case(
                        case, folder, registration_options=variants[name], margins=False
                    )
                    cpu = time.process_time() - t0
                    res = json.loads((folder / "cases" / case.case / "result.json").read_text())
                    keep = {
                        k: res[k]
                        for k in (
                            "ReferenceToMri",
                            "CandidateReferenceToMri",
                            "BonyReferenceToMri",
                            "TiedCandidateReferenceToMri",
                            "AcrossSweepReferenceToMri",
                            "accepted",
                            "similarity",
                            "uncertainty_mm",
                            "candidate_uncertainty_mm",
                            "confident",
                            "reason",
                            "diagnostics",
                            "evaluations",
                            "tumor_stage",
                        )
                    }
                    fh.write(
                        json.dumps(
                            dict(
                                case=case.case,
                                variant=name,
                                round=rnd,
                                cpu=cpu,
                                status=row["status"],
                                result=keep,
                            )
                        )
                        + "\n"
                    )
                    fh.flush()
                    print(case.case, name, f"{cpu:.2f}", row["verdict"][:70], flush=True)


def grid(path: str) -> None:
    """For every k (7..29) the smallest X (0.005 steps) meeting the margin criterion of
    /tmp/s41/probes/RULE.md (largest remaining climb among the climbs the rule stops, + the
    tie gain 0.005, at most X / 2) and, for comparison, the bare soundness one (+ 0.005 < X),
    with the probe evaluations each would save."""
    recs = _read(path)
    first: dict = {}
    for r in recs:
        if r["kind"] == "probe":
            first.setdefault((r["case"], r["cand"], tuple(r["x0"])), r)
    for label, group in (
        ("probe", list(first.values())),
        ("confirm", [r for r in recs if r["kind"] == "confirm"]),
    ):
        tables = [_gain_table(np.array(r["sims"]), r["ref"]) for r in group]
        total = sum(len(g) for g, _ in tables)
        print(f"\n== {label}: k, X (margin criterion) saved, X (bare soundness) saved")
        for k in range(7, 30):
            found = {}
            for x in np.arange(0.005, 0.2001, 0.005):
                saved, worst = 0, 0.0
                for gain, rem in tables:
                    idx = np.nonzero(gain[k - 1 :] > x)[0]
                    if idx.size == 0 or k - 1 + idx[0] + 1 >= len(gain):
                        continue
                    n = k - 1 + idx[0]
                    saved += len(gain) - (n + 1)
                    worst = max(worst, float(rem[n]))
                if "margin" not in found and worst + 0.005 <= x / 2:
                    found["margin"] = (x, saved)
                if "bare" not in found and worst + 0.005 < x:
                    found["bare"] = (x, saved)
            m = found.get("margin", (np.nan, 0))
            b = found.get("bare", (np.nan, 0))
            print(
                f"  k={k:2d}  X={m[0]:.3f} saves {m[1]:4d} ({m[1] / total:5.1%})   "
                f"X={b[0]:.3f} saves {b[1]:4d} ({b[1] / total:5.1%})"
            )
        # the climbs' gain at k against what they still climb after it (the worst per bin)
        print(f"{label}: largest remaining climb after k by the gain at k (bins of 0.02)")
        for k in (10, 15, 20, 25):
            row = []
            for lo in np.arange(0.0, 0.12, 0.02):
                rems = [
                    rem[k - 1]
                    for gain, rem in tables
                    if len(gain) >= k and lo <= gain[k - 1] < lo + 0.02
                ]
                worst = max(rems, default=np.nan)
                row.append(f"[{lo:.2f},{lo + 0.02:.2f}): {worst:.3f} n={len(rems)}")
            print(f"  k={k:2d}  " + "  ".join(row))


def compare(path: str) -> None:
    """Read ``ab``'s ab.jsonl: per case, whether every answer is identical with the early stop
    on and off (all but ``diagnostics``, ``evaluations`` and the tumor stage's ``seconds``),
    the diagnostics that differ, the stopped probes, and the median of the per-case CPU
    ratios on/off (each case's median)."""
    rows = _read(path)
    cases = sorted({r["case"] for r in rows})
    ratios, same_all = [], True
    answers = [k for k in rows[0]["result"] if k not in ("diagnostics", "evaluations")]
    for case in cases:
        by = {v: [r for r in rows if (r["case"], r["variant"]) == (case, v)] for v in ("off", "on")}
        if not by["off"] or not by["on"]:
            continue
        a, b = by["off"][0]["result"], by["on"][0]["result"]
        for r in (a, b):  # the tumor stage's wall time is no answer
            if r.get("tumor_stage"):
                r["tumor_stage"].pop("seconds", None)
        same = all(json.dumps(a[k]) == json.dumps(b[k]) for k in answers)
        same_all &= same
        diff = sorted(
            k
            for k in set(a["diagnostics"]) | set(b["diagnostics"])
            if a["diagnostics"].get(k) != b["diagnostics"].get(k)
        )
        cpu = {v: float(np.median([r["cpu"] for r in by[v]])) for v in by}
        ratios.append(cpu["on"] / cpu["off"])
        print(
            f"{case:22s} identical={same} evals {a['evaluations']}->{b['evaluations']} "
            f"stopped={b['diagnostics'].get('ambiguity_stopped_probes')} "
            f"cpu {cpu['off']:.2f}/{cpu['on']:.2f} diag changed: {diff}"
        )
    q = np.quantile(ratios, [0.25, 0.5, 0.75])
    print(
        f"{len(ratios)} cases, all identical: {same_all}; CPU ratio on/off median {q[1]:.3f} "
        f"(quartiles {q[0]:.3f}-{q[2]:.3f})"
    )


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "trace":
        trace(sys.argv[2], sys.argv[3], RegistrationOptions(threads=1, ambiguity_stop_gain=None))
    elif mode == "analyse":
        analyse(sys.argv[2])
    elif mode == "grid":
        grid(sys.argv[2])
    elif mode == "compare":
        compare(sys.argv[2])
    elif mode == "ab":
        ab(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]))
    else:
        raise SystemExit(f"unknown mode {mode!r}: trace, analyse or ab")
