"""The simulator's Numba kernels against independent numpy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from usnav.sim import _kernels as K

# ---------------------------------------------------------------- painting -----------------


def inside_ref(
    ptype: int, prm: np.ndarray, u: np.ndarray, v: np.ndarray, w: np.ndarray
) -> np.ndarray:
    """Vectorised inside tests of the primitives (written from their definitions)."""
    if ptype == K.PRIM_SUPERELLIPTIC_CYLINDER:
        a, b, h, n = prm[:4]
        return (np.abs(w) <= h) & ((np.abs(u) / a) ** n + (np.abs(v) / b) ** n <= 1.0)
    if ptype == K.PRIM_ELLIPSOID:
        x, y, z = u / prm[0], v / prm[1], w / prm[2]
        rho = np.sqrt(x * x + y * y + z * z)
        theta = np.arccos(np.clip(z / np.maximum(rho, 1e-300), -1, 1))
        phi = np.arctan2(y, x)
        e1, e2, e3, p1, p2, p3 = prm[3:9]
        eps = (
            e1 * np.sin(theta) * np.cos(2 * phi - p1)
            + e2 * np.sin(2 * theta) * np.cos(phi - p2)
            + e3 * np.sin(theta) ** 2 * np.cos(3 * phi - p3)
        )
        return rho <= 1.0 + eps
    if ptype == K.PRIM_BOX:
        return (np.abs(u) <= prm[0]) & (np.abs(v) <= prm[1]) & (np.abs(w) <= prm[2])
    if ptype == K.PRIM_ARCH:
        a1, b1, a2, b2, h, umax, vmax = prm[:7]
        return (
            (np.abs(w) <= h)
            & (np.abs(u) <= umax)
            & (v <= vmax)
            & ((u / a1) ** 2 + (v / b1) ** 2 >= 1)
            & ((u / a2) ** 2 + (v / b2) ** 2 <= 1)
        )
    if ptype == K.PRIM_CURVED_HALFSPACE:
        return v >= prm[0] - prm[1] * u * u
    return np.ones_like(u, dtype=bool)


def random_primitives(rng: np.random.Generator, n: int = 14):
    from scipy.spatial.transform import Rotation

    types, labels, masks, mats, params, aabb = [], [], [], [], [], []
    for k in range(n):
        t = int(rng.integers(0, 6))
        prm = np.zeros(12)
        if t == K.PRIM_SUPERELLIPTIC_CYLINDER:
            prm[:4] = [rng.uniform(1, 5), rng.uniform(1, 5), rng.uniform(1, 6), rng.uniform(1.5, 3)]
        elif t == K.PRIM_ELLIPSOID:
            prm[:9] = [*rng.uniform(1, 5, 3), *rng.uniform(-0.15, 0.15, 3), *rng.uniform(0, 6, 3)]
        elif t == K.PRIM_BOX:
            prm[:3] = rng.uniform(0.5, 4, 3)
        elif t == K.PRIM_ARCH:
            a1, b1 = rng.uniform(1, 3, 2)
            prm[:7] = [a1, b1, a1 + 2, b1 + 2, rng.uniform(1, 5), a1 + 1, rng.uniform(-1, 1)]
        elif t == K.PRIM_CURVED_HALFSPACE:
            prm[:2] = [rng.uniform(-3, 3), rng.uniform(0, 0.2)]
        rot = Rotation.random(random_state=rng).as_matrix()
        centre = rng.uniform(-4, 4, 3)
        m = np.zeros((3, 4))
        m[:, :3] = rot.T
        m[:, 3] = -rot.T @ centre
        types.append(t)
        labels.append(k % 7 + 1)
        masks.append(int(rng.integers(1, 2**8)) | 1)
        mats.append(m)
        params.append(prm)
        box = np.r_[centre - 9, centre + 9] if t not in (4, 5) else np.r_[[-1e6] * 3, [1e6] * 3]
        aabb.append(box)
    return (
        np.array(types, np.int64),
        np.array(labels, np.int64),
        np.array(masks, np.int64),
        np.array(mats),
        np.array(params),
        np.array(aabb),
    )


def paint_ref(points: np.ndarray, prims) -> np.ndarray:
    types, labels, masks, mats, params, aabb = prims
    out = np.zeros(len(points), dtype=np.uint8)
    for p in range(len(types)):
        local = points @ mats[p][:, :3].T + mats[p][:, 3]
        inside = inside_ref(types[p], params[p], local[:, 0], local[:, 1], local[:, 2])
        inbox = np.all((points >= aabb[p][:3]) & (points <= aabb[p][3:]), axis=1)
        allowed = ((masks[p] >> out.astype(np.int64)) & 1) == 1
        out[inside & inbox & allowed] = labels[p]
    return out


def test_paint_points_and_grid_match_reference():
    rng = np.random.default_rng(11)
    prims = random_primitives(rng)
    # grid with a per-slice centre-line offset (curvature)
    shape = (30, 28, 26)
    origin = np.array([-7.3, -6.9, -6.1])
    h = 0.5
    cx = 0.4 * np.sin(np.arange(shape[2]) * 0.2)
    cy = 0.02 * (np.arange(shape[2]) - 13) ** 2
    grid = np.zeros(shape, np.uint8)
    K.paint_grid(grid, origin, h, cx, cy, *prims)
    ii, jj, kk = np.indices(shape)
    q = np.stack(
        [origin[0] + ii * h - cx[kk], origin[1] + jj * h - cy[kk], origin[2] + kk * h], axis=-1
    ).reshape(-1, 3)
    ref = paint_ref(q, prims).reshape(shape)
    assert np.mean(grid != ref) < 1e-4
    assert len(np.unique(ref)) > 4  # the scene is not trivial
    out = np.zeros(len(q), np.uint8)
    K.paint_points(np.ascontiguousarray(q), *prims, out)
    assert np.mean(out != ref.ravel()) < 1e-4


# ---------------------------------------------------------------- lookups ------------------


def label_at_ref(labels: np.ndarray, f: np.ndarray) -> int:
    n = np.array(labels.shape)
    f = np.clip(f, 0, n - 1)
    i = np.minimum(np.floor(f).astype(int), n - 2)
    t = f - i
    corners, weights = [], []
    for di in (0, 1):
        for dj in (0, 1):
            for dk in (0, 1):
                corners.append(labels[i[0] + di, i[1] + dj, i[2] + dk])
                weights.append(
                    (t[0] if di else 1 - t[0])
                    * (t[1] if dj else 1 - t[1])
                    * (t[2] if dk else 1 - t[2])
                )
    corners, weights = np.array(corners), np.array(weights)
    sums = np.array([weights[corners == c].sum() for c in corners])
    return int(corners[int(np.argmax(sums))])


def indicator_ref(labels, f, lab):
    return float(
        map_coordinates(
            (labels == lab).astype(float), np.reshape(f, (3, 1)), order=1, mode="nearest"
        )[0]
    )


def test_label_indicator_trilinear_match_reference():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, (9, 8, 7)).astype(np.uint8)
    vol = rng.normal(size=(9, 8, 7))
    for _ in range(400):
        f = rng.uniform(-1.5, 9.5, 3)
        assert K.label_at(labels, *f) == label_at_ref(labels, f)
        for lab in range(4):
            assert K.indicator_at(labels, *f, lab) == pytest.approx(
                indicator_ref(labels, f, lab), abs=1e-12
            )
        ref = map_coordinates(vol, f.reshape(3, 1), order=1, mode="nearest")[0]
        assert K.trilinear(vol, *f) == pytest.approx(ref, abs=1e-12)


def test_label_at_gives_smooth_boundaries_not_staircases():
    """A voxelised oblique plane looked up finely: the boundary follows the plane within half a
    voxel and moves continuously (no one-voxel jumps as a nearest-neighbour lookup makes)."""
    n = 20
    ii, jj, _ = np.indices((n, n, 3))
    labels = (jj > 0.37 * ii + 4.2).astype(np.uint8)
    ys = np.linspace(0, n - 1, 4000)
    edges, nn_edges = [], []
    xs = np.arange(2.0, 16.0, 0.1)
    for x in xs:
        lab = np.array([K.label_at(labels, x, y, 1.0) for y in ys])
        edges.append(ys[np.argmax(lab == 1)])
        nn = labels[round(x), np.round(ys).astype(int), 1]
        nn_edges.append(ys[np.argmax(nn == 1)])
    edges, nn_edges = np.array(edges), np.array(nn_edges)
    assert np.abs(edges - (0.37 * xs + 4.2)).max() < 0.5
    assert np.abs(np.diff(edges)).max() < 0.25
    assert np.abs(np.diff(nn_edges)).max() > 0.9  # what the smooth lookup avoids


def hash_ref(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, seed: int) -> np.ndarray:
    u = np.uint64
    with np.errstate(over="ignore"):
        h = (
            np.full(ix.shape, seed, dtype=np.uint64)
            ^ (ix.astype(np.int64).view(np.uint64) * u(0x9E3779B97F4A7C15))
            ^ (iy.astype(np.int64).view(np.uint64) * u(0xC2B2AE3D27D4EB4F))
            ^ (iz.astype(np.int64).view(np.uint64) * u(0x165667B19E3779F9))
        )
        h ^= h >> u(30)
        h *= u(0xBF58476D1CE4E5B9)
        h ^= h >> u(27)
        h *= u(0x94D049BB133111EB)
        h ^= h >> u(31)
    return h


def test_hash_matches_reference_and_is_uniform():
    rng = np.random.default_rng(5)
    ix, iy, iz = (rng.integers(-(10**6), 10**6, 500) for _ in range(3))
    ref = hash_ref(ix, iy, iz, 1234)
    got = np.array(
        [
            K.hash_cell(int(a), int(b), int(c), np.uint64(1234))
            for a, b, c in zip(ix, iy, iz, strict=True)
        ],
        dtype=np.uint64,
    )
    assert np.array_equal(got, ref)
    low = (hash_ref(*np.indices((40, 40, 40)).reshape(3, -1), 7) & np.uint64(0xFFFF)) / 65536.0
    assert abs(low.mean() - 0.5) < 0.01 and abs(low.std() - math.sqrt(1 / 12)) < 0.01


# ---------------------------------------------------------------- ray marching -------------


def normal_ref(labels, f, lab, prev):
    g = np.zeros(3)
    offsets = [(0, 0), (1.5, 0), (-1.5, 0), (0, 1.5), (0, -1.5)]
    for axis in range(3):
        others = [d for d in range(3) if d != axis]
        for a, b in offsets:
            for sign in (1, -1):
                p = np.array(f, dtype=float)
                p[axis] += 2.0 * sign
                p[others[0]] += a
                p[others[1]] += b
                d = indicator_ref(labels, p, lab) - indicator_ref(labels, p, prev)
                g[axis] += sign * d
    return g


def trace_ref(
    labels,
    origin,
    h,
    texture,
    tex_origin,
    tex_h,
    tables,
    origins,
    direction,
    step,
    n_steps,
    bin_mm,
    f_mhz,
    m_exp,
    cell,
    seed,
    n_bins,
):
    """Straight Python transcription of the acoustic model (see trace_scanlines' Notes)."""
    z_imp, speed, att, bsc, dens, tsig, rough = tables
    out = np.zeros((origins.shape[0], n_bins), complex)
    k2 = 4 * math.pi * f_mhz / 1540.0 * 1000.0
    n_sub = origins.shape[1]

    def deposit(line, fb, value):
        b = int(fb)
        if 0 <= b < n_bins:
            out[line, b] += value * (1 - (fb - b))
            if b + 1 < n_bins:
                out[line, b + 1] += value * (fb - b)

    for line in range(origins.shape[0]):
        for sub in range(n_sub):
            o = origins[line, sub]
            energy, disp = 1.0, 0.0
            prev = label_at_ref(labels, (o - origin) / h)
            for s in range(n_steps):
                p = o + direction * s * step
                f = (p - origin) / h
                lab = label_at_ref(labels, f)
                fb = disp / bin_mm
                if fb >= n_bins + 1:
                    break
                if lab != prev:
                    r = (z_imp[lab] - z_imp[prev]) / (z_imp[lab] + z_imp[prev])
                    g = normal_ref(labels, f, lab, prev)
                    cos_t = (
                        abs(g @ direction) / np.linalg.norm(g) if np.linalg.norm(g) > 1e-9 else 1.0
                    )
                    rho = max(rough[lab], rough[prev])
                    amp = energy * r * ((1 - rho) * cos_t**m_exp + rho * cos_t**2) / n_sub
                    deposit(line, fb, amp * np.exp(1j * k2 * disp))
                    energy *= 1 - r * r
                    prev = lab
                if bsc[lab] > 0:
                    cidx = np.floor(p / cell).astype(np.int64)
                    hv = hash_ref(cidx[0:1], cidx[1:2], cidx[2:3], seed)[0]
                    if float(hv & np.uint64(0xFFFF)) / 65536.0 < dens[lab]:
                        u1 = (float(hv >> np.uint64(40)) + 0.5) / 2**24
                        u2 = float((hv >> np.uint64(16)) & np.uint64(0xFFFFFF)) / 2**24
                        tex = 0.0
                        if tsig[lab] > 0:
                            tex = map_coordinates(
                                texture,
                                ((p - tex_origin) / tex_h).reshape(3, 1),
                                order=1,
                                mode="nearest",
                            )[0]
                        a = (
                            energy
                            * bsc[lab]
                            * math.exp(tsig[lab] * tex - 0.5 * tsig[lab] ** 2)
                            * math.sqrt(-math.log(u1))
                            * math.sqrt(step / 0.05)
                            / math.sqrt(n_sub)
                            / math.sqrt(dens[lab])
                        )
                        deposit(line, fb, a * np.exp(2j * math.pi * u2))
                energy *= 10.0 ** (-att[lab] * f_mhz * step / 100.0)
                disp += step * 1540.0 / speed[lab]
                if energy < 1e-9:
                    break
    return out


def test_trace_scanlines_matches_reference():
    rng = np.random.default_rng(8)
    labels = np.zeros((24, 40, 24), np.uint8)
    jj = np.arange(40)[None, :, None]
    ii = np.arange(24)[:, None, None]
    labels[:] = 1
    labels[np.broadcast_to(jj > 10 + 0.3 * ii, labels.shape)] = 2
    labels[np.broadcast_to(jj > 25, labels.shape)] = 3
    texture = rng.normal(size=(10, 16, 10)).astype(np.float32)
    tables = (
        np.array([1.5, 1.52, 1.66, 7.8]),
        np.array([1500.0, 1500.0, 1540.0, 4000.0]),
        np.array([0.0, 0.002, 0.8, 20.0]),
        np.array([0.0, 0.0, 0.3, 0.5]),
        np.array([1.0, 1.0, 0.7, 1.0]),
        np.array([0.0, 0.0, 0.5, 0.0]),
        np.array([0.1, 0.1, 0.2, 0.5]),
    )
    origin = np.zeros(3)
    origins = np.array([[[3.0 + 0.7 * i, 0.5, 5.0 + e] for e in (-0.2, 0.2)] for i in range(3)])
    direction = np.array([0.05, 1.0, 0.02])
    direction /= np.linalg.norm(direction)
    args = dict(step=0.05, n_steps=300, bin_mm=0.05, f_mhz=10.0, m_exp=12.0, cell=0.06, seed=99)
    n_bins = 320
    got = np.zeros((3, n_bins), complex)
    K.trace_scanlines(
        labels,
        origin,
        0.5,
        texture,
        np.array([-1.0, -1.0, -1.0]),
        1.3,
        *tables,
        origins,
        direction,
        args["step"],
        args["n_steps"],
        args["bin_mm"],
        args["f_mhz"],
        args["m_exp"],
        args["cell"],
        args["seed"],
        got,
    )
    ref = trace_ref(
        labels,
        origin,
        0.5,
        texture,
        np.array([-1.0, -1.0, -1.0]),
        1.3,
        tables,
        origins,
        direction,
        n_bins=n_bins,
        **{k: v for k, v in args.items() if k not in ("step", "n_steps")},
        step=args["step"],
        n_steps=args["n_steps"],
    )
    assert np.abs(got).max() > 1e-3
    np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-12)


