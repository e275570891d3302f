"""Session 37 (helper case24): RESECT Case 24 as an outside evaluator would cut it.

An independent re-slicer (scipy ``map_coordinates``, its own probe model, its own MetaIO
writer, its own tag-file reader and perturbations; nothing of ``usnav`` is imported, except
for the ``similarity`` step's scoring) that makes
freehand-like 2D sweeps from Case 24's 3D ultrasound with geometry unlike the benchmark's
(``usnav.registration.cases.slice_sweep``: 0.3 mm pixels, full-volume frames, depth along the
volume's axis 0, lateral along axis 1, a straight sweep along axis 2 with ±3° wobble), writes
them as PLUS sequence files with a tracker (``ProbeToTracker`` + ``ReferenceToTracker``) and a
probe calibration whose ``ImageToProbe`` is a mounted marker's (not the pixel size only), makes
initial ``ReferenceToMri`` 3–8 mm / 3–8° off, runs ``usnav register`` exactly as its CLI states
and scores each result by the 16 expert landmarks.

Usage (from the worktree, venv on PATH)::

    python notes/session37_case24_sweeps.py make  DIR            # sweeps, inits, regridded MRI
    python notes/session37_case24_sweeps.py run   DIR [--set NAME] [--no-config] [--regridded]
    python notes/session37_case24_sweeps.py table DIR [--set NAME]
    python notes/session37_case24_sweeps.py control DIR     # the benchmark's sweeps, same CLI
    python notes/session37_case24_sweeps.py similarity DIR  # similarity at truth vs candidate

Sets: ``main`` (same-grid MRI, ``--config`` with ``ignore_zero_pixels = true`` as
docs/evaluation.md asks for frames cut from a volume), ``regrid`` (``--regridded``: the MRI
resampled here on a rotated 0.6 mm grid), ``noconfig`` (``--no-config``: the CLI with no
options file, as ``usnav register --help`` alone would lead one to run it).

Seeds: sweep ``k`` (0..3) uses tremor seed ``3700 + k`` (``--tremor-seed``); its
perturbations come from ``numpy.random.default_rng(3724 + k)``, four each. The navigation
alignment (identity, 1.10 mm mTRE) is also run unperturbed on every sweep (the "do no harm"
start).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

DATA = Path(os.environ.get("USNAV_TEST_DATA", "/work/shared/data")) / "resect" / "case24"
US_FILE = DATA / "Case24-US-before_0p5mm.nii.gz"
MRI_FILE = DATA / "Case24-T1_resliced-to-US_0p5mm.nii.gz"
TAG_FILE = DATA / "Case24-MRI-beforeUS.tag"
FPS = 30.0


# ----------------------------------------------------------------------------- landmarks


def read_tag(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """MNI tag file → (mri, us) points, each (N, 3) mm. Own parser: after ``Points =`` each
    row is ``x_mri y_mri z_mri x_us y_us z_us`` and optional quoted labels, ``;`` ends it."""
    text = path.read_text()
    body = text.split("Points =", 1)[1].split(";", 1)[0]
    rows = []
    for line in body.strip().splitlines():
        nums = [float(t) for t in line.split()[:6]]
        rows.append(nums)
    a = np.array(rows)
    return a[:, :3], a[:, 3:6]


def mtre(reference_to_mri: np.ndarray, us_pts: np.ndarray, mri_pts: np.ndarray) -> float:
    """Mean over the landmarks of |ReferenceToMri · p_us − p_mri|, mm."""
    mapped = us_pts @ reference_to_mri[:3, :3].T + reference_to_mri[:3, 3]
    return float(np.linalg.norm(mapped - mri_pts, axis=1).mean())


def landmark_fit(us_pts: np.ndarray, mri_pts: np.ndarray) -> np.ndarray:
    """Least-squares rigid US → MRI from the landmarks (Kabsch), 4×4."""
    cu, cm = us_pts.mean(0), mri_pts.mean(0)
    h = (us_pts - cu).T @ (mri_pts - cm)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    r = vt.T @ np.diag([1, 1, d]) @ u.T
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = cm - r @ cu
    return m


# ----------------------------------------------------------------------------- geometry


def rigid(euler_deg, translation, seq: str = "zyx") -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = Rotation.from_euler(seq, euler_deg, degrees=True).as_matrix()
    m[:3, 3] = translation
    return m


def rot(axis: np.ndarray, deg: float) -> np.ndarray:
    axis = np.asarray(axis, float)
    return Rotation.from_rotvec(np.radians(deg) * axis / np.linalg.norm(axis)).as_matrix()


@dataclass
class Probe:
    """A linear probe: image ``width_mm`` × ``depth_mm`` at ``pixel_mm``; its tracked marker
    sits at ``mount`` (rigid: true probe frame → marker frame)."""

    name: str
    width_mm: float
    depth_mm: float
    pixel_mm: float
    mount: np.ndarray

    @property
    def cols(self) -> int:
        return round(self.width_mm / self.pixel_mm)

    @property
    def rows(self) -> int:
        return round(self.depth_mm / self.pixel_mm)

    def image_to_probe_true(self) -> np.ndarray:
        """Pixel (col, row, 0) → true probe frame (origin mid-transducer, x lateral, y beam)."""
        p = self.pixel_mm
        m = np.diag([p, p, p, 1.0])
        m[0, 3] = -(self.cols - 1) / 2 * p
        return m

    def image_to_probe(self) -> np.ndarray:
        """What the calibration file states: pixel → the tracked marker's frame."""
        return self.mount @ self.image_to_probe_true()


