"""Item 4: endurance — ``usnav run`` with registration on a 30 fps stream for a long time.

A simulated case (seed-chosen, 30 fps sweep) is served by ``usnav replay --loop`` and run
through ``usnav run`` (registration on), both real processes; a subscriber records every
margin message's frame → margin latency (``Header.latency_s``: frame received by usnav →
arrival at the display) and the RSS of the ``usnav run`` process is sampled every
``sample_s``. Figures: the RSS trend (least-squares slope after the warm-up, MB per 10 min)
and the latency p99 of the first and the last window.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from usnav.lifeline import child_env
from usnav.soak.faults import _case, _free_port, _run_args
from usnav.soak.report import ItemResult

ANCHOR = (
    "PLUS runs for hours in the OR (its memory and latency over time are not published); "
    "targets here: RSS trend < 1 MB per 10 min, last-window p99 no worse than the first"
)
#: "no worse" on a shared machine: the last p99 within this factor (or +5 ms) of the first.
P99_TOLERANCE = 1.25


def run_endurance(
    seed: int = 1,
    minutes: float = 60.0,
    sample_s: float = 10.0,
    warmup_s: float = 60.0,
    case: Path | None = None,
) -> ItemResult:
    """``minutes`` of ``usnav run`` with registration at 30 fps (on ``case``, a simulated
    case folder; default: simulated here)."""
    import psutil

    from usnav.client import Subscriber
    from usnav.devices.playback import serve_in_subprocess

    window_s = min(600.0, minutes * 60.0 / 3.0)
    result = ItemResult(
        "soak: usnav run at 30 fps with registration",
        ANCHOR,
        f"{minutes:g} min of `usnav run` (registration on) on `usnav replay --loop` at 30 fps; "
        f"windows of {window_s / 60:.1f} min after a {warmup_s:.0f} s warm-up; seed {seed}",
    )
    started = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="usnav-soak-endurance-"))
    try:
        if case is None:
            case = _case(folder / "case", seed, frames=90)
        port = _free_port()
        server = serve_in_subprocess(case / "sweep.igs.mha", port=port, loop=True)
        device = folder / "probe.toml"
        device.write_text(
            f'[probe]\nport = {port}\ntransforms = ["ProbeToTracker", "ReferenceToTracker"]\n'
        )
        publish_port = _free_port()
        args = _run_args(case, device, None, folder / "run.log", registration=True)
        args[args.index("--publish") + 1] = f"tcp://127.0.0.1:{publish_port}"
        with (folder / "run.err").open("w") as err_file:
            run = subprocess.Popen(
                [*args, "--duration", str(minutes * 60.0 + warmup_s + 600)],  # ended by us
                stdout=subprocess.DEVNULL,
                stderr=err_file,
                env=child_env(),  # ends with the soak, even a killed one
            )
        process = psutil.Process(run.pid)
        samples: list[tuple[float, float]] = []
        latencies: list[tuple[float, float]] = []
        received = 0
        try:
            with Subscriber(f"tcp://127.0.0.1:{publish_port}", topics=("margin",)) as sub:
                # the clock starts at the first margin (start-up compiles kernels first)
                first = None
                deadline = time.monotonic() + 300
                while first is None and time.monotonic() < deadline and run.poll() is None:
                    first = sub.receive(0.2)
                if first is None:
                    result.fail("usnav run published no margin within 300 s")
                t0 = time.monotonic()
                next_sample = t0
                end = t0 + warmup_s + minutes * 60.0
                while time.monotonic() < end and run.poll() is None:
                    message = sub.receive(0.2)
                    now = time.monotonic()
                    if message is not None:
                        received += 1
                        latency = message.header.latency_s
                        if latency is not None and not message.header.stale:
                            latencies.append((now - t0, latency))
                    if now >= next_sample:
                        next_sample += sample_s
                        samples.append((now - t0, process.memory_info().rss / 1e6))
        finally:
            if run.poll() is None:
                run.send_signal(2)
                try:
                    run.wait(60)
                except subprocess.TimeoutExpired:
                    run.kill()
            server.stop()
        err = (folder / "run.err").read_text(errors="replace")
        result.check("Traceback" not in err, f"usnav run: traceback {err[-300:]}")
        result.check(run.returncode == 0, f"usnav run: exit {run.returncode}")
        result.count = received
        _figures(result, samples, latencies, warmup_s, window_s, minutes)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result.seconds = time.monotonic() - started
    return result


def _figures(
    result: ItemResult,
    samples: list[tuple[float, float]],
    latencies: list[tuple[float, float]],
    warmup_s: float,
    window_s: float,
    minutes: float,
) -> None:
    steady = [(t, m) for t, m in samples if t >= warmup_s]
    if len(steady) >= 3:
        t, m = np.array(steady).T
        slope = float(np.polyfit(t, m, 1)[0]) * 600.0
        result.figures["RSS start MB"] = round(float(m[0]), 1)
        result.figures["RSS end MB"] = round(float(m[-1]), 1)
        result.figures["RSS trend MB/10 min"] = round(slope, 2)
        marks = [m for t, m in steady if int(t) % 120 < int(samples[1][0] - samples[0][0] + 1)]
        result.figures["RSS every 2 min MB"] = " ".join(f"{v:.1f}" for v in marks)
        result.check(slope < 1.0, f"RSS grows {slope:.2f} MB per 10 min")
    else:
        result.fail("too few RSS samples after the warm-up")
    end = warmup_s + minutes * 60.0
    first = [v for t, v in latencies if warmup_s <= t < warmup_s + window_s]
    last = [v for t, v in latencies if end - window_s <= t <= end]
    if len(first) < 10 or len(last) < 10:
        result.fail(f"too few margins in the windows ({len(first)}, {len(last)})")
        return
    p99_first = float(np.percentile(first, 99)) * 1e3
    p99_last = float(np.percentile(last, 99)) * 1e3
    result.figures["margins/s"] = round(len(latencies) / max(1.0, latencies[-1][0] - warmup_s), 1)
    result.figures["latency p50 first ms"] = round(float(np.median(first)) * 1e3, 1)
    result.figures["latency p99 first ms"] = round(p99_first, 1)
    result.figures["latency p50 last ms"] = round(float(np.median(last)) * 1e3, 1)
    result.figures["latency p99 last ms"] = round(p99_last, 1)
    result.check(
        p99_last <= max(P99_TOLERANCE * p99_first, p99_first + 5.0),
        f"latency p99 {p99_last:.0f} ms in the last window vs {p99_first:.0f} ms in the first",
    )
