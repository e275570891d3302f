"""A recording damaged in the middle: usnav replay stops with one line and exit 2."""

from __future__ import annotations

import numpy as np

from usnav.cli.main import main
from usnav.frames import TrackedFrame
from usnav.io.sequence import write_sequence


def _damaged_recording(tmp_path):
    rng = np.random.default_rng(3)
    frames = [
        TrackedFrame(rng.integers(0, 255, (64, 80), dtype=np.uint8), t_device=0.1 * i)
        for i in range(12)
    ]
    path = write_sequence(tmp_path / "damaged.igs.mha", frames, compress=True)
    data = bytearray(path.read_bytes())
    middle = len(data) - len(data) // 3  # inside the compressed pixels, past the header
    data[middle : middle + 512] = bytes(b ^ 0x5A for b in data[middle : middle + 512])
    path.write_bytes(bytes(data))
    return path


def test_replay_of_a_recording_damaged_mid_stream_fails_with_one_line(tmp_path, capsys) -> None:
    path = _damaged_recording(tmp_path)
    code = main(["replay", str(path), "--port", "0", "--no-wait", "--rate", "max"])
    captured = capsys.readouterr()
    assert code == 2
    errors = [line for line in captured.err.splitlines() if line.strip()]
    assert len(errors) == 1, errors
    assert errors[0].startswith("usnav replay: error:") and "damaged.igs.mha" in errors[0]
    assert "corrupted in frame" in errors[0]
    assert "Traceback" not in captured.err
