"""Numba kernels of the margin estimator: label reslicing and per-pixel codes, profile
sampling, the region model's levels and misfit, medians, boundary DP.

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
def _columns_within(base, step, size, cols):  # pragma: no cover - compiled
    """Columns ``c`` of one image row whose voxel coordinate ``base + step * c`` may lie in
    the open interval (-1, ``size``), as a half-open range [lo, hi) within [0, cols).

    Conservative: widened by two columns either side, so that rounding in the division never
    drops a column the per-pixel test would keep (the caller still tests every column). A
    step below 1e-9 voxel per pixel (rounding of ``base`` alone could then move a pixel by
    more than two columns) gives every column.
    """
    if step == 0.0:
        if -1.0 < base < size:
            return 0, cols
        return 0, 0
    if abs(step) < 1e-9:
        return 0, cols
    first = (-1.0 - base) / step
    last = (size - base) / step
    if first > last:
        first, last = last, first
    lo = max(first - 2.0, 0.0)
    hi = min(last + 3.0, float(cols))
    if hi <= lo:
        return 0, 0
    return int(lo), int(hi)


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

    Returns
    -------
    (int, int, int, int)
        ``row_lo, row_hi, col_lo, col_hi``: a box (half-open, pixels) outside which every
        fraction is 0 — the pixels whose neighbourhood may reach the volume (empty when
        ``row_lo == row_hi``).
    """
    _, rows, cols = out.shape
    ni, nj, nk = codes.shape
    m = image_to_voxel
    for q in range(n_codes):
        for r in range(rows):
            for c in range(cols):
                out[q, r, c] = 0.0
    row_lo, row_hi, col_lo, col_hi = rows, 0, cols, 0
    for r in range(rows):
        bi = m[0, 1] * r + m[0, 3]
        bj = m[1, 1] * r + m[1, 3]
        bk = m[2, 1] * r + m[2, 3]
        # only the columns whose position can fall in the volume are visited (the test below
        # still decides): the volume is the tumor's box, most of a frame lies outside it
        c_lo, c_hi = _columns_within(bi, m[0, 0], ni, cols)
        lo_j, hi_j = _columns_within(bj, m[1, 0], nj, cols)
        lo_k, hi_k = _columns_within(bk, m[2, 0], nk, cols)
        c_lo = max(c_lo, lo_j, lo_k)
        c_hi = min(c_hi, hi_j, hi_k)
        if c_lo < c_hi:
            row_lo = min(row_lo, r)
            row_hi = r + 1
            col_lo = min(col_lo, c_lo)
            col_hi = max(col_hi, c_hi)
        for c in range(c_lo, c_hi):
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
    if row_hi <= row_lo:
        return 0, 0, 0, 0
    return row_lo, row_hi, col_lo, col_hi


@numba.jit(**_JIT)
def codes_from_fractions(fractions, box, total, codes):  # pragma: no cover - compiled
    """Per pixel the code with the largest fraction, 0 where the codes cover < half of it.

    Parameters
    ----------
    fractions
        float32 (n_codes, rows, cols): fraction of code ``q + 1`` at each pixel (as written
        by :func:`reslice_label_fractions`).
    box
        (row_lo, row_hi, col_lo, col_hi), half-open, pixels: outside it every fraction is 0
        (the box :func:`reslice_label_fractions` returns; the whole image is always right).
    total
        float32 (rows, cols), written: the fractions summed over the codes in code order
        (float32 additions), i.e. the share of each pixel the tumor covers.
    codes
        uint8 (rows, cols), written: ``1 + argmax`` of the fractions (the first code on a
        tie), 0 where ``total < 0.5``.

    Returns
    -------
    int
        The number of pixels with a code (non-zero).
    """
    n_codes, rows, cols = fractions.shape
    row_lo, row_hi, col_lo, col_hi = box
    for r in range(rows):
        for c in range(cols):
            total[r, c] = 0.0
            codes[r, c] = 0
    count = 0
    for r in range(row_lo, row_hi):
        for c in range(col_lo, col_hi):
            best = fractions[0, r, c]
            sum_ = best
            code = 1
            for q in range(1, n_codes):
                value = fractions[q, r, c]
                sum_ = sum_ + value
                if value > best:
                    best = value
                    code = q + 1
            total[r, c] = sum_
            if sum_ >= 0.5:
                codes[r, c] = code
                count += 1
    return count