def smooth_noise(rng: np.random.Generator, n: int, amp: float, corr_frames: float) -> np.ndarray:
    """Band-limited noise scaled to peak ``amp`` (hand tremor: 3–10 Hz at 30 fps)."""
    x = rng.normal(size=n + 40)
    x = ndimage.gaussian_filter1d(x, corr_frames)[20:-20]
    return amp * x / np.max(np.abs(x))


def tremor(rng: np.random.Generator, n: int, mm: float = 0.5, deg: float = 1.0) -> list:
    """Per frame (translation mm (3,), rotation vector deg (3,)), peak ±mm / ±deg per axis."""
    t = np.stack([smooth_noise(rng, n, mm, 1.2) for _ in range(3)], 1)
    r = np.stack([smooth_noise(rng, n, deg, 1.2) for _ in range(3)], 1)
    return list(zip(t, r, strict=True))


@dataclass
class Sweep:
    name: str
    probe: Probe
    poses: np.ndarray  # (n, 4, 4) true probe frame → Reference (US world)
    description: str
    invalid: tuple[int, ...] = ()


class VolumeFrame:
    """Unit directions of the US volume's axes in world mm and a few landmarks of the grid."""

    def __init__(self, img: nib.Nifti1Image):
        self.affine = img.affine
        a = img.affine[:3, :3]
        self.shape = np.array(img.shape)
        self.spacing = np.linalg.norm(a, axis=0)
        self.d = [a[:, i] / self.spacing[i] for i in range(3)]  # d0: depth (fan apex at 0)

    def world(self, ijk) -> np.ndarray:
        return (self.affine @ np.r_[np.asarray(ijk, float), 1.0])[:3]


def pose(contact, lateral, beam) -> np.ndarray:
    """True probe frame → Reference: origin at the contact point, x lateral, y along the beam."""
    lateral = np.asarray(lateral, float)
    beam = np.asarray(beam, float)
    beam = beam - lateral * (lateral @ beam)
    beam /= np.linalg.norm(beam)
    lateral /= np.linalg.norm(lateral)
    m = np.eye(4)
    m[:3, 0] = lateral
    m[:3, 1] = beam
    m[:3, 2] = np.cross(lateral, beam)
    m[:3, 3] = contact
    return m


