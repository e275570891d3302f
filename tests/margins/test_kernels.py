"""Each margin kernel against a numpy/scipy reference implementation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation

from usnav.margins import _kernels


def _oblique(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """A random pixel → voxel matrix whose plane passes through the volume."""
    m = np.eye(4)
    rotation = Rotation.from_rotvec(rng.normal(size=3) * 0.6).as_matrix()
    m[:3, :3] = rotation * rng.uniform(0.3, 0.9)
    centre = np.array(shape) / 2.0
    m[:3, 3] = centre - m[:3, :3] @ np.array([20.0, 15.0, 0.0]) + rng.normal(size=3)
    return m


def _voxel_coords(m: np.ndarray, rows: int, cols: int) -> np.ndarray:
    cc, rr = np.meshgrid(np.arange(cols), np.arange(rows))
    pix = np.stack([cc, rr, np.zeros_like(cc), np.ones_like(cc)], axis=-1).astype(np.float64)
    return pix @ m.T  # (rows, cols, 4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nearest_reslice_matches_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 3, size=(23, 19, 17)).astype(np.uint8)
    m = _oblique(rng, codes.shape)
    out = np.empty((30, 40), np.uint8)
    _kernels.reslice_label_nearest(codes, m, out)
    v = _voxel_coords(m, 30, 40)
    idx = np.floor(v[..., :3] + 0.5).astype(int)
    inside = np.all((idx >= 0) & (idx < np.array(codes.shape)), axis=-1)
    expected = np.zeros((30, 40), np.uint8)
    expected[inside] = codes[idx[inside][:, 0], idx[inside][:, 1], idx[inside][:, 2]]
    assert inside.any() and (~inside).any()
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fraction_reslice_matches_scipy_trilinear(seed: int) -> None:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 3, size=(23, 19, 17)).astype(np.uint8)
    m = _oblique(rng, codes.shape)
    out = np.empty((2, 30, 40), np.float32)
    _kernels.reslice_label_fractions(codes, m, 2, out)
    v = _voxel_coords(m, 30, 40)[..., :3].reshape(-1, 3).T
    for q in (1, 2):
        indicator = (codes == q).astype(np.float64)
        expected = ndimage.map_coordinates(indicator, v, order=1, mode="grid-constant", cval=0.0)
        np.testing.assert_allclose(out[q - 1].ravel(), expected, atol=1e-5)


def test_fraction_reslice_ignores_codes_beyond_n_codes() -> None:
    codes = np.full((4, 4, 4), 3, np.uint8)
    out = np.empty((2, 3, 3), np.float32)
    _kernels.reslice_label_fractions(codes, np.eye(4), 2, out)
    assert not out.any()


@pytest.mark.parametrize("seed", [0, 1])
def test_sample_profiles_matches_scipy_bilinear(seed: int) -> None:
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(40, 50)).astype(np.float32)
    points = rng.uniform(2, 38, size=(25, 2))
    angles = rng.uniform(0, 2 * np.pi, 25)
    normals = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    offsets = np.linspace(-6, 6, 13)
    out = np.empty((25, 13), np.float32)
    _kernels.sample_profiles(image, points, normals, offsets, out)
    xy = points[:, None, :] + offsets[None, :, None] * normals[:, None, :]
    inside = (xy[..., 0] >= 0) & (xy[..., 0] <= 49) & (xy[..., 1] >= 0) & (xy[..., 1] <= 39)
    expected = ndimage.map_coordinates(
        image.astype(np.float64), [xy[..., 1].ravel(), xy[..., 0].ravel()], order=1
    ).reshape(25, 13)
    np.testing.assert_allclose(out[inside], expected[inside], atol=1e-4)
    assert np.all(np.isnan(out[~inside]))
    assert (~inside).any()


def _path_cost(cost: np.ndarray, path: list[int] | np.ndarray) -> float:
    return float(sum(cost[n, q] for n, q in enumerate(path)))


@pytest.mark.parametrize("seed", range(6))
def test_open_dp_is_the_exhaustive_optimum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, m, step = 5, 5, 1
    cost = rng.normal(size=(n, m)).astype(np.float32)
    path = np.zeros(n, np.int64)
    _kernels.boundary_dp(cost, step, False, path)
    best = min(
        (
            p
            for p in itertools.product(range(m), repeat=n)
            if all(abs(a - b) <= step for a, b in itertools.pairwise(p))
        ),
        key=lambda p: _path_cost(cost, p),
    )
    assert all(abs(a - b) <= step for a, b in itertools.pairwise(path))
    assert _path_cost(cost, path) == pytest.approx(_path_cost(cost, best), abs=1e-5)


def test_closed_dp_follows_a_noisy_valley() -> None:
    rng = np.random.default_rng(3)
    n, m = 80, 31
    truth = np.round(15 + 8 * np.sin(np.linspace(0, 2 * np.pi, n, endpoint=False))).astype(int)
    cost = rng.normal(scale=0.8, size=(n, m)).astype(np.float32)
    cost[np.arange(n), truth] -= 3.0
    path = np.zeros(n, np.int64)
    _kernels.boundary_dp(cost, 1, True, path)
    assert np.mean(path == truth) > 0.9
    # continuity holds everywhere, including across the seam
    assert np.all(np.abs(np.diff(np.r_[path, path[0]])) <= 1)


def test_dp_avoids_non_finite_costs() -> None:
    cost = np.zeros((6, 5), np.float32)
    cost[:, 0] = -1.0
    cost[2, 0] = np.nan
    path = np.zeros(6, np.int64)
    _kernels.boundary_dp(cost, 1, False, path)
    assert path[2] != 0


def _fractions_reference(codes: np.ndarray, m: np.ndarray, n_codes: int, shape) -> np.ndarray:
    """The trilinear reslice in numpy with the kernel's arithmetic, corner by corner (every
    pixel visited: no column range), so the kernel's must match it bit for bit."""
    rows, cols = shape
    ni, nj, nk = codes.shape
    r, c = np.meshgrid(np.arange(rows, dtype=np.float64), np.arange(cols, dtype=np.float64))
    r, c = r.T, c.T
    x = (m[0, 1] * r + m[0, 3]) + m[0, 0] * c
    y = (m[1, 1] * r + m[1, 3]) + m[1, 0] * c
    z = (m[2, 1] * r + m[2, 3]) + m[2, 0] * c
    near = (x > -1.0) & (y > -1.0) & (z > -1.0) & (x < ni) & (y < nj) & (z < nk)
    i0, j0, k0 = (np.floor(np.where(near, v, 0.0)).astype(np.int64) for v in (x, y, z))
    fx, fy, fz = x - i0, y - j0, z - k0
    out = np.zeros((n_codes, rows, cols), np.float32)
    for di, dj, dk in itertools.product(range(2), repeat=3):
        ii, jj, kk = i0 + di, j0 + dj, k0 + dk
        ok = near & (ii >= 0) & (ii < ni) & (jj >= 0) & (jj < nj) & (kk >= 0) & (kk < nk)
        code = np.zeros((rows, cols), np.int64)
        code[ok] = codes[ii[ok], jj[ok], kk[ok]]
        wx = fx if di == 1 else 1.0 - fx
        wy = fy if dj == 1 else 1.0 - fy
        wz = fz if dk == 1 else 1.0 - fz
        weight = wx * wy * wz
        for q in range(n_codes):
            hit = ok & (code == q + 1)
            out[q][hit] = (out[q][hit].astype(np.float64) + weight[hit]).astype(np.float32)
    return out


