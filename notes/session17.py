"""Session-17 studies (not shipped).

``python notes/session17.py timeline OUT.jsonl FIRST-LAST [VARIANT_JSON]``
    Tuning families only. The safety bench's live run (replay at half pace, four sweeps,
    ``LivePipeline``, ZeroMQ subscriber) on tuning seeds FIRST..LAST (the four tuning
    families cycling), with ``WorkerOptions`` overridden by VARIANT_JSON (e.g.
    ``'{"first_threads": 0}'``). Per case: the mean boundary error of all in-view margins,
    of those drawn before the first image-based estimate and their share, the final error,
    the frame path's latency p99 over the first 12 s, and every worker try (when it ended,
    window frames, seconds, accepted).
``python notes/session17.py show OUT.jsonl...``
    The per-case lines and the pooled mean of each file.
``python notes/session17.py ties OUT.jsonl CASE_FOLDER...``
    Tuning families only. Per simulated case, at the finest level of the default
    registration: the MIND-SSC optimum refined from the truth (R) and the verdict's sweep
    probes from it (``_sweep_probes``: ±6, ±9 mm along the sweep); for R and each probe's
    optimum, the error, MIND-SSC (40 frames), LC² (the same frames) and MIND-SSC on every
    frame.
``python notes/session17.py ties-analyse OUT.jsonl``
    Pairs (R under 2 mm, a distinct pose over 2 mm off), the ties of MIND-SSC (< 0.005) and
    what LC² or every frame says about them, on odd (selection) and even (confirmation)
    seeds.
``python notes/session17.py report FIRST_SEED``
    REPORT only: ``usnav bench``'s display-state figures (``bench_safety``) on six fresh
    held-out seeds FIRST_SEED.. (the bench's held-out family order), instead of 3101-3106.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

TUNE = ("baseline", "trailing-echo", "compressed-gain", "speckle-shadow")


def timeline(out_file: str, seeds: str, variant_json: str = "{}") -> None:
    from usnav.bench import bench_safety as S
    from usnav.bench.registry import BenchContext
    from usnav.pipeline import stats as ST
    from usnav.registration import warm_up
    from usnav.registration import worker as W

    tries: list[dict] = []
    latencies: list[tuple[float, float]] = []
    update, add = W.RegistrationWorker.update, ST.LatencyMeter.add

    def timed_update(self, window):
        t0 = time.perf_counter()
        warm = self._image_accepted
        estimate = update(self, window)
        tries.append(
            {
                "t": time.time(),
                "n": len(window),
                "warm": warm,
                "s": time.perf_counter() - t0,
                "acc": None if estimate is None else bool(estimate.accepted),
            }
        )
        return estimate

    def timed_add(self, value):
        latencies.append((time.time(), value))
        add(self, value)

    W.RegistrationWorker.update = timed_update
    ST.LatencyMeter.add = timed_add
    variant = json.loads(variant_json)
    init = W.WorkerOptions.__init__

    def overridden(self, **kw):
        kw.update(variant)
        init(self, **kw)

    W.WorkerOptions.__init__ = overridden
    first, last = map(int, seeds.split("-"))
    warm_up()
    ctx = BenchContext(work_dir=Path(out_file).parent / "work")
    with open(out_file, "a") as out:
        for seed in range(first, last + 1):
            family = TUNE[(seed - 1) % 4]
            files = S._simulate(seed, family, ctx.work_dir / "safety", 120)
            tries.clear()
            latencies.clear()
            t0 = time.time()
            run = S._run_case(ctx, seed, family, 120, files=files)
            means = np.array([r[3] for r in run.in_view])
            before = ~np.array([bool(r[8].header.registration_checked) for r in run.in_view])
            record = {
                "seed": seed,
                "family": family,
                "variant": variant,
                "n": len(means),
                "mean": float(means.mean()),
                "before": float(means[before].mean()) if before.any() else 0.0,
                "frac_before": float(before.mean()),
                "final": run.final_tre_mm,
                "lat_p99_first_ms": 1e3
                * float(np.percentile([v for t, v in latencies if t - t0 < 12], 99)),
                # (session 18) the whole run's p99, and the warm updates' median seconds
                "lat_p99_ms": 1e3 * float(np.percentile([v for _, v in latencies], 99)),
                "warm_s_median": float(np.median([d["s"] for d in tries if d["warm"]] or [0])),
                "tries": [dict(d, t=d["t"] - t0) for d in tries],
            }
            out.write(json.dumps(record) + "\n")
            out.flush()


def show(files: list[str]) -> None:
    for name in files:
        rows = [json.loads(line) for line in Path(name).read_text().splitlines()]
        for r in rows:
            first = [(round(d["t"], 1), d["n"], round(d["s"], 1), d["acc"]) for d in r["tries"][:3]]
            print(
                f"{name} {r['seed']} {r['family']:16s} mean {r['mean']:.3f} before "
                f"{r['before']:.2f} ({100 * r['frac_before']:.0f} %) final {r['final']:.2f} "
                f"latency p99 {r['lat_p99_first_ms']:.1f} ms {first}"
            )
        n = np.array([r["n"] for r in rows])
        m = np.array([r["mean"] for r in rows])
        print(f"{name}: pooled mean {float((n * m).sum() / n.sum()):.3f} mm, {len(rows)} cases")


def report(first_seed: str) -> None:
    from usnav.bench import bench_safety as S
    from usnav.bench.registry import BenchContext

    base = int(first_seed)
    S.FULL_CASES = tuple((base + i, look) for i, (_, look) in enumerate(S.FULL_CASES))
    ctx = BenchContext(full=True, work_dir=Path("/tmp/s17/report"), progress=print)
    for figure in S.bench_display_state(ctx):
        print(
            f"{figure.name}: {figure.value} {figure.unit} (target {figure.target}); "
            f"baseline {figure.baseline_name} {figure.baseline_value}; {figure.note}"
        )


def ties(out_file: str, *folders: str) -> None:
    from usnav.bench.bench_registration import _load_case
    from usnav.registration import warm_up
    from usnav.registration.options import RegistrationOptions
    from usnav.registration.pose import _apply, _optimise, correction, mean_displacement
    from usnav.registration.search import SweepRegistration
    from usnav.registration.similarity import (
        FrameSimilarity,
        prepare_frame_level,
        set_threads,
    )

    warm_up()
    set_threads(1)
    with open(out_file, "a") as out:
        for name in folders:
            folder = Path(name)
            mri, sweep, _, truth = _load_case(folder)
            opts = RegistrationOptions()
            problem = SweepRegistration(mri, sweep, truth.init_reference_to_mri, opts)
            level = problem.level(-1)
            sim = level.similarity
            s = level.frames.spacing_mm
            pts = problem.points_reference
            true = truth.reference_to_mri
            centre = _apply(true, pts).mean(axis=0)
            x, _, _ = _optimise(
                lambda p, sim=sim, centre=centre, true=true: -sim(correction(p, centre) @ true),
                np.zeros(6),
                np.r_[[0.5 * s] * 3, [0.5 * s] * 3],
                80,
                0.03 * s,
            )
            right = correction(x, centre) @ true
            lc2 = FrameSimilarity(level.mri, level.frames, metric="lc2", patch_half=sim.patch_half)
            every = prepare_frame_level(
                sweep, s, max_frames=10_000, ignore_zero_pixels=opts.ignore_zero_pixels
            )
            mind_all = FrameSimilarity(
                level.mri, every, metric=sim.metric, patch_half=sim.patch_half
            )
            poses, _ = problem._sweep_probes(right)
            record = {
                "case": folder.name,
                "R_err": truth.mtre(right),
                "R_mind": sim(right),
                "R_lc2": lc2(right),
                "R_all": mind_all(right),
                "frames_all": len(every),
                "alts": [
                    {
                        "off": offset,
                        "dist": mean_displacement(other, right, pts),
                        "err": truth.mtre(other),
                        "mind": sim(other),
                        "lc2": lc2(other),
                        "all": mind_all(other),
                    }
                    for other, offset in poses
                ],
            }
            out.write(json.dumps(record) + "\n")
            out.flush()


def _tie_pairs(records: list[dict]) -> list[dict]:
    pairs = []
    for r in records:
        if r["R_err"] >= 2.0:
            continue
        for a in r["alts"]:
            if a["dist"] <= 2.0 or a["err"] <= 2.0:
                continue
            pairs.append(
                {
                    "g": r["R_mind"] - a["mind"],
                    "lc2": r["R_lc2"] - a["lc2"],
                    "all": r["R_all"] - a["all"],
                }
            )
    return pairs


def ties_analyse(in_file: str) -> None:
    records = [json.loads(line) for line in Path(in_file).read_text().splitlines()]
    odd = [r for r in records if int(r["case"].rsplit("-", 1)[1]) % 2 == 1]
    even = [r for r in records if int(r["case"].rsplit("-", 1)[1]) % 2 == 0]
    sel, conf = _tie_pairs(odd), _tie_pairs(even)
    print(f"cases {len(records)}, R under 2 mm {sum(r['R_err'] < 2 for r in records)}")
    for name, pairs in (("selection", sel), ("confirmation", conf)):
        g = np.array([p["g"] for p in pairs])
        quantiles = np.round(np.quantile(g, [0, 0.05, 0.1, 0.25, 0.5]), 4)
        print(
            f"{name}: {len(g)} pairs, MIND gap quantiles {quantiles}, ties "
            f"{int((np.abs(g) < 0.005).sum())}, MIND prefers the wrong pose {int((g < 0).sum())}"
        )
    for x in ("lc2", "all"):
        tied_sel = np.array([p[x] for p in sel if abs(p["g"]) < 0.005])
        tied_conf = np.array([p[x] for p in conf if abs(p["g"]) < 0.005])
        margin = max(0.0, float((-tied_sel).max()) + 1e-9) if tied_sel.size else float("nan")
        print(
            f"{x}: ties X(R) - X(W) selection {np.round(np.sort(tied_sel), 4)}, margin "
            f"{margin:.4f}; confirmation {np.round(np.sort(tied_conf), 4)}: rescued "
            f"{int((tied_conf >= margin).sum())}, false accepts {int((-tied_conf >= margin).sum())}"
        )
        for name, pairs in (("selection", sel), ("confirmation", conf)):
            values = np.array([p[x] for p in pairs])
            print(
                f"   {x} {name}: prefers the wrong pose in {int((values < 0).sum())} "
                f"of {len(values)}"
            )


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {
        "timeline": timeline,
        "show": lambda *f: show(list(f)),
        "report": report,
        "ties": ties,
        "ties-analyse": ties_analyse,
    }[command](*args)
