"""Frames prepared once for the streaming worker's overlapping windows
(:class:`usnav.registration.similarity.PreparedFrameCache`) and the exact rewrites beside it:
each gives the same values, to the bit, as the computation it replaces."""

from __future__ import annotations

import math

import numpy as np
import pytest

from usnav.errors import InputError
from usnav.io.volume import Volume
from usnav.registration import _kernels as K
from usnav.registration.rigid import SweepRegistration
from usnav.registration.search import fov_depth_mm
from usnav.registration.similarity import (
    FrameLevel,
    PreparedFrameCache,
    anechoic_near_field,
    fov_corners,
    prepare_frame_level,
    us_mind_descriptors,
)
from usnav.registration.sweep import Sweep
from usnav.registration.worker import RegistrationWorker, streaming_registration_options

NEAR_FIELD = {
    "near_field_fraction": 0.1,
    "near_field_min_depth_mm": 3.0,
    "near_field_margin_mm": 1.0,
}


def _window(sweep: Sweep, start: int, stop: int, shift: int = 0) -> Sweep:
    """Frames ``start..stop - 1``, rotated by ``shift`` (as the worker's windows overlap)."""
    index = np.roll(np.arange(start, stop), -shift)
    return Sweep(
        sweep.images[index].copy(),  # new arrays, as the worker stacks them at each update
        sweep.image_to_reference[index],
        sweep.timestamps[index],
        fov_mask=sweep.mask(),
    )


