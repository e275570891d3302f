"""``usnav evaluate``: every case of a manifest as a task on Dask's distributed scheduler.

Where it runs: by default a :class:`distributed.LocalCluster` of worker *processes* on this
machine (one thread each, bound to 127.0.0.1, no dashboard); with ``scheduler`` the same job
goes to an existing cluster (``dask scheduler`` + ``dask worker`` on any number of hosts,
dask-ssh, dask-jobqueue...).

- A worker plugin loads (or compiles) usnav's Numba kernels once per worker process, before
  any case; a restarted worker gets it again.
- A task carries the case's paths (plain strings), never file contents: the worker reads the
  inputs itself, so on several hosts the dataset and the results folder must be on a shared
  file system at the same path.
- Each case runs in a thread of its task and is given ``timeout_s``: past it the task returns
  a ``failed`` row ("timed out") at once and the runner restarts that worker process through
  its nanny (a Numba kernel cannot be interrupted; killing the process is the only sure stop),
  so a stuck case never blocks the run. A worker that dies on a case (crash, out of memory)
  fails that case only (``allowed-failures`` 1 on a local cluster).
- Every finished row is appended to ``results.csv`` and flushed at once; a re-run skips the
  cases already there (resume). The summary and plots are rebuilt from the whole table.

Dask is imported only here, when a run starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from usnav.errors import InputError
from usnav.evaluate.case import (
    RESULT_COLUMNS,
    case_from_task,
    case_to_task,
    evaluate_case,
    failed_row,
)
from usnav.evaluate.results import (
    ASKED_NAME,
    RESULTS_NAME,
    SUMMARY_NAME,
    ResultsWriter,
    read_results,
    summarize,
    write_asked_cases,
    write_plots,
    write_summary,
)
from usnav.io.folder_lock import LOCK_NAME, folder_lock
from usnav.io.manifest import read_manifest

log = logging.getLogger("usnav.evaluate")

INSTALL_HINT = "pip install 'usnav[evaluate]'"
DEFAULT_TIMEOUT_S = 600.0
#: runs of a case whose worker was restarted under it (for another case's timeout)
MAX_ATTEMPTS = 3

#: progress(done, total, row): row None for the first call (cluster ready, nothing done yet)
Progress = Callable[[int, int, dict | None], None]


@dataclass
class RunReport:
    """What a run did.

    Attributes
    ----------
    results, summary
        ``results.csv`` and ``summary.csv``.
    plots
        The PNG plots written (empty without matplotlib).
    summary_rows
        The summary table (one dict per group, ``all`` last).
    cases, skipped, ran, failed
        Cases in the manifest, already in the results (resumed), run now, failed now.
    skipped_failed
        Of the skipped cases, those whose row records a failure (they run again only once
        their row is deleted).
    workers
        Worker processes used; ``worker_names`` their addresses.
    scheduler
        The scheduler's address.
    group_by
        The tag the summary is grouped by.
    failures
        Per case that failed now, its reason (in the order they finished).
    wall_s
        From the first task submitted to the last result (cluster start-up and kernel warm-up
        excluded); 0 when nothing ran.
    task_seconds, cpu_seconds, registration_seconds
        Per case run now: the task's own time on the worker, the CPU time its thread got (less
        than its time when it waited for a core), and the registration's time.
    warm_up_s
        Per worker, the kernel warm-up seconds.
    """

    results: Path
    summary: Path
    plots: list[Path] = field(default_factory=list)
    summary_rows: list[dict] = field(default_factory=list)
    cases: int = 0
    skipped: int = 0
    ran: int = 0
    failed: int = 0
    skipped_failed: int = 0
    workers: int = 0
    worker_names: list[str] = field(default_factory=list)
    scheduler: str = ""
    group_by: str = "family"
    wall_s: float = 0.0
    task_seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    registration_seconds: list[float] = field(default_factory=list)
    warm_up_s: dict[str, float] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


def require_dask() -> None:
    """Raise :class:`InputError` with the install hint when Dask is missing."""
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError:
        raise InputError(
            "usnav[evaluate]",
            "usnav evaluate needs Dask (dask + distributed are not installed)",
            INSTALL_HINT,
        ) from None


def run_evaluation(
    manifest: str | Path,
    out_dir: str | Path,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    group_by: str | None = None,
    registration_options=None,
    margins: bool = True,
    connect_timeout_s: float = 10.0,
    progress: Progress | None = None,
) -> RunReport:
    """Evaluate every case of ``manifest`` not yet in ``out_dir/results.csv``.

    Parameters
    ----------
    manifest
        The dataset's ``manifest.csv`` (:mod:`usnav.io.manifest`).
    out_dir
        The results folder (created). Its ``results.csv`` is appended to, never replaced.
    scheduler
        ``tcp://HOST:PORT`` of a running Dask scheduler; None for a local cluster.
    workers
        Local cluster: worker processes (default: the CPU count). With ``scheduler``: wait
        until that many workers have joined (default 1).
    timeout_s
        Per case, s.
    group_by
        The tag the summary and plots group by; it must be a tag some case of the manifest
        has. None: ``family`` (not checked: a manifest without it groups all cases together).
    registration_options
        :class:`~usnav.registration.rigid.RegistrationOptions` (defaults if None).
    margins
        Compute and score the offline margins of cases with a label map.
    connect_timeout_s
        How long to wait for the scheduler (and its workers).
    progress
        Called as cases finish.

    Raises
    ------
    InputError
        Bad manifest or one without cases, a tag column named like a result column, a
        ``group_by`` tag no case has, an output path that cannot be a folder (or one that
        cannot be written to), a folder of other files (not empty, not a results folder) or an
        existing file that is not a results table, Dask missing, an unreachable scheduler (or
        something else than a scheduler at its address) or one without workers, workers that
        cannot load usnav. The manifest, ``group_by``, option and output checks come before
        Dask is touched; whenever an error is raised before a case ran, the folders this call
        created are removed again.
    """
    cases = read_manifest(manifest)
    if not cases:
        raise InputError(
            manifest,
            "the manifest lists no cases (a header row only)",
            "add one row per case (see docs/evaluation.md)",
        )
    _check_tag_names(cases, manifest)
    if group_by is None:
        group_by = "family"
    else:
        _check_group_by(group_by, cases, manifest)
    if not timeout_s > 0:
        raise InputError("--timeout", f"must be positive, got {timeout_s:g} s")
    if not connect_timeout_s > 0:
        raise InputError("--connect-timeout", f"must be positive, got {connect_timeout_s:g} s")
    if workers is not None and workers < 1:
        raise InputError("--workers", f"must be at least 1, got {workers}")
    out = Path(out_dir)
    results_path = out / RESULTS_NAME
    report = RunReport(results_path, out / SUMMARY_NAME, cases=len(cases), group_by=group_by)
    options_doc = None if registration_options is None else registration_options.model_dump()
    created = _make_results_folder(out)
    _refuse_other_folder(out)  # (after: a folder that cannot be written to is named as such)
    try:
        # one run per results folder: two would interleave results.csv
        with folder_lock(out):
            todo = _not_yet_run(cases, report)
            if todo:
                require_dask()
                tags = [k for c in cases for k in c.tags]
                with _connect(scheduler, workers, connect_timeout_s) as (client, address, local):
                    report.scheduler = address
                    report.warm_up_s = _warm_up_workers(client)
                    report.worker_names = sorted(report.warm_up_s)
                    report.workers = len(report.worker_names)
                    run = (timeout_s, options_doc, margins, local)
                    # the cases asked for, before any runs: usnav budget sees those never begun
                    write_asked_cases(out, (c.case for c in cases))
                    with ResultsWriter(results_path, dict.fromkeys(tags)) as writer:
                        _run_tasks(client, todo, out, *run, writer, report, progress)
            _write_summary(report, out)
    except BaseException:
        if not report.ran:  # nothing of this run to keep: leave no empty folder behind
            for folder in reversed(created):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only if empty
        raise
    return report


def _not_yet_run(cases: list, report: RunReport) -> list:
    """The cases not yet in ``results.csv`` (a re-run resumes); counts the others."""
    done = {r["case"]: r.get("status") for r in read_results(report.results)}
    report.skipped = sum(1 for c in cases if c.case in done)
    report.skipped_failed = sum(
        1 for c in cases if c.case in done and done[c.case] not in (None, "ok")
    )
    return [c for c in cases if c.case not in done]


def _write_summary(report: RunReport, out: Path) -> None:
    """The summary and plots, rebuilt from the whole ``results.csv``."""
    rows = read_results(report.results)
    if rows:
        report.summary_rows = summarize(rows, report.group_by)
        write_summary(report.summary_rows, report.summary)
        try:
            report.plots = write_plots(rows, out, report.group_by)
        except ImportError:
            log.warning("matplotlib missing: no plots (%s)", INSTALL_HINT)


def _check_tag_names(cases: list, manifest: str | Path) -> None:
    """Raise :class:`InputError` when a tag column of the manifest has the name of a result
    column: its values would stand in the results where a figure does not apply (an
    ``error_mm`` tag as the error of a case without a truth, then in the summary)."""
    clash = sorted({k for c in cases for k in c.tags} & set(RESULT_COLUMNS))
    if clash:
        raise InputError(
            manifest,
            f"column {clash[0]!r} is a column of usnav evaluate's results",
            "rename it (its values would be read as results)",
        )


def _check_group_by(tag: str, cases: list, manifest: str | Path) -> None:
    """Raise :class:`InputError` unless some case of the manifest has the tag ``tag``."""
    if any(tag in c.tags for c in cases):
        return
    tags = sorted({k for c in cases for k in c.tags})
    raise InputError(
        "--group-by",
        f"no case of {manifest} has a tag {tag!r}",
        f"group by one of its tags: {', '.join(tags)}"
        if tags
        else "its cases have no tags (family, seed, site or a column of your own): "
        "leave out --group-by",
    )


#: What only a results folder of ``usnav evaluate`` holds (any one of them).
_RESULTS_MARKERS = (RESULTS_NAME, SUMMARY_NAME, ASKED_NAME, LOCK_NAME)


def _refuse_other_folder(out: Path) -> None:
    """Refuse an ``--out`` folder that holds other files and none of a results folder's.

    Raises
    ------
    InputError
        ``out`` is a folder with entries (hidden ones aside), and none of
        :data:`_RESULTS_MARKERS`: the run would mix its files (``cases/``, the plots) with
        someone else's.
    """
    if not out.is_dir():
        return
    try:
        entries = sorted(p.name for p in out.iterdir())
    except OSError:
        return  # _make_results_folder says why it cannot be used
    if any(name in entries for name in _RESULTS_MARKERS):
        return
    others = [name for name in entries if not name.startswith(".")]
    if others == ["cases"] and (out / "cases").is_dir():
        return  # a run stopped before its first row (or before asked_cases.txt existed)
    if others:
        raise InputError(
            out,
            f"--out is a folder of other files ({len(others)}, first: {others[0]}), not the "
            f"results of a usnav evaluate run (no {RESULTS_NAME})",
            "give a new or empty folder for the results",
        )


def _make_results_folder(out: Path) -> list[Path]:
    """Create the results folder (and its missing parents) and check that a file can be made
    in it; returns the folders created, parents first.

    Raises
    ------
    InputError
        ``out`` is a file, or cannot be created or written to (a parent that is a file, a
        read-only or virtual file system, no permission).
    """
    missing: list[Path] = []
    step = "cannot be created"
    try:
        if out.exists() and not out.is_dir():
            raise InputError(out, "--out exists and is a file", "give a folder for the results")
        for folder in (out, *out.parents):
            if folder.exists() or folder.is_symlink():
                break
            missing.insert(0, folder)
        if missing and folder.exists() and not folder.is_dir():
            raise InputError(
                out, f"--out cannot be created: {folder} is a file", "give a folder for the results"
            )
        out.mkdir(parents=True, exist_ok=True)
        step = "is a folder no file can be written to"
        with tempfile.TemporaryFile(dir=out, prefix=".usnav-write-check-"):
            pass
    except OSError as exc:
        for created in reversed(missing):
            with contextlib.suppress(OSError):
                created.rmdir()
        raise InputError(
            out,
            f"--out {step} ({exc.strerror or type(exc).__name__})",
            "give a folder you can create and write to",
        ) from None
    return missing


def _run_tasks(client, todo, out, timeout_s, options_doc, margins, local, writer, report, progress):
    run_id = uuid.uuid4().hex[:8]
    per_host = _workers_per_host(client)
    if progress is not None:
        progress(0, len(todo), None)
    attempts = dict.fromkeys((c.case for c in todo), 0)

    def submit(case):
        attempts[case.case] += 1
        return client.submit(
            run_case_task,
            case_to_task(case),
            str(out.resolve()),
            float(timeout_s),
            options_doc,
            bool(margins),
            per_host,
            key=f"usnav-case-{case.case}-{run_id}-{attempts[case.case]}",
            pure=False,
        )

    t0 = time.perf_counter()
    futures = {submit(c): c for c in todo}
    deaths = _WorkerDeaths({f.key: c.case for f, c in futures.items()})
    client.subscribe_topic("all", deaths.on_event)
    scheduler_log = logging.getLogger("distributed.scheduler")
    scheduler_log.addFilter(deaths)
    try:
        _collect(client, futures, submit, attempts, local, writer, report, progress, deaths)
    finally:
        deaths.closing = True  # the workers leaving with the cluster now did not die
        scheduler_log.removeFilter(deaths)
        with contextlib.suppress(Exception):
            client.unsubscribe_topic("all")
    report.wall_s = time.perf_counter() - t0


def _collect(client, futures, submit, attempts, local, writer, report, progress, deaths) -> None:
    """Write each case's row as it finishes; restart the worker of a timed-out case and run
    again the cases its restart took down."""
    from distributed import as_completed, wait

    total = len(futures)
    pending = len(futures)
    queue = as_completed(futures)
    for future in queue:
        if future.status not in ("finished", "error", "cancelled"):
            wait([future])  # yielded while being rescheduled after a worker restart
        pending -= 1
        case = futures.pop(future)
        restarted_under = deaths.restarted_under(future)
        if restarted_under and attempts[case.case] < MAX_ATTEMPTS:
            # its worker was restarted under it (for a timed-out case): run it again
            again = submit(case)
            deaths.cases[again.key] = case.case
            futures[again] = case
            queue.add(again)
            pending += 1
            continue
        if restarted_under:
            row = failed_row(
                case,
                f"its worker was restarted under it {attempts[case.case]} times (for other "
                "cases' timeouts)",
            )
        else:
            row = _row_of(future, case)
        if row.pop("_restart", False):
            if pending or not local:
                worker = row.get("worker", "")
                deaths.restarted.add(worker)
                row["reason"] += f" ({_restart(client, worker)})"
            else:
                row["reason"] += " (its worker stopped with the local cluster)"
            log.warning("case %s: %s", case.case, row["reason"])
        writer.write(row)
        report.ran += 1
        if row.get("status") != "ok":
            report.failed += 1
            report.failures[case.case] = str(row.get("reason", ""))
        report.task_seconds.append(float(row.get("seconds") or 0.0))
        if row.get("cpu_seconds") not in ("", None):
            report.cpu_seconds.append(float(row["cpu_seconds"]))
        if row.get("registration_seconds") not in ("", None):
            report.registration_seconds.append(float(row["registration_seconds"]))
        if progress is not None:
            progress(report.ran, total, row)
        future.release()


class _WorkerDeaths(logging.Filter):
    """Tells usnav's restarts of a timed-out case's worker from workers that died by
    themselves (crash, out of memory), and says each death in one line of usnav's own.

    Dask counts a restart as a death of the worker: a case the scheduler had just given that
    worker is "suspicious", and after two such restarts Dask logged ``ERROR
    distributed.scheduler: Task usnav-case-... marked as failed because 2 workers died while
    trying to run it`` although no worker died by itself (the case then runs again: usnav's
    rule). As a logging filter on ``distributed.scheduler`` this demotes that line to DEBUG
    for usnav's tasks (shown with ``--debug``); what happened is said by usnav: the timed-out
    case's line, and one line per worker that died by itself (:meth:`on_event`, subscribed to
    the scheduler's ``remove-worker`` events).

    Attributes
    ----------
    cases
        Task key → case name.
    restarted
        Addresses of the workers usnav restarted (their removal is no death).
    closing
        True once the run's tasks are done: workers leaving with the cluster did not die.
    """

    TASK_FAILED = "Task %s marked as failed because %d workers died"

    def __init__(self, cases: dict[str, str]):
        super().__init__()
        self.cases = cases
        self.restarted: set[str] = set()
        self.closing = False

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if not (
            str(record.msg).startswith(self.TASK_FAILED) and args and str(args[0]) in self.cases
        ):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)

    def on_event(self, event) -> None:
        """A scheduler event (``(timestamp, msg)``): one line for a worker that left the
        cluster unexpected and was not restarted by usnav."""
        msg = event[1] if isinstance(event, tuple | list) and len(event) == 2 else event
        if not isinstance(msg, dict) or msg.get("action") != "remove-worker":
            return
        worker = str(msg.get("worker", ""))
        if self.closing or msg.get("expected") or worker in self.restarted:
            return
        keys = [str(k) for k in msg.get("processing-tasks", ()) or ()]
        running = sorted(self.cases[k] for k in keys if k in self.cases)
        what = f"while running case {', '.join(running)}" if running else "while idle"
        log.warning(
            "the Dask worker process %s died %s (a crash, out of memory, or killed)", worker, what
        )

    def restarted_under(self, future) -> bool:
        """Whether the task was lost with a worker usnav restarted (KilledWorker whose last
        worker is one of :attr:`restarted`)."""
        if future.status != "error":
            return False
        try:
            exc = future.exception()
        except Exception:
            return False
        if type(exc).__name__ != "KilledWorker":
            return False
        last = getattr(getattr(exc, "last_worker", None), "address", None)
        return last in self.restarted


def _row_of(future, case) -> dict:
    """The task's row, or a failed row saying why the task itself did not finish."""
    if future.status == "finished":
        return future.result()
    try:
        exc = future.exception()
    except Exception as err:  # cancelled: exception() raises
        exc = err
    name = type(exc).__name__
    if name == "KilledWorker":
        reason = "the worker process running it died (a crash, out of memory, or killed)"
    else:
        reason = f"task error: {name}: {exc}"
    return failed_row(case, reason)


