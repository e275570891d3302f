"""A transform absent from some frames of a recording stays absent through replay → record.

A PLUS server that sends valid transforms only, or ``usnav record`` (which writes only what
arrived), leaves frames without a transform. Replayed without it, the recorder paired those
images with the last pose it had received, as OK (the hold of ``max_interpolation_gap_s``):
the copy claimed tracking the original never had. Real files, real sockets on loopback.
"""

from __future__ import annotations

import numpy as np
import pytest

from usnav.devices.playback import serve_in_subprocess
from usnav.devices.recorder import record
from usnav.frames import TrackedFrame, TrackedTransform, TransformStatus
from usnav.io.sequence import read_sequence, write_sequence

FPS = 30.0
GAP = range(10, 15)  # ProbeToTracker absent (the tool out of view), 167 ms: under the hold
STYLUS = range(20, 24)  # a tool seen for four frames, then gone


def _pose(k: int) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = [10.0 + 2 * k, 5.0, 30.0]
    return m


@pytest.fixture
def recording(tmp_path):
    rng = np.random.default_rng(5)
    frames = []
    for k in range(40):
        transforms = {"ReferenceToTracker": TrackedTransform(np.eye(4))}
        if k not in GAP:
            transforms["ProbeToTracker"] = TrackedTransform(_pose(k))
        if k in STYLUS:
            transforms["StylusToTracker"] = TrackedTransform(_pose(100 + k))
        frames.append(
            TrackedFrame(
                image=rng.integers(0, 256, (24, 32), dtype=np.uint8),
                transforms=transforms,
                t_device=50.0 + k / FPS,
                frame_number=k,
            )
        )
    path = tmp_path / "gaps.igs.mha"
    write_sequence(path, frames)
    return path


@pytest.mark.parametrize("rate", ["max", 1.0])
def test_a_transform_absent_in_the_file_is_not_recorded_as_a_held_ok_pose(
    recording, tmp_path, rate
):
    out = tmp_path / "copy.igs.mha"
    # `usnav replay` in its own process: it exits at the end, which ends the recording
    with serve_in_subprocess(recording, rate=rate) as server:
        result = record(out, port=server.port, stop_on_disconnect=True, connect_timeout_s=20)
    assert (result.received, result.written, result.dropped) == (40, 40, 0)
    with read_sequence(out) as copy:
        for k in range(40):
            frame = copy.frame(k)
            probe = frame.transforms.get("ProbeToTracker")
            if k in GAP:
                assert probe is None or probe.status is not TransformStatus.OK, k
            else:
                assert probe is not None and probe.status is TransformStatus.OK, k
                np.testing.assert_allclose(probe.matrix, _pose(k), atol=1e-4)
            stylus = frame.transforms.get("StylusToTracker")
            if k in STYLUS:
                assert stylus is not None and stylus.status is TransformStatus.OK, k
            else:
                assert stylus is None or stylus.status is not TransformStatus.OK, k
