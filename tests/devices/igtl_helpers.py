"""Helpers for device tests (real sockets on loopback)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

from waiting import wait_until

__all__ = [
    "EXAMPLES",
    "MASK",
    "POLY",
    "build_examples",
    "crc64_bitwise",
    "free_port",
    "raw_message",
    "recv_message",
    "wait_until",
]

POLY = 0x42F0E1EBA9EA3693
MASK = (1 << 64) - 1


def crc64_bitwise(data: bytes, crc: int = 0) -> int:
    """Reference CRC-64/ECMA-182: the bitwise definition (MSB first, init 0, no final XOR)."""
    for byte in data:
        crc ^= byte << 56
        for _ in range(8):
            crc = ((crc << 1) ^ POLY) & MASK if crc >> 63 else (crc << 1) & MASK
    return crc


def raw_message(
    version: int,
    mtype: str,
    name: bytes | str,
    body: bytes,
    ts: int = 0,
    crc: int | None = None,
    body_size: int | None = None,
) -> bytes:
    """A message built by hand from the spec (header + body), independent of usnav's codec."""
    if isinstance(name, str):
        name = name.encode()
    header = struct.pack(
        ">H12s20sQQQ",
        version,
        mtype.encode(),
        name,
        ts,
        len(body) if body_size is None else body_size,
        crc64_bitwise(body) if crc is None else crc,
    )
    return header + body


def recv_message(sock: socket.socket, timeout_s: float = 5.0) -> tuple[int, str, str, bytes]:
    """Read one message with plain socket calls: (version, type, name, body)."""
    sock.settimeout(timeout_s)
    header = _recv_exact(sock, 58)
    version, mtype, name, _, size, _ = struct.unpack(">H12s20sQQQ", header)
    body = _recv_exact(sock, size)
    return version, mtype.rstrip(b"\0").decode(), name.rstrip(b"\0").decode(), body


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port where nobody listens, for as long as the block runs: it stays bound
    (never listening), so connections to it are refused and no other process (another pytest
    worker) can start a server on it meanwhile, as it could on a port found free and let go."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


#: Sources of the OpenIGTLink C++ library's examples (Debian: openigtlink-examples).
EXAMPLES = Path("/usr/share/doc/openigtlink-examples/examples")


def build_examples(programs: tuple[str, ...]) -> dict[str, Path] | None:
    """Compile the named example programs (``"Imager/ImagerServer"``...) once into a cache
    folder; None when the sources, the library headers or g++ are missing."""
    include = Path("/usr/include/openigtlink")
    compiler = shutil.which("g++")
    if compiler is None or not include.is_dir() or not EXAMPLES.is_dir():
        return None
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    out_dir = cache / "usnav-openigtlink-examples"
    out_dir.mkdir(parents=True, exist_ok=True)
    built = {}
    for program in programs:
        source = EXAMPLES / f"{program}.cxx"
        binary = out_dir / Path(program).name
        if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
            partial = binary.with_suffix(f".{os.getpid()}.part")
            command = [compiler, "-O1", "-w", "-o", str(partial), str(source), f"-I{include}"]
            subprocess.run([*command, "-lOpenIGTLink"], check=True, capture_output=True)
            partial.replace(binary)
        built[Path(program).name] = binary
    return built


def served_frames(recording: Path, count: int, calibration=None, transforms=()) -> list:
    """``count`` frames of ``recording`` as a :class:`ProbeClient` receives them from a
    :class:`PlaybackServer` on loopback (``calibration``: an ImageToProbe 4×4 or None;
    ``transforms``: the TRANSFORM names the client expects)."""
    from usnav.config.calibration import CalibrationFile, SpatialCalibration
    from usnav.devices.config import ProbeConfig
    from usnav.devices.playback import PlaybackServer
    from usnav.devices.probe import ProbeClient

    given = (
        None
        if calibration is None
        else CalibrationFile(spatial=SpatialCalibration(image_to_probe=calibration.tolist()))
    )
    playback = PlaybackServer(recording, port=0, rate="max", calibration=given)
    playback.connect()
    probe = ProbeClient(ProbeConfig(port=playback.port, transforms=list(transforms)))
    try:
        probe.start()
        assert playback.server.wait_for_clients(1, timeout_s=30)
        playback.start()
        frames = [probe.get_frame(30) for _ in range(count)]
    finally:
        probe.close()
        playback.close()
    assert None not in frames
    return frames
