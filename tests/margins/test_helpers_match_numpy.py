"""The per-frame shortcuts of the margin estimator give numpy's (or OpenCV's) numbers bit for
bit: tracing in a box of the image, row means that skip NaN, medians."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from usnav.margins.contours import outward_normals, trace_regions
from usnav.margins.refine import _median, _nanmean_rows


def _blobs(seed: int, shape: tuple[int, int] = (60, 70)) -> np.ndarray:
    """A uint8 mask of smooth blobs with holes, some touching the image's edges."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.uniform(size=shape).astype(np.float32), (0, 0), 2.0)
    mask = (noise > np.quantile(noise, 0.6)).astype(np.uint8)
    mask[20:36, 24:44] = 1  # a ring: a region with a hole
    mask[25:31, 30:38] = 0
    return mask


@pytest.mark.parametrize("seed", range(6))
def test_tracing_in_a_box_equals_tracing_the_whole_image(seed: int) -> None:
    mask = _blobs(seed)
    rows, cols = np.nonzero(mask)
    row_lo, row_hi = rows.min(), rows.max() + 1
    col_lo, col_hi = cols.min(), cols.max() + 1
    if seed % 2:  # a looser box, as the reslice kernel gives
        row_lo, col_lo = max(row_lo - 2, 0), max(col_lo - 3, 0)
    whole = trace_regions(mask, 4.0)
    boxed = trace_regions(
        mask[row_lo:row_hi, col_lo:col_hi], 4.0, offset=(int(col_lo), int(row_lo))
    )
    assert len(whole) == len(boxed) > 1
    assert any(hole for _, hole in whole)
    for (points, hole), (boxed_points, boxed_hole) in zip(whole, boxed, strict=True):
        assert hole == boxed_hole
        np.testing.assert_array_equal(points, boxed_points)


def test_normals_are_those_of_the_rolled_polygon() -> None:
    angle = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    points = np.stack([10 + 5 * np.cos(angle), 8 + 3 * np.sin(angle)], axis=1)
    for hole in (False, True):
        tangent = np.roll(points, -1, axis=0) - np.roll(points, 1, axis=0)
        normal = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1)
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        expected = normal if not hole else -normal  # counter-clockwise: (t_y, -t_x) is out
        np.testing.assert_array_equal(outward_normals(points, hole), expected)


def test_row_means_skipping_nan_match_nanmean() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(100.0, 20.0, size=(40, 26)).astype(np.float32)
    values[rng.uniform(size=values.shape) < 0.2] = np.nan
    values[5] = np.nan  # a row with no number: NaN, without a warning
    expected = np.full((40, 1), np.nan, np.float32)
    finite_rows = ~np.all(np.isnan(values), axis=1)
    expected[finite_rows] = np.nanmean(values[finite_rows], axis=1, keepdims=True)
    got = _nanmean_rows(values)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_median_helper_is_numpys(dtype) -> None:
    rng = np.random.default_rng(1)
    for size in (1, 2, 7, 64, 999):
        values = (rng.normal(50.0, 10.0, size) * 3).astype(dtype)
        got, expected = _median(values), np.median(values)
        assert got == expected and type(got) is type(expected)
