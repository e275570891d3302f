"""The seed ledger of ``usnav evaluate``: a run records the seeds it used; a report warns
when some were used before (the project's rule: report on seeds nobody has looked at)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from evaluate_helpers import case_of_empty_files, manifest_of, usnav

from usnav.errors import InputError
from usnav.evaluate.ledger import format_ranges, parse_ranges, read_ledger, untracked
from usnav.evaluate.results import ResultsWriter
from usnav.io.manifest import ManifestCase


def test_ranges_read_and_written() -> None:
    assert parse_ranges("1101-1103, 1107,7601–7602") == {1101, 1102, 1103, 1107, 7601, 7602}
    assert format_ranges({1107, 1101, 1102, 1103, 9}) == "9, 1101-1103, 1107"
    with pytest.raises(ValueError, match="ends before it starts"):
        parse_ranges("20-10")


def test_a_bad_ledger_line_names_the_file_and_line(tmp_path: Path) -> None:
    ledger = tmp_path / "seeds.jsonl"
    ledger.write_text('{"site": "usnav-sim", "seeds": "1-4", "use": "tuning"}\n{"seeds": "x"}\n')
    with pytest.raises(InputError) as info:
        read_ledger(ledger)
    assert str(info.value).startswith(f"{ledger}:2: not a seed-ledger entry")


def _tagged(name: str, **tags: str) -> ManifestCase:
    x = Path("/nonexistent")
    return ManifestCase(case=name, recording=x, mri=x, calibration=x, init=x, tags=tags)


def test_seeds_the_ledger_cannot_see_are_said(tmp_path: Path) -> None:
    # a seed that is no whole number, a seed without a site and a site spelled otherwise than
    # the ledger's were neither checked nor recorded where a report looks, without a word
    ledger = tmp_path / "seeds.jsonl"
    ledger.write_text('{"site": "usnav-sim", "seeds": "1701-1748", "use": "tuning"}\n')
    entries = read_ledger(ledger)
    assert untracked([_tagged("a", seed="1701", site="usnav-sim"), _tagged("r")], entries) == []
    said = untracked(
        [
            _tagged("f", seed="1701.0", site="usnav-sim"),
            _tagged("n", seed="1702", family="baseline"),
            _tagged("u", seed="1703", site="USNAV-SIM"),
        ],
        entries,
    )
    assert len(said) == 3
    assert said[0].startswith("1 case(s) have a seed tag that is not a whole number (first: f)")
    assert said[1].startswith("1 case(s) have a seed but no site tag (first: n)")
    assert said[2].startswith("site 'USNAV-SIM' is in no ledger entry, but 'usnav-sim' is")
    # the command says it before anything runs (here refused at once for its --group-by)
    folder = tmp_path / "c"
    folder.mkdir()
    case = case_of_empty_files(folder, folder / "truth.json", tags={"seed": "1702"})
    run = usnav(
        "evaluate", str(manifest_of(tmp_path / "m.csv", [case])), "--out", str(tmp_path / "o"),
        "--ledger", str(ledger), "--report", "--group-by", "nosuchtag",
    )  # fmt: skip
    assert run.returncode == 2
    assert (
        f"usnav evaluate: warning: {ledger}: 1 case(s) have a seed but no site tag (first: c1)"
        in run.stderr
    )


def test_a_report_into_a_folder_of_tuning_results_says_so(tmp_path: Path) -> None:
    # the summary is rebuilt from the whole results.csv: a report run into a folder holding a
    # tuning run's rows reported on them (seed 1701 here) and said nothing
    ledger = tmp_path / "seeds.jsonl"
    ledger.write_text('{"site": "usnav-sim", "seeds": "1701-1748", "use": "tuning"}\n')
    out = tmp_path / "o"
    out.mkdir()
    with ResultsWriter(out / "results.csv", ["family", "seed", "site"]) as writer:
        writer.write({"case": "tuned", "status": "ok", "seed": "1701", "site": "usnav-sim"})
    folder = tmp_path / "c"
    folder.mkdir()
    case = case_of_empty_files(
        folder, folder / "truth.json", tags={"seed": "9999", "site": "usnav-sim"}
    )
    run = usnav(
        "evaluate", str(manifest_of(tmp_path / "m.csv", [case])), "--out", str(out),
        "--ledger", str(ledger), "--report", "--group-by", "nosuchtag",
    )  # fmt: skip
    assert run.returncode == 2
    warnings = [x for x in run.stderr.splitlines() if "warning" in x]
    assert warnings[0].startswith(
        "usnav evaluate: warning: this report's summary also covers 1 case(s) of "
        f"{out / 'results.csv'} that are not in {tmp_path / 'm.csv'} (first: tuned)"
    )
    assert warnings[1].startswith(
        "usnav evaluate: warning: this report is not on fresh data: 1 of its seeds were used "
        f"before, by {ledger}: usnav-sim 1701 (tuning"
    )


@pytest.mark.slow
def test_a_report_on_seeds_tuned_on_says_so_and_every_run_is_recorded(tiny_cases, tmp_path):
    s7, s9 = tiny_cases["s7"], tiny_cases["s9"]
    ledger = tmp_path / "seeds.jsonl"
    tuning = manifest_of(tmp_path / "tuning.csv", [s7])
    first = usnav(
        "evaluate", str(tuning), "--out", str(tmp_path / "tune"), "--workers", "1",
        "--ledger", str(ledger), "--no-margins", "--quiet",
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "warning" not in first.stderr
    (entry,) = read_ledger(ledger)
    assert (entry.site, entry.seeds, entry.use) == ("usnav-sim", "7", "tuning")
    assert entry.run == str(tmp_path / "tune")
    report = manifest_of(tmp_path / "report.csv", [s7, s9])
    second = usnav(
        "evaluate", str(report), "--out", str(tmp_path / "report"), "--workers", "1",
        "--ledger", str(ledger), "--report", "--no-margins", "--quiet",
    )  # fmt: skip
    assert second.returncode == 0, second.stderr
    (line,) = [x for x in second.stderr.splitlines() if "warning" in x]
    assert line.startswith(
        "usnav evaluate: warning: this report is not on fresh data: 1 of its seeds were used "
        f"before, by {ledger}: usnav-sim 7 (tuning: "
    )
    assert str(tmp_path / "tune") in line
    last = json.loads(ledger.read_text().splitlines()[-1])
    assert (last["seeds"], last["use"]) == ("7, 9", "report")
    # --report needs the ledger
    bad = usnav("evaluate", str(report), "--out", str(tmp_path / "x"), "--report")
    assert bad.returncode == 2 and "--report: needs --ledger FILE" in bad.stderr
