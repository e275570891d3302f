"""Session 43: faults the session-42 reviewers found, run as a user runs usnav."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import usnav

from usnav.config.calibration import load_calibration
from usnav.frames import TrackedFrame, TrackedTransform
from usnav.io.sequence import write_sequence
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


def _frames(n: int) -> list[TrackedFrame]:
    """``n`` 24 × 32 px frames 1 mm apart along the probe's z (ProbeToReference OK)."""
    out = []
    for i in range(n):
        pose = np.eye(4)
        pose[2, 3] = float(i)
        image = np.full((24, 32), 40 + 20 * i, np.uint8)
        transforms = {"ProbeToReference": TrackedTransform(pose)}
        out.append(TrackedFrame(image, transforms, t_device=0.1 * i, frame_number=i))
    return out


def _rigid_calibration(case: Path, path: Path) -> Path:
    """``case``'s ImageToProbe with its scale taken out, as 16 numbers."""
    matrix = np.array(load_calibration(case / "calibration.toml").image_to_probe)
    matrix[:3, :3] /= np.linalg.norm(matrix[:3, :3], axis=0)
    path.write_text(" ".join(f"{v:.12g}" for v in matrix.ravel()) + "\n", "utf-8")
    return path


def test_a_calibration_without_scale_is_named_and_refused_against_a_stated_spacing(
    case: Path, tmp_path: Path
) -> None:
    """16 numbers of a rigid ImageToProbe were taken as 1 mm pixels without a word."""
    rigid = _rigid_calibration(case, tmp_path / "rigid.txt")
    small = write_sequence(tmp_path / "small.igs.mha", _frames(3))
    done = usnav(tmp_path, "reconstruct", str(small), "--calibration", str(rigid), "--out", "v.mha")
    assert done.returncode == 0, done.stderr
    warning = [line for line in done.stderr.splitlines() if "rigid.txt" in line]
    assert len(warning) == 1 and "pixels are taken as 1 × 1 mm" in warning[0], done.stderr
    # a recording whose pixels say 0.2 mm is refused with that calibration, before any work
    stated = write_sequence(tmp_path / "stated.igs.mha", _frames(3), spacing=(0.2, 0.2, 1))
    done = usnav(
        tmp_path, "reconstruct", str(stated), "--calibration", str(rigid), "--out", "w.mha"
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "rigid.txt: ImageToProbe has no scale" in last and "0.2 × 0.2 mm" in last, last
    assert not (tmp_path / "w.mha").exists()
    # the same recording with the scaled calibration is not refused for its spacing
    done = usnav(
        tmp_path, "reconstruct", str(stated), "--calibration", str(case / "calibration.toml"),
        "--out", "w.mha",
    )  # fmt: skip
    assert "no scale" not in done.stderr and "pixels are taken" not in done.stderr
