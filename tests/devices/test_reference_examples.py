"""Against the reference implementation: the OpenIGTLink C++ library's own example programs.

Debian's ``openigtlink-examples`` ships their sources; they are compiled once (g++ against
``libopenigtlink-dev``) into a cache folder. usnav reads from ImagerServer (256×256 IMAGEs named
``ImagerClient``) and TrackerServer (TRANSFORMs named ``Tracker`` only), and serves
ReceiveClient (which verifies the CRC of every body and prints what it decoded).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ci_rules import skip_or_fail
from igtl_helpers import EXAMPLES, build_examples, free_port, wait_until

from usnav.devices.config import ProbeConfig
from usnav.devices.playback import PlaybackServer
from usnav.devices.probe import ProbeClient
from usnav.frames import TrackedFrame, TrackedTransform
from usnav.io.sequence import read_sequence, write_sequence
from usnav.publish.slicer import SlicerExporter
from usnav.sim import make_options, simulate_case

IMAGES = EXAMPLES / "Imager" / "img"


@pytest.fixture(scope="module")
def bins() -> dict[str, Path]:
    found = build_examples(
        ("Imager/ImagerServer", "Tracker/TrackerServer", "Receiver/ReceiveClient")
    )
    if found is None:
        skip_or_fail("openigtlink-examples / libopenigtlink-dev / g++ missing (.ci/run installs)")
    return found


def _server(binary: Path, *args: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen(
        [str(binary), str(port), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return process, port


def _stop(process: subprocess.Popen) -> None:
    process.kill()
    process.wait(timeout=10)


def _record(port: int, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "usnav", "record", "--out", str(out), "--port", str(port), *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_imager_server_wrong_name_is_named_then_recorded_pixel_identical(bins, tmp_path):
    process, port = _server(bins["ImagerServer"], "50", str(IMAGES))
    try:
        out = tmp_path / "default.igs.mha"
        result = _record(port, out, "--connect-timeout", "4")
        assert result.returncode == 2, result.stderr
        error = result.stderr.strip().splitlines()[-1]
        assert "IMAGE 'ImagerClient'" in error and "no IMAGE named 'Image_Reference'" in error
        assert 'image_device = "ImagerClient"' in error and "[probe]" in error
        assert "Traceback" not in result.stderr and not out.exists()
        # the key it names, set as it says: every frame, pixel for pixel
        config = tmp_path / "imager.toml"
        config.write_text('[probe]\nimage_device = "ImagerClient"\n')
        out = tmp_path / "imager.igs.mha"
        result = _record(port, out, "--config", str(config), "--frames", "20")
        assert result.returncode == 0, result.stderr
    finally:
        _stop(process)
    raw = [
        np.fromfile(IMAGES / f"igtlTestImage{k}.raw", np.uint8).reshape(256, 256)
        for k in range(1, 6)
    ]
    with read_sequence(out) as seq:
        assert len(seq) == 20
        first = next(k for k in range(5) if np.array_equal(seq[0].image, raw[k]))
        for i in range(20):
            assert np.array_equal(seq[i].image, raw[(first + i) % 5]), f"frame {i}"


def test_tracker_server_only_transforms_is_named(bins, tmp_path):
    process, port = _server(bins["TrackerServer"], "50")
    try:
        out = tmp_path / "tracker.igs.mha"
        result = _record(port, out, "--connect-timeout", "4")
    finally:
        _stop(process)
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]
    assert "TRANSFORM 'Tracker'" in error and "IMAGE none" in error
    assert "image_device" in error and "sent no IMAGE" in error
    assert "Traceback" not in result.stderr and not out.exists()


def test_probe_hint_names_missing_transforms(bins):
    process, port = _server(bins["TrackerServer"], "50")
    config = ProbeConfig(port=port, image_device="ImagerClient", transforms=["ProbeToReference"])
    try:
        with ProbeClient(config) as probe:
            probe.start()
            assert wait_until(lambda: "Tracker" in probe.seen_devices()["TRANSFORM"], 10)
            hint = probe.device_hint()
    finally:
        _stop(process)
    assert hint is not None
    assert "no TRANSFORM named 'ProbeToReference'" in hint
    # 'Tracker' is no <From>To<To> name: a device file set as the hint said was refused
    assert 'transforms = ["Tracker"]' not in hint
    assert "'Tracker' is not a transform name" in hint and "server's configuration" in hint
    with pytest.raises(ValueError, match="exactly one 'To'"):
        ProbeConfig(transforms=["Tracker"])


def test_usnav_run_names_the_devices_it_saw(bins, tmp_path):
    case = tmp_path / "case"
    simulate_case(43, case, make_options(frames=4, save_anatomy=False))
    process, port = _server(bins["TrackerServer"], "50")
    device = tmp_path / "probe.toml"
    device.write_text(f'[probe]\nport = {port}\ntransforms = ["ProbeToReference"]\n')
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "usnav",
                "run",
                "--device",
                str(device),
                "--mri",
                str(case / "mri.nii.gz"),
                "--label",
                str(case / "tumor_label.nii.gz"),
                "--calibration",
                str(case / "calibration.toml"),
                "--no-registration",
                "--quiet",
                "--publish",
                "tcp://127.0.0.1:0",  # any free port, bound by usnav itself
                "--duration",
                "5",
                "--log",
                str(tmp_path / "run.log"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        _stop(process)
    assert "Traceback" not in result.stderr
    hint = [line for line in result.stderr.splitlines() if "seen: IMAGE" in line]
    assert len(hint) == 1, result.stderr
    assert "TRANSFORM 'Tracker'" in hint[0] and "'Tracker' is not a transform name" in hint[0]
    assert "no IMAGE named 'Image_Reference'" in hint[0]


def test_receive_client_decodes_usnav_replay(bins, tmp_path):
    rng = np.random.default_rng(5)
    frames = []
    for k in range(6):
        pose = np.eye(4)
        pose[:3, 3] = [k, 2.0 * k, 3.5]
        frames.append(
            TrackedFrame(
                image=rng.integers(0, 256, (40, 56), dtype=np.uint8),
                transforms={"ProbeToTracker": TrackedTransform(pose)},
                t_device=50.0 + k / 30,
                frame_number=k,
            )
        )
    recording = tmp_path / "sweep.igs.mha"
    write_sequence(recording, frames)
    server = PlaybackServer(recording, port=0, rate="max", wait_for_client=True)
    server.start()
    receiver = subprocess.Popen(
        [str(bins["ReceiveClient"]), "127.0.0.1", str(server.port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.wait(30)  # every frame sent
        assert server.server.flush(10)
    finally:
        server.close()  # EOF: ReceiveClient exits
    _, report = receiver.communicate(timeout=30)
    # ReceiveClient prints an IMAGE's fields (and a TRANSFORM's matrix) only when the CRC is OK
    assert report.count("Device Name           : Image_Reference") == 6, report[-2000:]
    assert report.count("Dimensions            : (56, 40, 1)") == 6
    assert report.count("Receiving TRANSFORM data type.") >= 6


def test_receive_client_decodes_the_slicer_reexport(bins):
    image = np.arange(32 * 48, dtype=np.uint8).reshape(32, 48)
    to_reference = np.diag([0.2, 0.2, 1.0, 1.0])
    with SlicerExporter(port=0) as exporter:
        receiver = subprocess.Popen(
            [str(bins["ReceiveClient"]), "127.0.0.1", str(exporter.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert wait_until(lambda: len(exporter.clients) == 1, 20)
            for k in range(5):
                assert exporter.publish(TrackedFrame(image, frame_number=k), to_reference) == 1
            assert exporter.server.flush(10)
        finally:
            exporter.server.stop()  # EOF: ReceiveClient exits
        _, report = receiver.communicate(timeout=30)
    assert report.count("Device Name           : Image_Reference") == 5, report[-2000:]
    assert report.count("Dimensions            : (48, 32, 1)") == 5
    assert report.count("Receiving TRANSFORM data type.") >= 5  # ImageToReference