@pytest.mark.parametrize("seed", range(8))
def test_fraction_reslice_is_exact_and_its_box_holds_every_fraction(seed: int) -> None:
    """The kernel visits only the columns that may reach the volume: the same bits as
    visiting every pixel, and nothing outside the box it returns."""
    rng = np.random.default_rng(seed)
    codes = np.zeros((12, 11, 9), np.uint8)
    codes[2:10, 3:9, 1:8] = rng.integers(0, 3, size=(8, 6, 7))
    m = _oblique(rng, codes.shape)
    if seed == 6:  # an axis-aligned plane: the j and k steps along a row are exactly 0
        m = np.array([[0.3, 0, 0, -1.5], [0, 0.35, 0, -0.7], [0, 0, 0, 4.3], [0, 0, 0, 1]])
    if seed == 7:  # a plane that misses the volume
        m[:3, 3] += 100.0
    out = np.empty((2, 30, 40), np.float32)
    row_lo, row_hi, col_lo, col_hi = _kernels.reslice_label_fractions(codes, m, 2, out)
    np.testing.assert_array_equal(out, _fractions_reference(codes, m, 2, (30, 40)))
    inside_box = np.zeros((30, 40), bool)
    inside_box[row_lo:row_hi, col_lo:col_hi] = True
    assert not out[:, ~inside_box].any()
    if seed == 7:
        assert (row_lo, row_hi) == (0, 0) and not out.any()
    else:
        assert out.any()


