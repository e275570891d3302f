"""Recovering a damaged recording journal: every readable frame kept, nothing lost.

Each journal is the one a killed recorder leaves (a real :class:`SequenceWriter`, never
closed), then damaged the way QA found it: a frame line replaced, pixels gone, a hand-edited
``meta.json``. Recovery runs through the real ``usnav convert`` command.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _seq_samples import frames as make_frames

from usnav.cli.main import main
from usnav.errors import InputError
from usnav.io.sequence import SequenceWriter, journal_path, read_sequence, recover_recording
from usnav.io.sequence_journal import recover_journal

N = 8
SHAPE = (48, 64)


@pytest.fixture(scope="module")
def originals():
    return make_frames(N, SHAPE)


@pytest.fixture(scope="module")
def crashed(tmp_path_factory, originals):
    """The journals a killed recorder leaves, per (suffix, compress): never closed."""
    folder = tmp_path_factory.mktemp("crashed")
    made = {}
    for suffix, compress in ((".igs.mha", True), (".igs.mha", False), (".seq.nrrd", True)):
        target = folder / f"rec{'-z' if compress else ''}{suffix}"
        writer = SequenceWriter(target, compress=compress, fsync_interval_s=0)
        for frame in originals:
            writer.append(frame)
        writer.abort()  # as if killed -9: the journal stays
        made[suffix, compress] = journal_path(target)
    return made


def copy_journal(crashed, tmp_path: Path, name: str = "rec", suffix=".igs.mha", compress=True):
    journal = tmp_path / f"{name}{suffix}.journal"
    shutil.copytree(crashed[suffix, compress], journal)
    return journal


def frame_lines(journal: Path) -> tuple[list[bytes], list[int]]:
    lines = (journal / "frames.jsonl").read_bytes().split(b"\n")
    return lines, [i for i, line in enumerate(lines) if line.startswith(b'{"i"')]


def replace_frame_line(journal: Path, frame: int, text: bytes) -> int:
    """Replace frame ``frame``'s line; returns its 1-based line number."""
    lines, frames = frame_lines(journal)
    lines[frames[frame]] = text
    (journal / "frames.jsonl").write_bytes(b"\n".join(lines))
    return frames[frame] + 1


def convert(capsys, *args: str | Path) -> tuple[int, str]:
    code = main(["convert", *map(str, args)])
    return code, capsys.readouterr().err


def assert_frames(path: Path, originals, kept: list[int]) -> None:
    with read_sequence(path) as seq:
        seq.verify()
        assert len(seq) == len(kept)
        for j, i in enumerate(kept):
            frame = seq.frame(j)
            assert frame.t_device == pytest.approx(originals[i].t_device, abs=1e-6)
            assert np.array_equal(frame.image, originals[i].image)


@pytest.mark.parametrize("text", [b'"a string"', b"[1,2,3]", b"{", b'{"i": 3}'])
@pytest.mark.parametrize(("suffix", "compress"), [(".igs.mha", True), (".igs.mha", False)])
def test_a_damaged_frame_line_is_skipped_and_the_journal_kept(
    tmp_path, capsys, crashed, originals, text, suffix, compress
):
    journal = copy_journal(crashed, tmp_path, suffix=suffix, compress=compress)
    line = replace_frame_line(journal, 3, text)
    out = tmp_path / f"rec{suffix}"
    code, err = convert(capsys, journal, out)
    assert code == 0
    assert_frames(out, originals, [i for i in range(N) if i != 3])
    assert journal.is_dir() and (journal / "pixels.bin").stat().st_size > 0  # nothing lost
    assert err.count("\n") == 1 and "warning" in err and f"{N - 1} of {N} frames" in err
    assert f"line {line} (" in err and "journal is kept" in err


def test_a_damaged_line_in_a_gzip_journal_is_skipped_too(tmp_path, capsys, crashed, originals):
    journal = copy_journal(crashed, tmp_path, suffix=".seq.nrrd")
    replace_frame_line(journal, N - 1, b'"x"')
    replace_frame_line(journal, 0, b"[]")
    out = tmp_path / "rec.seq.nrrd"
    assert convert(capsys, journal, out)[0] == 0
    assert_frames(out, originals, list(range(1, N - 1)))
    assert journal.is_dir()


def test_empty_pixels_is_refused_naming_the_line_and_keeps_the_journal(tmp_path, capsys, crashed):
    journal = copy_journal(crashed, tmp_path)
    (journal / "pixels.bin").write_bytes(b"")
    out = tmp_path / "rec.igs.mha"
    code, err = convert(capsys, journal, out)
    first_frame_line = frame_lines(journal)[1][0] + 1
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert str(journal / "frames.jsonl") in err and f"line {first_frame_line}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [journal.name]  # no output, no scraps
    assert sorted(p.name for p in journal.iterdir()) == ["frames.jsonl", "meta.json", "pixels.bin"]


