"""OpenIGTLink device benchmarks, each beside pyigtl measured in the same run.

- CRC-64 throughput of usnav's kernel vs crcmod (what pyigtl uses).
- Loopback streaming, CRC verified on receive, zero loss: frames/s of a 512×512 uint8 IMAGE +
  2 TRANSFORM per frame, and of 1024×1024 frames; sender and receiver in separate processes
  (as a PLUS server and usnav are). The receiver is usnav's probe client, so a frame counts
  only once it is an assembled TrackedFrame.
- Latency at 60 fps: from the sender stamping the frame (``time.time()``, same machine) to the
  TrackedFrame being delivered, p50/p99.

pyigtl's baseline is its own server (``send_message(wait=True)``) to its own client (which
polls and keeps only the latest message per device, so its frame count is what survived).
pyigtl's server handler waits up to 10 ms for incoming data between sends, which caps
``wait=True`` at roughly one message per 10 ms on this path; that is pyigtl as a user gets it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

from usnav.bench.registry import BenchContext, Figure, benchmark

_PHASES_QUICK = [("t512", 512, 800, 0.0), ("t1024", 1024, 300, 0.0), ("lat", 512, 90, 60.0)]
_PHASES_FULL = [("t512", 512, 5000, 0.0), ("t1024", 1024, 1500, 0.0), ("lat", 512, 600, 60.0)]
_PYIGTL_QUICK = [("t512", 512, 120, 0.0), ("t1024", 1024, 50, 0.0), ("lat", 512, 60, 60.0)]
_PYIGTL_FULL = [("t512", 512, 1500, 0.0), ("t1024", 1024, 500, 0.0), ("lat", 512, 300, 60.0)]


# -- CRC -----------------------------------------------------------------------------------
@benchmark("CRC-64 throughput", "devices")
def bench_crc(ctx: BenchContext) -> list[Figure]:
    import crcmod

    from usnav.igtl.codec import crc64

    crcmod_crc = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, rev=False, initCrc=0, xorOut=0)
    size = (16 << 20) if ctx.full else 512 * 512 + 84
    data = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8)
    raw = data.tobytes()
    assert crc64(data) == crcmod_crc(raw)

    def rate(fn, payload, seconds: float) -> float:
        fn(payload)
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or runs < 3:
            fn(payload)
            runs += 1
        return size * runs / (time.perf_counter() - start) / 1e9

    ours = rate(crc64, data, 1.0 if ctx.full else 0.3)
    theirs = rate(crcmod_crc, raw, 1.0 if ctx.full else 0.3)
    label = "16 MiB" if ctx.full else "512x512 IMAGE body"
    return [
        Figure(
            f"CRC-64 ({label})",
            ours,
            "GB/s",
            "≥ 2 GB/s",
            ours >= 2.0,
            "crcmod (pyigtl)",
            theirs,
            note=f"per 512x512 frame: {512 * 512 / ours / 1e3:.0f} us",
        ),
    ]


# -- streaming -----------------------------------------------------------------------------
def _make_frame_parts(side: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (side, side), dtype=np.uint8)


def _sender_usnav(phases: list) -> None:
    from usnav.igtl import IgtlServer, ImageContent, Message, TransformContent

    server = IgtlServer(port=0, send_queue_messages=64).start()
    print(f"listening on 127.0.0.1:{server.port}", flush=True)
    server.wait_for_clients(1, timeout_s=60)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not all(
        n > 0 for _, n in server.client_versions().values()
    ):
        time.sleep(0.01)
    probe = np.eye(4)
    ijk = np.diag([0.1, 0.1, 0.1, 1.0])
    for phase, side, count, fps in phases:
        image = _make_frame_parts(side, side)
        start = time.monotonic()
        for i in range(count):
            if fps:
                delay = start + i / fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            t = time.time()
            probe[0, 3] = i
            server.broadcast(
                [
                    Message(
                        "TRANSFORM",
                        "ProbeToReference",
                        TransformContent(probe),
                        t,
                        {"TransformStatus": "OK"},
                    ),
                    Message(
                        "TRANSFORM",
                        "StylusToReference",
                        TransformContent(probe),
                        t,
                        {"TransformStatus": "OK"},
                    ),
                    Message(
                        "IMAGE",
                        "Image_Reference",
                        ImageContent.from_array(image, ijk),
                        t,
                        {"FrameNumber": str(i), "Phase": phase},
                    ),
                ],
                wait_s=10.0,
            )
        server.flush(30)
        time.sleep(0.3)
    server.stop()


def _sender_pyigtl(phases: list) -> None:
    import socket

    import pyigtl

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = pyigtl.OpenIGTLinkServer(port=port, local_server=True)
    print(f"listening on 127.0.0.1:{port}", flush=True)
    deadline = time.monotonic() + 60
    while not server.is_connected() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    for phase, side, count, fps in phases:
        image = _make_frame_parts(side, side)[np.newaxis]  # pyigtl wants (k, j, i)
        start = time.monotonic()
        for i in range(count):
            if fps:
                delay = start + i / fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            t = time.time()
            matrix = np.eye(4)
            matrix[0, 3] = i
            for name in ("ProbeToReference", "StylusToReference"):
                server.send_message(
                    pyigtl.TransformMessage(matrix, timestamp=t, device_name=name), wait=True
                )
            message = pyigtl.ImageMessage(image, timestamp=t, device_name=f"{phase}_{i}")
            server.send_message(message, wait=True)
        time.sleep(0.5)
    server.stop()


def _spawn(kind: str, phases: list) -> tuple[subprocess.Popen, int]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "usnav.bench.bench_devices", kind, json.dumps(phases)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if "listening on" not in line:
        process.kill()
        raise RuntimeError(f"{kind} sender did not start: {line!r}")
    return process, int(line.rsplit(":", 1)[1])


def _receive_usnav(phases: list) -> dict[str, dict]:
    from usnav.devices.config import ProbeConfig
    from usnav.devices.probe import ProbeClient

    process, port = _spawn("sender-usnav", phases)
    results: dict[str, dict] = {p[0]: {"times": [], "latency": [], "numbers": []} for p in phases}
    expected = sum(p[2] for p in phases)
    done = threading.Event()
    received = [0]

    def on_frame(frame) -> None:
        now = time.time()
        r = results[frame.fields.get("Phase", "")]
        r["times"].append(now)
        r["latency"].append(now - frame.t_device)
        r["numbers"].append(frame.frame_number)
        received[0] += 1
        if received[0] >= expected:
            done.set()

    config = ProbeConfig(
        port=port,
        transforms=["ProbeToReference", "StylusToReference"],
        frame_queue=4,
        pairing_wait_s=0.05,
    )
    probe = ProbeClient(config, name="bench-probe")
    probe.on_frame(on_frame)
    probe.start()
    try:
        done.wait(120)
    finally:
        probe.close()
        process.wait(30)
        if process.stdout:
            process.stdout.close()
    return results


def _receive_pyigtl(phases: list) -> dict[str, dict]:
    import pyigtl

    process, port = _spawn("sender-pyigtl", phases)
    results: dict[str, dict] = {p[0]: {"times": [], "latency": [], "numbers": []} for p in phases}
    client = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=port)
    try:
        last = time.monotonic()
        while time.monotonic() - last < 3.0 and process.poll() is None:
            messages = client.get_latest_messages()
            now = time.time()
            for m in messages:
                if m.message_type == "IMAGE":
                    phase, number = m.device_name.rsplit("_", 1)
                    r = results[phase]
                    r["times"].append(now)
                    r["latency"].append(now - m.timestamp)
                    r["numbers"].append(int(number))
                    last = time.monotonic()
            if not messages:
                time.sleep(0.0005)
    finally:
        client.stop()
        process.wait(30)
        if process.stdout:
            process.stdout.close()
    return results


def _fps(r: dict) -> float:
    t = r["times"]
    return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0


@benchmark("OpenIGTLink loopback streaming", "devices")
def bench_streaming(ctx: BenchContext) -> list[Figure]:
    phases = _PHASES_FULL if ctx.full else _PHASES_QUICK
    pyigtl_phases = _PYIGTL_FULL if ctx.full else _PYIGTL_QUICK
    ctx.progress("usnav server -> usnav probe client (separate processes)")
    ours = _receive_usnav(phases)
    ctx.progress("pyigtl server -> pyigtl client")
    theirs = _receive_pyigtl(pyigtl_phases)
    sent = {p[0]: p[2] for p in phases}
    sent_pyigtl = {p[0]: p[2] for p in pyigtl_phases}
    figures = []
    for phase, label, target, goal in (
        ("t512", "512x512 IMAGE + 2 TRANSFORM, zero loss", "≥ 1000 fps", 1000.0),
        ("t1024", "1024x1024 IMAGE + 2 TRANSFORM, zero loss", "≥ 300 fps", 300.0),
    ):
        got = len(ours[phase]["numbers"])
        lossless = got == sent[phase] and ours[phase]["numbers"] == list(range(sent[phase]))
        fps = _fps(ours[phase])
        their_got = len(theirs[phase]["numbers"])
        figures.append(
            Figure(
                f"{label} (CRC verified)",
                fps,
                "fps",
                target,
                bool(lossless and fps >= goal),
                "pyigtl server->client (wait=True)",
                _fps(theirs[phase]),
                note=f"usnav {got}/{sent[phase]} frames; pyigtl kept {their_got}/"
                f"{sent_pyigtl[phase]} (latest-only)",
            )
        )
    lat = np.asarray(ours["lat"]["latency"]) * 1e3
    their_lat = np.asarray(theirs["lat"]["latency"]) * 1e3
    p99 = float(np.percentile(lat, 99)) if lat.size else float("nan")
    their_p99 = float(np.percentile(their_lat, 99)) if their_lat.size else None
    figures.append(
        Figure(
            "send -> TrackedFrame latency p99 at 60 fps (512x512)",
            p99,
            "ms",
            "≤ 5 ms",
            bool(p99 <= 5.0),
            "pyigtl server->client",
            their_p99,
            higher_is_better=False,
            note=f"p50 {np.percentile(lat, 50):.2f} ms over {lat.size} frames; includes the wire",
        )
    )
    return figures


if __name__ == "__main__":  # the sender processes of bench_streaming
    kind, plan = sys.argv[1], [tuple(p) for p in json.loads(sys.argv[2])]
    if kind == "sender-usnav":
        _sender_usnav(plan)
    elif kind == "sender-pyigtl":
        _sender_pyigtl(plan)
    else:
        raise SystemExit(f"unknown sender {kind!r}")
