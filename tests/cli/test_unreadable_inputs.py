"""Inputs the user may not read (chmod 000): one line naming the file, exit 2.

An unreadable recording or calibration ended ``usnav register`` as an internal error (exit 3,
``PermissionError``), an unreadable MRI as "Could not read file". Root reads every file
whatever its mode, so as root the command runs without the capabilities that let it
(``setpriv``, util-linux): the kernel then refuses it as it refuses any user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.cli_helpers import assert_bad_input, usnav_env
from usnav.frames import TrackedFrame, TrackedTransform
from usnav.io.sequence import write_sequence

DAC = "-dac_override,-dac_read_search"


def _as_a_user(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m usnav ARGS`` under the permissions every user has (root's dropped)."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:  # pragma: no cover - util-linux is on every machine of the project
            pytest.skip("setpriv (util-linux) is needed to drop root's file access")
        prefix = [setpriv, f"--inh-caps={DAC}", f"--bounding-set={DAC}"]
    return subprocess.run(
        [*prefix, sys.executable, "-m", "usnav", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=usnav_env(tmp_path),
    )


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    """A readable set of small register inputs (2 frames, an 8³ MRI)."""
    rng = np.random.default_rng(0)
    frames = [
        TrackedFrame(
            rng.integers(0, 255, (16, 16), dtype=np.uint8),
            {"ProbeToReference": TrackedTransform(np.eye(4))},
            t_device=0.1 * i,
        )
        for i in range(2)
    ]
    paths = {
        "recording": write_sequence(tmp_path / "sweep.igs.mha", frames),
        "mri": tmp_path / "mri.nii.gz",
        "toml": tmp_path / "cal.toml",
        "xml": tmp_path / "cal.xml",
        "numbers": tmp_path / "cal.txt",
        "init": tmp_path / "init.txt",
    }
    nib.save(nib.Nifti1Image(rng.random((8, 8, 8)).astype(np.float32), np.eye(4)), paths["mri"])
    eye = " ".join(f"{v:g}" for v in np.diag([0.5, 0.5, 0.5, 1.0]).ravel())
    paths["toml"].write_text(
        'format = 1\nprobe = "p"\n[spatial]\nimage_to_probe = [[0.5, 0, 0, 0], [0, 0.5, 0, 0], '
        "[0, 0, 0.5, 0], [0, 0, 0, 1]]\n"
    )
    paths["xml"].write_text(
        f'<PlusConfiguration><CoordinateDefinitions><Transform From="Image" To="Probe" '
        f'Matrix="{eye}"/></CoordinateDefinitions></PlusConfiguration>\n'
    )
    paths["numbers"].write_text(eye + "\n")
    paths["init"].write_text(" ".join(f"{v:g}" for v in np.eye(4).ravel()) + "\n")
    return paths


@pytest.mark.parametrize("which", ["recording", "mri", "toml", "xml", "numbers", "init"])
def test_an_unreadable_input_is_named_in_one_line(tmp_path, inputs, which):
    calibration = inputs[which] if which in ("toml", "xml", "numbers") else inputs["toml"]
    inputs[which].chmod(0)
    result = _as_a_user(
        tmp_path,
        "register",
        str(inputs["recording"]),
        "--mri",
        str(inputs["mri"]),
        "--calibration",
        str(calibration),
        "--init",
        str(inputs["init"]),
        "--out",
        str(tmp_path / "result.json"),
        "--quiet",
    )
    line = assert_bad_input(result, inputs[which].name)
    assert "Permission denied" in line, line
    assert not (tmp_path / "result.json").exists()
