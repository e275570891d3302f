"""A short seeded version of each item of ``usnav soak`` (the full campaign and its figures:
docs/reliability.md). Real sockets, files and processes; no wall-clock assertion here (the
campaign's time limits, such as reconnect < 2 s, are figures of the campaign, not tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import usnav.soak.igtl as soak_igtl
from usnav.sim import make_options, simulate_case
from usnav.soak.faults import run_kills, run_restarts, run_subscribers
from usnav.soak.files import run_files
from usnav.soak.igtl import MUTATIONS, cases, run_decoder, run_wire

#: failures that are time limits (figures of the campaign, not assertions of a test)
TIMING = ("first frame", "latency p99", "took", "RSS grows")


def _untimed(failures: list[str]) -> list[str]:
    return [f for f in failures if not any(t in f for t in TIMING)]


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("soakcase")
    simulate_case(47, out, make_options(frames=30, save_anatomy=False))
    return out


def test_generated_messages_cover_every_mutation_and_repeat_by_seed():
    first = list(cases(11, 600))
    assert {c.mutation for c in first} == set(MUTATIONS)
    assert [c.data for c in first[:50]] == [c.data for c in cases(11, 50)]
    assert [c.data for c in first[:50]] != [c.data for c in cases(12, 50)]


def test_decoder_takes_3000_hostile_messages():
    result = run_decoder(11, 3000)
    assert result.failed == 0, result.failures
    assert result.count == 3000
    assert 0 < result.figures["accepted"] < 3000
    assert result.figures["refusal reasons"] >= 10  # many distinct rejection paths reached


def test_decoder_pass_reports_an_exception_that_is_not_a_protocol_error(monkeypatch):
    def broken(header, body):
        raise IndexError("a decoder bug")

    monkeypatch.setattr(soak_igtl, "decode_body", broken)
    result = run_decoder(11, 200)
    assert result.failed > 0 and "IndexError: a decoder bug" in result.failures[0]


def test_wire_fuzz_into_the_slicer_server_and_the_probe_client():
    result = run_wire(12, 120, 20, 0.0, ("Slicer re-export", "probe client"))
    assert result.failed == 0, result.failures
    assert result.count >= 2 * 120
    assert result.figures["Slicer re-export connects"] == 20


def test_damaged_recordings_are_read_or_refused_in_one_line():
    result = run_files(13, 20, cli_sample=0, reconstruct=False)
    assert _untimed(result.failures) == []
    assert result.count == 20
    read, refused = map(int, result.figures["info --tolerant read/refused"].split("/"))
    assert read > 0 and refused > 0  # both outcomes exercised


def test_probe_server_killed_and_restarted(case):
    result = run_restarts(14, 1, 1.0, recording=case / "sweep.igs.mha")
    assert _untimed(result.failures) == []
    assert result.count == 1
    assert result.figures["frames lost once reconnected"] == 0
    assert "streaming" not in str(result.figures["states during outages"])


@pytest.mark.slow
def test_usnav_run_killed_mid_recording_is_recoverable(case):
    result = run_kills(15, 1, case=case)
    assert _untimed(result.failures) == []
    assert result.count == 1 and result.figures["frames recovered"] >= 2


def test_subscriber_churn_and_intruders_get_nothing():
    result = run_subscribers(16, 8, 1.5)
    assert _untimed(result.failures) == []
    assert result.figures["delivered to unauthorised"] == 0
    assert result.figures["subscriber joins"] > 8


def test_soak_cli_runs_one_item_and_writes_json(tmp_path):
    out = tmp_path / "soak.json"
    run = subprocess.run(
        [sys.executable, "-m", "usnav", "soak", "igtl", "--quick", "--messages", "300",
         "--wire-messages", "0", "--connects", "0", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "igtl: decoder: 300 cases, OK" in run.stdout
    assert '"failed": 0' in out.read_text()


@pytest.mark.slow
def test_endurance_measures_rss_and_latency_windows(case):
    from usnav.soak.endurance import run_endurance

    result = run_endurance(17, 0.25, sample_s=1.0, warmup_s=3.0, case=case)
    assert _untimed(result.failures) == []
    assert result.count > 0  # margins arrived
    for figure in ("RSS trend MB/10 min", "latency p99 first ms", "latency p99 last ms"):
        assert figure in result.figures
