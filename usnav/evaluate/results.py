"""The results of a batch evaluation: ``results.csv`` (appended row by row, so a run that stops
keeps what it finished), the summary grouped by a tag, and the plots.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from usnav.errors import InputError
from usnav.evaluate.case import RESULT_COLUMNS

RESULTS_NAME = "results.csv"
SUMMARY_NAME = "summary.csv"
PLOT_NAMES = ("error_cdf.png", "final_vs_initial.png", "uncertainty_vs_error.png")
#: The case names the latest run into a results folder was asked to evaluate (one a line,
#: the manifest's order): what ``usnav budget`` compares the rows with, so that cases an
#: interrupted run never started are seen as not evaluated.
ASKED_NAME = "asked_cases.txt"


def write_asked_cases(folder: Path, names: Iterable[str]) -> Path:
    """Write :data:`ASKED_NAME` in ``folder`` (replaced whole: a partial file is never left).

    Parameters
    ----------
    folder
        The results folder (exists).
    names
        The case names of the manifest the run was given.
    """
    path = folder / ASKED_NAME
    part = folder / (ASKED_NAME + ".part")
    part.write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
    part.replace(path)
    return path


def read_asked_cases(folder: Path) -> list[str] | None:
    """The case names of :data:`ASKED_NAME` in ``folder``, or None when there is none (a folder
    written before session 43)."""
    path = folder / ASKED_NAME
    if not path.is_file():
        return None
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line]


#: error under which a case counts as registered (the registration benchmark's threshold), mm
GOOD_MM = 2.0


def read_results(path: str | Path) -> list[dict[str, str]]:
    """Rows of an existing ``results.csv`` (empty list if there is none).

    A last row without its line end (a write cut short: the run killed mid-row, a full disk)
    is not a row: its case has not been recorded and runs again (:class:`ResultsWriter`
    removes that partial row before appending).

    Raises
    ------
    InputError
        The file exists but is not a results table (no ``case`` and ``status`` columns).
    """
    p = Path(path)
    if not p.exists():
        return []
    try:
        text = p.read_bytes()[: _complete_length(p)].decode("utf-8")
        reader = csv.DictReader(io.StringIO(text, newline=""))
        fields = reader.fieldnames or []
        rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(p, f"cannot read the existing results ({exc})") from None
    if fields and not {"case", "status"} <= set(fields):
        raise InputError(
            p,
            "exists but is not a usnav results table (no case/status columns)",
            "give another --out folder; an existing file is never overwritten",
        )
    return rows


class ResultsWriter:
    """Appends rows to ``results.csv``, flushed one by one.

    A new file gets :data:`RESULT_COLUMNS` and then ``tags`` as its header; an existing one
    keeps its own header (a row's fields outside it are dropped, missing ones left empty).
    """

    def __init__(self, path: str | Path, tags: Iterable[str] = ()):
        self.path = Path(path)
        existing = self.path.exists() and self.path.stat().st_size > 0
        if existing:
            # a row cut short by an interrupted write would swallow the next one: drop it
            # (read_results does not count it, so its case runs again)
            complete = _complete_length(self.path)
            if complete < self.path.stat().st_size:
                with self.path.open("r+b") as f:
                    f.truncate(complete)
            elif not self.path.read_bytes().endswith(b"\n"):  # a header cut short: end it
                with self.path.open("ab") as f:
                    f.write(b"\r\n")
            with self.path.open(encoding="utf-8", newline="") as f:
                self.columns = next(csv.reader(f), [])
        else:
            self.columns = [*RESULT_COLUMNS, *[t for t in tags if t not in RESULT_COLUMNS]]
        self._file = self.path.open("a", encoding="utf-8", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns, extrasaction="ignore")
        if not existing:
            self._writer.writeheader()
            self._file.flush()

    def write(self, row: dict) -> None:
        self._writer.writerow({k: _cell(row.get(k, "")) for k in self.columns})
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _complete_length(path: Path) -> int:
    """Bytes of ``path`` up to the end of its last complete line (the whole file when it ends
    with a line end, or when it has none at all: a header cut short is left to the header
    check)."""
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return len(data)
    end = data.rfind(b"\n")
    return len(data) if end < 0 else end + 1


def _cell(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return str(value)


def _floats(rows: list[dict], key: str) -> np.ndarray:
    out = []
    for r in rows:
        try:
            out.append(float(r.get(key, "")))
        except (TypeError, ValueError):
            continue
    values = np.asarray(out, np.float64)
    return values[np.isfinite(values)]


def _accepted(row: dict) -> bool:
    return str(row.get("accepted", "")).lower() == "true"


def summarize(rows: list[dict], by: str = "family") -> list[dict]:
    """Per value of the tag ``by`` (and ``all``): counts and error statistics.

    The error medians, p90 and means are over the ``ok`` cases with a truth (the median
    uncertainty over the accepted ``ok`` ones, truth or not; the median seconds over every
    case that reports its time); the "under 2 mm"
    percentages count every failed case (timed out, crashed, unreadable input) as *not* under
    2 mm — its error is unknown, and leaving it out would raise the figure by failing. ``error_mm``
    is the global (bony) estimate's against the bony truth, ``error_now_mm`` the published
    estimate's (the tumor stage applied, when a label was given) at the tumor where it is
    during surgery (cord shift included: what a margin overlay is off by);
    ``accepted_over_2mm`` counts accepted estimates whose ``error_mm`` is over 2 mm (the "do
    no harm" failures); ``bound_covers_pct`` is the share of accepted estimates with a scored
    error whose stated ``uncertainty_mm`` is at least the error it bounds (at the tumor now;
    :func:`bounded_error`) — an accepted estimate that states no bound covers nothing.

    Grouped by ``family``, a manifest that mixes the simulator's tuned-on families
    (:data:`usnav.sim.TUNING_FAMILIES`, which the defaults were chosen on) with others also
    gets a ``tuned-on families`` row and a ``not tuned on`` row (the held-out families and any
    family usnav's simulator does not make, e.g. another simulator's cases): ``all`` mixes
    them, and only the second is a figure of how the method generalises.
    """
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(str(r.get(by, "") or "(none)"), []).append(r)
    out = []
    ordered = sorted(groups.items(), key=lambda item: _natural(item[0]))
    for name, members in [*ordered, *_split_groups(rows, by), ("all", rows)]:
        ok = [r for r in members if r.get("status") == "ok"]
        failed = len(members) - len(ok)
        err = _floats(ok, "error_mm")
        now = _floats(ok, "error_now_mm")
        scored = [r for r in ok if _floats([r], "error_mm").size]
        out.append(
            {
                by: name,
                "cases": len(members),
                "ok": len(ok),
                "failed": failed,
                "median_error_mm": _stat(np.median, err),
                "p90_error_mm": _stat(lambda v: np.percentile(v, 90), err),
                "mean_error_mm": _stat(np.mean, err),
                "under_2mm_pct": _under_pct(err, failed),
                "median_init_error_mm": _stat(np.median, _floats(ok, "init_error_mm")),
                "median_error_now_mm": _stat(np.median, now),
                "under_2mm_now_pct": _under_pct(now, failed),
                "accepted": sum(_accepted(r) for r in ok),
                "accepted_over_2mm": sum(
                    _accepted(r) and float(r["error_mm"]) > GOOD_MM for r in scored
                ),
                # the same, scored as the display draws it (the published estimate, tumor now)
                "accepted_over_2mm_now": sum(
                    _accepted(r)
                    and _floats([r], "error_now_mm").size > 0
                    and float(r["error_now_mm"]) > GOOD_MM
                    for r in ok
                ),
                "median_uncertainty_mm": _stat(np.median, _floats(ok, "uncertainty_mm")),
                "bound_covers_pct": _coverage(ok),
                "median_seconds": _stat(np.median, _floats(members, "seconds")),
                "mean_margin_error_mm": _stat(np.mean, _floats(ok, "margin_error_mm")),
                "mean_margin_mri_error_mm": _stat(np.mean, _floats(ok, "margin_mri_error_mm")),
                # frames the boundary error leaves out (a wrong registration's), summed
                "margin_drawn_without_tumor": _sum(ok, "margin_drawn_without_tumor"),
                "margin_missed_tumor": _sum(ok, "margin_missed_tumor"),
            }
        )
    return out


def _natural(name: str) -> tuple:
    """Sort key of a group name: numbers by value (seed 2 before seed 10), then text."""
    try:
        return (0, float(name), "")
    except ValueError:
        return (1, 0.0, name)


def _split_groups(rows: list[dict], by: str) -> list[tuple[str, list[dict]]]:
    """``[("tuned-on families", ...), ("not tuned on", ...)]`` when grouping by family and
    ``rows`` hold both kinds, else ``[]``."""
    if by != "family":
        return []
    from usnav.sim import TUNING_FAMILIES

    tuned = [r for r in rows if r.get("family") in TUNING_FAMILIES]
    other = [r for r in rows if r.get("family") not in TUNING_FAMILIES]
    return [("tuned-on families", tuned), ("not tuned on", other)] if tuned and other else []


def _sum(rows: list[dict], key: str) -> int | str:
    """Sum of an integer column over ``rows`` ("" when no row has it)."""
    values = _floats(rows, key)
    return int(values.sum()) if values.size else ""


def _under_pct(errors: np.ndarray, failed: int) -> float | str:
    """Percent of cases under :data:`GOOD_MM`: the scored ``errors`` plus ``failed`` cases,
    which count as not under ("" when nothing was scored)."""
    if not errors.size:
        return ""
    return round(100.0 * float(np.sum(errors < GOOD_MM)) / (errors.size + failed), 3)


def _coverage(rows: list[dict]) -> float | str:
    """Percent of accepted rows with a bounded error whose uncertainty is at least that error;
    an accepted row without an uncertainty is not covered ("" when there are none)."""
    pairs = [(_floats([r], "uncertainty_mm"), bounded_error(r)) for r in rows if _accepted(r)]
    hits = [bool(u.size) and float(u[0]) >= e for u, e in pairs if e is not None]
    return round(100.0 * float(np.mean(hits)), 1) if hits else ""


def _stat(fn, values: np.ndarray) -> float | str:
    return round(float(fn(values)), 3) if values.size else ""


def write_summary(summary: list[dict], path: str | Path) -> Path:
    """Write the summary rows as CSV (replaced on every run: it is derived from results.csv)."""
    p = Path(path)
    with p.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(summary[0]))
        writer.writeheader()
        for row in summary:
            writer.writerow({k: _cell(v) for k, v in row.items()})
    return p


def write_plots(rows: list[dict], out_dir: str | Path, by: str = "family") -> list[Path]:
    """The three PNG plots (replaced on every run). Needs matplotlib (``usnav[evaluate]``).

    - ``error_cdf.png``: cumulative distribution of ``error_mm`` per group;
    - ``final_vs_initial.png``: ``error_mm`` against ``init_error_mm`` (filled: accepted,
      hollow: rejected, i.e. the initial transform kept);
    - ``uncertainty_vs_error.png``: the registration's stated ``uncertainty_mm`` against the
      actual error it bounds, at the tumor where it is now (``error_now_mm`` of an accepted
      estimate; ``candidate_error_mm`` for a case without that truth).
    """
    from matplotlib.figure import Figure

    out = Path(out_dir)
    ok = [r for r in rows if r.get("status") == "ok" and _floats([r], "error_mm").size]
    groups: dict[str, list[dict]] = {}
    for r in ok:
        groups.setdefault(str(r.get(by, "") or "(none)"), []).append(r)
    colours = {name: f"C{k % 10}" for k, name in enumerate(sorted(groups))}
    paths = []

    fig = Figure(figsize=(6, 4.5), dpi=110)
    ax = fig.add_subplot()
    for name, members in sorted(groups.items()):
        err = np.sort(_floats(members, "error_mm"))
        ax.step(
            np.r_[0.0, err],
            np.r_[0.0, np.arange(1, err.size + 1) / err.size],
            where="post",
            color=colours[name],
            label=f"{name} (n={err.size})",
        )
    ax.axvline(GOOD_MM, color="0.5", ls="--", lw=1)
    ax.set(xlabel="registration error at the tumor (mm)", ylabel="fraction of cases", ylim=(0, 1))
    ax.set_title(f"error CDF per {by}")
    _legend(ax, groups)
    paths.append(_save(fig, out / PLOT_NAMES[0]))

    fig = Figure(figsize=(5.5, 5), dpi=110)
    ax = fig.add_subplot()
    top = 1.0
    for name, members in sorted(groups.items()):
        for accepted in (True, False):
            sel = [r for r in members if _accepted(r) == accepted and r.get("init_error_mm")]
            x, y = _floats(sel, "init_error_mm"), _floats(sel, "error_mm")
            if x.size != y.size or not x.size:
                continue
            top = max(top, float(x.max()), float(y.max()))
            ax.scatter(
                x,
                y,
                s=22,
                facecolors=colours[name] if accepted else "none",
                edgecolors=colours[name],
                label=f"{name}, {'accepted' if accepted else 'rejected'}",
            )
    ax.plot([0, top * 1.05], [0, top * 1.05], color="0.5", lw=1, ls="--")
    ax.set(xlabel="initial error (mm)", ylabel="final error (mm)")
    ax.set_title("final against initial error (dashed: no change)")
    _legend(ax, groups)
    paths.append(_save(fig, out / PLOT_NAMES[1]))

    fig = Figure(figsize=(5.5, 5), dpi=110)
    ax = fig.add_subplot()
    top = 1.0
    for name, members in sorted(groups.items()):
        sel = [
            r
            for r in members
            if _floats([r], "uncertainty_mm").size and _accepted(r) and bounded_error(r) is not None
        ]
        x = _floats(sel, "uncertainty_mm")
        y = np.array([bounded_error(r) for r in sel], dtype=float)
        if x.size != y.size or not x.size:
            continue
        top = max(top, float(x.max()), float(y.max()))
        ax.scatter(x, y, s=22, color=colours[name], label=name)
    ax.plot([0, top * 1.05], [0, top * 1.05], color="0.5", lw=1, ls="--")
    ax.set(xlabel="stated uncertainty (mm)", ylabel="actual error at the tumor now (mm)")
    ax.set_title("stated uncertainty against actual error")
    _legend(ax, groups)
    paths.append(_save(fig, out / PLOT_NAMES[2]))
    return paths


def bounded_error(row: dict) -> float | None:
    """The error ``uncertainty_mm`` bounds: at the tumor now, else the candidate's."""
    for key in ("error_now_mm", "candidate_error_mm"):
        value = _floats([row], key)
        if value.size:
            return float(value[0])
    return None


def _legend(ax, groups: dict) -> None:
    # a plot with no labelled artist (every case failed, or none accepted) gets the note
    # instead: matplotlib would warn "No artists with labels found" on stderr
    if groups and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, "no scored case", ha="center", va="center", transform=ax.transAxes)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    return path