def with_tremor(p: np.ndarray, t_mm, r_deg) -> np.ndarray:
    """Apply a small hand motion about the contact point (the tracker sees it: it is motion)."""
    q = p.copy()
    q[:3, :3] = Rotation.from_rotvec(np.radians(r_deg)).as_matrix() @ p[:3, :3]
    q[:3, 3] = p[:3, 3] + t_mm
    return q


def make_sweeps(vf: VolumeFrame, tremor_seed: int = 3700) -> list[Sweep]:
    d0, d1, d2 = vf.d
    c = (vf.shape - 1) / 2.0
    top = vf.world([4.0, c[1], c[2]])  # 2 mm below the fan's apex row: the probe face
    sweeps = []

    # A: lateral along axis 2 (the original acquisition's plane), slow straight sweep along
    #    axis 1, 0.3 mm/frame, 150 frames (45 mm), 40 mm wide / 55 mm deep, 0.35 mm pixels
    rng = np.random.default_rng(tremor_seed + 0)
    probe = Probe("L40", 40.0, 55.0, 0.35, rigid([88.0, -3.0, 179.0], [11.5, -38.0, 6.0]))
    n = 150
    tr = tremor(rng, n)
    s = (np.arange(n) - (n - 1) / 2) * 0.3
    poses = [with_tremor(pose(top + d1 * s[f], d2, d0), *tr[f]) for f in range(n)]
    sweeps.append(
        Sweep(
            "A-linear-slow",
            probe,
            np.array(poses),
            "lateral ∥ axis 2, sweep ∥ axis 1, "
            "0.30 mm/frame, 150 frames, 40×55 mm, 0.35 mm px, tremor ±0.5 mm/±1°",
        )
    )

    # B: probe turned 45° about the beam, beam tilted 15° towards the sweep and 8° in-plane,
    #    sweep along the diagonal, 0.4 mm/frame, 110 frames (44 mm), 50 × 45 mm, 0.30 mm px
    rng = np.random.default_rng(tremor_seed + 1)
    probe = Probe("L50", 50.0, 45.0, 0.30, rigid([-92.0, 4.0, 2.0], [-6.0, 25.0, -14.0]))
    n = 110
    tr = tremor(rng, n)
    lat = rot(d0, 45.0) @ d2
    elev = np.cross(lat, d0)
    beam = rot(lat, 15.0) @ (rot(elev, 8.0) @ d0)
    s = (np.arange(n) - (n - 1) / 2) * 0.4
    start = top - beam * 3.0  # the tilted face sits a little higher
    poses = [with_tremor(pose(start + elev * s[f], lat, beam), *tr[f]) for f in range(n)]
    sweeps.append(
        Sweep(
            "B-tilted-diagonal",
            probe,
            np.array(poses),
            "lateral 45° between axes 1/2, "
            "beam tilted 15° along the sweep + 8° in plane, 0.40 mm/frame, 110 frames, "
            "50×45 mm, 0.30 mm px, tremor",
        )
    )

    # C: fan sweep: contact point fixed at the top, lateral along axis 1, the probe rocked
    #    about its lateral axis from −24° to +24° (0.3°/frame: 0.26 mm/frame at 50 mm deep),
    #    160 frames, 30 mm wide / 70 mm deep, 0.40 mm px
    rng = np.random.default_rng(tremor_seed + 2)
    probe = Probe("C30", 30.0, 70.0, 0.40, rigid([178.0, 2.0, -91.0], [0.0, -55.0, 20.0]))
    n = 160
    tr = tremor(rng, n)
    ang = np.linspace(-24.0, 24.0, n)
    poses = [with_tremor(pose(top, d1, rot(d1, ang[f]) @ d0), *tr[f]) for f in range(n)]
    sweeps.append(
        Sweep(
            "C-fan",
            probe,
            np.array(poses),
            "fan: contact fixed, lateral ∥ axis 1, rocked "
            "−24°..+24° about it (0.26 mm/frame at 50 mm), 160 frames, 30×70 mm, 0.40 mm px, "
            "tremor",
        )
    )

    # D: back-and-forth over one half of the volume only (partial coverage), fast and uneven
    #    (0.6–1.5 mm/frame), probe turned −20° about the beam, 100 frames, 35 × 60 mm,
    #    0.45 mm px; two tracker drop-outs (INVALID)
    rng = np.random.default_rng(tremor_seed + 3)
    probe = Probe("L35", 35.0, 60.0, 0.45, rigid([5.0, 91.0, 0.0], [30.0, 4.0, -9.0]))
    n = 100
    tr = tremor(rng, n)
    lat = rot(d0, -20.0) @ d2
    elev = np.cross(lat, d0)
    speed = 1.05 + 0.45 * np.sin(np.linspace(0, 7 * np.pi, n) + 0.3)
    lo, hi = -4.0, 22.0  # mm along the sweep from the centre: one side only
    pos, x, direction = [], lo + 2.0, 1.0
    for f in range(n):
        pos.append(x)
        x += direction * speed[f]
        if x > hi or x < lo:
            direction = -direction
            x = min(max(x, lo), hi)
    poses = [with_tremor(pose(top + elev * pos[f], lat, d0), *tr[f]) for f in range(n)]
    sweeps.append(
        Sweep(
            "D-back-forth-partial",
            probe,
            np.array(poses),
            "back and forth over −4..+22 mm "
            "(one half), 0.6–1.5 mm/frame, lateral −20° from axis 2, 100 frames, 35×60 mm, "
            "0.45 mm px, tremor, frames 37 and 38 tracker INVALID",
            invalid=(37, 38),
        )
    )
    return sweeps


