"""The registration budget a site's own cases support: ``usnav budget``.

The registration states a 95 % bound on its error at the tumor, the quadrature sum of
independent terms (:func:`usnav.registration.verdict.uncertainty_terms`). All but one are
measured per case or follow from the probe (the half-sweep spread, the two similarities'
distance, the calibration, the speed of sound, the tumor's shift); the remaining one,
``similarity_bias_mm``, is how far the similarity's optimum may lie from the truth on this
site's ultrasound — which only the site's own cases with a known truth can tell. Its default
(1.5 mm, from real data) leaves no estimate bounded below 2 mm, so nothing is LIVE
(docs/protocol.md, "Why nothing is LIVE with the default budget").

From the results of ``usnav evaluate`` on cases with a truth (the accepted estimates, their
error where the tumor is now and the terms of their stated bound) this module finds, for each
case, the bias at which its bound would just cover its error, and states the bias that covers
a given share of cases like these with a given confidence — a distribution-free one-sided
tolerance limit (an order statistic of the needed biases; Wilks 1941): with ``n`` cases the
``k``-th smallest needed bias covers at least a share ``p`` of the population with confidence
``P(Binomial(n, p) ≤ k − 1)``. With too few cases (59 for 95 % at 95 %) no such bias exists
and the answer is UNCERTAIN, naming how many cases are needed.

A bias fitted on some cases is then checked on others (:func:`check_similarity_bias`): a
site's earlier operations against its later ones, or, as session 42 did, the simulator's
tuning families against held-out families, another simulator and the real Case 24.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from scipy.stats import binom

from usnav.errors import InputError
from usnav.evaluate.results import (
    ASKED_NAME,
    RESULTS_NAME,
    bounded_error,
    read_asked_cases,
    read_results,
)
from usnav.io.folder_lock import folder_lock_holder

#: The term of the stated bound a site's cases measure (the others are per case or per probe).
BIAS_TERM = "similarity_bias"
#: How far a result.json's terms may add up from its row's ``uncertainty_mm`` (both rounded
#: to 4 decimals), mm.
BOUND_TOLERANCE_MM = 0.01


@dataclass(frozen=True)
class BudgetCase:
    """One accepted estimate with a scored error.

    Attributes
    ----------
    case
        The case's name (the results' ``case`` column).
    error_mm
        Its actual error at the tumor where it is now, mm (what ``uncertainty_mm`` bounds).
    uncertainty_mm
        The bound it stated, mm.
    bias_mm
        The ``similarity_bias`` term in that bound, mm (the run's budget).
    rest_mm
        The quadrature sum of every other term of that bound, mm.
    operation
        What identifies the operation (patient) the case comes from: its MRI's fingerprint
        (``inputs.mri_digest`` of its result.json, written since session 44), else its MRI's
        path as the run recorded it, else empty — the case is then its own operation. Cases
        of one operation (several sweeps, several perturbed starts) share its patient, its
        calibration and its ultrasound: :func:`fit_similarity_bias` counts them as one.
    """

    case: str
    error_mm: float
    uncertainty_mm: float
    bias_mm: float
    rest_mm: float
    operation: str = ""

    @property
    def needed_bias_mm(self) -> float:
        """The smallest ``similarity_bias_mm`` whose bound covers this case's error, mm (0 when
        the other terms alone do)."""
        if self.error_mm <= self.rest_mm:
            return 0.0
        # √(error² − rest²) without squaring: an error of 1e300 mm overflowed
        return math.sqrt(self.error_mm - self.rest_mm) * math.sqrt(self.error_mm + self.rest_mm)

    def bound_with(self, bias_mm: float) -> float:
        """The bound this case would have stated with ``bias_mm`` as its bias term, mm."""
        return math.hypot(self.rest_mm, bias_mm)


@dataclass(frozen=True)
class BudgetCases:
    """The accepted estimates of a results folder that a budget can be measured on.

    Attributes
    ----------
    source
        The results folder.
    cases
        The accepted estimates with a scored error and the terms of their bound.
    rows
        Rows of ``results.csv`` (every case, whatever its status).
    accepted
        Accepted estimates among them (scored or not).
    skipped
        ``(case, why)`` of accepted estimates left out: no scored error, no terms.
    unfinished
        What says the run that wrote the folder did not finish (a last row cut short, case
        folders without a row): the cases it had not recorded are not counted.
    """

    source: Path
    cases: list[BudgetCase]
    rows: int
    accepted: int
    skipped: list[tuple[str, str]]
    unfinished: tuple[str, ...] = ()


@dataclass(frozen=True)
class BiasFit:
    """The similarity bias a set of cases supports.

    Attributes
    ----------
    cases
        How many cases it was fitted on.
    operations
        How many operations those cases come from (:attr:`BudgetCase.operation`): the
        independent draws the tolerance limit is taken over.
    coverage, confidence
        The share of cases like these the bound must cover, and the confidence asked.
    needed_mm
        Every operation's needed bias (the largest its cases need), ascending, mm.
    similarity_bias_mm
        The bias that covers ``coverage`` with ``confidence`` (the ``order``-th smallest needed
        bias, rounded up to 0.01 mm); None when there are too few operations for any.
    order
        Which order statistic that is (1-based), or None.
    achieved_confidence
        The confidence of that order statistic, or of the largest when there are too few.
    cases_needed
        The fewest operations for which the largest needed bias reaches ``coverage`` at
        ``confidence``.
    supported_coverage
        The largest share the largest needed bias covers at ``confidence`` with these
        operations: ``(1 − confidence)^(1/n)``.
    """

    cases: int
    operations: int
    coverage: float
    confidence: float
    needed_mm: list[float]
    similarity_bias_mm: float | None
    order: int | None
    achieved_confidence: float
    cases_needed: int
    supported_coverage: float

    @property
    def largest_needed_mm(self) -> float:
        return self.needed_mm[-1] if self.needed_mm else 0.0


@dataclass(frozen=True)
class BudgetCheck:
    """A similarity bias applied to cases it was not fitted on.

    Attributes
    ----------
    cases
        Accepted estimates with a scored error.
    similarity_bias_mm
        The bias applied, mm.
    covered
        Cases whose bound with that bias is at least their error.
    live_limit_mm
        The LIVE threshold on the registration's bound, mm.
    live_eligible
        Cases whose bound with that bias is within ``live_limit_mm`` (a display could show them
        LIVE, other checks passing).
    wrong_mm
        The safe-display target, mm: an error over it is an overlay shown LIVE and wrong.
    live_wrong
        Of the LIVE-eligible cases, the ones whose error exceeds ``wrong_mm``.
    worst_uncovered
        ``(case, error_mm, bound_mm)`` of the uncovered case with the largest excess, or None.
    """

    cases: int
    similarity_bias_mm: float
    covered: int
    live_limit_mm: float
    live_eligible: int
    wrong_mm: float
    live_wrong: int
    worst_uncovered: tuple[str, float, float] | None

    @property
    def covered_pct(self) -> float:
        return 100.0 * self.covered / self.cases if self.cases else float("nan")


def read_budget_cases(results_dir: str | Path) -> BudgetCases:
    """The accepted estimates of a ``usnav evaluate`` results folder, with their error at the
    tumor now (else the candidate's: :func:`usnav.evaluate.results.bounded_error`) and the
    terms of their stated bound (each case's ``cases/<case>/result.json``).

    A row is left out, with why (:attr:`BudgetCases.skipped`), when its case name is not a
    plain name (``usnav evaluate`` writes none: a name such as ``../x`` would read a file
    outside ``cases/``) or repeats an earlier row's (one case counted twice), its error is
    negative (no error is), its result.json cannot be read or states no terms, or the bound
    those terms add up to is not the ``uncertainty_mm`` of its row (a result.json of another
    run: the bias would complete a budget the case never stated).

    Raises
    ------
    InputError
        The folder has no ``results.csv``, or it is not a results table.
    """
    folder = Path(results_dir)
    table = folder / RESULTS_NAME
    if not folder.exists():
        raise InputError(
            folder, "no such folder", "give the --out folder of a finished usnav evaluate run"
        )
    if not folder.is_dir():
        raise InputError(
            folder, "is a file, not a folder", "give the --out folder of a usnav evaluate run"
        )
    holder = folder_lock_holder(folder)
    if holder is not None:
        raise InputError(
            folder,
            f"a usnav evaluate is still writing to this folder ({holder}): its cases are not "
            "all recorded yet",
            "wait for it to finish, then run usnav budget",
        )
    if not table.is_file():
        raise InputError(
            folder,
            f"has no {RESULTS_NAME}",
            "give the --out folder of a finished usnav evaluate run",
        )
    rows = read_results(table)
    unfinished = _unfinished(folder, table, rows)
    cases: list[BudgetCase] = []
    skipped: list[tuple[str, str]] = []
    accepted = 0
    seen: set[str] = set()
    for row in rows:
        if row.get("status") != "ok" or str(row.get("accepted", "")).lower() != "true":
            continue
        accepted += 1
        name = row.get("case") or ""
        if not _plain_name(name):
            skipped.append((name, "not a plain case name (usnav evaluate writes none such)"))
            continue
        if name in seen:
            skipped.append((name, "repeats an earlier row's case: counted once"))
            continue
        seen.add(name)
        error = bounded_error(row)
        if error is None:
            skipped.append((name, "no scored error (the case has no truth)"))
            continue
        if error < 0:
            skipped.append((name, f"a negative error ({error:g} mm): not a results table's"))
            continue
        terms, why, operation = _terms(folder / "cases" / name / "result.json")
        if terms is None:
            skipped.append((name, why))
            continue
        rest = math.hypot(*(v for k, v in terms.items() if k not in (BIAS_TERM, "uncertainty_mm")))
        bias = terms[BIAS_TERM]
        bound = math.hypot(rest, bias)
        stated = _number(row.get("uncertainty_mm"))
        if stated is not None and abs(stated - bound) > BOUND_TOLERANCE_MM:
            skipped.append(
                (
                    name,
                    f"its result.json's terms add up to ±{bound:.2f} mm, its row states "
                    f"±{stated:.2f} mm (a result.json of another run?)",
                )
            )
            continue
        cases.append(BudgetCase(name, error, bound, bias, rest, operation))
    return BudgetCases(folder, cases, len(rows), accepted, skipped, unfinished)


def _unfinished(folder: Path, table: Path, rows: list[dict[str, str]]) -> tuple[str, ...]:
    """Signs that the run which wrote ``folder`` stopped before recording every case it began:
    a last row without its line end (:func:`usnav.evaluate.results.read_results` does not count
    it), case folders (written by the worker as a case runs) with no row, and cases the run
    was asked for (:data:`~usnav.evaluate.results.ASKED_NAME`) that have neither."""
    notes = []
    data = table.read_bytes()
    if data.count(b"\n") and not data.endswith(b"\n"):
        notes.append(
            f"{RESULTS_NAME} ends in a row cut short (the run was stopped while writing it): "
            "that case is not counted"
        )
    recorded = {row.get("case") or "" for row in rows}
    cases_dir = folder / "cases"
    started = sorted(
        p.name for p in (cases_dir.iterdir() if cases_dir.is_dir() else ()) if p.is_dir()
    )
    missing = [name for name in started if name not in recorded]
    if missing:
        first = ", ".join(missing[:3]) + (", …" if len(missing) > 3 else "")
        notes.append(
            f"{len(missing)} case folder(s) under cases/ have no row ({first}): cases the run "
            "began but did not record"
        )
    # the cases the run was asked for (usnav evaluate writes them first, since session 43)
    asked = read_asked_cases(folder) or []
    never = [name for name in asked if name not in recorded and name not in started]
    if never:
        first = ", ".join(never[:3]) + (", …" if len(never) > 3 else "")
        notes.append(
            f"{len(never)} case(s) of the {len(asked)} the run was "
            f"asked for ({ASKED_NAME}) were never started ({first}): not evaluated"
        )
    return tuple(notes)


def _number(text: object) -> float | None:
    """A finite number from a results cell, else None."""
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _plain_name(name: str) -> bool:
    """A case name as a manifest allows it (:func:`usnav.io.manifest.read_manifest`)."""
    return bool(name.strip()) and not (
        "/" in name or "\\" in name or name in (".", "..") or not name.isprintable()
    )


def _terms(path: Path) -> tuple[dict[str, float] | None, str, str]:
    """The ``uncertainty_terms`` of a case's result.json and its operation
    (:attr:`BudgetCase.operation`), or (None, why not, "")."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"{path} is missing", ""
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{path} cannot be read ({exc})", ""
    terms = doc.get("uncertainty_terms") if isinstance(doc, dict) else None
    if not isinstance(terms, dict) or BIAS_TERM not in terms:
        return None, f"{path} states no uncertainty_terms (written before session 20?)", ""
    try:
        values = {str(k): float(v) for k, v in terms.items()}
    except (TypeError, ValueError):
        return None, f"{path}: uncertainty_terms holds a value that is not a number", ""
    if not all(math.isfinite(v) and v >= 0 for v in values.values()):
        return None, f"{path}: uncertainty_terms holds a negative or non-finite value", ""
    return values, "", _operation(doc.get("inputs"))


def _operation(inputs: object) -> str:
    """:attr:`BudgetCase.operation` from a result.json's ``inputs``: ``digest:<MRI
    fingerprint>``, else ``path:<MRI path as recorded>``, else empty."""
    if not isinstance(inputs, dict):
        return ""
    digest = inputs.get("mri_digest")
    if isinstance(digest, str) and digest:
        return f"digest:{digest}"
    path = inputs.get("mri")
    return f"path:{path}" if isinstance(path, str) and path else ""


def operations(cases: list[BudgetCase]) -> dict[str, list[BudgetCase]]:
    """``cases`` grouped by operation (:attr:`BudgetCase.operation`; a case without one is
    its own), in the order each operation first appears."""
    groups: dict[str, list[BudgetCase]] = {}
    for i, c in enumerate(cases):
        groups.setdefault(c.operation or f"case #{i}", []).append(c)
    return groups


def tolerance_order(n: int, coverage: float, confidence: float) -> tuple[int | None, float]:
    """The smallest ``k`` (1-based) whose ``k``-th smallest of ``n`` values is an upper
    tolerance limit covering ``coverage`` of the population with ``confidence``, and that
    confidence; ``(None, confidence of the largest)`` when even the largest is not one.

    The ``k``-th smallest of ``n`` independent draws of a continuous variable lies above a
    share ``coverage`` of its distribution with probability ``P(Binomial(n, coverage) ≤
    k − 1)``; ties (needed biases of 0) only make the limit more conservative.
    """
    if n <= 0:
        return None, 0.0
    achieved = binom.cdf(np.arange(n), n, coverage)  # k = 1..n
    ok = np.flatnonzero(achieved >= confidence)
    if not ok.size:
        return None, float(achieved[-1])
    k = int(ok[0])
    return k + 1, float(achieved[k])


def cases_needed(coverage: float, confidence: float) -> int:
    """The fewest cases whose largest value is a (``coverage``, ``confidence``) upper limit:
    the smallest ``n`` with ``1 − coverage^n ≥ confidence``."""
    return math.ceil(math.log(1.0 - confidence) / math.log(coverage))


def fit_similarity_bias(
    cases: list[BudgetCase], coverage: float = 0.95, confidence: float = 0.95
) -> BiasFit:
    """The similarity bias these cases support (see the module's docstring).

    Parameters
    ----------
    cases
        Accepted estimates with a scored error (:func:`read_budget_cases`). Cases of one
        operation (:attr:`BudgetCase.operation`) count once, at the largest bias they need.
    coverage
        The share of cases like these whose bound must cover the error (0 < coverage < 1).
    confidence
        The confidence of that statement (0 < confidence < 1).
    """
    if not 0.0 < coverage < 1.0 or not 0.0 < confidence < 1.0:
        raise ValueError("coverage and confidence are shares strictly between 0 and 1")
    # the cases of one operation are not independent draws: the limit is taken over
    # operations, each at the largest bias its cases need (a bias covering an operation's
    # largest covers all its cases, so a share of operations covered is at least that share
    # of cases)
    needed = sorted(max(c.needed_bias_mm for c in group) for group in operations(cases).values())
    n = len(needed)
    order, achieved = tolerance_order(n, coverage, confidence)
    bias = None if order is None else math.ceil(needed[order - 1] * 100.0 - 1e-9) / 100.0
    return BiasFit(
        cases=len(cases),
        operations=n,
        coverage=coverage,
        confidence=confidence,
        needed_mm=needed,
        similarity_bias_mm=bias,
        order=order,
        achieved_confidence=achieved,
        cases_needed=cases_needed(coverage, confidence),
        supported_coverage=(1.0 - confidence) ** (1.0 / n) if n else 0.0,
    )


def check_similarity_bias(
    cases: list[BudgetCase], bias_mm: float, live_limit_mm: float = 2.0, wrong_mm: float = 2.0
) -> BudgetCheck:
    """Apply ``bias_mm`` to the bounds of ``cases``: how many it covers, how many it would
    let a display show LIVE (bound ≤ ``live_limit_mm``: the display rules' threshold on the
    registration, :attr:`usnav.protocol.display.DisplayRules.registration_limit_mm`) and how
    many of those are wrong by more than ``wrong_mm`` (the safe-display target)."""
    covered = 0
    eligible = 0
    wrong = 0
    worst: tuple[str, float, float] | None = None
    for c in cases:
        bound = c.bound_with(bias_mm)
        if bound >= c.error_mm:
            covered += 1
        elif worst is None or c.error_mm - bound > worst[1] - worst[2]:
            worst = (c.case, c.error_mm, bound)
        if bound <= live_limit_mm:
            eligible += 1
            wrong += c.error_mm > wrong_mm
    return BudgetCheck(
        len(cases), bias_mm, covered, live_limit_mm, eligible, wrong_mm, wrong, worst
    )


@dataclass(frozen=True)
class BudgetReport:
    """What ``usnav budget`` prints (:func:`format_budget_report`).

    Attributes
    ----------
    fitted
        The results folders the bias was fitted on.
    fit
        The fit.
    applied_mm
        The bias applied to the cases: the fitted one, or the largest needed when there were
        too few cases for a tolerance limit (then not a limit).
    as_stated
        Per fitted folder and per bias its runs stated, the cases that stated it, with it.
    in_sample
        The fitted cases with ``applied_mm``.
    without_bias
        The fitted cases with no bias term at all: how many bounds the other terms alone
        already keep over the LIVE limit (then a smaller bias cannot make them LIVE; a smaller
        calibration or speed-of-sound budget, measured too, would).
    checks
        Other results folders with ``applied_mm``: cases it was not fitted on.
    """

    fitted: list[BudgetCases]
    fit: BiasFit
    applied_mm: float
    as_stated: list[BudgetCheck]
    in_sample: BudgetCheck
    without_bias: BudgetCheck
    checks: list[tuple[BudgetCases, BudgetCheck]]


def budget_report(
    fit_dirs: list[str | Path],
    check_dirs: list[str | Path] = (),  # type: ignore[assignment]
    *,
    coverage: float = 0.95,
    confidence: float = 0.95,
    live_limit_mm: float = 2.0,
    wrong_mm: float = 2.0,
    partial: bool = False,
) -> BudgetReport:
    """Fit the similarity bias on the results folders ``fit_dirs`` and apply it to
    ``check_dirs`` (see the module's docstring).

    ``partial``: fit on (and check) folders whose run did not finish
    (:attr:`BudgetCases.unfinished`: cases it began or was asked for and did not record),
    which are refused otherwise: the cases an interrupted run left out are not a random
    share (the manifest's last ones, the ones that hung), so a bias fitted without them may
    cover fewer than it says.

    Raises
    ------
    InputError
        A folder is not a results folder, is given twice, did not finish (without
        ``partial``), or the fitted folders hold no accepted estimate with a scored error.
    """
    same = {Path(d).resolve() for d in fit_dirs} & {Path(d).resolve() for d in check_dirs}
    if same:
        raise InputError(
            sorted(same)[0],
            "is both fitted on and checked on: a check on the cases a bias was fitted on says "
            "nothing about other cases",
            "check on results the bias was not fitted on (a later set of operations)",
        )
    given = [Path(d).resolve() for d in [*fit_dirs, *check_dirs]]
    twice = sorted({d for d in given if given.count(d) > 1})
    if twice:
        raise InputError(
            twice[0],
            "is given twice: its cases would count twice (as independent cases they are not)",
            "give each results folder once",
        )
    fitted = [read_budget_cases(d) for d in fit_dirs]
    checked = [read_budget_cases(d) for d in check_dirs]
    unfinished = [f for f in [*fitted, *checked] if f.unfinished]
    if unfinished and not partial:
        first = unfinished[0]
        raise InputError(
            first.source,
            f"not finished: {first.unfinished[0]}",
            "run usnav evaluate again with that --out (it resumes), or give --partial to use "
            "the cases it recorded",
        )
    cases = [c for f in fitted for c in f.cases]
    if not cases:
        first = fitted[0]
        unfinished = [f for f in fitted if f.unfinished and not f.rows]
        raise InputError(
            first.source if len(fitted) == 1 else ", ".join(str(f.source) for f in fitted),
            f"no accepted estimate with a scored error and its bound's terms (of "
            f"{sum(f.rows for f in fitted)} cases, {sum(f.accepted for f in fitted)} accepted)"
            + (f"; not finished: {unfinished[0].unfinished[-1]}" if unfinished else ""),
            "run usnav evaluate again with that --out (it resumes) to record its cases"
            if unfinished
            else "evaluate cases with a truth (the manifest's truth column): a budget is "
            "measured on the error of accepted estimates",
        )
    fit = fit_similarity_bias(cases, coverage, confidence)
    applied = fit.similarity_bias_mm
    if applied is None:
        applied = math.ceil(fit.largest_needed_mm * 100.0 - 1e-9) / 100.0
    as_stated = [  # per bias the runs stated, the cases that stated it
        check_similarity_bias(
            [c for c in f.cases if c.bias_mm == bias], bias, live_limit_mm, wrong_mm
        )
        for f in fitted
        for bias in sorted({c.bias_mm for c in f.cases})
    ]
    fitted_operations = {c.operation for c in cases if c.operation}
    checked = [_without_operations(other, fitted_operations) for other in checked]
    checks = [
        (other, check_similarity_bias(other.cases, applied, live_limit_mm, wrong_mm))
        for other in checked
    ]
    return BudgetReport(
        fitted=fitted,
        fit=fit,
        applied_mm=applied,
        as_stated=as_stated,
        in_sample=check_similarity_bias(cases, applied, live_limit_mm, wrong_mm),
        without_bias=check_similarity_bias(cases, 0.0, live_limit_mm, wrong_mm),
        checks=checks,
    )


def _without_operations(folder: BudgetCases, fitted: set[str]) -> BudgetCases:
    """``folder`` without the cases of an operation the bias was fitted on (listed as left
    out): a check on another sweep of a fitted patient is not a check on other cases."""
    same = [c for c in folder.cases if c.operation and c.operation in fitted]
    if not same:
        return folder
    return replace(
        folder,
        cases=[c for c in folder.cases if c not in same],
        skipped=[
            *folder.skipped,
            *(
                (
                    c.case,
                    "the same MRI as a case fitted on (one operation): not a check on other cases",
                )
                for c in same
            ),
        ],
    )


def format_budget_report(report: BudgetReport) -> str:
    """The report as ``usnav budget`` prints it: what each folder held, the bias, what it
    does on the cases it was fitted on and on the others, and the lines to state it."""
    fit = report.fit
    pct = f"{100 * fit.coverage:g} %"
    conf = f"{100 * fit.confidence:g} %"
    lines = ["fitted on:"]
    for f in report.fitted:
        lines += _folder_lines(f)
    for check in report.as_stated:
        lines.append(
            f"  as the runs stated them (similarity_bias {check.similarity_bias_mm:g} mm): "
            + _check_text(check)
        )
    needed = np.asarray(fit.needed_mm)
    each = "case"
    if fit.operations < fit.cases:
        each = "operation"
        lines.append(
            f"  {_cases(fit.cases)} from {fit.operations} operation(s) (cases sharing an MRI: "
            "its sweeps, its perturbed starts): they share the patient, the calibration and "
            "the ultrasound, so the limit is taken over operations, each at the largest bias "
            "its cases need"
        )
    lines.append(
        f"  the bias each {each} needs for its bound to cover its error: median "
        f"{np.median(needed):.2f}, 90th percentile {np.percentile(needed, 90):.2f}, largest "
        f"{fit.largest_needed_mm:.2f} mm"
    )
    if fit.similarity_bias_mm is not None:
        lines.append(
            f"  similarity_bias_mm = {fit.similarity_bias_mm:.2f}: the {_ordinal(fit.order)} "
            f"smallest of {fit.operations} needed biases; it covers ≥ {pct} of cases like "
            f"these with {100 * fit.achieved_confidence:.1f} % confidence, if the operations "
            "are independent (one per patient)"
        )
        lines.append(
            "  with it, on the cases it was fitted on (in sample, not a check): "
            + _check_text(report.in_sample)
        )
    else:
        counted = (
            _cases(fit.cases) if fit.operations == fit.cases else f"{fit.operations} operation(s)"
        )
        lines.append(
            f"  UNCERTAIN: {counted} {'is' if fit.operations == 1 else 'are'} too few for "
            f"a bias covering {pct} of cases "
            f"like these at {conf} confidence (that needs ≥ {fit.cases_needed} "
            f"{'cases' if fit.operations == fit.cases else 'operations'}); the largest "
            f"needed, {report.applied_mm:.2f} mm, covers ≥ "
            f"{100 * fit.supported_coverage:.1f} % at {conf} confidence — evaluate more cases "
            "with a truth, or ask for less (--coverage)"
        )
        lines.append(
            f"  with {report.applied_mm:.2f} mm, on the cases it was fitted on (in sample): "
            + _check_text(report.in_sample)
        )
    floor = report.without_bias
    if floor.live_eligible < floor.cases:
        lines.append(
            f"  even with no bias term, {floor.cases - floor.live_eligible} of {floor.cases} "
            f"bounds stay over the LIVE limit {floor.live_limit_mm:.2f} mm (their other terms: "
            "calibration, speed of sound, tumor shift …): a smaller bias cannot make those "
            "LIVE; a measured calibration budget (usnav calibrate spatial) would"
        )
    if report.checks:
        limit = "" if fit.similarity_bias_mm is not None else " (not a tolerance limit)"
        lines.append(
            f"checked with {report.applied_mm:.2f} mm{limit}, on cases it was not fitted on:"
        )
        for other, check in report.checks:
            lines += _folder_lines(other)
            lines.append("    " + _check_text(check))
    target, limit_mm = report.in_sample.wrong_mm, report.in_sample.live_limit_mm
    if math.isclose(limit_mm, target):  # the display's limit with margin_error_mm 0
        lines.append(
            f"the LIVE limit above, {limit_mm:.2f} mm, is the display's with margin_error_mm 0 "
            f"only; with the margin_error_mm you state it is √({target:g}² − "
            "margin_error_mm²): give that with --live-limit-mm"
        )
    if fit.similarity_bias_mm is not None:
        lines += [
            "to state it in the usnav run --options file, only for ultrasound like these "
            "cases' and with the other [registration_budget] values their runs used (the "
            "evaluate --config's [registration]; the defaults if none):",
            "  [registration_budget]",
            f"  similarity_bias_mm = {fit.similarity_bias_mm:.2f}",
            "  [display]  # one [display] table per file: add to yours if it has one",
            "  margin_error_mm = …  # required with a budget: the margin's own error at your "
            "site (docs/protocol.md)",
        ]
    return "\n".join(lines)


def _folder_lines(f: BudgetCases) -> list[str]:
    """What a results folder held, and the first cases left out and why."""
    lines = [
        f"  {f.source}: {_cases(f.rows)}, {f.accepted} accepted, {len(f.cases)} with a scored "
        "error and the terms of their bound"
    ]
    lines.extend(f"    not finished: {note}" for note in f.unfinished)
    if f.unfinished:
        lines.append(
            "    run usnav evaluate again with this --out (it resumes) to record those cases"
        )
    lines.extend(f"    left out: {case}: {why}" for case, why in f.skipped[:5])
    if len(f.skipped) > 5:
        lines.append(f"    … and {len(f.skipped) - 5} more left out")
    return lines


def _check_text(check: BudgetCheck) -> str:
    if not check.cases:
        return "no accepted estimate with a scored error"
    text = (
        f"bounds cover {check.covered} of {check.cases} ({check.covered_pct:.1f} %); "
        f"{check.live_eligible} within the LIVE limit {check.live_limit_mm:.2f} mm, "
        f"{check.live_wrong} of them over {check.wrong_mm:g} mm off"
    )
    if check.worst_uncovered is not None:
        case, error, bound = check.worst_uncovered
        text += f" (worst uncovered: {case}, {error:.2f} mm against ±{bound:.2f} mm)"
    return text


def _cases(n: int) -> str:
    return f"{n} case" if n == 1 else f"{n} cases"


def _ordinal(n: int | None) -> str:
    if n is None:
        return ""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def budget_report_json(report: BudgetReport) -> dict:
    """The report as plain data (``usnav budget --json``)."""

    def folder(f: BudgetCases) -> dict:
        return {
            "source": str(f.source),
            "rows": f.rows,
            "accepted": f.accepted,
            "scored": len(f.cases),
            "skipped": [{"case": c, "why": w} for c, w in f.skipped],
            "unfinished": list(f.unfinished),
        }

    fit = asdict(report.fit)
    fit["needed_mm"] = [round(v, 4) for v in fit["needed_mm"]]
    return {
        "fitted": [folder(f) for f in report.fitted],
        "fit": fit,
        "applied_mm": report.applied_mm,
        "as_stated": [asdict(c) for c in report.as_stated],
        "in_sample": asdict(report.in_sample),
        "without_bias": asdict(report.without_bias),
        "checks": [{**folder(o), "check": asdict(c)} for o, c in report.checks],
    }
