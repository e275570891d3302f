"""``usnav margins`` judges its inputs as ``usnav run``, ``register`` and ``reconstruct`` do
(QA: it took what they refuse and exited 0 with empty results). Real files, real processes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_bad_input, usnav

from usnav.frames import TrackedFrame, TrackedTransform, TransformStatus
from usnav.io.sequence import write_sequence
from usnav.io.volume import Volume, save_volume

FRAMES = 6


def _recording(path: Path, status: TransformStatus = TransformStatus.OK, nan: bool = False):
    """A small sweep (48 × 64 px) with ProbeToReference: every sample ``status``, and NaN
    matrices with ``nan``."""
    rng = np.random.default_rng(5)
    frames = []
    for i in range(FRAMES):
        pose = np.eye(4)
        pose[:3, 3] = [2.0, 2.0, 4.0 + 0.5 * i]
        if nan:
            pose[0, 3] = np.nan
        frames.append(
            TrackedFrame(
                image=rng.integers(0, 255, size=(48, 64), dtype=np.uint8),
                transforms={"ProbeToReference": TrackedTransform(pose, status)},
                t_device=0.05 * i,
            )
        )
    written = write_sequence(path, frames)
    if nan and status is TransformStatus.OK:
        # usnav writes a non-finite matrix INVALID; other tools may mark it OK
        data = written.read_bytes()
        head, sep, pixels = data.partition(b"ElementDataFile = LOCAL\n")
        head = head.replace(b"TransformStatus = INVALID", b"TransformStatus = OK")
        written.write_bytes(head + sep + pixels)
    return written


@pytest.fixture
def case(tmp_path: Path) -> dict[str, Path]:
    """Inputs every check accepts: a sweep, an MRI with a tumor label map on it, a calibration
    (0.2 mm/px) and a ReferenceToMri (identity), as 16-number files."""
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    mri = np.random.default_rng(1).normal(100, 10, (24, 24, 24)).astype(np.float32)
    label = np.zeros((24, 24, 24), np.uint8)
    label[6:12, 4:10, 2:10] = 1
    paths = {
        "recording": _recording(tmp_path / "sweep.igs.mha"),
        "mri": save_volume(Volume(mri, affine, source="mri"), tmp_path / "mri.nii.gz"),
        "label": save_volume(Volume(label, affine, source="label"), tmp_path / "label.nii.gz"),
        "calibration": tmp_path / "calibration.txt",
        "reference": tmp_path / "ReferenceToMri.txt",
    }
    paths["calibration"].write_text("0.2 0 0 0  0 0.2 0 0  0 0 0.2 0  0 0 0 1\n")
    paths["reference"].write_text("1 0 0 0  0 1 0 0  0 0 1 0  0 0 0 1\n")
    return paths


def _margins(tmp_path: Path, case: dict[str, Path], **replace: Path):
    files = {**case, **replace}
    return usnav(
        tmp_path,
        "margins",
        str(files["recording"]),
        "--mri",
        str(files["mri"]),
        "--label",
        str(files["label"]),
        "--calibration",
        str(files["calibration"]),
        "--reference-to-mri",
        str(files["reference"]),
        "--out",
        str(tmp_path / "out" / "margins.jsonl"),
    )


def _reconstruct(tmp_path: Path, case: dict[str, Path], recording: Path):
    out = tmp_path / "volume.nii.gz"
    return usnav(
        tmp_path,
        "reconstruct",
        str(recording),
        "--calibration",
        str(case["calibration"]),
        "--out",
        str(out),
    )


def _problem(line: str) -> str:
    """The line without the command's name (``usnav margins: error: ``)."""
    return line.split("error: ", 1)[1]


def test_the_inputs_of_the_fixture_are_accepted(tmp_path, case):
    result = _margins(tmp_path, case)
    assert result.returncode == 0, result.stderr
    assert f"{FRAMES} frame(s)" in result.stdout


def test_a_label_map_without_a_tumor_is_refused_as_usnav_run_refuses_it(tmp_path, case):
    empty = save_volume(
        Volume(np.zeros((24, 24, 24), np.uint8), np.eye(4), source="empty"),
        tmp_path / "empty_label.nii.gz",
    )
    line = assert_bad_input(
        _margins(tmp_path, case, label=empty), "empty_label.nii.gz", "none of the tumor labels"
    )
    assert not (tmp_path / "out" / "margins.jsonl").exists()
    device = tmp_path / "probe.toml"
    device.write_text('[probe]\nport = 18944\ntransforms = ["ProbeToReference"]\n')
    run = usnav(
        tmp_path,
        "run",
        "--device",
        str(device),
        "--mri",
        str(case["mri"]),
        "--label",
        str(empty),
        "--calibration",
        str(case["calibration"]),
        "--init",
        str(case["reference"]),
    )
    run_line = assert_bad_input(run, "empty_label.nii.gz", "none of the tumor labels")
    assert _problem(line).split(" — ")[0] == _problem(run_line).split(" — ")[0]