# ----------------------------------------------------------------------------- re-slicing


def cut(us: np.ndarray, vf: VolumeFrame, sw: Sweep) -> np.ndarray:
    """(n, rows, cols) uint8 frames, trilinear, 0 outside the volume."""
    w2v = np.linalg.inv(vf.affine)
    cols, rows = np.meshgrid(np.arange(sw.probe.cols), np.arange(sw.probe.rows))
    pix = np.stack([cols.ravel(), rows.ravel(), np.zeros(cols.size), np.ones(cols.size)])
    out = np.zeros((len(sw.poses), sw.probe.rows, sw.probe.cols), np.uint8)
    i2p = sw.probe.image_to_probe_true()
    for f, p in enumerate(sw.poses):
        vox = (w2v @ p @ i2p @ pix)[:3]
        v = ndimage.map_coordinates(us, vox, order=1, mode="constant", cval=0.0)
        out[f] = np.clip(np.round(v), 0, 255).reshape(sw.probe.rows, sw.probe.cols)
    return out


# ----------------------------------------------------------------------------- writing


def fmt(m: np.ndarray) -> str:
    return " ".join(f"{v:.10g}" for v in np.asarray(m, float).ravel())


def write_igs_mha(path: Path, frames: np.ndarray, fields: list[dict[str, str]]) -> None:
    """A PLUS sequence metafile as PLUS writes one: zlib, MET_UCHAR, MFA, LOCAL data."""
    n, rows, cols = frames.shape
    payload = zlib.compress(np.ascontiguousarray(frames).tobytes(), 6)
    head = [
        "ObjectType = Image",
        "NDims = 3",
        "AnatomicalOrientation = RAI",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        "CenterOfRotation = 0 0 0",
        "CompressedData = True",
        f"CompressedDataSize = {len(payload)}",
        f"DimSize = {cols} {rows} {n}",
        "Kinds = domain domain list",
        "ElementSpacing = 1 1 1",
        "ElementType = MET_UCHAR",
        "Offset = 0 0 0",
        "TransformMatrix = 1 0 0 0 1 0 0 0 1",
        "UltrasoundImageOrientation = MFA",
    ]
    for i, fd in enumerate(fields):
        for k, v in fd.items():
            head.append(f"Seq_Frame{i:04d}_{k} = {v}")
    head.append("ElementDataFile = LOCAL")
    path.write_bytes(("\n".join(head) + "\n").encode() + payload)


