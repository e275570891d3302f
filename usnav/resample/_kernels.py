"""Numba kernels: trilinear sampling of a volume at a continuous voxel index, one edge rule each.

Volumes are indexed ``vol[i, j, k]``; a position is a continuous voxel index (voxel centres at
integers). Pure functions, ``cache=True, nogil=True``; numpy reference implementations in
``tests/resample/test_resample_kernels.py``.

Edge rules
----------
``trilinear_nan``
    Inside when ``0 <= x <= n - 1`` on every axis; anything else is NaN (never clamped, never
    zero-filled, so a border never looks like an edge). Registration's sampler.
``trilinear_clamp``
    The position is clamped into the volume first, so outside takes the nearest face's value.
    The simulator's sampler.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: registration's fast-math set (no 'nnan'/'ninf': the NaN test of trilinear_nan stays real)
_FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}


@njit(cache=True, nogil=True, fastmath=_FAST)
def trilinear_nan(vol, x, y, z):  # pragma: no cover - compiled
    """Trilinear sample of a 3D array at voxel position (x, y, z); NaN outside."""
    ni, nj, nk = vol.shape
    if not (x >= 0.0 and y >= 0.0 and z >= 0.0 and x <= ni - 1 and y <= nj - 1 and z <= nk - 1):
        return np.nan
    i0 = min(int(x), ni - 2) if ni > 1 else 0
    j0 = min(int(y), nj - 2) if nj > 1 else 0
    k0 = min(int(z), nk - 2) if nk > 1 else 0
    fx = x - i0
    fy = y - j0
    fz = z - k0
    i1 = i0 + 1 if ni > 1 else 0
    j1 = j0 + 1 if nj > 1 else 0
    k1 = k0 + 1 if nk > 1 else 0
    c00 = vol[i0, j0, k0] * (1.0 - fz) + vol[i0, j0, k1] * fz
    c01 = vol[i0, j1, k0] * (1.0 - fz) + vol[i0, j1, k1] * fz
    c10 = vol[i1, j0, k0] * (1.0 - fz) + vol[i1, j0, k1] * fz
    c11 = vol[i1, j1, k0] * (1.0 - fz) + vol[i1, j1, k1] * fz
    c0 = c00 * (1.0 - fy) + c01 * fy
    c1 = c10 * (1.0 - fy) + c11 * fy
    return c0 * (1.0 - fx) + c1 * fx


@njit(cache=True, nogil=True)
def cell_clamp(f: float, n: int) -> tuple[int, float]:  # pragma: no cover - compiled
    """Clamp continuous index ``f`` into [0, n-1]; return the lower corner and the fraction."""
    if f <= 0.0:
        return 0, 0.0
    if f >= n - 1:
        return n - 2, 1.0
    i = int(f)
    return i, f - i


@njit(cache=True, nogil=True)
def trilinear_clamp(
    volume: np.ndarray, fx: float, fy: float, fz: float
) -> float:  # pragma: no cover - compiled
    """Trilinear interpolation of a float volume at a continuous index (clamped at edges;
    every axis needs at least 2 voxels)."""
    nx, ny, nz = volume.shape
    i, tx = cell_clamp(fx, nx)
    j, ty = cell_clamp(fy, ny)
    k, tz = cell_clamp(fz, nz)
    c00 = volume[i, j, k] * (1 - tx) + volume[i + 1, j, k] * tx
    c01 = volume[i, j, k + 1] * (1 - tx) + volume[i + 1, j, k + 1] * tx
    c10 = volume[i, j + 1, k] * (1 - tx) + volume[i + 1, j + 1, k] * tx
    c11 = volume[i, j + 1, k + 1] * (1 - tx) + volume[i + 1, j + 1, k + 1] * tx
    c0 = c00 * (1 - ty) + c10 * ty
    c1 = c01 * (1 - ty) + c11 * ty
    return c0 * (1 - tz) + c1 * tz
