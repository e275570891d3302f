"""Each Numba kernel of usnav.registration against a plain numpy reference implementation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from usnav.registration import _kernels as K

RNG = np.random.default_rng(20240611)


# ----------------------------------------------------------------------------- references


def trilinear_ref(vol: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Trilinear interpolation at (N, 3) voxel positions; NaN outside [0, n-1]."""
    out = np.full(len(pts), np.nan)
    n = np.array(vol.shape)
    inside = np.all((pts >= 0) & (pts <= n - 1), axis=1)
    p = pts[inside]
    i0 = np.minimum(np.floor(p).astype(int), n - 2)
    f = p - i0
    acc = np.zeros(len(p))
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                w = (
                    np.where(dx, f[:, 0], 1 - f[:, 0])
                    * np.where(dy, f[:, 1], 1 - f[:, 1])
                    * np.where(dz, f[:, 2], 1 - f[:, 2])
                )
                acc += w * vol[i0[:, 0] + dx, i0[:, 1] + dy, i0[:, 2] + dz]
    out[inside] = acc
    return out


def plane_points(origin, du, dv, rows, cols) -> np.ndarray:
    c, r = np.meshgrid(np.arange(cols), np.arange(rows))
    return origin + c[..., None] * du + r[..., None] * dv


def box_sum_ref(chan: np.ndarray, halves: tuple[int, ...]) -> np.ndarray:
    """Box sums over a window clipped at the borders, by cumulative sums per axis."""
    out = chan.astype(np.float64)
    for axis, h in enumerate(halves):
        n = out.shape[axis]
        cs = np.cumsum(out, axis=axis)
        zero = np.zeros_like(np.take(cs, [0], axis=axis))
        cs = np.concatenate([zero, cs], axis=axis)
        hi = np.minimum(np.arange(n) + h + 1, n)
        lo = np.maximum(np.arange(n) - h, 0)
        out = np.take(cs, hi, axis=axis) - np.take(cs, lo, axis=axis)
    return out


def lc2_ref(us, p, g, valid, half, min_fraction):
    """LC² by explicit least squares in every patch (np.linalg.lstsq)."""
    rows, cols = us.shape
    num = den = 0.0
    side = 2 * half + 1
    for r in range(rows):
        for c in range(cols):
            if not valid[r, c]:
                continue
            sl = (slice(max(r - half, 0), r + half + 1), slice(max(c - half, 0), c + half + 1))
            m = valid[sl].astype(bool)
            n = m.sum()
            if n < min_fraction * side * side:
                continue
            u = us[sl][m].astype(float)
            var_u = u.var()
            if var_u <= 1e-9:
                continue
            design = np.c_[p[sl][m], g[sl][m], np.ones(n)]
            coef, *_ = np.linalg.lstsq(design, u, rcond=None)
            r2 = 1.0 - np.var(u - design @ coef) / var_u
            w = np.sqrt(var_u)
            num += w * np.clip(r2, 0, 1)
            den += w
    return num, den


# ----------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("angles", [(20, 30, 10), (0, 0, 0), (90, 45, 0)])
def test_reslice_plane_matches_trilinear_reference(angles):
    vol = RNG.random((20, 23, 18)).astype(np.float32)
    r = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    du, dv = r[:, 0] * 0.7, r[:, 1] * 0.9
    origin = np.array([10.0, 11.0, 9.0]) - 12 * du - 12 * dv
    out = np.zeros((25, 26), np.float32)
    K.reslice_plane(vol, origin, du, dv, out, np.float32(-1.0))
    ref = trilinear_ref(vol, plane_points(origin, du, dv, 25, 26).reshape(-1, 3)).reshape(25, 26)
    inside = np.isfinite(ref)
    assert inside.sum() > 100 and (~inside).sum() > 10  # the plane leaves the volume
    np.testing.assert_allclose(out[inside], ref[inside], atol=2e-5)
    assert np.all(out[~inside] == -1.0)


