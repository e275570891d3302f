"""Item 1: OpenIGTLink under generated and mutated messages, slow and half-open peers.

Messages are generated structure-aware (every type usnav speaks, header v1 and v2 with
metadata) and then mutated by a seeded :class:`random.Random`:

============  ================================================================================
valid         as encoded (v1, or v2 with 0–6 metadata entries, ASCII and UTF-8 values)
hostile body  bytes of the body replaced, cut or extended, the size and the CRC made to match
wrong CRC     the body intact, the CRC wrong
wrong size    the declared body size off by 1–100 bytes (the stream framing is lost)
metadata      v2 edge cases: ext header sizes that do not fit, a meta index that lies, key and
              value sizes past the end, unknown encodings, invalid UTF-8, 0 and 65535 entries,
              protocol-3 message ids (CRC correct)
huge size     a declared body of 2^24..2^64-1 bytes (refused before allocating)
header junk   versions 0/3/0xFFFF, non-ASCII type or name, empty type (CRC correct)
truncated     the message cut anywhere, then the connection closed
random        random bytes
============  ================================================================================

Two passes: every message through the decoder in-process (decode_header + decode_body, as a
connection does; only :class:`~usnav.igtl.codec.ProtocolError` may come out), and a share of
them over real loopback TCP into each target, after which a clean peer must still be served.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from usnav.igtl.codec import (
    ENCODING_UTF8,
    HEADER_SIZE,
    ImageContent,
    Message,
    Point,
    PointContent,
    PolyDataContent,
    ProtocolError,
    RawContent,
    StatusContent,
    StringContent,
    TransformContent,
    crc64,
    decode_body,
    decode_header,
    encode,
)
from usnav.lifeline import child_env
from usnav.soak.report import ItemResult

ANCHOR = (
    "OpenIGTLink: the receiver verifies the CRC-64 of every body and rejects a mismatch "
    "(igtl::MessageBase::Unpack(crccheck)); PLUS's server keeps serving other clients"
)
_HEADER = struct.Struct(">H12s20sQQQ")
_MAX_BODY = 1 << 20  # the servers' default max_message_bytes
#: Largest RSS growth accepted over the second half of a target's messages, MB. Not 0: a
#: reconnecting peer gets new threads, and glibc keeps per-thread arenas and freed 1 MB
#: bodies mapped; what the bound catches is growth with the message count (the figures of
#: a short and a long run are compared in docs/reliability.md).
MEMORY_MB = 48.0

MUTATIONS = (
    "valid",
    "hostile body",
    "wrong CRC",
    "wrong size",
    "metadata",
    "huge size",
    "header junk",
    "truncated",
    "random",
)


@dataclass(frozen=True)
class Case:
    """One generated input: its mutation, the bytes, and whether the stream stays framed."""

    mutation: str
    data: bytes
    framed: bool


# -- generation ----------------------------------------------------------------------------
def _valid_message(rng: random.Random, image_name: str, transform_name: str) -> Message:
    kind = rng.randrange(9)
    t = 1.7e9 + rng.random() * 1e3
    if kind <= 2:
        dtype = rng.choice(["u1", "i1", ">u2", "<i2", "u4", ">i4", "<f4", ">f8"])
        shape: tuple[int, ...] = (rng.randint(1, 40), rng.randint(1, 40))
        channels = rng.random() < 0.2
        if rng.random() < 0.2:
            shape = (rng.randint(1, 3), *shape)
        if channels:
            shape = (*shape, rng.randint(2, 3))
        array = np.frombuffer(
            rng.randbytes(int(np.prod(shape)) * np.dtype(dtype).itemsize), dtype=dtype
        ).reshape(shape)
        if array.dtype.kind == "f":
            array = np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=-1.0)
        matrix = np.eye(4)
        matrix[:3, :3] *= rng.uniform(0.05, 2.0)
        matrix[:3, 3] = [rng.uniform(-500, 500) for _ in range(3)]
        content: object = ImageContent.from_array(array, matrix, channels=channels)
        return Message("IMAGE", image_name, content, t)  # type: ignore[arg-type]
    if kind <= 4:
        matrix = np.eye(4)
        angle = rng.uniform(-np.pi, np.pi)
        matrix[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
        matrix[:3, 3] = [rng.uniform(-500, 500) for _ in range(3)]
        if rng.random() < 0.1:
            matrix[rng.randrange(3), rng.randrange(4)] = rng.choice([np.nan, np.inf, 1e30])
        name = transform_name if rng.random() < 0.8 else f"T{rng.randrange(100)}ToReference"
        return Message("TRANSFORM", name, TransformContent(matrix), t)
    if kind == 5:
        status = StatusContent(rng.randrange(20), rng.randrange(5), "E", "status text")
        return Message("STATUS", "", status, t)
    if kind == 6:
        return Message("STRING", "Text", StringContent("x" * rng.randrange(50)), t)
    if kind == 7:
        if rng.random() < 0.5:
            points = PointContent([Point(f"P{i}", "G", position=(i, 2.0, 3.0)) for i in range(3)])
            return Message("POINT", "Targets", points, t)
        polydata = PolyDataContent(np.zeros((4, 3)), polygons=[[0, 1, 2], [1, 2, 3]])
        return Message("POLYDATA", "Surface", polydata, t)
    query = rng.choice(["GET_STATUS", "GET_IMAGE", "GET_TDATA", "STT_TDATA", "STP_TDATA"])
    return Message(query, rng.choice(["", image_name, "Nope"]), RawContent(b""), t)


def _metadata(rng: random.Random) -> dict[str, str]:
    keys = ["TransformStatus", "FrameNumber", "UltrasoundImageOrientation", "Key", "IGTL_X"]
    out = {}
    for _ in range(rng.randrange(7)):
        value = rng.choice(["OK", "INVALID", "MISSING", "12", "-3", "MF", "UN", "é€", "", "x" * 99])
        out[rng.choice(keys) + rng.choice(["", "Probe", "ProbeToReference"])] = value
    return out


def _header(version: int, mtype: bytes, name: bytes, ts: int, size: int, crc: int) -> bytes:
    return _HEADER.pack(version, mtype, name, ts, size, crc)


def _rebuild(header: bytes, body: bytes) -> bytes:
    version, mtype, name, ts, _, _ = _HEADER.unpack(header)
    return _header(version, mtype, name, ts, len(body), crc64(body)) + body


def _metadata_edge(rng: random.Random, message: Message, body: bytes) -> bytes:
    entries = [(b"Key", 3, b"value"), ("Clé".encode(), ENCODING_UTF8, "é".encode())]
    head = struct.pack(">H", len(entries)) + b"".join(
        struct.pack(">HHI", len(k), e, len(v)) for k, e, v in entries
    )
    data = b"".join(k + v for k, _, v in entries)
    ext_size, msg_id = 12, rng.randrange(1 << 32)
    case = rng.randrange(10)
    if case == 0:  # extended header size below 12 or past the body
        ext_size = rng.choice([0, 1, 11, 0xFFFF])
    elif case == 1:  # index count lies
        head = struct.pack(">H", rng.choice([0, 3, 0xFFFF])) + head[2:]
    elif case == 2:  # key/value sizes past the metadata
        head = head[:2] + struct.pack(">HHI", 0xFFFF, 3, 0xFFFFFFFF) + head[10:]
    elif case == 3:  # unknown encoding, invalid UTF-8
        head = head[:2] + struct.pack(">HHI", 3, rng.choice([0, 999, 106]), 5) + head[10:]
        data = b"\xff\xfe\x00" + b"\xc3\x28\xa0\xa1\xe2" + data[8:]
    elif case == 4:  # no metadata at all, but metadata bytes
        head, data = b"", b"trailing"
    elif case == 5:  # 65535 empty entries declared, none there
        head = struct.pack(">H", 0xFFFF)
    elif case == 6:  # zero-length keys and values
        head = struct.pack(">H", 2) + struct.pack(">HHI", 0, 3, 0) * 2
        data = b""
    elif case == 7:  # meta sizes in the ext header disagree with what follows
        body = body[: rng.randrange(len(body) + 1)]
    elif case == 8:  # an empty v2 body, or one shorter than the ext header
        return _header(2, b"TRANSFORM", b"T", 0, 0, crc64(b"")) + b""
    meta_head_size = len(head) if case != 7 else rng.randrange(1 << 16)
    ext = struct.pack(">HHII", ext_size, meta_head_size, len(data), msg_id)
    v2_body = ext + body + head + data
    name = message.device_name.encode("ascii")[:20]
    return _header(2, message.type.encode(), name, 0, len(v2_body), crc64(v2_body)) + v2_body


def generate(
    rng: random.Random, image_name: str = "Image_Reference", transform: str = "ProbeToReference"
) -> Case:
    """One seeded case (see the module docstring for the mutations)."""
    mutation = rng.choice(MUTATIONS)
    message = _valid_message(rng, image_name, transform)
    version = 2 if rng.random() < 0.5 else 1
    if version == 2:
        message.metadata = _metadata(rng)
    try:
        data = encode(message, version)
    except (ValueError, UnicodeError):
        data = encode(Message("STATUS", "", StatusContent(), 0.0), 1)
        version = 1
    header, body = data[:HEADER_SIZE], data[HEADER_SIZE:]
    if mutation == "valid":
        return Case(mutation, data, True)
    if mutation == "hostile body":
        b = bytearray(body)
        for _ in range(rng.randint(1, 16)):
            what = rng.randrange(4)
            if what == 0 and b:
                b[rng.randrange(len(b))] = rng.randrange(256)
            elif what == 1 and b:
                del b[rng.randrange(len(b)) :]
            elif what == 2:
                b += rng.randbytes(rng.randint(1, 64))
            elif b:  # overwrite a 32-bit field with an extreme value
                at = rng.randrange(max(1, len(b) - 4))
                b[at : at + 4] = struct.pack(">I", rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF]))
        return Case(mutation, _rebuild(header, bytes(b)), True)
    if mutation == "wrong CRC":
        version_, mtype, name, ts, size, crc = _HEADER.unpack(header)
        crc ^= 1 << rng.randrange(64)
        return Case(mutation, _header(version_, mtype, name, ts, size, crc) + body, True)
    if mutation == "wrong size":
        version_, mtype, name, ts, size, crc = _HEADER.unpack(header)
        size = max(0, size + rng.choice([-1, 1]) * rng.randint(1, 100))
        return Case(mutation, _header(version_, mtype, name, ts, size, crc) + body, False)
    if mutation == "metadata":
        v1_body = encode(message, 1)[HEADER_SIZE:] if version == 2 else body
        return Case(mutation, _metadata_edge(rng, message, v1_body), True)
    if mutation == "huge size":
        version_, mtype, name, ts, _, crc = _HEADER.unpack(header)
        size = rng.choice([1 << 24, 1 << 32, 1 << 40, (1 << 64) - 1, _MAX_BODY + 1])
        return Case(mutation, _header(version_, mtype, name, ts, size, crc) + body[:64], False)
    if mutation == "header junk":
        version_, mtype, name, ts, size, _ = _HEADER.unpack(header)
        what = rng.randrange(4)
        if what == 0:
            version_ = rng.choice([0, 3, 0xFFFF])
        elif what == 1:
            mtype = rng.choice([b"", b"\xffIMAGE", b"IM\x00AGE", b"\x7f" * 12, b"image"])
        elif what == 2:
            name = rng.randbytes(20)
        else:
            ts = rng.choice([0, (1 << 64) - 1, 1 << 63])
        return Case(mutation, _header(version_, mtype, name, ts, size, crc64(body)) + body, True)
    if mutation == "truncated":
        return Case(mutation, data[: rng.randrange(1, len(data))], False)
    return Case(mutation, rng.randbytes(rng.randint(1, 400)), False)


def cases(seed: int, count: int, **names: str) -> Iterator[Case]:
    """``count`` seeded cases."""
    rng = random.Random(seed)
    for _ in range(count):
        yield generate(rng, **names)


# -- pass 1: the decoder -------------------------------------------------------------------
def decode_like_a_connection(data: bytes) -> str:
    """Decode one case as a connection would; returns the outcome ("ok" or the reason).

    Raises whatever the decoder raises other than ProtocolError (that is a bug).
    """
    if len(data) < HEADER_SIZE:
        return "truncated header"
    try:
        header = decode_header(data[:HEADER_SIZE], _MAX_BODY)
    except ProtocolError as exc:
        return exc.reason
    body = bytearray(data[HEADER_SIZE : HEADER_SIZE + header.body_size])
    if len(body) < header.body_size:
        return "truncated body"
    try:
        decode_body(header, body)
    except ProtocolError as exc:
        return exc.reason
    return "ok"


def run_decoder(seed: int, count: int) -> ItemResult:
    """Every case through the decoder in-process."""
    result = ItemResult("igtl: decoder", ANCHOR, f"{count} messages in-process, seed {seed}")
    started = time.monotonic()
    outcomes: dict[str, int] = {}
    for i, case in enumerate(cases(seed, count)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a warning per hostile message is a bug too
                outcome = decode_like_a_connection(case.data)
        except Exception as exc:  # anything but ProtocolError (handled inside) is a finding
            result.fail(f"case {i} ({case.mutation}): {type(exc).__name__}: {exc}")
            continue
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    result.count = count
    result.figures["accepted"] = outcomes.get("ok", 0)
    result.figures["refused"] = count - outcomes.get("ok", 0) - result.failed
    result.figures["refusal reasons"] = len(outcomes) - ("ok" in outcomes)
    result.seconds = time.monotonic() - started
    return result


# -- pass 2: over the wire -----------------------------------------------------------------
class _ErrorLog(logging.Handler):
    """Collects ERROR records of usnav (an exception caught and logged is still a bug)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.name}: {record.getMessage()}"[:300])


