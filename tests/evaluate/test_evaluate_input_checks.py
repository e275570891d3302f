"""``usnav evaluate`` refuses what it cannot use with one line and exit status 2, before any case
runs (bad ``--out``, an empty manifest or one with a repeated column, an unknown ``--group-by``
tag, something at ``--scheduler`` that is not a Dask scheduler), and exits with 2 when every
case it ran failed.

The manifests here point at files that do not exist: the manifest reader does not open them,
and a case fails on them at once, so no registration ever runs."""

from __future__ import annotations

import contextlib
import csv
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from evaluate_helpers import manifest_of, usnav

from usnav.cli.main import main
from usnav.io.manifest import ManifestCase

#: a header of the manifest format: the required columns and two tags
HEADER = "case,recording,mri,calibration,init,family,site\n"


def _case(folder: Path, name: str, family: str) -> ManifestCase:
    """A manifest row whose files are all missing (it fails at once if it is run)."""
    return ManifestCase(
        case=name,
        recording=folder / f"{name}-gone.igs.mha",
        mri=folder / "gone-mri.nii.gz",
        calibration=folder / "gone-calibration.toml",
        init=folder / "gone-init.txt",
        tags={"family": family, "site": "usnav-test"},
    )


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    """Two cases with missing files, tags ``family`` and ``site``."""
    data = tmp_path / "data"
    cases = [_case(data, "c1", "baseline"), _case(data, "c2", "trailing-echo")]
    return manifest_of(data / "manifest.csv", cases)


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "internal error" not in err[0] and "Traceback" not in err[0]
    return err[0]


# -- --out ------------------------------------------------------------------------------------


def test_out_into_a_folder_of_other_files_is_refused_and_nothing_is_written(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Session 43: a folder of someone's files (no results.csv, no lock) was written into
    (cases/, summary, plots among them)."""
    out = tmp_path / "papers"
    out.mkdir()
    (out / "draft.docx").write_bytes(b"a draft")
    (out / ".hidden").write_text("")
    assert main(["evaluate", str(manifest), "--out", str(out)]) == 2
    line = _one_error_line(capsys)
    assert f"{out}: --out is a folder of other files (1, first: draft.docx)" in line, line
    assert "no results.csv" in line and "give a new or empty folder" in line
    assert sorted(p.name for p in out.iterdir()) == [".hidden", "draft.docx"]


def test_out_holding_only_a_stopped_runs_cases_folder_is_taken_as_results(tmp_path: Path) -> None:
    """A run stopped before its first row leaves only ``cases/``: resuming into it is allowed,
    while the same folder with someone's file beside it is not."""
    from usnav.errors import InputError
    from usnav.evaluate.runner import _refuse_other_folder

    out = tmp_path / "res"
    (out / "cases" / "a-1").mkdir(parents=True)
    _refuse_other_folder(out)  # no error
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="folder of other files"):
        _refuse_other_folder(out)