@numba.jit(**_JIT)
def reslice_label_codes(
    codes, image_to_voxel, n_codes, fractions, total, out
):  # pragma: no cover - compiled
    """:func:`reslice_label_fractions` then :func:`codes_from_fractions` in its box, in one
    call (the frame path releases and retakes the GIL once, not twice).

    Parameters
    ----------
    codes, image_to_voxel, n_codes
        As in :func:`reslice_label_fractions`.
    fractions
        float32 (n_codes, rows, cols), written: each code's fraction.
    total, out
        float32 and uint8 (rows, cols), written: the tumor's share of each pixel and its code
        (see :func:`codes_from_fractions`).

    Returns
    -------
    (int, (int, int, int, int))
        The number of pixels with a code, and the box outside which every fraction is 0.
    """
    box = reslice_label_fractions(codes, image_to_voxel, n_codes, fractions)
    return codes_from_fractions(fractions, box, total, out), box


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


@numba.jit(**_JIT)
def split_at_path(profiles, path, inside, outside):  # pragma: no cover - compiled
    """The finite samples of each profile before and after its chosen boundary index.

    Parameters
    ----------
    profiles
        float32 (N, M) samples along the normals (NaN: off the image).
    path
        int64 (N,): boundary index per profile.
    inside, outside
        float32 (N * M,), written from the start: the finite samples with index
        ``< path[n]`` (inside) and ``> path[n]`` (outside), row by row.

    Returns
    -------
    (int, int)
        How many samples were written to ``inside`` and to ``outside``.
    """
    n_points, n_offsets = profiles.shape
    n_in = 0
    n_out = 0
    for n in range(n_points):
        at = path[n]
        for q in range(n_offsets):
            value = profiles[n, q]
            if not np.isfinite(value):
                continue
            if q < at:
                inside[n_in] = value
                n_in += 1
            elif q > at:
                outside[n_out] = value
                n_out += 1
    return n_in, n_out


@numba.jit(**_JIT)
def region_cost(
    profiles, mu_in, mu_out, cap, scale, penalty, cost, reward
):  # pragma: no cover - compiled
    """Two-level (Chan–Vese) misfit of every boundary index along each profile.

    For a boundary at index q the samples before q are fitted by ``mu_in``, those after it
    by ``mu_out``; each squared misfit is capped at ``cap`` and the sum scaled by ``scale``:
    ``misfit[n, q] = scale * (sum_{j<q} min((p_j - mu_in)², cap)
    + sum_{j>q} min((p_j - mu_out)², cap))`` (float64, sums taken in index order from
    either end; samples that are not finite count 0).

    Parameters
    ----------
    profiles
        float32 (N, M) samples along the normals (NaN: off the image).
    mu_in, mu_out
        Inside and outside intensity levels.
    cap
        Largest squared misfit of one sample (``inf``: none).
    scale
        Factor on the summed misfit (1 / (speckle variance × correlation length)).
    penalty
        float32 (M,): prior penalty of each boundary index.
    cost
        float32 (N, M), written: ``penalty + misfit - min_q misfit`` per profile, NaN where
        the sample is not finite.
    reward
        float32 (N, M), written: ``max_q misfit - misfit`` per profile.
    """
    n_points, n_offsets = profiles.shape
    misfit = np.empty(n_offsets, np.float64)
    for n in range(n_points):
        # before[q]: sum over j < q, accumulated from the start
        running = 0.0
        for q in range(n_offsets):
            misfit[q] = running
            value = profiles[n, q]
            if np.isfinite(value):
                d = np.float64(value) - mu_in
                running = running + min(d * d, cap)
        # after[q]: sum over j > q, accumulated from the end
        running = 0.0
        for q in range(n_offsets - 1, -1, -1):
            misfit[q] = (misfit[q] + running) * scale
            value = profiles[n, q]
            if np.isfinite(value):
                d = np.float64(value) - mu_out
                running = running + min(d * d, cap)
        low = misfit[0]
        high = misfit[0]
        for q in range(1, n_offsets):
            low = min(low, misfit[q])
            high = max(high, misfit[q])
        for q in range(n_offsets):
            reward[n, q] = np.float32(high - misfit[q])
            if np.isfinite(profiles[n, q]):
                cost[n, q] = np.float32(np.float64(penalty[q]) + misfit[q] - low)
            else:
                cost[n, q] = np.nan


@numba.jit(**_JIT)
def _middle_pair(values):  # pragma: no cover - compiled
    """The two middle order statistics of K ≥ 1 values without NaN (equal for an odd K)."""
    n = values.shape[0]
    half = n // 2
    part = np.partition(values, half)
    upper = part[half]
    if n % 2 == 1:
        return upper, upper
    lower = part[0]
    for i in range(1, half):
        lower = max(lower, part[i])
    return lower, upper


