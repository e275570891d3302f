"""Round trips (PLUS file → .seq.nrrd → .igs.mha) and the written format, to the letter.

The PLUS recordings with more than 40 frames are round-tripped on 40 evenly spaced frames
(first and last included) to keep the suite fast; the 5000-frame tracker buffer (no pixels)
goes through whole.
"""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
from _seq_samples import frames as make_frames
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usnav.errors import InputError
from usnav.frames import TrackedFrame, TrackedTransform, TransformStatus
from usnav.io.sequence import Sequence, convert_sequence, read_sequence, write_sequence

PLUS_FILES = [
    "NwirePhantomFreehand.igs.mha",
    "SpinePhantomFreehand.igs.mha",
    "WaterTankBottomTranslationTrackerBuffer.igs.mha",
    "WaterTankBottomTranslationVideoBuffer.igs.mha",
    "fCal_Test_Calibration_3NWires.igs.mha",
    "fCal_Test_Validation_3NWires.igs.mha",
    "vtkVolumeReconstructorTestNNMEANvolumeRef.mha",
]
SUBSET = 40


def assert_same_frames(original: Sequence, indices: list[int], copy: Sequence) -> None:
    """Pixels, transforms, statuses, timestamps, image status and every field identical."""
    assert len(copy) == len(indices)
    assert copy.image_size == original.image_size
    assert sorted(copy.transform_names) == sorted(original.transform_names)
    for name in original.transform_names:
        m0, s0 = original.transforms(name)
        m1, s1 = copy.transforms(name)
        assert np.array_equal(m1, m0[indices])
        assert s1 == [s0[i] for i in indices]
    assert np.array_equal(copy.timestamps, original.timestamps[indices], equal_nan=True)
    assert np.array_equal(copy.image_ok, original.image_ok[indices])
    assert np.array_equal(copy.frame_numbers, original.frame_numbers[indices])
    for j, i in enumerate(indices):
        assert np.array_equal(copy.image(j), original.image(i))
        a, b = original.frame(i), copy.frame(j)
        assert a.fields == b.fields  # UnfilteredTimestamp and custom fields, as text
        assert a.orientation == b.orientation


@pytest.mark.needs_data
@pytest.mark.parametrize("name", PLUS_FILES)
def test_plus_file_to_nrrd_to_mha_keeps_everything(name, plus_images: Path, tmp_path: Path):
    source = plus_images / name
    with read_sequence(source) as original:
        n = len(original)
        indices = (
            list(range(n))
            if n <= SUBSET or original.image_size == (0, 0)
            else sorted({round(k) for k in np.linspace(0, n - 1, SUBSET)})
        )
        nrrd = write_sequence(tmp_path / "copy.seq.nrrd", (original.frame(i) for i in indices))
        with read_sequence(nrrd) as copy:
            assert_same_frames(original, indices, copy)
        mha = convert_sequence(nrrd, tmp_path / "copy.igs.mha")
        with read_sequence(mha) as copy:
            assert_same_frames(original, indices, copy)
            assert copy.compressed == (original.image_size != (0, 0))


