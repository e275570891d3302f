"""Freehand reconstruction against PLUS's own reference volumes (PLUS's test data).

PLUS cannot run here; its reference volumes of SpinePhantomFreehand are the answer. The
LINEAR/MAXIMUM target is voxel equality (or ±1 grey level on ≥ 99 % of the voxels with the
same set of non-empty voxels). The in-run baseline is the same rule in double precision
instead of PLUS's 14-bit fixed point: it shows what the fixed-point emulation buys.
"""

from __future__ import annotations

import time

import numpy as np

from usnav.bench.registry import BenchContext, Figure, SkipBenchmark, benchmark

_CONFIG = "plus/ConfigFiles/Testing/PlusDeviceSet_VolumeReconstructionOnly_SpinePhantom_LN_MAXI.xml"
_SWEEP = "plus/TestImages/SpinePhantomFreehand.igs.mha"
_REFERENCE = "plus/TestImages/vtkVolumeReconstructorTestLNMAXIvolumeRef.mha"


def _double_precision(sweep, options, shape, origin) -> np.ndarray:
    """Baseline: PLUS's LINEAR/MAXIMUM rule in float64 (no fixed-point rounding), numpy."""
    spacing = np.asarray(options.spacing_mm, float)
    to_index = np.linalg.inv(_translation(origin) @ np.diag([*spacing, 1.0]))
    out = np.zeros(shape)
    rows, cols = sweep.image_size[1], sweep.image_size[0]
    r, c = np.mgrid[0:rows, 0:cols]
    pixels = np.c_[c.ravel(), r.ravel(), np.zeros(r.size), np.ones(r.size)]
    for f in range(len(sweep)):
        pos = (pixels @ (to_index @ sweep.image_to_reference[f]).T)[:, :3]
        lo = np.floor(pos).astype(int)
        frac = pos - lo
        hi = lo + (frac != 0)
        inside = np.all(lo >= 0, axis=1) & np.all(hi < np.array(shape), axis=1)
        values = sweep.images[f].ravel().astype(float)
        for corner in np.ndindex(2, 2, 2):
            w = np.prod(np.where(np.array(corner), frac, 1 - frac), axis=1)
            ok = inside & (w >= 0.125) & (values > 0)
            idx = np.where(np.array(corner), hi, lo)[ok]
            np.maximum.at(out, tuple(idx.T), values[ok])
    return out


def _translation(origin) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = origin
    return m


@benchmark("LINEAR/MAXIMUM reconstruction vs PLUS's reference", "registration")
def bench_linear_maximum(ctx: BenchContext) -> list[Figure]:
    from usnav.io.sequence import read_sequence
    from usnav.registration.reconstruct import (
        load_image_to_probe,
        options_from_plus_xml,
        reconstruct_volume,
    )
    from usnav.registration.sweep import load_sweep

    if ctx.data_dir is None:
        return []
    paths = [ctx.data_dir / p for p in (_CONFIG, _SWEEP, _REFERENCE)]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise SkipBenchmark(f"missing {missing[0]}")
    options = options_from_plus_xml(paths[0])
    sweep = load_sweep(paths[1], load_image_to_probe(paths[0]))
    reconstruct_volume(sweep, options)  # compiled and warm
    t0 = time.perf_counter()
    rec = reconstruct_volume(sweep, options)
    seconds = time.perf_counter() - t0
    with read_sequence(paths[2]) as ref:
        reference = np.transpose(ref.image(0), (2, 1, 0)).astype(int)
    ours = rec.volume.data.astype(int)
    t0 = time.perf_counter()
    base = _double_precision(sweep, options, ours.shape, rec.volume.affine[:3, 3]).astype(int)
    base_seconds = time.perf_counter() - t0

    def equal(v):
        return 100.0 * float(np.mean(v == reference))

    def within_one(v):
        return 100.0 * float(np.mean(np.abs(v - reference) <= 1))

    def set_diff(v):
        return int(np.count_nonzero((v > 0) != (reference > 0)))

    target_met = equal(ours) == 100.0 or (within_one(ours) >= 99.0 and set_diff(ours) == 0)
    return [
        Figure(
            "voxels equal to PLUS's LN/MAXI reference",
            equal(ours),
            "%",
            "100 % (or ±1 on ≥ 99 %)",
            target_met,
            "float64 splatting",
            equal(base),
            note=f"{within_one(ours):.2f} % within ±1",
        ),
        Figure(
            "non-empty voxels not matching PLUS's set",
            set_diff(ours),
            "voxels",
            "0",
            set_diff(ours) == 0,
            "float64 splatting",
            set_diff(base),
            higher_is_better=False,
            note=f"of {int(np.count_nonzero(reference))} non-empty",
        ),
        Figure(
            "LN/MAXI reconstruction time, 21 frames 820×616",
            seconds,
            "s",
            "",
            None,
            "numpy float64",
            base_seconds,
            higher_is_better=False,
        ),
    ]
