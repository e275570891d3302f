"""Every PLUS test recording reads with the right frames, size, pixels, transforms, timestamps.

The expected values come from outside the reader: the header text parsed here with a few
lines of independent code, a one-shot ``zlib.decompress`` of the whole pixel block (whose
length must be the DimSize product), SimpleITK's MetaIO reader, and the facts stated in
``shared/data/README.md``.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np
import pytest

from usnav.frames import TransformStatus
from usnav.io.sequence import read_sequence

pytestmark = pytest.mark.needs_data

PLUS_FILES = [
    "NwirePhantomFreehand.igs.mha",
    "SpinePhantomFreehand.igs.mha",
    "WaterTankBottomTranslationTrackerBuffer.igs.mha",
    "WaterTankBottomTranslationVideoBuffer.igs.mha",
    "fCal_Test_Calibration_3NWires.igs.mha",
    "fCal_Test_Validation_3NWires.igs.mha",
    "vtkVolumeReconstructorTestNNMEANvolumeRef.mha",
]


def header_facts(path: Path) -> dict:
    """Independent parse: header fields, per-frame fields, data offset."""
    data = path.read_bytes()
    end = re.search(rb"ElementDataFile = LOCAL\r?\n", data)
    assert end is not None
    text = data[: end.end()].decode("ascii")
    fields, frames = {}, {}
    for line in text.splitlines():
        key, _, value = line.partition(" = ")
        m = re.fullmatch(r"Seq_Frame(\d+)_(\w+)", key.strip())
        if m:
            frames.setdefault(int(m.group(1)), {})[m.group(2)] = value.strip()
        else:
            fields[key.strip()] = value.strip()
    return {"fields": fields, "frames": frames, "offset": end.end(), "data": data}


@pytest.fixture(scope="module", params=PLUS_FILES)
def plus_file(request, plus_images: Path) -> tuple[Path, dict]:
    path = plus_images / request.param
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path, header_facts(path)


def test_frames_size_and_pixels_match_the_header_and_zlib(plus_file):
    path, facts = plus_file
    dims = [int(v) for v in facts["fields"]["DimSize"].split()]
    kinds = facts["fields"]["Kinds"].split()
    n_frames = dims[kinds.index("list")] if "list" in kinds else 1
    with read_sequence(path) as seq:
        assert len(seq) == n_frames
        assert seq.image_size == (dims[0], dims[1])
        assert seq.orientation == "MFA"
        assert seq.dtype == np.uint8
        frame_bytes = int(np.prod(dims[: kinds.index("list")] if "list" in kinds else dims))
        payload = facts["data"][facts["offset"] :]
        if facts["fields"]["CompressedData"] == "True":
            size = int(facts["fields"]["CompressedDataSize"])
            assert payload[:1] == b"\x78"
            pixels = zlib.decompress(payload[:size])  # one zlib stream across all frames
        else:
            pixels = payload
        if frame_bytes == 0:  # tracker only; this old PLUS wrote a 1-byte placeholder per frame
            assert len(pixels) in (0, n_frames)
            assert seq.frame_shape == (0, 0) and seq.image(0).size == 0
            return
        assert len(pixels) == frame_bytes * n_frames  # the DimSize product, exactly
        all_frames = np.frombuffer(pixels, np.uint8).reshape(n_frames, *seq.frame_shape)
        for i in sorted({0, n_frames // 2, n_frames - 1, 1 % n_frames}):
            assert np.array_equal(seq.image(i), all_frames[i])
        # jump back after reading ahead (compressed: restart from a checkpoint)
        assert np.array_equal(seq.image(0), all_frames[0])


def test_transforms_statuses_timestamps_match_the_header_text(plus_file):
    path, facts = plus_file
    frames = facts["frames"]
    with read_sequence(path) as seq:
        names = sorted(
            {k[: -len("Transform")] for f in frames.values() for k in f if k.endswith("Transform")}
        )
        assert sorted(seq.transform_names) == names
        for name in names:
            matrices, statuses = seq.transforms(name)
            for i in sorted({0, len(seq) // 3, len(seq) - 1}):
                expected = np.array(frames[i][f"{name}Transform"].split(), float).reshape(4, 4)
                assert np.array_equal(matrices[i], expected)
                word = frames[i].get(f"{name}TransformStatus", "OK")
                assert statuses[i] is TransformStatus(word)
        if any("Timestamp" in f for f in frames.values()):
            expected_t = [float(frames[i]["Timestamp"]) for i in range(len(seq))]
            assert np.array_equal(seq.timestamps, expected_t)
        expected_ok = [frames[i].get("ImageStatus", "OK") == "OK" for i in range(len(seq))]
        assert np.array_equal(seq.image_ok, expected_ok)


def test_simpleitk_reads_the_same_pixels(plus_images: Path):
    sitk = pytest.importorskip("SimpleITK")
    path = plus_images / "SpinePhantomFreehand.igs.mha"
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))  # (frames, rows, cols)
    with read_sequence(path) as seq:
        assert reference.shape == (len(seq), *seq.frame_shape)
        assert all(np.array_equal(seq.image(i), reference[i]) for i in range(len(seq)))


def test_spine_phantom_facts_from_the_data_readme(plus_images: Path):
    with read_sequence(plus_images / "SpinePhantomFreehand.igs.mha") as seq:
        assert len(seq) == 21
        assert seq.image_size == (820, 616)
        assert {"ProbeToTracker", "ReferenceToTracker"} <= set(seq.transform_names)
        frame = seq.frame(0)
        assert frame.image.shape == (616, 820)
        assert frame.t_device == pytest.approx(215.102186)
        assert frame.t_received == frame.t_device
        assert frame.frame_number == 0  # no FrameNumber field: the index
        assert frame.orientation == "MFA" and frame.image_ok
        m = frame.transforms["ProbeToTracker"].matrix
        assert m[0, 3] == 172.641 and m[2, 0] == -0.964513  # row-major, as in the file
        # a frame's transforms interpolate back to themselves at their sample times
        series = seq.pose_series("ProbeToTracker")
        assert np.allclose(
            series.at(float(seq.timestamps[5])).matrix, seq.transforms("ProbeToTracker")[0][5]
        )


def test_invalid_stylus_and_tracker_only_buffer(plus_images: Path):
    with read_sequence(plus_images / "NwirePhantomFreehand.igs.mha") as seq:
        assert len(seq) == 97
        _m, statuses = seq.transforms("StylusToTracker")
        assert set(statuses) == {TransformStatus.INVALID}
        assert not seq.frame(3).transforms["StylusToTracker"].ok
        assert seq.frame(3).transforms["ProbeToTracker"].ok
    with read_sequence(plus_images / "WaterTankBottomTranslationTrackerBuffer.igs.mha") as seq:
        assert len(seq) == 5000 and seq.image_size == (0, 0)
        assert not seq.image_ok.any()  # tracker-only: every ImageStatus is INVALID
        frame = seq.frame(0)
        assert frame.frame_number == 329640
        assert frame.fields["UnfilteredTimestamp"] == "7356.699000"
        assert frame.image.size == 0
    with read_sequence(plus_images / "vtkVolumeReconstructorTestNNMEANvolumeRef.mha") as seq:
        assert len(seq) == 1
        assert seq.frame_shape == (105, 106, 147)
        assert seq.spacing == (0.5, 0.5, 0.5)