@pytest.mark.parametrize("suffix", [".igs.mha", ".seq.nrrd"])
@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize(
    ("shape", "dtype"), [((24, 32), "uint8"), ((20, 28), "uint16"), ((16, 12, 3), "uint8")]
)
def test_synthetic_round_trip(tmp_path, suffix, compress, shape, dtype):
    frames = make_frames(7, shape, dtype)
    frames[4].image_ok = False  # written blank, status INVALID (PLUS does the same)
    frames[5].transforms["StylusToTracker"] = TrackedTransform(np.eye(4), TransformStatus.MISSING)
    frames[6].fields["ProbeToTrackerTransformStatus"] = "OUT_OF_VIEW"
    frames[6].transforms["ProbeToTracker"] = TrackedTransform(np.eye(4), TransformStatus.INVALID)
    path = write_sequence(tmp_path / f"rec{suffix}", frames, compress=compress)
    with read_sequence(path) as seq:
        assert len(seq) == 7 and seq.compressed == compress
        assert seq.frame_shape == shape and seq.dtype == np.dtype(dtype)
        assert seq.channels == (shape[2] if len(shape) == 3 else 1)
        assert seq.orientation == "MFA"  # MF is written as PLUS prints it
        for i, original in enumerate(frames):
            got = seq.frame(i)
            expected_image = original.image if original.image_ok else np.zeros_like(original.image)
            assert np.array_equal(got.image, expected_image)
            assert got.image_ok == original.image_ok
            assert got.t_device == original.t_device  # shortest repr: exact
            assert got.frame_number == original.frame_number
            assert got.fields == original.fields
            assert got.transforms.keys() == original.transforms.keys()
            for name, t in original.transforms.items():
                assert np.array_equal(got.transforms[name].matrix, t.matrix)
                assert got.transforms[name].status is t.status
        assert seq.fields(6)["ProbeToTrackerTransformStatus"] == "OUT_OF_VIEW"


def test_tracker_only_and_frames_before_the_first_image(tmp_path):
    frames = make_frames(5)
    for f in frames:
        f.image = np.zeros((0, 0), np.uint8)
    path = write_sequence(tmp_path / "tracker.igs.mha", frames)
    text = path.read_bytes().decode()
    assert re.search(r"^DimSize = 0 0 +5$", text, re.M)
    assert "CompressedData = False" in text
    with read_sequence(path) as seq:
        assert len(seq) == 5 and seq.image_size == (0, 0) and not seq.image_ok.any()
        assert np.array_equal(
            seq.transforms("ProbeToTracker")[0][3], frames[3].transforms["ProbeToTracker"].matrix
        )
    late = make_frames(4)
    late[0].image = late[1].image = np.zeros((0, 0), np.uint8)
    with read_sequence(write_sequence(tmp_path / "late.seq.nrrd", late)) as seq:
        assert seq.image_size == (32, 24)
        assert list(seq.image_ok) == [False, False, True, True]
        assert not seq.image(0).any() and np.array_equal(seq.image(3), late[3].image)


def test_volume_frames_round_trip(tmp_path):
    volume = np.arange(5 * 6 * 7, dtype=np.uint16).reshape(5, 6, 7)
    frame = TrackedFrame(volume, t_device=1.5, orientation="MFA")
    path = write_sequence(tmp_path / "vol.igs.mha", [frame, frame], spacing=(0.5, 0.5, 2.0))
    with read_sequence(path) as seq:
        assert seq.frame_shape == (5, 6, 7) and seq.image_size == (7, 6)
        assert seq.spacing == (0.5, 0.5, 2.0)
        assert np.array_equal(seq.image(1), volume)


def metaio_header_lines(path: Path) -> list[str]:
    data = path.read_bytes()
    end = data.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")
    return data[:end].decode().splitlines()


