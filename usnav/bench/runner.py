"""Run the registered benchmarks and collect their figures with machine information."""

from __future__ import annotations

import os
import platform
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from usnav.bench.registry import (
    NO_DATA_REASON,
    BenchContext,
    Figure,
    SkipBenchmark,
    all_benchmarks,
    default_work_dir,
)
from usnav.data import shared_data_dir


@dataclass
class BenchRow:
    """One benchmark's outcome: its figures, or the error that stopped it."""

    group: str
    benchmark: str
    figures: list[Figure] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""
    skipped: str = ""
    """Why the benchmark gave no figure (outside data missing...); empty when it ran."""


def machine_info() -> dict[str, str]:
    """What the figures were measured on (they only compare within one run)."""
    import numba
    import numpy

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import psutil

        memory = f"{psutil.virtual_memory().total / 2**30:.0f} GiB"
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except Exception:
        memory, load = "?", "?"
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": memory,
        "load average": load,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "numba": numba.__version__,
        "os": f"{platform.system()} {platform.release()}",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def run_benchmarks(
    *,
    full: bool = False,
    only: list[str] | None = None,
    work_dir: Path | None = None,
    progress=None,
    debug: bool = False,
) -> list[BenchRow]:
    """Run every registered benchmark (quick ones unless ``full``).

    Parameters
    ----------
    full
        Also run the long benchmarks.
    only
        Restrict to benchmarks whose group or name contains one of these words.
    work_dir
        Cache and scratch folder (default :func:`usnav.bench.registry.default_work_dir`, per
        user).
    progress
        Callable taking a message, called as each benchmark starts.
    debug
        Put the traceback of a failing benchmark in its row.
    """
    work = work_dir or default_work_dir()
    work.mkdir(parents=True, exist_ok=True)
    data_dir = shared_data_dir()
    ctx = BenchContext(full=full, data_dir=data_dir, work_dir=work)
    rows: list[BenchRow] = []
    for bench in all_benchmarks():
        if not full and not bench.quick:
            continue
        if only and not any(w.lower() in f"{bench.group} {bench.name}".lower() for w in only):
            continue
        if progress:
            progress(f"{bench.group}: {bench.name}")
            ctx.progress = progress
        row = BenchRow(bench.group, bench.name)
        start = time.perf_counter()
        try:
            row.figures = list(bench.func(ctx))
            if not row.figures:  # the benchmarks that need outside data return nothing
                row.skipped = (
                    NO_DATA_REASON
                    if data_dir is None
                    else f"its outside data is not under {data_dir}"
                )
        except SkipBenchmark as exc:
            row.skipped = str(exc)
        except Exception as exc:  # a failing benchmark is reported, not fatal
            row.error = f"{type(exc).__name__}: {exc}"
            if debug:
                row.error += "\n" + traceback.format_exc()
        row.seconds = time.perf_counter() - start
        rows.append(row)
    return rows


def unmatched_words(only: list[str], names: list[tuple[str, str]]) -> list[str]:
    """The words of ``only`` that match no benchmark (group or name, case-insensitive)."""
    return [w for w in only if not any(w.lower() in f"{g} {n}".lower() for g, n in names)]


def rows_to_json(rows: list[BenchRow], machine: dict[str, str]) -> dict:
    """A JSON-able summary (figures with their ratios)."""
    out = []
    for row in rows:
        figs = []
        for f in row.figures:
            d = asdict(f)
            d["ratio"] = f.ratio
            figs.append(d)
        out.append(
            {
                "group": row.group,
                "benchmark": row.benchmark,
                "seconds": row.seconds,
                "error": row.error,
                "skipped": row.skipped,
                "figures": figs,
            }
        )
    return {"machine": machine, "benchmarks": out}
