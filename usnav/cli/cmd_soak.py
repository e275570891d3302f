"""``usnav soak``: the fault and fuzz campaign (docs/reliability.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

ITEMS = ("igtl", "files", "faults", "endurance", "all")

#: The issue's full size (``--wire-messages`` None: a quarter of ``--messages``).
FULL = {
    "messages": 100_000,
    "wire_messages": None,
    "connects": 1000,
    "slow_s": 8.0,
    "files": 1000,
    "cli_sample": 20,
    "restarts": 20,
    "kills": 20,
    "subscribers": 50,
    "minutes": 60.0,
}
#: ``--quick``: the CI-sized campaign (each item a few seconds).
QUICK = {
    "messages": 2000,
    "wire_messages": 150,
    "connects": 30,
    "slow_s": 0.0,
    "files": 40,
    "cli_sample": 1,
    "restarts": 2,
    "kills": 1,
    "subscribers": 10,
    "minutes": 0.5,
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "soak",
        help="the fault and fuzz campaign: OpenIGTLink fuzz, damaged files, faults, endurance",
        description="Seeded and bounded; prints one line per item and writes a JSON of the "
        "figures. Exit 0 when nothing failed, 1 otherwise. Full size by default (about an "
        "hour and a half; the endurance item alone is --minutes); --quick is the CI size.",
    )
    p.add_argument("item", choices=ITEMS, help="which item (all: one after the other)")
    p.add_argument("--seed", type=int, default=1, help="seed of every generator (default 1)")
    p.add_argument("--quick", action="store_true", help="CI size: seconds per item")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the results here")
    g = p.add_argument_group("sizes (default: the full size below, or --quick's)")
    g.add_argument("--messages", type=int, help="through the decoder (100000)")
    g.add_argument("--wire-messages", type=int, help="over TCP into each target (messages/4)")
    g.add_argument("--connects", type=int, help="connect/disconnect storm per target (1000)")
    g.add_argument("--slow-s", type=float, help="slowloris duration, s (8; 0: skip)")
    g.add_argument("--files", type=int, help="damaged recordings (1000)")
    g.add_argument("--cli-sample", type=int, help="of them also through the real CLI (20)")
    g.add_argument("--restarts", type=int, help="probe server kills (20)")
    g.add_argument("--kills", type=int, help="usnav run kills mid-recording (20)")
    g.add_argument("--subscribers", type=int, help="churning subscribers (50)")
    g.add_argument("--minutes", type=float, help="endurance run length (60)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from usnav.cli._checks import require_extra
    from usnav.errors import InputError
    from usnav.soak.report import ItemResult, write_json

    require_extra("usnav soak", "bench", ("psutil",))
    # every bad message is logged once per host and reason; keep the campaign output short
    for name in ("usnav.igtl", "usnav.devices"):
        logging.getLogger(name).setLevel(logging.ERROR)
    base = QUICK if args.quick else FULL
    sizes = {k: base[k] if getattr(args, k) is None else getattr(args, k) for k in FULL}
    for key, value in sizes.items():
        if value is not None and value < 0:
            raise InputError(f"--{key.replace('_', '-')}", f"must not be negative, got {value}")
    if args.json is not None:  # before any long work: a bad path fails now, not in an hour
        from usnav.io.outputs import check_output

        check_output(args.json, force=True, option="--json")
    items: list[ItemResult] = []

    def done(results: list[ItemResult]) -> None:
        for r in results:
            print(r.line(), flush=True)
            for failure in r.failures:
                print(f"  FAILED: {failure}", flush=True)
        items.extend(results)
        if args.json is not None:
            write_json(args.json, args.seed, items)

    chosen = ITEMS[:-1] if args.item == "all" else (args.item,)
    if "igtl" in chosen:
        from usnav.soak.igtl import run_igtl

        done(
            run_igtl(
                args.seed,
                sizes["messages"],
                sizes["wire_messages"],
                sizes["connects"],
                sizes["slow_s"],
            )
        )
    if "files" in chosen:
        from usnav.soak.files import run_files

        done([run_files(args.seed, sizes["files"], sizes["cli_sample"])])
    if "faults" in chosen:
        from usnav.soak.faults import run_faults

        done(run_faults(args.seed, sizes["restarts"], sizes["kills"], sizes["subscribers"]))
    if "endurance" in chosen:
        from usnav.soak.endurance import run_endurance

        quick = args.quick
        done(
            [
                run_endurance(
                    args.seed,
                    sizes["minutes"],
                    sample_s=2.0 if quick else 10.0,
                    warmup_s=15.0 if quick else 60.0,
                )
            ]
        )
    failed = sum(i.failed for i in items)
    where = f"; results in {args.json}" if args.json else ""
    print(f"usnav soak: {len(items)} items, {failed} failures{where}")
    return 0 if failed == 0 else 1
