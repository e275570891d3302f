"""Opening does not load pixels: raw frames are memory-mapped, compressed ones inflated lazily."""

from __future__ import annotations

import os

import numpy as np
import psutil
import pytest
from _seq_samples import frames as make_frames

from usnav.frames import TrackedFrame
from usnav.io._metaio import format_metaio_header
from usnav.io.info import describe_file
from usnav.io.sequence import SequenceWriter, read_sequence, write_sequence


def test_raw_frames_are_views_of_the_file(tmp_path):
    frames = make_frames(6, (30, 40))
    path = write_sequence(tmp_path / "rec.igs.mha", frames, compress=False)
    with read_sequence(path) as seq:
        first = seq.image(3)
        assert not first.flags.owndata and not first.flags.writeable
        # change frame 3's bytes on disk after opening: the mapping shows them
        offset = path.stat().st_size - 3 * 30 * 40  # frames 3, 4, 5 are the last three
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(bytes([222]) * 40)
        assert np.all(seq.image(3)[0] == 222)
        assert np.array_equal(seq.image(3)[1:], frames[3].image[1:])


def test_a_2_gb_recording_opens_without_reading_its_pixels(tmp_path):
    """A sparse 2 GB file: opening and reading three frames must not touch the rest."""
    n, rows, cols = 4000, 616, 820
    fields = [
        {
            "Timestamp": f"{0.05 * i:.6f}",
            "FrameNumber": str(i),
            "ProbeToTrackerTransform": "1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1",
            "ProbeToTrackerTransformStatus": "OK",
            "ImageStatus": "OK",
        }
        for i in range(n)
    ]
    header = format_metaio_header(
        n_frames=n,
        spatial=(cols, rows, 1),
        ndim_spatial=2,
        channels=1,
        dtype=np.dtype("u1"),
        compressed_size=None,
        orientation="MFA",
        image_type="BRIGHTNESS",
        frame_fields=fields,
    )
    path = tmp_path / "big.igs.mha"
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + n * rows * cols)  # a hole: no disk blocks, no page cache
    assert path.stat().st_size > 2e9
    process = psutil.Process()
    before = process.memory_info().rss
    with read_sequence(path) as seq:
        assert len(seq) == n and seq.image_size == (cols, rows)
        assert seq.timestamps[-1] == pytest.approx(0.05 * (n - 1))
        for i in (0, 1234, n - 1):
            assert seq.image(i).shape == (rows, cols) and not seq.image(i).any()
        grown = process.memory_info().rss - before
    assert grown < 100e6, f"opening grew the process by {grown / 1e6:.0f} MB"


def test_compressed_open_inflates_nothing(tmp_path):
    path = write_sequence(tmp_path / "rec.igs.mha", make_frames(12, (60, 80)))
    data = bytearray(path.read_bytes())
    data[-200:-100] = bytes(100)  # damage the end of the stream
    path.write_bytes(bytes(data))
    with read_sequence(path) as seq:  # lazy: opens fine
        assert np.array_equal(seq.image(0), make_frames(1, (60, 80))[0].image)


def test_big_endian_pixels_are_written_little_endian(tmp_path):
    """IGSIO ignores BinaryDataByteOrderMSB / endian when it reads (and writes little-endian):
    a big-endian file of ours would open byte-swapped in PLUS, so the writer swaps the data."""
    frames = make_frames(3, (8, 9), "uint16")
    for f in frames:
        f.image = f.image.astype(">u2")
    path = write_sequence(tmp_path / "be.igs.mha", frames, compress=False)
    data = path.read_bytes()
    assert b"BinaryDataByteOrderMSB = False" in data
    # the last frame's bytes, as PLUS reads them (little-endian, whatever the header says)
    last = np.frombuffer(data[-8 * 9 * 2 :], dtype="<u2").reshape(8, 9)
    assert np.array_equal(last, frames[2].image)
    with read_sequence(path) as seq:
        assert seq.dtype == np.dtype("<u2")
        assert np.array_equal(seq.image(2), frames[2].image)  # same values
    nrrd = write_sequence(tmp_path / "be.seq.nrrd", frames)
    assert b"endian: little" in nrrd.read_bytes()
    with read_sequence(nrrd) as seq:
        assert seq.dtype == np.dtype("<u2")
        assert np.array_equal(seq.image(1), frames[1].image)


def test_journal_described_by_info(tmp_path):
    writer = SequenceWriter(tmp_path / "rec.igs.mha")
    for frame in make_frames(4):
        writer.append(frame)
    writer.abort()
    info = describe_file(tmp_path / "rec.igs.mha.journal")
    assert info["kind"] == "journal" and info["frames"] == 4
    assert info["target"] == str(tmp_path / "rec.igs.mha")


def test_volume_frames_with_few_columns(tmp_path):
    thin = np.arange(6 * 5 * 3, dtype=np.uint8).reshape(6, 5, 3)  # 3 columns, not RGB
    with SequenceWriter(tmp_path / "thin.igs.mha", volume=True) as writer:
        writer.append(TrackedFrame(thin, t_device=0.0))
    with read_sequence(tmp_path / "thin.igs.mha") as seq:
        assert seq.frame_shape == (6, 5, 3) and seq.channels == 1
        assert np.array_equal(seq.image(0), thin)
    os.unlink(tmp_path / "thin.igs.mha")


def test_info_shows_an_unused_element_spacing_and_an_unspecified_orientation(tmp_path):
    """``ElementSpacing`` is not how usnav scales pixels (ImageToProbe is, as in PLUS): info
    says so rather than stay silent; ``??`` is said to be taken as MF."""
    from usnav.io.info import format_description

    path = write_sequence(
        tmp_path / "s.igs.mha", make_frames(3), spacing=(0.15, 0.16, 1.0), orientation="??"
    )
    text = format_description(describe_file(path))
    assert "ElementSpacing 0.15 x 0.16: not used" in text
    assert "orientation ?? (not specified: taken as MF)" in text
    plain = format_description(
        describe_file(write_sequence(tmp_path / "p.igs.mha", make_frames(3)))
    )
    assert "ElementSpacing" not in plain and "not specified" not in plain