def _restart(client, worker: str) -> str:
    """Restart a worker whose case timed out (its nanny starts a fresh process); returns
    what happened, for the row's reason."""
    try:
        answer = client.restart_workers([worker], timeout=120, raise_for_error=False)
    except Exception as exc:  # e.g. gone already: say so, go on
        return f"worker restart failed: {type(exc).__name__}"
    status = (answer or {}).get(worker, "OK")
    if status == "OK":
        return "worker restarted"
    if status == "removed":
        return "worker without a nanny: removed from the cluster"
    return f"worker restart: {status}"


def _warm_up_workers(client) -> dict[str, float]:
    """Register the warm-up plugin (runs on every worker now and on any that joins later);
    returns each worker's warm-up seconds."""
    from usnav.evaluate._dask import UsnavWarmUp, warm_up_seconds

    try:
        responses = client.register_plugin(UsnavWarmUp())
    except Exception as exc:
        raise InputError(
            "Dask workers",
            f"cannot load usnav's kernels: {type(exc).__name__}: {exc}",
            f"install usnav on every worker ({INSTALL_HINT})",
        ) from None
    bad = {
        w: r.get("exception") or r.get("text")
        for w, r in (responses or {}).items()
        if isinstance(r, dict) and r.get("status") not in (None, "OK")
    }
    if bad:
        worker, problem = next(iter(bad.items()))
        raise InputError(
            f"Dask worker {worker}",
            f"cannot load usnav's kernels: {problem}",
            f"install usnav on every worker ({INSTALL_HINT})",
        )
    return {w: float(v) for w, v in client.run(warm_up_seconds).items()}


