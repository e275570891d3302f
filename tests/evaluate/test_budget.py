"""``usnav budget``: the similarity bias a site's evaluated cases support (a distribution-free
tolerance limit on the bias each accepted estimate needed), checked on cases it was not fitted
on."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from evaluate_helpers import usnav

from usnav.errors import InputError
from usnav.evaluate.budget import (
    BudgetCase,
    budget_report,
    cases_needed,
    check_similarity_bias,
    fit_similarity_bias,
    read_budget_cases,
    tolerance_order,
)
from usnav.evaluate.results import ASKED_NAME, RESULTS_NAME, ResultsWriter, write_asked_cases

#: the terms of a bound as the registration states them (a 20 mm deep field of view)
TERMS = {
    "statistical": 0.3,
    "model": 0.2,
    "calibration": 1.35,
    "speed_of_sound": 0.8,
    "echo_offset": 0.3,
    "similarity_bias": 1.5,
    "tumor_shift": 1.1,
    "removed_label": 0.0,
}


def _rest(terms: dict[str, float]) -> float:
    return math.sqrt(sum(v * v for k, v in terms.items() if k != "similarity_bias"))


def write_results(folder: Path, cases: list[dict]) -> Path:
    """A results folder as usnav evaluate leaves it: results.csv (written by its own writer)
    and each case's result.json with the terms of its bound."""
    folder.mkdir(parents=True, exist_ok=True)
    with ResultsWriter(folder / "results.csv", tags=["family"]) as writer:
        for c in cases:
            terms = dict(TERMS, **c.get("terms", {}))
            total = math.sqrt(sum(v * v for v in terms.values()))
            writer.write(
                {
                    "case": c["case"],
                    "status": c.get("status", "ok"),
                    "accepted": c.get("accepted", True),
                    "error_now_mm": c.get("error", ""),
                    "uncertainty_mm": round(total, 4),
                    "family": "real",
                }
            )
            case_dir = folder / "cases" / c["case"]
            case_dir.mkdir(parents=True, exist_ok=True)
            if c.get("write_json", True):
                doc = {"accepted": True, "uncertainty_terms": {**terms, "uncertainty_mm": total}}
                if "inputs" in c:
                    doc["inputs"] = c["inputs"]
                (case_dir / "result.json").write_text(json.dumps(doc), encoding="utf-8")
    return folder


def test_the_bias_a_case_needs_just_covers_its_error() -> None:
    rest = _rest(TERMS)
    case = BudgetCase("a", error_mm=3.0, uncertainty_mm=0.0, bias_mm=1.5, rest_mm=rest)
    needed = case.needed_bias_mm
    assert math.isclose(case.bound_with(needed), 3.0)
    assert case.bound_with(needed - 0.01) < 3.0
    small = BudgetCase("b", error_mm=rest - 0.1, uncertainty_mm=0.0, bias_mm=1.5, rest_mm=rest)
    assert small.needed_bias_mm == 0.0  # the other terms alone cover it


@pytest.mark.parametrize("coverage,confidence", [(0.95, 0.95), (0.9, 0.95), (0.95, 0.9)])
def test_the_tolerance_order_holds_its_confidence(coverage: float, confidence: float) -> None:
    """The k-th smallest of n draws covers ≥ ``coverage`` of the distribution in at least a
    share ``confidence`` of repeated samples (checked by drawing, for several n), and k − 1 would
    not (its exact confidence, from the Beta law of an order statistic, falls short)."""
    from scipy.stats import beta

    rng = np.random.default_rng(5)
    for n in (cases_needed(coverage, confidence), 80, 150):
        k, achieved = tolerance_order(n, coverage, confidence)
        assert k is not None and achieved >= confidence
        # F(X_(k)) ~ Beta(k, n - k + 1) for a continuous variable: the same number, another way
        assert math.isclose(beta.sf(coverage, k, n - k + 1), achieved, rel_tol=1e-9)
        if k > 1:
            assert beta.sf(coverage, k - 1, n - k + 2) < confidence
        draws = np.sort(rng.random((4000, n)), axis=1)[:, k - 1]  # uniform: F(x) = x
        assert np.mean(draws >= coverage) >= confidence - 0.015


