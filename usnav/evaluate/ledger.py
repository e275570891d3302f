"""The seed ledger: which simulator seeds were already used, so a report says when it is not
on fresh data (``usnav evaluate --ledger FILE [--report]``; docs/evaluation.md).

The project's discipline is to choose (tune, compare, look at) on some seeds and report on
seeds nobody has looked at. Until session 34 the seeds were tracked by hand in the notes. The
ledger is a JSON Lines file, one entry per line, written by ``usnav evaluate`` and editable by
hand (e.g. to carry over the notes' ranges)::

    {"site": "usnav-sim", "seeds": "1001-1040, 1101-1197", "use": "tuning", "note": "defaults"}

``site`` is the manifest's ``site`` tag (seeds of different simulators are different cases),
``seeds`` a list of ranges, ``use`` ``tuning`` (looked at while choosing) or ``report``
(reported on: looked at too). The other keys (``date``, ``run``, ``manifest``, ``note``) are
for people.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from usnav.errors import InputError

Use = Literal["tuning", "report"]


class LedgerEntry(BaseModel):
    """One line of the ledger."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site: str = ""
    seeds: str
    use: Use
    date: str = ""
    run: str = ""
    manifest: str = ""
    note: str = ""

    @field_validator("seeds")
    @classmethod
    def _ranges(cls, value: str) -> str:
        parse_ranges(value)
        return value

    @property
    def seed_set(self) -> set[int]:
        return parse_ranges(self.seeds)


@dataclass(frozen=True)
class Overlap:
    """Seeds of a run that an earlier ledger entry already used."""

    entry: LedgerEntry
    seeds: frozenset[int]

    def describe(self) -> str:
        what = f"{self.entry.site or 'no site'} {format_ranges(self.seeds)}"
        when = ", ".join(x for x in (self.entry.date[:10], self.entry.run, self.entry.note) if x)
        return f"{what} ({self.entry.use}" + (f": {when})" if when else ")")


def parse_ranges(text: str) -> set[int]:
    """``"1101-1105, 1107"`` → {1101, ..., 1105, 1107}. Raises ValueError when malformed."""
    seeds: set[int] = set()
    for part in text.replace("–", "-").split(","):
        part = part.strip()
        if not part:
            continue
        first, sep, last = part.partition("-")
        try:
            lo, hi = int(first), int(last) if sep else int(first)
        except ValueError:
            raise ValueError(f"{part!r} is not a seed or a range FIRST-LAST") from None
        if hi < lo:
            raise ValueError(f"{part!r}: the range ends before it starts")
        seeds.update(range(lo, hi + 1))
    if not seeds:
        raise ValueError("no seeds")
    return seeds


def format_ranges(seeds: Iterable[int]) -> str:
    """{1101, 1102, 1103, 1107} → ``"1101-1103, 1107"``."""
    ordered = sorted(set(seeds))
    parts: list[str] = []
    start = prev = None
    for s in [*ordered, None]:
        if start is not None and (s is None or s != prev + 1):
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = None
        if s is not None and start is None:
            start = s
        prev = s
    return ", ".join(parts)


def read_ledger(path: str | Path) -> list[LedgerEntry]:
    """The ledger's entries (none when the file does not exist yet).

    Raises
    ------
    InputError
        A line that is not a ledger entry, naming the file, the line and what is expected.
    """
    p = Path(path)
    if not p.exists():
        return []
    entries = []
    for number, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append(LedgerEntry.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValidationError) as exc:
            errors = exc.errors() if isinstance(exc, ValidationError) else []
            why = (
                f"{'.'.join(str(x) for x in errors[0]['loc'])}: {errors[0]['msg']}"
                if errors
                else str(exc)
            )
            raise InputError(
                f"{p}:{number}",
                f"not a seed-ledger entry ({why})",
                'each line is a JSON object like {"site": "usnav-sim", "seeds": "1101-1197", '
                '"use": "tuning"} (docs/evaluation.md, "The seed ledger")',
            ) from None
    return entries


