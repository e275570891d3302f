"""``results.csv`` as a resumed run finds it: appended row by row, possibly cut short."""

from __future__ import annotations

from pathlib import Path

from usnav.evaluate.results import ResultsWriter, read_results, summarize


def _row(case: str, error: float) -> dict:
    return {
        "case": case,
        "status": "ok",
        "error_mm": error,
        "error_now_mm": error,
        "accepted": True,
        "uncertainty_mm": 2.5,
        "correction_mm": 6.4,
        "seconds": 1.0,
        "family": "baseline",
    }


def test_a_row_cut_short_runs_again_and_swallows_no_other(tmp_path: Path) -> None:
    """A run killed (or a disk full) in the middle of writing a row leaves it without its line
    end. That case was not recorded: a re-run must run it again, and the row it appends must
    not be glued onto the partial one (it was: the next case vanished into a row whose columns
    were shifted, and the summary read a correction as a margin error)."""
    path = tmp_path / "results.csv"
    with ResultsWriter(path, ["family"]) as writer:
        writer.write(_row("a", 0.5))
        writer.write(_row("b", 0.7))
    whole = path.read_bytes()
    with ResultsWriter(tmp_path / "full.csv", ["family"]) as writer:
        writer.write(_row("c", 0.9))
    c_line = (tmp_path / "full.csv").read_bytes().splitlines(keepends=True)[1]
    path.write_bytes(whole + c_line[: len(c_line) // 2])  # c's row cut mid-way

    assert [r["case"] for r in read_results(path)] == ["a", "b"]  # c runs again
    with ResultsWriter(path, ["family"]) as writer:  # the resumed run appends
        writer.write(_row("d", 1.1))
        writer.write(_row("c", 0.9))
    rows = read_results(path)
    assert [r["case"] for r in rows] == ["a", "b", "d", "c"]
    assert all(None not in r and r["family"] == "baseline" for r in rows)  # no shifted columns
    assert [r["error_mm"] for r in rows] == ["0.5", "0.7", "1.1", "0.9"]
    assert summarize(rows)[-1]["accepted"] == 4


def test_complete_rows_are_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    with ResultsWriter(path, ["family"]) as writer:
        writer.write(_row("a", 0.5))
    before = path.read_bytes()
    with ResultsWriter(path, ["family"]):
        pass
    assert path.read_bytes() == before
    assert [r["case"] for r in read_results(path)] == ["a"]


def test_a_header_cut_short_gets_its_line_end(tmp_path: Path) -> None:
    """The rows appended after a header written without its line end start on their own line
    (the header's columns are kept, as for any existing table)."""
    path = tmp_path / "results.csv"
    path.write_bytes(b"case,status,error_mm,accepted,fam")
    assert read_results(path) == []
    with ResultsWriter(path, ["family"]) as writer:
        writer.write(_row("a", 0.5))
    rows = read_results(path)
    assert [(r["case"], r["error_mm"], r["accepted"]) for r in rows] == [("a", "0.5", "true")]
