"""Numba kernels of the registration: reslicing, gradients, LC² statistics, reconstruction.

Pure functions on arrays, ``cache=True, nogil=True`` (a worker thread computes while the frame
path runs), serial: on the 2-core target ``parallel=True`` lost (see docs/architecture.md). Every
kernel has a numpy reference implementation in ``tests/registration/test_kernels.py``.

Conventions
-----------
* Volumes are indexed ``vol[i, j, k]`` (C-contiguous float32); positions passed to the kernels
  are continuous voxel indices (voxel centres at integers). A sample is *inside* when
  ``0 <= x <= n - 1`` on every axis; outside samples are invalid (never clamped, never zero-
  filled, so a border never looks like an edge).
* ``vol2`` is an interleaved ``(I, J, K, 2)`` float32 volume: channel 0 the MRI intensity,
  channel 1 its gradient magnitude. One trilinear gather reads both.
* A plane is sampled at ``origin + c·du + r·dv`` (voxel index units) for pixel column ``c`` and
  row ``r``; ``affines[f] = [origin | du | dv]`` as a (3, 3) array whose columns are
  ``du, dv, origin``.
* LC² (Wein et al. 2008): in each patch, the US intensity ``u`` is fitted as
  ``α·p + β·g + γ`` (``p`` MRI intensity, ``g`` MRI gradient magnitude); the patch score is the
  fraction of the US variance explained (R², 0..1); the frame score is the mean of the patch
  scores weighted by the patch US standard deviation. Patch sums use running box sums in
  float64 (10 channels), never a per-patch loop.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from usnav.resample._kernels import trilinear_nan as trilinear  # NaN outside

_FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}  # no 'nnan'/'ninf': NaN checks stay real
_OPTS = {"cache": True, "nogil": True, "fastmath": _FAST}
#: IEEE arithmetic exactly as written (no fastmath): for kernels whose float results decide
#: discrete choices and must equal a plain-Python loop's
_EXACT = {"cache": True, "nogil": True}

#: number of sufficient statistics per LC² patch: n, Σu, Σuu, Σp, Σg, Σpp, Σgg, Σpg, Σup, Σug
N_STATS = 10


# ----------------------------------------------------------------------------- sampling


@njit(inline="always", **_OPTS)
def _row_positions(vol_shape, origin, du, dv, r, base, fx, fy, fz, ok, lo, hi):  # pragma: no cover
    """Phase 1 of a row: flat base index, fractions and inside flag of each pixel in columns
    [lo, hi) (the others are left as they were).

    Positions are float32 (2⁻²⁴ relative: < 10⁻⁴ voxel in a 512³ volume) so the arithmetic
    vectorises; the gathers of phase 2 then run without bounds branches.
    """
    ni = vol_shape[0]
    nj = vol_shape[1]
    nk = vol_shape[2]
    sj = nk
    si = nj * nk
    xm = np.float32(ni - 1.0)
    ym = np.float32(nj - 1.0)
    zm = np.float32(nk - 1.0)
    xc_max = np.float32(max(ni - 2, 0))
    yc_max = np.float32(max(nj - 2, 0))
    zc_max = np.float32(max(nk - 2, 0))
    ox = np.float32(origin[0] + r * dv[0])
    oy = np.float32(origin[1] + r * dv[1])
    oz = np.float32(origin[2] + r * dv[2])
    dux = np.float32(du[0])
    duy = np.float32(du[1])
    duz = np.float32(du[2])
    zero = np.float32(0.0)
    if not (
        np.isfinite(ox)
        and np.isfinite(oy)
        and np.isfinite(oz)
        and np.isfinite(dux)
        and np.isfinite(duy)
        and np.isfinite(duz)
    ):
        # a plane that cannot be placed (a NaN pose): every pixel outside. Checked once per
        # row: with finite terms no position is NaN (an overflow gives ±inf, which the clamps
        # below take), and int32(NaN) in the loop was an out-of-bounds read that killed the
        # process (session 36)
        for c in range(base.shape[0]):
            ok[c] = False
            base[c] = 0
            fx[c] = zero
            fy[c] = zero
            fz[c] = zero
        return
    for c in range(np.uint64(lo), np.uint64(hi)):
        cf = np.float32(c)
        x = ox + cf * dux
        y = oy + cf * duy
        z = oz + cf * duz
        ok[c] = (x >= zero) & (y >= zero) & (z >= zero) & (x <= xm) & (y <= ym) & (z <= zm)
        i0 = np.int32(min(max(x, zero), xc_max))
        j0 = np.int32(min(max(y, zero), yc_max))
        k0 = np.int32(min(max(z, zero), zc_max))
        fx[c] = x - i0
        fy[c] = y - j0
        fz[c] = z - k0
        base[c] = i0 * si + j0 * sj + k0


@njit(inline="always", **_OPTS)
def _row_scratch(cols):  # pragma: no cover - compiled
    """Scratch of :func:`_row_positions` for a row of ``cols`` pixels."""
    return (
        np.empty(cols, np.int64),
        np.empty(cols, np.float32),
        np.empty(cols, np.float32),
        np.empty(cols, np.float32),
        np.empty(cols, np.bool_),
    )


@njit(**_OPTS)
def reslice_plane(vol, origin, du, dv, out, fill):  # pragma: no cover - compiled
    """Trilinear oblique reslice of one plane.

    Parameters
    ----------
    vol
        (I, J, K) float32 volume (C-contiguous, at least 2 voxels per axis).
    origin, du, dv
        (3,) float64: voxel position of pixel (0, 0), and the voxel step per column / row.
    out
        (rows, cols) float32, written.
    fill
        Value for samples outside the volume.
    """
    nj = vol.shape[1]
    nk = vol.shape[2]
    flat = vol.ravel()
    sj = nk
    si = nj * nk
    rows, cols = out.shape
    base, fx, fy, fz, ok = _row_scratch(cols)
    for r in range(rows):
        _row_positions(vol.shape, origin, du, dv, r, base, fx, fy, fz, ok, 0, cols)
        out_row = out[r]
        for c in range(cols):
            out_row[c] = _lerp3(flat, base[c], 1, sj, si, fx[c], fy[c], fz[c])
        for c in range(cols):  # a separate pass keeps the gather loop free of selects
            if not ok[c]:
                out_row[c] = fill


@njit(inline="always", **_OPTS)
def _lerp3(flat, b, step, sj, si, wx, wy, wz):  # pragma: no cover - compiled
    """Trilinear sample from raveled data: ``b`` the flat index of corner (i0, j0, k0),
    ``step``/``sj``/``si`` the k/j/i strides, ``wx, wy, wz`` the fractions.

    The indices are used unsigned: Numba then skips its negative-index wraparound test on
    each of the eight loads (the same loads, 20 % faster sampling). Every caller's corner
    index is valid (clamped in :func:`_row_positions`)."""
    b = np.uint64(b)
    step = np.uint64(step)
    sj = np.uint64(sj)
    si = np.uint64(si)
    a = flat[b] + (flat[b + step] - flat[b]) * wz
    e = flat[b + sj] + (flat[b + sj + step] - flat[b + sj]) * wz
    g = flat[b + si] + (flat[b + si + step] - flat[b + si]) * wz
    h = flat[b + si + sj] + (flat[b + si + sj + step] - flat[b + si + sj]) * wz
    a = a + (e - a) * wy
    g = g + (h - g) * wy
    return a + (g - a) * wx


@njit(inline="always", **_OPTS)
def _trilinear2(flat, b, sj, si, wx, wy, wz):  # pragma: no cover - compiled
    """Trilinear samples of both channels of an interleaved volume (``flat`` its raveled
    data, ``b`` the flat index of corner (i0, j0, k0) channel 0, ``sj``/``si`` the j/i
    strides); intensity and gradient share the cache lines."""
    return (
        _lerp3(flat, b, 2, sj, si, wx, wy, wz),
        _lerp3(flat, b + 1, 2, sj, si, wx, wy, wz),
    )


@njit(**_OPTS)
def sample2_plane(vol2, origin, du, dv, out_p, out_g, out_valid):  # pragma: no cover
    """Reslice both channels of an interleaved (I, J, K, 2) volume on one plane.

    ``out_valid[r, c]`` is 1 where the sample is inside the volume, else 0 (and the two
    values are 0).
    """
    mask = np.ones(out_p.shape, np.uint8)
    _sample2_masked(vol2, origin, du, dv, mask, out_p, out_g, out_valid)


@njit(**_OPTS)
def sample_points(vol, points, out, fill):  # pragma: no cover - compiled
    """Trilinear samples of ``vol`` at ``points`` (N, 3) voxel positions; ``fill`` outside."""
    for n in range(points.shape[0]):
        v = trilinear(vol, points[n, 0], points[n, 1], points[n, 2])
        out[n] = fill if math.isnan(v) else v


# ----------------------------------------------------------------------------- gradients


@njit(**_OPTS)
def gradient_magnitude_3d(vol, spacing, out):  # pragma: no cover - compiled
    """|∇vol| per voxel, central differences (one-sided at the borders), per mm.

    Parameters
    ----------
    vol
        (I, J, K) float32.
    spacing
        (3,) voxel size along i, j, k, mm.
    out
        (I, J, K) float32, written (may be a channel view of an interleaved array).
    """
    ni, nj, nk = vol.shape
    for i in range(ni):
        im = max(i - 1, 0)
        ip = min(i + 1, ni - 1)
        si = (ip - im) * spacing[0]
        for j in range(nj):
            jm = max(j - 1, 0)
            jp = min(j + 1, nj - 1)
            sj = (jp - jm) * spacing[1]
            for k in range(nk):
                km = max(k - 1, 0)
                kp = min(k + 1, nk - 1)
                sk = (kp - km) * spacing[2]
                gx = (vol[ip, j, k] - vol[im, j, k]) / si if si > 0 else 0.0
                gy = (vol[i, jp, k] - vol[i, jm, k]) / sj if sj > 0 else 0.0
                gz = (vol[i, j, kp] - vol[i, j, km]) / sk if sk > 0 else 0.0
                out[i, j, k] = math.sqrt(gx * gx + gy * gy + gz * gz)


@njit(**_OPTS)
def gradient_magnitude_2d(img, spacing_r, spacing_c, out):  # pragma: no cover - compiled
    """|∇img| of a 2D image, central differences (one-sided at the borders), per mm."""
    rows, cols = img.shape
    for r in range(rows):
        rm = max(r - 1, 0)
        rp = min(r + 1, rows - 1)
        sr = (rp - rm) * spacing_r
        for c in range(cols):
            cm = max(c - 1, 0)
            cp = min(c + 1, cols - 1)
            sc = (cp - cm) * spacing_c
            gr = (img[rp, c] - img[rm, c]) / sr if sr > 0 else 0.0
            gc = (img[r, cp] - img[r, cm]) / sc if sc > 0 else 0.0
            out[r, c] = math.sqrt(gr * gr + gc * gc)


# ----------------------------------------------------------------------------- box sums


@njit(**_OPTS)
def box_sum_2d(chan, half_r, half_c, out, row_acc):  # pragma: no cover - compiled
    """Running box sums of a (rows, cols, K) float64 array over a (2h+1)² window (clipped at
    the borders). ``out`` same shape; ``row_acc`` (cols, K) scratch. Two passes, O(1) per
    pixel and channel whatever the window size.
    """
    rows, cols, nk = chan.shape
    # vertical pass: out[r, c] = Σ chan[r-h..r+h, c]
    for c in range(cols):
        for k in range(nk):
            row_acc[c, k] = 0.0
    for r in range(min(half_r, rows)):
        for c in range(cols):
            for k in range(nk):
                row_acc[c, k] += chan[r, c, k]
    for r in range(rows):
        add = r + half_r
        sub = r - half_r - 1
        if add < rows:
            for c in range(cols):
                for k in range(nk):
                    row_acc[c, k] += chan[add, c, k]
        if sub >= 0:
            for c in range(cols):
                for k in range(nk):
                    row_acc[c, k] -= chan[sub, c, k]
        for c in range(cols):
            for k in range(nk):
                out[r, c, k] = row_acc[c, k]
    # horizontal pass, in place per row using a small ring of the row's original values
    acc = np.zeros(nk)
    for r in range(rows):
        for c in range(cols):
            for k in range(nk):
                row_acc[c, k] = out[r, c, k]
        for k in range(nk):
            acc[k] = 0.0
        for c in range(min(half_c, cols)):
            for k in range(nk):
                acc[k] += row_acc[c, k]
        for c in range(cols):
            add = c + half_c
            sub = c - half_c - 1
            for k in range(nk):
                if add < cols:
                    acc[k] += row_acc[add, k]
                if sub >= 0:
                    acc[k] -= row_acc[sub, k]
                out[r, c, k] = acc[k]


@njit(inline="always", **_OPTS)
def _lc2_from_sums(s, min_count):  # pragma: no cover - compiled
    """(R², weight) of one patch from its 10 sums; weight 0 when the patch is unusable."""
    return _lc2_r2(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9], min_count)


@njit(inline="always", **_OPTS)
def _lc2_r2(n, su, suu, sp, sg, spp, sgg, spg, sup, sug, min_count):  # pragma: no cover
    """(R², weight) of one patch from its 10 sums as scalars (kept in registers): n, Σu, Σuu,
    Σp, Σg, Σpp, Σgg, Σpg, Σup, Σug; weight 0 when the patch is unusable."""
    if n < min_count:
        return 0.0, 0.0
    inv = 1.0 / n
    mu = su * inv
    mp = sp * inv
    mg = sg * inv
    cuu = suu * inv - mu * mu
    if cuu <= 1e-9:
        return 0.0, 0.0
    cpp = spp * inv - mp * mp
    cgg = sgg * inv - mg * mg
    cpg = spg * inv - mp * mg
    cup = sup * inv - mu * mp
    cug = sug * inv - mu * mg
    # ridge keeps a flat (constant) MRI patch from dividing by zero: it then explains nothing
    eps = 1e-6 * (cpp + cgg) + 1e-12
    a = cpp + eps
    d = cgg + eps
    det = a * d - cpg * cpg
    if det <= 1e-18:
        return 0.0, math.sqrt(cuu)
    explained = (d * cup * cup - 2.0 * cpg * cup * cug + a * cug * cug) / det
    r2 = explained / cuu
    if r2 < 0.0:
        r2 = 0.0
    elif r2 > 1.0:
        r2 = 1.0
    return r2, math.sqrt(cuu)


@njit(**_OPTS)
def _valid_box(valid):  # pragma: no cover - compiled
    """(r0, r1, c0, c1): the bounding box [r0, r1) × [c0, c1) of the set pixels of ``valid``
    (rows, cols); empty (r1 <= r0) when none is set."""
    rows, cols = valid.shape
    r0, r1, c0, c1 = rows, 0, cols, 0
    for r in range(rows):
        lo = 0
        while lo < cols and not valid[r, lo]:
            lo += 1
        if lo == cols:
            continue
        hi = cols
        while not valid[r, hi - 1]:
            hi -= 1
        r0 = min(r0, r)
        r1 = r + 1
        c0 = min(c0, lo)
        c1 = max(c1, hi)
    return r0, r1, c0, c1


@njit(**_OPTS)
def _lc2_sums_image(us, p, g, valid, half, min_fraction, chan, vacc):  # pragma: no cover
    """:func:`lc2_image` in one streaming pass: the 10 products per pixel, then per row the
    vertical running sums (``vacc``, (cols, 10)), the horizontal running sums (10 scalars) and
    the patch R² of that row. The additions and subtractions are those of
    :func:`box_sum_2d`, in the same order (the result is the same to the bit), but the
    (rows, cols, 10) sums are never written out.

    Only the bounding box of the valid pixels is computed (as :func:`_mind_ssc_sums`):
    outside it every product is 0, so the running sums there only added or subtracted exact
    zeros, and no patch is centred there.
    """
    rows, cols = us.shape
    r0, r1, c0, c1 = _valid_box(valid)
    if r1 <= r0:
        return 0.0, 0.0
    one = np.uint64(1)
    uh = np.uint64(half)
    ucols = np.uint64(cols)
    ur0, ur1, uc0, uc1 = np.uint64(r0), np.uint64(r1), np.uint64(c0), np.uint64(c1)
    for r in range(ur0, ur1):
        for c in range(uc0, uc1):
            if valid[r, c]:
                u = us[r, c]
                pv = p[r, c]
                gv = g[r, c]
                chan[r, c, 0] = 1.0
                chan[r, c, 1] = u
                chan[r, c, 2] = u * u
                chan[r, c, 3] = pv
                chan[r, c, 4] = gv
                chan[r, c, 5] = pv * pv
                chan[r, c, 6] = gv * gv
                chan[r, c, 7] = pv * gv
                chan[r, c, 8] = u * pv
                chan[r, c, 9] = u * gv
            else:
                for k in range(N_STATS):
                    chan[r, c, k] = 0.0
    width = cols * N_STATS
    flat = chan.reshape(rows, width)
    vflat = vacc.reshape(width)
    for i in range(width):
        vflat[i] = 0.0
    ui0 = uc0 * np.uint64(N_STATS)
    ui1 = uc1 * np.uint64(N_STATS)
    # entering row r the vertical sums hold rows [r - half, r + half - 1]: all zero up to
    # r = r0 - half (the same for the horizontal sums and columns)
    urs = np.uint64(max(0, r0 - half))
    ucs = np.uint64(max(0, c0 - half))
    if urs == 0:
        for r in range(ur0, min(uh, ur1)):
            for i in range(ui0, ui1):
                vflat[i] += flat[r, i]
    min_count = min_fraction * (2 * half + 1) * (2 * half + 1)
    num = 0.0
    den = 0.0
    for r in range(urs, ur1):
        add = r + uh
        if add < ur1:
            for i in range(ui0, ui1):
                vflat[i] += flat[add, i]
        if r >= ur0 + uh + one:
            sub = r - uh - one
            for i in range(ui0, ui1):
                vflat[i] -= flat[sub, i]
        if r < ur0:
            continue
        uhi = ucols
        while uhi > 0 and not valid[r, uhi - one]:
            uhi -= one
        if uhi == 0:
            continue
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = a9 = 0.0
        if ucs == 0:
            for c in range(min(uh, ucols)):
                a0 += vacc[c, 0]
                a1 += vacc[c, 1]
                a2 += vacc[c, 2]
                a3 += vacc[c, 3]
                a4 += vacc[c, 4]
                a5 += vacc[c, 5]
                a6 += vacc[c, 6]
                a7 += vacc[c, 7]
                a8 += vacc[c, 8]
                a9 += vacc[c, 9]
        for c in range(ucs, uhi):
            ua = c + uh
            if ua < ucols:
                a0 += vacc[ua, 0]
                a1 += vacc[ua, 1]
                a2 += vacc[ua, 2]
                a3 += vacc[ua, 3]
                a4 += vacc[ua, 4]
                a5 += vacc[ua, 5]
                a6 += vacc[ua, 6]
                a7 += vacc[ua, 7]
                a8 += vacc[ua, 8]
                a9 += vacc[ua, 9]
            if c >= uh + one:
                us_ = c - uh - one
                a0 -= vacc[us_, 0]
                a1 -= vacc[us_, 1]
                a2 -= vacc[us_, 2]
                a3 -= vacc[us_, 3]
                a4 -= vacc[us_, 4]
                a5 -= vacc[us_, 5]
                a6 -= vacc[us_, 6]
                a7 -= vacc[us_, 7]
                a8 -= vacc[us_, 8]
                a9 -= vacc[us_, 9]
            if valid[r, c]:
                r2, w = _lc2_r2(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, min_count)
                num += w * r2
                den += w
    return num, den


@njit(**_OPTS)
def lc2_image(us, p, g, valid, half, min_fraction, chan, sums, row_acc):  # pragma: no cover
    """LC² of one 2D image pair.

    Parameters
    ----------
    us, p, g
        (rows, cols) float32: ultrasound, MRI intensity, MRI gradient magnitude.
    valid
        (rows, cols) uint8: 1 where the pixel counts (in the US field of view and inside the
        MRI).
    half
        Patch half-width, pixels (patch = (2·half+1)²).
    min_fraction
        A patch counts only if more than this fraction of it is valid (reference code: 0.5).
    chan, sums
        (rows, cols, 10) float64 scratch; ``row_acc`` (cols, 10) float64 scratch.

    Returns
    -------
    (Σ w·R², Σ w) over the patches centred on valid pixels (w = patch US standard deviation).
    """
    return _lc2_sums_image(us, p, g, valid, half, min_fraction, chan, row_acc)


@njit(**_OPTS)
def beam_derivative(p, valid, row_mm, out):  # pragma: no cover - compiled
    """``|∂p/∂row|`` per mm of a resliced image: the MRI's change along the ultrasound beam
    (image +y on a linear array), central differences between valid neighbours, one-sided at
    the edge of the valid region, 0 where no neighbour along the row axis is valid.

    An echo forms where the acoustic impedance changes *along the beam*; the 3D gradient
    magnitude also lights up interfaces parallel to the beam, which reflect nothing back.
    """
    rows, cols = p.shape
    inv1 = 1.0 / row_mm
    inv2 = 0.5 / row_mm
    for r in range(rows):
        for c in range(cols):
            if not valid[r, c]:
                out[r, c] = 0.0
                continue
            up = r > 0 and valid[r - 1, c] != 0
            dn = r + 1 < rows and valid[r + 1, c] != 0
            if up and dn:
                out[r, c] = abs(p[r + 1, c] - p[r - 1, c]) * inv2
            elif dn:
                out[r, c] = abs(p[r + 1, c] - p[r, c]) * inv1
            elif up:
                out[r, c] = abs(p[r, c] - p[r - 1, c]) * inv1
            else:
                out[r, c] = 0.0


@njit(**_OPTS)
def lc2_frames(
    vol2,
    us,
    fov,
    affines,
    half,
    min_fraction,
    gradient_mode,
    row_mm,
    out_num,
    out_den,
    out_inside,
    scratch_p,
    scratch_g,
    scratch_valid,
    chan,
    sums,
    row_acc,
):  # pragma: no cover
    """LC² of a stack of US frames against a moving MRI (the optimiser's inner loop).

    Parameters
    ----------
    vol2
        (I, J, K, 2) float32 interleaved MRI intensity and gradient magnitude.
    us
        (F, rows, cols) float32 frames (already resampled to the level's pixel size).
    fov
        (F, rows, cols) uint8 mask per frame: 1 where the US pixel counts (field of view).
    affines
        (F, 3, 3) float64: columns du, dv, origin of pixel → voxel position.
    half, min_fraction
        As :func:`lc2_image`.
    gradient_mode
        0: ``g`` = the MRI's 3D gradient magnitude (channel 1, Wein 2008); 1: ``g`` = the
        MRI's derivative along the beam (:func:`beam_derivative` of the resliced intensity).
    row_mm
        Pixel size along a frame's rows (beam), mm (used by ``gradient_mode`` 1).
    out_num, out_den
        (F,) float64: per-frame Σ w·R² and Σ w.
    out_inside
        (F,) int64: FOV pixels that fell inside the MRI.
    scratch_*, chan, sums, row_acc
        Scratch arrays shaped like one frame ((rows, cols), (rows, cols, 10), (cols, 10)).
    """
    for f in range(us.shape[0]):
        num, den, inside = _lc2_frame(
            vol2,
            us[f],
            fov[f],
            affines[f],
            half,
            min_fraction,
            gradient_mode,
            row_mm,
            scratch_p,
            scratch_g,
            scratch_valid,
            chan,
            row_acc,
        )
        out_num[f] = num
        out_den[f] = den
        out_inside[f] = inside


@njit(inline="always", **_OPTS)
def _mask_span(mask_row):  # pragma: no cover - compiled
    """(first, last + 1) column of a mask row's set pixels; (n, n) when none is set."""
    cols = mask_row.shape[0]
    lo = 0
    while lo < cols and not mask_row[lo]:
        lo += 1
    hi = cols
    while hi > lo and not mask_row[hi - 1]:
        hi -= 1
    return lo, hi


@njit(**_OPTS)
def _sample2_masked(vol2, origin, du, dv, mask, out_p, out_g, out_valid):  # pragma: no cover
    """:func:`sample2_plane` at the pixels where ``mask`` is set (the field of view) only:
    ``out_valid`` = inside the volume and in the mask; the values elsewhere are 0. Returns
    the number of valid pixels. Same arithmetic as :func:`sample2_plane`."""
    flat, sj, si, shape3 = _vol2_strides(vol2)
    rows, cols = out_p.shape
    base, fx, fy, fz, ok = _row_scratch(cols)
    inside = 0
    for r in range(rows):
        lo, hi = _mask_span(mask[r])
        if lo < hi:
            _row_positions(shape3, origin, du, dv, r, base, fx, fy, fz, ok, lo, hi)
        # every pixel between the row's first and last mask pixel, without branches (the
        # clamped base index is always a valid corner), so the gathers vectorise
        for c in range(lo, hi):
            out_p[r, c], out_g[r, c] = _trilinear2(flat, 2 * base[c], sj, si, fx[c], fy[c], fz[c])
        inside += _row_validity(mask[r], lo, hi, ok, out_valid[r])
        for c in range(cols):
            if not out_valid[r, c]:
                out_p[r, c] = 0.0
                out_g[r, c] = 0.0
    return inside


@njit(**_OPTS)
def _vol2_strides(vol2):  # pragma: no cover - compiled
    """(flat view, j stride, i stride, (I, J, K)) of an interleaved (I, J, K, 2) volume, in
    elements of the flat view (channel 0 of voxel (i, j, k) at ``2·(i·J·K + j·K + k)``)."""
    nj = vol2.shape[1]
    nk = vol2.shape[2]
    return vol2.ravel(), 2 * nk, 2 * nj * nk, (vol2.shape[0], nj, nk)


@njit(**_OPTS)
def _row_validity(mask_row, lo, hi, ok, valid_row):  # pragma: no cover - compiled
    """``valid_row`` = 1 where a masked sampler's pixel counts (between the mask's first and
    last pixel ``lo..hi``, inside the volume, in the mask); returns how many do."""
    inside = 0
    for c in range(mask_row.shape[0]):
        v = lo <= c < hi and ok[c] and mask_row[c] != 0
        valid_row[c] = 1 if v else 0
        inside += 1 if v else 0
    return inside


@njit(**_OPTS)
def _lc2_frame(
    vol2, us, fov, affine, half, min_fraction, gradient_mode, row_mm, p, g, valid, chan, vacc
):  # pragma: no cover - compiled
    """(Σ w·R², Σ w, FOV pixels inside the MRI) of one frame (see :func:`lc2_frames`)."""
    inside = _sample2_masked(vol2, affine[:, 2], affine[:, 0], affine[:, 1], fov, p, g, valid)
    if inside == 0:
        return 0.0, 0.0, 0
    if gradient_mode == 1:
        beam_derivative(p, valid, row_mm, g)
    num, den = _lc2_sums_image(us, p, g, valid, half, min_fraction, chan, vacc)
    return num, den, inside


@njit(**_OPTS)
def ncc_gradient_frames(
    vol2,
    us_grad,
    fov,
    affines,
    half,
    min_fraction,
    out_num,
    out_den,
    out_inside,
    scratch_p,
    scratch_g,
    scratch_valid,
    chan,
    sums,
    row_acc,
):  # pragma: no cover - compiled
    """Alternative metric: local NCC² between the US gradient magnitude (``us_grad``, computed
    once per frame) and the MRI gradient magnitude, weighted like LC² (by the local std of the
    US gradient). Same arguments and outputs as :func:`lc2_frames`; uses channels n, Σa, Σaa,
    Σb, Σbb, Σab of the 10.
    """
    nf = us_grad.shape[0]
    rows = us_grad.shape[1]
    cols = us_grad.shape[2]
    min_count = min_fraction * (2 * half + 1) * (2 * half + 1)
    for f in range(nf):
        sample2_plane(
            vol2,
            affines[f, :, 2],
            affines[f, :, 0],
            affines[f, :, 1],
            scratch_p,
            scratch_g,
            scratch_valid,
        )
        inside = 0
        for r in range(rows):
            for c in range(cols):
                v = scratch_valid[r, c] & fov[f, r, c]
                scratch_valid[r, c] = v
                inside += v
                for k in range(N_STATS):
                    chan[r, c, k] = 0.0
                if v:
                    a = us_grad[f, r, c]
                    b = scratch_g[r, c]
                    chan[r, c, 0] = 1.0
                    chan[r, c, 1] = a
                    chan[r, c, 2] = a * a
                    chan[r, c, 3] = b
                    chan[r, c, 5] = b * b
                    chan[r, c, 8] = a * b
        out_inside[f] = inside
        num = 0.0
        den = 0.0
        if inside > 0:
            box_sum_2d(chan, half, half, sums, row_acc)
            for r in range(rows):
                for c in range(cols):
                    if scratch_valid[r, c]:
                        s = sums[r, c]
                        n = s[0]
                        if n < min_count:
                            continue
                        ma = s[1] / n
                        mb = s[3] / n
                        caa = s[2] / n - ma * ma
                        cbb = s[5] / n - mb * mb
                        cab = s[8] / n - ma * mb
                        if caa <= 1e-9 or cbb <= 1e-12:
                            continue
                        w = math.sqrt(caa)
                        num += w * cab * cab / (caa * cbb)
                        den += w
        out_num[f] = num
        out_den[f] = den


# ----------------------------------------------------------------------------- 3D LC²


@njit(**_OPTS)
def box_sum_3d_inplace(chan, half, line):  # pragma: no cover - compiled
    """Running box sums of a (I, J, K, C) float64 array over a (2h+1)³ window (clipped at the
    borders), in place, one axis at a time. ``line`` is (max(I, J, K), C) float64 scratch."""
    ni, nj, nk, nc = chan.shape
    acc = np.zeros(nc)
    sums = np.empty_like(line)
    # along k
    for i in range(ni):
        for j in range(nj):
            for k in range(nk):
                for q in range(nc):
                    line[k, q] = chan[i, j, k, q]
            _box_line(line, nk, half, acc, sums)
            for k in range(nk):
                for q in range(nc):
                    chan[i, j, k, q] = sums[k, q]
    # along j
    for i in range(ni):
        for k in range(nk):
            for j in range(nj):
                for q in range(nc):
                    line[j, q] = chan[i, j, k, q]
            _box_line(line, nj, half, acc, sums)
            for j in range(nj):
                for q in range(nc):
                    chan[i, j, k, q] = sums[j, q]
    # along i
    for j in range(nj):
        for k in range(nk):
            for i in range(ni):
                for q in range(nc):
                    line[i, q] = chan[i, j, k, q]
            _box_line(line, ni, half, acc, sums)
            for i in range(ni):
                for q in range(nc):
                    chan[i, j, k, q] = sums[i, q]


@njit(**_OPTS)
def _box_line(line, n, half, acc, out):  # pragma: no cover - compiled
    """Running box sums of half-width ``half`` over ``line[:n]`` (zero outside) into
    ``out[:n]``; ``acc`` is (C,) scratch."""
    nc = line.shape[1]
    for q in range(nc):
        acc[q] = 0.0
    for t in range(min(half, n)):
        for q in range(nc):
            acc[q] += line[t, q]
    for t in range(n):
        for q in range(nc):
            if t + half < n:
                acc[q] += line[t + half, q]
            if t - half - 1 >= 0:
                acc[q] -= line[t - half - 1, q]
            out[t, q] = acc[q]


@njit(**_OPTS)
def lc2_volume(
    vol2, us_vol, us_valid, us_to_vox, half, min_fraction, chan, line
):  # pragma: no cover - compiled
    """LC² of a compounded US volume against a moving MRI, with 3D patches.

    Parameters
    ----------
    vol2
        (I, J, K, 2) float32 MRI intensity + gradient magnitude.
    us_vol, us_valid
        (X, Y, Z) float32 reconstructed US and uint8 mask of reconstructed voxels.
    us_to_vox
        (3, 4) float64: US voxel index → MRI voxel position.
    half, min_fraction
        Patch half-width (voxels) and the minimum valid fraction of a patch.
    chan
        (X, Y, Z, 10) float64 scratch; ``line`` (max(X, Y, Z), 10) float64 scratch.

    Returns
    -------
    (Σ w·R², Σ w, number of US voxels inside the MRI).
    """
    nx, ny, nz = us_vol.shape
    inside = 0
    for x in range(nx):
        for y in range(ny):
            px = us_to_vox[0, 3] + x * us_to_vox[0, 0] + y * us_to_vox[0, 1]
            py = us_to_vox[1, 3] + x * us_to_vox[1, 0] + y * us_to_vox[1, 1]
            pz = us_to_vox[2, 3] + x * us_to_vox[2, 0] + y * us_to_vox[2, 1]
            for z in range(nz):
                for q in range(N_STATS):
                    chan[x, y, z, q] = 0.0
                if us_valid[x, y, z]:
                    qx = px + z * us_to_vox[0, 2]
                    qy = py + z * us_to_vox[1, 2]
                    qz = pz + z * us_to_vox[2, 2]
                    pv = trilinear(vol2[:, :, :, 0], qx, qy, qz)
                    if not math.isnan(pv):
                        gv = trilinear(vol2[:, :, :, 1], qx, qy, qz)
                        u = us_vol[x, y, z]
                        chan[x, y, z, 0] = 1.0
                        chan[x, y, z, 1] = u
                        chan[x, y, z, 2] = u * u
                        chan[x, y, z, 3] = pv
                        chan[x, y, z, 4] = gv
                        chan[x, y, z, 5] = pv * pv
                        chan[x, y, z, 6] = gv * gv
                        chan[x, y, z, 7] = pv * gv
                        chan[x, y, z, 8] = u * pv
                        chan[x, y, z, 9] = u * gv
                        inside += 1
    # remember which centres are valid before the sums overwrite channel 0
    centre = np.empty((nx, ny, nz), dtype=np.uint8)
    for x in range(nx):
        for y in range(ny):
            for z in range(nz):
                centre[x, y, z] = 1 if chan[x, y, z, 0] > 0.5 else 0
    box_sum_3d_inplace(chan, half, line)
    side = 2 * half + 1
    min_count = min_fraction * side * side * side
    num = 0.0
    den = 0.0
    for x in range(nx):
        for y in range(ny):
            for z in range(nz):
                if centre[x, y, z]:
                    r2, w = _lc2_from_sums(chan[x, y, z], min_count)
                    num += w * r2
                    den += w
    return num, den, inside


# ----------------------------------------------------------------------------- reconstruction


@njit(**_OPTS)
def paste_slice_nearest(
    image, fov, pixel_to_vox, acc_value, acc_weight, maximum=False
):  # pragma: no cover - compiled
    """Insert one frame into a volume, nearest neighbour, MEAN compounding (PLUS
    ``Interpolation="NEAREST_NEIGHBOR"``, ``CompoundingMode="MEAN"``), or MAXIMUM compounding
    with ``maximum``: PLUS's rule, the voxel keeps the brightest pixel landing in it
    (``acc_value`` holds that level, ``acc_weight`` counts the pixels: any pixel, dark or not,
    marks the voxel pasted).

    Parameters
    ----------
    image
        (rows, cols) float32 (or uint8) pixels.
    fov
        (rows, cols) uint8: 1 for pixels to insert (clip rectangle and fan).
    pixel_to_vox
        (3, 4) float64: (col, row, 0, 1) → output voxel position.
    acc_value, acc_weight
        (X, Y, Z) float32 running sums of value and weight, updated in place.

    Returns
    -------
    Number of pixels inserted.
    """
    rows, cols = image.shape
    nx, ny, nz = acc_value.shape
    count = 0
    for r in range(rows):
        bx = pixel_to_vox[0, 3] + r * pixel_to_vox[0, 1]
        by = pixel_to_vox[1, 3] + r * pixel_to_vox[1, 1]
        bz = pixel_to_vox[2, 3] + r * pixel_to_vox[2, 1]
        for c in range(cols):
            if fov[r, c] == 0:
                continue
            x = bx + c * pixel_to_vox[0, 0]
            y = by + c * pixel_to_vox[1, 0]
            z = bz + c * pixel_to_vox[2, 0]
            ix = math.floor(x + 0.5)
            iy = math.floor(y + 0.5)
            iz = math.floor(z + 0.5)
            if ix < 0 or iy < 0 or iz < 0 or ix >= nx or iy >= ny or iz >= nz:
                continue
            if maximum:
                if image[r, c] > acc_value[ix, iy, iz]:
                    acc_value[ix, iy, iz] = image[r, c]
            else:
                acc_value[ix, iy, iz] += image[r, c]
            acc_weight[ix, iy, iz] += 1.0
            count += 1
    return count


@njit(**_OPTS)
def paste_slice_linear(image, fov, pixel_to_vox, acc_value, acc_weight):  # pragma: no cover
    """Insert one frame with trilinear splatting (PLUS ``Interpolation="LINEAR"``): each pixel
    spreads its value over the 8 surrounding voxels with trilinear weights."""
    rows, cols = image.shape
    nx, ny, nz = acc_value.shape
    count = 0
    for r in range(rows):
        for c in range(cols):
            if fov[r, c] == 0:
                continue
            x = pixel_to_vox[0, 3] + c * pixel_to_vox[0, 0] + r * pixel_to_vox[0, 1]
            y = pixel_to_vox[1, 3] + c * pixel_to_vox[1, 0] + r * pixel_to_vox[1, 1]
            z = pixel_to_vox[2, 3] + c * pixel_to_vox[2, 0] + r * pixel_to_vox[2, 1]
            i0 = math.floor(x)
            j0 = math.floor(y)
            k0 = math.floor(z)
            fx = x - i0
            fy = y - j0
            fz = z - k0
            used = False
            v = image[r, c]
            for di in range(2):
                ii = i0 + di
                if ii < 0 or ii >= nx:
                    continue
                wx = fx if di == 1 else 1.0 - fx
                for dj in range(2):
                    jj = j0 + dj
                    if jj < 0 or jj >= ny:
                        continue
                    wy = fy if dj == 1 else 1.0 - fy
                    for dk in range(2):
                        kk = k0 + dk
                        if kk < 0 or kk >= nz:
                            continue
                        w = wx * wy * (fz if dk == 1 else 1.0 - fz)
                        if w <= 0.0:
                            continue
                        acc_value[ii, jj, kk] += w * v
                        acc_weight[ii, jj, kk] += w
                        used = True
            if used:
                count += 1
    return count


#: PLUS's ``Optimization="FULL"`` fixed-point format (IGSIO/PLUS ``fixed``): 14 fraction bits
FIXED_POINT_BITS = 14


@njit(inline="always", **_OPTS)
def _fixed_mul(a, b):  # pragma: no cover - compiled
    """Product of two fixed-point numbers, rounded half up (PLUS ``fixed`` fast multiply)."""
    return (a * b + (1 << (FIXED_POINT_BITS - 1))) >> FIXED_POINT_BITS


@njit(**_OPTS)
def paste_slice_linear_maximum(image, fov, pixel_to_vox_fixed, out, hit):  # pragma: no cover
    """Insert one frame with trilinear splatting and MAXIMUM compounding, in PLUS's fixed-point
    arithmetic (``Interpolation="LINEAR"``, ``CompoundingMode="MAXIMUM"``,
    ``Optimization="FULL"``).

    The rule, as PLUS applies it: a pixel lands at a fractional voxel position; it takes part
    only when all 8 surrounding voxels (a corner with a zero fraction collapses onto its
    neighbour) are inside the volume. Each of the 8 voxels whose trilinear weight is at least
    1/8 takes the pixel's grey level when it is brighter than the voxel's current value (the
    level itself, not weighted); a voxel is marked pasted only when this happens, so pixels
    of level 0 and voxels reached only by weights below 1/8 stay empty. Positions and weights
    are 14-bit fixed point: the matrix elements are rounded to 1/16384 and the positions
    summed from them, the weights multiplied with half-up rounding.

    Parameters
    ----------
    image
        (rows, cols) pixels (grey levels).
    fov
        (rows, cols) uint8: 1 for pixels to insert.
    pixel_to_vox_fixed
        (3, 4) int64: (col, row, 0, 1) → voxel position, times ``2**FIXED_POINT_BITS``,
        rounded to integers.
    out
        (X, Y, Z) float32 running maximum, updated in place (start at 0).
    hit
        (X, Y, Z) uint8, set to 1 where a pixel was pasted.

    Returns
    -------
    Number of pixels that took part.
    """
    one = 1 << FIXED_POINT_BITS
    min_weight = one >> 3
    rows, cols = image.shape
    nx, ny, nz = out.shape
    m = pixel_to_vox_fixed
    weights = np.empty(8, np.int64)
    count = 0
    for r in range(rows):
        bx = m[0, 3] + r * m[0, 1]
        by = m[1, 3] + r * m[1, 1]
        bz = m[2, 3] + r * m[2, 1]
        for c in range(cols):
            if fov[r, c] == 0:
                continue
            x = bx + c * m[0, 0]
            y = by + c * m[1, 0]
            z = bz + c * m[2, 0]
            i0 = x >> FIXED_POINT_BITS
            j0 = y >> FIXED_POINT_BITS
            k0 = z >> FIXED_POINT_BITS
            fx = x - (i0 << FIXED_POINT_BITS)
            fy = y - (j0 << FIXED_POINT_BITS)
            fz = z - (k0 << FIXED_POINT_BITS)
            i1 = i0 + (1 if fx != 0 else 0)
            j1 = j0 + (1 if fy != 0 else 0)
            k1 = k0 + (1 if fz != 0 else 0)
            if i0 < 0 or j0 < 0 or k0 < 0 or i1 >= nx or j1 >= ny or k1 >= nz:
                continue
            count += 1
            rx = one - fx
            ry = one - fy
            rz = one - fz
            ryrz = _fixed_mul(ry, rz)
            ryfz = _fixed_mul(ry, fz)
            fyrz = _fixed_mul(fy, rz)
            fyfz = _fixed_mul(fy, fz)
            # corner index bits: 4 = x high, 2 = y high, 1 = z high
            weights[0] = _fixed_mul(rx, ryrz)
            weights[1] = _fixed_mul(rx, ryfz)
            weights[2] = _fixed_mul(rx, fyrz)
            weights[3] = _fixed_mul(rx, fyfz)
            weights[4] = _fixed_mul(fx, ryrz)
            weights[5] = _fixed_mul(fx, ryfz)
            weights[6] = _fixed_mul(fx, fyrz)
            weights[7] = _fixed_mul(fx, fyfz)
            v = image[r, c]
            for corner in range(8):
                if weights[corner] < min_weight:
                    continue
                ii = i1 if corner & 4 else i0
                jj = j1 if corner & 2 else j0
                kk = k1 if corner & 1 else k0
                if v > out[ii, jj, kk]:
                    out[ii, jj, kk] = v
                    hit[ii, jj, kk] = 1
    return count


#: the 13 stick directions of PLUS's STICK hole filling (one of each ± pair)
STICK_DIRECTIONS = np.array(
    [
        [1, 0, 0],
        [0, 1, 0],
        [0, 0, 1],
        [1, 1, 0],
        [1, -1, 0],
        [1, 0, 1],
        [1, 0, -1],
        [0, 1, 1],
        [0, 1, -1],
        [1, 1, 1],
        [1, 1, -1],
        [1, -1, 1],
        [1, -1, -1],
    ],
    dtype=np.int64,
)


@njit(**_OPTS)
def fill_holes_stick(values, filled, directions, max_length, out):  # pragma: no cover
    """Fill empty voxels along the shortest "stick" between filled voxels (the STICK hole
    filling of PLUS with ``NumberOfSticksToUse=1``).

    For an empty voxel and each direction d, the nearest filled voxel is searched forward
    (``f`` steps, ``f + 1 <= max_length``) and then backward (``b`` steps,
    ``f + b + 1 <= max_length``). A stick found on both sides has length ``L = f + b + 1``
    (in voxel steps), value ``(b + 1)/L · forward + (f/L) · backward`` and score
    ``1 / (L · |d|)``. The best-scoring sticks (ties averaged) give the value; voxels with no
    stick stay empty (0).

    Parameters
    ----------
    values
        (X, Y, Z) float32 compounded values; ``filled`` (X, Y, Z) uint8 (1 = has data).
    directions
        (D, 3) int64 stick directions (one of each ± pair).
    max_length
        ``StickLengthLimit``, voxels.
    out
        (X, Y, Z) float32, written (filled voxels copied, holes filled or 0).

    Returns
    -------
    Number of voxels filled.
    """
    nx, ny, nz = values.shape
    nd = directions.shape[0]
    count = 0
    for x in range(nx):
        for y in range(ny):
            for z in range(nz):
                if filled[x, y, z]:
                    out[x, y, z] = values[x, y, z]
                    continue
                best = 0.0
                sum_wv = 0.0
                sum_w = 0.0
                for d in range(nd):
                    dx = directions[d, 0]
                    dy = directions[d, 1]
                    dz = directions[d, 2]
                    fwd = 0
                    vf = 0.0
                    for s in range(1, max_length):
                        xx = x + s * dx
                        yy = y + s * dy
                        zz = z + s * dz
                        if xx < 0 or yy < 0 or zz < 0 or xx >= nx or yy >= ny or zz >= nz:
                            break
                        if filled[xx, yy, zz]:
                            fwd = s
                            vf = values[xx, yy, zz]
                            break
                    if fwd == 0:
                        continue
                    rvs = 0
                    vb = 0.0
                    for s in range(1, max_length - fwd):
                        xx = x - s * dx
                        yy = y - s * dy
                        zz = z - s * dz
                        if xx < 0 or yy < 0 or zz < 0 or xx >= nx or yy >= ny or zz >= nz:
                            break
                        if filled[xx, yy, zz]:
                            rvs = s
                            vb = values[xx, yy, zz]
                            break
                    if rvs == 0:
                        continue
                    total = fwd + rvs + 1.0
                    w_fwd = (rvs + 1.0) / total
                    value = w_fwd * vf + (1.0 - w_fwd) * vb
                    score = 1.0 / (total * math.sqrt(dx * dx + dy * dy + dz * dz))
                    if score > best * (1.0 + 1e-12):
                        best = score
                        sum_wv = value * score
                        sum_w = score
                    elif score >= best * (1.0 - 1e-12):
                        sum_wv += value * score
                        sum_w += score
                if sum_w > 0.0:
                    out[x, y, z] = sum_wv / sum_w
                    count += 1
                else:
                    out[x, y, z] = 0.0
    return count


# ----------------------------------------------------------------------------- frames


@njit(**_EXACT)
def select_spaced_frames(positions, min_distance, out):  # pragma: no cover - compiled
    """Greedy choice of frames spaced at least ``min_distance`` apart.

    Frame 0 is chosen; a later frame is chosen when one of its points moved at least
    ``min_distance`` (Euclidean, the points' units) from the same point of the last chosen
    frame. No fastmath: each distance is ``sqrt((dx·dx + dy·dy) + dz·dz)`` rounded step by
    step, as the plain-Python loop it replaces computed it.

    Parameters
    ----------
    positions
        (F, P, 3) float64: P points of each frame (e.g. the field of view's corners in
        Reference mm).
    min_distance
        Smallest motion of a chosen frame, same units.
    out
        (F,) int64, written: the chosen frame indices first.

    Returns
    -------
    How many frames were chosen (0 for no frame).
    """
    n = positions.shape[0]
    if n == 0:
        return 0
    out[0] = 0
    count = 1
    last = 0
    for f in range(1, n):
        moved = 0.0
        for p in range(positions.shape[1]):
            dx = positions[f, p, 0] - positions[last, p, 0]
            dy = positions[f, p, 1] - positions[last, p, 1]
            dz = positions[f, p, 2] - positions[last, p, 2]
            moved = max(moved, math.sqrt(dx * dx + dy * dy + dz * dz))
        if moved >= min_distance:
            out[count] = f
            count += 1
            last = f
    return count


@njit(**_EXACT)
def fov_pixel_statistics(images, pick, count, std):  # pragma: no cover - compiled
    """Per pixel over the frames ``images[pick]``: how many are > 0, and their standard
    deviation in float32, without the stack ``images[pick]`` or its float32 copies.

    The values of ``np.count_nonzero(stack > 0, axis=0)`` and
    ``stack.std(axis=0, dtype=np.float32)``, to the bit, for integer frames of at least two
    pixels: numpy's float32 sums along the first axis add the frames one after the other for
    every pixel (the frame sum of integers is exact), it divides the sums by its (integer)
    count in float64 and rounds to float32, and takes the float32 square root. No fastmath:
    every step rounds as numpy's. (With a single pixel numpy sums pairwise instead.)

    Parameters
    ----------
    images
        (F, rows, cols) integer frames (uint8), rows · cols ≥ 2.
    pick
        (n,) int64 frame indices, n ≥ 1.
    count
        (rows, cols) int64, written: frames > 0.
    std
        (rows, cols) float32, written: the population standard deviation (ddof 0).
    """
    n = pick.shape[0]
    rows, cols = count.shape
    mean = np.zeros((rows, cols), np.float32)
    for r in range(rows):
        for c in range(cols):
            count[r, c] = 0
            std[r, c] = 0.0
    for k in range(n):
        f = pick[k]
        for r in range(rows):
            for c in range(cols):
                v = images[f, r, c]
                mean[r, c] += np.float32(v)
                count[r, c] += 1 if v > 0 else 0
    for r in range(rows):
        for c in range(cols):
            mean[r, c] = np.float32(np.float64(mean[r, c]) / n)
    for k in range(n):
        f = pick[k]
        for r in range(rows):
            for c in range(cols):
                d = np.float32(images[f, r, c]) - mean[r, c]
                std[r, c] += d * d
    for r in range(rows):
        for c in range(cols):
            std[r, c] = np.sqrt(np.float32(np.float64(std[r, c]) / n))


# ----------------------------------------------------------------------------- warm-up


def warm_up() -> float:
    """Compile (or load from the cache) every kernel on tiny inputs; returns the seconds spent.

    Call once at start-up, outside the frame path: the first call of a kernel otherwise costs
    the compile time (seconds cold, ~1 s from the on-disk cache).
    """
    import time

    t0 = time.perf_counter()
    vol = np.random.default_rng(0).random((6, 6, 6)).astype(np.float32)
    vol2 = np.ascontiguousarray(np.stack([vol, vol], axis=-1))
    origin = np.array([0.5, 0.5, 0.5])
    du = np.array([0.3, 0.0, 0.1])
    dv = np.array([0.0, 0.3, 0.1])
    out = np.zeros((5, 5), np.float32)
    reslice_plane(vol, origin, du, dv, out, np.float32(0.0))
    sample_points(vol, np.array([[1.0, 1.0, 1.0]]), np.zeros(1, np.float32), 0.0)
    grad = np.zeros_like(vol)
    gradient_magnitude_3d(vol, np.ones(3), grad)
    g2 = np.zeros((5, 5), np.float32)
    gradient_magnitude_2d(out, 1.0, 1.0, g2)
    vol2[..., 1] = grad
    frames = np.random.default_rng(1).random((2, 5, 5)).astype(np.float32)
    fov = np.ones((2, 5, 5), np.uint8)
    affines = np.zeros((2, 3, 3))
    affines[:, :, 0] = du
    affines[:, :, 1] = dv
    affines[:, :, 2] = origin
    scratch = _frame_scratch(5, 5)
    num = np.zeros(2)
    den = np.zeros(2)
    inside = np.zeros(2, np.int64)
    lc2_frames(vol2, frames, fov, affines, 1, 0.5, 0, 1.0, num, den, inside, *scratch)
    lc2_frames(vol2, frames, fov, affines, 1, 0.5, 1, 1.0, num, den, inside, *scratch)
    ncc_gradient_frames(vol2, frames, fov, affines, 1, 0.5, num, den, inside, *scratch)
    mind = mind_scratch(5, 5)
    us_desc = np.zeros((2, 5, 5, N_MIND), np.float32)
    us_dvalid = np.zeros((2, 5, 5), np.uint8)
    mind_ssc_image(frames[0], fov[0], 1, 1, 0.5, us_desc[0], us_dvalid[0], *mind[3:6])
    weight = np.ones((2, 5, 5), np.float32)
    mind_ssc_frames(
        vol2, us_desc, us_dvalid, weight, fov, affines, 1, 1, 0.5, num, den, inside, *mind
    )
    us_to_vox = np.hstack([np.eye(3) * 0.9, np.full((3, 1), 0.2)])
    chan = np.zeros((4, 4, 4, N_STATS))
    lc2_volume(
        vol2,
        vol[:4, :4, :4].copy(),
        np.ones((4, 4, 4), np.uint8),
        us_to_vox,
        1,
        0.5,
        chan,
        np.zeros((4, N_STATS)),
    )
    acc_v = np.zeros((4, 4, 4), np.float32)
    acc_w = np.zeros((4, 4, 4), np.float32)
    p2v = np.array([[0.5, 0, 0, 0.2], [0, 0.5, 0, 0.2], [0, 0, 0, 1.0]])
    paste_slice_nearest(out, fov[0], p2v, acc_v, acc_w)
    paste_slice_linear(out, fov[0], p2v, acc_v, acc_w)
    fill_holes_stick(acc_v, (acc_w > 0).astype(np.uint8), STICK_DIRECTIONS, 3, np.zeros_like(acc_v))
    box_sum_2d(np.zeros((3, 3, 2)), 1, 1, np.zeros((3, 3, 2)), np.zeros((3, 2)))
    box_sum_3d_inplace(np.zeros((3, 3, 3, 2)), 1, np.zeros((3, 2)))
    select_spaced_frames(np.zeros((2, 4, 3)), 1.0, np.zeros(2, np.int64))
    fov_pixel_statistics(
        np.zeros((2, 2, 2), np.uint8),
        np.arange(2),
        np.zeros((2, 2), np.int64),
        np.zeros((2, 2), np.float32),
    )
    return time.perf_counter() - t0


def _frame_scratch(rows: int, cols: int) -> tuple[np.ndarray, ...]:
    """Scratch arrays for :func:`lc2_frames` / :func:`ncc_gradient_frames` of one frame size."""
    return (
        np.zeros((rows, cols), np.float32),
        np.zeros((rows, cols), np.float32),
        np.zeros((rows, cols), np.uint8),
        np.zeros((rows, cols, N_STATS)),
        np.zeros((rows, cols, N_STATS)),
        np.zeros((cols, N_STATS)),
    )


frame_scratch = _frame_scratch


# ----------------------------------------------------------------------------- MIND-SSC

#: channels of the MIND-SSC sums: count, then the 6 neighbour-pair squared differences
N_SSC = 7
#: descriptor channels (pairs of the four neighbours at distance d: N-S, W-E, N-W, N-E, S-W,
#: S-E)
N_MIND = 6


@njit(**_OPTS)
def mind_ssc_image(img, valid, half, dist, min_fraction, desc, dvalid, chan, sums, row_acc):
    """MIND-SSC descriptors of one 2D image (Heinrich et al. 2012 MIND, 2013 SSC, in 2D).

    For a pixel ``y`` whose four neighbours at distance ``dist`` (north, south, west, east)
    and itself are valid, the six squared differences between those neighbours (every pair:
    the self-similarity context, which leaves out the centre pixel) are the channels; their
    means over the (2·half+1)² patch around ``x`` are the patch distances ``D_k(x)``. With
    ``V(x)`` the mean of the six (clamped from below at 10⁻³ × its mean over the image, so
    a flat patch does not divide by zero and the descriptor stays invariant to ``a·I + b``),
    ``desc_k = exp(-(D_k - min_j D_j) / V)`` (largest channel 1).

    Parameters
    ----------
    img
        (rows, cols) float32 image.
    valid
        (rows, cols) uint8: 1 where the pixel counts.
    half, dist
        Patch half-width and neighbour distance, pixels (≥ 0: the kernels index with them
        unsigned).
    min_fraction
        A descriptor counts only where at least this fraction of its patch had all five
        pixels valid.
    desc
        (rows, cols, 6) float32, written (0 where not valid).
    dvalid
        (rows, cols) uint8, written: 1 where the descriptor counts (``valid`` there too).
    chan, sums
        (rows, cols, 7) float64 scratch (C-contiguous); ``row_acc`` (cols, 7) float64
        scratch.

    Returns
    -------
    Number of valid descriptors.
    """
    rows, cols = img.shape
    count, floor = _mind_ssc_sums(img, valid, half, dist, min_fraction, dvalid, chan, sums, row_acc)
    for r in range(rows):
        for c in range(cols):
            if not dvalid[r, c]:
                for k in range(N_MIND):
                    desc[r, c, k] = 0.0
                continue
            v = max(sums[r, c, 0], floor)
            if v <= 0.0:  # a constant image: every channel alike
                for k in range(N_MIND):
                    desc[r, c, k] = 1.0
                continue
            # float32 exp: 4x faster than float64 here (no SVML), the descriptor is float32
            scale = np.float32(-1.0 / v)
            for k in range(N_MIND):
                desc[r, c, k] = math.exp(np.float32(sums[r, c, k + 1]) * scale)
    return count


@njit(**_OPTS)
def _mind_channels(img, valid, dist, dvalid, chan):  # pragma: no cover - compiled
    """The first pass of :func:`_mind_ssc_sums`: ``dvalid`` zeroed, the bounding box
    [r0, r1) × [c0, c1) of the valid pixels (empty: r1 <= r0) and, inside it, ``chan`` = the
    count and the six squared differences where all five pixels are valid (else 0)."""
    rows, cols = img.shape
    d = dist
    for r in range(rows):
        for c in range(cols):
            dvalid[r, c] = 0
    r0, r1, c0, c1 = _valid_box(valid)
    if r1 <= r0:
        return r0, r1, c0, c1
    # every index below unsigned (all in range): no wraparound test per access
    ud = np.uint64(d)
    urows, ucols = np.uint64(rows), np.uint64(cols)
    ur0, ur1, uc0, uc1 = np.uint64(r0), np.uint64(r1), np.uint64(c0), np.uint64(c1)
    for r in range(ur0, ur1):
        for c in range(uc0, uc1):
            if not (
                r >= ud
                and c >= ud
                and r + ud < urows
                and c + ud < ucols
                and valid[r, c]
                and valid[r - ud, c]
                and valid[r + ud, c]
                and valid[r, c - ud]
                and valid[r, c + ud]
            ):
                for k in range(N_SSC):
                    chan[r, c, k] = 0.0
                continue
            a_n = np.float64(img[r - ud, c])
            a_s = np.float64(img[r + ud, c])
            a_w = np.float64(img[r, c - ud])
            a_e = np.float64(img[r, c + ud])
            chan[r, c, 0] = 1.0
            chan[r, c, 1] = (a_n - a_s) * (a_n - a_s)
            chan[r, c, 2] = (a_w - a_e) * (a_w - a_e)
            chan[r, c, 3] = (a_n - a_w) * (a_n - a_w)
            chan[r, c, 4] = (a_n - a_e) * (a_n - a_e)
            chan[r, c, 5] = (a_s - a_w) * (a_s - a_w)
            chan[r, c, 6] = (a_s - a_e) * (a_s - a_e)
    return r0, r1, c0, c1


@njit(**_OPTS)
def _mind_ssc_sums(img, valid, half, dist, min_fraction, dvalid, chan, sums, row_acc):
    """Passes 1-2 of :func:`mind_ssc_image`: ``dvalid`` and, where it is set, ``sums[r, c]`` =
    (V, D_1 - min_j D_j, ..., D_6 - min_j D_j). Returns (valid descriptors, V's floor).

    Only the bounding box of the valid pixels is computed (about three quarters of a frame):
    outside it every channel is 0, so the running sums there only ever added or subtracted
    exact zeros (every sum the same to the bit as over the whole image), and no descriptor
    counts there (``dvalid`` 0)."""
    rows, cols = img.shape
    r0, r1, c0, c1 = _mind_channels(img, valid, dist, dvalid, chan)
    if r1 <= r0:
        return 0, 0.0
    one = np.uint64(1)
    uh = np.uint64(half)
    ucols = np.uint64(cols)
    ur0, ur1, uc0, uc1 = np.uint64(r0), np.uint64(r1), np.uint64(c0), np.uint64(c1)
    # running box sums as in :func:`_lc2_sums_image`: vertical sums per row (``row_acc``),
    # horizontal sums in registers; ``sums[r, c]`` keeps V and the six D_k - min_j D_j.
    # Columns outside [c0, c1) of ``row_acc`` stay 0 and rows outside [r0, r1) of ``chan``
    # (not written) are never added: the whole image's sums had only zeros there.
    width = cols * N_SSC
    flat = chan.reshape(rows, width)
    vflat = row_acc.reshape(width)
    for i in range(width):
        vflat[i] = 0.0
    ui0 = uc0 * np.uint64(N_SSC)
    ui1 = uc1 * np.uint64(N_SSC)
    # entering row r the vertical sums hold rows [r - half, r + half - 1]: all zero up to
    # r = r0 - half (the same for the horizontal sums and columns)
    urs = np.uint64(max(0, r0 - half))
    ucs = np.uint64(max(0, c0 - half))
    if urs == 0:
        for r in range(ur0, min(uh, ur1)):
            for i in range(ui0, ui1):
                vflat[i] += flat[r, i]
    min_count = max(min_fraction * (2 * half + 1) * (2 * half + 1), 1.0)
    total_v = 0.0
    count = 0
    for r in range(urs, ur1):
        add = r + uh
        if add < ur1:
            for i in range(ui0, ui1):
                vflat[i] += flat[add, i]
        if r >= ur0 + uh + one:
            sub = r - uh - one
            for i in range(ui0, ui1):
                vflat[i] -= flat[sub, i]
        if r < ur0:
            continue
        uhi = ucols
        while uhi > 0 and not valid[r, uhi - one]:
            uhi -= one
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = 0.0
        if ucs == 0:
            for c in range(min(uh, ucols)):
                a0 += row_acc[c, 0]
                a1 += row_acc[c, 1]
                a2 += row_acc[c, 2]
                a3 += row_acc[c, 3]
                a4 += row_acc[c, 4]
                a5 += row_acc[c, 5]
                a6 += row_acc[c, 6]
        for c in range(ucs, uhi):
            ua = c + uh
            if ua < ucols:
                a0 += row_acc[ua, 0]
                a1 += row_acc[ua, 1]
                a2 += row_acc[ua, 2]
                a3 += row_acc[ua, 3]
                a4 += row_acc[ua, 4]
                a5 += row_acc[ua, 5]
                a6 += row_acc[ua, 6]
            if c >= uh + one:
                us = c - uh - one
                a0 -= row_acc[us, 0]
                a1 -= row_acc[us, 1]
                a2 -= row_acc[us, 2]
                a3 -= row_acc[us, 3]
                a4 -= row_acc[us, 4]
                a5 -= row_acc[us, 5]
                a6 -= row_acc[us, 6]
            if valid[r, c] and a0 >= min_count:
                inv = 1.0 / a0
                lo = min(min(min(a1, a2), min(a3, a4)), min(a5, a6))
                v = (a1 + a2 + a3 + a4 + a5 + a6) * (inv / N_MIND)
                sums[r, c, 0] = v
                sums[r, c, 1] = (a1 - lo) * inv
                sums[r, c, 2] = (a2 - lo) * inv
                sums[r, c, 3] = (a3 - lo) * inv
                sums[r, c, 4] = (a4 - lo) * inv
                sums[r, c, 5] = (a5 - lo) * inv
                sums[r, c, 6] = (a6 - lo) * inv
                total_v += v
                count += 1
                dvalid[r, c] = 1
    return count, 1e-3 * total_v / max(count, 1)


@njit(**_OPTS)
def _sample1_masked(vol2, origin, du, dv, mask, out_p, out_valid):  # pragma: no cover
    """:func:`_sample2_masked` for the intensity channel only (MIND-SSC does not use the
    gradient): the same positions and arithmetic, half the gathers. Rows are indexed in
    place (no row views: no reference counting per row) and each row's validity and the
    zeros outside it are written in one pass."""
    flat, sj, si, shape3 = _vol2_strides(vol2)
    rows, cols = out_p.shape
    base, fx, fy, fz, ok = _row_scratch(cols)
    inside = 0
    for r in range(rows):
        lo = 0
        while lo < cols and not mask[r, lo]:
            lo += 1
        hi = cols
        while hi > lo and not mask[r, hi - 1]:
            hi -= 1
        if lo < hi:
            _row_positions(shape3, origin, du, dv, r, base, fx, fy, fz, ok, lo, hi)
            for c in range(lo, hi):
                uc = np.uint64(c)  # unsigned: no wraparound test on the five accesses
                out_p[r, uc] = _lerp3(flat, 2 * base[uc], 2, sj, si, fx[uc], fy[uc], fz[uc])
        for c in range(cols):
            v = lo <= c < hi and ok[c] and mask[r, c] != 0
            out_valid[r, c] = 1 if v else 0
            inside += 1 if v else 0
            if not v:
                out_p[r, c] = 0.0
    return inside


#: the constants of :func:`exp_neg_rows`, float32 values used in float64 arithmetic: -ln 2 and
#: the Taylor coefficients of e^y (1/9!, 1/8!, ..., 1/2!, 1)
_F64_NEG_LN2 = float(np.float32(-0.6931471805599453))
_TAYLOR = tuple(
    float(np.float32(v))
    for v in (1 / 362880, 1 / 40320, 1 / 5040, 1 / 720, 1 / 120, 1 / 24, 1 / 6, 0.5, 1.0)
)


@njit(**_OPTS)
def exp_neg_rows(x, out, bits):  # pragma: no cover - compiled
    """``out = exp(-x)`` for ``x >= 0`` (float32 arrays), written so that it vectorises (libm's
    ``expf`` is a call per element: without SVML it was a third of a MIND-SSC evaluation).

    ``exp(-x) = 2^-t``, ``t = x·log2(e)`` (capped at 125: the result is then < 10⁻³⁷), split
    into ``n = floor(t)`` and ``f = t - n``; ``2^-f`` from its Taylor series to the 9th power
    (relative error < 10⁻⁷ on [0, 1)), ``2^-n`` built from the float32 exponent bits
    (``bits``: int32 scratch of the same length).
    """
    for i in range(x.shape[0]):
        t = min(x[i] * np.float32(1.4426950408889634), np.float32(125.0))
        # n = floor(t) kept in float32 (an integer 0..125, exact) and t - n formed in float64:
        # the same values as an int64 floor, but float32 -> int32 conversion vectorises where
        # float -> int64 does not (AVX2), 1.7x faster for the same bits
        n = np.floor(t)
        y = (np.float64(t) - np.float64(n)) * _F64_NEG_LN2  # ln 2^-f, in (-ln 2, 0]
        p = _TAYLOR[0]
        p = p * y + _TAYLOR[1]
        p = p * y + _TAYLOR[2]
        p = p * y + _TAYLOR[3]
        p = p * y + _TAYLOR[4]
        p = p * y + _TAYLOR[5]
        p = p * y + _TAYLOR[6]
        p = p * y + _TAYLOR[7]
        p = p * y + _TAYLOR[8]
        out[i] = p * y + 1.0
        bits[i] = (np.int32(127) - np.int32(n)) << 23
    scale = bits.view(np.float32)
    for i in range(x.shape[0]):
        out[i] *= scale[i]


@njit(**_OPTS)
def mind_ssc_frames(
    vol2,
    us_desc,
    us_dvalid,
    us_weight,
    fov,
    affines,
    half,
    dist,
    min_fraction,
    out_num,
    out_den,
    out_inside,
    scratch_p,
    scratch_valid,
    dvalid,
    chan,
    sums,
    row_acc,
    row_x,
    row_desc,
    row_bits,
    row_span,
):  # pragma: no cover - compiled
    """MIND-SSC similarity of a stack of US frames against a moving MRI; the calling
    convention of :func:`lc2_frames` (per-frame sums), with the US descriptors precomputed
    (they do not depend on the pose).

    The MRI intensity is resliced at the field-of-view pixels of each frame, its descriptors
    computed there (as :func:`mind_ssc_image`, with one :func:`exp_neg_rows` per frame;
    invalid outside the MRI), and at every pixel where both descriptors count the pixel score
    is ``1 - mean_k |d_us_k - d_mri_k|`` (0..1, higher is better), weighted by ``us_weight``.

    Parameters
    ----------
    vol2
        (I, J, K, 2) float32 interleaved MRI intensity and gradient magnitude (channel 0 used).
    us_desc, us_dvalid
        (F, rows, cols, 6) float32 US descriptors and (F, rows, cols) uint8 their validity.
    us_weight
        (F, rows, cols) float32 pixel weights (1, or the local US standard deviation).
    fov
        (F, rows, cols) uint8 field of view per frame.
    affines
        (F, 3, 3) float64: columns du, dv, origin of pixel → voxel position.
    half, dist, min_fraction
        As :func:`mind_ssc_image`.
    out_num, out_den
        (F,) float64: per-frame Σ w·score and Σ w.
    out_inside
        (F,) int64: FOV pixels that fell inside the MRI.
    scratch_p, scratch_valid, dvalid, chan, sums, row_acc, row_x, row_desc, row_bits, row_span
        Scratch arrays of one frame (:func:`mind_scratch`).
    """
    rows = us_desc.shape[1]
    cols = us_desc.shape[2]
    for f in range(us_desc.shape[0]):
        inside = _sample1_masked(
            vol2,
            affines[f, :, 2],
            affines[f, :, 0],
            affines[f, :, 1],
            fov[f],
            scratch_p,
            scratch_valid,
        )
        out_inside[f] = inside
        num = 0.0
        den = 0.0
        if inside > 0:
            _, floor = _mind_ssc_sums(
                scratch_p, scratch_valid, half, dist, min_fraction, dvalid, chan, sums, row_acc
            )
            # pass 1: each row's span (the columns between its first and last pixel where
            # both descriptors count: outside the field of view nothing is scored) and its
            # exponents channel-major (offset + k·w + c - lo), every row after the one before
            # (indices unsigned: no wraparound test per access, the same elements)
            used = np.uint64(0)
            for r in range(rows):
                lo = 0
                while lo < cols and not (dvalid[r, lo] and us_dvalid[f, r, lo]):
                    lo += 1
                hi = cols
                while hi > lo and not (dvalid[r, hi - 1] and us_dvalid[f, r, hi - 1]):
                    hi -= 1
                row_span[r, 0] = lo
                row_span[r, 1] = hi
                uw = np.uint64(hi - lo)
                for c in range(np.uint64(lo), np.uint64(hi)):
                    v = max(sums[r, c, 0], floor)
                    scale = np.float32(1.0 / v) if dvalid[r, c] and v > 0.0 else np.float32(0.0)
                    uc = used + (c - np.uint64(lo))
                    for k in range(N_MIND):
                        row_x[np.uint64(k) * uw + uc] = np.float32(sums[r, c, k + 1]) * scale
                used += np.uint64(N_MIND) * uw
            # pass 2: one vectorised exp for the whole frame (elementwise: the same values as
            # one call per row, without a call per row)
            exp_neg_rows(row_x[:used], row_desc[:used], row_bits[:used])
            # pass 3: the pixel scores, in the same order
            used = np.uint64(0)
            for r in range(rows):
                lo = np.uint64(row_span[r, 0])
                hi = np.uint64(row_span[r, 1])
                uw = hi - lo
                for c in range(lo, hi):
                    if dvalid[r, c] and us_dvalid[f, r, c]:
                        s = 0.0
                        uc = used + (c - lo)
                        for k in range(N_MIND):
                            s += abs(us_desc[f, r, c, k] - row_desc[np.uint64(k) * uw + uc])
                        w_px = us_weight[f, r, c]
                        num += w_px * (1.0 - s / N_MIND)
                        den += w_px
                used += np.uint64(N_MIND) * uw
        out_num[f] = num
        out_den[f] = den


def mind_scratch(rows: int, cols: int) -> tuple[np.ndarray, ...]:
    """Scratch arrays of :func:`mind_ssc_frames` for one frame size (``[3:6]`` is the scratch
    of :func:`mind_ssc_image` after its ``desc``)."""
    return (
        np.zeros((rows, cols), np.float32),
        np.zeros((rows, cols), np.uint8),
        np.zeros((rows, cols), np.uint8),
        np.zeros((rows, cols, N_SSC)),
        np.zeros((rows, cols, N_SSC)),
        np.zeros((cols, N_SSC)),
        np.zeros(rows * cols * N_MIND, np.float32),
        np.zeros(rows * cols * N_MIND, np.float32),
        np.zeros(rows * cols * N_MIND, np.int32),
        np.zeros((rows, 2), np.int64),
    )