@contextlib.contextmanager
def _watch_errors(result: ItemResult) -> Iterator[None]:
    handler = _ErrorLog()
    logger = logging.getLogger("usnav")
    logger.addHandler(handler)
    hook = threading.excepthook
    crashed: list[str] = []

    def on_thread_crash(args: threading.ExceptHookArgs) -> None:
        crashed.append(f"thread {args.thread.name if args.thread else '?'}: {args.exc_value!r}")

    threading.excepthook = on_thread_crash
    try:
        yield
    finally:
        threading.excepthook = hook
        logger.removeHandler(handler)
        for line in handler.records + crashed:
            result.fail(line)


def _rss_mb(pid: int | None = None) -> float:
    import psutil

    return psutil.Process(pid or os.getpid()).memory_info().rss / 1e6


def _send_sessions(
    port: int, seed: int, count: int, result: ItemResult, midpoint: Callable[[], None]
) -> dict[str, int]:
    """Connect to a server and send ``count`` cases, reconnecting after each unframed one;
    ``midpoint()`` is called half-way (memory is compared between there and the end)."""
    sent: dict[str, int] = {}
    sock: socket.socket | None = None
    try:
        for i, case in enumerate(cases(seed, count)):
            if i == count // 2:
                midpoint()
            if sock is None:
                sock = _connect(port)
                if sock is None:
                    result.fail(f"server on port {port} stopped accepting connections")
                    return sent
            with contextlib.suppress(OSError):
                sock.sendall(case.data)
                _drain(sock)
            sent[case.mutation] = sent.get(case.mutation, 0) + 1
            if not case.framed:
                sock.close()
                sock = None
    finally:
        if sock is not None:
            sock.close()
    return sent