def test_out_through_a_file_is_refused_and_nothing_is_created(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "res1.json"
    a_file.write_text("{}")
    for out in (a_file / "x", a_file / "x" / "y"):
        assert main(["evaluate", str(manifest), "--out", str(out)]) == 2
        line = _one_error_line(capsys)
        assert str(out) in line and "--out" in line and f"{a_file} is a file" in line
    assert a_file.read_text() == "{}"


@pytest.mark.parametrize("out", ["/proc/usnav-results", "/sys/usnav-results", "/proc"])
def test_out_on_a_virtual_file_system_is_refused(
    out: str, manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """/proc and /sys take no folders and no files, whoever asks (root included)."""
    if not (Path("/proc/self").exists() and Path("/sys/kernel").is_dir()):
        pytest.skip("no Linux /proc and /sys here")
    assert main(["evaluate", str(manifest), "--out", out]) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"usnav evaluate: error: {out}: --out ")
    assert "give a folder you can create and write to" in line
    assert not Path(out, "results.csv").exists()


# -- the manifest and --group-by, checked before anything is created ---------------------------


def test_a_manifest_without_cases_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "header-only.csv"
    empty.write_text(HEADER)
    out = tmp_path / "results"
    assert main(["evaluate", str(empty), "--out", str(out)]) == 2
    line = _one_error_line(capsys)
    assert str(empty) in line and "lists no cases" in line
    assert "results.csv" not in line  # not "all 0 case(s) are already in .../results.csv"
    assert not out.exists()


@pytest.mark.parametrize("column", ["case", "family"])
def test_a_repeated_column_is_refused(
    column: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "repeated.csv"
    path.write_text(
        HEADER.strip() + f",{column}\n" + "c1,r.igs.mha,m.nii.gz,c.toml,i.txt,baseline,sim,x\n"
    )
    out = tmp_path / "results"
    assert main(["evaluate", str(path), "--out", str(out)]) == 2
    line = _one_error_line(capsys)
    assert str(path) in line and f"column {column!r} appears 2 times" in line
    assert not out.exists()


@pytest.mark.parametrize("column", ["error_mm", "accepted", "margin_note"])
def test_a_tag_named_like_a_result_column_is_refused(
    column: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tag's value goes into its case's row; one named like a result column stood where that
    figure does not apply (an ``error_mm`` tag as the error of a case without a truth, then in
    the summary's median), so the manifest is refused before any case runs."""
    path = tmp_path / "clash.csv"
    path.write_text(
        HEADER.strip() + f",{column}\n" + "c1,r.igs.mha,m.nii.gz,c.toml,i.txt,a,b,0.1\n"
    )
    out = tmp_path / "results"
    assert main(["evaluate", str(path), "--out", str(out)]) == 2
    line = _one_error_line(capsys)
    assert str(path) in line and f"column {column!r}" in line and "rename it" in line
    assert not out.exists()


def test_an_unknown_group_by_tag_is_refused_before_any_case(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results"
    assert main(["evaluate", str(manifest), "--out", str(out), "--group-by", "nosuchtag"]) == 2
    line = _one_error_line(capsys)
    assert "--group-by" in line and "'nosuchtag'" in line and str(manifest) in line
    assert line.endswith("group by one of its tags: family, site")
    assert not out.exists()


# -- something at --scheduler that is not a Dask scheduler -------------------------------------


class _Listener:
    """A TCP server on loopback that is not a Dask scheduler.

    ``mode``: ``"backlog"`` listens and never accepts (the kernel completes the connections);
    ``"silent"`` accepts and never speaks; ``"banner"`` accepts and sends a line of text, as an
    SSH or SMTP server does, then reads and ignores whatever comes.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.server.settimeout(0.2)
        self.port = int(self.server.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="not-a-scheduler", daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            if self.mode == "backlog":
                self._stop.wait(0.2)
                continue
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            self.accepted.append(conn)
            if self.mode == "banner":
                conn.sendall(b"SSH-2.0-OpenSSH_9.6 not-dask\r\n")

    def __enter__(self) -> _Listener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self.accepted:
            conn.close()
        self.server.close()


@pytest.fixture(params=["backlog", "silent", "banner"])
def not_a_scheduler(request: pytest.FixtureRequest) -> Iterator[_Listener]:
    with _Listener(request.param) as listener:
        yield listener


def test_a_port_without_a_dask_scheduler_fails_within_the_connect_timeout(
    not_a_scheduler: _Listener, manifest: Path, tmp_path: Path
) -> None:
    address = f"tcp://127.0.0.1:{not_a_scheduler.port}"
    out = tmp_path / "new" / "results"
    # it used to hang: the subprocess timeout (TimeoutExpired) is the hang guard; how fast
    # it gives up is not asserted here (no wall-clock figures in tests)
    run = usnav(
        "evaluate", str(manifest), "--out", str(out), "--scheduler", address,
        "--connect-timeout", "2",
        timeout=60,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"usnav evaluate: error: {address}: no Dask scheduler answers")
    assert "dask scheduler" in lines[0]
    if not_a_scheduler.mode != "backlog":
        assert not_a_scheduler.accepted  # it was really asked
    # nothing written: the folders this run created are gone again
    assert not (tmp_path / "new").exists()


# -- every case failed --------------------------------------------------------------------------


@pytest.mark.slow
def test_every_case_failed_exits_2_with_the_results_written(manifest: Path, tmp_path: Path) -> None:
    """A local cluster of one worker; both cases fail on their missing recording at once.

    Dask's default HTTP port (8787) is held meanwhile, as another evaluate or a Dask
    cluster on the machine would: the local scheduler's HTTP server used to fall back to
    another port with a four-line warning on stderr."""
    out = tmp_path / "results"
    args = ("evaluate", str(manifest), "--out", str(out), "--workers", "1", "--group-by", "site")
    with contextlib.ExitStack() as held:
        holder = held.enter_context(socket.socket())
        try:
            holder.bind(("127.0.0.1", 8787))
            holder.listen()
        except OSError:  # already held by someone else: the same condition
            pass
        run = usnav(*args, timeout=300)
    assert run.returncode == 2, run.stdout + run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"usnav evaluate: error: {out / 'results.csv'}: all 2 case(s)")
    assert "c1-gone.igs.mha" in lines[0] or "c2-gone.igs.mha" in lines[0]
    with (out / "results.csv").open(encoding="utf-8", newline="") as f:
        rows = {r["case"]: r for r in csv.DictReader(f)}
    assert {k: r["status"] for k, r in rows.items()} == {"c1": "failed", "c2": "failed"}
    assert "c1-gone.igs.mha" in rows["c1"]["reason"]
    # the cases it was asked for, for usnav budget to see those never begun (session 43)
    assert (out / "asked_cases.txt").read_text(encoding="utf-8") == "c1\nc2\n"
    with (out / "summary.csv").open(encoding="utf-8", newline="") as f:
        summary = {r["site"]: r for r in csv.DictReader(f)}
    assert (summary["usnav-test"]["cases"], summary["usnav-test"]["failed"]) == ("2", "2")
    assert "results by site" in run.stdout

    # resumed: nothing left to run is not an error (the failed rows stay until deleted)
    again = usnav(*args, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "nothing to run: all 2 case(s) are already in" in again.stdout
    assert "2 of them failed: delete their rows to run them again" in again.stdout
