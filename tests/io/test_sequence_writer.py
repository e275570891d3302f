"""The streaming, crash-safe SequenceWriter: real processes killed, real write failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from _seq_samples import frames as make_frames
from _seq_samples import image, pose

from usnav.cli.main import main
from usnav.errors import InputError, UsnavError
from usnav.io.sequence import (
    SequenceWriter,
    journal_path,
    read_sequence,
    recover_recording,
)

RECORDER = textwrap.dedent(
    """
    import resource, signal, sys
    sys.path.insert(0, {tests!r})
    from _seq_samples import image, pose
    from usnav.errors import UsnavError
    from usnav.frames import TrackedFrame, TrackedTransform
    from usnav.io.sequence import SequenceWriter

    path, compress, limit = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
    # Ctrl-C as at a terminal, even when the test run itself was started as a background job
    # (which starts with SIGINT ignored, and Python then installs no KeyboardInterrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if limit:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    i = 0
    try:
        with SequenceWriter(path, compress=compress, fsync_interval_s=0.2) as writer:
            while True:
                frame = TrackedFrame(image(i, (48, 64)),
                                     {{"ProbeToTracker": TrackedTransform(pose(i))}},
                                     t_device=10.0 + 0.05 * i, frame_number=i)
                try:
                    writer.append(frame)
                except UsnavError as exc:
                    print("ERROR", exc, flush=True)
                    break
                print(i, flush=True)
                i += 1
    except UsnavError as exc:
        print("CLOSE", exc, flush=True)
    """
)


def expected_image(i: int) -> np.ndarray:
    return image(i, (48, 64))


def start_recorder(tmp_path: Path, target: Path, compress: bool, limit: int = 0):
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER.format(tests=str(Path(__file__).parent)))
    return subprocess.Popen(
        [sys.executable, str(script), str(target), "1" if compress else "0", str(limit)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_frames(process: subprocess.Popen, count: int) -> int:
    last = -1
    for line in process.stdout:
        if line.startswith("ERROR"):
            raise AssertionError(line)
        last = int(line)
        if last + 1 >= count:
            break
    return last + 1


def check_recording(path: Path, at_least: int) -> int:
    with read_sequence(path) as seq:
        seq.verify()
        assert len(seq) >= at_least
        for i in range(len(seq)):
            assert np.array_equal(seq.image(i), expected_image(i)), i
            assert seq.frame_numbers[i] == i
        assert np.allclose(seq.transforms("ProbeToTracker")[0][-1], pose(len(seq) - 1))
        return len(seq)


@pytest.mark.parametrize(
    ("name", "compress"), [("rec.igs.mha", True), ("rec.seq.nrrd", False), ("rec.igs.nrrd", True)]
)
def test_kill_9_keeps_every_complete_frame(tmp_path, name, compress):
    target = tmp_path / name
    with start_recorder(tmp_path, target, compress) as process:
        try:
            printed = wait_for_frames(process, 40)
        finally:
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=30)
    assert not target.exists() and journal_path(target).is_dir()
    assert recover_recording(target) == target
    assert not journal_path(target).exists()
    check_recording(target, at_least=printed)


def test_ctrl_c_closes_the_recording(tmp_path):
    target = tmp_path / "rec.igs.mha"
    with start_recorder(tmp_path, target, compress=True) as process:
        printed = wait_for_frames(process, 25)
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=60)
    assert "KeyboardInterrupt" in err  # the script does not catch it; `with` closed the file
    assert target.exists() and not journal_path(target).exists()
    check_recording(target, at_least=printed)


def test_write_failure_raises_once_and_keeps_the_frames(tmp_path):
    target = tmp_path / "rec.igs.mha"
    # the journal's pixel file may not grow past 200 kB: like a disk filling up
    with start_recorder(tmp_path, target, compress=False, limit=200_000) as process:
        out, _err = process.communicate(timeout=120)
    lines = out.splitlines()
    error = next(line for line in lines if line.startswith("ERROR"))
    written = int(lines[lines.index(error) - 1]) + 1
    assert written == 200_000 // (48 * 64)  # every frame that fitted
    assert f"cannot write frame {written}" in error and "File too large" in error
    assert f"the {written} frames before it are safe in {journal_path(target)}" in error
    assert lines[-1].startswith("CLOSE") and "cannot write the recording" in lines[-1]
    assert not target.exists()
    # after "freeing space": the frames are all there
    assert main(["convert", str(journal_path(target)), str(target)]) == 0
    assert check_recording(target, at_least=written) == written


def test_unwritable_folder_is_a_clear_error(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):  # root ignores permissions: use a read-only sysfs dir
            folder = Path("/sys")
            try:
                (folder / "usnav-probe").mkdir()
            except PermissionError:
                pass
            else:  # pragma: no cover - a writable /sys
                pytest.skip("no unwritable folder available")
        with pytest.raises(UsnavError, match="cannot start the recording"):
            SequenceWriter(folder / "rec.igs.mha")
    finally:
        (tmp_path / "locked").chmod(0o755)


def test_refuses_to_overwrite_a_journal_and_needs_one_to_recover(tmp_path):
    target = tmp_path / "rec.seq.nrrd"
    writer = SequenceWriter(target)
    writer.append(make_frames(1)[0])
    writer.abort()  # as if killed
    with pytest.raises(InputError, match="interrupted recording"):
        SequenceWriter(target)
    assert len(read_sequence(recover_recording(journal_path(target)))) == 1
    with pytest.raises(InputError, match="no recording journal"):
        recover_recording(target)
    with pytest.raises(InputError, match="no such folder"):
        SequenceWriter(tmp_path / "missing" / "rec.igs.mha")
    with pytest.raises(InputError, match="unknown sequence file type"):
        SequenceWriter(tmp_path / "rec.avi")


def test_frames_of_another_size_are_refused(tmp_path):
    with SequenceWriter(tmp_path / "rec.igs.mha") as writer:
        writer.append(make_frames(1, (10, 12))[0])
        with pytest.raises(InputError, match="differs from the recording"):
            writer.append(make_frames(1, (10, 13))[0])
        writer.append(make_frames(2, (10, 12))[1])
    assert len(read_sequence(tmp_path / "rec.igs.mha")) == 2