def test_a_plane_at_a_nan_pose_is_outside_not_a_crash():
    """A NaN pose (tracking lost: ImageToMri NaN) gave a NaN position whose int32 corner read
    out of bounds: the viewer's process died (session 36). A plane with a non-finite origin
    or step is now all outside."""
    vol = RNG.random((20, 23, 18)).astype(np.float32)
    out = np.zeros((6, 7), np.float32)
    du, dv = [0.7, 0.0, 0.0], [0.0, 0.9, 0.0]
    cases = [
        ([np.nan, 1.0, 1.0], du, dv),
        ([1.0, 1.0, 1.0], [0.0, np.nan, 0.0], dv),
        ([1.0, 1.0, 1.0], du, [0.0, 0.0, np.inf]),
    ]
    for origin, step_u, step_v in cases:
        out[:] = 0
        K.reslice_plane(
            vol, np.array(origin), np.array(step_u), np.array(step_v), out, np.float32(-1)
        )
        assert np.all(out == -1.0)
    K.reslice_plane(vol, np.ones(3), np.array(du), np.array(dv), out, np.float32(-1))
    assert np.all(out != -1.0)  # the same plane, placed: inside


def test_sample2_plane_reads_both_channels_and_flags_outside():
    vol = RNG.random((12, 14, 11)).astype(np.float32)
    grad = RNG.random((12, 14, 11)).astype(np.float32)
    vol2 = np.ascontiguousarray(np.stack([vol, grad], axis=-1))
    du, dv = np.array([0.6, 0.3, 0.1]), np.array([-0.2, 0.5, 0.4])
    origin = np.array([1.0, 2.0, -0.5])
    p = np.zeros((16, 18), np.float32)
    g = np.zeros_like(p)
    valid = np.zeros((16, 18), np.uint8)
    K.sample2_plane(vol2, origin, du, dv, p, g, valid)
    pts = plane_points(origin, du, dv, 16, 18).reshape(-1, 3)
    ref_p = trilinear_ref(vol, pts).reshape(16, 18)
    ref_g = trilinear_ref(grad, pts).reshape(16, 18)
    # positions are float32 in the kernel: a sample within 1e-4 voxel of the border may fall
    # either side
    margin = np.min(np.c_[pts, np.array(vol.shape) - 1 - pts], axis=1).reshape(16, 18)
    clear = np.abs(margin) > 1e-4
    np.testing.assert_array_equal(valid.astype(bool)[clear], np.isfinite(ref_p)[clear])
    m = valid.astype(bool) & np.isfinite(ref_p)
    np.testing.assert_allclose(p[m], ref_p[m], atol=2e-5)
    np.testing.assert_allclose(g[m], ref_g[m], atol=2e-5)
    assert np.all(p[~valid.astype(bool)] == 0)


def test_masked_samplers_equal_the_whole_plane_inside_a_sector_mask():
    """The field-of-view samplers place only the columns between each row's first and last
    mask pixel: inside the mask they give the whole-plane sampler's values to the bit, zeros
    and invalid outside it."""
    vol = RNG.random((12, 14, 11)).astype(np.float32)
    grad = RNG.random((12, 14, 11)).astype(np.float32)
    vol2 = np.ascontiguousarray(np.stack([vol, grad], axis=-1))
    du, dv = np.array([0.6, 0.3, 0.1]), np.array([-0.2, 0.5, 0.4])
    origin = np.array([1.0, 2.0, -0.5])
    rows, cols = 16, 18
    rr, cc = np.mgrid[:rows, :cols]
    mask = ((rr >= 2) & (np.abs(cc - 9) <= 0.5 * rr)).astype(np.uint8)  # a sector
    mask[9, 6] = 0  # a hole inside a row's span
    p, g = np.zeros((rows, cols), np.float32), np.zeros((rows, cols), np.float32)
    valid = np.zeros((rows, cols), np.uint8)
    K.sample2_plane(vol2, origin, du, dv, p, g, valid)
    expect = valid.astype(bool) & (mask > 0)
    assert 20 < expect.sum() < mask.sum()  # part of the sector leaves the volume
    p2, g2, v2 = np.ones_like(p), np.ones_like(g), np.ones_like(valid)
    inside = K._sample2_masked(vol2, origin, du, dv, mask, p2, g2, v2)
    p1, v1 = np.ones_like(p), np.ones_like(valid)
    inside1 = K._sample1_masked(vol2, origin, du, dv, mask, p1, v1)
    assert inside == inside1 == expect.sum()
    for out_valid in (v1, v2):
        np.testing.assert_array_equal(out_valid.astype(bool), expect)
    for out, whole in ((p1, p), (p2, p), (g2, g)):
        np.testing.assert_array_equal(out[expect], whole[expect])
        assert not out[~expect].any()


