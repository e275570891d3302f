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


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"timeline": timeline, "show": lambda *f: show(list(f)), "report": report}[command](*args)
