"""The evaluate summary's figures from results rows (as read back from results.csv: strings)."""

from __future__ import annotations

import pytest

from usnav.evaluate.results import summarize


def _row(family: str, accepted: bool, uncertainty: str, now: str, candidate: str = "1.0") -> dict:
    return {
        "family": family,
        "status": "ok",
        "accepted": str(accepted),
        "uncertainty_mm": uncertainty,
        "error_mm": "0.5",
        "error_now_mm": now,
        "candidate_error_mm": candidate,
        "seconds": "1.0",
    }


def test_the_bound_is_checked_against_the_error_at_the_tumor_now() -> None:
    rows = [
        _row("a", True, "2.0", "1.0"),  # covered
        _row("a", True, "1.0", "1.5", candidate="0.5"),  # not: the error now exceeds it
        _row("b", True, "2.5", "", candidate="2.0"),  # no truth now: the candidate's error
        _row("b", False, "0.1", "5.0"),  # rejected: not a claim
        _row("b", True, "", "0.3"),  # no bound stated: not counted
    ]
    by = {r["family"]: r for r in summarize(rows)}
    assert by["a"]["bound_covers_pct"] == 50.0
    assert by["b"]["bound_covers_pct"] == 100.0
    assert by["all"]["bound_covers_pct"] == pytest.approx(66.7)
    assert summarize([_row("c", False, "1.0", "0.5")])[0]["bound_covers_pct"] == ""
