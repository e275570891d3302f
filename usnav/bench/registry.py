"""Benchmark registry.

A benchmark is a function decorated with :func:`benchmark` in a module
``usnav/bench/bench_<subject>.py``. It receives a :class:`BenchContext` and returns a list of
:class:`Figure`: a measured value, its unit, the target from the issue, and (where one exists)
the baseline measured in the same run. Machines are shared and noisy: the ratio to the baseline
is the figure to read.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path


@dataclass
class Figure:
    """One benchmark figure.

    Attributes
    ----------
    name
        What was measured, e.g. ``"CRC-64 throughput, 512x512 frame"``.
    value
        The measured value.
    unit
        Its unit (``"GB/s"``, ``"ms"``, ``"fps"``, ``"mm"``...).
    target
        The target as written in the issue, e.g. ``"≥ 2 GB/s"`` (text, shown as is).
    met
        Whether the target is met (None if it has no target).
    baseline_name, baseline_value
        The comparable figure of the baseline (pyigtl, scipy, SimpleITK...) from this run.
    higher_is_better
        Direction, for the ratio (ratio > 1 always means usnav is better).
    note
        Anything a reader needs (sample size, conditions).
    """

    name: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None
    baseline_name: str = ""
    baseline_value: float | None = None
    higher_is_better: bool = True
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """How many times better than the baseline (>1 = usnav better)."""
        if self.baseline_value is None or self.value == 0 or self.baseline_value == 0:
            return None
        if self.higher_is_better:
            return self.value / self.baseline_value
        return self.baseline_value / self.value


def smoke_only(figures: list[Figure], why: str) -> list[Figure]:
    """The figures without their targets, ``why`` first in each note: for a quick run too small
    to judge a target (a "no" on one case read as the issue's measurement)."""
    return [
        replace(f, target="", met=None, note=f"{why}; {f.note}" if f.note else why) for f in figures
    ]


class SkipBenchmark(Exception):
    """Raised by a benchmark that cannot run here; its message is the reason shown."""


#: why a benchmark that needs the outside data returns no figure without it
NO_DATA_REASON = (
    "outside data not found: set USNAV_TEST_DATA or place it at ../shared/data "
    "(README: Outside test data)"
)


@dataclass
class BenchContext:
    """What a benchmark may use: mode, data folder, a scratch folder, a progress callback."""

    full: bool = False
    data_dir: Path | None = None
    work_dir: Path = field(default_factory=lambda: default_work_dir())
    progress: Callable[[str], None] = lambda message: None


def default_work_dir() -> Path:
    """The per-user benchmark cache: ``<usnav cache>/bench`` (``~/.cache/usnav/bench``)."""
    from usnav.sim.demo import default_cache_dir

    return default_cache_dir() / "bench"


@dataclass
class Benchmark:
    name: str
    group: str
    func: Callable[[BenchContext], list[Figure]]
    quick: bool


_REGISTRY: list[Benchmark] = []


def benchmark(
    name: str, group: str, *, quick: bool = True
) -> Callable[[Callable[[BenchContext], list[Figure]]], Callable[[BenchContext], list[Figure]]]:
    """Register a benchmark. ``quick=False`` runs only with ``usnav bench --full``."""

    def wrap(
        func: Callable[[BenchContext], list[Figure]],
    ) -> Callable[[BenchContext], list[Figure]]:
        _REGISTRY.append(Benchmark(name, group, func, quick))
        return func

    return wrap


def all_benchmarks() -> list[Benchmark]:
    """Import every ``usnav.bench.bench_*`` module and return the registered benchmarks."""
    import usnav.bench as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("bench_"):
            importlib.import_module(f"usnav.bench.{info.name}")
    return list(_REGISTRY)
