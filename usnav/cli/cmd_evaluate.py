"""``usnav evaluate MANIFEST --out RESULTS_DIR``: registration and margins of every case of a
dataset as Dask tasks (a local cluster by default, ``--scheduler`` for a running one)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="registration + margins of every case of a dataset manifest, on Dask",
        description="Runs every case of MANIFEST (registration as usnav register does it, "
        "offline margins as usnav run computes them, both scored against the case's truth) as "
        "Dask tasks, and writes RESULTS_DIR/results.csv (one row per case), summary.csv and "
        "PNG plots. Re-running resumes: cases already in results.csv are skipped. Exit "
        "status: 0 when at least one case run now succeeded (the failed ones say why in "
        "results.csv) or there was nothing left to run; 2 for bad input, refused before any "
        "case runs (a manifest, --out, --group-by or scheduler that cannot be used), and 2 "
        "when every case run now failed (the results and summary are still written). See "
        "docs/evaluation.md.",
    )
    p.add_argument("manifest", type=Path, metavar="MANIFEST", help="the dataset's manifest.csv")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="RESULTS_DIR",
        help="results folder (created; an existing one is resumed, never overwritten)",
    )
    p.add_argument(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        help="a running Dask scheduler (default: a local cluster of worker processes)",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="local worker processes (default: CPU count); with --scheduler: wait for N",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="per case, seconds (default 600): a case past it fails and its worker restarts",
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="with --scheduler: how long to wait for it and its workers (default 10)",
    )
    p.add_argument(
        "--group-by",
        metavar="TAG",
        help="summary grouping tag, one the manifest's cases have (default: family)",
    )
    p.add_argument(
        "--config",
        type=Path,
        metavar="TOML",
        help="registration options (a [registration] table, see docs/registration.md)",
    )
    p.add_argument(
        "--ledger",
        type=Path,
        metavar="FILE",
        help="seed ledger (JSON Lines): the run's simulator seeds are recorded in it, as used "
        "for tuning, or with --report as reported on (docs/evaluation.md, 'The seed ledger')",
    )
    p.add_argument(
        "--report",
        action="store_true",
        help="this run is a report: warn, before any case runs, when the ledger says some of "
        "its seeds were already used (tuned or reported on)",
    )
    p.add_argument("--no-margins", action="store_true", help="registration only")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from usnav.cli.progress import ProgressBar
    from usnav.errors import InputError
    from usnav.evaluate.runner import run_evaluation
    from usnav.registration.rigid import load_registration_options

    options = load_registration_options(args.config) if args.config else None
    seeds = _check_ledger(args) if args.ledger is not None else None
    if args.report and args.ledger is None:
        raise InputError("--report", "needs --ledger FILE", "give the seed ledger to check against")

    def progress(done: int, total: int, row: dict | None) -> None:
        detail = f"{row.get('case', '')}: {row.get('status', '')}" if row else ""
        bar.update("evaluating", done, total, detail)

    from usnav.evaluate.ledger import Use, record

    use: Use = "report" if args.report else "tuning"

    def record_seeds(note: str = "") -> None:
        record(args.ledger, seeds, use, run=str(args.out), manifest=str(args.manifest), note=note)

    try:
        with ProgressBar(enabled=not args.quiet) as bar:
            report = run_evaluation(
                args.manifest,
                args.out,
                scheduler=args.scheduler,
                workers=args.workers,
                timeout_s=args.timeout,
                group_by=args.group_by,
                registration_options=options,
                margins=not args.no_margins,
                connect_timeout_s=args.connect_timeout,
                progress=progress,
            )
    except KeyboardInterrupt:
        if seeds and _has_results(args.out):
            # some results may have been seen: the safe side is to count every seed as used
            record_seeds("interrupted: some of these seeds' results may not have been seen")
        raise
    if seeds and report.ran:
        record_seeds()
    out = Console() if Console().is_terminal else Console(width=160)
    if report.ran:
        out.print(
            f"{report.ran} case(s) run on {report.workers} worker(s) in {report.wall_s:.1f} s "
            f"({report.ran / max(report.wall_s, 1e-9):.2f} cases/s), {report.failed} failed; "
            f"{report.skipped} already in {report.results}",
            soft_wrap=True,  # a path is never broken across lines
        )
    else:
        failed = (
            f" ({report.skipped_failed} of them failed: delete their rows to run them again)"
            if report.skipped_failed
            else ""
        )
        out.print(
            f"nothing to run: all {report.cases} case(s) are already in {report.results}{failed}",
            soft_wrap=True,
        )
    if report.summary_rows:
        out.print(_table(report.summary_rows, report.group_by))
        out.print(f"summary: {report.summary}", soft_wrap=True)
    if report.plots:
        out.print("plots: " + ", ".join(str(p) for p in report.plots), soft_wrap=True)
    if report.ran and report.failed == report.ran:
        case, reason = next(iter(report.failures.items()))
        raise InputError(
            report.results,
            f"all {report.ran} case(s) run failed (first: {case}: {reason})",
            "see the reason column; fix the inputs it names, delete those rows and run again",
        )
    return 0


def _has_results(out: Path) -> bool:
    """Whether the results folder holds at least one case's row (an unreadable table counts:
    the safe side)."""
    from usnav.errors import UsnavError
    from usnav.evaluate.results import RESULTS_NAME, read_results

    try:
        return bool(read_results(out / RESULTS_NAME))
    except UsnavError:
        return True


def _existing_rows(out: Path) -> list[dict[str, str]]:
    """The rows already in ``out/results.csv`` (none when there is none or it cannot be read:
    the run itself then says why)."""
    from usnav.errors import UsnavError
    from usnav.evaluate.results import RESULTS_NAME, read_results

    try:
        return read_results(out / RESULTS_NAME)
    except (UsnavError, OSError):
        return []


def _check_ledger(args: argparse.Namespace) -> dict[str, set[int]]:
    """The manifest's seeds by site; a warning line on stderr for cases whose seeds the ledger
    cannot see and, with ``--report``, for rows of ``results.csv`` outside the manifest (the
    summary covers them) and when the ledger says some seeds (theirs included) were used
    before."""
    import sys

    from usnav.evaluate.ledger import (
        read_ledger,
        seeds_by_site,
        seeds_of_rows,
        untracked,
        used_before,
    )
    from usnav.io.manifest import read_manifest

    entries = read_ledger(args.ledger)
    cases = read_manifest(args.manifest)
    seeds = seeds_by_site(cases)
    # seeds the ledger cannot see are said, in a tuning run too (they would go unrecorded)
    for why in untracked(cases, entries):
        print(f"usnav evaluate: warning: {args.ledger}: {why}", file=sys.stderr, flush=True)
    if not args.report:
        return seeds
    # the summary is rebuilt from the whole results.csv: rows of an earlier run into this folder
    # that are not in this manifest (a tuning run's) are reported on too
    others = [r for r in _existing_rows(args.out) if r.get("case") not in {c.case for c in cases}]
    checked = {site: set(s) for site, s in seeds.items()}
    if others:
        for site, s in seeds_of_rows(others).items():
            checked.setdefault(site, set()).update(s)
        print(
            f"usnav evaluate: warning: this report's summary also covers {len(others)} case(s) "
            f"of {args.out / 'results.csv'} that are not in {args.manifest} (first: "
            f"{others[0].get('case', '')}); give a new --out for a report on this manifest alone",
            file=sys.stderr,
            flush=True,
        )
    overlaps = used_before(entries, checked)
    if overlaps:
        shared = set().union(*(o.seeds for o in overlaps))
        said = "; ".join(o.describe() for o in overlaps[:3])
        more = f"; and {len(overlaps) - 3} more entries" if len(overlaps) > 3 else ""
        print(
            f"usnav evaluate: warning: this report is not on fresh data: {len(shared)} of its "
            f"seeds were used before, by {args.ledger}: {said}{more}",
            file=sys.stderr,
            flush=True,
        )
    return seeds


def _table(rows: list[dict], by: str):
    from rich.table import Table

    columns = [
        (by, by),
        ("cases", "cases"),
        ("failed", "failed"),
        ("median_error_mm", "median error mm"),
        ("p90_error_mm", "p90 mm"),
        ("under_2mm_pct", "< 2 mm %"),
        ("median_error_now_mm", "median now mm"),
        ("under_2mm_now_pct", "now < 2 mm %"),
        ("median_init_error_mm", "init mm"),
        ("accepted", "accepted"),
        ("accepted_over_2mm", "accepted > 2 mm"),
        # the published estimate at the tumor now: what a display draws (session 42: the
        # printed table showed only the bony count, 2 where the display's was 4)
        ("accepted_over_2mm_now", "now > 2 mm"),
        ("bound_covers_pct", "bound ≥ error %"),
        ("mean_margin_error_mm", "margin mm"),
        ("median_seconds", "s/case"),
    ]
    table = Table(title="results by " + by)
    for _, title in columns:
        table.add_column(title, justify="left" if title == by else "right")
    for row in rows:
        table.add_row(*(str(row.get(key, "")) for key, _ in columns))
    return table
