"""Calibration benchmarks on PLUS's own test data: speed against the issue's target, accuracy
against PLUS's published answers.

PLUS itself cannot run here, so its *numbers* are the accuracy baseline (ImageToProbe,
validation error, TrackerLagSec from PLUS's test baselines). The in-run speed baseline is the
same dot segmentation done the straightforward way with ``scipy.ndimage`` (grey openings with
the same bar and disc structuring elements, ``label``, ``center_of_mass``), which is what one
would write without OpenCV.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from usnav.bench.registry import BenchContext, Figure, benchmark

_PLUS_IMAGE_TO_PROBE = np.array(
    [
        [0.00183186, 0.0729281, -0.0100928, 11.1551],
        [-0.0777188, 0.00280788, 0.00822424, 45.9713],
        [0.008793, 0.00953226, 0.0747944, -7.35909],
        [0, 0, 0, 1],
    ]
)
_PLUS_VALIDATION_MM = 1.24684
_PLUS_LAG_S = -0.0648266


def _plus(ctx: BenchContext) -> Path | None:
    if ctx.data_dir is None:
        return None
    root = ctx.data_dir / "plus"
    need = (
        root / "ConfigFiles/Testing/PlusDeviceSet_fCal_Sim_SpatialCalibration_1.2.xml",
        root / "TestImages/fCal_Test_Calibration_3NWires.igs.mha",
    )
    return root if all(p.exists() for p in need) else None


def _scipy_dots(image: np.ndarray, cfg, roi) -> np.ndarray:
    """Baseline: the same segmentation steps with scipy.ndimage."""
    from scipy import ndimage

    seg = cfg.segmentation
    b = seg.bar_half_length_px
    x0, y0, x1, y1 = roi
    work = image[y0 - b : y1 + b, x0 - b : x1 + b].astype(np.int16)
    n = 2 * b + 1
    bars = (
        np.ones((1, n), bool),
        np.fliplr(np.eye(n, dtype=bool)),
        np.ones((n, 1), bool),
        np.eye(n, dtype=bool),
    )
    for bar in bars:
        work = np.maximum(work - ndimage.grey_opening(work, footprint=bar), 0)
    r = seg.disc_radius_px
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    work = ndimage.grey_opening(work[b:-b, b:-b], footprint=(xx * xx + yy * yy) <= r * r)
    thresh = math.floor(work.max() * seg.threshold_image_percent / 100 + 0.5)
    mask = work >= max(thresh, 1)
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    if count == 0:
        return np.zeros((0, 2))
    centres = ndimage.center_of_mass(work, labels, range(1, count + 1))
    return np.array(centres)[:, ::-1] + [x0, y0]


@benchmark("N-wire spatial calibration, PLUS fCal 1.2 (188 + 94 frames)", "calibration")
def bench_spatial(ctx: BenchContext) -> list[Figure]:
    root = _plus(ctx)
    if root is None:
        return []
    from usnav.calibration.phantom import read_calibration_config
    from usnav.calibration.segmentation import DotSegmenter, region_of_interest
    from usnav.calibration.spatial import calibrate_spatial
    from usnav.io.sequence import read_sequence
    from usnav.transforms.matrices import decompose_scaled_rigid

    xml = root / "ConfigFiles/Testing/PlusDeviceSet_fCal_Sim_SpatialCalibration_1.2.xml"
    cal = root / "TestImages/fCal_Test_Calibration_3NWires.igs.mha"
    val = root / "TestImages/fCal_Test_Validation_3NWires.igs.mha"
    ctx.progress("spatial calibration of PLUS's fCal recordings")
    start = time.perf_counter()
    result = calibrate_spatial(xml, cal, val)
    t_total = time.perf_counter() - start

    # segmentation alone, ours vs scipy.ndimage, on the same frames
    cfg = read_calibration_config(xml)
    seg = DotSegmenter(cfg.segmentation)
    n_frames = 188 if ctx.full else 24
    with read_sequence(cal) as s:
        roi = region_of_interest(cfg.segmentation, s.image_size)
        images = [np.asarray(s.image(i)) for i in range(n_frames)]
    start = time.perf_counter()
    for img in images:
        seg.dots(img, roi)
    t_ours = (time.perf_counter() - start) / n_frames
    n_base = n_frames if ctx.full else 6
    start = time.perf_counter()
    for img in images[:n_base]:
        _scipy_dots(img, cfg, roi)
    t_scipy = (time.perf_counter() - start) / n_base

    r0, _, t0 = decompose_scaled_rigid(_PLUS_IMAGE_TO_PROBE)
    r1, _, t1 = decompose_scaled_rigid(result.image_to_probe)
    cos = (np.trace(r1 @ r0.T) - 1) / 2
    d_rot = math.degrees(math.acos(max(-1.0, min(1.0, cos))))
    d_trans = float(np.linalg.norm(t1 - t0))
    val_err = result.validation_error.mean
    return [
        Figure(
            "spatial calibration, 188 + 94 frames, end to end (read, segment, solve, validate)",
            t_total,
            "s",
            target="≤ 10 s on 2 cores",
            met=t_total <= 10.0,
            higher_is_better=False,
            note=f"{len(result.calibration.used)}+{len(result.validation.used)} frames used",
        ),
        Figure(
            "dot segmentation per 820×616 frame (top-hat, disc opening, clusters)",
            1000 * t_ours,
            "ms",
            baseline_name="scipy.ndimage, same steps",
            baseline_value=1000 * t_scipy,
            higher_is_better=False,
            note=f"{n_frames} frames (baseline {n_base})",
        ),
        Figure(
            "ImageToProbe vs PLUS baseline: translation",
            d_trans,
            "mm",
            target="≤ 1.0 mm (PLUS tolerance)",
            met=d_trans <= 1.0,
            higher_is_better=False,
        ),
        Figure(
            "ImageToProbe vs PLUS baseline: rotation",
            d_rot,
            "deg",
            target="≤ 0.5° (PLUS tolerance)",
            met=d_rot <= 0.5,
            higher_is_better=False,
        ),
        Figure(
            "validation 3D reprojection error (lowest 95 %)",
            val_err,
            "mm",
            target="within 1.0 mm of PLUS's 1.247",
            met=abs(val_err - _PLUS_VALIDATION_MM) <= 1.0,
            baseline_name="PLUS fCal (published)",
            baseline_value=_PLUS_VALIDATION_MM,
            higher_is_better=False,
            note=f"calibration {result.calibration_error.mean:.4f} mm (PLUS 1.15532)",
        ),
    ]


@benchmark("temporal calibration, PLUS water-tank data", "calibration")
def bench_temporal(ctx: BenchContext) -> list[Figure]:
    if ctx.data_dir is None:
        return []
    images = ctx.data_dir / "plus" / "TestImages"
    video = images / "WaterTankBottomTranslationVideoBuffer.igs.mha"
    tracker = images / "WaterTankBottomTranslationTrackerBuffer.igs.mha"
    if not (video.exists() and tracker.exists()):
        return []
    from usnav.calibration.temporal import calibrate_temporal

    ctx.progress("temporal calibration of PLUS's water-tank recordings")
    start = time.perf_counter()
    result = calibrate_temporal(video, tracker)
    elapsed = time.perf_counter() - start
    diff_ms = 1000 * abs(result.tracker_lag_s - _PLUS_LAG_S)
    plus_like = calibrate_temporal(video, tracker, clamp_ends=True)
    diff_plus_ms = 1000 * abs(plus_like.tracker_lag_s - _PLUS_LAG_S)
    return [
        Figure(
            "TrackerLagSec difference from PLUS (-0.0648 s)",
            diff_ms,
            "ms",
            target="≤ 5 ms",
            met=diff_ms <= 5.0,
            higher_is_better=False,
            note=f"lag {result.tracker_lag_s:+.5f} s, RMS misfit {result.rms_error_mm:.2f} mm",
        ),
        Figure(
            "TrackerLagSec difference from PLUS, PLUS's clamped-ends procedure",
            diff_plus_ms,
            "ms",
            target="≤ 5 ms",
            met=diff_plus_ms <= 5.0,
            higher_is_better=False,
            note=f"error {plus_like.error:.2f} (PLUS CalibrationError 25.04)",
        ),
        Figure(
            "temporal calibration, 201 video frames + 5000 tracker samples",
            elapsed,
            "s",
            higher_is_better=False,
        ),
    ]