def test_flipped_compressed_pixels_keep_the_frames_before_them(
    tmp_path, capsys, crashed, originals
):
    journal = copy_journal(crashed, tmp_path)
    _lines, frames = frame_lines(journal)
    ends = [json.loads(_lines[i])["end"] for i in frames]
    data = bytearray((journal / "pixels.bin").read_bytes())
    data[(ends[4] + ends[5]) // 2] ^= 0xFF  # inside frame 5's deflated pixels
    (journal / "pixels.bin").write_bytes(bytes(data))
    out = tmp_path / "rec.igs.mha"
    code, err = convert(capsys, journal, out)
    assert code == 0 and "pixels.bin is damaged" in err
    assert_frames(out, originals, list(range(5)))
    assert journal.is_dir()


def test_an_intact_journal_is_recovered_whole_and_removed(tmp_path, capsys, crashed, originals):
    journal = copy_journal(crashed, tmp_path)
    out = tmp_path / "rec.igs.mha"
    code, err = convert(capsys, journal, out)
    assert code == 0 and err == ""
    assert_frames(out, originals, list(range(N)))
    assert not journal.exists()


def test_only_the_named_output_is_written(tmp_path, capsys, crashed, originals):
    journal = copy_journal(crashed, tmp_path, name="d2")
    precious = tmp_path / "d2.igs.mha"  # the file the journal is named after
    precious.write_text("precious\n")
    out = tmp_path / "d2out.igs.mha"
    assert convert(capsys, journal, out)[0] == 0
    assert precious.read_text() == "precious\n"
    assert_frames(out, originals, list(range(N)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d2.igs.mha", "d2out.igs.mha"]


def test_a_conversion_on_recovery_writes_only_the_named_output(
    tmp_path, capsys, crashed, originals
):
    journal = copy_journal(crashed, tmp_path)
    out = tmp_path / "rec.seq.nrrd"
    assert convert(capsys, journal, out, "--no-compress")[0] == 0
    with read_sequence(out) as seq:
        assert not seq.compressed
    assert_frames(out, originals, list(range(N)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.seq.nrrd"]


def test_an_existing_output_is_never_replaced_without_force(tmp_path, capsys, crashed, originals):
    journal = copy_journal(crashed, tmp_path)
    out = tmp_path / "rec.igs.mha"
    out.write_text("precious\n")
    code, err = convert(capsys, journal, out)
    assert code == 2 and str(out) in err and "--force" in err
    assert out.read_text() == "precious\n" and journal.is_dir()
    with pytest.raises(InputError, match="already exists"):
        recover_recording(journal)
    with pytest.raises(InputError, match="already exists"):
        recover_journal(journal, out)
    assert out.read_text() == "precious\n" and journal.is_dir()
    assert convert(capsys, journal, out, "--force")[0] == 0
    assert_frames(out, originals, list(range(N)))


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda meta: [meta], None),
        (lambda meta: {**meta, "orientation": 5}, "orientation"),
        (lambda meta: {**meta, "level": "x"}, "level"),
        (lambda meta: {**meta, "format": "bogus"}, "format"),
        (lambda meta: {**meta, "compress": "yes"}, "compress"),
        (lambda meta: {**meta, "header_fields": {"A": "1\nB = 2"}}, "header_fields"),
        # security review (session 36): `usnav info` ended in "internal error: ValueError"
        (lambda meta: {**meta, "target": "../../etc/x.igs.mha"}, "target"),
        (lambda meta: {k: v for k, v in meta.items() if k != "target"}, "target"),
    ],
)
def test_a_bad_meta_json_is_one_line_and_nothing_is_deleted(tmp_path, capsys, crashed, edit, field):
    journal = copy_journal(crashed, tmp_path)
    meta_path = journal / "meta.json"
    meta_path.write_text(json.dumps(edit(json.loads(meta_path.read_text()))))
    before = {p.name: p.read_bytes() for p in journal.iterdir()}
    out = tmp_path / "rec.igs.mha"
    code, err = convert(capsys, journal, out)
    assert code == 2 and err.count("\n") == 1 and "internal error" not in err
    assert str(meta_path) in err
    if field:
        assert repr(field) in err
    assert {p.name: p.read_bytes() for p in journal.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [journal.name]


def test_info_tells_what_convert_can_salvage_past_a_damaged_line(tmp_path, crashed) -> None:
    """usnav info said "3 complete" where convert then recovered N - 1: it now names the
    damaged line and the readable frames beyond it."""
    from usnav.io.info import describe_file, format_description

    journal = copy_journal(crashed, tmp_path)
    line = replace_frame_line(journal, 3, b'"a string"')
    info = describe_file(journal)
    assert info["frames"] == 3 and info["readable_frames"] == N - 1
    assert info["damaged_lines"] == [[line, "a JSON str, not a record"]]
    text = format_description(info)
    assert f"up to {N - 1} readable past damage" in text and f"line {line} (" in text
    intact = describe_file(copy_journal(crashed, tmp_path, name="ok"))
    assert intact["frames"] == intact["readable_frames"] == N and not intact["damaged_lines"]
    assert "readable past damage" not in format_description(intact)