def _assert_same_level(a: FrameLevel, b: FrameLevel) -> None:
    for name in ("us", "us_grad", "valid", "pixel_to_reference", "frame_index"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.spacing_mm == b.spacing_mm


@pytest.mark.parametrize("spacing_mm", [1.0, 1.5])
def test_cached_frames_equal_freshly_prepared_ones(small_case, spacing_mm):
    _, sweep, _, _ = small_case
    cache = PreparedFrameCache(max_frames=200)
    windows = [(0, 60, 0), (0, 60, 7), (5, 60, 0), (10, 55, 13), (0, 60, 0)]
    for start, stop, shift in windows:
        window = _window(sweep, start, stop, shift)
        fresh = prepare_frame_level(window, spacing_mm, max_frames=24, **NEAR_FIELD)
        cached = prepare_frame_level(window, spacing_mm, max_frames=24, cache=cache, **NEAR_FIELD)
        _assert_same_level(cached, fresh)
        assert fresh.prepared is None and len(cached.prepared) == len(cached)
        # the MIND-SSC descriptors: computed once per frame, then copied
        for _ in range(2):
            for got, want in zip(
                us_mind_descriptors(cached, 1, 1, 0.5, "us_std"),
                us_mind_descriptors(fresh, 1, 1, 0.5, "us_std"),
                strict=True,
            ):
                np.testing.assert_array_equal(got, want)
    assert cache.hits > 0 and cache.misses > 0


def test_a_frame_with_other_pixels_is_prepared_again(small_case):
    """Same time and pose, other pixels (a reused buffer): the cache must not answer."""
    _, sweep, _, _ = small_case
    cache = PreparedFrameCache()
    window = _window(sweep, 0, 60)
    prepare_frame_level(window, 1.0, max_frames=24, cache=cache, **NEAR_FIELD)
    changed = _window(sweep, 0, 60)
    changed.images[:, 40:60, 30:90] //= 2
    fresh = prepare_frame_level(changed, 1.0, max_frames=24, **NEAR_FIELD)
    hits = cache.hits
    cached = prepare_frame_level(changed, 1.0, max_frames=24, cache=cache, **NEAR_FIELD)
    _assert_same_level(cached, fresh)
    assert cache.hits == hits  # every frame was changed: none found


def test_another_field_of_view_or_setting_is_not_mixed_up(small_case):
    _, sweep, _, _ = small_case
    cache = PreparedFrameCache()
    window = _window(sweep, 0, 60)
    prepare_frame_level(window, 1.0, max_frames=24, cache=cache, **NEAR_FIELD)
    smaller = window.mask().copy()
    smaller[:, : smaller.shape[1] // 3] = False
    other = Sweep(window.images, window.image_to_reference, window.timestamps, fov_mask=smaller)
    for sw, kwargs in (
        (other, NEAR_FIELD),
        (window, {}),
        (window, {**NEAR_FIELD, "near_field_fraction": 0.2}),
        (window, {"ignore_zero_pixels": True}),
    ):
        fresh = prepare_frame_level(sw, 1.0, max_frames=24, **kwargs)
        cached = prepare_frame_level(sw, 1.0, max_frames=24, cache=cache, **kwargs)
        _assert_same_level(cached, fresh)


def test_the_cache_forgets_the_least_recently_used_frames(small_case):
    _, sweep, _, _ = small_case
    cache = PreparedFrameCache(max_frames=10, max_settings=1)
    prepare_frame_level(_window(sweep, 0, 60), 1.0, max_frames=24, cache=cache)
    (group,) = cache._groups.values()
    assert len(group.frames) == 10
    prepare_frame_level(_window(sweep, 0, 60), 1.5, max_frames=24, cache=cache)
    assert len(cache._groups) == 1
    cache.clear()
    assert cache.hits == cache.misses == 0


def test_registrations_with_the_cache_give_the_same_results(small_case):
    """Warm-started runs on overlapping windows, with and without the cache: the same
    candidates, similarities and numbers of evaluations."""
    mri, sweep, _, truth = small_case
    opts = streaming_registration_options()
    init = truth.init_reference_to_mri
    cache = PreparedFrameCache()
    for start, shift in ((0, 0), (6, 5), (12, 11)):
        window = _window(sweep, start, min(start + 48, len(sweep)), shift)
        results = []
        for frame_cache in (None, cache):
            problem = SweepRegistration(mri, window, init, opts, frame_cache=frame_cache)
            results.append(problem.run(init, current=init, warm=True))
        a, b = results
        np.testing.assert_array_equal(a.candidate, b.candidate)
        assert a.similarity == b.similarity
        assert a.evaluations == b.evaluations
        assert a.accepted == b.accepted
    assert cache.hits > 0


# ----------------------------------------------------------------------------- near field


def _near_field_millimetres(us, valid, pixel_mm, *, fraction, min_depth_mm, margin_mm):
    """:func:`anechoic_near_field` as written before the pixel counts (the reference)."""
    import cv2

    inside = np.asarray(valid, bool)
    if not inside.any():
        return np.zeros(inside.shape, bool)
    level = float(np.percentile(us[inside], 99.0))
    if level <= 0:
        return np.zeros(inside.shape, bool)
    dark_or_outside = (us < fraction * level) | ~inside
    layer = np.logical_and.accumulate(dark_or_outside, axis=0) & inside
    layer[:, layer.sum(axis=0) * pixel_mm[1] < min_depth_mm] = False
    widen = math.ceil(margin_mm / pixel_mm[0] - 1e-9)
    if widen > 0 and layer.any():
        kernel = np.ones((1, 2 * widen + 1), np.uint8)
        layer = cv2.dilate(layer.astype(np.uint8), kernel).astype(bool) & inside
    return layer


def test_near_field_in_pixel_counts_equals_the_millimetre_rule():
    rng = np.random.default_rng(3)
    for trial in range(300):
        rows, cols = rng.integers(5, 50, 2)
        us = rng.uniform(0.0, 100.0, (rows, cols)).astype(np.float32)
        depth = rng.integers(0, rows, cols)
        us[np.arange(rows)[:, None] < depth[None, :]] *= 0.01  # a layer of varied depth
        valid = (rng.random((rows, cols)) > 0.05).astype(np.uint8)
        row_mm = float(rng.uniform(0.1, 1.0))
        if trial % 3 == 0:  # pixel sizes a few ulps apart, as frame poses give them
            row_mm = float(np.nextafter(row_mm, 2.0 if trial % 2 else 0.0))
        min_depth = float(rng.uniform(0.5, 6.0))
        if trial % 4 == 0:  # exactly n pixels deep: the boundary case of "<"
            min_depth = float(int(rng.integers(1, rows)) * row_mm)
        pixel_mm = (float(rng.uniform(0.1, 1.0)), row_mm)
        kwargs = {"fraction": 0.1, "min_depth_mm": min_depth, "margin_mm": float(rng.uniform(0, 2))}
        np.testing.assert_array_equal(
            anechoic_near_field(us, valid, pixel_mm, **kwargs),
            _near_field_millimetres(us, valid, pixel_mm, **kwargs),
        )


# ----------------------------------------------------------------------------- exact rewrites


def _select_reference(positions: np.ndarray, min_distance: float) -> list[int]:
    """The plain-Python loop select_frames used before the kernel."""
    pos = positions.tolist()
    chosen = [0]
    last = pos[0]
    for f in range(1, len(pos)):
        moved = 0.0
        for a, b in zip(pos[f], last, strict=True):
            dx, dy, dz = a[0] - b[0], a[1] - b[1], a[2] - b[2]
            moved = max(moved, math.sqrt(dx * dx + dy * dy + dz * dz))
        if moved >= min_distance:
            chosen.append(f)
            last = pos[f]
    return chosen


def test_select_spaced_frames_matches_the_python_loop():
    rng = np.random.default_rng(11)
    for trial in range(200):
        n = int(rng.integers(1, 120))
        steps = rng.normal(0.0, 0.4, (n, 1, 3)) + rng.normal(0.0, 0.05, (n, 4, 3))
        positions = np.cumsum(steps, axis=0)
        d = float(rng.uniform(0.05, 2.0))
        if trial % 5 == 0 and n > 1:  # a tie: exactly the first frame's largest motion
            d = max(math.dist(positions[1, p], positions[0, p]) for p in range(4))
        out = np.empty(n, np.int64)
        got = out[: K.select_spaced_frames(np.ascontiguousarray(positions), d, out)]
        assert got.tolist() == _select_reference(positions, d)
    assert K.select_spaced_frames(np.zeros((0, 4, 3)), 1.0, np.empty(0, np.int64)) == 0


def test_fov_corners_and_depth_match_every_pixel():
    rng = np.random.default_rng(2)
    for trial in range(100):
        rows, cols = rng.integers(1, 80, 2)
        mask = rng.random((rows, cols)) < (0.0 if trial % 10 == 0 else rng.uniform(0.001, 1))
        r, c = np.nonzero(mask)
        expected = (
            np.zeros((0, 4))
            if r.size == 0
            else np.array(
                [
                    [c.min(), r.min(), 0, 1],
                    [c.max(), r.min(), 0, 1],
                    [c.min(), r.max(), 0, 1],
                    [c.max(), r.max(), 0, 1],
                ],
                float,
            )
        )
        np.testing.assert_array_equal(fov_corners(mask), expected)
        pose = np.diag([0.3, float(rng.uniform(0.05, 0.6)), 1.0, 1.0])
        sweep = Sweep(np.zeros((1, rows, cols), np.uint8), pose[None], np.zeros(1), fov_mask=mask)
        depth = 0.0 if r.size == 0 else float(r.mean() * sweep.pixel_spacing_mm[1])
        assert fov_depth_mm(sweep) == depth


def test_mind_frames_kernel_scores_each_frame_alone(small_case):
    """The frame kernel (one exp per frame, box of scratch rows) gives each frame the same
    sums whether it runs with the others or alone."""
    mri, sweep, _, truth = small_case
    opts = streaming_registration_options()
    problem = SweepRegistration(mri, sweep, truth.init_reference_to_mri, opts)
    level = problem.level(-1)
    sim = level.similarity
    frames = sim.frames
    aff = sim.frame_affines(truth.init_reference_to_mri)
    n = len(frames)
    rows, cols = frames.us.shape[1:]

    def run(part: slice) -> tuple[np.ndarray, ...]:
        k = part.stop - part.start
        out = np.zeros(k), np.zeros(k), np.zeros(k, np.int64)
        K.mind_ssc_frames(
            level.mri.vol2,
            sim._us_desc[part],
            sim._us_dvalid[part],
            sim._us_weight[part],
            frames.valid[part],
            aff[part],
            1,
            1,
            0.5,
            *out,
            *K.mind_scratch(rows, cols),
        )
        return out

    together = run(slice(0, n))
    for f in range(n):
        alone = run(slice(f, f + 1))
        for a, b in zip(alone, together, strict=True):
            assert a[0] == b[f]
    assert np.all(together[1] > 0)


def test_the_worker_checks_a_constant_mri_at_every_update(small_case):
    """The worker skips its MRI's checks once they passed; a constant MRI never passes."""
    mri, sweep, cal, truth = small_case
    flat = Volume(np.zeros(mri.shape, np.float32), mri.affine, source="flat.nii")
    worker = RegistrationWorker(flat, cal, truth.init_reference_to_mri)
    window = [(sweep.images[i], sweep.image_to_reference[i], float(i)) for i in range(len(sweep))]
    for _ in range(2):
        with pytest.raises(InputError, match="constant"):
            worker.update(window)