def _connect(port: int, timeout_s: float = 5.0) -> socket.socket | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
            sock.setblocking(False)
            return sock
        except OSError:
            time.sleep(0.05)
    return None


def _drain(sock: socket.socket) -> None:
    """Read (and forget) what the server sent so its queue never fills."""
    with contextlib.suppress(BlockingIOError, OSError):
        while sock.recv(1 << 16):
            pass


def _storm(port: int, connects: int) -> int:
    """Connect and disconnect ``connects`` times; returns how many connections succeeded."""
    ok = 0
    for _ in range(connects):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 5):
            ok += 1
    return ok


def _slowloris(port: int, seconds: float, result: ItemResult, who: str) -> float | None:
    """Trickle a header a byte a second; returns when the server cut it off (s) or None."""
    data = encode(Message("TRANSFORM", "Slow", TransformContent(np.eye(4))), 1)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), 5) as slow:
        slow.settimeout(0.01)
        for byte in data:
            if time.monotonic() - started > seconds:
                break
            try:
                slow.sendall(bytes([byte]))
                with contextlib.suppress(TimeoutError, BlockingIOError):
                    if slow.recv(1 << 16) == b"":
                        return time.monotonic() - started
            except OSError:
                return time.monotonic() - started
            time.sleep(1.0)
    result.fail(f"{who}: a byte-a-second peer was still connected after {seconds:.0f} s")
    return None


