"""Independent spine anatomy (label volume) for the outside evaluation of usnav.

World = RAS mm. Spine axis = S (z). Patient prone: posterior = -y (A negative).
Cord centre at (0, 0, z) with a slight sagittal curve.
"""

import numpy as np
from scipy import ndimage

# labels
(
    BG,
    MUSCLE,
    FAT,
    EPI_FAT,
    DURA,
    CSF,
    CORD,
    CENTRAL,
    TUMOR,
    CORTEX,
    MARROW,
    DISC,
    SALINE,
    LIGAMENT,
) = range(14)
NAMES = [
    "bg",
    "muscle",
    "fat",
    "epi_fat",
    "dura",
    "csf",
    "cord",
    "central",
    "tumor",
    "cortex",
    "marrow",
    "disc",
    "saline",
    "ligament",
]

SP = 0.45  # fine grid spacing mm
X0, X1 = -36.0, 36.0
Y0, Y1 = -54.0, 36.0
Z0, Z1 = -54.0, 54.0
SHAPE = (round((X1 - X0) / SP), round((Y1 - Y0) / SP), round((Z1 - Z0) / SP))
PITCH = 26.0
LEVELS = np.array([-2, -1, 0, 1, 2]) * PITCH  # vertebra centres (z)


def fine_affine():
    A = np.eye(4)
    A[:3, :3] *= SP
    A[:3, 3] = [X0 + SP / 2, Y0 + SP / 2, Z0 + SP / 2]
    return A


def cord_curve(z, p):
    return p["curve"] * (z / 50.0) ** 2  # y offset of the canal axis (mm)


