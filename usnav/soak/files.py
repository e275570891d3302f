"""Item 2: damaged recordings through info / convert / replay / register / reconstruct /
calibrate.

Sources (written fresh, seeded): a tracked sweep as ``.igs.mha`` raw, ``.igs.mha`` compressed,
``.seq.nrrd`` compressed, and the journal of an interrupted recording. Damages: truncation,
bit flips (anywhere, or in the header only), header edits (sizes, types, keys removed or made
absurd), a broken compressed stream, broken journals (pixels cut or flipped, JSON lines cut,
garbled or duplicated, files removed).

Each damaged file goes through the library function behind each command, in-process (the
bulk: a CLI subprocess costs ~1 s of start-up), and a sample through the real CLI:

=========== ==========================================================================
info        :func:`usnav.io.info.describe_file` (strict, then ``tolerant=True``)
convert     :func:`usnav.io.sequence.convert_sequence` (``tolerant=True``); on refusal no
            output may be left, on success the output must read back with as many frames
replay      :class:`usnav.devices.playback.PlaybackServer` loads it (start, close)
register    :func:`usnav.registration.sweep.load_sweep` (what ``usnav register`` reads with;
            the registration itself is not run per file)
reconstruct :func:`usnav.registration.files.reconstruct_recording` (output checked as convert)
calibrate   :func:`usnav.calibration.pivot.calibrate_pivot` (``usnav calibrate pivot``)
=========== ==========================================================================

The rule: each either works or raises :class:`usnav.errors.UsnavError` (the CLI's one line and
exit 2); any other exception is a failure, so is a call longer than :data:`HANG_S`.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from usnav.errors import UsnavError
from usnav.soak.report import ItemResult

ANCHOR = (
    "PLUS reads a sequence file it can parse and otherwise fails the read "
    "(vtkPlusSequenceIO); no figure published. usnav: works or one line + exit 2"
)
HANG_S = 30.0
DAMAGES = (
    "truncated",
    "bit flips",
    "header flips",
    "header edit",
    "compressed stream",
    "journal",
)
_HEADER_KEYS = (
    "DimSize",
    "ElementType",
    "NDims",
    "CompressedData",
    "CompressedDataSize",
    "ElementDataFile",
    "BinaryData",
    "ElementNumberOfChannels",
    "sizes",
    "type",
    "encoding",
    "dimension",
    "kinds",
    "space directions",
)
_VALUES = ("-1", "0", "99999999999", "abc", "", "1 2", "1e308", "nan", "LOCAL", "MET_FLOAT")


def make_sources(folder: Path, frames: int = 12) -> dict[str, Path]:
    """The undamaged sources: three file flavours, a journal, and a calibration file."""
    from usnav.frames import TrackedFrame, TrackedTransform
    from usnav.io.sequence import SequenceWriter, write_sequence

    rng = np.random.default_rng(7)
    tracked = []
    for k in range(frames):
        pose = np.eye(4)
        angle = 0.05 * k
        pose[:3, :3] = [
            [1, 0, 0],
            [0, np.cos(angle), -np.sin(angle)],
            [0, np.sin(angle), np.cos(angle)],
        ]
        pose[:3, 3] = [0.5 * k, 2.0, 3.0]
        tracked.append(
            TrackedFrame(
                rng.integers(0, 255, (24, 32), dtype=np.uint8),
                {
                    "ProbeToReference": TrackedTransform(pose),
                    "StylusToReference": TrackedTransform(pose),
                },
                t_device=5 + k / 30,
                frame_number=k,
            )
        )
    sources = {
        "raw.igs.mha": write_sequence(folder / "raw.igs.mha", tracked, compress=False),
        "zip.igs.mha": write_sequence(folder / "zip.igs.mha", tracked, compress=True),
        "zip.seq.nrrd": write_sequence(folder / "zip.seq.nrrd", tracked, compress=True),
    }
    writer = SequenceWriter(folder / "cut.igs.mha", compress=False, fsync_interval_s=0)
    for frame in tracked:
        writer.append(frame)
    journal = folder / "cut.igs.mha.journal"
    shutil.copytree(journal, folder / "source.igs.mha.journal")
    writer.close()
    (folder / "cut.igs.mha").unlink()
    sources["journal"] = folder / "source.igs.mha.journal"
    calibration = folder / "image_to_probe.txt"
    calibration.write_text("0.2 0 0 0  0 0.2 0 0  0 0 1 0  0 0 0 1\n")
    sources["calibration"] = calibration
    return sources


def _header_end(data: bytes) -> int:
    for marker in (b"ElementDataFile = LOCAL\n", b"\n\n"):
        at = data.find(marker)
        if at >= 0:
            return at + len(marker)
    return min(len(data), 2048)


def damage(rng: random.Random, sources: dict[str, Path], out: Path) -> tuple[str, Path]:
    """One damaged copy of a source, at ``out`` (+ its suffix); returns (what, path)."""
    kind = rng.choice(DAMAGES)
    if kind == "journal":
        target = out.with_name(out.name + ".igs.mha.journal")
        shutil.copytree(sources["journal"], target)
        files = sorted(p for p in target.iterdir() if p.is_file())
        victim = rng.choice(files)
        what = rng.randrange(5)
        data = bytearray(victim.read_bytes())
        if what == 0:
            victim.write_bytes(data[: rng.randrange(len(data) + 1)])
        elif what == 1 and data:
            for _ in range(rng.randint(1, 10)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            victim.write_bytes(data)
        elif what == 2:
            lines = data.split(b"\n")
            at = rng.randrange(len(lines))
            lines.insert(at, rng.choice([b"{", b"[]", b'{"frame": "x"}', b"\xff\xfe", lines[at]]))
            victim.write_bytes(b"\n".join(lines))
        elif what == 3:
            victim.unlink()
        else:
            victim.write_bytes(b"")
        return (
            f"journal ({victim.name}, {['cut', 'flips', 'bad line', 'removed', 'empty'][what]})",
            target,
        )
    name = rng.choice(["raw.igs.mha", "zip.igs.mha", "zip.seq.nrrd"])
    suffix = ".seq.nrrd" if name.endswith(".nrrd") else ".igs.mha"
    target = out.with_name(out.name + suffix)
    data = bytearray(sources[name].read_bytes())
    head = _header_end(bytes(data))
    if kind == "truncated":
        data = data[: rng.randrange(len(data))]
    elif kind == "bit flips":
        for _ in range(rng.randint(1, 32)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == "header flips":
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(head)] ^= 1 << rng.randrange(8)
    elif kind == "header edit":
        text = bytes(data[:head]).decode("latin-1")
        lines = text.split("\n")
        candidates = [
            i
            for i, line in enumerate(lines)
            if line.split(":")[0].split("=")[0].strip() in _HEADER_KEYS
        ]
        if candidates:
            i = rng.choice(candidates)
            sep = "=" if "=" in lines[i] else ":"
            key = lines[i].split(sep)[0]
            lines[i] = "" if rng.random() < 0.2 else f"{key}{sep} {rng.choice(_VALUES)}"
        data = bytearray("\n".join(lines).encode("latin-1")) + data[head:]
    else:  # compressed stream: flip or cut inside the pixel data
        if "zip" not in name:
            data = data[: head + rng.randrange(max(1, len(data) - head))]
        else:
            start = head + rng.randrange(max(1, len(data) - head))
            for _ in range(rng.randint(1, 8)):
                at = min(len(data) - 1, start + rng.randrange(64))
                data[at] = rng.randrange(256)
        kind = f"{kind} ({name})"
    target.write_bytes(bytes(data))
    return f"{kind} ({name})" if "(" not in kind else kind, target


def _outputs(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def _checked(
    result: ItemResult,
    label: str,
    call: Callable[[], object],
    counts: dict[str, list[int]],
    command: str,
) -> object | None:
    """Run one command's function; returns its value, None when it refused (UsnavError)."""
    t0 = time.monotonic()
    value = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a numpy warning on a damaged file is a bug too
            value = call()
        counts[command][0] += 1
    except UsnavError:
        counts[command][1] += 1
    except Exception as exc:
        result.fail(f"{command} {label}: {type(exc).__name__}: {str(exc)[:200]}")
    elapsed = time.monotonic() - t0
    result.check(elapsed < HANG_S, f"{command} {label}: took {elapsed:.0f} s")
    return value


