"""``usnav budget RESULTS_DIR …``: the similarity bias a site's own evaluated cases support,
and the lines to state it (docs/evaluation.md, "The budget your cases support")."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _share(text: str) -> float:
    try:
        value = float(text.rstrip("%")) / (100.0 if text.endswith("%") else 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a share strictly between 0 and 1 (e.g. 0.95 or 95%)"
        )
    return value


def _limit_mm(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of mm") from None
    if not 0.0 < value <= 1000.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a distance in (0, 1000] mm")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "budget",
        help="the similarity bias your evaluated cases support (the registration budget a "
        "site states for LIVE)",
        description="Reads the results folders of usnav evaluate runs on cases with a truth "
        "(a site's own recorded operations with landmarks, or simulated cases), finds for "
        "each accepted estimate the similarity bias its stated 95 % bound needed to cover "
        "its error at the tumor, and states the bias that covers a share of cases like these "
        "with a confidence (a distribution-free tolerance limit: 59 cases for 95 % at 95 %), "
        "or says UNCERTAIN when there are too few. --check applies it to other folders: cases "
        "it was not fitted on.",
    )
    p.add_argument("results", type=Path, nargs="+", metavar="RESULTS_DIR", help="fitted on")
    p.add_argument(
        "--check",
        type=Path,
        nargs="+",
        default=[],
        metavar="RESULTS_DIR",
        help="results folders to apply the bias to (not fitted on)",
    )
    p.add_argument(
        "--coverage",
        type=_share,
        default=0.95,
        help="share of cases whose bound must cover the error (default 0.95)",
    )
    p.add_argument(
        "--confidence",
        type=_share,
        default=0.95,
        help="confidence of that statement (default 0.95)",
    )
    p.add_argument(
        "--live-limit-mm",
        type=_limit_mm,
        default=None,
        metavar="MM",
        help="LIVE threshold on the registration's bound (default: the display rules', 2 mm)",
    )
    p.add_argument(
        "--partial",
        action="store_true",
        help="use folders whose evaluate run did not finish (refused otherwise): only the "
        "cases it recorded count",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from usnav.evaluate.budget import budget_report, budget_report_json, format_budget_report
    from usnav.protocol.display import DisplayRules

    rules = DisplayRules()
    limit = rules.registration_limit_mm if args.live_limit_mm is None else args.live_limit_mm
    report = budget_report(
        args.results,
        args.check,
        coverage=args.coverage,
        confidence=args.confidence,
        live_limit_mm=limit,
        wrong_mm=rules.live_max_boundary_error_mm,
        partial=args.partial,
    )
    # allow_nan=False: a NaN would print as NaN, which is not JSON (none is expected)
    doc = budget_report_json(report)
    print(json.dumps(doc, allow_nan=False) if args.json else format_budget_report(report))
    return 0
