"""Damaged or wrong sequence files: one clear InputError naming the file and the problem.

Each case starts from a good file written by usnav and damages it the way it happens in
practice (a copy cut short, flipped bytes, a hand-edited header). Tolerant mode recovers
the readable frames and says how many.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _seq_samples import frames as make_frames

from usnav.cli.main import main
from usnav.errors import InputError
from usnav.frames import TransformStatus
from usnav.io.sequence import read_sequence, write_sequence

N = 8
SHAPE = (64, 80)


@pytest.fixture(scope="module")
def originals():
    return make_frames(N, SHAPE)


@pytest.fixture
def good(tmp_path, originals):
    def make(suffix=".igs.mha", compress=True):
        return write_sequence(tmp_path / f"good{suffix}", originals, compress=compress)

    return make


def edit_header(path: Path, old: str, new: str, out: Path | None = None) -> Path:
    data = path.read_bytes()
    assert data.count(old.encode()) >= 1, old
    out = out or path.with_name("edited" + "".join(path.suffixes))
    out.write_bytes(data.replace(old.encode(), new.encode(), 1))
    return out


def cut(path: Path, keep_fraction: float) -> Path:
    data = path.read_bytes()
    out = path.with_name("cut" + "".join(path.suffixes))
    header_end = (
        len(data) - (len(data) - data.index(b"LOCAL\n") - 6)
        if path.suffix == ".mha"
        else data.index(b"\n\n") + 2
    )
    out.write_bytes(data[: header_end + int((len(data) - header_end) * keep_fraction)])
    return out


def raises_input_error(path: Path, *words: str, tolerant: bool = False) -> str:
    with pytest.raises(InputError) as info, read_sequence(path, tolerant=tolerant) as seq:
        seq.verify()
        for i in range(len(seq)):
            seq.image(i)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message, message
    assert "\n" not in message
    return message


def assert_recovered(path: Path, originals, at_most: int) -> int:
    with read_sequence(path, tolerant=True) as seq:
        assert seq.declared_frames == N
        assert 0 < seq.recovered_frames == len(seq) <= at_most
        assert seq.problems
        for i in range(len(seq)):
            assert np.array_equal(seq.image(i), originals[i].image)
        return len(seq)


def test_missing_path_and_folder(tmp_path):
    raises_input_error(tmp_path / "nope.igs.mha", "no such file")
    raises_input_error(tmp_path, "is a folder")


@pytest.mark.parametrize("suffix", [".igs.mha", ".seq.nrrd", ".mhd"])
def test_an_empty_file_is_called_empty(tmp_path, suffix):
    # a recording never written (0 bytes) used to be told it lacks its ElementDataFile line
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(b"")
    raises_input_error(path, "the file is empty")


@pytest.mark.parametrize("suffix", [".igs.mha", ".seq.nrrd"])
def test_truncated_uncompressed(good, originals, suffix):
    path = cut(good(suffix, compress=False), 0.7)
    raises_input_error(path, "truncated", "5 complete frames")
    assert assert_recovered(path, originals, at_most=N - 1) == 5


@pytest.mark.parametrize("suffix", [".igs.mha", ".seq.nrrd"])
def test_truncated_compressed(good, originals, suffix):
    path = cut(good(suffix), 0.6)
    raises_input_error(path, "truncated" if suffix == ".igs.mha" else "gzip")
    recovered = assert_recovered(path, originals, at_most=N - 1)
    assert recovered >= 3  # each frame is sync-flushed: everything before the cut inflates


@pytest.mark.parametrize("suffix", [".igs.mha", ".seq.nrrd"])
def test_corrupted_compressed(good, originals, suffix):
    path = good(suffix)
    data = bytearray(path.read_bytes())
    middle = (
        len(data)
        - (len(data) - (data.index(b"LOCAL\n") if suffix == ".igs.mha" else data.index(b"\n\n")))
        // 2
    )
    data[middle : middle + 64] = bytes(b ^ 0xA5 for b in data[middle : middle + 64])
    bad = path.with_name("bad" + "".join(path.suffixes))
    bad.write_bytes(bytes(data))
    read_sequence(bad).close()  # opening is lazy: nothing inflated yet
    raises_input_error(bad, "corrupted")
    assert assert_recovered(bad, originals, at_most=N - 1) < N


def test_dimsize_not_matching_the_data(good):
    raw = good(compress=False)
    # one frame more than the header describes
    data = raw.read_bytes()
    more = raw.with_name("more.igs.mha")
    more.write_bytes(re.sub(rb"(DimSize = 80 64 +)8\n", rb"\g<1>9\n", data, count=1))
    raises_input_error(more, "DimSize", f"{N + 1} frames")
    # frames smaller than the data: more pixel bytes than DimSize accounts for
    raises_input_error(
        edit_header(raw, "DimSize = 80 64", "DimSize = 79 64"), "DimSize does not match the data"
    )
    # frames larger than the data
    raises_input_error(edit_header(raw, "DimSize = 80 64", "DimSize = 81 64"), "DimSize")
    compressed = good()
    raises_input_error(
        edit_header(compressed, "DimSize = 80 64", "DimSize = 81 64"), "ends inside frame"
    )
    raises_input_error(
        edit_header(compressed, "DimSize = 80 64", "DimSize = 79 64"), f"more than the {N} frames"
    )
    nrrd = good(".seq.nrrd")
    raises_input_error(edit_header(nrrd, "sizes: 80 64", "sizes: 80 63"), "gzip", "sizes")


def test_missing_element_data_file(good):
    for compress in (True, False):
        path = edit_header(good(compress=compress), "ElementDataFile = LOCAL\n", "")
        raises_input_error(path, "ElementDataFile")
    nrrd = good(".seq.nrrd")
    data = nrrd.read_bytes()
    no_blank = nrrd.with_name("noblank.seq.nrrd")
    no_blank.write_bytes(data.replace(b"\n\n", b"\n", 1))
    raises_input_error(no_blank, "blank line")


@pytest.mark.parametrize(
    ("replacement", "words"),
    [
        ("0.5 0 0 1 0 1 0 2 0 0 1 3 0 0 0", ["15 numbers", "expected 16"]),
        ("0.5 0 0 1 0 1 0 2 0 0 1 3 0 0 0 one", ["not 16 numbers", "one"]),
    ],
)
def test_bad_transform(good, replacement, words):
    path = good()
    data = path.read_bytes()
    start = data.index(b"Seq_Frame0003_ProbeToTrackerTransform = ")
    line_end = data.index(b"\n", start)
    bad = path.with_name("badtransform.igs.mha")
    bad.write_bytes(
        data[:start]
        + b"Seq_Frame0003_ProbeToTrackerTransform = "
        + replacement.encode()
        + data[line_end:]
    )
    raises_input_error(bad, "frame 3", "ProbeToTrackerTransform", *words)
    with read_sequence(bad, tolerant=True) as seq:
        assert len(seq) == N
        _m, statuses = seq.transforms("ProbeToTracker")
        assert statuses[3] is TransformStatus.MISSING and statuses[4] is TransformStatus.OK
        assert any("frame 3" in p for p in seq.problems)


def test_unknown_orientation(good):
    path = edit_header(
        good(), "UltrasoundImageOrientation = MFA", "UltrasoundImageOrientation = XY"
    )
    raises_input_error(path, "orientation", "'XY'")
    nrrd = edit_header(good(".seq.nrrd"), "orientation:=MFA", "orientation:=QQQ")
    raises_input_error(nrrd, "orientation", "'QQQ'")


def test_an_unknown_nrrd_version_or_byte_order_is_refused(good):
    """Session-30 audit: ``NRRD9999`` and ``endian: middle`` were read as if valid."""
    nrrd = good(".seq.nrrd")
    header = nrrd.read_bytes()[:8].decode()
    raises_input_error(edit_header(nrrd, header, "NRRD9999"), "NRRD9999", "NRRD0001")
    raises_input_error(edit_header(nrrd, "endian: little", "endian: middle"), "'middle'")


@pytest.mark.parametrize(
    ("first", "shown"),
    [
        (b"\xff\xfejectType = Image", r"'\xff\xfejectType = Image'"),  # the audit's file
        (b"ObjectType Image", "'ObjectType Image'"),  # the '=' lost
        (b"ObjectTyXe = Image", "'ObjectTyXe = Image'"),  # one byte flipped
        (b"", "''"),  # the line blanked
    ],
    ids=["bytes", "no-equals", "flipped", "blank"],
)
def test_a_garbled_first_line_is_refused_naming_the_line(good, first, shown, capsys):
    """Session-30 audit: a file whose first line was ``\\xff\\xfejectType = Image`` (two
    bytes overwritten) was read as if whole; PLUS does not recognise it as a sequence file
    (its ``CanReadFile`` reads line 1 only). Refused in one line, tolerant mode too."""
    path = good()
    data = path.read_bytes()
    assert data.startswith(b"ObjectType = Image\n")
    damaged = path.with_name("garbled.igs.mha")
    damaged.write_bytes(first + data[len(b"ObjectType = Image") :])
    for tolerant in (False, True):
        message = raises_input_error(damaged, "line 1 is " + shown, tolerant=tolerant)
        assert "expected 'ObjectType = Image'" in message
    assert main(["info", str(damaged)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "line 1" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "first",
    ["objecttype = image", "  ObjectType = Image  \r", "Comment = from ITK", "NDims = 3"],
    ids=["lower-case", "spaces-crlf", "comment", "ndims"],
)
def test_first_lines_that_writers_put_there_still_read(good, originals, first):
    """What may come first: ``ObjectType`` in any case and spacing, MetaIO's ``Comment``
    (written before ``ObjectType`` when an image has one), ``NDims`` (a hand-made header)."""
    path = good()
    data = path.read_bytes()
    rest = data[len(b"ObjectType = Image") :]
    if first.startswith(("Comment", "NDims")):
        rest = b"\nObjectType = Image" + rest if first.startswith("Comment") else rest
        rest = rest.replace(b"\nNDims = 3\n", b"\n", 1) if first.startswith("NDims") else rest
    edited = path.with_name("first.igs.mha")
    edited.write_bytes(first.encode() + rest)
    with read_sequence(edited) as seq:
        assert len(seq) == N and not seq.problems
        assert np.array_equal(seq.image(N - 1), originals[N - 1].image)


def test_not_a_sequence(tmp_path):
    junk = tmp_path / "junk.igs.mha"
    junk.write_bytes(bytes(range(256)) * 8)
    raises_input_error(junk, "ElementDataFile")
    fake = tmp_path / "fake.seq.nrrd"
    fake.write_text("hello\n\n")
    raises_input_error(fake, "not a NRRD file")


def test_cli_one_line_exit_2_and_tolerant(good, capsys):
    path = cut(good(compress=False), 0.7)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "Traceback" not in err
    assert main(["info", "--tolerant", "--json", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["recovered_frames"] == info["frames"] == 5 and info["declared_frames"] == N
    assert info["problems"]


def _one_frame_declared_fewer(good) -> Path:
    """A compressed file whose size line declares N - 1 frames and whose fields stop there:
    the data hold one frame more than the header says (a hand-edit, a header from another
    writer)."""
    data = good().read_bytes()
    data = re.sub(rb"(DimSize = 80 64 +)8\n", rb"\g<1>7\n", data, count=1)
    data = re.sub(rb"Seq_Frame0007_[^\n]*\n", b"", data)
    out = good().with_name("fewer.igs.mha")
    out.write_bytes(data)
    return out


def test_tolerant_conversion_of_a_header_declaring_fewer_frames_works_and_says_so(
    good, originals, tmp_path, capsys
):
    """The refusal says "recover the readable frames with --tolerant", and --tolerant then
    refused the last frame with the same line: `usnav convert --tolerant` could not convert
    the file it was pointed to, and a tolerant conversion never said what it dropped."""
    fewer = _one_frame_declared_fewer(good)
    raises_input_error(fewer, f"more than the {N - 1} frames", "--tolerant")
    with read_sequence(fewer, tolerant=True) as seq:
        assert len(seq) == N - 1 and seq.problems
        for i in range(len(seq)):  # the last one too
            assert np.array_equal(seq.image(i), originals[i].image)
    out = tmp_path / "recovered.igs.mha"
    assert main(["convert", "--tolerant", str(fewer), str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning" in err and f"kept {N - 1} of {N - 1} frames" in err
    with read_sequence(out) as back:
        assert len(back) == N - 1
        assert np.array_equal(back.image(N - 2), originals[N - 2].image)


def test_a_damaged_stream_that_inflates_past_the_declared_frames_is_called_corrupted(good):
    """Damage can make a zlib stream inflate to more bytes than the frames declared; the
    refusal blamed the header ("holds more than the 8 frames the header declares") when
    zlib's own checksum says the data are damaged."""
    fewer = _one_frame_declared_fewer(good)
    data = bytearray(fewer.read_bytes())
    data[-4:] = bytes(b ^ 0xFF for b in data[-4:])  # the stream's Adler-32 trailer
    damaged = fewer.with_name("damaged.igs.mha")
    damaged.write_bytes(bytes(data))
    message = raises_input_error(damaged, "corrupted", "incorrect data check")
    assert "the header declares" in message and "holds more than" not in message
    with read_sequence(damaged, tolerant=True) as seq:
        assert any("corrupted" in problem for problem in seq.problems)
        seq.image(len(seq) - 1)  # served as decoded, the problem said once