def test_sample_points():
    vol = RNG.random((8, 9, 10)).astype(np.float32)
    pts = RNG.uniform(-1, 10, size=(200, 3))
    out = np.zeros(200, np.float32)
    K.sample_points(vol, pts, out, -5.0)
    ref = trilinear_ref(vol, pts)
    np.testing.assert_allclose(out, np.where(np.isfinite(ref), ref, -5.0), atol=1e-5)


# ----------------------------------------------------------------------------- gradients


def test_gradient_magnitude_3d_matches_numpy_gradient():
    vol = RNG.random((9, 10, 11)).astype(np.float32)
    spacing = np.array([0.5, 0.8, 1.2])
    out = np.zeros_like(vol)
    K.gradient_magnitude_3d(vol, spacing, out)
    gx, gy, gz = np.gradient(vol.astype(float), *spacing, edge_order=1)
    np.testing.assert_allclose(out, np.sqrt(gx**2 + gy**2 + gz**2), rtol=1e-5, atol=1e-5)


def test_gradient_magnitude_2d_matches_numpy_gradient():
    img = RNG.random((13, 17)).astype(np.float32)
    out = np.zeros_like(img)
    K.gradient_magnitude_2d(img, 0.3, 0.2, out)
    gr, gc = np.gradient(img.astype(float), 0.3, 0.2)
    np.testing.assert_allclose(out, np.hypot(gr, gc), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- box sums, LC²


@pytest.mark.parametrize("half", [1, 3, 8])
def test_box_sum_2d_running_sums(half):
    chan = RNG.random((15, 12, 4))
    out = np.zeros_like(chan)
    K.box_sum_2d(chan, half, half, out, np.zeros((12, 4)))
    np.testing.assert_allclose(out, box_sum_ref(chan, (half, half, 0)), atol=1e-9)


def test_box_sum_3d_inplace():
    chan = RNG.random((7, 9, 8, 3))
    ref = box_sum_ref(chan, (2, 2, 2, 0))
    K.box_sum_3d_inplace(chan, 2, np.zeros((9, 3)))
    np.testing.assert_allclose(chan, ref, atol=1e-9)


@pytest.mark.parametrize("half", [1, 2])
def test_lc2_image_matches_least_squares_per_patch(half):
    rows, cols = 14, 16
    p = RNG.random((rows, cols)).astype(np.float32)
    g = RNG.random((rows, cols)).astype(np.float32)
    us = (0.7 * p - 0.4 * g + 0.3 * RNG.random((rows, cols))).astype(np.float32)
    valid = (RNG.random((rows, cols)) > 0.15).astype(np.uint8)
    scratch = K.frame_scratch(rows, cols)
    num, den = K.lc2_image(us, p, g, valid, half, 0.5, scratch[3], scratch[4], scratch[5])
    ref_num, ref_den = lc2_ref(us, p, g, valid, half, 0.5)
    assert den == pytest.approx(ref_den, rel=1e-6)
    assert num == pytest.approx(ref_num, rel=1e-5)
    assert 0 < num / den < 1


@pytest.mark.parametrize("half", [1, 2])
def test_lc2_image_of_a_small_region_inside_the_frame(half):
    """Valid pixels only in a region away from every border (as the tumor stage's): the kernel
    works only inside their bounding box, so it must match the reference and give the same
    sums to the bit as the region cropped to the box or moved inside a wider margin."""
    rows, cols = 20, 23
    p = RNG.random((rows, cols)).astype(np.float32)
    g = RNG.random((rows, cols)).astype(np.float32)
    us = (0.7 * p - 0.4 * g + 0.3 * RNG.random((rows, cols))).astype(np.float32)
    rr, cc = np.mgrid[:rows, :cols]
    valid = (((rr - 11) / 6.0) ** 2 + ((cc - 9) / 5.0) ** 2 <= 1.0) & (
        RNG.random((rows, cols)) > 0.1
    )
    valid = valid.astype(np.uint8)

    def lc2(u, pp, gg, v):
        scratch = K.frame_scratch(*u.shape)
        return K.lc2_image(u, pp, gg, v, half, 0.5, scratch[3], scratch[4], scratch[5])

    num, den = lc2(us, p, g, valid)
    ref_num, ref_den = lc2_ref(us, p, g, valid, half, 0.5)
    assert den == pytest.approx(ref_den, rel=1e-6)
    assert num == pytest.approx(ref_num, rel=1e-5)
    assert 0 < num / den < 1
    rows_in = np.flatnonzero(valid.any(axis=1))
    cols_in = np.flatnonzero(valid.any(axis=0))
    box = np.s_[rows_in[0] : rows_in[-1] + 1, cols_in[0] : cols_in[-1] + 1]
    assert lc2(us[box].copy(), p[box].copy(), g[box].copy(), valid[box].copy()) == (num, den)
    # a one-pixel margin: the box starts inside the first patch (0 < r0, c0 < half + 1)
    assert lc2(*(np.pad(a[box], 1) for a in (us, p, g, valid))) == (num, den)
    wide = [np.zeros((rows + 7, cols + 4), a.dtype) for a in (us, p, g, valid)]
    for w, a in zip(wide, (us, p, g, valid), strict=True):
        w[5 : 5 + rows, 1 : 1 + cols] = a
    assert lc2(*wide) == (num, den)
    scratch = K.frame_scratch(rows, cols)
    assert K.lc2_image(us, p, g, np.zeros_like(valid), half, 0.5, *scratch[3:]) == (0.0, 0.0)


def test_lc2_is_one_for_an_exact_linear_combination():
    p = RNG.random((10, 12)).astype(np.float32)
    g = RNG.random((10, 12)).astype(np.float32)
    us = (2 * p + 3 * g + 1).astype(np.float32)
    scratch = K.frame_scratch(10, 12)
    num, den = K.lc2_image(us, p, g, np.ones((10, 12), np.uint8), 1, 0.5, *scratch[3:])
    assert num / den == pytest.approx(1.0, abs=1e-4)


def test_lc2_frames_equals_reslice_then_lc2_image():
    vol = RNG.random((15, 16, 14)).astype(np.float32)
    grad = np.zeros_like(vol)
    K.gradient_magnitude_3d(vol, np.ones(3), grad)
    vol2 = np.ascontiguousarray(np.stack([vol, grad], axis=-1))
    n, rows, cols = 3, 9, 11
    us = RNG.random((n, rows, cols)).astype(np.float32)
    fov = (RNG.random((n, rows, cols)) > 0.1).astype(np.uint8)
    affines = np.zeros((n, 3, 3))
    for f in range(n):
        r = Rotation.from_rotvec(RNG.normal(size=3) * 0.3).as_matrix()
        affines[f, :, 0] = r[:, 0]
        affines[f, :, 1] = r[:, 1]
        affines[f, :, 2] = [2.0 + f, 1.5, 1.0]
    num = np.zeros(n)
    den = np.zeros(n)
    inside = np.zeros(n, np.int64)
    scratch = K.frame_scratch(rows, cols)
    K.lc2_frames(vol2, us, fov, affines, 1, 0.5, 0, 1.0, num, den, inside, *scratch)
    num_b, den_b = np.zeros(n), np.zeros(n)
    K.lc2_frames(vol2, us, fov, affines, 1, 0.5, 1, 0.7, num_b, den_b, inside, *scratch)
    for f in range(n):
        pts = plane_points(affines[f, :, 2], affines[f, :, 0], affines[f, :, 1], rows, cols)
        p = trilinear_ref(vol, pts.reshape(-1, 3)).reshape(rows, cols)
        g = trilinear_ref(grad, pts.reshape(-1, 3)).reshape(rows, cols)
        valid = (np.isfinite(p) & fov[f].astype(bool)).astype(np.uint8)
        assert inside[f] == valid.sum()
        ref_num, ref_den = lc2_ref(us[f], np.nan_to_num(p), np.nan_to_num(g), valid, 1, 0.5)
        assert num[f] == pytest.approx(ref_num, rel=1e-4, abs=1e-9)
        assert den[f] == pytest.approx(ref_den, rel=1e-4, abs=1e-9)
        g_beam = beam_derivative_ref(np.nan_to_num(p), valid, 0.7)
        ref_num, ref_den = lc2_ref(us[f], np.nan_to_num(p), g_beam, valid, 1, 0.5)
        assert num_b[f] == pytest.approx(ref_num, rel=1e-4, abs=1e-9)
        assert den_b[f] == pytest.approx(ref_den, rel=1e-4, abs=1e-9)


def beam_derivative_ref(p: np.ndarray, valid: np.ndarray, row_mm: float) -> np.ndarray:
    """|dp/drow| per mm: central difference where both row neighbours are valid, else
    one-sided, else 0 (numpy reference of K.beam_derivative)."""
    v = valid.astype(bool)
    up = np.zeros_like(v)
    up[1:] = v[:-1]
    dn = np.zeros_like(v)
    dn[:-1] = v[1:]
    p_up = np.zeros_like(p)
    p_up[1:] = p[:-1]
    p_dn = np.zeros_like(p)
    p_dn[:-1] = p[1:]
    out = np.where(
        up & dn,
        np.abs(p_dn - p_up) / (2 * row_mm),
        np.where(dn, np.abs(p_dn - p) / row_mm, np.where(up, np.abs(p - p_up) / row_mm, 0.0)),
    )
    return np.where(v, out, 0.0)


def test_beam_derivative_matches_numpy_and_ignores_lateral_edges():
    p = RNG.random((12, 9)).astype(np.float32)
    valid = (RNG.random((12, 9)) > 0.2).astype(np.uint8)
    out = np.zeros_like(p)
    K.beam_derivative(p, valid, 0.5, out)
    np.testing.assert_allclose(out, beam_derivative_ref(p, valid, 0.5), rtol=1e-5, atol=1e-6)
    # an interface along the beam (a step across columns) gives no beam derivative
    step = np.zeros((8, 8), np.float32)
    step[:, 4:] = 1.0
    K.beam_derivative(step, np.ones((8, 8), np.uint8), 1.0, out[:8, :8])
    assert not out[:8, :8].any()


def test_ncc_gradient_frames_matches_local_ncc():
    vol = RNG.random((12, 12, 12)).astype(np.float32)
    grad = RNG.random((12, 12, 12)).astype(np.float32)
    vol2 = np.ascontiguousarray(np.stack([vol, grad], axis=-1))
    rows, cols = 8, 9
    us_grad = RNG.random((1, rows, cols)).astype(np.float32)
    fov = np.ones((1, rows, cols), np.uint8)
    affines = np.zeros((1, 3, 3))
    affines[0, :, 0] = [0.9, 0.1, 0.0]
    affines[0, :, 1] = [0.0, 0.8, 0.3]
    affines[0, :, 2] = [1.0, 1.0, 2.0]
    num, den, inside = np.zeros(1), np.zeros(1), np.zeros(1, np.int64)
    K.ncc_gradient_frames(
        vol2, us_grad, fov, affines, 1, 0.5, num, den, inside, *K.frame_scratch(rows, cols)
    )
    pts = plane_points(affines[0, :, 2], affines[0, :, 0], affines[0, :, 1], rows, cols)
    b = trilinear_ref(grad, pts.reshape(-1, 3)).reshape(rows, cols)
    a = us_grad[0]
    ref_num = ref_den = 0.0
    for r in range(rows):
        for c in range(cols):
            sl = (slice(max(r - 1, 0), r + 2), slice(max(c - 1, 0), c + 2))
            if a[sl].size < 4.5:
                continue
            caa = a[sl].var()
            cbb = b[sl].var()
            cab = np.mean(a[sl] * b[sl]) - a[sl].mean() * b[sl].mean()
            ref_num += np.sqrt(caa) * cab**2 / (caa * cbb)
            ref_den += np.sqrt(caa)
    assert num[0] == pytest.approx(ref_num, rel=1e-4)
    assert den[0] == pytest.approx(ref_den, rel=1e-5)


def test_lc2_volume_matches_patchwise_reference():
    vol = RNG.random((10, 10, 10)).astype(np.float32)
    grad = RNG.random((10, 10, 10)).astype(np.float32)
    vol2 = np.ascontiguousarray(np.stack([vol, grad], axis=-1))
    us = RNG.random((5, 6, 5)).astype(np.float32)
    valid = np.ones((5, 6, 5), np.uint8)
    valid[0, 0, :] = 0
    us_to_vox = np.array([[1.1, 0.1, 0, 1.0], [0, 0.9, 0.2, 1.5], [0.1, 0, 1.0, 2.0]])
    chan = np.zeros((5, 6, 5, K.N_STATS))
    num, den, inside = K.lc2_volume(
        vol2, us, valid, us_to_vox, 1, 0.5, chan, np.zeros((6, K.N_STATS))
    )
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in us.shape], indexing="ij"), -1)
    pts = idx.reshape(-1, 3) @ us_to_vox[:, :3].T + us_to_vox[:, 3]
    p = trilinear_ref(vol, pts).reshape(us.shape)
    g = trilinear_ref(grad, pts).reshape(us.shape)
    ok = valid.astype(bool) & np.isfinite(p)
    assert inside == ok.sum()
    ref_num = ref_den = 0.0
    for x, y, z in zip(*np.nonzero(ok), strict=True):
        sl = tuple(slice(max(v - 1, 0), v + 2) for v in (x, y, z))
        m = ok[sl]
        if m.sum() < 0.5 * 27:
            continue
        u = us[sl][m].astype(float)
        design = np.c_[p[sl][m], g[sl][m], np.ones(m.sum())]
        coef, *_ = np.linalg.lstsq(design, u, rcond=None)
        r2 = 1 - np.var(u - design @ coef) / u.var()
        ref_num += np.sqrt(u.var()) * np.clip(r2, 0, 1)
        ref_den += np.sqrt(u.var())
    assert den == pytest.approx(ref_den, rel=1e-6)
    assert num == pytest.approx(ref_num, rel=1e-5)


