"""``usnav evaluate`` scaling on Dask: the same manifest with 1 and 2 local worker processes.

Figures: cases per second with each, the speed-up (target ≥ 1.8× with 2 workers on 2 cores),
and the engine's overhead per task against the registration's own time (target ≤ 5 %).
The overhead is what one worker spends per case outside the case itself:
``wall / cases - mean(task seconds)``, the wall clock running from the first task submitted to
the last result (cluster start-up and the once-per-worker kernel warm-up are not per task and
are reported in the note).

Cases: simulator seeds 3001-3040 (full: 40 standard cases) or 3001-3008 (quick: 8 small cases of
60 frames of 128×128 px), the appearance families in turn, made by ``usnav simulate --seeds``'s
function and cached in the bench work folder. Speed only: these seeds are not an
accuracy benchmark. The whole run is measured on a machine that may be shared: the ratio to the
1-worker run of the same bench is the figure to read, and the load average is in the note.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np

from usnav.bench.registry import BenchContext, Figure, benchmark

SEEDS_FULL = tuple(range(3001, 3041))
SEEDS_QUICK = tuple(range(3001, 3009))
QUICK_OPTIONS = {"frames": 60, "image_cols": 128, "image_rows": 128}


def _dataset(ctx: BenchContext) -> tuple[Path, float]:
    """The manifest (``usnav simulate --seeds`` on first use: every appearance family in turn)
    and the seconds one case took to simulate (NaN when all were cached)."""
    from usnav.sim import SIM_VERSION, make_options, simulate_dataset

    options = make_options(**({} if ctx.full else QUICK_OPTIONS))
    seeds = list(SEEDS_FULL if ctx.full else SEEDS_QUICK)
    root = ctx.work_dir / "evaluate" / f"dataset-v{SIM_VERSION}-{'full' if ctx.full else 'quick'}"
    ctx.progress(f"simulating up to {len(seeds)} cases (cached)")
    t0 = time.perf_counter()
    made = simulate_dataset(seeds, root, options)
    seconds = time.perf_counter() - t0
    sim_s = seconds / len(made.simulated) if made.simulated else float("nan")
    return made.manifest, sim_s


def _cpu_share(report) -> float:
    """CPU seconds the tasks' threads got over their wall seconds."""
    return float(np.sum(report.cpu_seconds) / max(np.sum(report.task_seconds), 1e-9))


@benchmark("usnav evaluate on Dask: the same manifest with 1 and 2 local workers", "evaluate")
def bench_scaling(ctx: BenchContext) -> list[Figure]:
    from usnav.evaluate.runner import run_evaluation

    manifest, sim_s = _dataset(ctx)
    reports, totals = {}, {}
    for workers in (1, 2):
        out = ctx.work_dir / "evaluate" / f"results-{workers}w"
        shutil.rmtree(out, ignore_errors=True)  # a fresh run, not a resume
        ctx.progress(f"evaluating with {workers} worker(s)")
        t0 = time.perf_counter()
        reports[workers] = run_evaluation(manifest, out, workers=workers)
        totals[workers] = time.perf_counter() - t0
    one, two = reports[1], reports[2]
    n = one.ran
    tps1, tps2 = n / one.wall_s, two.ran / two.wall_s
    speedup = tps2 / tps1
    task_s = float(np.mean(one.task_seconds))
    reg_s = float(np.mean(one.registration_seconds)) if one.registration_seconds else float("nan")
    overhead_s = one.wall_s / n - task_s
    overhead_pct = 100.0 * overhead_s / reg_s
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    failed = one.failed + two.failed
    figures = [
        Figure(
            f"cases per second, {n} cases, 2 worker processes",
            tps2,
            "cases/s",
            target="≥ 1.8× one worker",
            met=speedup >= 1.8,
            baseline_name="1 worker process (same manifest, same run)",
            baseline_value=tps1,
            note=f"speed-up {speedup:.2f}× (efficiency {50 * speedup:.0f} %); a task's thread "
            f"got {_cpu_share(one):.0%} of a core with 1 worker, {_cpu_share(two):.0%} with 2 "
            f"(100 % = the machine was not the limit); load average {load} on "
            f"{os.cpu_count()} cores; {failed} case(s) failed",
        ),
        Figure(
            "engine overhead per task, 1 worker (wall/case - task time)",
            overhead_pct,
            "% of a registration",
            target="≤ 5 %",
            met=overhead_pct <= 5.0,
            higher_is_better=False,
            note=f"{overhead_s * 1e3:.0f} ms per case against {reg_s:.2f} s of registration "
            f"({task_s:.2f} s per task with margins and scoring); once per run: start-up "
            f"{totals[1] - one.wall_s:.1f} s incl. kernel warm-up "
            f"{np.nanmax(list(one.warm_up_s.values()) or [np.nan]):.1f} s per worker",
        ),
    ]
    if ctx.full:
        # 200 cases end to end, extrapolated from this run: simulating one at a time (the
        # simulator's own threads use both cores) then evaluating with 2 workers
        total_min = (200 * sim_s + 200 / tps2 + (totals[2] - two.wall_s)) / 60
        figures.append(
            Figure(
                "200 simulated cases, simulated and evaluated end to end (extrapolated)",
                total_min,
                "min",
                target="≤ 20 min",
                met=bool(total_min <= 20) if np.isfinite(total_min) else None,
                higher_is_better=False,
                note=f"extrapolated from {n} cases: {sim_s:.1f} s to simulate one, "
                f"{1 / tps2:.2f} s per case evaluated with 2 workers; not a 200-case run"
                if np.isfinite(sim_s)
                else "cases were cached: no simulation time measured (clear the bench cache)",
            )
        )
    return figures