@numba.jit(**_JIT)
def _has_nan(values):  # pragma: no cover - compiled
    """Whether any of the (K,) values is NaN."""
    i = 0
    while i < values.shape[0] and not np.isnan(values[i]):
        i += 1
    return i < values.shape[0]


@numba.jit(**_JIT)
def median_float32(values):  # pragma: no cover - compiled
    """The median of float32 values, exactly as ``np.median`` gives it.

    Parameters
    ----------
    values
        float32 (K,) (not modified).

    Returns
    -------
    float
        The middle value; for an even K the two middle ones added and halved in float32, as
        numpy does. NaN when K is 0 or a value is NaN.
    """
    if values.shape[0] == 0 or _has_nan(values):
        return np.float32(np.nan)
    lower, upper = _middle_pair(values)
    if values.shape[0] % 2 == 1:
        return upper
    return (lower + upper) / np.float32(2.0)


@numba.jit(**_JIT)
def median_float64(values):  # pragma: no cover - compiled
    """The median of float64 values, exactly as ``np.median`` gives it (see
    :func:`median_float32`; the halving in float64)."""
    if values.shape[0] == 0 or _has_nan(values):
        return np.nan
    lower, upper = _middle_pair(values)
    if values.shape[0] % 2 == 1:
        return upper
    return (lower + upper) / 2.0


@numba.jit(**_JIT)
def region_boundary(
    profiles, penalty, max_step, cap, scale, iterations, path, reward
):  # pragma: no cover - compiled
    """The region (Chan–Vese) boundary along the normals: levels, misfit and DP, iterated.

    Each round takes the inside and outside levels as the medians of the finite samples
    before and after the current boundary (:func:`split_at_path`, :func:`median_float32`),
    scores every boundary index (:func:`region_cost`) and chooses the smoothest cheapest
    boundary (:func:`boundary_dp`, closed contour). It stops early when one side has no
    sample.

    Parameters
    ----------
    profiles
        float32 (N, M) samples along the normals (NaN: off the image).
    penalty
        float32 (M,): prior penalty of each boundary index.
    max_step
        Largest change of boundary index between neighbouring points.
    cap, scale
        As in :func:`region_cost`.
    iterations
        Number of rounds.
    path
        int64 (N,), read and written: the starting boundary index per point, then the one
        chosen.
    reward
        float32 (N, M), written by every round (left as it is when none ran): the last
        round's ``max misfit - misfit`` per profile.
    """
    n_points, n_offsets = profiles.shape
    inside = np.empty(n_points * n_offsets, np.float32)
    outside = np.empty(n_points * n_offsets, np.float32)
    cost = np.empty((n_points, n_offsets), np.float32)
    for _ in range(iterations):
        n_in, n_out = split_at_path(profiles, path, inside, outside)
        if n_in == 0 or n_out == 0:
            return
        mu_in = np.float64(median_float32(inside[:n_in]))
        mu_out = np.float64(median_float32(outside[:n_out]))
        region_cost(profiles, mu_in, mu_out, cap, scale, penalty, cost, reward)
        boundary_dp(cost, max_step, True, path)


def warm_up() -> None:
    """Compile (or load from the cache) every kernel on tiny inputs."""
    codes = np.zeros((2, 2, 2), np.uint8)
    m = np.eye(4)
    reslice_label_nearest(codes, m, np.zeros((2, 2), np.uint8))
    fractions = np.zeros((2, 2, 2), np.float32)
    box = reslice_label_fractions(codes, m, 2, fractions)
    codes_from_fractions(fractions, box, np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint8))
    reslice_label_codes(
        codes, m, 2, fractions, np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint8)
    )
    pts = np.zeros((1, 2))
    sample_profiles(
        np.zeros((2, 2), np.float32), pts, pts, np.zeros(1), np.zeros((1, 1), np.float32)
    )
    boundary_dp(np.zeros((1, 1), np.float32), 1, True, np.zeros(1, np.int64))
    profile = np.zeros((1, 1), np.float32)
    split_at_path(profile, np.zeros(1, np.int64), np.zeros(1, np.float32), np.zeros(1, np.float32))
    region_cost(
        profile, 0.0, 0.0, np.inf, 1.0, np.zeros(1, np.float32), profile.copy(), profile.copy()
    )
    median_float32(np.zeros(2, np.float32))
    median_float64(np.zeros(2))
    region_boundary(
        profile, np.zeros(1, np.float32), 1, np.inf, 1.0, 1, np.zeros(1, np.int64), profile.copy()
    )