def test_cli_real_process_reports_missing_file(tmp_path):
    missing = tmp_path / "missing.igs.mha"
    done = subprocess.run(
        [sys.executable, "-m", "usnav", "info", str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"usnav info: error: {missing}: no such file"


def test_writer_renames_fields_that_slicer_would_misread(tmp_path, caplog):
    """A field with 'Transform' in its name that is not a transform (3D Slicer reads every
    such field as a matrix) is written as ...Xform..., said once in the log; the frames are
    written (a recording stopped at frame 0 over it: "received 1, written 0")."""
    frames = make_frames(3)
    for frame in frames:
        frame.fields["TransformSource"] = "tracker A"
        frame.fields["ImageToProbeTransformNote"] = "hello"
    with caplog.at_level("WARNING", logger="usnav.io.sequence_writer"):
        path = write_sequence(tmp_path / "rec.igs.mha", frames)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2  # once per field, not per frame
    assert "'ImageToProbeTransformNote'" in warnings[1] and "'ImageToProbeXformNote'" in warnings[1]
    with read_sequence(path) as seq:
        assert len(seq) == 3
        assert seq.transform_names == ["ProbeToTracker", "ReferenceToTracker"]
        assert seq.fields(2)["XformSource"] == "tracker A"
        assert seq.fields(2)["ImageToProbeXformNote"] == "hello"
    text = path.read_bytes().split(b"ElementDataFile")[0].decode()
    assert "TransformSource" not in text and "TransformNote" not in text
    frame = make_frames(1)[0]
    frame.fields["Note"] = "two\nlines"
    with pytest.raises(InputError, match="line break"):
        write_sequence(tmp_path / "rec.seq.nrrd", [frame])


def test_absurd_space_directions_read_without_a_numpy_warning(good):
    """Found by ``usnav soak files``: a header edit to space directions of 1e200 made the
    reader's norm overflow with a RuntimeWarning (an exception under -W error)."""
    path = good(".seq.nrrd")
    text = path.read_bytes().decode("latin-1")
    line = next(x for x in text.split("\n") if x.startswith("space directions:"))
    edited = edit_header(path, line, "space directions: (1e200,0,0) (0,1e200,0) none")
    with read_sequence(edited) as seq:
        assert seq.spacing[0] == 1e200


def test_a_journal_line_that_is_not_an_object_is_skipped_cleanly(tmp_path, originals):
    """Found by ``usnav soak files``: a frames.jsonl line ``[]`` raised AttributeError out of
    recovery (a traceback). It is skipped: every frame is kept, and so is the journal (the
    damaged line might have been a frame)."""
    from usnav.io.sequence import SequenceWriter, journal_path, recover_recording

    target = tmp_path / "cut.igs.mha"
    writer = SequenceWriter(target, compress=False, fsync_interval_s=0)
    for frame in originals:
        writer.append(frame)
    journal = journal_path(target)
    copy = tmp_path / "copy.igs.mha.journal"
    import shutil

    shutil.copytree(journal, copy)
    writer.close()
    lines = (copy / "frames.jsonl").read_bytes().split(b"\n")
    frame_lines = [i for i, x in enumerate(lines) if b'"i"' in x]
    lines.insert(frame_lines[2], b"[]")
    (copy / "frames.jsonl").write_bytes(b"\n".join(lines))
    with read_sequence(recover_recording(copy)) as seq:
        assert len(seq) == N  # the frames before and after the foreign line
    assert (copy / "frames.jsonl").is_file()