def test_metaio_written_as_plus_writes_it(tmp_path):
    frames = make_frames(12)
    path = write_sequence(tmp_path / "rec.igs.mha", frames)
    lines = metaio_header_lines(path)
    assert lines[0] == "ObjectType = Image"
    assert lines[1] == "NDims = 3"
    assert lines[-1] == "ElementDataFile = LOCAL"
    keys = [line.split(" = ")[0] for line in lines[2:-1] if not line.startswith("Seq_Frame")]
    assert keys == sorted(keys)  # the other fields in std::map order
    assert keys == [
        "AnatomicalOrientation",
        "BinaryData",
        "BinaryDataByteOrderMSB",
        "CenterOfRotation",
        "CompressedData",
        "CompressedDataSize",
        "DimSize",
        "ElementNumberOfChannels",
        "ElementSpacing",
        "ElementType",
        "Kinds",
        "Offset",
        "TransformMatrix",
        "UltrasoundImageOrientation",
        "UltrasoundImageType",
    ]
    by_key = {line.split(" = ")[0]: line for line in lines}
    for key in ("DimSize", "Kinds", "CompressedDataSize"):
        assert len(by_key[key]) == 40, by_key[key]  # padded so PLUS can rewrite in place
    assert by_key["DimSize"].split() == ["DimSize", "=", "32", "24", "12"]
    assert by_key["Kinds"].split() == ["Kinds", "=", "domain", "domain", "list"]
    assert by_key["UltrasoundImageOrientation"] == "UltrasoundImageOrientation = MFA"
    assert by_key["ElementType"] == "ElementType = MET_UCHAR"
    frame_lines = [line for line in lines if line.startswith("Seq_Frame0003_")]
    names = [line.split(" = ")[0][len("Seq_Frame0003_") :] for line in frame_lines]
    assert names[-1] == "ImageStatus" and names[:-1] == sorted(names[:-1])
    assert "Seq_Frame0011_Timestamp = " + repr(frames[11].t_device) in lines
    # one zlib stream of exactly CompressedDataSize bytes across all frames
    payload = path.read_bytes()[len("\n".join(lines)) + 1 :]
    assert int(by_key["CompressedDataSize"].split()[2]) == len(payload)
    assert payload[0] == 0x78
    assert zlib.decompress(payload) == b"".join(f.image.tobytes() for f in frames)


def test_nrrd_written_as_plus_writes_it(tmp_path):
    frames = make_frames(3, (10, 14), "uint16")
    path = write_sequence(tmp_path / "rec.seq.nrrd", frames)
    data = path.read_bytes()
    head, _, payload = data.partition(b"\n\n")
    lines = head.decode().splitlines()
    assert lines[:3] == [
        "NRRD0004",
        "# Complete NRRD file format specification at:",
        "# http://teem.sourceforge.net/nrrd/format.html",
    ]
    fields = [line.split(": ")[0] for line in lines[3:] if ": " in line and ":=" not in line]
    assert fields == [
        "dimension",
        "encoding",
        "endian",
        "kinds",
        "sizes",
        "space dimension",
        "space directions",
        "space origin",
        "type",
    ]
    assert "type: unsigned short" in lines and "space dimension: 2" in lines
    assert "space directions: (1,0) (0,1) none" in lines
    assert len(next(line for line in lines if line.startswith("sizes:"))) == 40
    assert "ultrasound image orientation:=MFA" in lines
    assert lines[-1] == "Seq_Frame0002_Status:=OK"
    assert gzip.decompress(payload) == b"".join(f.image.tobytes() for f in frames)


def test_independent_readers_accept_our_files(tmp_path):
    nrrd_lib = pytest.importorskip("nrrd")
    sitk = pytest.importorskip("SimpleITK")
    frames = make_frames(4, (18, 22))
    nrrd_path = write_sequence(tmp_path / "rec.seq.nrrd", frames)
    data, header = nrrd_lib.read(str(nrrd_path))
    assert data.shape == (22, 18, 4) and list(header["kinds"]) == ["domain", "domain", "list"]
    assert np.array_equal(data[:, :, 2].T, frames[2].image)
    assert header["Seq_Frame0001_FrameNumber"] == "1001"
    mha_path = write_sequence(tmp_path / "rec.igs.mha", frames)
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(mha_path)))
    assert np.array_equal(array, np.stack([f.image for f in frames]))


def test_a_seq_nrrd_saved_again_by_itk_is_refused_with_the_repair(tmp_path):
    """SimpleITK reads a .seq.nrrd's frame axis as pixel components and writes it back as
    ``kinds: vector domain domain``: refused naming that, and the repair the message gives
    (kinds ``list domain domain``) reads every frame back bit-identical."""
    sitk = pytest.importorskip("SimpleITK")
    frames = make_frames(5, (18, 22))
    original = write_sequence(tmp_path / "rec.seq.nrrd", frames)
    again = tmp_path / "itk.seq.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(original)), str(again), useCompression=True)
    with pytest.raises(
        InputError,
        match=r"no frame axis: kinds \(vector domain domain\) hold "
        r"them as a 'vector' axis of 5 .*kinds \(list domain domain\)",
    ):
        read_sequence(again)
    data = again.read_bytes()
    head, sep, payload = data.partition(b"\n\n")
    repaired = tmp_path / "repaired.seq.nrrd"
    repaired.write_bytes(head.replace(b"kinds: vector", b"kinds: list") + sep + payload)
    with read_sequence(original) as a, read_sequence(repaired) as b:
        assert_same_frames(a, list(range(len(a))), b)


