"""``usnav record`` when the image size changes mid-stream (the depth is changed on the
scanner): the recording goes on in one part file per size and no frame is lost; a genuine
write error still ends it with one error line. Real OpenIGTLink server on loopback."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from igtl_helpers import wait_until

from usnav.cli.main import main
from usnav.devices.recorder import record
from usnav.igtl import IgtlServer, ImageContent, Message
from usnav.io.sequence import read_sequence


def _image(
    number: int,
    shape: tuple[int, int],
    dtype: type = np.uint8,
    rng: np.random.Generator | None = None,
) -> Message:
    """Frame ``number`` (noise with ``rng``, else flat): its number in the first pixels, so
    each frame can be found again."""
    pixels = np.full(shape, 7, dtype=dtype) if rng is None else rng.integers(0, 256, shape, dtype)
    pixels[0, 0], pixels[0, 1] = number % 256, number // 256
    return Message(
        "IMAGE",
        "Image_Reference",
        ImageContent.from_array(pixels),
        10.0 + number / 20,
        {"FrameNumber": str(number)},
    )


def _wait_for_recorder(server: IgtlServer) -> None:
    """Until the recorder is connected and has said its header version (frames sent before
    would go out without their FrameNumber)."""
    assert server.wait_for_clients(1, timeout_s=20)
    assert wait_until(lambda: all(v > 0 for _, v in server.client_versions().values()), 20)


def _send(server: IgtlServer, frames: list[tuple[tuple[int, int], type]]) -> threading.Thread:
    """Send one IMAGE per ``(shape, dtype)`` from a thread, once the recorder listens."""

    def run() -> None:
        _wait_for_recorder(server)
        for number, (shape, dtype) in enumerate(frames):
            server.broadcast(_image(number, shape, dtype), wait_s=10.0)

    sender = threading.Thread(target=run, daemon=True)
    sender.start()
    return sender


def _frames_of(path: Path) -> tuple[int, tuple[int, int], list[int]]:
    """(frames, (cols, rows), frame numbers read back from the pixels) of a sequence file."""
    with read_sequence(path) as seq:
        numbers = [
            int(seq.frame(i).image[0, 0]) + 256 * int(seq.frame(i).image[0, 1])
            for i in range(len(seq))
        ]
        return len(seq), seq.image_size, numbers


@pytest.fixture
def server():
    srv = IgtlServer(port=0).start()
    yield srv
    srv.stop()


def test_record_continues_in_a_part_file_per_image_size_and_loses_nothing(
    server, tmp_path, capsys
) -> None:
    """20 frames of 256×256, 20 of 128×200, 20 of 300×256: three files, 60 frames, exit 0,
    and the summary line names each part and says why there are three."""
    out = tmp_path / "case.igs.mha"
    sizes = [(256, 256)] * 20 + [(128, 200)] * 20 + [(300, 256)] * 20
    sender = _send(server, [(shape, np.uint8) for shape in sizes])
    code = main(["record", "--port", str(server.port), "--out", str(out), "--frames", "60"])
    sender.join(20)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "error:" not in captured.err
    parts = [out, tmp_path / "case-2.igs.mha", tmp_path / "case-3.igs.mha"]
    assert sorted(tmp_path.iterdir()) == sorted(parts)  # no journal left behind
    assert _frames_of(parts[0]) == (20, (256, 256), list(range(20)))
    assert _frames_of(parts[1]) == (20, (200, 128), list(range(20, 40)))
    assert _frames_of(parts[2]) == (20, (256, 300), list(range(40, 60)))
    summary = [line for line in captured.out.splitlines() if line.startswith("usnav record:")]
    assert len(summary) == 1, captured.out
    line = summary[0]
    assert f"{parts[0]} (20 frames, 256 x 256 pixels, uint8)" in line
    assert f"{parts[1]} (20 frames, 200 x 128 pixels, uint8)" in line
    assert f"{parts[2]} (20 frames, 256 x 300 pixels, uint8)" in line
    assert "received 60, written 60, dropped 0 frames" in line
    assert "the image size changed during the recording: one file per image size" in line


def test_record_result_lists_every_part_first_the_target(server, tmp_path) -> None:
    """A size change, then a pixel type change at the same size: each starts a part (NRRD
    names too); ``path`` stays the first file and ``files`` lists all."""
    out = tmp_path / "sweep.seq.nrrd"
    frames = [((24, 32), np.uint8)] * 5 + [((40, 32), np.uint8)] * 7 + [((40, 32), np.uint16)] * 3
    sender = _send(server, frames)
    result = record(out, port=server.port, frames=len(frames), connect_timeout_s=20)
    sender.join(20)
    second, third = tmp_path / "sweep-2.seq.nrrd", tmp_path / "sweep-3.seq.nrrd"
    assert result.error is None and result.stopped_by == "15 frames"
    assert result.path == out and result.files == [out, second, third]
    assert [(p.frames, p.shape, p.dtype) for p in result.parts] == [
        (5, (24, 32), "uint8"),
        (7, (40, 32), "uint8"),
        (3, (40, 32), "uint16"),
    ]
    assert (result.received, result.written, result.dropped) == (15, 15, 0)
    assert _frames_of(out) == (5, (32, 24), list(range(5)))
    assert _frames_of(second) == (7, (32, 40), list(range(5, 12)))
    assert _frames_of(third) == (3, (32, 40), list(range(12, 15)))


def _limit_file_size() -> None:
    """In the child: files may not grow past 64 KiB (a full disk, as the writer sees it)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write() instead of a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


def test_a_genuine_write_error_still_ends_the_recording_with_one_error_line(
    server, tmp_path
) -> None:
    out = tmp_path / "full.igs.mha"
    usnav_record = [sys.executable, "-m", "usnav", "record", "--port", str(server.port)]
    proc = subprocess.Popen(
        [*usnav_record, "--out", str(out), "--no-compress", "--connect-timeout", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_limit_file_size,
    )
    try:
        _wait_for_recorder(server)
        rng = np.random.default_rng(5)
        for number in range(200):  # 4 KiB a frame: the limit is reached after about 16
            if proc.poll() is not None:
                break
            server.broadcast(_image(number, (64, 64), rng=rng), wait_s=10.0)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, stderr
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, stderr
    assert errors[0].startswith(f"usnav record: error: writing {out} failed:"), errors
    assert "cannot write frame" in errors[0] and "Traceback" not in stderr
    assert "ended by write error" in stdout and "one file per" not in stdout


def test_a_colour_stream_is_recorded_as_rgb_color_not_b_mode(tmp_path) -> None:
    """A 3-channel stream (colour Doppler, a screen grab) was written BRIGHTNESS: PLUS and
    usnav would then treat it as B-mode grey levels."""
    from usnav.devices.recorder import SplitRecording
    from usnav.frames import TrackedFrame

    colour = SplitRecording(tmp_path / "rgb.igs.mha")
    colour.append(TrackedFrame(image=np.zeros((6, 8, 3), np.uint8), t_device=1.0))
    colour.close()
    grey = SplitRecording(tmp_path / "grey.igs.mha")
    grey.append(TrackedFrame(image=np.zeros((6, 8), np.uint8), t_device=1.0))
    grey.close()
    with read_sequence(tmp_path / "rgb.igs.mha") as seq:
        assert seq.image_type == "RGB_COLOR" and seq.channels == 3
    with read_sequence(tmp_path / "grey.igs.mha") as seq:
        assert seq.image_type == "BRIGHTNESS"
