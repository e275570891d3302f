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
from usnav.registration import similarity
from usnav.registration.rigid import SweepRegistration
from usnav.registration.search import fov_depth_mm
from usnav.registration.similarity import (
    FrameLevel,
    PreparedFrameCache,
    anechoic_near_field,
    fov_corners,
    pixel_digest,
    prepare_frame_level,
    us_mind_descriptors,
)
from usnav.registration.sweep import Sweep, new_frame_ids
from usnav.registration.worker import (
    RegistrationWorker,
    WindowArrays,
    WorkerOptions,
    streaming_registration_options,
)

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


def test_a_changed_pixel_is_never_served_from_the_cache(small_case):
    """One pixel of one frame changed (same time and pose): that frame alone is prepared
    again, and every frame equals a fresh preparation."""
    _, sweep, _, _ = small_case
    cache = PreparedFrameCache()
    window = _window(sweep, 0, 60)
    first = prepare_frame_level(window, 1.0, max_frames=24, cache=cache, **NEAR_FIELD)
    changed = _window(sweep, 0, 60)
    f = int(first.frame_index[5])
    mask = changed.mask()
    rows, cols = np.nonzero(mask)
    r, c = int(rows[len(rows) // 2]), int(cols[len(cols) // 2])  # inside the crop
    changed.images[f, r, c] ^= 1  # one bit of one pixel
    hits, misses = cache.hits, cache.misses
    cached = prepare_frame_level(changed, 1.0, max_frames=24, cache=cache, **NEAR_FIELD)
    _assert_same_level(cached, prepare_frame_level(changed, 1.0, max_frames=24, **NEAR_FIELD))
    assert cache.misses - misses == 1 and cache.hits - hits == len(cached) - 1
    assert cached.prepared is not None and cached.prepared[5] is not first.prepared[5]


def test_the_cache_keeps_a_digest_not_the_pixels(small_case):
    """32 bytes per frame (SHA-256 of dtype, shape and values) where a copy of the crop was
    kept; another dtype or shape of the same bytes is another digest."""
    _, sweep, _, _ = small_case
    cache = PreparedFrameCache()
    prepare_frame_level(_window(sweep, 0, 60), 1.0, max_frames=24, cache=cache, **NEAR_FIELD)
    (group,) = cache._groups.values()
    for entry in group.frames.values():
        assert isinstance(entry.digest, bytes) and len(entry.digest) == 32
        assert entry.frame_id is None
        assert not hasattr(entry, "source")
        held = [entry.us, entry.valid, *(a for trio in entry.mind.values() for a in trio)]
        assert sum(a.nbytes for a in held) < sweep.images[0].nbytes
    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert pixel_digest(pixels) == pixel_digest(pixels.copy())
    assert pixel_digest(pixels[:, ::2]) == pixel_digest(np.ascontiguousarray(pixels[:, ::2]))
    others = [pixels.reshape(4, 3), pixels.view(np.int8), pixels.T]
    assert all(pixel_digest(o) != pixel_digest(pixels) for o in others)


def test_frame_ids_stand_for_the_pixels(small_case, monkeypatch):
    """A sweep whose frames carry ids is never hashed: the same id finds its frame, another
    id (or none) does not find a frame stored by id (no digest kept), and the values are
    those of a fresh preparation."""
    _, sweep, _, _ = small_case
    window = _window(sweep, 0, 60)
    ids = new_frame_ids(len(window))
    with_ids = Sweep(
        window.images,
        window.image_to_reference,
        window.timestamps,
        fov_mask=window.mask(),
        frame_ids=ids,
    )
    fresh = prepare_frame_level(window, 1.0, max_frames=24, **NEAR_FIELD)
    cache = PreparedFrameCache()

    def no_hashing(pixels: np.ndarray) -> bytes:
        raise AssertionError("frames with ids are not hashed")

    monkeypatch.setattr(similarity, "pixel_digest", no_hashing)
    for _ in range(2):
        _assert_same_level(
            prepare_frame_level(with_ids, 1.0, max_frames=24, cache=cache, **NEAR_FIELD), fresh
        )
    assert cache.hits == len(fresh) and cache.misses == len(fresh)
    assert with_ids.subset(slice(3, 9)).frame_ids.tolist() == ids[3:9].tolist()
    monkeypatch.undo()
    other = Sweep(
        window.images,
        window.image_to_reference,
        window.timestamps,
        fov_mask=window.mask(),
        frame_ids=new_frame_ids(len(window)),
    )
    for sw in (other, window):
        hits = cache.hits
        _assert_same_level(
            prepare_frame_level(sw, 1.0, max_frames=24, cache=cache, **NEAR_FIELD), fresh
        )
        assert cache.hits == hits  # stored by id: not found by another id or by pixels
    with pytest.raises(InputError, match="ids"):
        Sweep(window.images, window.image_to_reference, window.timestamps, frame_ids=ids[:3])
    assert new_frame_ids(3)[0] > ids[-1] and new_frame_ids(0).size == 0


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


def test_window_arrays_equal_stacking_the_window():
    """Sliding, growing, jumping and mixed windows: the arrays always equal ``np.stack`` of the
    window; a frame kept in the run keeps its id, a frame copied in gets a new one."""
    rng = np.random.default_rng(4)
    frames = [
        (
            rng.integers(0, 255, (9, 7), dtype=np.uint8),
            rng.normal(size=(4, 4)),
            0.05 * i,
        )
        for i in range(400)
    ]
    arrays = WindowArrays(window_frames=20)
    spans = [(0, 8), (0, 14), (3, 20), (6, 26)]
    spans += [(a, a + 20) for a in range(9, 200, 3)]  # sliding: the run moves to the front
    spans += [(150, 170), (150, 170), (40, 60), (41, 61), (300, 331), (301, 332), (0, 20)]
    previous: dict[int, int] = {}
    for a, b in spans:
        window = frames[a:b]
        images, poses, ids = arrays.arrays(window)
        np.testing.assert_array_equal(images, np.stack([w[0] for w in window]))
        np.testing.assert_array_equal(poses, np.stack([w[1] for w in window]))
        assert images.dtype == np.uint8 and poses.dtype == np.float64
        assert not images.flags.writeable and not poses.flags.writeable
        assert ids is not None and len(set(ids.tolist())) == len(window)
        now = {i: int(ids[k]) for k, i in enumerate(range(a, b))}
        if a in previous:  # a slide (or the same window): the shared frames keep their ids
            assert all(now[i] == previous[i] for i in range(a, b) if i in previous)
        newest = max(previous.values(), default=0)
        assert all(now[i] > newest for i in now if i not in previous)
        previous = now
    # mixed frames (another dtype, a list pose): stacked afresh, as np.stack would, no ids
    mixed = [*frames[:5], (frames[5][0].astype(np.float32), frames[5][1], 0.0)]
    images, poses, ids = arrays.arrays(mixed)
    assert ids is None and images.dtype == np.float32
    np.testing.assert_array_equal(images, np.stack([w[0] for w in mixed]))
    listed = [(frames[0][0], frames[0][1].tolist(), 0.0), *frames[1:4]]
    images, poses, ids = arrays.arrays(listed)
    assert ids is None
    np.testing.assert_array_equal(poses, np.stack([np.asarray(w[1]) for w in listed]))
    images, poses, ids = arrays.arrays(frames[10:30])  # and the array again afterwards
    assert ids is not None
    np.testing.assert_array_equal(images, np.stack([w[0] for w in frames[10:30]]))
    with pytest.raises(ValueError):
        arrays.arrays([])


def test_window_ids_follow_the_frames_through_the_run():
    """A window sliding by 3 over frames: the frames it shares with the previous window keep
    their ids (no copy), new frames get new ids."""
    rng = np.random.default_rng(5)
    frames = [(rng.integers(0, 9, (4, 5), dtype=np.uint8), np.eye(4), float(i)) for i in range(90)]
    arrays = WindowArrays(window_frames=12)
    previous: dict[int, int] = {}
    for a in range(0, 70, 3):
        _, _, ids = arrays.arrays(frames[a : a + 12])
        assert ids is not None
        now = {a + k: int(i) for k, i in enumerate(ids)}
        for i, frame_id in now.items():
            if i in previous:
                assert frame_id == previous[i]
            else:
                assert all(frame_id > old for old in previous.values())
        previous = now


def test_worker_updates_equal_with_and_without_its_window_arrays(small_case):
    """The same sliding windows through two workers, one of them stacking every window afresh
    (no frame ids: its cache hashes the pixels): the same estimates, to the bit."""
    mri, sweep, cal, truth = small_case
    stream = [(sweep.images[i], sweep.image_to_reference[i], 0.05 * i) for i in range(len(sweep))]
    stream += [
        (sweep.images[i], sweep.image_to_reference[i], 0.05 * (len(sweep) + k))
        for k, i in enumerate(range(len(sweep) - 1, -1, -1))
    ]
    opts = WorkerOptions(window_frames=40, min_frames=20, min_new_frames=8, min_extent_first_mm=5)
    plain = RegistrationWorker(mri, cal, truth.init_reference_to_mri, opts)
    stacked = RegistrationWorker(mri, cal, truth.init_reference_to_mri, opts)
    stacked._window_lock.acquire()  # as if another update held the window arrays
    estimates = 0
    for start in range(0, len(stream) - 40 + 1, 8):
        window = stream[start : start + 40]
        a, b = plain.update(window), stacked.update(window)
        if a is None or b is None:
            assert a is None and b is None
            continue
        estimates += 1
        np.testing.assert_array_equal(a.reference_to_mri, b.reference_to_mri)
        assert (a.accepted, a.similarity, a.reason) == (b.accepted, b.similarity, b.reason)
    assert estimates >= 5
    assert plain._frame_cache.hits == stacked._frame_cache.hits > 0


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


def _detect_fov_mask_numpy(images: np.ndarray) -> np.ndarray:
    """detect_fov_mask as written before its compiled statistics (the reference)."""
    from scipy import ndimage
    from skimage.morphology import convex_hull_image

    n = images.shape[0]
    pick = np.unique(np.linspace(0, n - 1, min(n, 60)).round().astype(int))
    stack = images[pick]
    nonzero = np.count_nonzero(stack > 0, axis=0) / len(pick) > 0.05
    candidate = nonzero & (stack.std(axis=0, dtype=np.float32) > 0.5) if len(pick) >= 3 else nonzero
    if not candidate.any():
        return np.zeros(images.shape[1:], bool)
    labels, count = ndimage.label(candidate)
    if count > 1:
        sizes = ndimage.sum_labels(candidate, labels, index=np.arange(1, count + 1))
        candidate = labels == (1 + int(np.argmax(sizes)))
    return ndimage.binary_erosion(convex_hull_image(candidate), iterations=2)


def test_fov_detection_equals_the_numpy_statistics(small_case):
    from usnav.registration.sweep import detect_fov_mask

    _, sweep, _, _ = small_case
    for a, b in ((0, len(sweep)), (0, 45), (10, 50), (20, 22), (5, 6)):
        np.testing.assert_array_equal(
            detect_fov_mask(sweep.images[a:b]), _detect_fov_mask_numpy(sweep.images[a:b])
        )


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
