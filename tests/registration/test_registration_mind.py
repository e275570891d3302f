"""MIND-SSC similarity (#16 item 3): the Numba kernels against a plain-numpy reference, the
descriptor's invariance to an affine intensity change, and its optimum on a small simulated
case."""

from __future__ import annotations

import numpy as np
import pytest

from usnav.registration import _kernels as K
from usnav.registration.similarity import FrameSimilarity, us_mind_descriptors

# ----------------------------------------------------------------------------- reference


def _box_sum(a: np.ndarray, half: int) -> np.ndarray:
    """Sum over the (2·half+1)² window, clipped at the borders (a plain loop)."""
    rows, cols = a.shape[:2]
    out = np.zeros_like(a)
    for r in range(rows):
        for c in range(cols):
            r0, r1 = max(r - half, 0), min(r + half + 1, rows)
            c0, c1 = max(c - half, 0), min(c + half + 1, cols)
            out[r, c] = a[r0:r1, c0:c1].sum(axis=(0, 1))
    return out


def ref_descriptors(
    img: np.ndarray, valid: np.ndarray, half: int, dist: int, min_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """MIND-SSC in 2D written from the definition (float64)."""
    img = img.astype(np.float64)
    rows, cols = img.shape
    d = dist
    chan = np.zeros((rows, cols, 7))
    for r in range(d, rows - d):
        for c in range(d, cols - d):
            five = [(r, c), (r - d, c), (r + d, c), (r, c - d), (r, c + d)]
            if not all(valid[p] for p in five):
                continue
            n, s, w, e = img[r - d, c], img[r + d, c], img[r, c - d], img[r, c + d]
            pairs = [(n, s), (w, e), (n, w), (n, e), (s, w), (s, e)]
            chan[r, c] = [1.0] + [(x - y) ** 2 for x, y in pairs]
    sums = _box_sum(chan, half)
    count = sums[..., 0]
    ok = (valid > 0) & (count >= max(min_fraction * (2 * half + 1) ** 2, 1.0))
    dist_k = np.where(ok[..., None], sums[..., 1:] / np.where(ok, count, 1)[..., None], 0.0)
    v = dist_k.mean(axis=-1)
    floor = 1e-3 * v[ok].mean() if ok.any() else 0.0
    v = np.maximum(v, floor)
    with np.errstate(invalid="ignore", divide="ignore"):
        desc = np.exp(-(dist_k - dist_k.min(axis=-1, keepdims=True)) / v[..., None])
    desc[~ok] = 0.0
    return desc, ok


def ref_frame_score(
    us: np.ndarray,
    us_valid: np.ndarray,
    mri: np.ndarray,
    mri_valid: np.ndarray,
    weight: np.ndarray,
    half: int,
    dist: int,
    min_fraction: float,
) -> tuple[float, float]:
    """(Σ w·(1 - mean_k |d_us - d_mri|), Σ w) over pixels where both descriptors count."""
    du, oku = ref_descriptors(us, us_valid, half, dist, min_fraction)
    dm, okm = ref_descriptors(mri, mri_valid & us_valid, half, dist, min_fraction)
    both = oku & okm
    score = 1.0 - np.abs(du - dm).mean(axis=-1)
    return float((weight * score)[both].sum()), float(weight[both].sum())


def _kernel_descriptors(img, valid, half, dist, min_fraction=0.5):
    rows, cols = img.shape
    desc = np.zeros((rows, cols, K.N_MIND), np.float32)
    ok = np.zeros((rows, cols), np.uint8)
    scratch = K.mind_scratch(rows, cols)[3:6]
    n = K.mind_ssc_image(
        img.astype(np.float32), valid.astype(np.uint8), half, dist, min_fraction, desc, ok, *scratch
    )
    return desc, ok.astype(bool), n


# ----------------------------------------------------------------------------- kernels


@pytest.mark.parametrize(("seed", "half", "dist"), [(0, 1, 1), (1, 2, 1), (2, 1, 2)])
def test_descriptors_match_reference(seed: int, half: int, dist: int) -> None:
    rng = np.random.default_rng(seed)
    img = rng.random((13, 17)).astype(np.float32)
    valid = rng.random((13, 17)) > 0.15
    desc, ok, n = _kernel_descriptors(img, valid, half, dist)
    ref, ref_ok = ref_descriptors(img, valid, half, dist, 0.5)
    assert ok.sum() > 20
    np.testing.assert_array_equal(ok, ref_ok)
    assert n == ref_ok.sum()
    np.testing.assert_allclose(desc, ref, rtol=1e-5, atol=1e-6)
    assert np.allclose(desc[ok].max(axis=-1), 1.0)  # largest channel 1


@pytest.mark.parametrize(("half", "dist"), [(1, 1), (2, 1), (1, 2)])
def test_descriptors_of_a_field_of_view_inside_the_frame(half: int, dist: int) -> None:
    """A sector-shaped field of view with invalid margins on every side (as a frame's): the
    kernel works only inside the valid pixels' bounding box, so its descriptors must match the
    reference, be 0 outside, and equal to the bit those of the same pixels cropped to the box or
    moved inside a wider margin (outside the box the sums only ever saw zeros)."""
    rng = np.random.default_rng(11)
    rows, cols = 24, 27
    img = rng.random((rows, cols)).astype(np.float32)
    rr, cc = np.mgrid[:rows, :cols]
    valid = (rr >= 4) & (rr <= 20) & (np.abs(cc - 13) <= 0.6 * (rr - 2) + 1) & (cc >= 3)
    valid &= rng.random((rows, cols)) > 0.05
    desc, ok, n = _kernel_descriptors(img, valid, half, dist)
    ref, ref_ok = ref_descriptors(img, valid, half, dist, 0.5)
    np.testing.assert_array_equal(ok, ref_ok)
    assert n == ref_ok.sum() > 50
    np.testing.assert_allclose(desc, ref, rtol=1e-5, atol=1e-6)
    rows_in = np.flatnonzero(valid.any(axis=1))
    cols_in = np.flatnonzero(valid.any(axis=0))
    box = np.s_[rows_in[0] : rows_in[-1] + 1, cols_in[0] : cols_in[-1] + 1]
    inside = np.zeros(valid.shape, bool)
    inside[box] = True
    assert not desc[~inside].any()
    cropped, cropped_ok, _ = _kernel_descriptors(img[box], valid[box], half, dist)
    np.testing.assert_array_equal(cropped, desc[box])
    np.testing.assert_array_equal(cropped_ok, ok[box])
    # a one-pixel margin: the box starts inside the first patch (0 < r0, c0 < half + 1)
    padded, padded_ok, _ = _kernel_descriptors(
        np.pad(img[box], 1), np.pad(valid[box], 1), half, dist
    )
    np.testing.assert_array_equal(padded[1:-1, 1:-1], desc[box])
    np.testing.assert_array_equal(padded_ok[1:-1, 1:-1], ok[box])
    wide_img = np.zeros((rows + 9, cols + 5), np.float32)
    wide_valid = np.zeros(wide_img.shape, bool)
    wide_img[7 : 7 + rows, 2 : 2 + cols] = img
    wide_valid[7 : 7 + rows, 2 : 2 + cols] = valid
    wide, wide_ok, _ = _kernel_descriptors(wide_img, wide_valid, half, dist)
    np.testing.assert_array_equal(wide[7 : 7 + rows, 2 : 2 + cols], desc)
    np.testing.assert_array_equal(wide_ok[7 : 7 + rows, 2 : 2 + cols], ok)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_descriptor_invariant_to_affine_intensity(seed: int) -> None:
    """MIND's reason to exist: a·I + b (a > 0) leaves the descriptor unchanged."""
    rng = np.random.default_rng(seed)
    img = rng.gamma(2.0, 0.3, (20, 24)).astype(np.float32)
    valid = np.ones(img.shape, bool)
    valid[:, :3] = False
    a = float(rng.uniform(0.2, 5.0))
    b = float(rng.uniform(-3.0, 3.0))
    d1, ok1, _ = _kernel_descriptors(img, valid, 1, 1)
    d2, ok2, _ = _kernel_descriptors((a * img + b).astype(np.float32), valid, 1, 1)
    np.testing.assert_array_equal(ok1, ok2)
    np.testing.assert_allclose(d1, d2, atol=2e-4)
    # and it is not constant: another image gives other descriptors
    d3, _, _ = _kernel_descriptors(rng.random(img.shape).astype(np.float32), valid, 1, 1)
    assert np.abs(d1 - d3)[ok1].mean() > 0.05


def test_vectorised_exp_matches_numpy() -> None:
    """exp_neg_rows (the frame kernel's exp) against numpy's float64 exp, over the range the
    descriptors use (0 to far beyond underflow) and exactly at 0 (the largest channel: 1)."""
    x = np.r_[0.0, np.geomspace(1e-7, 200.0, 4001), 87.0, 1e30].astype(np.float32)
    out = np.zeros_like(x)
    K.exp_neg_rows(x, out, np.zeros(x.shape, np.int32))
    expected = np.exp(-x.astype(np.float64))
    assert out[0] == 1.0
    # float32 arithmetic: the relative error grows with the argument's own rounding (as with
    # libm's expf of a float32 product); where the descriptors live (x < 20) it is < 10⁻⁶
    error = np.abs(out - expected)
    assert np.all(error <= 2e-7 * expected * np.maximum(x, 1.0) + 1e-37)
    assert np.all(np.diff(out) <= 0)  # monotone, as exp is


def test_frame_sums_match_reference() -> None:
    """mind_ssc_frames on frames that reslice the volume on its grid (plane k = const), some
    pixels outside the MRI, against the numpy reference."""
    rng = np.random.default_rng(5)
    vol = rng.random((4, 12, 15)).astype(np.float32)
    vol2 = np.ascontiguousarray(np.stack([vol, np.zeros_like(vol)], axis=-1))
    rows, cols = 14, 15  # rows 12, 13 fall outside the volume (j ≤ 11)
    n = 3
    us = rng.random((n, rows, cols)).astype(np.float32)
    fov = (rng.random((n, rows, cols)) > 0.1).astype(np.uint8)
    affines = np.zeros((n, 3, 3))
    for f in range(n):
        affines[f, :, 0] = [0, 0, 1]  # column → k
        affines[f, :, 1] = [0, 1, 0]  # row → j
        affines[f, :, 2] = [f + 0.0, 0, 0]
    weight = rng.uniform(0.5, 2.0, (n, rows, cols)).astype(np.float32)
    half, dist = 1, 1
    us_desc = np.zeros((n, rows, cols, K.N_MIND), np.float32)
    us_ok = np.zeros((n, rows, cols), np.uint8)
    scratch = K.mind_scratch(rows, cols)
    for f in range(n):
        K.mind_ssc_image(us[f], fov[f], half, dist, 0.5, us_desc[f], us_ok[f], *scratch[3:6])
    num = np.zeros(n)
    den = np.zeros(n)
    inside = np.zeros(n, np.int64)
    K.mind_ssc_frames(
        vol2, us_desc, us_ok, weight, fov, affines, half, dist, 0.5, num, den, inside, *scratch
    )
    for f in range(n):
        mri = np.zeros((rows, cols))
        mri[:12] = vol[f]
        inside_mri = np.zeros((rows, cols), bool)
        inside_mri[:12] = True
        rnum, rden = ref_frame_score(us[f], fov[f] > 0, mri, inside_mri, weight[f], half, dist, 0.5)
        assert rden > 0
        assert inside[f] == int((fov[f] > 0)[:12].sum())
        np.testing.assert_allclose([num[f], den[f]], [rnum, rden], rtol=1e-5)
    # the US descriptors as FrameSimilarity computes them are the same
    from usnav.registration.similarity import FrameLevel

    level = FrameLevel(0.5, us, us, fov, np.tile(np.eye(4), (n, 1, 1)), np.arange(n))
    d, ok, w = us_mind_descriptors(level, half, dist, 0.5, "uniform")
    np.testing.assert_array_equal(d, us_desc)
    np.testing.assert_array_equal(ok, us_ok)
    assert np.all(w == 1.0)
    _, _, w = us_mind_descriptors(level, half, dist, 0.5, "us_std")
    patch = us[0, 4:7, 4:7][fov[0, 4:7, 4:7] > 0]
    assert w[0, 5, 5] == pytest.approx(patch.std(), rel=1e-4)


# ----------------------------------------------------------------------------- registration


def test_mind_prefers_the_true_pose(small_case) -> None:
    """On a small simulated case the MIND-SSC similarity at the true pose beats the true pose
    shifted by 3 mm along each axis (the optimum is where the anatomy is)."""
    from usnav.registration.rigid import RegistrationOptions, SweepRegistration

    mri, sweep, _, truth = small_case
    opts = RegistrationOptions(
        metric="mind_ssc", level_spacings_mm=[1.0], patch_half=[1], max_frames=[30]
    )
    problem = SweepRegistration(mri, sweep, truth.reference_to_mri, opts)
    sim = problem.level(-1).similarity
    assert isinstance(sim, FrameSimilarity) and sim.metric == "mind_ssc"
    at_truth = sim(truth.reference_to_mri)
    assert 0.0 < at_truth < 1.0
    shifted = []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            m = truth.reference_to_mri.copy()
            m[axis, 3] += sign * 3.0
            shifted.append(sim(m))
    assert at_truth > max(shifted)
    # leaving the MRI never pays: far outside, the score is 0
    far = truth.reference_to_mri.copy()
    far[0, 3] += 500.0
    assert sim(far) == 0.0


def test_mind_split_among_threads_equals_one_thread(small_case) -> None:
    """The frames split among threads give the one-thread per-frame sums to the bit (each
    chunk has its own scratch), and a subset of frames (the grid, the half-sweeps) scores its
    frames as the whole does."""
    from usnav.registration.pose import _subset_level
    from usnav.registration.rigid import RegistrationOptions, SweepRegistration
    from usnav.registration.similarity import set_threads

    mri, sweep, _, truth = small_case
    opts = RegistrationOptions(metric="mind_ssc", level_spacings_mm=[1.0], max_frames=[20])
    level = SweepRegistration(mri, sweep, truth.init_reference_to_mri, opts).level(-1)
    pose = truth.init_reference_to_mri
    previous = set_threads(1)
    try:
        one = level.similarity.per_frame(pose)
        set_threads(3)
        sim = FrameSimilarity(level.mri, level.frames, metric="mind_ssc", patch_half=1)
        for a, b in zip(one, sim.per_frame(pose), strict=True):
            np.testing.assert_array_equal(a, b)
    finally:
        set_threads(previous)
    keep = np.array([1, 4, 7])
    sub = FrameSimilarity(
        level.mri, _subset_level(level.frames, keep), metric="mind_ssc", patch_half=1
    )
    num, den, _ = sub.per_frame(pose)
    np.testing.assert_allclose(num, one[0][keep], rtol=1e-12)
    np.testing.assert_allclose(den, one[1][keep], rtol=1e-12)
    assert np.all(den > 0)


def test_register_with_mind_ssc_recovers_the_initial_offset(small_case) -> None:
    """End to end (options → search → verdict → uncertainty): the mind_ssc search recovers the
    simulator's 4-8 mm initial offset on the small case."""
    from usnav.registration.rigid import RegistrationOptions, register_sweep

    mri, sweep, _, truth = small_case
    init = truth.init_reference_to_mri
    before = truth.mtre(init)
    result = register_sweep(mri, sweep, init, RegistrationOptions(metric="mind_ssc"))
    assert result.metric == "mind_ssc"
    after = truth.mtre(result.candidate)
    assert before > 3.0
    assert after < 1.5, f"mTRE {before:.2f} → {after:.2f} mm"
    assert result.similarity > result.initial_similarity


def test_level_metrics_choose_each_levels_similarity(small_case) -> None:
    """``level_metrics`` sets each level's similarity; the verdict scores with the finest."""
    from usnav.registration.rigid import RegistrationOptions, SweepRegistration

    mri, sweep, _, truth = small_case
    opts = RegistrationOptions(
        level_metrics=["lc2", "mind_ssc"],
        level_spacings_mm=[1.5, 1.0],
        patch_half=[1, 1],
        max_frames=[20, 20],
        max_evaluations=[40, 30],
    )
    problem = SweepRegistration(mri, sweep, truth.init_reference_to_mri, opts)
    assert [lv.similarity.metric for lv in problem.levels] == ["lc2", "mind_ssc"]
    result = problem.run(truth.init_reference_to_mri)
    assert result.metric == "mind_ssc"
    # the default: one metric everywhere
    plain = SweepRegistration(mri, sweep, truth.init_reference_to_mri, RegistrationOptions())
    assert {lv.similarity.metric for lv in plain.levels} == {RegistrationOptions().metric}


def test_the_chance_margin_is_scaled_to_the_similarity(small_case, monkeypatch) -> None:
    """The verdict's chance test uses the finest similarity's own margin (MIND-SSC's peak is
    shallower than LC²'s), and an explicit ``min_margin_over_null`` decides as stated."""
    from usnav.registration.options import MARGIN_OVER_NULL, MIND_MARGIN_OVER_NULL
    from usnav.registration.rigid import RegistrationOptions, SweepRegistration

    defaults = RegistrationOptions()
    assert defaults.margin_over_null("mind_ssc") == MIND_MARGIN_OVER_NULL < MARGIN_OVER_NULL
    assert defaults.margin_over_null("lc2") == MARGIN_OVER_NULL
    assert RegistrationOptions(min_margin_over_null=0.2).margin_over_null("mind_ssc") == 0.2

    mri, sweep, _, truth = small_case
    init = truth.init_reference_to_mri
    quick = {"level_spacings_mm": [1.5, 1.0], "patch_half": [1, 1], "max_frames": [20, 20]}
    problem = SweepRegistration(mri, sweep, init, RegistrationOptions(**quick))
    margin = problem.judge(truth.reference_to_mri, init).diagnostics["margin_over_chance"]
    assert margin > 0
    for threshold, rejected in ((margin + 0.001, True), (margin - 0.001, False)):
        opts = RegistrationOptions(**quick, min_margin_over_null=threshold)
        verdict = SweepRegistration(mri, sweep, init, opts).judge(truth.reference_to_mri, init)
        assert ("not clearly above chance" in verdict.reason) is rejected, verdict.reason
    # the default follows the finest level's similarity (MIND-SSC here), not LC²'s value
    import usnav.registration.options as O

    monkeypatch.setattr(O, "MIND_MARGIN_OVER_NULL", margin + 0.001)
    verdict = problem.judge(truth.reference_to_mri, init)
    assert "not clearly above chance" in verdict.reason, verdict.reason
    monkeypatch.setattr(O, "MIND_MARGIN_OVER_NULL", margin - 0.001)
    monkeypatch.setattr(O, "MARGIN_OVER_NULL", margin + 0.001)
    verdict = problem.judge(truth.reference_to_mri, init)
    assert "not clearly above chance" not in verdict.reason, verdict.reason