def write_calibration(path: Path, probe: Probe) -> None:
    m = probe.image_to_probe()
    if path.suffix == ".xml":
        path.write_text(
            '<PlusConfiguration version="2.1">\n'
            '  <DataCollection StartupDelaySec="1.0"/>\n'
            "  <CoordinateDefinitions>\n"
            f'    <Transform From="Image" To="Probe" Matrix="{fmt(m)}" Error="0.6" '
            'Date="120526_063000"/>\n'
            "  </CoordinateDefinitions>\n"
            "</PlusConfiguration>\n"
        )
    else:
        rows = ",\n".join("    [" + ", ".join(f"{v:.12g}" for v in r) + "]" for r in m)
        path.write_text(
            "format = 1\n"
            f'probe = "{probe.name}"\n'
            f"depth_mm = {probe.depth_mm}\n"
            'sources = ["session 37 case24 re-slicer"]\n\n'
            f"[spatial]\nimage_to_probe = [\n{rows},\n]\n"
        )


def perturbation(rng: np.random.Generator, centre: np.ndarray) -> np.ndarray:
    """Rotation 3–8° about a random axis through ``centre`` then a 3–8 mm shift."""
    axis = rng.normal(size=3)
    angle = rng.uniform(3.0, 8.0)
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    m = np.eye(4)
    r = rot(axis, angle)
    m[:3, :3] = r
    m[:3, 3] = centre - r @ centre + direction * rng.uniform(3.0, 8.0)
    return m


def regrid_mri(out: Path) -> None:
    """The MRI on another grid (rotated 11° about an oblique axis, shifted by a fraction of
    a voxel, 0.6 mm voxels, cubic), so samples do not meet the US grid's voxel centres."""
    img = nib.load(MRI_FILE)
    data = np.asarray(img.dataobj, np.float32)
    a = img.affine
    r = np.eye(4)
    r[:3, :3] = rot(np.array([0.3, -1.0, 0.6]), 11.0)
    centre = (a @ np.r_[(np.array(data.shape) - 1) / 2, 1])[:3]
    new_shape = tuple(int(np.ceil(s / 1.2)) + 16 for s in data.shape)
    to_centre = np.eye(4)
    to_centre[:3, 3] = centre
    scaled = np.eye(4)
    scaled[:3, :3] = a[:3, :3] * 1.2  # 0.6 mm voxels along the old directions
    from_index = np.eye(4)
    from_index[:3, 3] = -(np.array(new_shape) - 1) / 2 + np.array([0.29, -0.41, 0.17])
    new_affine = to_centre @ r @ scaled @ from_index
    src = np.linalg.inv(a) @ new_affine
    idx = np.stack(np.meshgrid(*[np.arange(k) for k in new_shape], indexing="ij"), 0)
    idx = idx.reshape(3, -1)
    v = src[:3, :3] @ idx + src[:3, 3:4]
    vals = ndimage.map_coordinates(data, v, order=3, mode="constant", cval=0.0)
    vals = np.clip(vals, 0, None).reshape(new_shape).astype(np.float32)
    nimg = nib.Nifti1Image(vals, new_affine)
    nimg.set_qform(new_affine, code=1)
    nimg.set_sform(new_affine, code=1)
    nib.save(nimg, out)


