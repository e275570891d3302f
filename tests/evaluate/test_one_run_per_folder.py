"""Two ``usnav evaluate`` runs into one ``--out`` at once would interleave results.csv: the
second is refused at once, naming the folder and the run that holds it; a lock left by a run
that was stopped (Ctrl-C) or killed (SIGKILL) does not block the next run. A run stopped by
Ctrl-C whose folder holds results still records its seeds in the ledger (as possibly seen)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from cli_helpers import USNAV_CTRL_C
from evaluate_helpers import ROOT, manifest_of, usnav
from waiting import wait_until

from usnav.evaluate.budget import read_budget_cases
from usnav.evaluate.ledger import read_ledger
from usnav.io.folder_lock import LOCK_NAME


def _start(*args: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _holds(lock: Path, pid: int) -> bool:
    return lock.exists() and lock.read_text().startswith(f"pid {pid} on ")


def _done_table(out: Path) -> None:
    """A results table in which the case "done" is already recorded (nothing left to run)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.csv").write_text("case,status,reason\ndone,failed,an earlier run\n")


@pytest.mark.slow
def test_a_second_run_into_the_same_folder_is_refused_and_ctrl_c_frees_it(
    tiny_cases, tmp_path: Path
) -> None:
    s7 = tiny_cases["s7"]
    fifo = tmp_path / "stuck_calibration.toml"
    os.mkfifo(fifo)  # nobody writes to it: the case blocks in open() until the run stops
    stuck = manifest_of(tmp_path / "stuck.csv", [replace(s7, case="stuck", calibration=fifo)])
    done = manifest_of(tmp_path / "done.csv", [replace(s7, case="done")])
    out = tmp_path / "results"
    _done_table(out)
    ledger = tmp_path / "seeds.jsonl"
    first = _start(  # python -m usnav, Ctrl-C as in a terminal (USNAV_CTRL_C)
        *USNAV_CTRL_C[1:], "evaluate", str(stuck), "--out", str(out), "--workers", "1",
        "--ledger", str(ledger), "--report",
    )  # fmt: skip
    try:
        assert wait_until(lambda: _holds(out / LOCK_NAME, first.pid), 60), "no lock taken"
        second = usnav("evaluate", str(done), "--out", str(out), timeout=120)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(lines) == 1, second.stderr
        assert "Traceback" not in second.stderr
        assert lines[0].startswith(f"usnav evaluate: error: {out}: another usnav evaluate is ")
        assert f"(pid {first.pid} on " in lines[0]
        assert "give another --out" in lines[0]
        assert (out / "results.csv").read_text().count("\n") == 2  # untouched
        # the cluster is up and the case about to start (the cases asked for are written
        # then): a Ctrl-C in the case, which usnav budget must see as not evaluated
        assert wait_until(lambda: (out / "asked_cases.txt").exists(), 120)
        first.send_signal(signal.SIGINT)  # Ctrl-C
        first.wait(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
        first.stdout.close()
        first.stderr.close()
    assert first.returncode == 130
    assert not (out / LOCK_NAME).exists()
    # the case it was stopped in is not evaluated, and usnav budget says so (session 43)
    assert (out / "asked_cases.txt").read_text(encoding="utf-8") == "stuck\n"
    assert any("(stuck)" in note for note in read_budget_cases(out).unfinished)
    (entry,) = read_ledger(ledger)  # the folder holds results: some may have been seen
    assert (entry.site, entry.seeds, entry.use) == ("usnav-sim", "7", "report")
    assert entry.note.startswith("interrupted")
    third = usnav("evaluate", str(done), "--out", str(out), timeout=120)
    assert third.returncode == 0, third.stderr
    assert "nothing to run" in third.stdout


def test_a_lock_left_by_a_killed_run_does_not_block_the_next(tiny_cases, tmp_path: Path) -> None:
    out = tmp_path / "results"
    _done_table(out)
    done = manifest_of(tmp_path / "done.csv", [replace(tiny_cases["s7"], case="done")])
    holder = _start(
        "-c",
        "import sys, time\n"
        "from pathlib import Path\n"
        "from usnav.io.folder_lock import folder_lock\n"
        "with folder_lock(Path(sys.argv[1])):\n"
        "    time.sleep(600)\n",
        str(out),
    )
    try:
        assert wait_until(lambda: _holds(out / LOCK_NAME, holder.pid), 60)
        refused = usnav("evaluate", str(done), "--out", str(out), timeout=120)
        assert refused.returncode == 2 and f"(pid {holder.pid} on " in refused.stderr
        holder.kill()  # SIGKILL: no clean-up runs, the lock file stays behind
        holder.wait(10)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        holder.stdout.close()
        holder.stderr.close()
    assert (out / LOCK_NAME).read_text().startswith(f"pid {holder.pid} on ")
    after = usnav("evaluate", str(done), "--out", str(out), timeout=120)
    assert after.returncode == 0, after.stderr
    assert "nothing to run" in after.stdout
    assert not (out / LOCK_NAME).exists()