def test_too_few_cases_give_no_bias_and_say_how_many_are_needed() -> None:
    assert cases_needed(0.95, 0.95) == 59  # 1 - 0.95^59 = 0.9515
    assert tolerance_order(58, 0.95, 0.95)[0] is None
    assert tolerance_order(59, 0.95, 0.95)[0] == 59
    cases = [BudgetCase(str(i), 2.2, 0.0, 1.5, 1.8) for i in range(20)]
    fit = fit_similarity_bias(cases)
    assert fit.similarity_bias_mm is None and fit.order is None
    assert fit.cases_needed == 59
    assert math.isclose(fit.supported_coverage, 0.05 ** (1 / 20))  # ≈ 86 %


def test_enough_cases_give_an_order_statistic_rounded_up() -> None:
    rng = np.random.default_rng(3)
    errors = rng.uniform(0.5, 2.5, 100)
    cases = [BudgetCase(str(i), float(e), 0.0, 1.5, 1.6) for i, e in enumerate(errors)]
    fit = fit_similarity_bias(cases)
    assert fit.order is not None and fit.order < 100  # 100 cases: not the largest
    value = fit.needed_mm[fit.order - 1]
    assert fit.similarity_bias_mm is not None
    assert value <= fit.similarity_bias_mm < value + 0.01 + 1e-9
    check = check_similarity_bias(cases, fit.similarity_bias_mm)
    assert check.covered >= fit.order  # every case up to that order statistic is covered
    assert check.covered < len(cases)


def test_a_check_counts_covered_live_and_live_wrong() -> None:
    cases = [
        BudgetCase("ok", 0.5, 0.0, 1.5, 1.0),  # bound 1.12 with 0.5: covered, LIVE
        BudgetCase("wrong", 2.3, 0.0, 1.5, 1.9),  # bound 1.96: LIVE and 2.3 off, uncovered
        BudgetCase("wide", 2.3, 0.0, 1.5, 2.5),  # bound 2.55: covered, not LIVE
    ]
    check = check_similarity_bias(cases, 0.5, live_limit_mm=2.0)
    assert (check.covered, check.live_eligible, check.live_wrong) == (2, 2, 1)
    assert check.worst_uncovered is not None and check.worst_uncovered[0] == "wrong"


def test_a_results_folder_gives_its_accepted_scored_cases(tmp_path: Path) -> None:
    folder = write_results(
        tmp_path / "site",
        [
            {"case": "a", "error": 1.2},
            {"case": "rejected", "error": 5.0, "accepted": False},
            {"case": "failed", "status": "failed"},
            {"case": "no-truth", "error": ""},
            {"case": "no-json", "error": 1.0, "write_json": False},
            {"case": "stage", "error": 2.8, "terms": {"similarity_bias": 0.5}},
        ],
    )
    read = read_budget_cases(folder)
    assert read.rows == 6 and read.accepted == 4
    assert [c.case for c in read.cases] == ["a", "stage"]
    assert {case for case, _ in read.skipped} == {"no-truth", "no-json"}
    stage = read.cases[1]
    assert stage.bias_mm == 0.5 and math.isclose(stage.rest_mm, _rest(TERMS), rel_tol=1e-6)
    assert math.isclose(stage.uncertainty_mm, math.hypot(_rest(TERMS), 0.5), rel_tol=1e-6)


def test_fitted_and_checked_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    folder = write_results(tmp_path / "site", [{"case": "a", "error": 1.2}])
    with pytest.raises(InputError, match="both fitted on and checked on"):
        budget_report([folder], [tmp_path / "site" / "."])


