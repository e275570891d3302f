"""``usnav replay`` stopped by SIGINT (Ctrl-C) or SIGTERM (a service manager, ``timeout``)
prints its summary and exits 130, as ``usnav record`` does: SIGTERM killed it outright (exit
143, no summary) and Ctrl-C printed only "interrupted". Real processes, real signals."""

from __future__ import annotations

import re
import signal
import subprocess

import numpy as np
import pytest
from cli_helpers import start_usnav

from usnav.devices.config import ProbeConfig
from usnav.devices.probe import ProbeClient
from usnav.frames import TrackedFrame, TrackedTransform
from usnav.io.sequence import write_sequence

SUMMARY = re.compile(
    r"^usnav replay: sent (\d+) frames \(\d+ passes\), (\d+) messages; "
    r"\d+ dropped for slow clients; interrupted$"
)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    path = tmp_path_factory.mktemp("sweep") / "sweep.igs.mha"
    rng = np.random.default_rng(5)
    frames = [
        TrackedFrame(
            image=rng.integers(0, 256, (16, 24), dtype=np.uint8),
            transforms={"ProbeToTracker": TrackedTransform(np.eye(4))},
            t_device=10.0 + k / 30.0,
            frame_number=k,
        )
        for k in range(30)
    ]
    write_sequence(path, frames)
    return path


@pytest.mark.parametrize(
    "signals",
    [(signal.SIGINT,), (signal.SIGTERM,), (signal.SIGINT, signal.SIGINT, signal.SIGINT)],
    ids=["ctrl-c", "sigterm", "ctrl-c-thrice"],
)
def test_a_signal_stops_replay_with_its_summary(sweep, tmp_path, signals) -> None:
    process = start_usnav(
        tmp_path, "replay", str(sweep), "--port", "0", "--loop", stdin=subprocess.DEVNULL
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # blocks until it listens (or exits: "")
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", first)
        assert match, first + process.communicate(timeout=60)[1]
        config = ProbeConfig(port=int(match.group(1)), pairing_wait_s=0)
        with ProbeClient(config) as probe:
            got = [probe.get_frame(30) for _ in range(5)]  # it is playing
            assert None not in got
            for signum in signals:  # the later ones land while it stops
                process.send_signal(signum)
            _, err = process.communicate(timeout=60)  # a hang guard
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("usnav replay: sent")]
    assert len(lines) == 1, err
    summary = SUMMARY.match(lines[0])
    assert summary, lines[0]
    assert int(summary.group(1)) >= 5 and int(summary.group(2)) > 0
    assert "usnav replay: interrupted" not in err  # the old Ctrl-C path, without the counts
