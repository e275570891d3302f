"""Session 43: faults the session-42 reviewers found, run as a user runs usnav."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import usnav

from usnav.sim import make_options, simulate_case


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 30-frame simulated case (seed 9101)."""
    out = tmp_path_factory.mktemp("case9101")
    simulate_case(9101, out, make_options(frames=30, save_anatomy=False))
    return out


def test_a_reconstructed_mha_is_taken_as_the_mri(case: Path, tmp_path: Path) -> None:
    """``usnav reconstruct`` writes ``.mha``; ``--mri`` refused it ("unknown volume format").
    The sweep registered to its own reconstruction starts on it: the .mha is read where ITK
    puts it (Reference coordinates as LPS, so ReferenceToMri = diag(-1, -1, 1))."""
    recon = tmp_path / "recon.mha"
    done = usnav(
        tmp_path, "reconstruct", str(case / "sweep.igs.mha"), "--calibration",
        str(case / "calibration.toml"), "--out", str(recon),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (tmp_path / "flip.txt").write_text("-1 0 0 0  0 -1 0 0  0 0 1 0  0 0 0 1\n", "utf-8")
    done = usnav(
        tmp_path, "register", str(case / "sweep.igs.mha"), "--mri", str(recon),
        "--calibration", str(case / "calibration.toml"), "--init", "flip.txt",
        "--out", "r.json", "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "r.json").read_text("utf-8"))
    assert result["initial_similarity"] > 0.8, result
    assert result["correction_mm"] < 0.5, result