def make(out: Path, tremor_seed: int = 3700) -> None:
    out.mkdir(parents=True, exist_ok=True)
    img = nib.load(US_FILE)
    us = np.asarray(img.dataobj, np.float32)
    vf = VolumeFrame(img)
    mri_pts, us_pts = read_tag(TAG_FILE)
    centre = us_pts.mean(0)
    reference_to_tracker = rigid([31.0, -118.0, 14.0], [142.0, -86.0, -1190.0])
    runs = []
    for k, sw in enumerate(make_sweeps(vf, tremor_seed)):
        folder = out / sw.name
        folder.mkdir(exist_ok=True)
        frames = cut(us, vf, sw)
        jit = np.random.default_rng(3800 + k)
        fields = []
        t0 = 1021.250 + 17 * k
        for f, p in enumerate(sw.poses):
            # the reference marker wobbles a little on its clamp; the tracker sees both
            rt = reference_to_tracker @ rigid(jit.normal(0, 0.05, 3), jit.normal(0, 0.1, 3))
            probe_to_reference = p @ np.linalg.inv(sw.probe.mount)
            ok = f not in sw.invalid
            fields.append(
                {
                    "ProbeToTrackerTransform": fmt(rt @ probe_to_reference if ok else np.eye(4)),
                    "ProbeToTrackerTransformStatus": "OK" if ok else "INVALID",
                    "ReferenceToTrackerTransform": fmt(rt),
                    "ReferenceToTrackerTransformStatus": "OK",
                    "Timestamp": f"{t0 + f / FPS:.6f}",
                    "ImageStatus": "OK",
                }
            )
        write_igs_mha(folder / "sweep.igs.mha", frames, fields)
        cal = folder / ("calibration.xml" if k % 2 else "calibration.toml")
        write_calibration(cal, sw.probe)
        # what the images cover: frame centres (true) and the non-zero fraction
        fov = np.array(
            [
                p @ sw.probe.image_to_probe_true() @ [sw.probe.cols / 2, sw.probe.rows / 2, 0, 1]
                for p in sw.poses
            ]
        )[:, :3]
        spacing = np.linalg.norm(np.diff(fov, axis=0), axis=1)
        info = {
            "sweep": sw.name,
            "description": sw.description,
            "frames": len(sw.poses),
            "image": [sw.probe.rows, sw.probe.cols],
            "pixel_mm": sw.probe.pixel_mm,
            "nonzero_fraction": float((frames > 0).mean()),
            "fov_centre_step_mm_median": float(np.median(spacing)),
            "fov_centre_step_mm_range": [float(spacing.min()), float(spacing.max())],
            "calibration": cal.name,
        }
        (folder / "sweep.json").write_text(json.dumps(info, indent=1))
        print(json.dumps(info))
        rng = np.random.default_rng(3724 + k)
        inits = [("unperturbed", np.eye(4))] + [
            (f"p{j}", perturbation(rng, centre)) for j in range(4)
        ]
        for name, m in inits:
            f = folder / f"init_{name}.txt"
            np.savetxt(f, m, fmt="%.10f", header=f"ReferenceToMri init {name}, seed {3724 + k}")
            runs.append(
                {
                    "sweep": sw.name,
                    "init": name,
                    "init_file": str(f),
                    "recording": str(folder / "sweep.igs.mha"),
                    "calibration": str(cal),
                    "mtre_before": mtre(m, us_pts, mri_pts),
                }
            )
    (out / "config_ignore_zero.toml").write_text("[registration]\nignore_zero_pixels = true\n")
    regrid_mri(out / "mri_regridded.nii.gz")
    (out / "runs.json").write_text(json.dumps(runs, indent=1))
    floor = mtre(landmark_fit(us_pts, mri_pts), us_pts, mri_pts)
    nav = mtre(np.eye(4), us_pts, mri_pts)
    print(f"{len(runs)} runs; landmark fit floor {floor:.2f} mm, navigation {nav:.2f} mm")


# ----------------------------------------------------------------------------- running


def run(out: Path, set_name: str, use_config: bool, regridded: bool, only: str | None) -> None:
    runs = json.loads((out / "runs.json").read_text())
    res_dir = out / f"results-{set_name}"
    res_dir.mkdir(exist_ok=True)
    mri = out / "mri_regridded.nii.gz" if regridded else MRI_FILE
    for r in runs:
        if only and only not in f"{r['sweep']}_{r['init']}":
            continue
        res = res_dir / f"{r['sweep']}_{r['init']}.json"
        if res.exists():
            continue
        cmd = [
            "usnav",
            "register",
            r["recording"],
            "--mri",
            str(mri),
            "--calibration",
            r["calibration"],
            "--init",
            r["init_file"],
            "--out",
            str(res),
            "--quiet",
        ]
        if use_config:
            cmd += ["--config", str(out / "config_ignore_zero.toml")]
        t = time.time()
        p = subprocess.run(cmd, capture_output=True, text=True)
        (res_dir / f"{r['sweep']}_{r['init']}.log").write_text(
            " ".join(cmd) + f"\nexit {p.returncode}\n{p.stdout}\n{p.stderr}"
        )
        print(
            f"{r['sweep']} {r['init']}: exit {p.returncode} in {time.time() - t:.0f} s", flush=True
        )