def build_labels(p, surgical):
    """p: dict of anatomy parameters; surgical: laminectomy + saline + cord shift."""
    nx, ny, nz = SHAPE
    xs = X0 + SP / 2 + SP * np.arange(nx)
    ys = Y0 + SP / 2 + SP * np.arange(ny)
    zs = Z0 + SP / 2 + SP * np.arange(nz)
    lab = np.zeros(SHAPE, np.uint8)
    X, Y = np.meshgrid(xs, ys, indexing="ij")
    shift = np.array(p["cord_shift"]) if surgical else np.zeros(3)
    tc = np.array(p["tumor_c"]) + shift
    rng = np.random.default_rng(p["seed_anat"])
    # lobulation coefficients for the tumor surface
    lob = rng.normal(0, 0.12, size=(4, 2))
    for k, z in enumerate(zs):
        L = np.full(X.shape, MUSCLE, np.uint8)
        L[Y < -47] = FAT  # subcutaneous fat
        yc = cord_curve(z, p)
        # vertebra components
        for zk in LEVELS:
            dz = z - zk
            # body + disc
            body = (X / 16.0) ** 2 + ((Y - 24.0 - yc) / 14.0) ** 2 < 1
            if abs(dz) < 10.5:
                inner = (X / 14.6) ** 2 + ((Y - 24.0 - yc) / 12.6) ** 2 < 1
                L[body] = CORTEX
                if abs(dz) < 9.5:
                    L[body & inner] = MARROW
            elif abs(dz) < PITCH / 2 + 0.01:
                L[body] = DISC
            # pedicles
            if abs(dz) < 5.5:
                m = (np.abs(X) > 9.0) & (np.abs(X) < 15.5) & (-5 + yc < Y) & (11 + yc > Y)
                L[m] = CORTEX
            # transverse processes
            if abs(dz - 1) < 4.5:
                m = (np.abs(X) >= 14) & (np.abs(X) < 30) & (-10 + yc < Y) & (-3 + yc > Y)
                L[m] = CORTEX
            # laminae (shingled: posterior surface slopes with z)
            if abs(dz + 1.5) < 8.5:
                ytop = -14.0 + 0.12 * dz - 0.05 * np.abs(X) + yc
                m = (np.abs(X) < 17.5) & (ytop < Y) & (-3.0 + yc > Y)
                L[m] = CORTEX
            # spinous process sloping caudally
            zc = zk - 0.45 * np.clip(-(Y - yc) - 12, 0, None)
            m = (np.abs(X) < 2.6) & (-12 + yc > Y) & (-40 + yc < Y) & (np.abs(z - zc) < 4.0)
            L[m] = CORTEX
        # ligamentum flavum between laminae (posterior canal wall), interspinous ligament
        canal_outer = (X / 12.5) ** 2 + ((Y - 0.5 - yc) / 10.5) ** 2 < 1
        lig = (~canal_outer) & (np.abs(X) < 12) & (-11.5 + yc < Y) & (-3 + yc > Y) & (L == MUSCLE)
        L[lig] = LIGAMENT
        # canal contents
        canal = (X / 11.0) ** 2 + ((Y - 0.5 - yc) / 9.0) ** 2 < 1
        L[canal] = EPI_FAT
        # dural sac (dura thickness ~0.6 mm)
        Xs, Ys = X - shift[0], Y - shift[1] - yc
        zz = z - shift[2]
        sac_o = (Xs / 8.3) ** 2 + ((Ys - 0.3) / 7.1) ** 2 < 1
        sac_i = (Xs / 7.7) ** 2 + ((Ys - 0.3) / 6.5) ** 2 < 1
        L[sac_o] = DURA
        L[sac_i] = CSF
        # cord, locally expanded by the tumor
        sw = np.exp(-0.5 * ((zz - tc[2] + shift[2]) / (p["tumor_ax"][2] + 3)) ** 2)
        ca, cb = 5.0 + 1.6 * sw, 3.9 + 1.4 * sw
        cord = (Xs / ca) ** 2 + ((Ys + 0.6) / cb) ** 2 < 1
        L[cord] = CORD
        cen = (Xs / 0.7) ** 2 + ((Ys + 0.6) / 0.45) ** 2 < 1
        L[cen] = CENTRAL
        # tumor: lobulated ellipsoid
        ax = np.array(p["tumor_ax"])
        u = (X - tc[0]) / ax[0]
        v = (Y - tc[1] - yc) / ax[1]
        w = (z - tc[2]) / ax[2]
        if abs(w) < 1.3:
            ang = np.arctan2(v, u)
            r = np.sqrt(u**2 + v**2 + w**2)
            rr = (
                1
                + sum(
                    lob[i, 0] * np.cos((i + 2) * ang + 3 * w) + lob[i, 1] * np.sin((i + 1) * w * 2)
                    for i in range(4)
                )
                * 0.5
            )
            L[(r < rr) & cord] = TUMOR
        if surgical:
            zlo, zhi = p["lam_z"]
            if zlo <= z <= zhi:
                half = 11.0 + 0.35 * np.clip(-(Y - yc) - 8, 0, None)
                dura_top = -6.8 + yc + shift[1]
                cav = (
                    (np.abs(X - 0.0) < half)
                    & (dura_top - 0.2 > Y)
                    & (Y > -47)
                    & ~np.isin(L, [DURA, CSF, CORD, CENTRAL, TUMOR])
                )
                # keep lateral facets (bone with |x|>10.5 below y=-8)
                keep = (L == CORTEX) & (np.abs(X) > 10.5) & (-12 + yc < Y)
                cav &= ~keep
                L[cav] = SALINE
                # thin remaining epidural fat over the dura is removed; saline down to the dura
        lab[:, :, k] = L
    return lab


def tumor_surface_points(label_mri, affine, n=800, seed=0):
    m = label_mri > 0
    edge = m & ~ndimage.binary_erosion(m)
    idx = np.argwhere(edge)
    rng = np.random.default_rng(seed)
    if len(idx) > n:
        idx = idx[rng.choice(len(idx), n, replace=False)]
    pts = np.c_[idx, np.ones(len(idx))] @ affine.T
    return pts[:, :3]
