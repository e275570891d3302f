"""Session 42's audit: a developer replaying and evaluating recorded sweeps gives each argument
the wrong kind of file. Each test fails without its fix."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_bad_input, usnav

from usnav.config.calibration import load_calibration
from usnav.errors import InputError
from usnav.io.sequence import read_sequence
from usnav.registration.files import read_initial
from usnav.registration.sweep import check_tracked_recording

IDENTITY = np.eye(4).tolist()


def _truth_json(path: Path) -> Path:
    """A simulator truth.json as far as an init reader sees it: the answer and the start."""
    doc = {"generator": "usnav simulate", "ReferenceToMri": IDENTITY}
    doc["init_ReferenceToMri"] = IDENTITY
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_a_simulator_truth_given_as_the_initial_transform_is_refused(tmp_path: Path) -> None:
    """It was read as a RESULT.json: the registration started at the answer and looked
    perfect. A true ReferenceToMri is still read where one is asked for (margins, scoring)."""
    truth = _truth_json(tmp_path / "truth.json")
    with pytest.raises(InputError, match="is a simulator truth.json.*init_ReferenceToMri.txt"):
        read_initial(truth)
    np.testing.assert_array_equal(
        read_initial(truth, "true ReferenceToMri", truth_ok=True), IDENTITY
    )


def test_a_binary_file_given_as_the_initial_transform_says_what_to_give(tmp_path: Path) -> None:
    """It said only "'utf-8' codec can't decode byte 0x8b in position 1"."""
    volume = tmp_path / "mri.nii.gz"
    volume.write_bytes(gzip.compress(b"\x00" * 400))
    with pytest.raises(InputError, match="not a text file.*16 numbers") as info:
        read_initial(volume)
    assert "codec" not in str(info.value)


def test_a_json_or_toml_file_given_for_16_numbers_is_named_as_such(tmp_path: Path) -> None:
    """A RESULT.json as --calibration said "expected 16 numbers ..., found 233", a calibration
    .toml as --init "found 47": the words of the file counted as numbers."""
    result = tmp_path / "RESULT.json"
    result.write_text(json.dumps({"ReferenceToMri": IDENTITY, "accepted": True}), "utf-8")
    with pytest.raises(InputError, match="is a JSON document.*a usnav .toml") as info:
        load_calibration(result)
    assert "found" not in str(info.value)
    cal = tmp_path / "calibration.toml"
    cal.write_text('format = 1\nprobe = "L10"\n[spatial]\nImageToProbe = [1, 0]\n', "utf-8")
    with pytest.raises(InputError, match="is a TOML file"):
        read_initial(cal)
    twelve = tmp_path / "twelve.txt"  # a specific hint is kept
    twelve.write_text("1 0 0 0 0 1 0 0 0 0 1 0\n", "utf-8")
    with pytest.raises(InputError, match="add the row 0 0 0 1"):
        load_calibration(twelve)


def _volume_mha(path: Path) -> Path:
    """One 3D MetaIO image, as PLUS and usnav reconstruct write a volume."""
    header = (
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
        "CompressedData = False\nElementSpacing = 0.5 0.5 0.5\nDimSize = 6 5 4\n"
        "ElementType = MET_UCHAR\nElementDataFile = LOCAL\n"
    )
    path.write_bytes(header.encode() + bytes(6 * 5 * 4))
    return path


def test_a_volume_given_as_the_recording_is_named_a_volume(tmp_path: Path) -> None:
    """A reconstructed volume as register's RECORDING was refused as a calibration made for
    "147 × 106 px images": the wrong file named as the culprit."""
    volume = _volume_mha(tmp_path / "volume.mha")
    cal = tmp_path / "cal.txt"
    cal.write_text("0.1 0 0 0  0 0.1 0 0  0 0 0.1 0  0 0 0 1\n", "utf-8")
    calibration = load_calibration(cal)
    with read_sequence(volume) as seq, pytest.raises(InputError, match="is a volume .*recording"):
        check_tracked_recording(seq, calibration)


def test_info_on_an_unknown_file_lists_the_calibration_it_also_reads(tmp_path: Path) -> None:
    tag = tmp_path / "landmarks.tag"
    tag.write_text("MNI Tag Point File\n", "utf-8")
    assert_bad_input(
        usnav(tmp_path, "info", str(tag)), "landmarks.tag", "calibration (.toml", "PLUS .xml"
    )


def test_a_device_file_given_as_the_calibration_is_named_as_one(tmp_path: Path) -> None:
    """It said "key 'probe': expected a string in quotes, got a table; unknown key
    'description'": the faults of a calibration, of a file that is none."""
    device = tmp_path / "plus-server.toml"
    device.write_text('description = "probe"\n[probe]\nhost = "127.0.0.1"\n', "utf-8")
    with pytest.raises(InputError, match=r"is a device file \(its \[probe\]\)") as info:
        load_calibration(device)
    assert "expected a string" not in str(info.value)
    other = tmp_path / "other.toml"  # a TOML of no usnav kind: its tables are named
    other.write_text("[foo]\nx = 1\n", "utf-8")
    with pytest.raises(InputError, match=r"is not a probe calibration.*tables: \[foo\]"):
        load_calibration(other)
    broken = tmp_path / "cal.toml"  # a calibration's own faults are still its own
    broken.write_text("format = 1\n[spatial]\nbogus = 1\n", "utf-8")
    with pytest.raises(InputError, match="unknown key 'spatial.bogus'"):
        load_calibration(broken)


def test_a_nifti_where_a_recording_belongs_is_named_a_volume(tmp_path: Path) -> None:
    """An MRI given as the recording, or a .nii.gz as convert's TARGET, said only "unknown
    sequence file type"."""
    source = tmp_path / "sweep.igs.mha"
    source.write_bytes(b"")
    result = usnav(tmp_path, "convert", str(source), str(tmp_path / "sweep.nii.gz"))
    assert_bad_input(result, "sweep.nii.gz", "NIfTI volume", "usnav reconstruct")


def test_convert_onto_its_own_source_is_not_told_to_use_force(tmp_path: Path) -> None:
    """``convert A A`` said "already exists — pass --force", which is then refused too."""
    source = tmp_path / "sweep.igs.mha"
    source.write_bytes(b"ObjectType = Image\n")
    line = assert_bad_input(usnav(tmp_path, "convert", str(source), str(source)), "sweep.igs.mha")
    assert "--force" not in line and "input" in line


def test_a_dataset_folder_given_as_the_manifest_names_its_manifest(tmp_path: Path) -> None:
    """It said "cannot read the manifest ([Errno 21] Is a directory: 'ds')"."""
    from usnav.io.manifest import read_manifest

    (tmp_path / "manifest.csv").write_text("case,recording,mri,calibration,init\n", "utf-8")
    with pytest.raises(InputError, match="is a folder, not a manifest.*manifest.csv") as info:
        read_manifest(tmp_path)
    assert "Errno" not in str(info.value)


def test_a_manifest_saved_with_semicolons_says_so(tmp_path: Path) -> None:
    """A spreadsheet's export where ";" is the list separator was told its columns case,
    recording, mri... were missing, though its header named every one."""
    from usnav.io.manifest import read_manifest

    manifest = tmp_path / "manifest.csv"
    manifest.write_text("case;recording;mri;calibration;init\na;r;m;c;i\n", "utf-8")
    with pytest.raises(InputError, match="separated by semicolons.*comma-separated"):
        read_manifest(manifest)