def psf_ref(rf, bin_mm, depth, sig_a, sig_l):
    n_lines, n_bins = rf.shape
    b = np.arange(n_bins)
    half = math.ceil(3 * sig_a / bin_mm)
    tmp = np.zeros((len(depth), n_lines), complex)
    for r, d in enumerate(depth):
        c = d / bin_mm
        sel = (b >= max(0, math.floor(c) - half)) & (b <= min(n_bins - 1, math.floor(c) + half + 1))
        w = np.exp(-0.5 * ((b[sel] - c) * bin_mm / sig_a) ** 2)
        tmp[r] = rf[:, sel] @ w
    out = np.zeros_like(tmp)
    for r in range(len(depth)):
        hl = math.ceil(3 * sig_l[r])
        o = np.arange(-hl, hl + 1)
        w = np.exp(-0.5 * (o / sig_l[r]) ** 2)
        padded = np.concatenate([np.zeros(hl), tmp[r], np.zeros(hl)])
        out[r] = np.convolve(padded, w[::-1], mode="valid") / w.sum()
    return out


def test_psf_rows_matches_reference():
    rng = np.random.default_rng(3)
    rf = rng.normal(size=(17, 200)) + 1j * rng.normal(size=(17, 200))
    depth = np.linspace(0, 9.8, 31)
    sig_l = np.linspace(0.8, 2.5, 31)
    got = np.zeros((31, 17), complex)
    K.psf_rows(rf, 0.05, depth, 0.12, sig_l, got)
    np.testing.assert_allclose(got, psf_ref(rf, 0.05, depth, 0.12, sig_l), rtol=1e-10, atol=1e-12)