def seeds_by_site(cases: Iterable) -> dict[str, set[int]]:
    """The ``seed`` tags of manifest cases, by their ``site`` tag (cases without a numeric
    seed are left out: real cases)."""
    out: dict[str, set[int]] = {}
    for case in cases:
        seed = str(case.tags.get("seed", "")).strip()
        if seed.lstrip("-").isdigit():
            out.setdefault(str(case.tags.get("site", "")), set()).add(int(seed))
    return out


def seeds_of_rows(rows: Iterable[dict]) -> dict[str, set[int]]:
    """The ``seed`` tags of ``results.csv`` rows (dicts of text, as
    :func:`usnav.evaluate.results.read_results` returns them) by their ``site`` tag, as
    :func:`seeds_by_site` reads a manifest's cases."""
    out: dict[str, set[int]] = {}
    for row in rows:
        seed = str(row.get("seed", "") or "").strip()
        if seed.lstrip("-").isdigit():
            out.setdefault(str(row.get("site", "") or "").strip(), set()).add(int(seed))
    return out


def untracked(cases: Iterable, entries: Iterable[LedgerEntry] = ()) -> list[str]:
    """Why some cases' seeds escape the ledger, one sentence each (empty when none do).

    :func:`seeds_by_site` keeps only whole-number ``seed`` tags and keys them by the exact
    ``site`` tag, so three kinds of case would be neither checked nor recorded where a later
    report looks, silently: a ``seed`` that is not a whole number (``1701.0``), a seed without
    a ``site`` (recorded under no site, never matched against ``usnav-sim``'s entries), and a
    ``site`` that the ledger knows only in another spelling (``USNAV-SIM``; sites are matched
    exactly).
    """
    cases = list(cases)
    bad_seed = sorted(
        c.case
        for c in cases
        if str(c.tags.get("seed", "")).strip()
        and not str(c.tags.get("seed", "")).strip().lstrip("-").isdigit()
    )
    no_site = sorted(
        c.case
        for c in cases
        if str(c.tags.get("seed", "")).strip().lstrip("-").isdigit()
        and not str(c.tags.get("site", "")).strip()
    )
    known = {e.site for e in entries if e.site}
    spelled: dict[str, str] = {}
    for c in cases:
        site = str(c.tags.get("site", "")).strip()
        if site and site not in known:
            for k in known:
                if k.casefold() == site.casefold():
                    spelled[site] = k
    out = []
    if bad_seed:
        out.append(
            f"{len(bad_seed)} case(s) have a seed tag that is not a whole number (first: "
            f"{bad_seed[0]}): their seeds are neither checked nor recorded"
        )
    if no_site:
        out.append(
            f"{len(no_site)} case(s) have a seed but no site tag (first: {no_site[0]}): their "
            "seeds are checked and recorded under no site, apart from every site's entries "
            "(give the manifest a site column, e.g. usnav-sim)"
        )
    for site, k in sorted(spelled.items()):
        out.append(
            f"site {site!r} is in no ledger entry, but {k!r} is: sites are matched exactly, "
            f"so these seeds are not checked against {k!r}'s"
        )
    return out


def used_before(entries: list[LedgerEntry], seeds: dict[str, set[int]]) -> list[Overlap]:
    """The earlier entries that used any of ``seeds`` (site → seeds), with the shared seeds."""
    found = []
    for entry in entries:
        shared = entry.seed_set & seeds.get(entry.site, set())
        if shared:
            found.append(Overlap(entry, frozenset(shared)))
    return found


def record(
    path: str | Path,
    seeds: dict[str, set[int]],
    use: Use,
    *,
    run: str = "",
    manifest: str = "",
    note: str = "",
) -> list[LedgerEntry]:
    """Append one entry per site to the ledger (created if missing); returns them.

    Each entry is one ``write`` to a file opened for appending, so runs that record at the same
    time do not mix their lines."""
    date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    entries = [
        LedgerEntry(
            site=site,
            seeds=format_ranges(s),
            use=use,
            date=date,
            run=run,
            manifest=manifest,
            note=note,
        )
        for site, s in sorted(seeds.items())
        if s
    ]
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            for entry in entries:
                os.write(fd, (entry.model_dump_json() + "\n").encode("utf-8"))
        finally:
            os.close(fd)
    except OSError as exc:
        raise InputError(p, f"cannot write the seed ledger: {exc.strerror or exc}") from exc
    return entries