def _one_file(
    result: ItemResult,
    what: str,
    path: Path,
    sources: dict[str, Path],
    counts: dict,
    reconstruct: bool = True,
) -> None:
    from usnav.calibration.pivot import calibrate_pivot
    from usnav.devices.playback import PlaybackServer
    from usnav.io.info import describe_file
    from usnav.io.sequence import convert_sequence, read_sequence
    from usnav.registration.files import reconstruct_recording
    from usnav.registration.sweep import load_sweep

    label = f"{path.name} [{what}]"
    folder = path.parent
    journal = path.name.endswith(".journal")
    _checked(result, label, lambda: describe_file(path), counts, "info")
    _checked(result, label, lambda: describe_file(path, tolerant=True), counts, "info --tolerant")
    out = folder / f"{path.name}.converted.seq.nrrd"
    before = _outputs(folder)
    written = _checked(
        result,
        label,
        lambda: convert_sequence(path, out, tolerant=True),
        counts,
        "convert --tolerant",
    )
    if written is None:
        left = (
            _outputs(folder) - before - ({path.name.removesuffix(".journal")} if journal else set())
        )
        result.check(not left, f"convert {label}: refused but left {sorted(left)}")
    else:
        try:
            with read_sequence(out) as seq:
                seq.frame(len(seq) - 1) if len(seq) else None
        except UsnavError as exc:
            result.fail(f"convert {label}: its output does not read back: {exc}")
    # recovery writes only the output it was given (never the journal's own name): a
    # journal's follow-on checks run on that
    target = path if not journal else out if written is not None else None
    if target is None:
        return
    image_to_probe = np.diag([0.2, 0.2, 1.0, 1.0])

    def replay() -> None:
        server = PlaybackServer(target, port=0, rate="max")
        try:
            server.connect()
        finally:
            server.close()

    _checked(result, label, replay, counts, "replay")
    _checked(result, label, lambda: load_sweep(target, image_to_probe), counts, "register")
    volume = folder / f"{path.name}.volume.nrrd"
    before = _outputs(folder)
    made = (
        None
        if not reconstruct
        else _checked(
            result,
            label,
            lambda: reconstruct_recording(target, sources["calibration"], volume, spacing_mm=[1.0]),
            counts,
            "reconstruct",
        )
    )
    if made is None and reconstruct:
        left = _outputs(folder) - before
        result.check(not left, f"reconstruct {label}: refused but left {sorted(left)}")
    _checked(
        result,
        label,
        lambda: calibrate_pivot(target, "StylusToReference"),
        counts,
        "calibrate pivot",
    )


