"""Numba kernels of the margin estimator: label reslicing, profile sampling, boundary DP.

Pure functions on arrays, compiled with ``cache=True, nogil=True`` (one thread each: on two
cores a serial kernel beats OpenMP, see docs/architecture.md). Each has a numpy reference
implementation in ``tests/margins/test_kernels.py``.

Conventions: the image frame is x = column, y = row (pixels, z = 0); label volumes are indexed
``[i, j, k]`` and a 4×4 ``image_to_voxel`` maps ``(col, row, 0, 1)`` to continuous voxel
indices (voxel centres at integers).
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = {"cache": True, "nogil": True, "nopython": True, "fastmath": False}


@numba.jit(**_JIT)
def reslice_label_nearest(codes, image_to_voxel, out):  # pragma: no cover - compiled
    """Nearest-neighbour reslice of a label volume into an image plane.

    Parameters
    ----------
    codes
        uint8 (I, J, K) label codes; 0 = background.
    image_to_voxel
        float64 (4, 4): image pixel (col, row, 0, 1) → continuous voxel index.
    out
        uint8 (rows, cols), written: the code of the nearest voxel, 0 outside the volume.
    """
    rows, cols = out.shape
    ni, nj, nk = codes.shape
    m = image_to_voxel
    for r in range(rows):
        bi = m[0, 1] * r + m[0, 3]
        bj = m[1, 1] * r + m[1, 3]
        bk = m[2, 1] * r + m[2, 3]
        for c in range(cols):
            # round half up (floor(x + 0.5)) like a voxel-centre lookup
            i = int(np.floor(bi + m[0, 0] * c + 0.5))
            j = int(np.floor(bj + m[1, 0] * c + 0.5))
            k = int(np.floor(bk + m[2, 0] * c + 0.5))
            if 0 <= i < ni and 0 <= j < nj and 0 <= k < nk:
                out[r, c] = codes[i, j, k]
            else:
                out[r, c] = 0


@numba.jit(**_JIT)
def reslice_label_fractions(codes, image_to_voxel, n_codes, out):  # pragma: no cover - compiled
    """Trilinear partial-volume reslice: per pixel, the fraction of each label code.

    The indicator of each code (1 inside, 0 outside) is interpolated trilinearly, so a
    structure's boundary in the frame is the 0.5 level of its fraction — smooth and sub-voxel,
    not the MRI voxel staircase that a nearest-neighbour reslice gives.

    Parameters
    ----------
    codes
        uint8 (I, J, K) label codes 0..n_codes; 0 = background. Outside the volume counts as 0.
    image_to_voxel
        float64 (4, 4): image pixel (col, row, 0, 1) → continuous voxel index.
    n_codes
        Number of non-background codes (codes 1..n_codes are reported).
    out
        float32 (n_codes, rows, cols), written: fraction of code ``q + 1`` at each pixel.
    """
    _, rows, cols = out.shape
    ni, nj, nk = codes.shape
    m = image_to_voxel
    for q in range(n_codes):
        for r in range(rows):
            for c in range(cols):
                out[q, r, c] = 0.0
    for r in range(rows):
        bi = m[0, 1] * r + m[0, 3]
        bj = m[1, 1] * r + m[1, 3]
        bk = m[2, 1] * r + m[2, 3]
        for c in range(cols):
            x = bi + m[0, 0] * c
            y = bj + m[1, 0] * c
            z = bk + m[2, 0] * c
            # skip pixels whose 8 neighbours all lie outside the volume
            if x <= -1.0 or y <= -1.0 or z <= -1.0 or x >= ni or y >= nj or z >= nk:
                continue
            i0 = int(np.floor(x))
            j0 = int(np.floor(y))
            k0 = int(np.floor(z))
            fx = x - i0
            fy = y - j0
            fz = z - k0
            for di in range(2):
                ii = i0 + di
                if ii < 0 or ii >= ni:
                    continue
                wx = fx if di == 1 else 1.0 - fx
                for dj in range(2):
                    jj = j0 + dj
                    if jj < 0 or jj >= nj:
                        continue
                    wy = fy if dj == 1 else 1.0 - fy
                    for dk in range(2):
                        kk = k0 + dk
                        if kk < 0 or kk >= nk:
                            continue
                        code = codes[ii, jj, kk]
                        if code == 0 or code > n_codes:
                            continue
                        wz = fz if dk == 1 else 1.0 - fz
                        out[code - 1, r, c] += wx * wy * wz


@numba.jit(**_JIT)
def sample_profiles(image, points, normals, offsets, out):  # pragma: no cover - compiled
    """Bilinear samples of ``image`` along each point's normal.

    Parameters
    ----------
    image
        float32 (rows, cols), pixel centres at integer (col, row).
    points, normals
        float64 (N, 2), (x = col, y = row) pixels; normals of unit length.
    offsets
        float64 (M,), pixels along the normal (negative = inward).
    out
        float32 (N, M), written: ``image(points[n] + offsets[m] * normals[n])``; NaN where
        the sample falls outside the image.
    """
    rows, cols = image.shape
    n_points = points.shape[0]
    n_offsets = offsets.shape[0]
    for n in range(n_points):
        for q in range(n_offsets):
            x = points[n, 0] + offsets[q] * normals[n, 0]
            y = points[n, 1] + offsets[q] * normals[n, 1]
            if x < 0.0 or y < 0.0 or x > cols - 1 or y > rows - 1:
                out[n, q] = np.nan
                continue
            c0 = min(int(x), cols - 2) if cols > 1 else 0
            r0 = min(int(y), rows - 2) if rows > 1 else 0
            fx = x - c0
            fy = y - r0
            c1 = min(c0 + 1, cols - 1)
            r1 = min(r0 + 1, rows - 1)
            top = image[r0, c0] * (1.0 - fx) + image[r0, c1] * fx
            bottom = image[r1, c0] * (1.0 - fx) + image[r1, c1] * fx
            out[n, q] = top * (1.0 - fy) + bottom * fy


@numba.jit(**_JIT)
def boundary_dp(cost, max_step, closed, path):  # pragma: no cover - compiled
    """Minimum-cost path through a (points × offsets) cost matrix, smooth along the contour.

    Chooses one offset index per contour point minimising the summed cost, with consecutive
    indices differing by at most ``max_step`` (a continuity constraint). For a closed contour
    the sequence is unrolled three times and the middle copy is kept, so the choice at the
    seam is consistent with both neighbours.

    Parameters
    ----------
    cost
        float32 (N, M); lower is better. Non-finite entries are treated as very high cost.
    max_step
        Largest allowed change of offset index between neighbouring points.
    closed
        Whether the contour is closed (last point neighbours the first).
    path
        int64 (N,), written: the chosen offset index per point.
    """
    n_points, n_offsets = cost.shape
    if n_points == 0:
        return
    copies = 3 if closed else 1
    total = n_points * copies
    big = np.float32(1e30)
    acc = np.empty((total, n_offsets), dtype=np.float32)
    back = np.empty((total, n_offsets), dtype=np.int32)
    for q in range(n_offsets):
        v = cost[0, q]
        acc[0, q] = v if np.isfinite(v) else big
        back[0, q] = q
    for t in range(1, total):
        n = t % n_points
        for q in range(n_offsets):
            best = big * np.float32(4.0)
            arg = q
            lo = max(0, q - max_step)
            hi = min(n_offsets - 1, q + max_step)
            for p in range(lo, hi + 1):
                if acc[t - 1, p] < best:
                    best = acc[t - 1, p]
                    arg = p
            v = cost[n, q]
            acc[t, q] = best + (v if np.isfinite(v) else big)
            back[t, q] = arg
    q_best = 0
    for q in range(1, n_offsets):
        if acc[total - 1, q] < acc[total - 1, q_best]:
            q_best = q
    q = q_best
    for t in range(total - 1, -1, -1):
        if copies == 1 or n_points <= t < 2 * n_points:
            path[t % n_points] = q
        q = back[t, q]


def warm_up() -> None:
    """Compile (or load from the cache) every kernel on tiny inputs."""
    codes = np.zeros((2, 2, 2), np.uint8)
    m = np.eye(4)
    reslice_label_nearest(codes, m, np.zeros((2, 2), np.uint8))
    reslice_label_fractions(codes, m, 2, np.zeros((2, 2, 2), np.float32))
    pts = np.zeros((1, 2))
    sample_profiles(
        np.zeros((2, 2), np.float32), pts, pts, np.zeros(1), np.zeros((1, 1), np.float32)
    )
    boundary_dp(np.zeros((1, 1), np.float32), 1, True, np.zeros(1, np.int64))
