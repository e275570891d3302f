"""``usnav info`` / ``usnav convert`` and the library functions behind them."""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _seq_samples import frames as make_frames
from _seq_samples import oblique_itk_image

from usnav.cli.main import main
from usnav.errors import InputError
from usnav.frames import TransformStatus
from usnav.io.info import describe_file, format_description
from usnav.io.sequence import read_sequence, write_sequence


@pytest.mark.needs_data
def test_done_when_spine_phantom_json_in_a_real_process(plus_images: Path):
    path = plus_images / "SpinePhantomFreehand.igs.mha"
    done = subprocess.run(
        [sys.executable, "-m", "usnav", "info", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    info = json.loads(done.stdout)
    assert info["frames"] == 21
    assert info["image_size"] == [820, 616]
    assert set(info["transforms"]) == {"ProbeToTracker", "ReferenceToTracker", "StylusToTracker"}
    assert info["transforms"]["ProbeToTracker"] == {
        "ok": 21,
        "invalid": 0,
        "missing": 0,
        "non_finite": 0,
        "not_rigid": 0,
    }
    assert info["timestamps"] == [215.102186, 216.947186]  # first and last header values
    assert info["orientation"] == "MFA"


@pytest.mark.needs_data
def test_invalid_counts_and_dropped_frames_of_plus_files(plus_images: Path):
    info = describe_file(plus_images / "NwirePhantomFreehand.igs.mha")
    assert info["transforms"]["StylusToTracker"] == {
        "ok": 0,
        "invalid": 97,
        "missing": 0,
        "non_finite": 0,
        "not_rigid": 0,
    }
    tracker = plus_images / "WaterTankBottomTranslationTrackerBuffer.igs.mha"
    info = describe_file(tracker)
    assert info["frames"] == 5000 and info["image_size"] == [0, 0]
    # FrameNumber jumps counted independently from the header text
    numbers = [
        int(line.split(b" = ")[1])
        for line in tracker.read_bytes().split(b"\n")
        if b"_FrameNumber = " in line
    ]
    expected_missing = sum(b - a - 1 for a, b in itertools.pairwise(numbers) if b - a > 1)
    assert expected_missing > 0
    assert info["dropped"]["missing_by_frame_number"] == expected_missing
    assert "(tracker only)" in format_description(info)


def test_a_recording_of_no_frames_is_called_empty_not_tracker_only(tmp_path):
    path = write_sequence(tmp_path / "empty.igs.mha", [])
    text = format_description(describe_file(path))
    assert "frames       0; an empty recording" in text and "tracker only" not in text


def test_dropped_frames_found_where_they_were_dropped(tmp_path):
    frames = make_frames(30)
    dropped = (10, 11, 20, 21, 25)  # a lone drop (25) is a gap of exactly 2 periods: not > 2x
    kept = [f for i, f in enumerate(frames) if i not in dropped]
    info = describe_file(write_sequence(tmp_path / "rec.igs.mha", kept))
    assert info["frames"] == 25
    assert info["dropped"]["missing_by_frame_number"] == 5
    assert info["dropped"]["frame_number_gaps"] == [
        {"after_frame": 9, "missing": 2},
        {"after_frame": 17, "missing": 2},
        {"after_frame": 20, "missing": 1},
    ]
    assert [g["after_frame"] for g in info["dropped"]["timestamp_gaps"]] == [9, 17]
    assert info["frame_rate_hz"] == pytest.approx(24 / (kept[-1].t_device - kept[0].t_device))
    invalid = sum(1 for f in kept if not f.transforms["ReferenceToTracker"].ok)
    assert info["transforms"]["ReferenceToTracker"] == {
        "ok": 25 - invalid,
        "invalid": invalid,
        "missing": 0,
        "non_finite": 0,
        "not_rigid": 0,
    }
    text = format_description(info)
    assert "5 missing by FrameNumber" in text and f"{invalid} INVALID" in text


def test_volume_shape_spacing_and_ras_bounds(tmp_path):
    nib = pytest.importorskip("nibabel")
    affine = np.array([[0.8, 0, 0, -10.0], [0, 0.8, 0, 20.0], [0, 0, 2.0, 5.0], [0, 0, 0, 1]])
    data = np.zeros((10, 12, 14), np.int16)
    data[2, 3, 4] = 7
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "mri.nii.gz")
    info = describe_file(tmp_path / "mri.nii.gz")
    assert info["kind"] == "volume" and info["shape"] == [10, 12, 14]
    assert info["spacing_mm"] == [0.8, 0.8, 2.0]
    assert info["ras_bounds_mm"]["min"] == [-10.0, 20.0, 5.0]
    assert info["ras_bounds_mm"]["max"] == pytest.approx([-10 + 9 * 0.8, 20 + 11 * 0.8, 31.0])
    assert info["value_range"] == [0, 7]
    assert main(["info", str(tmp_path / "mri.nii.gz")]) == 0


@pytest.mark.needs_data
def test_plus_reconstructed_volume_is_described_as_a_volume(plus_images: Path):
    info = describe_file(plus_images / "vtkVolumeReconstructorTestNNMEANvolumeRef.mha")
    assert info["kind"] == "volume"
    assert info["shape"] == [147, 106, 105] and info["spacing_mm"] == [0.5, 0.5, 0.5]
    # Offset -74.5217 165.573 29.072 (MetaIO: LPS) → RAS flips x and y
    assert info["ras_bounds_mm"]["min"] == pytest.approx(
        [74.5217 - 146 * 0.5, -165.573 - 52.5, 29.072]
    )
    assert info["ras_bounds_mm"]["max"] == pytest.approx([74.5217, -165.573, 29.072 + 52])


@pytest.mark.parametrize("suffix", [".mha", ".mhd"])
def test_an_oblique_metaio_volume_from_itk_lands_where_itk_puts_it(tmp_path, suffix):
    """A 3D MetaIO image written by SimpleITK (oblique TransformMatrix, LPS Offset; a .mhd was
    described as a one-frame recording) is a volume whose RAS bounds are ITK's corners."""
    sitk = pytest.importorskip("SimpleITK")
    image = oblique_itk_image(sitk)
    path = tmp_path / f"vol{suffix}"
    sitk.WriteImage(image, str(path))
    info = describe_file(path)
    assert info["kind"] == "volume" and info["shape"] == [13, 11, 7]
    assert info["spacing_mm"] == pytest.approx([0.7, 1.1, 2.3])
    corners = [(i, j, k) for i in (0, 12) for j in (0, 10) for k in (0, 6)]
    ras = np.array([image.TransformIndexToPhysicalPoint(c) for c in corners]) * [-1, -1, 1]
    assert info["ras_bounds_mm"]["min"] == pytest.approx(ras.min(axis=0), abs=1e-4)
    assert info["ras_bounds_mm"]["max"] == pytest.approx(ras.max(axis=0), abs=1e-4)
    assert "LPS" in info["read_as"]


def test_convert_cli(tmp_path, capsys):
    source = write_sequence(tmp_path / "a.igs.mha", make_frames(5))
    target = tmp_path / "b.seq.nrrd"
    assert main(["convert", str(source), str(target), "--no-compress"]) == 0
    assert capsys.readouterr().out.strip() == str(target)
    with read_sequence(source) as a, read_sequence(target) as b:
        assert not b.compressed and len(b) == 5
        assert all(np.array_equal(a.image(i), b.image(i)) for i in range(5))
        assert [a.fields(i)["Depth"] for i in range(5)] == [b.fields(i)["Depth"] for i in range(5)]
    assert main(["convert", str(source), str(target)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["convert", str(source), str(target), "--force"]) == 0
    assert read_sequence(target).compressed  # as the source
    assert main(["convert", str(source), str(tmp_path / "c.avi")]) == 2
    assert "unknown sequence file type" in capsys.readouterr().err


def _with_header_field(path: Path, field: str, value: str) -> Path:
    """Rewrite one header field of a written ``.igs.mha`` (the pixels are left as they are)."""
    data = path.read_bytes()
    end = data.index(b"ElementDataFile = LOCAL\n")
    head = data[:end].decode()
    start = head.index(f"{field} = ")
    stop = head.index("\n", start)
    path.write_bytes((head[:start] + f"{field} = {value}" + head[stop:]).encode() + data[end:])
    return path


def test_a_non_finite_matrix_counts_as_invalid(tmp_path):
    frames = make_frames(9)
    for i in (2, 5):  # OK in the file, but NaN: no stage can place those frames
        frames[i].transforms["ProbeToTracker"].matrix[0, 3] = np.nan
    path = write_sequence(tmp_path / "nan.igs.mha", frames)
    _with_header_field(path, "Seq_Frame0007_ProbeToTrackerTransform", "1 0 0 inf " + "0 " * 12)
    info = describe_file(path)
    assert info["transforms"]["ProbeToTracker"] == {
        "ok": 6,
        "invalid": 3,
        "missing": 0,
        "non_finite": 3,
        "not_rigid": 0,
    }
    assert "ProbeToTracker      6 OK, 3 INVALID (3 non-finite)" in format_description(info)


def test_a_tracker_pose_that_is_not_rigid_is_invalid(tmp_path):
    """A pose stored OK with a scaled or zeroed rotation is no pose: INVALID for every stage
    (the sequence reader), counted by ``usnav info``; ImageToX may carry mm per pixel."""
    frames = make_frames(8)
    frames[2].transforms["ProbeToTracker"].matrix[:3, :3] *= 1.5
    frames[4].transforms["ProbeToTracker"].matrix[:3, :3] = 0.0
    for f in frames:  # a scaled image transform is fine
        f.transforms["ImageToProbe"] = dataclasses.replace(
            f.transforms["ProbeToTracker"], matrix=np.diag([0.2, 0.2, 1.0, 1.0])
        )
    path = write_sequence(tmp_path / "scaled.igs.mha", frames)
    seq = read_sequence(path)
    _, statuses = seq.transforms("ProbeToTracker")
    assert [i for i, s in enumerate(statuses) if s is TransformStatus.INVALID] == [2, 4]
    assert all(s is TransformStatus.OK for s in seq.transforms("ImageToProbe")[1])
    info = describe_file(path)
    assert info["transforms"]["ProbeToTracker"]["not_rigid"] == 2
    assert info["transforms"]["ProbeToTracker"]["ok"] == 6
    assert "2 stored OK but not rigid" in format_description(info)


def test_a_zero_in_the_size_line_does_not_hide_the_pixels(tmp_path):
    """``DimSize = 32 0 9`` read as a tracker-only file: ``usnav info`` said "no images" and
    ``usnav convert`` dropped every image (session-30 audit). A tracker-only file still reads
    (PLUS writes one byte per frame after its header)."""
    frames = make_frames(9)
    path = write_sequence(tmp_path / "zero.igs.mha", frames)
    _with_header_field(path, "DimSize", "32 0 9")
    with pytest.raises(InputError, match="declares no pixels"):
        read_sequence(path)
    tracker_only = [dataclasses.replace(f, image=np.zeros((0, 0), np.uint8)) for f in frames]
    written = write_sequence(tmp_path / "tracker.igs.mha", tracker_only)
    with written.open("ab") as f:
        f.write(b"\0" * 9)  # PLUS's byte per frame
    assert len(read_sequence(written)) == 9


def test_timestamps_that_go_backwards_are_not_gaps(tmp_path):
    frames = make_frames(20)
    frames[10] = dataclasses.replace(frames[10], t_device=frames[3].t_device)  # one step back
    info = describe_file(write_sequence(tmp_path / "back.igs.mha", frames))
    dropped = info["dropped"]
    assert dropped["timestamp_gap_count"] == 0 and dropped["timestamp_gaps"] == []
    assert dropped["backward_step_count"] == 1
    step = frames[3].t_device - frames[9].t_device
    assert dropped["worst_backward_step"] == {
        "after_frame": 9,
        "step_s": pytest.approx(step, abs=1e-5),
    }
    text = format_description(info)
    assert f"1 step(s) backwards (worst {step:.3f} s after frame 9)" in text
    assert "dropped      none found" in text
    # a clock that is reset and runs on from there: one step back, no gap
    reset = [
        dataclasses.replace(f, t_device=f.t_device - (5.0 if i >= 12 else 0.0))
        for i, f in enumerate(make_frames(20))
    ]
    info = describe_file(write_sequence(tmp_path / "reset.igs.mha", reset))
    dropped = info["dropped"]
    assert dropped["backward_step_count"] == 1 and dropped["timestamp_gap_count"] == 0
    assert dropped["worst_backward_step"]["after_frame"] == 11
    # the rate is not (frames - 1) / (last - first), which the reset makes meaningless
    period = reset[1].t_device - reset[0].t_device
    assert info["frame_rate_hz"] == pytest.approx(1 / period, rel=1e-3)
    assert "from the median period" in format_description(info)


def test_a_sender_that_stamps_nothing_is_reported(tmp_path):
    """The OpenIGTLink reference ImagerServer sends timestamp 0: the recording's 'time span
    0.000 .. 0.000 s' came with no problem listed."""
    frames = [dataclasses.replace(f, t_device=0.0) for f in make_frames(6)]
    info = describe_file(write_sequence(tmp_path / "zero.igs.mha", frames))
    assert any("all 6 frames have the same timestamp (0 s)" in p for p in info["problems"])
    assert "cannot be paced" in format_description(info)
    # an ordinary clock lists nothing
    assert describe_file(write_sequence(tmp_path / "ok.igs.mha", make_frames(6)))["problems"] == []


def test_missing_and_nan_timestamps_are_reported(tmp_path):
    frames = make_frames(12)
    frames[4] = dataclasses.replace(frames[4], t_device=float("nan"))  # written without one
    path = write_sequence(tmp_path / "stamps.igs.mha", frames)
    _with_header_field(path, "Seq_Frame0007_Timestamp", "nan")
    info = describe_file(path)
    assert info["timestamps_missing"] == 2 and info["timestamps_missing_frames"] == [4, 7]
    text = format_description(info)
    assert "2 without a usable one (missing, NaN or infinite): frame(s) 4, 7" in text
    assert main(["info", str(path)]) == 0


def test_a_pipe_or_a_looping_link_is_refused_in_one_line(tmp_path) -> None:
    """A FIFO blocked ``usnav info`` forever; a symlink loop read as "no such file"."""
    import os

    from usnav.errors import InputError
    from usnav.io.volume import load_volume

    fifo = tmp_path / "f.igs.mha"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.nii.gz"
    loop.symlink_to(loop.name)
    for reader in (describe_file, read_sequence, load_volume):
        with pytest.raises(InputError, match="not a regular file"):
            reader(fifo)
        with pytest.raises(InputError, match="broken or looping symbolic link"):
            reader(loop)


def test_a_big_endian_recording_names_its_pixel_type(tmp_path):
    """A file stored big-endian (BinaryDataByteOrderMSB = True) holds uint16 pixels like any
    other: the JSON said "pixel_type": ">u2", which a script comparing to "uint16" missed."""
    path = write_sequence(tmp_path / "le.igs.mha", make_frames(2, (6, 5), "uint16"), compress=False)
    data = path.read_bytes()
    header, pixels = data[: -2 * 6 * 5 * 2], data[-2 * 6 * 5 * 2 :]
    assert b"BinaryDataByteOrderMSB = False" in header
    swapped = np.frombuffer(pixels, "<u2").astype(">u2").tobytes()
    be = tmp_path / "be.igs.mha"
    be.write_bytes(header.replace(b"ByteOrderMSB = False", b"ByteOrderMSB = True") + swapped)
    info = describe_file(be)
    assert info["pixel_type"] == "uint16" and info["big_endian"] is True
    assert "uint16 (big-endian in the file)" in format_description(info)
    plain = describe_file(path)
    assert plain["pixel_type"] == "uint16" and plain["big_endian"] is False
    assert "big-endian" not in format_description(plain)