def _cli(result: ItemResult, label: str, args: list[str], outputs: list[Path]) -> str:
    """One real CLI run: exit 0, or exit 2 with one line and no traceback and no output."""
    try:
        run = subprocess.run(
            [sys.executable, "-m", "usnav", *args],
            capture_output=True,
            text=True,
            timeout=HANG_S * 4,
        )
    except subprocess.TimeoutExpired:
        result.fail(f"usnav {args[0]} {label}: no answer in {HANG_S * 4:.0f} s")
        return "hang"
    if run.returncode == 0:
        return "ok"
    lines = run.stderr.strip().splitlines()
    result.check(run.returncode == 2, f"usnav {args[0]} {label}: exit {run.returncode}")
    result.check("Traceback" not in run.stderr, f"usnav {args[0]} {label}: traceback")
    result.check(len(lines) == 1, f"usnav {args[0]} {label}: {len(lines)} lines on stderr")
    left = [p.name for p in outputs if p.exists()]
    result.check(not left, f"usnav {args[0]} {label}: refused but left {left}")
    return "refused"


def run_files(
    seed: int = 1, files: int = 1000, cli_sample: int = 20, reconstruct: bool = True
) -> ItemResult:
    """Item 2: ``files`` damaged recordings in-process, ``cli_sample`` of them also through
    ``usnav info`` / ``convert`` / ``reconstruct`` subprocesses."""
    result = ItemResult(
        "files: damaged recordings",
        ANCHOR,
        f"{files} damaged files × 7 library calls in-process; {cli_sample} of them × 3 real "
        f"CLI subprocesses (info, convert --tolerant, reconstruct); seed {seed}",
    )
    started = time.monotonic()
    rng = random.Random(seed)
    root = Path(tempfile.mkdtemp(prefix="usnav-soak-files-"))
    commands = ("info", "info --tolerant", "convert --tolerant", "replay", "register")
    counts: dict[str, list[int]] = {
        c: [0, 0] for c in (*commands, "reconstruct", "calibrate pivot")
    }
    kinds: dict[str, int] = {}
    cli = {"ok": 0, "refused": 0, "hang": 0}
    try:
        if reconstruct:  # compile (or load) the kernels first: not a hang of the first file
            from usnav.registration._kernels import warm_up

            warm_up()
        sources = make_sources(root)
        sample = set(random.Random(seed + 1).sample(range(files), min(cli_sample, files)))
        for i in range(files):
            folder = root / f"case{i:05d}"
            folder.mkdir()
            what, path = damage(rng, sources, folder / "damaged")
            kinds[what.split(" (")[0]] = kinds.get(what.split(" (")[0], 0) + 1
            if i in sample:
                converted = folder / "cli.seq.nrrd"
                volume = folder / "cli.nrrd"
                for args, outputs in (
                    (["info", str(path)], []),
                    (["convert", str(path), str(converted), "--tolerant"], [converted]),
                    (
                        [
                            "reconstruct",
                            str(path),
                            "--calibration",
                            str(sources["calibration"]),
                            "--out",
                            str(volume),
                            "--spacing",
                            "1",
                        ],
                        [volume],
                    ),
                ):
                    cli[_cli(result, f"{path.name} [{what}]", args, outputs)] += 1
                if path.name.endswith(".journal"):
                    recovered = folder / path.name.removesuffix(".journal")
                    if recovered.exists():
                        recovered.unlink()
            _one_file(result, what, path, sources, counts, reconstruct)
            result.count += 1
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for command, (ok, refused) in counts.items():
        result.figures[f"{command} read/refused"] = f"{ok}/{refused}"
    result.figures["CLI runs ok/refused"] = f"{cli['ok']}/{cli['refused']}"
    result.figures["damages"] = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    result.seconds = time.monotonic() - started
    return result