# ----------------------------------------------------------------------------- reconstruction


def test_paste_slice_nearest_and_linear_match_numpy():
    image = RNG.integers(1, 255, size=(6, 7)).astype(np.float32)
    fov = np.ones((6, 7), np.uint8)
    fov[0, 0] = 0
    # irrational-looking steps: no pixel lands exactly on a rounding tie
    p2v = np.array(
        [[0.8123, 0.1071, 0, 1.2317], [0.0133, 0.7219, 0, 0.4177], [0.2031, 0.1093, 0, 2.3111]]
    )
    shape = (9, 8, 6)
    rows, cols = np.nonzero(fov)
    pos = np.c_[cols, rows, np.zeros_like(rows), np.ones_like(rows)] @ p2v.T
    # nearest
    val = np.zeros(shape, np.float32)
    wt = np.zeros(shape, np.float32)
    n = K.paste_slice_nearest(image, fov, p2v, val, wt)
    ref_v = np.zeros(shape)
    ref_w = np.zeros(shape)
    idx = np.floor(pos + 0.5).astype(int)
    ok = np.all((idx >= 0) & (idx < shape), axis=1)
    np.add.at(ref_v, tuple(idx[ok].T), image[rows[ok], cols[ok]])
    np.add.at(ref_w, tuple(idx[ok].T), 1.0)
    assert n == ok.sum()
    np.testing.assert_allclose(val, ref_v, atol=1e-4)
    np.testing.assert_allclose(wt, ref_w)
    # linear: 8 trilinear weights per pixel
    val[:] = 0
    wt[:] = 0
    K.paste_slice_linear(image, fov, p2v, val, wt)
    ref_v[:] = 0
    ref_w[:] = 0
    base = np.floor(pos).astype(int)
    frac = pos - base
    for d in np.ndindex(2, 2, 2):
        w = np.prod(np.where(np.array(d), frac, 1 - frac), axis=1)
        ix = base + np.array(d)
        ok = np.all((ix >= 0) & (ix < shape), axis=1) & (w > 0)
        np.add.at(ref_v, tuple(ix[ok].T), w[ok] * image[rows[ok], cols[ok]])
        np.add.at(ref_w, tuple(ix[ok].T), w[ok])
    np.testing.assert_allclose(val, ref_v, atol=1e-3)
    np.testing.assert_allclose(wt, ref_w, atol=1e-5)