def _half_open(port: int) -> socket.socket:
    """A peer that sends 30 bytes of a header and then nothing, never closing."""
    sock = socket.create_connection(("127.0.0.1", port), 5)
    sock.sendall(encode(Message("STATUS", "", StatusContent()), 1)[:30])
    return sock


def _probe_frames(port: int, count: int, timeout_s: float = 20.0) -> int:
    """A clean ProbeClient: frames received from ``port`` within ``timeout_s``."""
    from usnav.devices.config import ProbeConfig
    from usnav.devices.probe import ProbeClient

    got = 0
    with ProbeClient(ProbeConfig(port=port, pairing_wait_s=0.0), name="clean peer") as probe:
        probe.start()
        deadline = time.monotonic() + timeout_s
        while got < count and time.monotonic() < deadline:
            if probe.get_frame(0.2) is not None:
                got += 1
    return got


def _tiny_recording(folder: Path) -> Path:
    from usnav.frames import TrackedFrame, TrackedTransform
    from usnav.io.sequence import write_sequence

    rng = np.random.default_rng(0)
    frames = []
    for k in range(30):
        pose = np.eye(4)
        pose[:3, 3] = [k, 0, 0]
        frames.append(
            TrackedFrame(
                rng.integers(0, 255, (32, 40), dtype=np.uint8),
                {"ProbeToReference": TrackedTransform(pose)},
                t_device=10 + k / 30,
                frame_number=k,
            )
        )
    return write_sequence(folder / "tiny.igs.mha", frames)