def test_nrrd_vectors_with_spaces_keep_their_geometry(tmp_path):
    """teem (and ITK) read "(0.2, 0)" as "(0.2,0)": the pixel spacing, origin and axis
    directions of such a header are read, not replaced by 1, 0 and identity."""
    c, s = np.cos(0.5), np.sin(0.5)
    directions = np.array([[c, s], [-s, c]])
    path = write_sequence(
        tmp_path / "geo.seq.nrrd",
        make_frames(2, (6, 5)),
        spacing=(0.2, 0.3),
        offset=(5.0, -7.0),
        directions=directions,
    )
    head, sep, payload = path.read_bytes().partition(b"\n\n")
    spaced = re.sub(rb",(?=[-0-9])", b", ", head)  # inside the vectors only: "(5, -7)"
    assert spaced != head
    (tmp_path / "spaced.seq.nrrd").write_bytes(spaced + sep + payload)
    with read_sequence(path) as a, read_sequence(tmp_path / "spaced.seq.nrrd") as b:
        assert b.problems == []
        assert b.spacing == pytest.approx(a.spacing) and b.origin == pytest.approx(a.origin)
        np.testing.assert_allclose(b.directions, directions)
        assert a.spacing == pytest.approx((0.2, 0.3)) and a.origin == pytest.approx((5, -7))


def test_header_keys_in_any_order_and_case(tmp_path):
    path = write_sequence(tmp_path / "rec.igs.mha", make_frames(3), compress=False)
    lines = metaio_header_lines(path)
    data = path.read_bytes()
    pixels = data[len("\n".join(lines)) + 1 :]
    # line 1 stays (PLUS recognises the file by it; a garbled one is refused, see
    # test_sequence_bad_input); after it, frame fields first, everything reversed
    shuffled = [lines[0], lines[-2], *lines[1:-2][::-1]]
    shuffled = [line.replace("DimSize", "dimsize") for line in shuffled]
    odd = tmp_path / "odd.igs.mha"
    odd.write_bytes(("\r\n".join(shuffled) + "\r\nElementDataFile = LOCAL\r\n").encode() + pixels)
    with read_sequence(path) as a, read_sequence(odd) as b:
        assert len(b) == 3 and b.image_size == a.image_size
        assert_same_frames(a, [0, 1, 2], b)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(1, 6),
    rows=st.integers(1, 9),
    cols=st.integers(1, 9),
    dtype=st.sampled_from(["uint8", "uint16"]),
    suffix=st.sampled_from([".igs.mha", ".seq.nrrd"]),
    compress=st.booleans(),
    times=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=6, max_size=6),
)
def test_round_trip_property(tmp_path_factory, n, rows, cols, dtype, suffix, compress, times):
    frames = make_frames(n, (rows, cols), dtype)
    for f, t in zip(frames, times, strict=False):
        f.t_device = t
    path = tmp_path_factory.mktemp("prop") / f"p{suffix}"
    with read_sequence(write_sequence(path, frames, compress=compress)) as seq:
        assert len(seq) == n
        assert [seq.frame(i).t_device for i in range(n)] == [f.t_device for f in frames]
        assert all(np.array_equal(seq.image(i), f.image) for i, f in enumerate(frames))
        got = seq.transforms("ProbeToTracker")[0]
        assert np.array_equal(
            got, np.stack([f.transforms["ProbeToTracker"].matrix for f in frames])
        )