def test_paste_slice_nearest_maximum_matches_numpy():
    """PLUS's NEAREST/MAXIMUM rule: the brightest pixel per voxel; a dark pixel still marks."""
    image = RNG.integers(0, 255, size=(6, 7)).astype(np.float32)
    image[2, 3] = 0
    fov = np.ones((6, 7), np.uint8)
    fov[5, 6] = 0
    p2v = np.array(
        [[0.8123, 0.1071, 0, 1.2317], [0.0133, 0.7219, 0, 0.4177], [0.2031, 0.1093, 0, 2.3111]]
    )
    shape = (9, 8, 6)
    out = np.zeros(shape, np.float32)
    hit = np.zeros(shape, np.float32)
    n = K.paste_slice_nearest(image, fov, p2v, out, hit, True)
    rows, cols = np.nonzero(fov)
    pos = np.c_[cols, rows, np.zeros_like(rows), np.ones_like(rows)] @ p2v.T
    idx = np.floor(pos + 0.5).astype(int)
    ok = np.all((idx >= 0) & (idx < shape), axis=1)
    ref = np.zeros(shape)
    np.maximum.at(ref, tuple(idx[ok].T), image[rows[ok], cols[ok]])
    ref_hit = np.zeros(shape, bool)
    ref_hit[tuple(idx[ok].T)] = True
    assert n == ok.sum()
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(hit > 0, ref_hit)


