"""PLUS sequence files: ``.igs.mha`` (MetaIO) and ``.seq.nrrd`` / ``.igs.nrrd`` (NRRD).

The recording format of usnav, read and written as PLUS/IGSIO do, so recordings from PLUS,
fCal and 3D Slicer replay here and ours open there. This module is the public face of three
rooms, each importable on its own:

- :mod:`usnav.io.sequence_reader` — :func:`read_sequence` and :class:`Sequence`: the header in
  any key order, every per-frame field, lazy pixels (memory-mapped, or inflated one frame at a
  time), ``tolerant=True`` for damaged files;
- :mod:`usnav.io.sequence_writer` — :class:`SequenceWriter` and :func:`write_sequence`
  (streaming, crash-safe), :func:`convert_sequence` (``.igs.mha`` ↔ ``.seq.nrrd``);
- :mod:`usnav.io.sequence_journal` — the journal a writer keeps next to its target while it
  records, and :func:`recover_recording` for the journal a killed writer left.

Frames: ``Image`` pixels (x = column, y = row); transforms are ``FromToTo`` 4×4 matrices in mm,
row-major in the file; timestamps in seconds on the recording's clock.
"""

from __future__ import annotations

from usnav.io.sequence_journal import inspect_journal, journal_path, recover_recording
from usnav.io.sequence_reader import IMAGE_TYPES, Sequence, read_sequence, sequence_format
from usnav.io.sequence_writer import SequenceWriter, convert_sequence, write_sequence

__all__ = [
    "IMAGE_TYPES",
    "Sequence",
    "SequenceWriter",
    "convert_sequence",
    "inspect_journal",
    "journal_path",
    "read_sequence",
    "recover_recording",
    "sequence_format",
    "write_sequence",
]
