"""Calibration reports as PNG: what was segmented, and how large the errors are.

Drawn with OpenCV (no plotting library needed). The spatial report shows sample frames (MF
orientation, as segmented) with every dot candidate (grey rings), the labelled wires (wire 1
red, 2 green, 3 blue, joined per N), the frame status, a histogram of the 3D reprojection
errors (calibration and validation) and the summary numbers. A person sees at a glance
whether the wires were labelled right; mirrored images show up as skipped frames with the
reason printed on them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from usnav.calibration.segmentation import FrameStatus, to_mf
from usnav.calibration.spatial import SegmentedSequence, SpatialCalibrationResult, grey
from usnav.calibration.temporal import TemporalCalibrationResult
from usnav.errors import InputError

_WIRE_COLOURS = ((60, 60, 255), (60, 220, 60), (255, 140, 40))  # BGR: red, green, blue
_CAL_COLOUR = (200, 120, 40)
_VAL_COLOUR = (40, 150, 240)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text(
    img: np.ndarray,
    text: str,
    org: tuple[int, int],
    scale: float = 0.45,
    colour=(255, 255, 255),
    thickness: int = 1,
) -> None:
    cv2.putText(img, text, org, _FONT, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, _FONT, scale, colour, thickness, cv2.LINE_AA)


def _pick_frames(seq: SegmentedSequence, n_ok: int, n_bad: int) -> list[int]:
    ok = [i for i, f in enumerate(seq.frames) if f.status is FrameStatus.OK]
    bad = [
        i
        for i, f in enumerate(seq.frames)
        if f.status not in (FrameStatus.OK, FrameStatus.INVALID_TRANSFORM)
    ]
    pick = [ok[round(k)] for k in np.linspace(0, len(ok) - 1, min(n_ok, len(ok)))] if ok else []
    if bad:
        pick += [bad[round(k)] for k in np.linspace(0, len(bad) - 1, min(n_bad, len(bad)))]
    return list(dict.fromkeys(pick))


def render_frame(image: np.ndarray, seg, *, label: str = "") -> np.ndarray:
    """One frame (MF, grey) with candidates, labelled wires and status drawn on it (BGR)."""
    rgb = cv2.cvtColor(np.ascontiguousarray(image.astype(np.uint8)), cv2.COLOR_GRAY2BGR)
    scale = max(1, round(image.shape[1] / 400))
    for x, y, _ in seg.candidates:
        cv2.circle(rgb, (round(x), round(y)), 9 * scale, (150, 150, 150), scale, cv2.LINE_AA)
    if seg.wire_points is not None:
        colour_line = (0, 255, 255) if seg.status is FrameStatus.OK else (0, 0, 255)
        for pattern in seg.wire_points:
            pts = [(round(p[0]), round(p[1])) for p in pattern]
            cv2.line(rgb, pts[0], pts[2], colour_line, scale, cv2.LINE_AA)
            for w, p in enumerate(pts):
                cv2.circle(rgb, p, 6 * scale, _WIRE_COLOURS[w], 2 * scale, cv2.LINE_AA)
    status = seg.status.value if seg.status is not FrameStatus.OK else "ok"
    colour = (120, 255, 120) if seg.status is FrameStatus.OK else (80, 80, 255)
    _text(rgb, f"{label}: {status}", (10, 26 * scale), 0.5 * scale, colour, scale)
    words, line, y = seg.detail.split(), "", 52 * scale
    for word in words:  # wrap the detail at ~70 characters
        if len(line) + len(word) > 70:
            _text(rgb, line, (10, y), 0.36 * scale, colour, max(1, scale // 2))
            line, y = "", y + 18 * scale
        line = f"{line} {word}".strip()
    if line:
        _text(rgb, line, (10, y), 0.36 * scale, colour, max(1, scale // 2))
    return rgb


def _histogram(width: int, height: int, series: list[tuple[str, np.ndarray, tuple]]) -> np.ndarray:
    panel = np.full((height, width, 3), 255, np.uint8)
    values = np.concatenate([s[1] for s in series if s[1] is not None and len(s[1])])
    if values.size == 0:
        return panel
    hi = float(np.percentile(values, 99.5)) * 1.05 + 1e-9
    bins = np.linspace(0, hi, 41)
    left, right, top, bottom = 60, width - 20, 48, height - 45
    counts = [np.histogram(np.clip(s[1], 0, hi), bins)[0] for s in series]
    peak = max(int(c.max()) for c in counts) or 1
    bw = (right - left) / (len(bins) - 1)
    for k, ((name, vals, colour), c) in enumerate(zip(series, counts, strict=True)):
        off = k * bw / len(series)
        for j, v in enumerate(c):
            x0 = int(left + j * bw + off)
            x1 = int(left + j * bw + off + bw / len(series)) - 1
            y0 = int(bottom - (bottom - top) * v / peak)
            cv2.rectangle(panel, (x0, y0), (max(x0, x1), bottom), colour, -1)
        mean = float(np.mean(vals))
        xm = int(left + (right - left) * mean / hi)
        cv2.line(panel, (xm, top), (xm, bottom), colour, 2)
        cv2.putText(
            panel,
            f"{name}: n={len(vals)}, mean {mean:.2f} mm",
            (left + 10, 16 + 16 * k),
            _FONT,
            0.45,
            colour,
            1,
            cv2.LINE_AA,
        )
    cv2.line(panel, (left, bottom), (right, bottom), (0, 0, 0), 1)
    cv2.line(panel, (left, top), (left, bottom), (0, 0, 0), 1)
    for t in np.linspace(0, hi, 6):
        x = int(left + (right - left) * t / hi)
        cv2.line(panel, (x, bottom), (x, bottom + 5), (0, 0, 0), 1)
        cv2.putText(panel, f"{t:.1f}", (x - 12, bottom + 20), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(
        panel,
        "3D reprojection error of the middle wires (mm)",
        (left, height - 8),
        _FONT,
        0.45,
        (0, 0, 0),
        1,
        cv2.LINE_AA,
    )
    cv2.putText(panel, f"{peak}", (10, top + 5), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return panel


def _summary_panel(width: int, height: int, result: SpatialCalibrationResult) -> np.ndarray:
    panel = np.full((height, width, 3), 255, np.uint8)
    lines = ["ImageToProbe (Image px -> Probe mm):"]
    lines += ["  " + "  ".join(f"{v:+10.5f}" for v in row) for row in result.image_to_probe]
    sx, sy = result.spacing_mm
    lines.append(f"spacing {sx:.4f} x {sy:.4f} mm/px, axes skew {result.skew_deg:.3f} deg")
    ce = result.calibration_error
    lines.append(f"calibration PRE3D {ce.mean:.3f} +- {ce.sd:.3f} mm (lowest 95 %, {ce.count} pts)")
    if result.validation_error is not None:
        ve = result.validation_error
        lines.append(
            f"validation  PRE3D {ve.mean:.3f} +- {ve.sd:.3f} mm (lowest 95 %, {ve.count} pts)"
        )
    for name, seq in (("calibration", result.calibration), ("validation", result.validation)):
        if seq is None:
            continue
        skipped = ", ".join(f"{v} {k}" for k, v in seq.counts.items() if k != "ok") or "none"
        lines.append(f"{name}: {len(seq.used)}/{len(seq.frames)} frames used; skipped: {skipped}")
    lines.append(f"outlier equations per row: {result.outlier_equations}")
    if result.precision is not None:
        pr = result.precision
        lines.append(
            f"precision (95 %, bootstrap, not accuracy): {pr.calibration_error_mm:.2f} mm + "
            f"{pr.calibration_error_deg:.2f} deg x depth"
            + ("; validation error LARGER than predicted" if pr.understated else "")
        )
    lines += [f"warning: {w}"[:110] for w in result.warnings]
    for k, line in enumerate(lines):
        colour = (0, 0, 200) if line.startswith("warning") else (0, 0, 0)
        cv2.putText(panel, line, (12, 22 + 19 * k), _FONT, 0.45, colour, 1, cv2.LINE_AA)
    return panel


def _tiles(sequences, tile_width: int, columns: int) -> list[np.ndarray]:
    from usnav.io.sequence import read_sequence

    tiles: list[np.ndarray] = []
    for name, seq, n_ok, n_bad in sequences:
        if seq is None:
            continue
        picks = _pick_frames(seq, n_ok, n_bad)
        with read_sequence(seq.path) as s:
            for i in picks:
                tile = render_frame(
                    to_mf(grey(s.image(i)), seq.orientation), seq.frames[i], label=f"{name} #{i}"
                )
                h = round(tile.shape[0] * tile_width / tile.shape[1])
                tiles.append(cv2.resize(tile, (tile_width, h), interpolation=cv2.INTER_AREA))
    width = tile_width * columns
    rows = []
    th = max((t.shape[0] for t in tiles), default=0)
    for r in range(0, len(tiles), columns):
        row = np.zeros((th, width, 3), np.uint8)
        for c, t in enumerate(tiles[r : r + columns]):
            row[: t.shape[0], c * tile_width : (c + 1) * tile_width] = t
        rows.append(row)
    return rows


def _text_panel(width: int, lines: list[str]) -> np.ndarray:
    wrapped: list[str] = []
    for line in lines:
        while len(line) > 150:
            cut = line.rfind(" ", 0, 150)
            cut = cut if cut > 0 else 150
            wrapped.append(line[:cut])
            line = "    " + line[cut:].lstrip()
        wrapped.append(line)
    panel = np.full((24 + 20 * len(wrapped), width, 3), 255, np.uint8)
    for k, line in enumerate(wrapped):
        cv2.putText(panel, line, (12, 22 + 20 * k), _FONT, 0.45, (0, 0, 160), 1, cv2.LINE_AA)
    return panel


def refusal_report(
    seq: SegmentedSequence,
    message: str,
    path: str | Path,
    *,
    tile_width: int = 410,
    columns: int = 3,
) -> Path:
    """Report for a refused calibration: sample frames as segmented, counts and the reason."""
    rows = _tiles([("cal", seq, 2, 4)], tile_width, columns)
    skipped = ", ".join(f"{v} {k}" for k, v in seq.counts.items() if k != "ok") or "none"
    panel = _text_panel(
        tile_width * columns,
        [
            "CALIBRATION REFUSED",
            message,
            f"{len(seq.used)} of {len(seq.frames)} frames usable; skipped: {skipped}",
            f"file orientation: {seq.orientation} (frames shown flipped to MF)",
        ],
    )
    return _write_png(np.vstack([*rows, panel]) if rows else panel, path)


def spatial_report(
    result: SpatialCalibrationResult, path: str | Path, *, tile_width: int = 410, columns: int = 3
) -> Path:
    """Write the spatial-calibration report PNG; returns its path."""
    rows = _tiles(
        [("cal", result.calibration, 3, 1), ("val", result.validation, 2, 1)], tile_width, columns
    )
    width = tile_width * columns
    series = [("calibration", result.calibration_errors_mm, _CAL_COLOUR)]
    if result.validation_errors_mm is not None:
        series.append(("validation", result.validation_errors_mm, _VAL_COLOUR))
    bottom = np.hstack(
        [_histogram(width // 2, 300, series), _summary_panel(width - width // 2, 300, result)]
    )
    return _write_png(np.vstack([*rows, bottom]), path)


def temporal_report(result: TemporalCalibrationResult, path: str | Path, width: int = 1200) -> Path:
    """Write the temporal-calibration report PNG (aligned signals and the SSD curve)."""
    h = 300
    top = np.full((h, width, 3), 255, np.uint8)
    t_v, v = result.video.times_s, result.video.values_px
    t_t, s = result.tracker_times_s, result.polarity * result.tracker_values_mm
    t0, t1 = float(t_v.min()), float(t_v.max())

    def norm(x):
        return (x - x.mean()) / (x.std() or 1.0)

    def plot(img, tx, y, colour, lo, hi, ylo, yhi):
        left, right, top_, bottom = 50, img.shape[1] - 20, 30, img.shape[0] - 40
        px = left + (right - left) * (tx - lo) / (hi - lo)
        py = bottom - (bottom - top_) * (y - ylo) / (yhi - ylo)
        pts = np.stack([px, py], axis=1).round().astype(np.int32)
        cv2.polylines(img, [pts], False, colour, 1, cv2.LINE_AA)

    sel = (t_t >= t0) & (t_t <= t1)
    nv, nt = norm(v), norm(s[sel])
    lo_y, hi_y = min(nv.min(), nt.min()), max(nv.max(), nt.max())
    plot(top, t_v, nv, (200, 120, 40), t0, t1, lo_y, hi_y)
    plot(top, t_t[sel] - result.tracker_lag_s, nt, (40, 150, 240), t0, t1, lo_y, hi_y)
    cv2.putText(
        top,
        f"video line (blue) and tracker shifted by {-result.tracker_lag_s:+.4f} s "
        f"(orange), normalised; time {t0:.1f}-{t1:.1f} s",
        (50, 20),
        _FONT,
        0.45,
        (0, 0, 0),
        1,
        cv2.LINE_AA,
    )
    bottom = np.full((h, width, 3), 255, np.uint8)
    for search, colour in zip(result.searches, ((200, 120, 40), (40, 150, 240)), strict=True):
        plot(
            bottom,
            search.offsets_s,
            search.ssd_curve,
            colour,
            -0.5,
            0.5,
            0,
            max(s.ssd_curve.max() for s in result.searches),
        )
    cv2.putText(
        bottom,
        f"SSD vs offset (-0.5..0.5 s), polarity +1 blue, -1 orange. "
        f"TrackerLagSec {result.tracker_lag_s:+.4f} s, error {result.error:.2f} "
        f"(PLUS CalibrationError), RMS {result.rms_error_mm:.2f} mm",
        (50, 20),
        _FONT,
        0.45,
        (0, 0, 0),
        1,
        cv2.LINE_AA,
    )
    return _write_png(np.vstack([top, bottom]), path)


def _write_png(image: np.ndarray, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise InputError(p, "could not encode the report image")
    p.write_bytes(buf.tobytes())
    return p