def test_paste_slice_linear_maximum_matches_numpy():
    """PLUS's LINEAR/MAXIMUM rule in 14-bit fixed point, written with numpy."""
    bits = K.FIXED_POINT_BITS
    one = 1 << bits
    image = RNG.integers(0, 255, size=(7, 9)).astype(np.float32)
    image[3, 4] = 0  # a black pixel never marks a voxel
    fov = np.ones(image.shape, np.uint8)
    fov[0, :2] = 0
    p2v = np.array(
        [[0.4123, 0.1071, 0, 0.7317], [0.0133, 0.3919, 0, 1.4177], [0.2031, 0.1093, 0, 0.3111]]
    )
    p2v[0, 0] = 0.5  # a column step of half a voxel: some fractions are exactly 0 and 1/2
    fixed = np.rint(p2v * one).astype(np.int64)
    shape = (8, 6, 5)
    out = np.zeros(shape, np.float32)
    hit = np.zeros(shape, np.uint8)
    n = K.paste_slice_linear_maximum(image, fov, fixed, out, hit)

    rows, cols = np.nonzero(fov)
    pos = fixed[:, 0] * cols[:, None] + fixed[:, 1] * rows[:, None] + fixed[:, 3]  # (P, 3)
    lo = pos >> bits
    frac = pos - (lo << bits)
    hi = lo + (frac != 0)
    inside = np.all(lo >= 0, axis=1) & np.all(hi < np.array(shape), axis=1)
    assert n == inside.sum()

    def mul(a, b):
        return (a * b + (one >> 1)) >> bits

    ref = np.zeros(shape)
    ref_hit = np.zeros(shape, bool)
    values = image[rows, cols]
    rest = one - frac
    for corner in np.ndindex(2, 2, 2):
        fx, fy, fz = (np.where(c, frac[:, a], rest[:, a]) for a, c in enumerate(corner))
        weight = mul(fx, mul(fy, fz))
        idx = np.where(np.array(corner), hi, lo)
        ok = inside & (weight >= one // 8) & (values > 0)
        np.maximum.at(ref, tuple(idx[ok].T), values[ok])
        ref_hit[tuple(idx[ok].T)] = True
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(hit.astype(bool), ref_hit)
    assert ref_hit.any() and not ref_hit.all()


def _walk(filled, values, start, step, sign, limit_steps):
    """Steps to the first filled voxel from ``start`` along ``sign * step`` (0 if none)."""
    shape = np.array(values.shape)
    for s in range(1, limit_steps + 1):
        q = start + sign * s * step
        if np.any(q < 0) or np.any(q >= shape):
            return 0, 0.0
        if filled[tuple(q)]:
            return s, values[tuple(q)]
    return 0, 0.0


def stick_ref(values, filled, limit):
    """PLUS STICK rule, written plainly."""
    out = np.where(filled, values, 0.0)
    for x, y, z in zip(*np.nonzero(~filled), strict=True):
        start = np.array([x, y, z])
        found = []
        for d in K.STICK_DIRECTIONS:
            f, vf = _walk(filled, values, start, d, 1, limit - 1)
            if not f:
                continue
            b, vb = _walk(filled, values, start, d, -1, limit - 1 - f)
            if not b:
                continue
            total = f + b + 1
            wf = (b + 1) / total
            found.append((1 / (total * np.linalg.norm(d)), wf * vf + (1 - wf) * vb))
        if found:
            best = max(s for s, _ in found)
            vals = [v for s, v in found if abs(s - best) <= 1e-12 * best]
            out[x, y, z] = np.mean(vals)
    return out


def test_fill_holes_stick_matches_plain_rule():
    values = RNG.uniform(10, 200, size=(8, 9, 7)).astype(np.float32)
    filled = RNG.random((8, 9, 7)) > 0.6
    out = np.zeros_like(values)
    n = K.fill_holes_stick(values, filled.astype(np.uint8), K.STICK_DIRECTIONS, 5, out)
    ref = stick_ref(values, filled, 5)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-3)
    assert n == np.count_nonzero((ref > 0) & ~filled)


