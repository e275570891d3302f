"""Run the registered benchmarks and collect their figures with machine information."""

from __future__ import annotations

import os
import platform
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from usnav.bench.registry import BenchContext, Figure, all_benchmarks
from usnav.data import shared_data_dir


@dataclass
class BenchRow:
    """One benchmark's outcome: its figures, or the error that stopped it."""

    group: str
    benchmark: str
    figures: list[Figure] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""


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
        Scratch folder (default ``$TMPDIR/usnav-bench``).
    progress
        Callable taking a message, called as each benchmark starts.
    debug
        Put the traceback of a failing benchmark in its row.
    """
    import tempfile

    work = work_dir or Path(tempfile.gettempdir()) / "usnav-bench"
    work.mkdir(parents=True, exist_ok=True)
    ctx = BenchContext(full=full, data_dir=shared_data_dir(), work_dir=work)
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
        except Exception as exc:  # a failing benchmark is reported, not fatal
            row.error = f"{type(exc).__name__}: {exc}"
            if debug:
                row.error += "\n" + traceback.format_exc()
        row.seconds = time.perf_counter() - start
        rows.append(row)
    return rows


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
                "figures": figs,
            }
        )
    return {"machine": machine, "benchmarks": out}
