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
