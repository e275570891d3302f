"""``usnav bench``: every benchmark figure beside its baseline, as ratios from one run."""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure speed, latency, memory and accuracy against baselines (pyigtl, scipy, "
        "SimpleITK) on this workstation",
        description="Runs every benchmark (quick mode by default, about 2 minutes) and prints "
        "one table: each figure, its target and, where it has one, the baseline measured in the "
        "same run and the ratio (>1 = usnav better). Machines are noisy: read the ratios.",
    )
    p.add_argument("--full", action="store_true", help="also run the long benchmarks")
    p.add_argument("--only", nargs="+", metavar="WORD", help="only benchmarks matching a word")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")
    p.add_argument("--markdown", type=Path, metavar="FILE", help="also write the table as Markdown")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 1 when a target is missed (default: only when a benchmark fails)",
    )
    p.add_argument(
        "--cache",
        type=Path,
        metavar="DIR",
        help="cache and scratch folder (default ~/.cache/usnav/bench, this user's own)",
    )
    p.add_argument(
        "--clean",
        action="store_true",
        help="remove the cache folder when the run ends (a --cache folder holding files "
        "usnav bench did not make is refused)",
    )
    p.add_argument("--force", action="store_true", help="replace existing --json/--markdown")
    p.set_defaults(func=run)


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    a = abs(value)
    if a == 0:
        return "0"
    if a >= 1000:
        return f"{value:,.0f}"
    if a >= 100:
        return f"{value:.0f}"
    if a >= 10:
        return f"{value:.1f}"
    if a >= 0.01:
        return f"{value:.3g}"
    return f"{value:.2e}"


#: what the benchmarks' baselines need (the ``bench`` extra)
BENCH_MODULES = ("pyigtl", "psutil", "SimpleITK")


#: the file that marks a folder as a ``usnav bench`` cache (``--clean`` may remove it)
CACHE_MARK = ".usnav-bench-cache"