@pytest.mark.parametrize(
    ("status", "nan", "why"),
    [
        (TransformStatus.INVALID, False, "ProbeToReference is never OK (6 INVALID)"),
        (TransformStatus.OK, True, "ProbeToReference is never OK (6 non-finite)"),
    ],
)
def test_a_recording_without_valid_tracking_is_refused_like_reconstruct(
    tmp_path, case, status, nan, why
):
    recording = _recording(tmp_path / "untracked.igs.mha", status, nan)
    line = assert_bad_input(_margins(tmp_path, case, recording=recording), "untracked.igs.mha", why)
    assert "none of the 6 frames has valid tracking" in line
    other = assert_bad_input(_reconstruct(tmp_path, case, recording), "untracked.igs.mha", why)
    assert _problem(line) == _problem(other)


def test_a_volume_given_as_the_recording_is_refused_by_margins_register_and_reconstruct(
    tmp_path, case
):
    volume = save_volume(
        Volume(np.ones((20, 22, 24), np.int16), np.eye(4), source="v"), tmp_path / "mri.nrrd"
    )
    renamed = volume.rename(tmp_path / "vol.seq.nrrd")
    problem = "is a volume (one 3D image, no tracked frames), not a recording"
    lines = [
        assert_bad_input(_margins(tmp_path, case, recording=renamed), "vol.seq.nrrd", problem),
        assert_bad_input(_reconstruct(tmp_path, case, renamed), "vol.seq.nrrd", problem),
        assert_bad_input(
            usnav(
                tmp_path,
                "register",
                str(renamed),
                "--mri",
                str(case["mri"]),
                "--calibration",
                str(case["calibration"]),
                "--init",
                str(case["reference"]),
                "--out",
                str(tmp_path / "result.json"),
            ),
            "vol.seq.nrrd",
            problem,
        ),
    ]
    assert len({_problem(line) for line in lines}) == 1


def test_a_bad_reference_to_mri_is_named_as_the_option_gives_it(tmp_path, case):
    bad = tmp_path / "bad.txt"
    bad.write_text("bad\n")
    line = assert_bad_input(
        _margins(tmp_path, case, reference=bad), "bad.txt", "ReferenceToMri of --reference-to-mri"
    )
    assert "initial" not in line


@pytest.mark.parametrize(("value", "why"), [(np.nan, "NaN"), (0.5, "fraction")])
def test_a_float_label_map_is_judged_on_every_labelled_voxel(tmp_path, case, value, why):
    """A float label map, 64+ slices deep, with one bad voxel in slice 1: the check sampled
    every other slice, so a NaN there was an internal error (exit 3) and a 0.5 was taken as
    tumor."""
    data = np.zeros((70, 24, 24), np.float32)
    data[30:36, 4:10, 2:10] = 1.0
    data[1, 12, 12] = value
    shift = np.eye(4)
    shift[0, 3] = -30.0  # the tumor where the fixture's is, inside the MRI
    label = save_volume(Volume(data, shift, source=why), tmp_path / f"{why}_label.nii.gz")
    assert_bad_input(_margins(tmp_path, case, label=label), label.name, "not a label map")
    assert not (tmp_path / "out" / "margins.jsonl").exists()


@pytest.mark.parametrize(
    ("codes", "says"),
    [
        # a planner's tumor 2 and cyst 4: drawn as the cyst alone, the cyst not at all
        ((2, 4), "no voxel is the solid tumor (1); label(s) 4 count as background"),
        ((1, 3), "label(s) 3 count as background"),
    ],
)
def test_labels_read_otherwise_than_the_planner_may_mean_are_said_once(tmp_path, case, codes, says):
    data = np.zeros((24, 24, 24), np.uint8)
    data[6:12, 4:10, 2:10] = codes[0]
    data[6:12, 10:13, 2:10] = codes[1]
    label = save_volume(Volume(data, np.eye(4), source="l"), tmp_path / "planned.nii.gz")
    result = _margins(tmp_path, case, label=label)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, result.stderr  # check_inputs and write_margins both judged it
    assert f"planned.nii.gz: {says} (read as solid tumor 1, cyst 2)" in warnings[0]
    plain = _margins(tmp_path / "out", case)  # the fixture's labels (solid 1 only): no word
    assert plain.returncode == 0 and "WARNING" not in plain.stderr, plain.stderr