def _workers_per_host(client) -> dict[str, int]:
    """How many of the cluster's workers run on each host (by the host part of their
    address)."""
    return dict(Counter(_host_of(a) for a in client.scheduler_info()["workers"]))


def _host_of(address: str) -> str:
    """The host part of a Dask address (``tcp://10.0.0.5:40213`` → ``10.0.0.5``)."""
    try:
        from distributed.comm import get_address_host

        return str(get_address_host(address))
    except (ImportError, ValueError):
        return address.rsplit(":", 1)[0].split("://")[-1]


def case_threads(workers_on_host: int, cores: int | None = None) -> int:
    """Threads one case's registration uses on a worker that shares its host's cores with
    ``workers_on_host - 1`` others: its share of them, at least 1. (A registration left at
    every core, ``threads = 0``, on each of two workers of a 2-core host ran four busy
    threads on two cores.)"""
    from usnav.registration.similarity import available_cores

    cores = available_cores() if cores is None else cores
    return max(1, cores // max(1, workers_on_host))


def run_case_task(
    doc: dict,
    out_dir: str,
    timeout_s: float,
    options_doc: dict | None,
    margins: bool,
    workers_per_host: dict[str, int] | None = None,
) -> dict:
    """The Dask task: one case in a thread, given ``timeout_s``; returns its row (plain data).

    Unless the options name a thread count, the case's registration uses this worker's share
    of its host's cores (:func:`case_threads`; every frame's similarity is the same to the bit
    whatever the count). A row with ``_restart`` set asks the runner to restart this worker
    (the case's thread is still running).
    """
    from usnav.registration.rigid import RegistrationOptions

    worker = _worker_name()
    case = case_from_task(doc)
    options = None
    if options_doc is not None:
        options = RegistrationOptions.model_validate(options_doc)
    if workers_per_host and (options is None or options.threads == 0):
        threads = case_threads(workers_per_host.get(_host_of(worker), 1))
        options = (options or RegistrationOptions()).model_copy(update={"threads": threads})
    box: dict = {}

    def target() -> None:
        box["row"] = evaluate_case(case, out_dir, registration_options=options, margins=margins)

    thread = threading.Thread(target=target, name=f"usnav-case-{case.case}", daemon=True)
    t0 = time.perf_counter()
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive() or "row" not in box:
        row = failed_row(case, f"timed out after {timeout_s:g} s")
        row.update(seconds=round(time.perf_counter() - t0, 3), _restart=True)
    else:
        row = box["row"]
    row["worker"] = worker
    return row


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.contextmanager
def _connect(scheduler: str | None, workers: int | None, timeout_s: float) -> Iterator:
    """(client, scheduler address, local?) for a new local cluster or a running scheduler."""
    import dask
    from distributed import Client, LocalCluster

    if not log.isEnabledFor(logging.DEBUG):  # Dask logs every start and stop at INFO
        logging.getLogger("distributed").setLevel(logging.ERROR)
    if scheduler is None:
        n = workers or os.cpu_count() or 1
        # one task per worker at a time (no task waits on a worker that may be restarted);
        # a task whose worker dies is retried once, then fails
        settings = {
            "distributed.scheduler.allowed-failures": 1,
            "distributed.scheduler.worker-saturation": 1.0,
        }
        with dask.config.set(settings):
            cluster = LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                # the scheduler's HTTP server (health routes) runs even without a dashboard, on
                # Dask's default port 8787 — taken by any other cluster or evaluate, which
                # printed a four-line warning: an ephemeral loopback port instead
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                # the rows say what went wrong; Dask's own shutdown races are noise (--debug)
                silence_logs=logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.CRITICAL,
            )
        try:
            with Client(cluster) as client:
                client.wait_for_workers(n, timeout=max(timeout_s, 120))
                yield client, cluster.scheduler_address, True
        finally:
            cluster.close()
        return
    if "://" not in scheduler:
        scheduler = f"tcp://{scheduler}"
    # Client() waits without end for the handshake of a peer that accepts and never speaks
    # (distributed 2026.8): ask the address who it is first, under our own deadline
    _check_scheduler(scheduler, timeout_s)
    try:
        client = Client(scheduler, timeout=f"{timeout_s}s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise _no_scheduler(scheduler, type(exc).__name__) from None
    try:
        try:
            client.wait_for_workers(workers or 1, timeout=timeout_s)
        except TimeoutError:
            raise InputError(
                scheduler,
                f"the scheduler has fewer than {workers or 1} worker(s) after {timeout_s:g} s",
                "start workers: dask worker " + scheduler,
            ) from None
        yield client, scheduler, False
    finally:
        client.close()


def _no_scheduler(address: str, why: str) -> InputError:
    return InputError(
        address,
        f"no Dask scheduler answers ({why})",
        "check the address or start one with `dask scheduler` (or leave out --scheduler to run "
        "on this machine)",
    )


def _check_scheduler(address: str, timeout_s: float) -> None:
    """Ask ``address`` for its identity, all within ``timeout_s``.

    Raises
    ------
    InputError
        Nothing answers there in time (no listener, a listener that is not a Dask server, a bad
        address), or a Dask server that is not a scheduler (a worker or a nanny) answers.
    """
    from distributed.comm import connect
    from distributed.core import send_recv

    async def identity() -> object:
        comm = await connect(address, timeout=timeout_s)
        try:
            return await send_recv(comm, op="identity", close=True)
        finally:
            comm.abort()

    async def bounded() -> object:
        return await asyncio.wait_for(identity(), timeout_s)

    box: dict = {}

    def probe() -> None:  # a loop of its own: the caller may be running one
        try:
            box["answer"] = asyncio.run(bounded())
        except Exception as exc:  # whatever the peer did, it is not a scheduler answering
            box["error"] = exc

    thread = threading.Thread(target=probe, name="usnav-scheduler-probe", daemon=True)
    thread.start()
    thread.join(timeout_s + 5.0)  # the probe ends by itself at timeout_s; this is a backstop
    error = box.get("error")
    if thread.is_alive() or isinstance(error, (TimeoutError, asyncio.TimeoutError)):
        raise _no_scheduler(address, f"nothing answered within {timeout_s:g} s")
    if error is not None:
        raise _no_scheduler(address, f"{type(error).__name__}: {error}")
    answer = box.get("answer")
    kind = answer.get("type", "") if isinstance(answer, dict) else ""
    if not str(kind).endswith("Scheduler"):
        raise InputError(
            address,
            f"a Dask {kind or 'peer'} answers, not a scheduler",
            "give the scheduler's address (dask scheduler prints it), not a worker's",
        )
