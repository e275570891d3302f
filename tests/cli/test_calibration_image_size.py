"""A calibration holds for the image size it was made for (``[spatial] image_size_px``): the
batch commands refuse a recording of another size in one line (exit 2), where it went through
with the wrong mm per pixel (a 96-px sweep placed as 15 mm deep with a 256-px calibration);
a calibration that does not record its size (older files, PLUS XML, 16 numbers) works as
before. Real simulated files, real processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import assert_bad_input, usnav

from usnav.config.calibration import load_calibration
from usnav.io.sequence import read_sequence
from usnav.sim import make_options, simulate_case

#: what the one line must say: both sizes (cols × rows), the recording, what to do
MISMATCH = ("256 × 256 px", "96 × 80 px", "sweep.igs.mha", "calibrate for this image size")


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-frame simulated sweep of 96 × 80 px, its own calibration, one made for 256-px
    images (the same file, as a 256 × 256 simulation writes it) and one without a size."""
    out = tmp_path_factory.mktemp("size")
    simulate_case(43, out, make_options(frames=6, save_anatomy=False, image_cols=96, image_rows=80))
    own = (out / "calibration.toml").read_text()
    assert "image_size_px = [96, 80]" in own
    (out / "cal256.toml").write_text(
        own.replace("image_size_px = [96, 80]", "image_size_px = [256, 256]")
    )
    (out / "older.toml").write_text(own.replace("image_size_px = [96, 80]\n", ""))
    return out


def test_the_simulated_calibration_says_its_sweeps_size(case: Path) -> None:
    with read_sequence(case / "sweep.igs.mha") as seq:
        assert seq.image_size == (96, 80)
    assert load_calibration(case / "calibration.toml").spatial.image_size_px == [96, 80]
    assert load_calibration(case / "older.toml").spatial.image_size_px is None


def test_register_refuses_a_calibration_made_for_another_image_size(
    case: Path, tmp_path: Path
) -> None:
    out = tmp_path / "RESULT.json"
    result = usnav(
        tmp_path,
        "register",
        str(case / "sweep.igs.mha"),
        "--mri",
        str(case / "mri.nii.gz"),
        "--calibration",
        str(case / "cal256.toml"),
        "--init",
        str(case / "init_ReferenceToMri.txt"),
        "--out",
        str(out),
    )
    assert_bad_input(result, "cal256.toml", *MISMATCH)
    assert not out.exists()


def test_reconstruct_refuses_it_and_works_without_a_size_or_with_the_right_one(
    case: Path, tmp_path: Path
) -> None:
    volume = tmp_path / "vol.mha"
    args = ("reconstruct", str(case / "sweep.igs.mha"), "--out", str(volume), "--spacing", "2")
    result = usnav(tmp_path, *args, "--calibration", str(case / "cal256.toml"))
    assert_bad_input(result, "cal256.toml", *MISMATCH)
    assert not volume.exists()
    # an older file records no size: nothing to check, it works as before
    for calibration in ("older.toml", "calibration.toml"):
        result = usnav(tmp_path, *args, "--force", "--calibration", str(case / calibration))
        assert result.returncode == 0, result.stderr
        assert volume.is_file()
        volume.unlink()


def test_margins_refuses_a_calibration_made_for_another_image_size(
    case: Path, tmp_path: Path
) -> None:
    out = tmp_path / "margins.jsonl"
    result = usnav(
        tmp_path,
        "margins",
        str(case / "sweep.igs.mha"),
        "--mri",
        str(case / "mri.nii.gz"),
        "--label",
        str(case / "tumor_label.nii.gz"),
        "--calibration",
        str(case / "cal256.toml"),
        "--reference-to-mri",
        str(case / "init_ReferenceToMri.txt"),
        "--out",
        str(out),
    )
    assert_bad_input(result, "cal256.toml", *MISMATCH)
    assert not out.exists()


def test_replay_refuses_to_send_an_image_to_probe_made_for_another_size(
    case: Path, tmp_path: Path
) -> None:
    args = ("replay", str(case / "sweep.igs.mha"), "--port", "0", "--calibration")
    result = usnav(tmp_path, *args, str(case / "cal256.toml"), timeout=60)
    assert_bad_input(result, "cal256.toml", *MISMATCH)