def _codes_reference(fractions: np.ndarray) -> np.ndarray:
    """Per pixel the code with the largest fraction, 0 where the tumor covers < half of it."""
    if fractions.shape[0] == 1:
        return (fractions[0] >= 0.5).astype(np.uint8)
    total = fractions.sum(axis=0)
    if fractions.shape[0] == 2:
        codes = np.where(fractions[1] > fractions[0], np.uint8(2), np.uint8(1))
    else:
        codes = (np.argmax(fractions, axis=0) + 1).astype(np.uint8)
    codes[total < 0.5] = 0
    return codes


@pytest.mark.parametrize("n_codes", [1, 2, 3])
def test_codes_from_fractions_matches_numpy(n_codes: int) -> None:
    rng = np.random.default_rng(n_codes)
    fractions = np.zeros((n_codes, 30, 40), np.float32)
    fractions[:, 5:25, 8:30] = rng.uniform(0, 0.7, size=(n_codes, 20, 22)).astype(np.float32)
    fractions[:, 10:12, 10:12] = 0.25  # ties, and totals right at 0.5 with two codes
    for box in [(0, 30, 0, 40), (5, 25, 8, 30)]:
        total = np.full((30, 40), np.nan, np.float32)
        codes = np.full((30, 40), 9, np.uint8)
        count = _kernels.codes_from_fractions(fractions, box, total, codes)
        np.testing.assert_array_equal(codes, _codes_reference(fractions))
        np.testing.assert_array_equal(total, fractions.sum(axis=0))
        assert count == np.count_nonzero(codes) > 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_median_kernels_match_numpy(dtype) -> None:
    kernel = _kernels.median_float32 if dtype == np.float32 else _kernels.median_float64
    rng = np.random.default_rng(0)
    for size in [*range(1, 12), 100, 101, 1500]:
        values = rng.normal(100.0, 30.0, size).astype(dtype)
        values[: size // 3] = values[-1]  # repeated values
        if size > 5:
            values[2] = np.inf
        original = values.copy()
        assert kernel(values) == np.median(values)
        np.testing.assert_array_equal(values, original)  # not modified
    assert np.isnan(kernel(np.array([1.0, np.nan, 2.0], dtype)))
    assert np.isnan(kernel(np.zeros(0, dtype)))


def test_split_at_path_matches_masks() -> None:
    rng = np.random.default_rng(1)
    profiles = rng.normal(size=(20, 11)).astype(np.float32)
    profiles[3, :4] = np.nan
    path = rng.integers(0, 11, 20)
    inside = np.empty(profiles.size, np.float32)
    outside = np.empty(profiles.size, np.float32)
    n_in, n_out = _kernels.split_at_path(profiles, path, inside, outside)
    index = np.arange(11)[None, :]
    finite = np.isfinite(profiles)
    np.testing.assert_array_equal(inside[:n_in], profiles[(index < path[:, None]) & finite])
    np.testing.assert_array_equal(outside[:n_out], profiles[(index > path[:, None]) & finite])


def _region_cost_reference(profiles, mu_in, mu_out, cap, scale, penalty):
    """The region model's cost and reward in numpy (as the margin estimator computed them)."""
    n = len(profiles)
    finite = np.isfinite(profiles)
    values = np.where(finite, profiles, 0.0).astype(np.float64)
    d_in = np.minimum(np.where(finite, (values - mu_in) ** 2, 0.0), cap)
    d_out = np.minimum(np.where(finite, (values - mu_out) ** 2, 0.0), cap)
    before = np.concatenate([np.zeros((n, 1)), np.cumsum(d_in, axis=1)[:, :-1]], axis=1)
    after = np.cumsum(d_out[:, ::-1], axis=1)[:, ::-1]
    after = np.concatenate([after[:, 1:], np.zeros((n, 1))], axis=1)
    misfit = (before + after) * scale
    reward = (misfit.max(axis=1, keepdims=True) - misfit).astype(np.float32)
    cost = (penalty[None, :] + misfit - misfit.min(axis=1, keepdims=True)).astype(np.float32)
    cost[~finite] = np.nan
    return cost, reward


@pytest.mark.parametrize("cap", [np.inf, 0.8])
def test_region_cost_matches_numpy(cap: float) -> None:
    rng = np.random.default_rng(2)
    profiles = rng.normal(size=(25, 31)).astype(np.float32)
    profiles[4, 20:] = np.nan
    profiles[7] = np.nan
    penalty = np.linspace(-1, 1, 31).astype(np.float32) ** 2
    cost = np.empty_like(profiles)
    reward = np.empty_like(profiles)
    _kernels.region_cost(profiles, 0.3, -0.2, cap, 1.7, penalty, cost, reward)
    expected_cost, expected_reward = _region_cost_reference(profiles, 0.3, -0.2, cap, 1.7, penalty)
    np.testing.assert_array_equal(cost, expected_cost)
    np.testing.assert_array_equal(reward, expected_reward)


def _region_boundary_reference(profiles, penalty, max_step, cap, scale, iterations):
    """The region model's rounds in numpy (levels from np.median), the DP kernel between."""
    n, m = profiles.shape
    finite = np.isfinite(profiles)
    path = np.full(n, m // 2, np.int64)
    reward = np.zeros((n, m), np.float32)
    index = np.arange(m)[None, :]
    for _ in range(iterations):
        inside = (index < path[:, None]) & finite
        outside = (index > path[:, None]) & finite
        if not inside.any() or not outside.any():
            break
        mu_in = float(np.median(profiles[inside]))
        mu_out = float(np.median(profiles[outside]))
        cost, reward = _region_cost_reference(profiles, mu_in, mu_out, cap, scale, penalty)
        _kernels.boundary_dp(cost, max_step, True, path)
    return path, reward


@pytest.mark.parametrize("seed", range(4))
def test_region_boundary_matches_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, m = 60, 31
    truth = np.round(15 + 6 * np.sin(np.linspace(0, 2 * np.pi, n, endpoint=False)))
    index = np.arange(m)[None, :]
    profiles = np.where(index < truth[:, None], 1.0, 0.0) + rng.normal(scale=0.5, size=(n, m))
    profiles = profiles.astype(np.float32)
    profiles[seed * 5, : 3 + seed] = np.nan
    penalty = (2.0 * np.linspace(-1, 1, m) ** 2).astype(np.float32)
    cap = np.inf if seed % 2 else 0.5
    path = np.full(n, m // 2, np.int64)
    reward = np.zeros((n, m), np.float32)
    _kernels.region_boundary(profiles, penalty, 2, cap, 0.9, 3, path, reward)
    expected_path, expected_reward = _region_boundary_reference(profiles, penalty, 2, cap, 0.9, 3)
    np.testing.assert_array_equal(path, expected_path)
    np.testing.assert_array_equal(reward, expected_reward)
    assert np.mean(np.abs(path - truth) <= 2) > 0.8


def test_fused_reslice_and_codes_equal_the_two_kernels() -> None:
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 3, size=(14, 12, 10)).astype(np.uint8)
    m = _oblique(rng, codes.shape)
    fractions = np.empty((2, 30, 40), np.float32)
    box = _kernels.reslice_label_fractions(codes, m, 2, fractions)
    total, labels = np.empty((30, 40), np.float32), np.empty((30, 40), np.uint8)
    count = _kernels.codes_from_fractions(fractions, box, total, labels)
    fused = np.empty_like(fractions), np.empty_like(total), np.empty_like(labels)
    fused_count, fused_box = _kernels.reslice_label_codes(codes, m, 2, *fused)
    assert (fused_count, fused_box) == (count, box) and count > 0
    for got, expected in zip(fused, (fractions, total, labels), strict=True):
        np.testing.assert_array_equal(got, expected)