def _foreign_folder(folder: Path) -> bool:
    """True if ``folder`` holds files and is not marked as a bench cache."""
    if not folder.is_dir() or (folder / CACHE_MARK).exists():
        return False
    return any(folder.iterdir())


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from usnav.bench.registry import all_benchmarks, default_work_dir
    from usnav.bench.runner import machine_info, rows_to_json, run_benchmarks, unmatched_words
    from usnav.cli._checks import require_extra
    from usnav.errors import InputError
    from usnav.io.outputs import check_output

    out = Console()
    if not out.is_terminal:
        out = Console(width=170)  # a file or a pipe: keep each figure on one line
    err = Console(stderr=True)
    if args.only:
        names = [(b.group, b.name) for b in all_benchmarks()]
        unknown = unmatched_words(args.only, names)
        if unknown:
            raise InputError(
                "--only",
                f"no benchmark matches {', '.join(repr(w) for w in unknown)}",
                "words match a group or a name: "
                + ", ".join(sorted({g for g, _ in names}))
                + "; usnav bench --list shows every name",
            )
    if args.list:  # listing needs none of the baselines' packages
        for b in all_benchmarks():
            # with --only, the benchmarks it selects (as a run would, --full ones marked)
            if args.only and len(unmatched_words(args.only, [(b.group, b.name)])) == len(args.only):
                continue
            out.print(f"{b.group:14s} {b.name}{'' if b.quick else '  (--full)'}")
        return 0
    require_extra("usnav bench", "bench", BENCH_MODULES)
    if args.only and not args.full:
        # a word that matches only long benchmarks would run nothing and exit 0 with an empty
        # table (and an empty --json): say so instead
        quick = [(b.group, b.name) for b in all_benchmarks() if b.quick]
        long_only = unmatched_words(args.only, quick)
        if long_only:
            raise InputError(
                "--only",
                f"{', '.join(repr(w) for w in long_only)} "
                f"match{'es' if len(long_only) == 1 else ''} only long benchmarks "
                "(marked --full in usnav bench --list)",
                "add --full to run them",
            )
    both = args.json is not None and args.markdown is not None
    if both and args.json.resolve() == args.markdown.resolve():
        # the JSON would silently replace the table written a moment before
        raise InputError(
            args.json, "is given to both --json and --markdown", "give each its own file"
        )
    for option in ("json", "markdown"):  # refused now, not after minutes of benchmarks
        if getattr(args, option) is not None:
            check_output(getattr(args, option), force=args.force, option=f"--{option}")
    work = args.cache or default_work_dir()
    check_output(work, folder=True, force=True, option="--cache")
    if args.clean and args.cache is not None and _foreign_folder(work):
        # --clean removes the whole folder: a user's folder given as --cache went with it
        raise InputError(
            work,
            "--clean would remove this folder, which holds files usnav bench did not make",
            "give a new or empty --cache folder, or leave out --clean",
        )
    work.mkdir(parents=True, exist_ok=True)
    (work / CACHE_MARK).touch()
    machine = machine_info()
    try:
        with err.status("benchmarking…") as status:
            rows = run_benchmarks(
                full=args.full,
                only=args.only,
                work_dir=work,
                progress=lambda m: status.update(f"benchmarking: {m}"),
                debug=getattr(args, "debug", False),
            )
    finally:
        if args.clean:
            shutil.rmtree(work, ignore_errors=True)
    table = Table(title=f"usnav bench ({'full' if args.full else 'quick'})", show_lines=False)
    for col in ("group", "figure", "usnav", "target", "ok", "baseline", "ratio"):
        table.add_column(col, overflow="fold")
    failures = missed = 0
    for row in rows:
        if row.error:
            failures += 1
            table.add_row(row.group, row.benchmark, "[red]failed[/red]", "", "", row.error, "")
            continue
        if row.skipped:
            table.add_row(row.group, row.benchmark, "[yellow]skipped[/yellow]", "", "", "", "")
            continue
        missed += sum(1 for f in row.figures if f.met is False)
        for f in row.figures:
            ok = "" if f.met is None else ("[green]yes[/green]" if f.met else "[red]no[/red]")
            base = f"{f.baseline_name} {_fmt(f.baseline_value)}" if f.baseline_name else ""
            ratio = f"{f.ratio:.2f}×" if f.ratio is not None else ""
            name = f.name + (f" [dim]({f.note})[/dim]" if f.note else "")
            table.add_row(row.group, name, f"{_fmt(f.value)} {f.unit}", f.target, ok, base, ratio)
    out.print(table)
    out.print("machine: " + "; ".join(f"{k} {v}" for k, v in machine.items()))
    out.print("[dim]ratio > 1 means usnav is better than the baseline measured in this run[/dim]")
    for row in rows:
        if row.skipped:
            out.print(f"skipped: {row.group} {row.benchmark}: {row.skipped}", markup=False)
    if not args.clean:
        out.print(f"cache: {work} (usnav bench --clean removes it)", markup=False)
    if args.markdown:
        args.markdown.write_text(_markdown(rows, machine, args.full), encoding="utf-8")
        print(f"table written to {args.markdown}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(rows_to_json(rows, machine), indent=2, default=str))
        print(f"figures written to {args.json}", file=sys.stderr)
    if missed and args.strict:
        print(f"usnav bench: {missed} target(s) missed (--strict)", file=sys.stderr)
        return 1
    return 1 if failures else 0


def _markdown(rows, machine: dict[str, str], full: bool) -> str:
    """The same table as Markdown (for docs/benchmarks.md)."""
    lines = [
        "| group | figure | usnav | target | met | baseline (same run) | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row.error:
            lines.append(f"| {row.group} | {row.benchmark} | failed | | | {row.error} | |")
            continue
        if row.skipped:
            lines.append(f"| {row.group} | {row.benchmark} | skipped: {row.skipped} | | | | |")
            continue
        for f in row.figures:
            met = "" if f.met is None else ("yes" if f.met else "**no**")
            base = f"{f.baseline_name} {_fmt(f.baseline_value)}" if f.baseline_name else ""
            ratio = f"{f.ratio:.2f}×" if f.ratio is not None else ""
            name = f.name + (f" ({f.note})" if f.note else "")
            lines.append(
                f"| {row.group} | {name} | {_fmt(f.value)} {f.unit} | {f.target} | {met} | "
                f"{base} | {ratio} |"
            )
    info = "; ".join(f"{k} {v}" for k, v in machine.items())
    mode = "full" if full else "quick"
    return (
        f"Mode: {mode}. Machine: {info}.\n\nRatio > 1 means usnav is better than the "
        "baseline measured in the same run.\n\n" + "\n".join(lines) + "\n"
    )
