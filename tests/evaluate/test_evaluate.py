"""``usnav evaluate`` as a user runs it: real Dask clusters (a LocalCluster of worker processes,
and the engine's own ``dask scheduler`` / ``dask worker`` CLI on loopback), real files."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from evaluate_helpers import ROOT, free_port, manifest_of, usnav

from usnav.cli.main import main
from usnav.sim import load_truth


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return {r["case"]: r for r in csv.DictReader(f)}


def _check_ok_row(row: dict[str, str], case, out: Path) -> None:
    """An ok row: its figures are the case's truth applied to what the worker wrote."""
    assert row["status"] == "ok", row
    assert row["reason"] == ""
    truth = load_truth(case.truth)
    result = (out / "cases" / case.case / "result.json").read_text()
    doc = json.loads(result)
    assert float(row["error_mm"]) == pytest.approx(
        truth.mtre(np.array(doc["BonyReferenceToMri"])), abs=1e-3
    )
    assert float(row["init_error_mm"]) == pytest.approx(truth.mtre(np.loadtxt(case.init)), abs=1e-3)
    assert float(row["error_now_mm"]) == pytest.approx(
        truth.mtre_now(np.array(doc["ReferenceToMri"])), abs=1e-3
    )
    assert row["accepted"] in ("true", "false")
    # what a live display would draw with after this try: the tie's candidate, the
    # across-sweep estimate
    assert row["tied"] == ("false" if doc["TiedCandidateReferenceToMri"] is None else "true")
    if doc["AcrossSweepReferenceToMri"] is None:
        assert row["across_sweep_error_now_mm"] == ""
    else:
        across = np.array(doc["AcrossSweepReferenceToMri"])
        assert float(row["across_sweep_error_now_mm"]) == pytest.approx(
            truth.mtre_now(across), abs=1e-3
        )
    assert float(row["candidate_uncertainty_mm"]) > 0
    # a bound on the published estimate only, as RESULT.json states it
    assert (row["uncertainty_mm"] == "") == (row["accepted"] == "false")
    if row["accepted"] == "true":
        assert row["uncertainty_mm"] == row["candidate_uncertainty_mm"]
    # results.csv keeps 4 decimals of RESULT.json's value
    assert doc["uncertainty_mm"] == (
        None
        if row["accepted"] == "false"
        else pytest.approx(float(row["uncertainty_mm"]), abs=5.1e-5)
    )
    assert float(row["seconds"]) >= float(row["registration_seconds"]) > 0
    assert row["worker"].startswith("tcp://127.0.0.1:")
    assert row["margin_frames"] == "16"
    assert math.isfinite(float(row["margin_error_mm"]))
    assert row["family"] == case.tags["family"]
    assert (out / "cases" / case.case / "margins.jsonl.gz").is_file()


