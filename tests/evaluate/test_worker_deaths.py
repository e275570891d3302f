"""What ``usnav evaluate`` says when a worker process goes: usnav's own lines, never Dask's
internal ones. A worker restarted on purpose (a case past its timeout) is no death; a worker
that dies by itself (a crash, out of memory, killed) is said in one line per death."""

from __future__ import annotations

import inspect
import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
from evaluate_helpers import ROOT, manifest_of
from waiting import wait_until

from usnav.evaluate.runner import _WorkerDeaths


def _waiting_on_a_fifo(process: psutil.Process) -> bool:
    """Whether a thread of ``process`` is blocked opening a FIFO (the stuck case runs)."""
    for task in Path(f"/proc/{process.pid}/task").glob("*"):
        try:
            if (task / "wchan").read_text().strip() == "wait_for_partner":
                return True
        except OSError:
            continue
    return False


def _worker_running_the_case(parent: int, not_these: set[int]) -> psutil.Process | None:
    for child in psutil.Process(parent).children():
        try:
            worker = child.pid not in not_these and "spawn_main" in " ".join(child.cmdline())
            if worker and _waiting_on_a_fifo(child):
                return child
        except psutil.Error:
            continue
    return None


@pytest.mark.slow
def test_a_worker_that_dies_by_itself_is_said_by_usnav_in_one_line(tiny_cases, tmp_path):
    """The worker running a case is killed twice (as by the kernel's OOM killer): Dask logged
    ``ERROR distributed.scheduler: Task usnav-case-stuck-... marked as failed because 2
    workers died while trying to run it``; usnav now says each death, naming the case."""
    fifo = tmp_path / "stuck_calibration.toml"
    os.mkfifo(fifo)  # the case waits on it for as long as it runs
    stuck = replace(tiny_cases["s7"], case="stuck", calibration=fifo)
    manifest = manifest_of(tmp_path / "manifest.csv", [stuck])
    out = tmp_path / "results"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    args = ["evaluate", str(manifest), "--out", str(out), "--workers", "1", "--timeout", "600"]
    run = subprocess.Popen(
        [sys.executable, "-m", "usnav", *args, "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    killed: set[int] = set()
    try:
        for _ in range(2):
            box: dict = {}

            def running(box=box) -> bool:
                box["worker"] = _worker_running_the_case(run.pid, killed)
                return box["worker"] is not None

            assert wait_until(running, 180), "the case never ran on a worker"
            killed.add(box["worker"].pid)
            box["worker"].kill()
        _, err = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate(timeout=30)
    lines = [line for line in err.splitlines() if line.strip()]
    assert "distributed" not in err, err
    died = [line for line in lines if "WARNING usnav.evaluate: the Dask worker process" in line]
    assert len(died) == 2 and all(
        line.endswith("died while running case stuck (a crash, out of memory, or killed)")
        for line in died
    ), err
    assert run.returncode == 2, err
    assert lines[-1].startswith("usnav evaluate: error: ")
    assert "stuck: the worker process running it died" in lines[-1]
    assert len(lines) == 3, err


def test_dasks_line_for_a_task_failed_by_worker_deaths_is_demoted_for_usnav_tasks(caplog):
    """The line the filter demotes is Dask's own (its wording checked in its source), for
    usnav's tasks only; it still shows with --debug."""
    from distributed import scheduler

    assert _WorkerDeaths.TASK_FAILED in inspect.getsource(scheduler)
    deaths = _WorkerDeaths({"usnav-case-a-1234abcd-1": "a"})
    dask_log = logging.getLogger("distributed.scheduler")
    template = _WorkerDeaths.TASK_FAILED + " while trying to run it"
    dask_log.addFilter(deaths)
    try:
        with caplog.at_level(logging.WARNING, logger="distributed.scheduler"):
            dask_log.error(template, "usnav-case-a-1234abcd-1", 2)
            dask_log.error(template, "another-clients-task", 2)
        assert [r.getMessage() for r in caplog.records] == [
            "Task another-clients-task marked as failed because 2 workers died while trying "
            "to run it"
        ]
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="distributed.scheduler"):
            dask_log.error(template, "usnav-case-a-1234abcd-1", 2)
        assert [(r.levelname, r.args) for r in caplog.records] == [
            ("DEBUG", ("usnav-case-a-1234abcd-1", 2))
        ]
    finally:
        dask_log.removeFilter(deaths)


def test_a_restart_by_usnav_is_no_death_and_a_worker_lost_otherwise_is(caplog):
    deaths = _WorkerDeaths({"usnav-case-a-1-1": "a", "usnav-case-b-1-1": "b"})
    deaths.restarted.add("tcp://127.0.0.1:1001")
    removed = {"action": "remove-worker", "expected": False}
    with caplog.at_level(logging.WARNING, logger="usnav.evaluate"):
        deaths.on_event(
            (
                1.0,
                {
                    **removed,
                    "worker": "tcp://127.0.0.1:1001",
                    "processing-tasks": ["usnav-case-a-1-1"],
                },
            )
        )
        deaths.on_event((2.0, {**removed, "worker": "tcp://127.0.0.1:1002", "expected": True}))
        deaths.on_event(
            (
                3.0,
                {
                    **removed,
                    "worker": "tcp://127.0.0.1:1003",
                    "processing-tasks": {"usnav-case-b-1-1"},
                },
            )
        )
        deaths.closing = True
        deaths.on_event((4.0, {**removed, "worker": "tcp://127.0.0.1:1004"}))
    assert [r.getMessage() for r in caplog.records] == [
        "the Dask worker process tcp://127.0.0.1:1003 died while running case b (a crash, out "
        "of memory, or killed)"
    ]
