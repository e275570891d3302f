"""Pipeline benchmarks (issue 7): latency from frame received to margin published while the
registration worker runs, throughput at ``--rate max``, memory growth over a long run.

Everything runs for real: the demo case is served by a playback server in another process over
loopback OpenIGTLink, the pipeline publishes on ZeroMQ. Baseline measured in the same run: the
same pipeline with the registration worker off, so the ratio shows what the worker costs the
frame path on this machine's cores.
"""

from __future__ import annotations

import time

import numpy as np

from usnav.bench.registry import BenchContext, Figure, benchmark


def case_pipeline(
    case,
    port: int,
    options,
    *,
    calibration_file: str = "calibration.toml",
    initial_file: str = "init_ReferenceToMri.txt",
):
    """A :class:`~usnav.pipeline.live.LivePipeline` on a simulated case's files (the MRI, the
    tumor label, and the named calibration and initial ``ReferenceToMri``), its probe client
    pointed at a playback server on ``port`` (not started)."""
    from usnav.config.calibration import load_calibration
    from usnav.devices import ProbeClient
    from usnav.devices.config import ProbeConfig
    from usnav.io.volume import load_volume
    from usnav.pipeline.live import LivePipeline
    from usnav.registration.files import read_initial

    calibration = load_calibration(case / calibration_file)
    probe = ProbeClient(
        ProbeConfig(port=port, transforms=["ProbeToTracker", "ReferenceToTracker"]),
        calibration=calibration,
    )
    return LivePipeline(
        probe,
        load_volume(case / "tumor_label.nii.gz"),
        calibration,
        read_initial(case / initial_file),
        mri=load_volume(case / "mri.nii.gz"),
        options=options,
    )


def _run(ctx: BenchContext, seconds: float, *, rate, registration: bool) -> dict:
    from usnav.devices import serve_in_subprocess
    from usnav.pipeline.config import PipelineOptions
    from usnav.sim import demo_case

    case = demo_case(ctx.work_dir / "cache")
    server = serve_in_subprocess(case / "sweep.igs.mha", port=0, rate=rate, loop=True)
    pipeline = case_pipeline(
        case,
        server.port,
        PipelineOptions(publish_address="tcp://127.0.0.1:*", registration=registration),
    )
    import psutil  # the bench extra: imported where used, so `usnav bench --list` needs none

    process = psutil.Process()
    rss: list[tuple[float, float]] = []
    try:
        pipeline.prepare()
        pipeline.latency.keep_all()
        pipeline.start()
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < seconds:
            time.sleep(0.5)
            rss.append((elapsed, process.memory_info().rss / 2**20))
        received, published = pipeline.counters.received, pipeline.counters.published
        duration = time.monotonic() - t0
        worker = pipeline.worker.stats if pipeline.worker is not None else None
    finally:
        pipeline.stop()
        server.stop()
    latencies = np.asarray(pipeline.latency.all_values or [np.nan]) * 1e3
    return {
        "p50": float(np.percentile(latencies, 50)),
        "p99": float(np.percentile(latencies, 99)),
        "received_fps": received / duration,
        "published_fps": published / duration,
        "rss": rss,
        "updates": worker.updates if worker else 0,
    }


@benchmark("frame received → margin published at 30 fps, registration worker running", "pipeline")
def bench_latency(ctx: BenchContext) -> list[Figure]:
    seconds = 60.0 if ctx.full else 15.0
    busy = _run(ctx, seconds, rate=1.0, registration=True)
    idle = _run(ctx, seconds / 2, rate=1.0, registration=False)
    note = f"{seconds:.0f} s at 30 fps, {busy['updates']} registration updates meanwhile"
    return [
        Figure(
            "latency p50, worker busy",
            busy["p50"],
            "ms",
            "≤ 10 ms",
            busy["p50"] <= 10,
            "same pipeline, worker off",
            idle["p50"],
            higher_is_better=False,
            note=note,
        ),
        Figure(
            "latency p99, worker busy",
            busy["p99"],
            "ms",
            "≤ 25 ms",
            busy["p99"] <= 25,
            "same pipeline, worker off",
            idle["p99"],
            higher_is_better=False,
            note=note,
        ),
    ]


@benchmark("replay at --rate max through the whole pipeline", "pipeline")
def bench_throughput(ctx: BenchContext) -> list[Figure]:
    run = _run(ctx, 20.0 if ctx.full else 8.0, rate="max", registration=True)
    return [
        Figure(
            "margins published per second (registration asynchronous)",
            run["published_fps"],
            "fps",
            "≥ 200 fps",
            run["published_fps"] >= 200,
            note=f"received {run['received_fps']:.0f} fps; the rest superseded (newest wins)",
        ),
    ]


@benchmark("memory over a long run (10 min with --full)", "pipeline")
def bench_memory(ctx: BenchContext) -> list[Figure]:
    seconds = 600.0 if ctx.full else 30.0
    run = _run(ctx, seconds, rate=1.0, registration=True)
    samples = [(t, m) for t, m in run["rss"] if t >= min(60.0, seconds / 3)]
    t, m = np.array(samples).T
    slope = float(np.polyfit(t, m, 1)[0]) * 60.0  # MB per minute after warm-up
    growth = float(m[-1] - m[0])
    return [
        Figure(
            "RSS growth after warm-up",
            growth,
            "MB",
            "flat",
            abs(slope) < 2.0,
            higher_is_better=False,
            note=f"{seconds / 60:.1f} min run, trend {slope:+.2f} MB/min, RSS {m[-1]:.0f} MB",
        ),
    ]