@pytest.mark.slow
def test_local_cluster_failed_cases_and_resume(tiny_cases, tmp_path: Path) -> None:
    s7, s9 = tiny_cases["s7"], tiny_cases["s9"]
    data = tmp_path / "data"
    data.mkdir()
    corrupt = data / "corrupt_mri.nii.gz"
    corrupt.write_bytes(b"this is not a NIfTI file")
    missing = replace(s7, case="missing", recording=data / "gone.igs.mha", label=None, truth=None)
    broken = replace(s9, case="corrupt", mri=corrupt)
    manifest = manifest_of(data / "manifest.csv", [s7, missing, broken, s9])
    out = tmp_path / "results"
    args = ("evaluate", str(manifest), "--out", str(out), "--workers", "2")

    run = usnav(*args)
    assert run.returncode == 0, run.stderr
    rows = _rows(out / "results.csv")
    assert set(rows) == {s7.case, "missing", "corrupt", s9.case}
    _check_ok_row(rows[s7.case], s7, out)
    _check_ok_row(rows[s9.case], s9, out)
    assert rows["missing"]["status"] == "failed"
    assert "gone.igs.mha" in rows["missing"]["reason"]
    assert "no such file" in rows["missing"]["reason"]
    assert rows["corrupt"]["status"] == "failed"
    assert "corrupt_mri.nii.gz" in rows["corrupt"]["reason"]
    with (out / "summary.csv").open() as f:
        summary = {r["family"]: r for r in csv.DictReader(f)}
    assert set(summary) == {"baseline", "trailing-echo", "all"}
    assert (summary["all"]["cases"], summary["all"]["failed"]) == ("4", "2")
    assert float(summary["trailing-echo"]["median_error_mm"]) == pytest.approx(
        float(rows[s9.case]["error_mm"]), abs=1e-3
    )
    for name in ("error_cdf.png", "final_vs_initial.png", "uncertainty_vs_error.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"

    # the same command again: nothing runs, the table is not touched
    before = (out / "results.csv").read_bytes()
    again = usnav(*args)
    assert again.returncode == 0, again.stderr
    assert "nothing to run" in again.stdout
    assert "(2 of them failed: delete their rows to run them again)" in again.stdout
    # plots with a group of failed cases only: no matplotlib warning on stderr
    assert "Warning" not in run.stderr + again.stderr, run.stderr + again.stderr
    assert (out / "results.csv").read_bytes() == before

    # a manifest with one more case: only that one runs; the old rows stay as they were
    extra = replace(s7, case="s7-again")
    manifest2 = manifest_of(data / "manifest2.csv", [s7, missing, broken, s9, extra])
    third = usnav("evaluate", str(manifest2), "--out", str(out), "--workers", "1")
    assert third.returncode == 0, third.stderr
    after = (out / "results.csv").read_bytes()
    assert after.startswith(before)
    rows = _rows(out / "results.csv")
    assert len(rows) == 5
    _check_ok_row(rows["s7-again"], extra, out)


@pytest.mark.slow
def test_a_stuck_case_times_out_and_the_run_goes_on(tiny_cases, tmp_path: Path) -> None:
    """A calibration on a FIFO nobody writes to blocks in open() (like a dead network mount):
    only killing the worker process ends it. (The readers of recordings and volumes refuse a
    FIFO outright; a TOML may come from a pipe, e.g. ``--calibration <(...)``.) The timeout
    also bounds the tiny case that must succeed: 25 s leaves room for a loaded machine (the
    suite runs a file per core; one took 15 s under load)."""
    s7 = tiny_cases["s7"]
    fifo = tmp_path / "stuck_calibration.toml"
    os.mkfifo(fifo)
    stuck = replace(s7, case="stuck", calibration=fifo)
    missing = replace(s7, case="missing", recording=tmp_path / "gone.igs.mha")
    manifest = manifest_of(tmp_path / "manifest.csv", [stuck, s7, missing])
    out = tmp_path / "results"
    run = usnav("evaluate", str(manifest), "--out", str(out), "--workers", "1", "--timeout", "25")
    assert run.returncode == 0, run.stderr
    rows = _rows(out / "results.csv")
    assert set(rows) == {"stuck", s7.case, "missing"}
    assert rows["stuck"]["status"] == "failed"
    # submitted first, so run first: its worker was restarted before the others ran
    assert rows["stuck"]["reason"] == "timed out after 25 s (worker restarted)"
    # said on stderr by usnav in one line naming the case; nothing of Dask's about the restart
    assert "WARNING usnav.evaluate: case stuck: timed out after 25 s (worker restarted)" in (
        run.stderr
    )
    assert "distributed" not in run.stderr, run.stderr
    _check_ok_row(rows[s7.case], s7, out)
    assert "no such file" in rows["missing"]["reason"]


@pytest.mark.slow
def test_real_dask_scheduler_and_two_workers(tiny_cases, tmp_path: Path) -> None:
    """The engine's own CLI: ``dask scheduler`` and two ``dask worker`` processes."""
    dask = Path(sys.executable).parent / "dask"
    assert dask.exists(), "the dask CLI comes with the evaluate extra"
    manifest = manifest_of(tmp_path / "manifest.csv", list(tiny_cases.values()))
    out = tmp_path / "results"
    port = free_port()
    worker_ports = [free_port(), free_port()]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    logs = [(tmp_path / f"dask-{k}.log").open("w") for k in range(3)]
    address = f"tcp://127.0.0.1:{port}"
    procs = [
        subprocess.Popen(
            [str(dask), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            stdout=logs[0],
            stderr=subprocess.STDOUT,
            env=env,
        )
    ]
    for k, wp in enumerate(worker_ports):
        procs.append(
            subprocess.Popen(
                [
                    str(dask),
                    "worker",
                    address,
                    "--nthreads",
                    "1",
                    "--host",
                    "127.0.0.1",
                    "--worker-port",
                    str(wp),
                    "--no-dashboard",
                    "--name",
                    f"usnav-test-{k}",
                ],
                stdout=logs[k + 1],
                stderr=subprocess.STDOUT,
                env=env,
            )
        )
    try:
        run = usnav(
            "evaluate",
            str(manifest),
            "--out",
            str(out),
            "--scheduler",
            address,
            "--workers",
            "2",
            "--connect-timeout",
            "180",
        )
        assert run.returncode == 0, run.stderr + "".join(
            (tmp_path / f"dask-{k}.log").read_text()[-2000:] for k in range(3)
        )
        assert "on 2 worker(s)" in run.stdout
        rows = _rows(out / "results.csv")
        assert set(rows) == {c.case for c in tiny_cases.values()}
        for case in tiny_cases.values():
            _check_ok_row(rows[case.case], case, out)
            assert rows[case.case]["worker"] in {f"tcp://127.0.0.1:{wp}" for wp in worker_ports}
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        for f in logs:
            f.close()


def test_unreachable_scheduler_one_line_exit_2(tiny_cases, tmp_path: Path) -> None:
    manifest = manifest_of(tmp_path / "manifest.csv", list(tiny_cases.values()))
    out = tmp_path / "results"
    address = f"tcp://127.0.0.1:{free_port()}"
    run = usnav(
        "evaluate", str(manifest), "--out", str(out), "--scheduler", address,
        "--connect-timeout", "2",
    )  # fmt: skip
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert address in lines[0] and "scheduler" in lines[0]
    assert not (out / "results.csv").exists()


# -- without a cluster: refusals before any task ---------------------------------------------


def test_missing_dask_says_how_to_install(tiny_cases, tmp_path, monkeypatch, capsys) -> None:
    manifest = manifest_of(tmp_path / "manifest.csv", list(tiny_cases.values()))
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    assert main(["evaluate", str(manifest), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'usnav[evaluate]'" in err[0]
    assert err[0].count("usnav evaluate") == 2  # "usnav evaluate: error: … usnav evaluate needs"


def test_bad_manifest_and_bad_results_folder(tiny_cases, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("case,recording\nx,a.igs.mha\n")
    assert main(["evaluate", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.csv" in err[0] and "missing column" in err[0]

    manifest = manifest_of(tmp_path / "manifest.csv", list(tiny_cases.values()))
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert main(["evaluate", str(manifest), "--out", str(a_file)]) == 2
    assert "a-file" in capsys.readouterr().err

    # an existing results.csv that is not a results table is refused, never overwritten
    out = tmp_path / "r2"
    out.mkdir()
    (out / "results.csv").write_text("name,value\nx,1\n")
    assert main(["evaluate", str(manifest), "--out", str(out)]) == 2
    assert "not a usnav results table" in capsys.readouterr().err
    assert (out / "results.csv").read_text() == "name,value\nx,1\n"


@pytest.mark.slow
def test_a_tied_case_reports_the_candidate_a_live_display_would_draw(
    tiny_cases, tmp_path: Path
) -> None:
    """Options that make every distinct pose a tie (a lead no similarity reaches): the case is
    rejected for the tie alone, its row says so, and the candidate's own error is reported."""
    s7 = tiny_cases["s7"]
    manifest = manifest_of(tmp_path / "manifest.csv", [s7])
    config = tmp_path / "tied.toml"
    config.write_text('ambiguity_min_gain = 1.0\nambiguity_axes = ["lateral"]\n')
    out = tmp_path / "results"
    run = usnav(
        "evaluate", str(manifest), "--out", str(out), "--workers", "1",
        "--config", str(config), "--no-margins",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    row = _rows(out / "results.csv")[s7.case]
    assert row["status"] == "ok", row
    assert row["accepted"] == "false" and row["tied"] == "true", row
    assert "ambiguous" in row["verdict"]
    doc = json.loads((out / "cases" / s7.case / "result.json").read_text())
    tied = np.array(doc["TiedCandidateReferenceToMri"])
    np.testing.assert_array_equal(tied, np.array(doc["CandidateReferenceToMri"]))
    truth = load_truth(s7.truth)
    assert float(row["candidate_error_now_mm"]) == pytest.approx(truth.mtre_now(tied), abs=1e-3)
    # a tie along the image only: no across-sweep estimate
    assert row["across_sweep_error_now_mm"] == ""


def test_each_case_gets_its_workers_share_of_the_host_cores() -> None:
    """Two workers on a 2-core host: one thread each, not two each (four busy threads on two
    cores); one worker keeps both; never fewer than one."""
    from usnav.evaluate.runner import _host_of, case_threads

    assert case_threads(1, cores=2) == 2
    assert case_threads(2, cores=2) == 1
    assert case_threads(3, cores=2) == 1
    assert case_threads(2, cores=8) == 4
    assert _host_of("tcp://10.0.0.5:40213") == "10.0.0.5"