def table(out: Path, set_name: str) -> list[dict]:
    runs = json.loads((out / "runs.json").read_text())
    mri_pts, us_pts = read_tag(TAG_FILE)
    fit = landmark_fit(us_pts, mri_pts)
    centre = us_pts.mean(0)
    rows = []
    for r in runs:
        res = out / f"results-{set_name}" / f"{r['sweep']}_{r['init']}.json"
        if not res.exists():
            continue
        j = json.loads(res.read_text())
        est = np.array(j["ReferenceToMri"])
        cand = np.array(j["CandidateReferenceToMri"])
        unc = j.get("uncertainty_mm")
        after = mtre(est, us_pts, mri_pts)
        rows.append(
            {
                "sweep": r["sweep"],
                "init": r["init"],
                "accepted": j["accepted"],
                "confident": j.get("confident"),
                "before": r["mtre_before"],
                "after": after,
                "candidate": mtre(cand, us_pts, mri_pts),
                "bound": unc,
                "covered": None if unc is None else bool(unc >= after),
                "cand_bound": j.get("candidate_uncertainty_mm"),
                "seconds": j.get("seconds"),
                "reason": j.get("reason", "")[:90],
                # the landmarks' own least-squares fit as the truth, at the landmarks' centre
                "err_centre_vs_fit": float(np.linalg.norm((est - fit) @ np.r_[centre, 1])),
            }
        )
    print(
        "| sweep | init | accepted | confident | mTRE before | after | candidate | bound "
        "| covered | s | reason |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for x in rows:
        b = "–" if x["bound"] is None else f"{x['bound']:.2f}"
        cov = "–" if x["covered"] is None else ("yes" if x["covered"] else "**NO**")
        print(
            f"| {x['sweep']} | {x['init']} | {x['accepted']} | {x['confident']} | "
            f"{x['before']:.2f} | {x['after']:.2f} | {x['candidate']:.2f} | {b} | {cov} | "
            f"{x['seconds']:.1f} | {x['reason']} |"
        )
    pert = [x for x in rows if x["init"] != "unperturbed"]
    if pert:
        acc = [x for x in pert if x["accepted"]]
        med = np.median([x["after"] for x in pert])
        print(
            f"\nperturbed: {len(pert)} runs, median after {med:.2f} mm "
            f"(before {np.median([x['before'] for x in pert]):.2f}), {len(acc)} accepted, "
            f"{sum(x['after'] > 2 for x in acc)} accepted > 2 mm, "
            f"{sum(bool(x['covered']) for x in acc)}/{len(acc)} bound ≥ mTRE, "
            f"{sum(bool(x['confident']) for x in pert)} confident"
        )
    un = [x for x in rows if x["init"] == "unperturbed"]
    for x in un:
        print(
            f"do no harm {x['sweep']}: {x['before']:.2f} → {x['after']:.2f} mm "
            f"({'accepted' if x['accepted'] else 'rejected'}; candidate {x['candidate']:.2f})"
        )
    (out / f"table-{set_name}.json").write_text(json.dumps(rows, indent=1))
    return rows


def control(out: Path) -> None:
    """The benchmark's own sweeps (``usnav resect-sweeps``, sweeps 0 and 1) through the same
    CLI and config: unperturbed on both, and sweep 0 from sweep A's four inits (paired)."""
    bench = out / "bench-sweeps"
    if not bench.exists():
        subprocess.run(
            [
                "usnav",
                "resect-sweeps",
                "--data",
                str(DATA.parent.parent),
                "--out",
                str(bench),
                "--sweeps",
                "2",
            ],
            check=True,
        )
    res_dir = out / "results-control"
    res_dir.mkdir(exist_ok=True)
    mri_pts, us_pts = read_tag(TAG_FILE)
    for k, inits in (("00", ["unperturbed", "p0", "p1", "p2", "p3"]), ("01", ["unperturbed"])):
        for name in inits:
            init = out / "A-linear-slow" / f"init_{name}.txt"
            res = res_dir / f"bench{k}-init_{name}.json"
            if not res.exists():
                subprocess.run(
                    [
                        "usnav",
                        "register",
                        str(bench / f"resect24-{k}" / "sweep.igs.mha"),
                        "--mri",
                        str(MRI_FILE),
                        "--calibration",
                        str(bench / f"resect24-{k}" / "calibration.toml"),
                        "--init",
                        str(init),
                        "--out",
                        str(res),
                        "--quiet",
                        "--config",
                        str(out / "config_ignore_zero.toml"),
                    ],
                    check=True,
                )
            j = json.loads(res.read_text())
            before = mtre(np.loadtxt(init), us_pts, mri_pts)
            after = mtre(np.array(j["ReferenceToMri"]), us_pts, mri_pts)
            cand = mtre(np.array(j["CandidateReferenceToMri"]), us_pts, mri_pts)
            print(
                f"bench sweep {k}, init {name}: accepted {j['accepted']}, {before:.2f} → "
                f"{after:.2f} mm (candidate {cand:.2f}), bound {j['uncertainty_mm']}"
            )


def similarity(out: Path) -> None:
    """The search's own similarity (finest level, MIND-SSC, ignore_zero_pixels) at the
    navigation alignment, the landmarks' least-squares fit and the candidate found from the
    navigation alignment (results-main). Uses usnav's API: scoring only, not the slicing."""
    from usnav.config.calibration import load_calibration
    from usnav.io.volume import load_volume
    from usnav.registration.options import RegistrationOptions
    from usnav.registration.search import SweepRegistration
    from usnav.registration.sweep import load_sweep

    mri_pts, us_pts = read_tag(TAG_FILE)
    fit = landmark_fit(us_pts, mri_pts)
    mri = load_volume(str(MRI_FILE))
    for folder in sorted(p for p in out.iterdir() if (p / "sweep.json").exists()):
        cal = next(folder.glob("calibration.*"))
        sweep = load_sweep(folder / "sweep.igs.mha", load_calibration(cal).image_to_probe)
        problem = SweepRegistration(
            mri, sweep, np.eye(4), RegistrationOptions(ignore_zero_pixels=True)
        )
        sim = problem.level(len(problem.levels) - 1).similarity
        res = out / "results-main" / f"{folder.name}_unperturbed.json"
        cand = np.array(json.loads(res.read_text())["CandidateReferenceToMri"])
        parts = [
            f"{name} {mtre(m, us_pts, mri_pts):.2f} mm: {sim(m):.4f}"
            for name, m in (("navigation", np.eye(4)), ("landmark fit", fit), ("candidate", cand))
        ]
        print(f"{folder.name}: " + " | ".join(parts))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("step", choices=["make", "run", "table", "control", "similarity"])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--set", default="main")
    ap.add_argument("--no-config", action="store_true")
    ap.add_argument("--regridded", action="store_true")
    ap.add_argument("--only", help="run only names containing this (sweep_init)")
    ap.add_argument("--tremor-seed", type=int, default=3700, help="make: sweep k uses this + k")
    a = ap.parse_args()
    if a.step == "make":
        make(a.dir, a.tremor_seed)
    elif a.step == "run":
        run(a.dir, a.set, not a.no_config, a.regridded, a.only)
    elif a.step == "table":
        table(a.dir, a.set)
    elif a.step == "control":
        control(a.dir)
    else:
        similarity(a.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