class _Child:
    """A usnav subprocess with its output in files (for tracebacks) and its RSS."""

    def __init__(self, args: list[str], folder: Path, name: str):
        self.out = folder / f"{name}.out"
        self.err = folder / f"{name}.err"
        env = child_env(PYTHONUNBUFFERED="1")  # ends with the soak, even a killed one
        with self.out.open("w") as out, self.err.open("w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "usnav", *args],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=env,
            )

    def wait_listening(self, timeout_s: float = 60.0) -> int | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.process.poll() is None:
            from usnav.devices.playback import _LISTENING  # the line usnav replay prints

            match = _LISTENING.search(self.out.read_text())
            if match:
                return int(match.group(2))
            time.sleep(0.05)
        return None

    def rss_mb(self) -> float:
        return _rss_mb(self.process.pid)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(2)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
                return None
        return self.process.returncode

    def traceback(self) -> str | None:
        text = self.err.read_text(errors="replace")
        return text[-300:] if "Traceback" in text else None


def _check_memory(result: ItemResult, who: str, before: float, after: float, bound: float) -> None:
    """RSS from half-way through the messages (imports and caches warm) to the end."""
    result.figures[f"{who} RSS 2nd half MB"] = round(after - before, 1)
    result.check(
        after - before < bound, f"{who}: RSS grew {after - before:.0f} MB in the second half"
    )


def _against_server(
    result: ItemResult,
    who: str,
    port: int,
    seed: int,
    count: int,
    connects: int,
    slow_s: float,
    rss: Callable[[], float],
    served: Callable[[], bool],
) -> None:
    """The server-side sequence: fuzz sessions, storm, slowloris + half-open, clean peer."""
    marks: list[float] = []
    sent = _send_sessions(port, seed, count, result, lambda: marks.append(rss()))
    before = marks[0] if marks else rss()
    result.count += sum(sent.values())
    result.figures[f"{who} connects"] = _storm(port, connects)
    result.count += connects
    half = _half_open(port)
    try:
        cut = _slowloris(port, slow_s, result, who) if slow_s > 0 else None
        if cut is not None:
            result.figures[f"{who} slowloris cut after s"] = round(cut, 1)
        result.count += 2
    finally:
        half.close()
    result.check(served(), f"{who}: a clean peer was not served after the campaign")
    _check_memory(result, who, before, rss(), MEMORY_MB)