def test_usnav_budget_states_a_bias_and_checks_it_elsewhere(tmp_path: Path) -> None:
    """The command end to end on results folders: with 70 cases it states a bias (and the
    lines to paste), applies it to a later set, and a folder without accepted scored cases is
    one line, exit 2."""
    rest = _rest(TERMS)
    rng = np.random.default_rng(11)
    early = [{"case": f"e{i}", "error": float(e)} for i, e in enumerate(rng.uniform(0.3, 2.6, 70))]
    later = [{"case": f"l{i}", "error": float(e)} for i, e in enumerate(rng.uniform(0.3, 3.2, 30))]
    fit_dir = write_results(tmp_path / "early", early)
    check_dir = write_results(tmp_path / "later", later)
    done = usnav("budget", str(fit_dir), "--check", str(check_dir), "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    needed = sorted(math.sqrt(max(0.0, c["error"] ** 2 - rest**2)) for c in early)
    k = doc["fit"]["order"]
    assert k is not None and doc["fit"]["similarity_bias_mm"] >= needed[k - 1] - 1e-6
    bias = doc["applied_mm"]
    covered = sum(math.hypot(rest, bias) >= c["error"] - 1e-9 for c in later)
    assert doc["checks"][0]["check"]["covered"] == covered
    # the other terms alone (1.97 mm here) are within the 2 mm limit: a bias could make LIVE
    assert doc["without_bias"]["live_eligible"] == sum(rest <= 2.0 for _ in early) == 70
    text = usnav("budget", str(fit_dir), "--check", str(check_dir))
    assert text.returncode == 0
    assert f"similarity_bias_mm = {bias:.2f}" in text.stdout
    assert "[registration_budget]" in text.stdout and "margin_error_mm" in text.stdout

    empty = write_results(tmp_path / "none", [{"case": "r", "error": 1.0, "accepted": False}])
    bad = usnav("budget", str(empty))
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and str(empty) in bad.stderr
    assert "no accepted estimate" in bad.stderr and "Traceback" not in bad.stderr


def test_usnav_budget_with_too_few_cases_says_uncertain(tmp_path: Path) -> None:
    folder = write_results(tmp_path / "few", [{"case": f"c{i}", "error": 2.4} for i in range(12)])
    done = usnav("budget", str(folder))
    assert done.returncode == 0, done.stderr
    assert "UNCERTAIN" in done.stdout and "≥ 59" in done.stdout
    assert "[registration_budget]" not in done.stdout  # nothing to paste
    bad = usnav("budget", str(folder), "--coverage", "1.5")
    assert bad.returncode == 2 and "between 0 and 1" in bad.stderr


def test_rows_that_are_not_independent_scored_cases_are_left_out(tmp_path: Path) -> None:
    """A case name that is a path (it would read a result.json outside ``cases/``), a case
    repeated, a negative error and a result.json whose terms are not its row's bound are left
    out, each with why; an absurd error is a case, not an overflow."""
    folder = write_results(
        tmp_path / "site",
        [
            {"case": "a", "error": 1.2},
            {"case": "b", "error": 1.3},
            {"case": "c", "error": 1.4},
            {"case": "d", "error": -0.5},
            {"case": "e", "error": 2.0},
            {"case": "huge", "error": 1e300},
        ],
    )
    outside = tmp_path / "site" / "b"  # what cases/../b/result.json reads
    outside.mkdir()
    (outside / "result.json").write_text(
        (folder / "cases" / "b" / "result.json").read_text(), encoding="utf-8"
    )
    table = folder / "results.csv"
    rows = table.read_text(encoding="utf-8").splitlines()
    renamed = {"b": "../b", "c": "a"}  # a path, and a case repeated
    rows = [renamed.get(r.split(",")[0], r.split(",")[0]) + r[r.index(",") :] for r in rows]
    table.write_text("\n".join(rows) + "\n", encoding="utf-8")
    doc = json.loads((folder / "cases" / "e" / "result.json").read_text(encoding="utf-8"))
    doc["uncertainty_terms"]["similarity_bias"] = 0.2  # another run's result.json
    (folder / "cases" / "e" / "result.json").write_text(json.dumps(doc), encoding="utf-8")

    read = read_budget_cases(folder)
    assert [c.case for c in read.cases] == ["a", "huge"]
    why = dict(read.skipped)
    assert set(why) == {"../b", "a", "d", "e"}
    assert "plain case name" in why["../b"] and "earlier row" in why["a"]
    assert "negative" in why["d"] and "another run" in why["e"]
    huge = read.cases[1]
    assert math.isclose(huge.needed_bias_mm, 1e300) and math.isfinite(huge.bound_with(1.0))
    fit = fit_similarity_bias(read.cases)
    assert fit.similarity_bias_mm is None and math.isclose(fit.largest_needed_mm, 1e300)


def test_a_folder_given_twice_is_refused(tmp_path: Path) -> None:
    """Fitted on twice, its cases would count twice: a tolerance limit on 2n "cases" that
    are n (at 70 cases, the 70th smallest of 140 instead of the largest of 70)."""
    folder = write_results(tmp_path / "site", [{"case": "a", "error": 1.2}])
    other = write_results(tmp_path / "later", [{"case": "b", "error": 1.2}])
    with pytest.raises(InputError, match="given twice"):
        budget_report([folder, tmp_path / "site" / "."])
    with pytest.raises(InputError, match="given twice"):
        budget_report([folder], [other, other])
    with pytest.raises(InputError, match="is a file, not a folder"):
        budget_report([folder / "results.csv"])


def test_as_the_runs_stated_them_applies_each_bias_to_its_own_cases(tmp_path: Path) -> None:
    rest = _rest(TERMS)
    folder = write_results(
        tmp_path / "mixed",
        [
            {"case": "wide", "error": math.hypot(rest, 1.0)},  # stated 1.5: covered
            {"case": "tight", "error": math.hypot(rest, 1.0), "terms": {"similarity_bias": 0.5}},
        ],
    )
    report = budget_report([folder])
    stated = {c.similarity_bias_mm: (c.cases, c.covered) for c in report.as_stated}
    assert stated == {0.5: (1, 0), 1.5: (1, 1)}


def test_usnav_budget_prints_lines_that_load_as_pipeline_options(tmp_path: Path) -> None:
    """The printed lines, pasted with margin_error_mm filled in, are a valid ``usnav run
    --options`` file stating the bias; --json is strict JSON with an empty check folder; the
    note on the LIVE limit is there with the default limit only."""
    from usnav.config.loader import load_toml_model
    from usnav.pipeline.config import PipelineOptions

    rng = np.random.default_rng(2)
    cases = [{"case": f"e{i}", "error": float(e)} for i, e in enumerate(rng.uniform(0.3, 2.6, 60))]
    fit_dir = write_results(tmp_path / "early", cases)
    empty = write_results(tmp_path / "none", [{"case": "r", "error": ""}])
    done = usnav("budget", str(fit_dir), "--check", str(empty))
    assert done.returncode == 0, done.stderr
    assert "with margin_error_mm 0 only" in done.stdout
    printed = done.stdout.splitlines()
    start = next(i for i, line in enumerate(printed) if line.startswith("to state it")) + 1
    pasted = "\n".join(printed[start:]).replace("…", "1.9")  # as printed, indented
    assert pasted.lstrip().startswith("[registration_budget]")
    options = tmp_path / "options.toml"
    options.write_text(pasted + "\n", encoding="utf-8")
    loaded = load_toml_model(options, PipelineOptions)
    bias = loaded.registration_budget.similarity_bias_mm
    assert bias is not None and f"similarity_bias_mm = {bias:.2f}" in done.stdout
    assert loaded.display.margin_error_mm == 1.9

    def no_constant(name: str) -> float:
        raise AssertionError(f"{name} is not JSON")

    strict = usnav("budget", str(fit_dir), "--check", str(empty), "--json", "--live-limit-mm", "1")
    assert strict.returncode == 0, strict.stderr
    doc = json.loads(strict.stdout, parse_constant=no_constant)
    assert doc["checks"][0]["scored"] == 0 and doc["fit"]["similarity_bias_mm"] == bias
    limited = usnav("budget", str(fit_dir), "--live-limit-mm", "0.62")
    assert "within the LIVE limit 0.62 mm" in limited.stdout
    assert "margin_error_mm 0 only" not in limited.stdout


def test_a_folder_of_an_interrupted_run_says_which_cases_it_did_not_record(
    tmp_path: Path,
) -> None:
    """Session 42: a results folder whose run was stopped (a last row cut short, a case folder
    without a row) was fitted on silently, as if every case had been recorded."""
    folder = write_results(tmp_path / "site", [{"case": "a", "error": 1.2}])
    assert read_budget_cases(folder).unfinished == ()
    (folder / "cases" / "b").mkdir()  # a case the worker had begun
    with (folder / "results.csv").open("ab") as f:
        f.write(b"c,ok,,")  # a row whose write was cut short
    read = read_budget_cases(folder)
    assert [c.case for c in read.cases] == ["a"]
    assert len(read.unfinished) == 2
    assert "cut short" in read.unfinished[0] and "(b)" in read.unfinished[1]
    # refused unless told (session 43): the cases it left out are not a random share
    refused = usnav("budget", str(folder))
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert f"{folder}: not finished: {RESULTS_NAME} ends in a row cut short" in refused.stderr
    assert "--partial" in refused.stderr and not refused.stdout
    out = usnav("budget", str(folder), "--partial")
    assert out.returncode == 0, out.stderr
    assert "not finished" in out.stdout and "run usnav evaluate again" in out.stdout


def test_cases_an_interrupted_run_never_started_are_named_not_evaluated(tmp_path: Path) -> None:
    """Session 43: a run stopped before some cases began left no trace of them (no row, no
    case folder), and usnav budget fitted on the rest as on a finished run."""
    folder = write_results(tmp_path / "site", [{"case": "a", "error": 1.2}])
    write_asked_cases(folder, ["a", "b", "c"])
    read = read_budget_cases(folder)
    assert [c.case for c in read.cases] == ["a"]
    assert read.unfinished == (
        f"2 case(s) of the 3 the run was asked for ({ASKED_NAME}) were never started (b, c): "
        "not evaluated",
    )
    with pytest.raises(InputError, match=r"not finished: 2 case\(s\) .*--partial"):
        budget_report([folder], [])
    assert budget_report([folder], [], partial=True).fit.cases == 1
    # as a folder to check on, too
    other = write_results(tmp_path / "other", [{"case": "x", "error": 0.5}])
    with pytest.raises(InputError, match=r"site: not finished"):
        budget_report([other], [folder])
    write_asked_cases(folder, ["a"])  # the run resumed and finished
    assert read_budget_cases(folder).unfinished == ()


def test_a_folder_a_run_is_still_writing_is_refused(tmp_path: Path) -> None:
    """Session 42: usnav budget read a folder while usnav evaluate was still appending to it."""
    from usnav.io.folder_lock import folder_lock

    folder = write_results(tmp_path / "site", [{"case": "a", "error": 1.2}])
    with folder_lock(folder), pytest.raises(InputError, match="still writing to this folder"):
        read_budget_cases(folder)
    assert [c.case for c in read_budget_cases(folder).cases] == ["a"]


def test_a_missing_folder_is_named_as_missing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such folder"):
        read_budget_cases(tmp_path / "nowhere")


def test_a_run_stopped_before_recording_any_case_says_so(tmp_path: Path) -> None:
    """Session 42: a folder whose run was stopped before its first row was told to "evaluate
    cases with a truth", which its cases had."""
    folder = write_results(tmp_path / "site", [])
    (folder / "cases" / "a").mkdir(parents=True)
    with pytest.raises(InputError, match="not finished.*run usnav evaluate again"):
        budget_report([folder], [])


def _op_cases(prefix: str, operations: int, per_operation: int, errors) -> list[dict]:
    """``operations`` × ``per_operation`` cases, the cases of an operation sharing its MRI's
    fingerprint (as usnav evaluate records it in result.json's inputs)."""
    return [
        {
            "case": f"{prefix}{op}-{k}",
            "error": float(errors(op, k)),
            "inputs": {
                "mri": f"/data/op{prefix}{op}/mri.nii.gz",
                "mri_digest": f"{prefix}{op:014x}",
            },
        }
        for op in range(operations)
        for k in range(per_operation)
    ]


def test_cases_of_one_operation_count_once(tmp_path: Path) -> None:
    """60 cases are enough for 95 % / 95 % (59) when they come from 60 operations; the same
    60 from 10 operations (6 sweeps or perturbed starts each) are not: UNCERTAIN. Before
    session 44 both gave a bias — a site could reach LIVE by evaluating each patient six
    times."""
    errors = lambda op, k: 2.0 + 0.01 * op + 0.001 * k  # noqa: E731
    independent = write_results(tmp_path / "sixty", _op_cases("a", 60, 1, errors))
    clustered = write_results(tmp_path / "ten", _op_cases("b", 10, 6, errors))
    fit = budget_report([independent]).fit
    assert (fit.cases, fit.operations) == (60, 60) and fit.similarity_bias_mm is not None
    fit = budget_report([clustered]).fit
    assert (fit.cases, fit.operations) == (60, 10)
    assert fit.similarity_bias_mm is None and fit.cases_needed == 59
    out = usnav("budget", str(clustered))
    assert out.returncode == 0, out.stderr
    assert "60 cases from 10 operation(s)" in out.stdout
    assert "UNCERTAIN: 10 operation(s) are too few" in out.stdout


def test_an_operation_needs_the_largest_bias_of_its_cases() -> None:
    rest = _rest(TERMS)
    small = BudgetCase(
        "a1", error_mm=rest, uncertainty_mm=0, bias_mm=1.5, rest_mm=rest, operation="x"
    )
    large = BudgetCase(
        "a2", error_mm=4.0, uncertainty_mm=0, bias_mm=1.5, rest_mm=rest, operation="x"
    )
    other = BudgetCase(
        "b", error_mm=3.0, uncertainty_mm=0, bias_mm=1.5, rest_mm=rest, operation="y"
    )
    fit = fit_similarity_bias([small, large, other])
    assert fit.operations == 2
    assert fit.needed_mm == sorted([large.needed_bias_mm, other.needed_bias_mm])
    # without an operation every case is its own (folders written before session 44 with no
    # MRI recorded)
    plain = [BudgetCase(c.case, c.error_mm, 0, 1.5, rest) for c in (small, large, other)]
    assert fit_similarity_bias(plain).operations == 3


def test_a_check_leaves_out_the_operations_it_was_fitted_on(tmp_path: Path) -> None:
    errors = lambda op, k: 1.0  # noqa: E731
    fitted = write_results(tmp_path / "fit", _op_cases("a", 3, 2, errors))
    later = _op_cases("c", 2, 1, errors)
    # another sweep of a fitted patient: the same MRI
    later.append({"case": "again", "error": 5.0, "inputs": {"mri_digest": "a" + f"{1:014x}"}})
    report = budget_report([fitted], [write_results(tmp_path / "later", later)])
    other, check = report.checks[0]
    assert check.cases == 2
    assert any(case == "again" and "same MRI" in why for case, why in other.skipped)


def test_the_mri_path_stands_in_for_its_fingerprint(tmp_path: Path) -> None:
    """A result.json with the MRI's path but no fingerprint (written before session 44):
    cases naming the same MRI file are one operation."""
    cases = [
        {"case": f"s{k}", "error": 1.0, "inputs": {"mri": "/data/case24/mri.nii.gz"}}
        for k in range(4)
    ]
    read = read_budget_cases(write_results(tmp_path / "r", cases))
    assert {c.operation for c in read.cases} == {"path:/data/case24/mri.nii.gz"}
    assert fit_similarity_bias(read.cases).operations == 1
