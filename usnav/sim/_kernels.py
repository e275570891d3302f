"""Numba kernels of the spine simulator (pure functions on arrays).

- :func:`paint_grid` / :func:`paint_points`: paint the anatomy's primitives (constructive solid
  geometry by ordered painting) onto a voxel grid or at arbitrary points.
- :func:`trace_scanlines`: acoustic ray marching along the scanlines of a linear probe through a
  label volume: interface reflection with the transmitted energy carried on, attenuation,
  diffuse scattering from a tissue-anchored scatterer field, display-depth mapping at 1540 m/s.
- :func:`psf_rows`: the point-spread function (axial Gaussian envelope resampled to the image
  rows, then a depth-dependent lateral Gaussian across scanlines).

Every kernel has a numpy reference implementation in ``tests/sim/test_kernels.py``.
Coordinates: mm in the anatomy's *spine frame* (x = patient right, y = anterior, z = superior).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from usnav.resample._kernels import cell_clamp as _cell
from usnav.resample._kernels import trilinear_clamp as trilinear  # clamped at edges

PRIM_SUPERELLIPTIC_CYLINDER = 0  # params: a, b, half height, exponent
PRIM_ELLIPSOID = 1  # params: a, b, c, e1, e2, e3, p1, p2, p3 (lobulation amplitudes, phases)
PRIM_BOX = 2  # params: half sizes a, b, c
PRIM_ARCH = 3  # params: inner a, b; outer a, b; half height; |u| max; v max
PRIM_CURVED_HALFSPACE = 4  # params: v0, k: inside where v >= v0 - k*u^2
PRIM_EVERYWHERE = 5

_C0_MM_PER_S = 1540.0  # speed the scanner assumes


@njit(cache=True, nogil=True)
def inside_primitive(ptype: int, prm: np.ndarray, u: float, v: float, w: float) -> bool:
    """Whether local point (u, v, w) (mm) is inside a primitive of type ``ptype``."""
    if ptype == PRIM_SUPERELLIPTIC_CYLINDER:
        if abs(w) > prm[2]:
            return False
        n = prm[3]
        return (abs(u) / prm[0]) ** n + (abs(v) / prm[1]) ** n <= 1.0
    if ptype == PRIM_ELLIPSOID:
        x = u / prm[0]
        y = v / prm[1]
        z = w / prm[2]
        rho2 = x * x + y * y + z * z
        e1, e2, e3 = prm[3], prm[4], prm[5]
        bound = 1.0 + abs(e1) + abs(e2) + abs(e3)
        if rho2 > bound * bound:
            return False
        if e1 == 0.0 and e2 == 0.0 and e3 == 0.0:
            return rho2 <= 1.0
        rho = math.sqrt(rho2)
        if rho < 1e-12:
            return True
        cos_t = min(1.0, max(-1.0, z / rho))
        sin_t = math.sqrt(max(0.0, 1.0 - cos_t * cos_t))
        theta = math.acos(cos_t)
        phi = math.atan2(y, x)
        eps = (
            e1 * sin_t * math.cos(2.0 * phi - prm[6])
            + e2 * math.sin(2.0 * theta) * math.cos(phi - prm[7])
            + e3 * sin_t * sin_t * math.cos(3.0 * phi - prm[8])
        )
        return rho <= 1.0 + eps
    if ptype == PRIM_BOX:
        return abs(u) <= prm[0] and abs(v) <= prm[1] and abs(w) <= prm[2]
    if ptype == PRIM_ARCH:
        if abs(w) > prm[4] or abs(u) > prm[5] or v > prm[6]:
            return False
        inner = (u / prm[0]) ** 2 + (v / prm[1]) ** 2
        outer = (u / prm[2]) ** 2 + (v / prm[3]) ** 2
        return inner >= 1.0 and outer <= 1.0
    if ptype == PRIM_CURVED_HALFSPACE:
        return v >= prm[0] - prm[1] * u * u
    return True  # PRIM_EVERYWHERE


@njit(cache=True, nogil=True)
def paint_grid(
    labels: np.ndarray,
    origin: np.ndarray,
    spacing: float,
    center_x: np.ndarray,
    center_y: np.ndarray,
    ptypes: np.ndarray,
    plabels: np.ndarray,
    pmasks: np.ndarray,
    pmats: np.ndarray,
    pparams: np.ndarray,
    paabb: np.ndarray,
) -> None:
    """Paint primitives, in order, onto a label grid (in place).

    Parameters
    ----------
    labels
        (nx, ny, nz) uint8; voxel (i, j, k) is at ``origin + (i, j, k) * spacing`` (spine mm).
    center_x, center_y
        (nz,) the spine's centre-line offset at each z slice: primitives live in straightened
        coordinates q = p - (center_x, center_y, 0).
    ptypes, plabels, pmasks
        (P,) primitive type, label painted, and a bit mask of the labels it may overwrite.
    pmats
        (P, 3, 4) straightened coordinates → primitive-local (u, v, w).
    pparams
        (P, 12) parameters (see the PRIM_* constants).
    paabb
        (P, 6) bounding box in straightened coordinates (xmin, ymin, zmin, xmax, ymax, zmax).
    """
    nx, ny, nz = labels.shape
    for p in range(ptypes.shape[0]):
        ptype = ptypes[p]
        lab = np.uint8(plabels[p])
        mask = pmasks[p]
        m = pmats[p]
        prm = pparams[p]
        k0 = max(0, math.ceil((paabb[p, 2] - origin[2]) / spacing))
        k1 = min(nz - 1, math.floor((paabb[p, 5] - origin[2]) / spacing))
        for k in range(k0, k1 + 1):
            qz = origin[2] + k * spacing
            ox = origin[0] - center_x[k]
            oy = origin[1] - center_y[k]
            i0 = max(0, math.ceil((paabb[p, 0] - ox) / spacing))
            i1 = min(nx - 1, math.floor((paabb[p, 3] - ox) / spacing))
            j0 = max(0, math.ceil((paabb[p, 1] - oy) / spacing))
            j1 = min(ny - 1, math.floor((paabb[p, 4] - oy) / spacing))
            for i in range(i0, i1 + 1):
                qx = ox + i * spacing
                for j in range(j0, j1 + 1):
                    cur = labels[i, j, k]
                    if (mask >> cur) & 1 == 0:
                        continue
                    qy = oy + j * spacing
                    u = m[0, 0] * qx + m[0, 1] * qy + m[0, 2] * qz + m[0, 3]
                    v = m[1, 0] * qx + m[1, 1] * qy + m[1, 2] * qz + m[1, 3]
                    w = m[2, 0] * qx + m[2, 1] * qy + m[2, 2] * qz + m[2, 3]
                    if inside_primitive(ptype, prm, u, v, w):
                        labels[i, j, k] = lab


@njit(cache=True, nogil=True)
def paint_points(
    points: np.ndarray,
    ptypes: np.ndarray,
    plabels: np.ndarray,
    pmasks: np.ndarray,
    pmats: np.ndarray,
    pparams: np.ndarray,
    paabb: np.ndarray,
    out: np.ndarray,
) -> None:
    """Paint primitives, in order, at points given in straightened coordinates (N, 3) → out (N,)."""
    n = points.shape[0]
    for idx in range(n):
        qx, qy, qz = points[idx, 0], points[idx, 1], points[idx, 2]
        cur = out[idx]
        for p in range(ptypes.shape[0]):
            if (
                qx < paabb[p, 0]
                or qy < paabb[p, 1]
                or qz < paabb[p, 2]
                or qx > paabb[p, 3]
                or qy > paabb[p, 4]
                or qz > paabb[p, 5]
            ):
                continue
            if (pmasks[p] >> cur) & 1 == 0:
                continue
            m = pmats[p]
            u = m[0, 0] * qx + m[0, 1] * qy + m[0, 2] * qz + m[0, 3]
            v = m[1, 0] * qx + m[1, 1] * qy + m[1, 2] * qz + m[1, 3]
            w = m[2, 0] * qx + m[2, 1] * qy + m[2, 2] * qz + m[2, 3]
            if inside_primitive(ptypes[p], pparams[p], u, v, w):
                cur = np.uint8(plabels[p])
        out[idx] = cur


@njit(cache=True, nogil=True)
def label_at(labels: np.ndarray, fx: float, fy: float, fz: float) -> int:
    """Label at continuous voxel index (fx, fy, fz): the label with the largest trilinear
    weight among the 8 neighbours (ties: first corner in i, j, k order). Clamped at edges.

    This is the arg-max of the trilinearly interpolated label indicators, so boundaries are
    smooth surfaces rather than voxel staircases.
    """
    nx, ny, nz = labels.shape
    i, tx = _cell(fx, nx)
    j, ty = _cell(fy, ny)
    k, tz = _cell(fz, nz)
    l0 = labels[i, j, k]
    l1 = labels[i, j, k + 1]
    l2 = labels[i, j + 1, k]
    l3 = labels[i, j + 1, k + 1]
    l4 = labels[i + 1, j, k]
    l5 = labels[i + 1, j, k + 1]
    l6 = labels[i + 1, j + 1, k]
    l7 = labels[i + 1, j + 1, k + 1]
    if l0 == l1 and l0 == l2 and l0 == l3 and l0 == l4 and l0 == l5 and l0 == l6 and l0 == l7:
        return l0
    ls = (l0, l1, l2, l3, l4, l5, l6, l7)
    sx, sy, sz = 1.0 - tx, 1.0 - ty, 1.0 - tz
    ws = (
        sx * sy * sz,
        sx * sy * tz,
        sx * ty * sz,
        sx * ty * tz,
        tx * sy * sz,
        tx * sy * tz,
        tx * ty * sz,
        tx * ty * tz,
    )
    best = int(l0)
    best_w = -1.0
    for c in range(8):
        s = 0.0
        for d in range(8):
            if ls[d] == ls[c]:
                s += ws[d]
        if s > best_w:
            best_w = s
            best = int(ls[c])
    return best


@njit(cache=True, nogil=True)
def indicator_at(labels: np.ndarray, fx: float, fy: float, fz: float, lab: int) -> float:
    """Trilinear interpolation of the indicator ``labels == lab`` (clamped at edges)."""
    nx, ny, nz = labels.shape
    i, tx = _cell(fx, nx)
    j, ty = _cell(fy, ny)
    k, tz = _cell(fz, nz)
    s = 0.0
    for di in range(2):
        wx = tx if di else 1.0 - tx
        for dj in range(2):
            wy = ty if dj else 1.0 - ty
            for dk in range(2):
                if labels[i + di, j + dj, k + dk] == lab:
                    s += wx * wy * (tz if dk else 1.0 - tz)
    return s


@njit(cache=True, nogil=True)
def _indicator_difference(
    labels: np.ndarray, fx: float, fy: float, fz: float, lab: int, prev: int
) -> float:
    return indicator_at(labels, fx, fy, fz, lab) - indicator_at(labels, fx, fy, fz, prev)


@njit(cache=True, nogil=True)
def interface_normal(
    labels: np.ndarray, fx: float, fy: float, fz: float, lab: int, prev: int
) -> tuple[float, float, float]:
    """Unnormalised normal (pointing from ``prev`` into ``lab``) of the interface near a
    continuous voxel index: the gradient of ``ind(lab) - ind(prev)`` by central differences
    over ±2 voxels, averaged over 5 transverse offsets (±1.5 voxels), so that voxel staircases
    average out to the surface they approximate."""
    g = np.zeros(3)
    for axis in range(3):
        for o in range(5):
            a = 0.0
            b = 0.0
            if o == 1:
                a = 1.5
            elif o == 2:
                a = -1.5
            elif o == 3:
                b = 1.5
            elif o == 4:
                b = -1.5
            # offsets along the two axes other than ``axis``
            if axis == 0:
                p = _indicator_difference(labels, fx + 2.0, fy + a, fz + b, lab, prev)
                m = _indicator_difference(labels, fx - 2.0, fy + a, fz + b, lab, prev)
            elif axis == 1:
                p = _indicator_difference(labels, fx + a, fy + 2.0, fz + b, lab, prev)
                m = _indicator_difference(labels, fx + a, fy - 2.0, fz + b, lab, prev)
            else:
                p = _indicator_difference(labels, fx + a, fy + b, fz + 2.0, lab, prev)
                m = _indicator_difference(labels, fx + a, fy + b, fz - 2.0, lab, prev)
            g[axis] += p - m
    return g[0], g[1], g[2]


_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M3 = np.uint64(0x165667B19E3779F9)
_M4 = np.uint64(0xBF58476D1CE4E5B9)
_M5 = np.uint64(0x94D049BB133111EB)


@njit(cache=True, nogil=True)
def hash_cell(ix: int, iy: int, iz: int, seed: np.uint64) -> np.uint64:
    """64-bit hash of an integer cell (splitmix64 finaliser): the scatterer of that cell."""
    h = seed ^ (np.uint64(ix) * _M1) ^ (np.uint64(iy) * _M2) ^ (np.uint64(iz) * _M3)
    h ^= h >> np.uint64(30)
    h *= _M4
    h ^= h >> np.uint64(27)
    h *= _M5
    h ^= h >> np.uint64(31)
    return h


@njit(cache=True, nogil=True)
def _deposit(out: np.ndarray, line: int, f: float, re: float, im: float) -> None:
    """Add a complex sample at fractional bin ``f`` (linear split between two bins)."""
    b = int(f)
    if b < 0 or b >= out.shape[1]:
        return
    frac = f - b
    out[line, b] += complex(re * (1.0 - frac), im * (1.0 - frac))
    if b + 1 < out.shape[1]:
        out[line, b + 1] += complex(re * frac, im * frac)


@njit(cache=True, nogil=True)
def trace_scanlines(
    labels: np.ndarray,
    grid_origin: np.ndarray,
    grid_spacing: float,
    texture: np.ndarray,
    tex_origin: np.ndarray,
    tex_spacing: float,
    impedance: np.ndarray,
    speed: np.ndarray,
    attenuation_db: np.ndarray,
    backscatter: np.ndarray,
    density: np.ndarray,
    texture_sigma: np.ndarray,
    roughness: np.ndarray,
    origins: np.ndarray,
    direction: np.ndarray,
    step_mm: float,
    n_steps: int,
    bin_mm: float,
    frequency_mhz: float,
    specular_exponent: float,
    scatter_cell_mm: float,
    seed: int,
    out: np.ndarray,
) -> None:
    """March the scanlines of one frame and accumulate the complex (IQ) echo signal.

    Parameters
    ----------
    labels
        (nx, ny, nz) uint8 tissue labels; voxel (i, j, k) at ``grid_origin + (i, j, k) *
        grid_spacing`` (spine mm, isotropic).
    texture
        Smooth unit-variance random field (slow echogenicity variation), its own grid.
    impedance .. roughness
        Per-label tables: Z (MRayl), c (m/s), α (dB/cm/MHz), backscatter, scatterer density,
        texture strength, interface roughness.
    origins
        (n_lines, n_sub, 3) start of each scanline (transducer face), spine mm; ``n_sub``
        sub-rays spread over the elevation beam width are summed into one line.
    direction
        (3,) unit beam direction, spine frame.
    step_mm, n_steps
        Marching step and count (physical distance).
    bin_mm
        Output sampling in *displayed* depth (time of flight at 1540 m/s).
    frequency_mhz
        Centre frequency (attenuation and the echo phase).
    specular_exponent
        Angular fall-off cos^m(θ) of a mirror-like interface echo.
    scatter_cell_mm
        Size of the cubic cells of the tissue-anchored scatterer field.
    seed
        Scatterer field seed.
    out
        (n_lines, n_bins) complex128, accumulated into (zero it first).

    Notes
    -----
    At each step: if the label changes, the interface echoes with amplitude
    ``I * r * [(1-ρ) cos^m θ + ρ cos² θ]`` (r = (Z2-Z1)/(Z2+Z1), θ from the interface normal,
    ρ the roughness) and the carried energy is multiplied by 1 - r²; the local tissue then
    scatters ``I * b * exp(σ t - σ²/2) * g`` with g a unit complex Gaussian drawn from the scatterer
    cell's hash; finally I is attenuated by 10^(-α f Δ/10) (round-trip amplitude). ``I`` is
    the round-trip amplitude factor (= one-way intensity).
    """
    n_lines = origins.shape[0]
    n_sub = origins.shape[1]
    dx, dy, dz = direction[0], direction[1], direction[2]
    inv_h = 1.0 / grid_spacing
    inv_th = 1.0 / tex_spacing
    inv_cell = 1.0 / scatter_cell_mm
    k2 = 4.0 * math.pi * frequency_mhz / _C0_MM_PER_S * 1000.0  # rad per mm of display depth
    max_f = out.shape[1] + 1.0
    useed = np.uint64(seed)
    scat_w = math.sqrt(step_mm / 0.05) / math.sqrt(n_sub)
    spec_w = 1.0 / n_sub
    n_lab = impedance.shape[0]
    att_step = np.empty(n_lab)
    c_ratio = np.empty(n_lab)
    for t in range(n_lab):
        att_step[t] = 10.0 ** (-attenuation_db[t] * frequency_mhz * step_mm / 100.0)
        c_ratio[t] = _C0_MM_PER_S / speed[t]
    two_pi = 2.0 * math.pi
    for line in range(n_lines):
        for sub in range(n_sub):
            ox, oy, oz = origins[line, sub, 0], origins[line, sub, 1], origins[line, sub, 2]
            energy = 1.0
            disp = 0.0
            fx = (ox - grid_origin[0]) * inv_h
            fy = (oy - grid_origin[1]) * inv_h
            fz = (oz - grid_origin[2]) * inv_h
            prev = label_at(labels, fx, fy, fz)
            for s in range(n_steps):
                t_mm = s * step_mm
                px = ox + dx * t_mm
                py = oy + dy * t_mm
                pz = oz + dz * t_mm
                fx = (px - grid_origin[0]) * inv_h
                fy = (py - grid_origin[1]) * inv_h
                fz = (pz - grid_origin[2]) * inv_h
                lab = label_at(labels, fx, fy, fz)
                f_bin = disp / bin_mm
                if f_bin >= max_f:
                    break
                if lab != prev:
                    z1 = impedance[prev]
                    z2 = impedance[lab]
                    r = (z2 - z1) / (z2 + z1)
                    gx, gy, gz = interface_normal(labels, fx, fy, fz, lab, prev)
                    gn = math.sqrt(gx * gx + gy * gy + gz * gz)
                    cos_t = 1.0
                    if gn > 1e-9:
                        cos_t = abs(gx * dx + gy * dy + gz * dz) / gn
                    rough = max(roughness[lab], roughness[prev])
                    ang = (1.0 - rough) * cos_t**specular_exponent + rough * cos_t * cos_t
                    amp = energy * r * ang * spec_w
                    phase = k2 * disp
                    _deposit(out, line, f_bin, amp * math.cos(phase), amp * math.sin(phase))
                    energy *= 1.0 - r * r
                    prev = lab
                b = backscatter[lab]
                if b > 0.0:
                    h = hash_cell(
                        math.floor(px * inv_cell),
                        math.floor(py * inv_cell),
                        math.floor(pz * inv_cell),
                        useed,
                    )
                    u_dens = float(h & np.uint64(0xFFFF)) / 65536.0
                    dens = density[lab]
                    if u_dens < dens:
                        u1 = (float(h >> np.uint64(40)) + 0.5) / 16777216.0
                        u2 = float((h >> np.uint64(16)) & np.uint64(0xFFFFFF)) / 16777216.0
                        mag = math.sqrt(-math.log(u1))
                        sig = texture_sigma[lab]
                        tex = 0.0
                        if sig > 0.0:
                            tex = trilinear(
                                texture,
                                (px - tex_origin[0]) * inv_th,
                                (py - tex_origin[1]) * inv_th,
                                (pz - tex_origin[2]) * inv_th,
                            )
                        a = (
                            energy
                            * b
                            * math.exp(sig * tex - 0.5 * sig * sig)
                            * mag
                            * scat_w
                            / math.sqrt(dens)
                        )
                        _deposit(
                            out, line, f_bin, a * math.cos(two_pi * u2), a * math.sin(two_pi * u2)
                        )
                energy *= att_step[lab]
                disp += step_mm * c_ratio[lab]
                if energy < 1e-9:
                    break


@njit(cache=True, nogil=True)
def psf_rows(
    rf: np.ndarray,
    bin_mm: float,
    row_depth_mm: np.ndarray,
    axial_sigma_mm: float,
    lateral_sigma_cols: np.ndarray,
    out: np.ndarray,
) -> None:
    """Convolve the IQ signal with the point-spread function and sample it at the image rows.

    Parameters
    ----------
    rf
        (n_lines, n_bins) complex IQ signal in display-depth bins of ``bin_mm``.
    row_depth_mm
        (n_rows,) displayed depth of each image row.
    axial_sigma_mm
        Axial Gaussian envelope σ of the pulse.
    lateral_sigma_cols
        (n_rows,) lateral Gaussian σ at each row, in scanlines (depth-dependent focusing).
    out
        (n_rows, n_lines) complex128: the filtered signal at each pixel (image layout).
    """
    n_lines, n_bins = rf.shape
    n_rows = row_depth_mm.shape[0]
    half_a = math.ceil(3.0 * axial_sigma_mm / bin_mm)
    tmp = np.zeros((n_rows, n_lines), dtype=np.complex128)
    for r in range(n_rows):
        center = row_depth_mm[r] / bin_mm
        b0 = max(0, math.floor(center) - half_a)
        b1 = min(n_bins - 1, math.floor(center) + half_a + 1)
        for b in range(b0, b1 + 1):
            d = (b - center) * bin_mm / axial_sigma_mm
            wgt = math.exp(-0.5 * d * d)
            for line in range(n_lines):
                tmp[r, line] += wgt * rf[line, b]
    for r in range(n_rows):
        sig = lateral_sigma_cols[r]
        half_l = math.ceil(3.0 * sig)
        wsum = 0.0
        for o in range(-half_l, half_l + 1):
            wsum += math.exp(-0.5 * (o / sig) ** 2)
        for line in range(n_lines):
            acc = 0j
            for o in range(-half_l, half_l + 1):
                c = line + o
                if c < 0 or c >= n_lines:
                    continue
                acc += math.exp(-0.5 * (o / sig) ** 2) * tmp[r, c]
            out[r, line] = acc / wsum
