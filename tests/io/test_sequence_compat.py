"""Files other tools write the way they write them: 3D Slicer volume sequences and exports,
single-frame PLUS files, odd per-frame values; and what our files must say for PLUS to read
them right (little-endian pixels, INVALID non-finite transforms, kept direction cosines).

Each file is written here byte by byte as the other tool writes it (IGSIO's
vtkIGSIOMetaImageSequenceIO / vtkIGSIONrrdSequenceIO rules, Slicer's
vtkMRMLVolumeSequenceStorageNode and vtkMRMLLinearTransformSequenceStorageNode).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from usnav.cli.main import main
from usnav.errors import InputError
from usnav.frames import TransformStatus
from usnav.io.sequence import SequenceWriter, convert_sequence, read_sequence

N, COLS, ROWS = 4, 6, 5
IDENTITY = "1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1"


def slicer_frames() -> list[np.ndarray]:
    return [
        ((np.arange(ROWS * COLS).reshape(ROWS, COLS) + 37 * f) % 251).astype("u1") for f in range(N)
    ]


def slicer_volume_sequence(path: Path, *, list_first: bool, gz: bool = True) -> list[np.ndarray]:
    """A 3D Slicer volume sequence of N 6x5x1 frames (as Slicer stores a 2D image sequence).

    ``list_first``: the frame axis first (fastest in memory, ``axis 0 index values``), as
    vtkMRMLVolumeSequenceStorageNode wrote through vtkTeemNRRDWriter; otherwise last
    (``axis 3 index values``), as the ITK sequence writer does.
    """
    frames = slicer_frames()
    stack = np.stack(frames)  # (N, rows, cols)
    if list_first:
        data = np.ascontiguousarray(stack.transpose(1, 2, 0))  # frame index fastest
        sizes, kinds, axis = f"{N} {COLS} {ROWS} 1", "list domain domain domain", 0
        directions = "none (-0.2,0,0) (0,-0.2,0) (0,0,1)"
    else:
        data = np.ascontiguousarray(stack)
        sizes, kinds, axis = f"{COLS} {ROWS} 1 {N}", "domain domain domain list", 3
        directions = "(-0.2,0,0) (0,-0.2,0) (0,0,1) none"
    header = (
        "NRRD0004\n"
        "# Complete NRRD file format specification at:\n"
        "# http://teem.sourceforge.net/nrrd/format.html\n"
        "type: unsigned char\n"
        "dimension: 4\n"
        "space: left-posterior-superior\n"
        f"sizes: {sizes}\n"
        f"space directions: {directions}\n"
        f"kinds: {kinds}\n"
        "endian: little\n"
        f"encoding: {'gzip' if gz else 'raw'}\n"
        "space origin: (0,0,0)\n"
        "DataNodeClassName:=vtkMRMLScalarVolumeNode\n"
        f"axis {axis} index type:=numeric\n"
        f"axis {axis} index values:=100 100.1 100.2 100.3\n"
        "\n"
    )
    payload = gzip.compress(data.tobytes()) if gz else data.tobytes()
    path.write_bytes(header.encode() + payload)
    return frames


def metaio(path: Path, fields: list[str], frames: list[list[str]], pixels: bytes) -> Path:
    """A MetaIO sequence with these sequence-level lines and per-frame ``Field = value`` lines."""
    lines = ["ObjectType = Image", *fields]
    for i, frame in enumerate(frames):
        lines += [f"Seq_Frame{i:04d}_{line}" for line in frame]
    lines.append("ElementDataFile = LOCAL")
    path.write_bytes(("\n".join(lines) + "\n").encode() + pixels)
    return path


def plain_fields(dims: str, kinds: str, ndims: int = 3, extra: tuple[str, ...] = ()) -> list[str]:
    return [
        f"NDims = {ndims}",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        "CompressedData = False",
        f"DimSize = {dims}",
        f"Kinds = {kinds}",
        "ElementType = MET_UCHAR",
        "UltrasoundImageOrientation = MFA",
        *extra,
    ]


def pixels(n: int) -> bytes:
    return np.concatenate([f.ravel() for f in slicer_frames()[:n]]).tobytes()


def header_text(path: Path) -> str:
    data = path.read_bytes()
    end = data.index(b"ElementDataFile") if path.suffix == ".mha" else data.index(b"\n\n")
    return data[:end].decode()


# ---------------------------------------------------------------- 3D Slicer volume sequences


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_slicer_volume_sequence_with_the_frame_axis_first_reads_its_frames(tmp_path, gz):
    """The frame axis first is the fastest in memory: the frames are interleaved pixel by
    pixel. They were read as consecutive runs of bytes (scrambled pixels, exit 0)."""
    path = tmp_path / "volseq.seq.nrrd"
    frames = slicer_volume_sequence(path, list_first=True, gz=gz)
    with read_sequence(path) as seq:
        assert len(seq) == N and seq.frame_shape == (ROWS, COLS)
        for i in range(N):
            assert np.array_equal(seq.image(i), frames[i])
        assert seq.image(2).flags.c_contiguous
        # Slicer's frame times: 'axis 0 index values' (were NaN: replay refused the file)
        assert np.allclose(seq.timestamps, [100, 100.1, 100.2, 100.3])
        # LPS directions keep their sign (spacing is the length)
        assert seq.spacing == pytest.approx((0.2, 0.2))
        assert np.array_equal(seq.directions, [[-1, 0], [0, -1]])
    out = convert_sequence(path, tmp_path / "volseq.igs.mha")
    assert "TransformMatrix = -1 0 0 0 -1 0 0 0 1" in header_text(out)
    with read_sequence(out) as seq:
        assert [np.array_equal(seq.image(i), frames[i]) for i in range(N)] == [True] * N
        assert np.allclose(seq.timestamps, [100, 100.1, 100.2, 100.3])
    back = convert_sequence(out, tmp_path / "volseq2.seq.nrrd")
    assert "space directions: (-0.2,0) (0,-0.2) none" in header_text(back)


def test_slicer_volume_sequence_with_the_frame_axis_last_takes_axis_3_index_values(tmp_path):
    path = tmp_path / "volseq.seq.nrrd"
    frames = slicer_volume_sequence(path, list_first=False)
    with read_sequence(path) as seq:
        assert np.array_equal(seq.image(3), frames[3])
        assert np.allclose(seq.timestamps, [100, 100.1, 100.2, 100.3])


def test_interleaved_frames_cut_short_are_refused_in_one_line(tmp_path):
    path = tmp_path / "volseq.seq.nrrd"
    slicer_volume_sequence(path, list_first=True, gz=False)
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(InputError, match="frames are interleaved"):
        read_sequence(path, tolerant=True)


# ---------------------------------------------------------------- what PLUS must read right


def test_non_finite_transform_is_converted_invalid(tmp_path):
    """PLUS trusts the status word: a NaN matrix marked OK was a valid pose there."""
    per = [[f"ProbeToTrackerTransform = {IDENTITY}", f"Timestamp = {i}"] for i in range(3)]
    per[1][0] = "ProbeToTrackerTransform = nan 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1"
    per[2][0] = "ProbeToTrackerTransform = 1 0 0 inf 0 1 0 0 0 0 1 0 0 0 0 1"
    for frame in per:
        frame.append("ProbeToTrackerTransformStatus = OK")
    src = metaio(
        tmp_path / "nan.igs.mha", plain_fields("6 5 3", "domain domain list"), per, pixels(3)
    )
    out = convert_sequence(src, tmp_path / "out.igs.mha")
    text = header_text(out)
    assert "Seq_Frame0000_ProbeToTrackerTransformStatus = OK" in text
    assert "Seq_Frame0001_ProbeToTrackerTransformStatus = INVALID" in text
    assert "Seq_Frame0002_ProbeToTrackerTransformStatus = INVALID" in text


def test_a_missing_transform_status_is_not_invented_by_convert(tmp_path):
    """usnav reads a transform without a status field as OK, PLUS as invalid: the converted
    file has no status field either, so both read it as they read the source."""
    per = [[f"ProbeToTrackerTransform = {IDENTITY}", f"Timestamp = {i}"] for i in range(3)]
    per[1].append("ProbeToTrackerTransformStatus = INVALID")
    src = metaio(
        tmp_path / "nostatus.igs.mha", plain_fields("6 5 3", "domain domain list"), per, pixels(3)
    )
    for target in ("out.igs.mha", "out.seq.nrrd"):
        out = convert_sequence(src, tmp_path / target)
        text = header_text(out)
        assert "Seq_Frame0000_ProbeToTrackerTransformStatus" not in text
        assert "Seq_Frame0001_ProbeToTrackerTransformStatus" in text
        assert "Seq_Frame0002_ProbeToTrackerTransformStatus" not in text
        with read_sequence(out) as seq:
            assert seq.transforms("ProbeToTracker")[1] == [
                TransformStatus.OK,
                TransformStatus.INVALID,
                TransformStatus.OK,
            ]


def test_transform_matrix_direction_cosines_survive_conversion(tmp_path):
    """IGSIO keeps a TransformMatrix of the right size; convert wrote identity."""
    fields = plain_fields(
        "6 5 3 2",
        "domain domain domain list",
        ndims=4,
        extra=(
            "ElementSpacing = 0.5 0.5 0.7 1",
            "Offset = 10 20 30 0",
            "TransformMatrix = 0 1 0 0 -1 0 0 0 0 0 1 0 0 0 0 1",
        ),
    )
    per = [[f"Timestamp = {i}"] for i in range(2)]
    volume = np.arange(2 * 3 * ROWS * COLS, dtype=np.uint8).tobytes()
    src = metaio(tmp_path / "vol.igs.mha", fields, per, volume)
    with read_sequence(src) as seq:
        assert np.array_equal(seq.directions, [[0, 1, 0], [-1, 0, 0], [0, 0, 1]])
    out = convert_sequence(src, tmp_path / "vol.seq.nrrd")
    assert "space directions: (0,0.5,0) (-0.5,0,0) (0,0,0.7) none" in header_text(out)
    back = convert_sequence(out, tmp_path / "back.igs.mha")
    assert "TransformMatrix = 0 1 0 0 -1 0 0 0 0 0 1 0 0 0 0 1" in header_text(back)
    again = convert_sequence(src, tmp_path / "again.igs.mha")
    assert "TransformMatrix = 0 1 0 0 -1 0 0 0 0 0 1 0 0 0 0 1" in header_text(again)


# ---------------------------------------------------------------- odd values, odd layouts


@pytest.mark.parametrize("text", ["1.5", "99999999999999999999999", "seven"])
def test_a_frame_number_that_is_not_an_int64_is_kept_as_text(tmp_path, text):
    """1.5 was written back as 1; 1e23 as -9223372036854775808 with a numpy warning (an
    error under -W error)."""
    per = [[f"FrameNumber = {100 + i}", f"Timestamp = {i}"] for i in range(3)]
    per[1][0] = f"FrameNumber = {text}"
    src = metaio(
        tmp_path / "fn.igs.mha", plain_fields("6 5 3", "domain domain list"), per, pixels(3)
    )
    with read_sequence(src) as seq:
        assert seq.frame_numbers.tolist() == [100, 1, 102]  # numbered as if absent
        assert seq.frame(1).fields["FrameNumberText"] == text
        assert any("FrameNumber" in p for p in seq.problems)
    out = convert_sequence(src, tmp_path / "out.igs.mha")
    head = header_text(out)
    assert "Seq_Frame0001_FrameNumber = 1\n" in head
    assert f"Seq_Frame0001_FrameNumberText = {text}\n" in head


def test_single_frame_plus_file_with_ndims_3_and_two_sizes(tmp_path):
    """IGSIO reads one size per Kinds entry; NDims = 3 with DimSize = 6 5 is one frame."""
    fields = plain_fields("6 5", "domain domain")
    per = [
        [
            f"ProbeToTrackerTransform = {IDENTITY}",
            "ProbeToTrackerTransformStatus = OK",
            "Timestamp = 7",
        ]
    ]
    src = metaio(tmp_path / "one.igs.mha", fields, per, pixels(1))
    with read_sequence(src) as seq:
        assert len(seq) == 1 and seq.frame_shape == (ROWS, COLS)
        assert np.array_equal(seq.image(0), slicer_frames()[0])
        assert seq.timestamps.tolist() == [7.0]
    # a DimSize that does not fit its Kinds is still refused
    bad = metaio(
        tmp_path / "bad.igs.mha", plain_fields("6 5", "domain domain list"), per, pixels(1)
    )
    with pytest.raises(InputError, match="DimSize has 2 numbers"):
        read_sequence(bad)


def test_slicer_export_with_brightnessbrightness_converts_as_xx(tmp_path, capsys):
    """Slicer's writer prints 'BRIGHTNESS' before the type; PLUS reads an unknown type as XX
    and IGSIO writes XX back. convert failed with an error that did not name the file."""
    fields = [
        "NDims = 3",
        "BinaryData = True",
        "CompressedData = False",
        "ElementSpacing = 0.2 0.2 1",
        "DimSize = 6 5 3",
        "ElementType = MET_UCHAR",
        "UltrasoundImageOrientation = ??",
        "UltrasoundImageType = BRIGHTNESSBRIGHTNESS",
    ]
    per = [
        [
            f"ProbeToTrackerTransform ={IDENTITY}",
            "ProbeToTrackerTransformStatus = OK",
            f"Timestamp = {i}",
        ]
        for i in range(3)
    ]
    src = metaio(tmp_path / "export.seq.mha", fields, per, pixels(3))
    with read_sequence(src) as seq:
        assert seq.image_type == "XX"
        assert any("BRIGHTNESSBRIGHTNESS" in p for p in seq.problems)
    target = tmp_path / "out.igs.mha"
    assert main(["convert", str(src), str(target)]) == 0
    assert "UltrasoundImageType = XX\n" in header_text(target)
    with read_sequence(target) as seq:
        assert seq.image_type == "XX" and not seq.problems
        assert np.array_equal(seq.image(2), slicer_frames()[2])
    with pytest.raises(InputError) as caught:
        SequenceWriter(tmp_path / "typed.igs.mha", image_type="DOPPLER")
    assert str(tmp_path / "typed.igs.mha") in str(caught.value)


@pytest.mark.parametrize("field", ["byte skip: 7", "line skip: 1", "byteskip: 2"])
def test_nrrd_byte_and_line_skip_are_refused_by_name(tmp_path, field):
    header = (
        "NRRD0004\n"
        "dimension: 3\nencoding: raw\nendian: little\nkinds: domain domain list\n"
        "sizes: 6 5 2\ntype: unsigned char\n"
        f"{field}\n"
        "Seq_Frame0000_Timestamp:=0\nSeq_Frame0001_Timestamp:=1\n\n"
    )
    path = tmp_path / "skip.seq.nrrd"
    path.write_bytes(header.encode() + bytes(7) + pixels(2))
    name = field.split(":")[0]
    with pytest.raises(InputError, match=f"'{name}: .*' is not supported") as caught:
        read_sequence(path)
    assert "DimSize" not in str(caught.value)


def test_components_axis_after_the_pixel_axes_is_read_in_place(tmp_path):
    """``kinds: domain domain vector`` keeps each component plane whole: the pixels of one
    component are consecutive, not interleaved per pixel as PLUS writes RGB."""
    rgb = np.arange(ROWS * COLS * 3, dtype=np.uint8).reshape(ROWS, COLS, 3)
    header = (
        "NRRD0004\ndimension: 3\nencoding: raw\nendian: little\n"
        f"kinds: domain domain vector\nsizes: {COLS} {ROWS} 3\ntype: unsigned char\n\n"
    )
    path = tmp_path / "planes.seq.nrrd"
    path.write_bytes(header.encode() + np.ascontiguousarray(rgb.transpose(2, 0, 1)).tobytes())
    with read_sequence(path) as seq:
        assert len(seq) == 1 and seq.frame_shape == (ROWS, COLS, 3)
        assert np.array_equal(seq.image(0), rgb)
