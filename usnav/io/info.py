"""What is in a recording or a volume: the library behind ``usnav info``.

:func:`describe_file` returns a JSON-ready dict; :func:`format_description` renders it for a
person. For a recording (PLUS sequence file): frames, image size, orientation, transforms with
OK/INVALID counts (a matrix that is not finite counts as INVALID, as every stage treats it),
time span, mean frame rate, timestamps that go backwards or are missing/not a number, and
dropped frames (``FrameNumber`` jumps and timestamp gaps longer than twice the median frame
period). For a volume (NIfTI, NRRD, or a
single 3D MetaIO image such as a PLUS reconstruction): shape, spacing and RAS bounds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from usnav.errors import InputError
from usnav.frames import TransformStatus
from usnav.io.inputs import require_existing
from usnav.io.sequence import Sequence, inspect_journal, read_sequence
from usnav.io.volume import Volume, load_volume, metaio_volume

#: A timestamp gap counts as dropped frames when longer than this many median periods.
GAP_FACTOR = 2.0
#: At most this many gaps are listed (the totals count them all).
MAX_LISTED_GAPS = 50

_SEQUENCE_SUFFIXES = (".igs.mha", ".seq.mha", ".seq.nrrd", ".igs.nrrd")
_VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr")


def describe_file(path: str | Path, *, tolerant: bool = False, verify: bool = True) -> dict:
    """Describe a recording or a volume.

    Parameters
    ----------
    path
        ``.igs.mha``/``.mha``/``.seq.nrrd``/``.igs.nrrd`` recording, or ``.nii``/``.nii.gz``/
        ``.nrrd`` volume. A ``.mha``/``.mhd`` holding one 3D image is described as a volume.
    tolerant
        Describe the readable part of a damaged recording (``recovered_frames``, ``problems``).
    verify
        Inflate compressed pixels once to check them (a damaged file is refused unless
        ``tolerant``).

    Returns
    -------
    dict
        ``kind`` = ``"recording"``: ``frames``, ``image_size`` [cols, rows], ``orientation``,
        ``element_spacing`` (the file's pixel spacing, which usnav does not use: ImageToProbe
        carries the mm per pixel, as in PLUS),
        ``transforms`` {name: {ok, invalid, missing, non_finite, not_rigid}} (``invalid``
        includes the ``non_finite`` matrices marked OK, and the tracker poses marked OK that
        are not rigid, ``not_rigid``), ``timestamps`` [first, last] (s), ``duration_s``,
        ``frame_rate_hz``, ``timestamps_missing`` (frames without a finite timestamp),
        ``dropped`` (with the steps backwards)... ``kind`` = ``"volume"``: ``shape``,
        ``spacing_mm`` (after any unit conversion), ``ras_bounds_mm`` {min, max}, ``read_as``
        (how the file's space and length unit were read; NIfTI and NRRD).

    Raises
    ------
    InputError
        Missing, unreadable or damaged file.
    """
    p = Path(path)
    require_existing(p)
    name = p.name.lower()
    if p.is_dir():
        if name.endswith(".journal"):
            return inspect_journal(p)
        raise InputError(p, "is a folder", "give a recording or volume file")
    if name.endswith(_SEQUENCE_SUFFIXES) or (
        name.endswith(_VOLUME_SUFFIXES) and _looks_like_sequence(p)
    ):
        with read_sequence(p, tolerant=tolerant) as seq:
            if verify:
                seq.verify()
            return describe_sequence(seq)
    if name.endswith((".mha", ".mhd")):  # a recording, or one 3D image (a volume)
        with read_sequence(p, tolerant=tolerant) as seq:
            if (
                seq.frame_shape != (0, 0)
                and len(seq.frame_shape) >= 3
                and len(seq) == 1
                and seq.channels == 1
                and not seq.transform_names
            ):
                return describe_volume(metaio_volume(seq))
            if verify:
                seq.verify()
            return describe_sequence(seq)
    if name.endswith(_VOLUME_SUFFIXES):
        return describe_volume(load_volume(p))
    raise InputError(
        p,
        "unknown file type",
        "expected a recording (.igs.mha, .seq.nrrd), a volume (.nii, .nii.gz, .nrrd, .mha) "
        "or a probe calibration (.toml, or a PLUS .xml with ImageToProbe)",
    )


def _looks_like_sequence(path: Path) -> bool:
    """A ``.nrrd`` written by PLUS/usnav (has ``Seq_Frame`` fields) rather than a volume."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    return b"Seq_Frame" in head.split(b"\n\n", 1)[0]


def describe_volume(volume: Volume) -> dict:
    """Shape, spacing, RAS bounds and value range of a volume."""
    low, high = volume.bounds_ras()
    data = np.asarray(volume.data)
    return {
        "path": volume.source,
        "kind": "volume",
        "shape": [int(s) for s in volume.shape],
        "dtype": str(data.dtype),
        "spacing_mm": [_round(float(s)) for s in volume.spacing_mm],
        "ras_bounds_mm": {
            "min": [_round(float(v)) for v in low],
            "max": [_round(float(v)) for v in high],
        },
        "value_range": [_number(data.min()), _number(data.max())] if data.size else None,
        **({"read_as": volume.read_as} if volume.read_as else {}),
    }


def describe_sequence(seq: Sequence) -> dict:
    """The ``usnav info`` facts of an open sequence (no pixels are read)."""
    n = len(seq)
    transforms = {}
    for name in seq.transform_names:
        matrices, statuses = seq.transforms(name)
        status = np.array([s.value for s in statuses], dtype=object)
        present = status != TransformStatus.MISSING.value
        non_finite = present & ~np.isfinite(matrices).all(axis=(1, 2))
        ok = (status == TransformStatus.OK.value) & ~non_finite
        transforms[name] = {
            "ok": int(np.count_nonzero(ok)),
            "invalid": int(np.count_nonzero(present & ~ok)),
            "missing": int(np.count_nonzero(~present)),
            "non_finite": int(np.count_nonzero(non_finite)),
            "not_rigid": int(seq.not_rigid.get(name, 0)),
        }
    stamped = np.isfinite(seq.timestamps)
    times = seq.timestamps[stamped]
    unstamped = np.flatnonzero(~stamped)
    timing: dict[str, Any] = {
        "timestamps": None,
        "duration_s": None,
        "frame_rate_hz": None,
        "median_period_s": None,
        "timestamps_missing": len(unstamped),
        "timestamps_missing_frames": [int(i) for i in unstamped[:MAX_LISTED_GAPS]],
    }
    if len(times):
        first, last = float(times[0]), float(times[-1])
        timing["timestamps"] = [first, last]
        timing["duration_s"] = _round(last - first)
        steps = np.diff(times)
        if len(times) > 1 and (steps < 0).any():
            # the clock went backwards (reported below): first..last is not how long the
            # recording took, so the rate comes from the median period
            median = float(np.median(steps))
            timing["median_period_s"] = _round(median)
            timing["frame_rate_hz"] = _round(1.0 / median) if median > 0 else None
        elif len(times) > 1 and last > first:
            timing["frame_rate_hz"] = _round((len(times) - 1) / (last - first))
            timing["median_period_s"] = _round(float(np.median(steps)))
    return {
        "path": str(seq.path),
        "kind": "recording",
        "format": seq.format,
        "compressed": seq.compressed,
        "frames": n,
        "declared_frames": seq.declared_frames,
        "recovered_frames": seq.recovered_frames,
        "image_size": [int(seq.image_size[0]), int(seq.image_size[1])],
        "frame_shape": [int(s) for s in seq.frame_shape],
        # the type's name whatever the file's byte order ("uint16", not ">u2"): the pixels
        # are read as numbers of that type either way; the order is a storage detail
        "pixel_type": seq.dtype.name,
        "big_endian": seq.dtype.byteorder == ">",
        "channels": seq.channels,
        "orientation": seq.orientation,
        "element_spacing": [_round(float(v)) for v in seq.spacing[:2]],
        "image_type": seq.image_type,
        "invalid_images": int(n - int(np.count_nonzero(seq.image_ok))),
        "transforms": transforms,
        **timing,
        "dropped": dropped_frames(seq.timestamps, seq.frame_numbers, seq.has_frame_numbers),
        "problems": list(seq.problems) + _constant_clock(times),
    }


def _constant_clock(times: np.ndarray) -> list[str]:
    """A problem when every frame has the same timestamp (a sender that stamps nothing, e.g.
    0): the recording cannot be paced, synchronised with a tracker, or judged for age."""
    if len(times) < 2 or np.ptp(times) != 0:
        return []
    return [
        f"all {len(times)} frames have the same timestamp ({float(times[0]):g} s): the sender "
        "stamps nothing, so the recording cannot be paced or synchronised with a tracker"
    ]


def dropped_frames(
    timestamps: np.ndarray, frame_numbers: np.ndarray, has_frame_numbers: bool
) -> dict:
    """Dropped-frame evidence: FrameNumber jumps and timestamp gaps > 2× the median period;
    and the timestamps that go backwards.

    A gap is measured from the latest timestamp so far, so a clock that steps back and then
    returns shows as one step backwards, not as a gap where it returns.

    Parameters
    ----------
    timestamps
        Shape (n,), s (NaN = none).
    frame_numbers
        Shape (n,), the source's frame counter.
    has_frame_numbers
        Whether the counter came from the file (else it is the index and says nothing).

    Returns
    -------
    dict
        ``frame_number_gaps`` [{after_frame, missing}], ``missing_by_frame_number``,
        ``timestamp_gaps`` [{after_frame, gap_s}], ``timestamp_gap_count``,
        ``gap_threshold_s``, ``backward_step_count``, ``backward_steps`` [{after_frame,
        step_s}] (step_s < 0) and ``worst_backward_step`` (the most negative, or None).
    """
    out: dict[str, Any] = {
        "frame_number_gaps": [],
        "missing_by_frame_number": 0,
        "timestamp_gaps": [],
        "timestamp_gap_count": 0,
        "gap_threshold_s": None,
        "backward_step_count": 0,
        "backward_steps": [],
        "worst_backward_step": None,
    }
    if has_frame_numbers and len(frame_numbers) > 1:
        steps = np.diff(frame_numbers.astype(np.int64))
        jumps = np.flatnonzero(steps > 1)
        out["missing_by_frame_number"] = int(np.sum(steps[jumps] - 1))
        out["frame_number_gaps"] = [
            {"after_frame": int(i), "missing": int(steps[i] - 1)} for i in jumps[:MAX_LISTED_GAPS]
        ]
    finite = np.flatnonzero(np.isfinite(timestamps))
    times = timestamps[finite]
    steps = np.diff(times)
    back = np.flatnonzero(steps < 0)
    if len(back):
        listed = [{"after_frame": int(finite[i]), "step_s": _round(float(steps[i]))} for i in back]
        out["backward_step_count"] = len(back)
        out["backward_steps"] = listed[:MAX_LISTED_GAPS]
        out["worst_backward_step"] = listed[int(np.argmin(steps[back]))]
    if len(finite) > 2:
        periods = times[1:] - np.maximum.accumulate(times)[:-1]
        median = float(np.median(periods))
        if median > 0:
            threshold = GAP_FACTOR * median
            gaps = np.flatnonzero(periods > threshold)
            out["gap_threshold_s"] = _round(threshold)
            out["timestamp_gap_count"] = len(gaps)
            out["timestamp_gaps"] = [
                {"after_frame": int(finite[i]), "gap_s": _round(float(periods[i]))}
                for i in gaps[:MAX_LISTED_GAPS]
            ]
    return out


def format_description(info: dict) -> str:
    """Human-readable lines for :func:`describe_file`'s result."""
    if info["kind"] == "volume":
        low, high = info["ras_bounds_mm"]["min"], info["ras_bounds_mm"]["max"]
        lines = [
            f"{info['path']}: volume",
            f"  shape        {' x '.join(map(str, info['shape']))} voxels ({info['dtype']})",
            f"  spacing      {' x '.join(f'{s:g}' for s in info['spacing_mm'])} mm",
            "  RAS bounds   "
            + ", ".join(
                f"{axis} {lo:.1f}..{hi:.1f}" for axis, lo, hi in zip("RAS", low, high, strict=True)
            )
            + " mm",
        ]
        if info.get("value_range"):
            lines.append(f"  values       {info['value_range'][0]:g}..{info['value_range'][1]:g}")
        if info.get("read_as"):
            lines.append(f"  read as      {info['read_as']}")
        return "\n".join(lines)
    if info["kind"] == "journal":
        shape = " x ".join(map(str, info["frame_shape"][::-1][-2:] if info["frame_shape"] else []))
        frames = f"  frames       {info['frames']} complete ({shape} pixels)"
        damaged = info.get("damaged_lines") or []
        readable = info.get("readable_frames", info["frames"])
        if damaged or readable != info["frames"]:
            where = ", ".join(f"line {n} ({why})" for n, why in damaged[:MAX_LISTED_GAPS])
            frames += f"; up to {readable} readable past damage" + (
                f" — damaged frames.jsonl {where}" if where else ""
            )
        return (
            f"{info['path']}: journal of an interrupted recording\n{frames}\n"
            f"  recover with usnav convert {info['path']} {info['target']}"
        )
    kind = {"metaio": "MetaIO", "nrrd": "NRRD"}[info["format"]]
    comp = "compressed" if info["compressed"] else "uncompressed"
    lines = [f"{info['path']}: PLUS sequence ({kind}, {comp})"]
    cols, rows = info["image_size"]
    image = (
        (
            f"{cols} x {rows} pixels, {info['pixel_type']}"
            + (f" x {info['channels']}" if info["channels"] > 1 else "")
            + (" (big-endian in the file)" if info.get("big_endian") else "")
            + f", orientation {info['orientation']}"
            + (" (not specified: taken as MF)" if info["orientation"] == "??" else "")
            + f", {info['image_type']}"
        )
        if cols
        else "no images (tracker only)"
        if info["declared_frames"]
        # not a tracker recording: nothing at all was recorded (it said "tracker only")
        else "an empty recording (nothing was recorded)"
    )
    frames = f"{info['frames']}"
    if info["frames"] != info["declared_frames"]:
        frames += f" of {info['declared_frames']} declared (recovered)"
    lines.append(f"  frames       {frames}; {image}")
    spacing = info.get("element_spacing") or [1.0, 1.0]
    if cols and any(abs(v - 1.0) > 1e-9 for v in spacing):
        lines.append(
            f"  spacing      ElementSpacing {spacing[0]:g} x {spacing[1]:g}: not used "
            "(ImageToProbe carries the mm per pixel, as in PLUS)"
        )
    if info["invalid_images"] and cols:
        lines.append(f"  images       {info['invalid_images']} marked INVALID")
    if info["timestamps"]:
        first, last = info["timestamps"]
        span = f"  time span    {first:.3f} .. {last:.3f} s ({info['duration_s']:.3f} s)"
        backwards = bool((info.get("dropped") or {}).get("backward_step_count"))
        if info["frame_rate_hz"]:
            span += (
                f", {'from the median period' if backwards else 'mean'} "
                f"{info['frame_rate_hz']:.2f} frames/s "
                f"(median period {1000 * info['median_period_s']:.1f} ms)"
            )
        lines.append(span)
    else:
        lines.append("  time span    no timestamps")
    clock = _timestamp_problems(info)
    if clock:
        lines.append("  timestamps   " + clock)
    if info["transforms"]:
        width = max(len(k) for k in info["transforms"])
        for i, (name, counts) in enumerate(info["transforms"].items()):
            label = "  transforms   " if i == 0 else " " * 15
            text = f"{name:<{width}}  {counts['ok']} OK, {counts['invalid']} INVALID"
            if counts.get("non_finite"):
                text += f" ({counts['non_finite']} non-finite)"
            if counts.get("not_rigid"):
                text += (
                    f" ({counts['not_rigid']} stored OK but not rigid: a scale or shear is no "
                    "tracker pose)"
                )
            if counts["missing"]:
                text += f", {counts['missing']} missing"
            lines.append(label + text)
    else:
        lines.append("  transforms   none")
    dropped = info["dropped"]
    parts = []
    if dropped["missing_by_frame_number"]:
        gaps = dropped["frame_number_gaps"]
        where = ", ".join(f"after frame {g['after_frame']} ({g['missing']})" for g in gaps[:5])
        more = " ..." if len(gaps) > 5 else ""
        parts.append(f"{dropped['missing_by_frame_number']} missing by FrameNumber: {where}{more}")
    if dropped["timestamp_gap_count"]:
        gaps = dropped["timestamp_gaps"]
        where = ", ".join(
            f"after frame {g['after_frame']} ({1000 * g['gap_s']:.0f} ms)" for g in gaps[:5]
        )
        more = " ..." if len(gaps) > 5 else ""
        parts.append(
            f"{dropped['timestamp_gap_count']} timestamp gaps > "
            f"{1000 * dropped['gap_threshold_s']:.0f} ms: {where}{more}"
        )
    lines.append("  dropped      " + ("; ".join(parts) if parts else "none found"))
    for problem in info["problems"]:
        lines.append(f"  problem      {problem}")
    return "\n".join(lines)


def _timestamp_problems(info: dict) -> str:
    """Steps backwards and frames without a finite timestamp, in words ('' when none)."""
    parts = []
    dropped = info["dropped"]
    if dropped.get("backward_step_count"):
        worst = dropped["worst_backward_step"]
        parts.append(
            f"{dropped['backward_step_count']} step(s) backwards (worst {worst['step_s']:.3f} s "
            f"after frame {worst['after_frame']})"
        )
    missing = info.get("timestamps_missing", 0)
    if missing and info["timestamps"]:  # all missing: "no timestamps" says it
        frames = info["timestamps_missing_frames"]
        where = ", ".join(str(i) for i in frames[:5]) + (" ..." if missing > 5 else "")
        parts.append(f"{missing} without a usable one (missing, NaN or infinite): frame(s) {where}")
    return "; ".join(parts)


def _round(value: float) -> float:
    return float(f"{value:.6g}") if math.isfinite(value) else value


def _number(value: Any) -> float | int:
    value = value.item() if hasattr(value, "item") else value
    return value if isinstance(value, int) else _round(float(value))
