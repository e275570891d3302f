"""Independent tracked spinal-ultrasound case simulator (outside evaluation of usnav).

Usage: python sim.py OUTDIR FAMILY SEED [--mri-as-us]
"""

import json
import os
import sys

import anatomy as A
import nibabel as nib
import numpy as np
from scipy import ndimage, signal
from scipy.spatial.transform import Rotation as Rot

# tissue table: Z (MRayl), atten (dB/cm/MHz), scatter sigma, scatter density, T2 MRI intensity
TISSUE = {
    A.BG: (1.50, 0.0, 0.0, 0.0, 0.0),
    A.MUSCLE: (1.66, 1.0, 0.09, 0.5, 0.22),
    A.FAT: (1.38, 0.6, 0.06, 0.4, 0.80),
    A.EPI_FAT: (1.40, 0.6, 0.07, 0.5, 0.75),
    A.DURA: (1.72, 1.0, 0.35, 0.9, 0.12),
    A.CSF: (1.515, 0.002, 0.004, 0.05, 1.00),
    A.CORD: (1.60, 0.8, 0.035, 0.3, 0.42),
    A.CENTRAL: (1.64, 0.8, 0.35, 0.9, 0.55),
    A.TUMOR: (1.65, 0.9, 0.16, 0.7, 0.62),
    A.CORTEX: (6.5, 20.0, 0.25, 0.8, 0.04),
    A.MARROW: (3.0, 10.0, 0.2, 0.8, 0.45),
    A.DISC: (1.62, 1.0, 0.07, 0.5, 0.65),
    A.SALINE: (1.50, 0.002, 0.0, 0.0, 1.0),
    A.LIGAMENT: (1.75, 1.2, 0.2, 0.8, 0.10),
}
NT = max(TISSUE) + 1
tab = np.array([TISSUE[i] for i in range(NT)])

# image geometry (our own probe): 256 cols x 300 rows, 40 mm aperture, 45 mm depth
NCOL, NROW = 256, 300
SX, SY = 40.0 / NCOL, 45.0 / NROW


def family_params(family, rng):
    """Appearance / geometry families (ours)."""
    f = dict(
        freq=10.0,
        cycles=1.1,
        lat_sigma=(0.30, 0.65),
        elev=0.7,
        speckle=1.0,
        dens=1.0,
        bone_att=1.0,
        dr=55.0,
        gain=0.0,
        reverb=0.0,
        spec_m=2.0,
        noise=0.01,
        cord_shift=0.0,
        tgc_err=0.0,
    )
    if family == "base":
        pass
    elif family == "lowfreq":  # 7 MHz, wide beams
        f.update(freq=7.0, cycles=1.3, lat_sigma=(0.45, 0.95), elev=1.0)
    elif family == "hifreq":  # 12 MHz
        f.update(freq=12.0, cycles=1.0, lat_sigma=(0.22, 0.5), elev=0.55)
    elif family == "speckle":  # heavy speckle, weak specular, soft shadows, compressed gain
        f.update(speckle=2.2, dens=1.6, spec_m=4.0, bone_att=0.35, dr=42.0, gain=4.0)
    elif family == "reverb":  # reverberation + TGC error + noise
        f.update(reverb=0.35, tgc_err=0.35, noise=0.04, dr=60.0, gain=-3.0)
    elif family == "shift":  # cord/tumor shifted 1-2 mm between MRI and surgery
        f.update(cord_shift=1.0)
    f["freq"] *= rng.uniform(0.93, 1.07)
    return f


def hash_uniform(ix, iy, iz, salt):
    h = (
        (ix.astype(np.uint64) * np.uint64(73856093))
        ^ (iy.astype(np.uint64) * np.uint64(19349663))
        ^ (iz.astype(np.uint64) * np.uint64(83492791))
        ^ np.uint64(salt)
    )
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def rigid(R, t):
    M = np.eye(4)
    M[:3, :3] = R
    M[:3, 3] = t
    return M


def random_rigid(rng, tmax, degmax):
    R = Rot.from_rotvec(rng.normal(size=3) / np.sqrt(3) * np.deg2rad(degmax)).as_matrix()
    return rigid(R, rng.uniform(-tmax, tmax, 3))