def _serve_cases(
    listener: socket.socket,
    seed: int,
    count: int,
    result: ItemResult,
    who: str,
    midpoint: Callable[[], None],
    **names: str,
) -> int:
    """Be the server: accept the target and write the cases to it, re-accepting after each
    unframed one; ``midpoint()`` half-way. Returns the cases sent."""
    sent = 0
    conn: socket.socket | None = None
    listener.settimeout(10)
    try:
        for i, case in enumerate(cases(seed, count, **names)):
            if i == count // 2:
                midpoint()
            if conn is None:
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    result.fail(f"{who}: did not reconnect within 10 s")
                    return sent
                conn.settimeout(10)
            try:
                conn.sendall(case.data)
            except OSError:
                conn.close()
                conn = None  # the target closed it (a refused message): reconnect
                continue
            sent += 1
            if not case.framed:
                conn.close()
                conn = None
    finally:
        if conn is not None:
            conn.close()
    return sent


def _clean_frames(conn: socket.socket, count: int, name: str = "Image_Reference") -> None:
    for k in range(count):
        image = ImageContent.from_array(np.full((24, 32), k, np.uint8))
        conn.sendall(encode(Message("IMAGE", name, image, 100.0 + k / 30), 1))


def _against_probe(result: ItemResult, seed: int, count: int, connects: int) -> None:
    from usnav.devices.config import ProbeConfig
    from usnav.devices.probe import ProbeClient

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        config = ProbeConfig(port=port, transforms=["ProbeToReference"], receive_timeout_s=1.0)
        probe = ProbeClient(config, name="fuzzed probe")
        stop = threading.Event()

        def consume() -> None:
            while not stop.is_set():
                probe.get_frame(0.1)

        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()
        marks: list[float] = []
        with _watch_errors(result), probe:
            probe.start()
            result.count += _serve_cases(
                listener, seed, count, result, "probe client", lambda: marks.append(_rss_mb())
            )
            for _ in range(connects):  # accept and hang up at once
                listener.settimeout(10)
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    result.fail("probe client: stopped reconnecting during the storm")
                    break
                conn.close()
                result.count += 1
            # a silent server: the client must give up on it and come back
            listener.settimeout(10)
            silent, _ = listener.accept()
            t0 = time.monotonic()
            try:
                again, _ = listener.accept()
                result.figures["probe silent server left after s"] = round(time.monotonic() - t0, 1)
            except TimeoutError:
                result.fail("probe client: stayed on a silent server")
                again = None
            silent.close()
            result.count += 1
            if again is not None:
                stop.set()
                consumer.join(5)
                while probe.get_frame(0.05) is not None:
                    pass
                _clean_frames(again, 10)
                got = sum(probe.get_frame(5) is not None for _ in range(10))
                result.check(got == 10, f"probe client: {got} of 10 clean frames after the fuzz")
                again.close()
        stop.set()
        _check_memory(result, "probe client", marks[0] if marks else 0.0, _rss_mb(), MEMORY_MB)


def _against_record(result: ItemResult, seed: int, count: int, folder: Path) -> None:
    out = folder / "fuzzed.igs.mha"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        child = _Child(
            ["record", "--out", str(out), "--port", str(port), "--frames", "10"],
            folder,
            "record",
        )
        try:
            listener.settimeout(60)
            conn, _ = listener.accept()  # first connection: a clean frame so the file exists
            _clean_frames(conn, 1)
            conn.close()
            marks: list[float] = []
            # fuzz IMAGEs under another name: a valid frame of another size would rightly end
            # the recording (one file per image size is `usnav run`'s job)
            result.count += _serve_cases(
                listener,
                seed,
                count,
                result,
                "usnav record",
                lambda: marks.append(child.rss_mb()),
                image_name="Fuzz_Image",
            )
            after = child.rss_mb()
            conn, _ = listener.accept()
            _clean_frames(conn, 9)
            try:
                code = child.process.wait(30)
            except subprocess.TimeoutExpired:
                code = None
            conn.close()
        finally:
            stopped = child.stop()
    result.check(code == 0, f"usnav record: exit {code if code is not None else stopped}")
    tb = child.traceback()
    result.check(tb is None, f"usnav record: traceback {tb}")
    _check_memory(result, "usnav record", marks[0] if marks else 0.0, after, MEMORY_MB)
    if out.exists():
        from usnav.io.sequence import read_sequence

        with read_sequence(out) as seq:
            result.check(len(seq) == 10, f"usnav record: {len(seq)} of 10 clean frames written")
    else:
        result.fail("usnav record: no file written")


