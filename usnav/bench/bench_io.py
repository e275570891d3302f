"""Sequence-file benchmarks: opening big recordings, inflating, recording.

Baselines measured in the same run: SimpleITK's ``ReadImage`` (what a user would otherwise
call on an ``.mha``; it loads every pixel), one-shot ``zlib.decompress`` (the inflate speed
floor of this machine) and SimpleITK's compressed ``WriteImage``. The page cache is warm for
both sides (the files were just written or read), so the open-time figures compare parsing
and loading, not the disk.
"""

from __future__ import annotations

import time
import zlib
from pathlib import Path

import numpy as np

from usnav.bench.registry import BenchContext, Figure, benchmark
from usnav.frames import TrackedFrame, TrackedTransform
from usnav.io.sequence import SequenceWriter, read_sequence

_FRAME = (616, 820)  # rows, cols: the PLUS test recordings' B-mode size


def _frames(count: int, shape: tuple[int, int] = _FRAME):
    """Speckle-like frames (compress like ultrasound, ~3x) with a moving pose."""
    rng = np.random.default_rng(7)
    base = rng.gamma(1.5, 30.0, size=shape).clip(0, 255).astype(np.uint8)
    base[: shape[0] // 5] = 0  # the dark band above the skin line
    for i in range(count):
        pose = np.eye(4)
        pose[:3, 3] = (0.1 * i, 0.0, 50.0)
        yield TrackedFrame(
            np.roll(base, i, axis=1),
            {
                "ProbeToTracker": TrackedTransform(pose),
                "ReferenceToTracker": TrackedTransform(np.eye(4)),
            },
            t_device=0.05 * i,
            frame_number=i,
        )


def _recording(ctx: BenchContext, frames: int, compress: bool) -> Path:
    """A generated recording in the work folder (kept for the next run)."""
    suffix = "igs.mha"
    path = ctx.work_dir / f"bench_io_{frames}f_{'z' if compress else 'raw'}.{suffix}"
    if path.exists() and path.stat().st_size > frames * _FRAME[0] * _FRAME[1] // 8:
        return path
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    ctx.progress(f"writing a {frames}-frame test recording ({path.name})")
    with SequenceWriter(path, compress=compress, fsync_interval_s=float("inf")) as writer:
        for frame in _frames(frames):
            writer.append(frame)
    return path


def _best_of(repeats: int, func) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def _open_figures(ctx: BenchContext, frames: int, label: str, target: str) -> list[Figure]:
    path = _recording(ctx, frames, compress=False)
    size_gb = path.stat().st_size / 1e9

    def open_it() -> None:
        with read_sequence(path) as seq:
            _ = len(seq), seq.image_size, seq.timestamps[-1], seq.transforms("ProbeToTracker")

    t_open = _best_of(3, open_it)
    with read_sequence(path) as seq:
        start = time.perf_counter()
        for i in np.random.default_rng(1).integers(0, len(seq), 50):
            np.array(seq.image(int(i)))  # touch every pixel of the frame
        t_frame = (time.perf_counter() - start) / 50
    figures = [
        Figure(
            f"open {label} uncompressed recording ({frames} frames, {size_gb:.2f} GB)",
            1000 * t_open,
            "ms",
            target=target,
            met=t_open < 1.0 if target else None,
            higher_is_better=False,
            note="header parse + memory map, warm page cache",
        ),
        Figure(
            "random frame access in that recording (820x616)",
            1e6 * t_frame,
            "us",
            higher_is_better=False,
            note="memory-mapped view, 50 random frames",
        ),
    ]
    try:
        import SimpleITK as sitk
    except ImportError:  # pragma: no cover - bench extra not installed
        return figures
    t_sitk = _best_of(1, lambda: sitk.ReadImage(str(path)))
    figures[0].baseline_name = "SimpleITK.ReadImage (loads every pixel)"
    figures[0].baseline_value = 1000 * t_sitk
    return figures


@benchmark("open a 200 MB uncompressed recording", "sequence io")
def bench_open_quick(ctx: BenchContext) -> list[Figure]:
    return _open_figures(ctx, 400, "a 0.2 GB", target="")


@benchmark("open a 2 GB uncompressed recording", "sequence io", quick=False)
def bench_open_full(ctx: BenchContext) -> list[Figure]:
    return _open_figures(ctx, 4000, "a 2 GB", target="< 1 s for 2 GB")


@benchmark("compressed recording: lazy open and streaming inflate", "sequence io")
def bench_compressed(ctx: BenchContext) -> list[Figure]:
    frames = 120 if not ctx.full else 600
    path = _recording(ctx, frames, compress=True)
    frame_bytes = _FRAME[0] * _FRAME[1]
    t_open = _best_of(3, lambda: read_sequence(path).close())

    def stream() -> None:
        with read_sequence(path) as seq:
            for i in range(len(seq)):
                seq.image(i)

    t_stream = _best_of(2, stream)
    with read_sequence(path) as seq:
        offset, length = seq._layout.data_offset, seq._layout.data_length
    payload = path.read_bytes()[offset : offset + length]
    t_zlib = _best_of(2, lambda: zlib.decompress(payload))
    figures = [
        Figure(
            f"open a compressed recording ({frames} frames, {len(payload) / 1e6:.0f} MB)",
            1000 * t_open,
            "ms",
            higher_is_better=False,
            note="nothing inflated until a frame is asked for",
        ),
        Figure(
            "sequential frame inflate (all frames, one at a time)",
            frames * frame_bytes / t_stream / 1e6,
            "MB/s",
            baseline_name="zlib.decompress of the whole stream at once (needs it all in RAM)",
            baseline_value=frames * frame_bytes / t_zlib / 1e6,
            note="memory O(one frame) instead of O(recording)",
        ),
    ]
    try:
        import SimpleITK as sitk
    except ImportError:  # pragma: no cover
        return figures
    figures[0].baseline_name = "SimpleITK.ReadImage (inflates everything)"
    figures[0].baseline_value = 1000 * _best_of(1, lambda: sitk.ReadImage(str(path)))
    return figures


@benchmark("record (SequenceWriter append, 820x616 frames)", "sequence io")
def bench_writer(ctx: BenchContext) -> list[Figure]:
    frames = list(_frames(60 if not ctx.full else 300))
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    for compress in (True, False):
        path = ctx.work_dir / f"bench_io_writer_{int(compress)}.igs.mha"
        path.unlink(missing_ok=True)
        start = time.perf_counter()
        writer = SequenceWriter(path, compress=compress)
        for frame in frames:
            writer.append(frame)
        t_append = time.perf_counter() - start
        writer.close()
        t_total = time.perf_counter() - start
        figures.append(
            Figure(
                f"recorder append rate, {'zlib level 1' if compress else 'uncompressed'}",
                len(frames) / t_append,
                "frames/s",
                target="≥ 30 frames/s (a probe's rate)",
                met=len(frames) / t_append >= 30,
                note=f"journal flushed per frame, fsync each second; close() took "
                f"{1000 * (t_total - t_append):.0f} ms",
            )
        )
        path.unlink(missing_ok=True)
    try:
        import SimpleITK as sitk
    except ImportError:  # pragma: no cover
        return figures
    volume = sitk.GetImageFromArray(np.stack([f.image for f in frames]))
    out = str(ctx.work_dir / "bench_io_sitk.mha")
    t_sitk = _best_of(1, lambda: sitk.WriteImage(volume, out, True))
    figures[0].baseline_name = "SimpleITK.WriteImage, compressed, all frames at once"
    figures[0].baseline_value = len(frames) / t_sitk
    Path(out).unlink(missing_ok=True)
    return figures


@benchmark("parse a 5000-frame tracker recording header", "sequence io")
def bench_header(ctx: BenchContext) -> list[Figure]:
    if ctx.data_dir is None:
        return []
    path = ctx.data_dir / "plus" / "TestImages" / "WaterTankBottomTranslationTrackerBuffer.igs.mha"
    if not path.exists():
        return []
    t_open = _best_of(3, lambda: read_sequence(path).close())
    return [
        Figure(
            "open a 5000-frame, 50 000-line PLUS header (WaterTank tracker buffer)",
            1000 * t_open,
            "ms",
            higher_is_better=False,
            note="all transforms parsed and checked (15 000 matrices)",
        )
    ]