def make_mri(lab_pre, rng, tumor_het):
    """T2-like MRI at 0.9 mm from the preoperative fine labels (0.45 mm): 2x2x2 block average."""
    I = tab[:, 4][lab_pre].astype(np.float32)
    tm = lab_pre == A.TUMOR
    I[tm] += (0.12 * tumor_het[tm]).astype(np.float32)
    # marrow heterogeneity, muscle texture
    I += ndimage.gaussian_filter(rng.normal(0, 0.05, I.shape).astype(np.float32), 1.5) * (
        lab_pre == A.MUSCLE
    )
    I = ndimage.gaussian_filter(I, 0.6)
    nx, ny, nz = I.shape
    Im = I.reshape(nx // 2, 2, ny // 2, 2, nz // 2, 2).mean(axis=(1, 3, 5))
    T = tm.astype(np.float32).reshape(nx // 2, 2, ny // 2, 2, nz // 2, 2).mean(axis=(1, 3, 5))
    # smooth bias field + Rician-ish noise
    xx = np.linspace(-1, 1, Im.shape[0])[:, None, None]
    zz = np.linspace(-1, 1, Im.shape[2])[None, None, :]
    Im = Im * (1 + 0.08 * xx + 0.06 * zz)
    Im = np.sqrt((Im + rng.normal(0, 0.02, Im.shape)) ** 2 + rng.normal(0, 0.02, Im.shape) ** 2)
    aff = np.eye(4)
    aff[:3, :3] *= 2 * A.SP
    aff[:3, 3] = [A.X0 + A.SP, A.Y0 + A.SP, A.Z0 + A.SP]
    return (Im * 1000).astype(np.int16), (T > 0.5).astype(np.uint8), aff


def sweep_poses(rng, n, tumor_c):
    """TransducerToMri per frame: transducer x = lateral, y = beam (depth), z = elevation."""
    length = rng.uniform(42, 58)
    zc = tumor_c[2] + rng.uniform(-6, 6)
    z = zc - length / 2 + length * np.linspace(0, 1, n) ** 1.0
    z += np.cumsum(rng.normal(0, 0.04, n))  # jerky speed

    def smooth_noise(sd, corr):
        x = ndimage.gaussian_filter1d(rng.normal(0, 1, n + 60), corr)[30:-30]
        return sd * x / (x.std() + 1e-9)

    lean = rng.uniform(-8, 8)  # constant lean along the sweep (deg, about x)
    tilt_x = lean + smooth_noise(2.0, 10)
    roll_z = rng.uniform(-4, 4) + smooth_noise(2.0, 12)  # lateral rocking (about spine axis)
    spin_y = rng.uniform(-5, 5) + smooth_noise(1.5, 15)  # rotation about the beam
    xoff = rng.uniform(-2, 2) + smooth_noise(1.0, 15)
    yface = -30.0 + rng.uniform(-3, 2) + smooth_noise(0.4, 8)
    poses = []
    for i in range(n):
        R = Rot.from_euler("zxy", [roll_z[i], tilt_x[i], spin_y[i]], degrees=True).as_matrix()
        poses.append(rigid(R, [xoff[i], yface[i], z[i]]))
    return poses


def image_to_transducer():
    S = np.eye(4)
    S[0, 0] = SX
    S[0, 3] = -(NCOL - 1) / 2 * SX
    S[1, 1] = SY
    S[2, 2] = (SX + SY) / 2
    return S


def simulate_frames(lab, zs_vol, gm_vol, het_vol, poses, fp, seed, mri_as_us=None):
    f0 = fp["freq"]
    lam = 1.54 / f0
    ds = 0.03
    depth = np.arange(0, 45.0 + 1e-9, ds)
    nl = 150
    xl = np.linspace(-20, 20, nl)
    elev = np.array([-1, 0, 1]) * fp["elev"]
    ew = np.exp(-0.5 * (elev / (fp["elev"] * 1.1)) ** 2)
    inv_aff = np.linalg.inv(A.fine_affine())
    # pulse (depth domain, round trip): Gabor
    sig_a = fp["cycles"] * lam / 2 / 2.355 * 2.0
    tp = np.arange(-4 * sig_a, 4 * sig_a + ds, ds)
    pulse = np.exp(-0.5 * (tp / sig_a) ** 2) * np.cos(2 * np.pi * tp / (lam / 2))
    _Ztab, att, ssig, sden = (
        tab[:, 0],
        tab[:, 1].copy(),
        tab[:, 2] * fp["speckle"],
        np.clip(tab[:, 3] * fp["dens"], 0, 1),
    )
    att[[A.CORTEX, A.MARROW]] *= fp["bone_att"]
    rng = np.random.default_rng(seed + 7)
    frames = []
    # TGC curve (nominal soft tissue 0.6 dB/cm/MHz; family error)
    tgc_db = 2 * 0.6 * f0 * depth / 10 * (1 + fp["tgc_err"] * np.sin(depth / 9.0))
    focus = rng.uniform(18, 28)
    wlat = np.clip(np.abs(depth - focus) / 22, 0, 1)[:, None]
    for pose in poses:
        # points: (nelev, nl, nd)
        P = np.zeros((len(elev), nl, len(depth), 3))
        P[..., 0] = xl[None, :, None]
        P[..., 1] = depth[None, None, :]
        P[..., 2] = elev[:, None, None]
        W = P @ pose[:3, :3].T + pose[:3, 3]
        V = W @ inv_aff[:3, :3].T + inv_aff[:3, 3]
        if mri_as_us is not None:
            continue
        Vi = np.rint(V).astype(np.int64)
        for d in range(3):
            np.clip(Vi[..., d], 0, A.SHAPE[d] - 1, out=Vi[..., d])
        L = lab[Vi[..., 0], Vi[..., 1], Vi[..., 2]]
        coords = V.reshape(-1, 3).T
        Z = ndimage.map_coordinates(zs_vol, coords, order=1, mode="nearest").reshape(L.shape)
        G = ndimage.map_coordinates(gm_vol, coords, order=1, mode="nearest").reshape(L.shape)
        H = het_vol[Vi[..., 0], Vi[..., 1], Vi[..., 2]]
        dZ = np.gradient(Z, ds, axis=2)
        cosang = np.clip(np.abs(dZ) / (G + 1e-6), 0, 1)
        spec = dZ * ds / (2 * Z) * cosang ** fp["spec_m"]
        # diffuse scatterers fixed in tissue (hash of a 0.05 mm cell)
        cell = np.floor(W / 0.05).astype(np.int64)
        hu = hash_uniform(cell[..., 0], cell[..., 1], cell[..., 2], 12345) * float(1 << 48)
        hi = hu.astype(np.int64)
        u1 = ((hi & 0xFFFF) + 0.5) / 65536.0
        u2 = (((hi >> 16) & 0xFFFF) + 0.5) / 65536.0
        u3 = (((hi >> 32) & 0xFFFF) + 0.5) / 65536.0
        g = np.sqrt(-2 * np.log(u1 + 1e-12)) * np.cos(2 * np.pi * u2)
        amp = ssig[L] * (u3 < sden[L]) * g * 0.045
        tum = L == A.TUMOR
        amp[tum] *= 1 + 0.9 * H[tum]
        # attenuation (round trip) + transmission loss at strong interfaces
        a_np = att[L] * f0 * ds / 10 / 8.686  # nepers per sample (one way)
        r_i = dZ * ds / (2 * Z)
        # a smoothed interface spreads R over ~n_eff samples: sum r_i^2 ~ R^2/n_eff; two-way loss 2*R^2
        n_eff = 2.5 * 0.35 / ds
        logT = np.cumsum(-2 * a_np - 2 * n_eff * r_i**2, axis=2)
        trans = np.exp(logT)
        rf_src = (spec + amp) * trans
        rf = np.tensordot(ew, rf_src, axes=(0, 0))  # elevation beam (coherent sum)
        if fp["reverb"] > 0:
            idx = np.arange(len(depth)) // 2
            rf = rf + fp["reverb"] * (-1) * rf[:, idx] * np.exp(-depth / 30.0)[None, :]
        rf = signal.fftconvolve(rf, pulse[None, :], mode="same", axes=1)
        # lateral beam: depth-dependent Gaussian across lines
        dl = xl[1] - xl[0]
        r1 = ndimage.gaussian_filter1d(rf, fp["lat_sigma"][0] / dl, axis=0)
        r2 = ndimage.gaussian_filter1d(rf, fp["lat_sigma"][1] / dl, axis=0)
        rf = r1 * (1 - wlat.T) + r2 * wlat.T
        env = np.abs(signal.hilbert(rf, axis=1))
        env = env * 10 ** (tgc_db / 20)[None, :]
        env = env + fp["noise"] * 0.01 * np.abs(
            rng.normal(size=env.shape) + 1j * rng.normal(size=env.shape)
        )
        frames.append(env)
    return frames, depth, xl


def to_bmode(env_frames, depth, xl, fp):
    ref = np.percentile(np.concatenate([e.ravel() for e in env_frames[::10]]), 99.7)
    out = []
    rows = np.arange(NROW) * SY
    cols = (np.arange(NCOL) - (NCOL - 1) / 2) * SX
    for env in env_frames:
        # decimate along depth by box averaging then interpolate
        k = round(SY / (depth[1] - depth[0]))
        e = ndimage.uniform_filter1d(env, k, axis=1)
        db = 20 * np.log10(e / ref + 1e-9) + fp["gain"]
        im = np.clip((db + fp["dr"]) / fp["dr"], 0, 1) * 255
        ri = rows / (depth[1] - depth[0])
        ci = (cols - xl[0]) / (xl[1] - xl[0])
        C, R_ = np.meshgrid(ci, ri)
        img = ndimage.map_coordinates(im, [C.ravel(), R_.ravel()], order=1).reshape(NROW, NCOL)
        out.append(img.astype(np.uint8))
    return out


def fmt(M):
    return " ".join(f"{v:.9g}" for v in M.ravel())


def write_mha(path, frames, p2t, r2t, ts):
    n = len(frames)
    hdr = [
        "ObjectType = Image",
        "NDims = 3",
        "AnatomicalOrientation = RAI",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        "CenterOfRotation = 0 0 0",
        "CompressedData = False",
        f"DimSize = {NCOL} {NROW} {n}",
        "ElementNumberOfChannels = 1",
        "ElementSpacing = 1 1 1",
        "ElementType = MET_UCHAR",
        "Kinds = domain domain list",
        "Offset = 0 0 0",
        "TransformMatrix = 1 0 0 0 1 0 0 0 1",
        "UltrasoundImageOrientation = MFA",
        "UltrasoundImageType = BRIGHTNESS",
    ]
    for i in range(n):
        s = f"Seq_Frame{i:04d}_"
        hdr += [
            f"{s}FrameNumber = {i}",
            f"{s}ProbeToTrackerTransform = {fmt(p2t[i])}",
            f"{s}ProbeToTrackerTransformStatus = OK",
            f"{s}ReferenceToTrackerTransform = {fmt(r2t[i])}",
            f"{s}ReferenceToTrackerTransformStatus = OK",
            f"{s}Timestamp = {ts[i]:.4f}",
            f"{s}UnfilteredTimestamp = {ts[i]:.4f}",
            f"{s}ImageStatus = OK",
        ]
    hdr.append("ElementDataFile = LOCAL")
    with open(path, "wb") as fh:
        fh.write(("\n".join(hdr) + "\n").encode())
        fh.write(np.stack(frames).astype(np.uint8).tobytes())


def save_mat(path, M, comment=""):
    with open(path, "w") as fh:
        if comment:
            fh.write(f"# {comment}\n")
        for r in M:
            fh.write(" ".join(f"{v:.10g}" for v in r) + "\n")


def make_case(out, family, seed, mri_as_us=False, nframes=120):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(seed)
    fp = family_params(family.split("+")[0], rng)
    postmri = family.endswith(
        "+postmri"
    )  # ablation: MRI drawn from the surgical geometry (laminectomy, fluid-filled cavity)
    tumor_len = rng.uniform(10, 25)
    tumor_c = [rng.uniform(-0.8, 0.8), rng.uniform(-1.2, 0.0), rng.uniform(-6, 6)]
    shift = [0.0, 0.0, 0.0]
    if fp["cord_shift"] > 0:
        v = rng.normal(size=3)
        v[2] *= 0.7
        v /= np.linalg.norm(v)
        shift = list(v * rng.uniform(1.0, 2.0))
    zlo = rng.uniform(-36, -28)
    zhi = rng.uniform(26, 36)
    p = dict(
        curve=rng.uniform(-3, 3),
        cord_shift=shift,
        tumor_c=tumor_c,
        tumor_ax=[rng.uniform(2.4, 3.4), rng.uniform(2.0, 2.8), tumor_len / 2],
        seed_anat=seed,
        lam_z=[zlo, zhi],
    )
    if postmri:
        lab_pre = A.build_labels(dict(p, cord_shift=[0.0, 0.0, 0.0]), surgical=True)
    else:
        lab_pre = A.build_labels(p, surgical=False)
    het = ndimage.gaussian_filter(rng.normal(0, 1, A.SHAPE).astype(np.float32), 2.0)
    het /= het.std() + 1e-9
    mri, tlab, aff = make_mri(lab_pre, rng, het)
    nib.save(nib.Nifti1Image(mri, aff), f"{out}/mri.nii.gz")
    nib.save(nib.Nifti1Image(tlab, aff), f"{out}/tumor_label.nii.gz")
    lab = A.build_labels(p, surgical=True)
    poses = sweep_poses(rng, nframes, np.array(tumor_c))
    # calibration: our probe marker frame. TransducerToProbe: marker 110 mm up the handle, oddly rotated
    T2P = rigid(Rot.from_euler("xyz", [95, -3, 178], degrees=True).as_matrix(), [12.0, -110.0, 6.5])
    I2T = image_to_transducer()
    I2P = T2P @ I2T
    # truth ReferenceToMri: reference marker clamped ~ 150 mm cranial to the wound
    R2M = rigid(
        Rot.from_rotvec(rng.normal(size=3) * 0.8).as_matrix(),
        [rng.uniform(-60, 60), rng.uniform(-120, -60), rng.uniform(120, 180)],
    )
    # ReferenceToTracker: camera ~1.5 m away
    R2T = rigid(
        Rot.from_rotvec(rng.normal(size=3) * 1.2).as_matrix(),
        [rng.uniform(-200, 200), rng.uniform(-200, 200), rng.uniform(-1600, -1300)],
    )
    M2R = np.linalg.inv(R2M)
    p2t, r2t = [], []
    for P in poses:
        P_true = R2T @ M2R @ P @ np.linalg.inv(T2P)
        # tracking jitter on recorded poses (~0.1 mm, 0.05 deg)
        J = rigid(
            Rot.from_rotvec(rng.normal(0, np.deg2rad(0.05), 3)).as_matrix(), rng.normal(0, 0.08, 3)
        )
        p2t.append(P_true @ J)
        Jr = rigid(
            Rot.from_rotvec(rng.normal(0, np.deg2rad(0.02), 3)).as_matrix(), rng.normal(0, 0.04, 3)
        )
        r2t.append(R2T @ Jr)
    ts = 12.5 + np.arange(nframes) * 0.05 + rng.normal(0, 0.002, nframes)
    if mri_as_us:
        # trivial test: reslice the MRI at the true pixel positions
        Mi = np.linalg.inv(aff)
        frames = []
        rr, cc = np.meshgrid(np.arange(NROW), np.arange(NCOL), indexing="ij")
        pix = np.stack([cc.ravel(), rr.ravel(), np.zeros(cc.size), np.ones(cc.size)])
        for P in poses:
            w = Mi @ P @ I2T @ pix
            v = ndimage.map_coordinates(mri.astype(np.float32), w[:3], order=1, mode="constant")
            frames.append(np.clip(v / 4.0, 0, 255).reshape(NROW, NCOL).astype(np.uint8))
    else:
        Zvol = tab[:, 0][lab].astype(np.float32)
        zs_vol = ndimage.gaussian_filter(Zvol, 0.35 / A.SP)
        gx, gy, gz = np.gradient(zs_vol, A.SP)
        gm_vol = np.sqrt(gx**2 + gy**2 + gz**2).astype(np.float32)
        del gx, gy, gz
        env, depth, xl = simulate_frames(lab, zs_vol, gm_vol, het, poses, fp, seed)
        frames = to_bmode(env, depth, xl, fp)
    write_mha(f"{out}/sweep.igs.mha", frames, p2t, r2t, ts)
    save_mat(f"{out}/cal.txt", I2P)  # usnav refuses comments in a 16-number calibration
    save_mat(f"{out}/truth.txt", R2M, "true ReferenceToMri")
    # init: truth perturbed by rotation about the tumour centre + translation
    tc_mri = np.array(tumor_c)
    ang = rng.uniform(3, 8)
    ax = rng.normal(size=3)
    ax /= np.linalg.norm(ax)
    tv = rng.normal(size=3)
    tv /= np.linalg.norm(tv)
    tv *= rng.uniform(4, 8)
    Rp = Rot.from_rotvec(ax * np.deg2rad(ang)).as_matrix()
    Pert = rigid(np.eye(3), tc_mri + tv) @ rigid(Rp, [0, 0, 0]) @ rigid(np.eye(3), -tc_mri)
    init = Pert @ R2M
    save_mat(
        f"{out}/init.txt",
        init,
        f"truth perturbed: {np.linalg.norm(tv):.2f} mm, {ang:.2f} deg about the tumor centre",
    )
    meta = dict(
        family=family,
        seed=seed,
        fp=fp,
        anatomy=p,
        pert_mm=float(np.linalg.norm(tv)),
        pert_deg=float(ang),
        tumor_c=tumor_c,
        cord_shift=shift,
        mri_as_us=mri_as_us,
    )
    json.dump(meta, open(f"{out}/meta.json", "w"), indent=1)
    np.save(f"{out}/poses_TransducerToMri.npy", np.array(poses))
    write_removed(out, p, aff)
    return meta


def write_removed(out, p, aff):
    """Tissue removed by the laminectomy (s21 addition; runs after everything else, uses no rng).

    Fine-grid voxels where the surgical labels without cord shift differ from the preoperative
    labels, restricted to voxels that became saline (the cavity); downsampled to the MRI grid
    exactly like the tumour label in make_mri (2x2x2 block mean > 0.5).
    """
    pre = A.build_labels(dict(p), surgical=False)
    post = A.build_labels(dict(p, cord_shift=[0.0, 0.0, 0.0]), surgical=True)
    diff = pre != post
    rem = diff & (post == A.SALINE)
    n_other = int((diff & ~rem).sum())
    nx, ny, nz = rem.shape
    R = rem.astype(np.float32).reshape(nx // 2, 2, ny // 2, 2, nz // 2, 2).mean(axis=(1, 3, 5))
    Rl = (R > 0.5).astype(np.uint8)
    nib.save(nib.Nifti1Image(Rl, aff), f"{out}/removed_label.nii.gz")
    # s21: only the removed bone (laminae, spinous processes): what a planner segments in the MRI
    bone = np.isin(pre, [A.NAMES.index("cortex"), A.NAMES.index("marrow")])
    Rb = (rem & bone).astype(np.float32).reshape(nx // 2, 2, ny // 2, 2, nz // 2, 2)
    Rb = (Rb.mean(axis=(1, 3, 5)) > 0.5).astype(np.uint8)
    nib.save(nib.Nifti1Image(Rb, aff), f"{out}/removed_bone.nii.gz")
    # s21: the label drawn 2 mm off along the spine (z, the MRI grid's third axis)
    shift = np.roll(Rl, round(2.0 / (2 * A.SP)), axis=2)  # 2 voxels: 1.8 mm
    nib.save(nib.Nifti1Image(shift, aff), f"{out}/removed_shift2.nii.gz")
    removed_pre = {A.NAMES[i]: int(((pre == i) & rem).sum()) for i in range(len(A.NAMES))}
    info = dict(
        lam_z=[float(v) for v in p["lam_z"]],
        voxels=int(Rl.sum()),
        voxel_mm=2 * A.SP,
        volume_mm3=float(Rl.sum() * (2 * A.SP) ** 3),
        fine_voxels=int(rem.sum()),
        fine_diff_not_saline=n_other,
        fine_removed_by_pre_label={k: v for k, v in removed_pre.items() if v},
    )
    json.dump(info, open(f"{out}/removed_meta.json", "w"), indent=1)


if __name__ == "__main__":
    make_case(sys.argv[1], sys.argv[2], int(sys.argv[3]), mri_as_us="--mri-as-us" in sys.argv)
