"""Bad inputs found by a session-16 audit of every subcommand (about 230 tries): each one
crashed, hung, printed a traceback or several lines, or was accepted silently. Each case
here failed before its fix."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from cli_helpers import assert_bad_input, usnav

from usnav.config.calibration import CalibrationFile, load_calibration
from usnav.errors import InputError
from usnav.io.outputs import check_output
from usnav.io.volume import load_volume
from usnav.registration.files import read_initial
from usnav.registration.options import RegistrationOptions
from usnav.registration.points import read_points


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("level_spacings_mm", [float("nan")]),  # reached the kernels: a segmentation fault
        ("level_spacings_mm", [0.0]),
        ("patch_half", [-1]),  # an OpenCV internal error
        ("max_frames", [0]),  # blamed the sweep ("no usable frame")
        ("max_evaluations", [0]),
        ("ambiguity_offsets_mm", [-6.0]),
        ("prior_weight", float("nan")),
        ("uncertainty", "no"),  # a string read as a boolean: "no" was True
    ],
)
def test_registration_options_check_every_element(field, value):
    with pytest.raises(ValueError, match=field):
        RegistrationOptions(**{field: value})


@pytest.mark.parametrize(
    ("args", "words"),
    [
        # a NaN timeout passed `<= 0` and the snapshot waited forever
        (["view", "--snapshot", "v.png", "--timeout", "nan"], ["--timeout", "finite"]),
        (
            ["reconstruct", "s.mha", "--calibration", "c", "--out", "r.mha", "--spacing", "inf"],
            ["--spacing", "finite"],
        ),
        # '' became Path('.'): the keys were written into the current folder
        (["keys", "--out", ""], ["--out", "is empty"]),
        (["keys", "--out="], ["--out", "is empty"]),
    ],
)
def test_option_values_no_command_can_use(tmp_path, args, words):
    assert_bad_input(usnav(tmp_path, *args), *words)
    assert not list(tmp_path.glob("*.key*"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_an_output_folder_nobody_can_write_is_refused_before_the_work():
    """os.access says yes to root everywhere; /proc refuses new files even to root (register
    failed after the whole registration, run --log with a 59-line traceback)."""
    with pytest.raises(InputError, match="cannot be written into"):
        check_output(Path("/proc/usnav-result.json"))


def test_a_nifti_with_a_zero_voxel_size_is_refused(tmp_path):
    """nibabel goes on with 1 mm (printing its warning twice): every distance would be off."""
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.diag([0.8, 0.8, 0.8, 1.0]))
    img.header["pixdim"][1:4] = [0.8, 0.0, 0.8]
    path = tmp_path / "zero.nii"
    nib.save(img, str(path))
    with pytest.raises(InputError, match="pixdim"):
        load_volume(path)


def test_a_nifti_with_a_zero_voxel_size_is_one_line_from_a_fresh_process(tmp_path):
    """The test above reads in a process that imported nibabel already; a user's first read
    imported it while its notes were being collected, and nibabel's own handler printed
    "pixdim[1,2,3] should be non-zero; setting 0 dims to 1" before usnav's line."""
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.diag([0.8, 0.8, 0.8, 1.0]))
    img.header["pixdim"][1:4] = [0.8, 0.0, 0.8]
    nib.save(img, str(tmp_path / "zero.nii.gz"))
    assert_bad_input(usnav(tmp_path, "info", "zero.nii.gz"), "zero.nii.gz", "pixdim")


def test_an_error_from_a_library_is_one_line():
    error = InputError("x.nii", "cannot read NIfTI: expected 10 bytes\n - could it be damaged?")
    assert "\n" not in str(error)


def test_an_initial_pose_far_beyond_any_room_is_refused(tmp_path):
    path = tmp_path / "init.txt"
    path.write_text("1 0 0 1e300\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    with pytest.raises(InputError, match="not a pose in an operating room"):
        read_initial(path)


def test_a_folder_given_as_a_point_file(tmp_path):
    with pytest.raises(InputError, match="is a folder"):
        read_points(tmp_path)


def test_a_calibration_without_its_matrix_names_the_file(tmp_path):
    path = tmp_path / "probe.toml"
    path.write_text('format = 1\nprobe = "L10"\n[temporal]\ntracker_lag_s = 0.01\n')
    calibration = load_calibration(path)
    assert isinstance(calibration, CalibrationFile)
    with pytest.raises(InputError, match="probe.toml"):
        _ = calibration.image_to_probe


@pytest.mark.slow
def test_usnav_run_with_nobody_at_the_port_says_so(tmp_path):
    """It exited 0 with '0 frames received' (and without --duration waited silently)."""
    sim = tmp_path / "case"
    from usnav.sim import make_options, simulate_case

    simulate_case(43, sim, make_options(frames=4, save_anatomy=False))
    # the port stays bound, never listening, for the whole run: connections to it are refused
    # and no other process (another pytest worker) can start a server on it meanwhile
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        device = tmp_path / "probe.toml"
        device.write_text(f"[probe]\nport = {port}\n")
        result = usnav(
            tmp_path,
            "run",
            "--device",
            str(device),
            "--mri",
            str(sim / "mri.nii.gz"),
            "--label",
            str(sim / "tumor_label.nii.gz"),
            "--calibration",
            str(sim / "calibration.toml"),
            "--no-registration",
            "--quiet",
            "--publish",
            "tcp://127.0.0.1:0",  # any free port, bound by usnav itself
            "--duration",
            "1",
            timeout=300,
        )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and f"no frame from 127.0.0.1:{port}" in errors[0], result.stderr