TARGETS = ("Slicer re-export", "usnav replay", "probe client", "usnav record")


def run_wire(
    seed: int, count: int, connects: int, slow_s: float, targets: tuple[str, ...] = TARGETS
) -> ItemResult:
    """``count`` cases over TCP into each target, plus storms and slow peers."""
    result = ItemResult(
        "igtl: wire",
        ANCHOR,
        f"{count} messages into each of {len(targets)} targets ({', '.join(targets)}), "
        f"{connects} connects/disconnects each, "
        f"slowloris {slow_s:.0f} s, 1 half-open peer; seed {seed}",
    )
    started = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="usnav-soak-igtl-"))
    try:
        if "Slicer re-export" in targets:
            _against_slicer(result, seed, count, connects, slow_s)
        if "usnav replay" in targets:
            _against_replay(result, seed + 1, count, connects, slow_s, folder)
        if "probe client" in targets:
            _against_probe(result, seed + 2, count, min(connects, 200))
        if "usnav record" in targets:
            _against_record(result, seed + 3, count, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result.seconds = time.monotonic() - started
    return result


def _against_slicer(
    result: ItemResult, seed: int, count: int, connects: int, slow_s: float
) -> None:
    """The Slicer re-export server, in this process."""
    from usnav.frames import TrackedFrame
    from usnav.igtl import IgtlClient
    from usnav.publish.slicer import SlicerExporter

    with _watch_errors(result), SlicerExporter(port=0) as exporter:
        got: list[Message] = []

        def slicer_served() -> bool:
            client = IgtlClient("127.0.0.1", exporter.port, on_message=got.append).start()
            try:
                if not exporter.server.wait_for_clients(1, timeout_s=10):
                    return False
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and not got:
                    exporter.publish(TrackedFrame(np.zeros((8, 8), np.uint8)), np.eye(4))
                    time.sleep(0.05)
                return bool(got)
            finally:
                client.stop()

        _against_server(
            result, "Slicer re-export", exporter.port, seed, count, connects, slow_s,
            _rss_mb, slicer_served,
        )  # fmt: skip


def _against_replay(
    result: ItemResult, seed: int, count: int, connects: int, slow_s: float, folder: Path
) -> None:
    """``usnav replay``, a real process."""
    recording = _tiny_recording(folder)
    child = _Child(["replay", str(recording), "--port", "0", "--loop"], folder, "replay")
    try:
        port = child.wait_listening()
        if port is None:
            result.fail(f"usnav replay did not start: {child.err.read_text()[-300:]}")
        else:
            _against_server(
                result, "usnav replay", port, seed, count, connects, slow_s,
                child.rss_mb, lambda: _probe_frames(port, 10) == 10,
            )  # fmt: skip
            result.check(child.process.poll() is None, "usnav replay: exited")
    finally:
        child.stop()
    tb = child.traceback()
    result.check(tb is None, f"usnav replay: traceback {tb}")


def run_igtl(
    seed: int = 1,
    messages: int = 100_000,
    wire_messages: int | None = None,
    connects: int = 1000,
    slow_s: float = 8.0,
) -> list[ItemResult]:
    """Item 1: ``messages`` through the decoder, ``wire_messages`` (default: a quarter of
    them) over TCP into each target."""
    wire = messages // 4 if wire_messages is None else wire_messages
    results = [run_decoder(seed, messages)]
    if wire or connects or slow_s:
        results.append(run_wire(seed, wire, connects, slow_s))
    return results
