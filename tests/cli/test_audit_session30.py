"""Bad inputs found by a session-30 outside audit of every subcommand (about 190 tries): each
one crashed with an internal error, was accepted silently, or was refused only after the work
was done or after its output folder was made. Each case here failed before its fix. (Non-rigid
tracker poses: tests/io/test_info.py and tests/devices/test_probe_client.py; a zero in the
size line: tests/io/test_info.py.)"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from cli_helpers import ROOT, assert_bad_input, usnav

from usnav.config.calibration import load_calibration
from usnav.errors import InputError
from usnav.registration.files import register_recording
from usnav.registration.points import read_tag_file


def test_a_folder_given_as_the_calibration_is_bad_input(tmp_path: Path) -> None:
    """It was 'internal error: IsADirectoryError', exit 1, in reconstruct, register, replay,
    run and calibrate spatial."""
    folder = tmp_path / "cal.toml"
    folder.mkdir()
    with pytest.raises(InputError, match="is a folder"):
        load_calibration(folder)
    result = usnav(tmp_path, "calibrate", "spatial", "--config", "cal.toml", "--calibration", "x")
    assert_bad_input(result, "cal.toml", "is a folder")


def test_a_tag_line_with_five_numbers_is_refused(tmp_path: Path) -> None:
    """One damaged landmark pair was dropped silently: 15 pairs registered where the file
    held 16."""
    good = ' 1 2 3 1.5 2.5 3.5 ""\n 4 5 6 4.5 5.5 6.5 ""\n'
    tag = tmp_path / "pairs.tag"
    tag.write_text(f"MNI Tag Point File\nVolumes = 2;\nPoints =\n{good} 7 8 9 7.5 8.5\n;\n")
    with pytest.raises(InputError, match="5 numbers, expected 6"):
        read_tag_file(tag)
    tag.write_text(f"MNI Tag Point File\nVolumes = 2;\nPoints =\n{good}\n;\n")  # a blank line
    assert len(read_tag_file(tag)[0]) == 2


def test_a_label_from_elsewhere_is_refused_by_register(tmp_path: Path) -> None:
    """``usnav run`` and ``usnav margins`` refused a label map lying outside the MRI;
    ``usnav register`` skipped the tumor stage and exited 0."""
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    mri = np.random.default_rng(0).random((20, 20, 20)).astype(np.float32)
    nib.save(nib.Nifti1Image(mri, affine), tmp_path / "mri.nii.gz")
    label = np.zeros((20, 20, 20), np.uint8)
    label[8:12, 8:12, 8:12] = 1
    shifted = affine.copy()
    shifted[:3, 3] = 500.0
    nib.save(nib.Nifti1Image(label, shifted), tmp_path / "label.nii.gz")
    (tmp_path / "init.txt").write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    with pytest.raises(InputError, match="lies outside the MRI"):
        register_recording(
            tmp_path / "not-read.igs.mha",  # refused before the sweep is read
            tmp_path / "mri.nii.gz",
            ROOT / "calibration" / "sim-L10.toml",
            tmp_path / "init.txt",
            label=tmp_path / "label.nii.gz",
        )


def test_the_viewer_refuses_an_mri_with_nan(tmp_path: Path) -> None:
    """``usnav register`` refused it; ``usnav view`` drew it (a RuntimeWarning leaked)."""
    from usnav.cli.cmd_view import load_mri_context

    data = np.ones((8, 8, 8), np.float32)
    data[2, 2, 2] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "nan.nii.gz")
    with pytest.raises(InputError, match="NaN or infinite"):
        load_mri_context(tmp_path / "nan.nii.gz", None)


def test_refusals_come_before_the_work_and_leave_nothing_behind(tmp_path: Path) -> None:
    """``soak --json FOLDER`` ran its item first (18 s), then failed with an internal error;
    ``simulate --seed -1`` and ``demo --publish tcp://0.0.0.0:…`` left their empty output
    folder behind."""
    (tmp_path / "results").mkdir()
    assert_bad_input(usnav(tmp_path, "soak", "igtl", "--quick", "--json", "results"), "--json")
    assert_bad_input(usnav(tmp_path, "simulate", "--seed", "-1", "--out", "case"), "--seed")
    assert not (tmp_path / "case").exists()
    result = usnav(tmp_path, "demo", "--publish", "tcp://0.0.0.0:5999", "--out", "demo")
    assert_bad_input(result, "--publish", "127.0.0.1")
    assert not (tmp_path / "demo").exists()
