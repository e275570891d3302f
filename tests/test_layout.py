"""The layout the README promises: recordings/ exists and what usnav writes is ignored by git;
CI finds the outside data beside the clone and fails, not skips, when it is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_recordings_folder_exists_with_a_readme() -> None:
    readme = ROOT / "recordings" / "README.md"
    assert readme.is_file()
    assert "--record recordings/" in readme.read_text()


@pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout"
)
def test_what_usnav_writes_into_the_tree_is_ignored_but_the_readme_is_not() -> None:
    written = [
        "recordings/case.igs.mha",
        "recordings/sim/mri.nii.gz",
        "usnav-demo/snapshot.png",
        "logs/run.log",
        ".venv/bin/python",
        ".mypy_cache/x.json",
    ]
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *written, "recordings/README.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert sorted(ignored.stdout.split()) == sorted(written)


def test_ci_script_names_no_machine_path() -> None:
    text = (ROOT / ".ci" / "run").read_text()
    assert "/work/" not in text and "/home/" not in text
    assert "../shared/data" in text and "USNAV_TEST_DATA" in text


def _run_data_test(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """A test that needs the outside data, run by pytest under the project's conftest."""
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    shutil.copy(ROOT / "tests" / "ci_rules.py", tmp_path / "ci_rules.py")
    (tmp_path / "test_needs_data.py").write_text(
        "def test_reads(shared_data):\n    assert shared_data.is_dir()\n"
    )
    environment = {k: v for k, v in os.environ.items() if k not in ("CI", "USNAV_TEST_DATA")}
    environment |= {"USNAV_TEST_DATA": str(tmp_path / "absent"), **env}
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )


def test_missing_data_skips_with_the_reason_locally(tmp_path: Path) -> None:
    result = _run_data_test(tmp_path)
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout and "USNAV_TEST_DATA" in result.stdout


def test_missing_data_fails_under_ci(tmp_path: Path) -> None:
    result = _run_data_test(tmp_path, CI="true")
    assert result.returncode == 1, result.stdout
    assert "1 error" in result.stdout and "under CI" in result.stdout  # fixture errors fail the run
