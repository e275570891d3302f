"""usnav.io.sequence is split along its seams (reader / writer / journal and recovery) and
stays importable as before: the names callers use are the same objects."""

from __future__ import annotations

import subprocess
import sys

import usnav.io.sequence as sequence
from usnav.io import sequence_journal, sequence_reader, sequence_writer


def test_the_public_names_are_re_exported_unchanged() -> None:
    for room in (sequence_reader, sequence_writer, sequence_journal):
        for name in set(room.__all__) & set(sequence.__all__):
            assert getattr(sequence, name) is getattr(room, name), name
    assert set(sequence.__all__) >= {
        "Sequence",
        "SequenceWriter",
        "convert_sequence",
        "inspect_journal",
        "journal_path",
        "read_sequence",
        "recover_recording",
        "sequence_format",
        "write_sequence",
    }


def test_the_reader_does_not_load_the_writer_or_the_journal() -> None:
    code = (
        "import sys, usnav.io.sequence_reader; "
        "print(sorted(m for m in sys.modules if m.startswith('usnav.io.sequence')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['usnav.io.sequence_reader']"