def fov_statistics_ref(images: np.ndarray, pick: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frames > 0 per pixel and the float32 standard deviation, as detect_fov_mask computed
    them with numpy."""
    stack = images[pick]
    return np.count_nonzero(stack > 0, axis=0), stack.std(axis=0, dtype=np.float32)


def test_fov_pixel_statistics_equal_numpy_to_the_bit():
    rng = np.random.default_rng(7)
    for trial in range(300):
        frames = int(rng.integers(1, 120))
        rows, cols = (int(v) for v in rng.integers(1, 40, 2))
        if rows * cols < 2:
            cols = 2
        kind = trial % 4
        if kind == 0:
            images = rng.integers(0, 256, (frames, rows, cols))
        elif kind == 1:  # variances near the detector's 0.25 threshold
            images = rng.integers(100, 103, (frames, rows, cols))
        elif kind == 2:  # mostly constant, a few ±1 steps
            base = rng.integers(0, 256, (1, rows, cols))
            steps = rng.integers(-1, 2, (frames, rows, cols)) * (
                rng.random((frames, rows, cols)) < 0.2
            )
            images = np.clip(base + steps, 0, 255)
        else:  # sparse echoes over zeros
            images = (rng.random((frames, rows, cols)) < 0.1) * rng.integers(
                0, 256, (frames, rows, cols)
            )
        images = images.astype(np.uint8)
        pick = np.unique(np.linspace(0, frames - 1, min(frames, 60)).round().astype(np.int64))
        count = np.empty((rows, cols), np.int64)
        std = np.empty((rows, cols), np.float32)
        K.fov_pixel_statistics(images, pick, count, std)
        want_count, want_std = fov_statistics_ref(images, pick)
        np.testing.assert_array_equal(count, want_count)
        assert std.tobytes() == want_std.tobytes()


def test_warm_up_returns_the_compile_time():
    seconds = K.warm_up()
    assert isinstance(seconds, float) and seconds >= 0
