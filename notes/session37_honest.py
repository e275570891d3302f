"""Session 37 (helper "honest"): is ``usnav register`` honest on inputs that should NOT register?

Makes well-formed but semantically wrong variants of simulated tuning cases (seeds 1771-1800
only), runs the CLI exactly as documented (``usnav register REC --mri --calibration --init
--out RESULT.json``), and scores each result with the case's truth (error at the tumor where
it is now, :meth:`usnav.sim.CaseTruth.mtre_now`, the scorer ``usnav evaluate`` uses).

Usage (from a worktree, PATH with the venv, PYTHONPATH the worktree)::

    python notes/session37_honest.py make  BASE_DIR VAR_DIR      # the variants' inputs
    python notes/session37_honest.py run   BASE_DIR VAR_DIR OUT.jsonl [NAME ...]
    python notes/session37_honest.py table OUT.jsonl

BASE_DIR holds ``usnav simulate --seeds 1771-1778 --families baseline --no-save-anatomy``
(``baseline-17xx``) plus ``lag-1779`` / ``lag-1780`` (``--tracker-lag-s 0.1`` / ``0.3``) and
``slab3-1776`` (``--mri-spacing-mm 0.8 0.8 3``), made with ``usnav simulate --seed``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.spatial.transform import Rotation

from usnav.sim.truth import load_truth

ORDINARY = [f"baseline-{s}" for s in range(1771, 1779)]


# ---------------------------------------------------------------- helpers to make variants


def _case(base: Path, name: str) -> dict:
    c = base / name
    return {
        "recording": c / "sweep.igs.mha",
        "mri": c / "mri.nii.gz",
        "calibration": c / "calibration.toml",
        "init": c / "init_ReferenceToMri.txt",
        "truth": c / "truth.json",
    }


def _write_matrix(path: Path, m: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(" ".join(f"{v:.12g}" for v in row) for row in m) + "\n")
    return path


def _image_to_probe(base: Path, name: str) -> np.ndarray:
    return np.asarray(json.loads((base / name / "truth.json").read_text())["ImageToProbe"])


def _rewrite_pixels(src: Path, dst: Path, change) -> Path:
    """Copy a MetaIO sequence with its pixels (frames, rows, cols) passed through ``change``,
    written uncompressed (header otherwise unchanged)."""
    raw = src.read_bytes()
    key = b"ElementDataFile = LOCAL\n"
    cut = raw.index(key) + len(key)
    header = raw[:cut].decode("latin-1")
    lines = header.splitlines(keepends=True)
    dims = next(ln for ln in lines if ln.startswith("DimSize")).split("=")[1].split()
    cols, rows, frames = (int(v) for v in dims)
    compressed = any(ln.startswith("CompressedData = True") for ln in lines)
    body = zlib.decompress(raw[cut:]) if compressed else raw[cut:]
    pixels = np.frombuffer(body, np.uint8).reshape(frames, rows, cols).copy()
    pixels = np.asarray(change(pixels), np.uint8)
    out = []
    for ln in lines:
        if ln.startswith("CompressedDataSize"):
            continue
        if ln.startswith("CompressedData "):
            ln = "CompressedData = False\n"
        out.append(ln)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes("".join(out).encode("latin-1") + pixels.tobytes())
    return dst


def _shift_affine(src: Path, dst: Path, shift: np.ndarray) -> Path:
    """The MRI with its world moved by ``shift`` (4×4 applied to the affine): a point the
    original MRI puts at X is put at shift·X."""
    img = nib.load(str(src))
    new = nib.Nifti1Image(np.asarray(img.dataobj), shift @ img.affine, img.header)
    new.set_sform(shift @ img.affine, code=int(img.header["sform_code"]) or 1)
    new.set_qform(shift @ img.affine, code=int(img.header["qform_code"]) or 1)
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(new, str(dst))
    return dst


def _with_data(src: Path, dst: Path, change) -> Path:
    img = nib.load(str(src))
    data = np.asarray(img.dataobj).astype(np.float64)
    new_data = change(data, img)
    new = nib.Nifti1Image(new_data.astype(np.int16), img.affine, img.header)
    new.header.set_data_dtype(np.int16)
    new.header["scl_slope"] = 1
    new.header["scl_inter"] = 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(new, str(dst))
    return dst


def _kabsch(moving: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """Rigid 4×4 taking moving points onto fixed ones (least squares)."""
    mc, fc = moving.mean(0), fixed.mean(0)
    h = (moving - mc).T @ (fixed - fc)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    r = vt.T @ np.diag([1, 1, d]) @ u.T
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = fc - r @ mc
    return m


def _translation(v) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = v
    return m


def _offset_about(centre: np.ndarray, rotvec_deg, translation_mm) -> np.ndarray:
    """T(translation) · T(centre) · R · T(−centre), MRI frame."""
    r = np.eye(4)
    r[:3, :3] = Rotation.from_rotvec(np.deg2rad(rotvec_deg)).as_matrix()
    return _translation(np.asarray(translation_mm) + centre) @ r @ _translation(-centre)


def make_variants(base: Path, var: Path) -> list[dict]:
    """Every variant: inputs, the truth to score against and how (shift of the MRI world)."""
    rng = np.random.default_rng(1771)
    v: list[dict] = []

    def add(name, case, expect, note, shift=None, **inputs):
        row = dict(_case(base, case))
        row.update(inputs)
        row.update(
            name=name,
            case=case,
            expect=expect,
            note=note,
            mri_shift=(shift if shift is not None else np.eye(4)).tolist(),
        )
        v.append({k: (str(x) if isinstance(x, Path) else x) for k, x in row.items()})

    for case in ORDINARY:
        add(f"ordinary-{case[-4:]}", case, "register", "the case as simulated")

    # wrong patient: another seed's MRI, (a) as scanned, (b) placed so that its vertebral
    # bodies lie where this patient's do (the hard version: the navigation looks right)
    for a, b in [("baseline-1771", "baseline-1772"), ("baseline-1773", "baseline-1774")]:
        add(
            f"wrong-patient-{a[-4:]}-mri{b[-4:]}",
            a,
            "reject",
            "another seed's MRI, as is",
            mri=_case(base, b)["mri"],
        )
        ta, tb = load_truth(base / a), load_truth(base / b)
        fit = _kabsch(
            np.asarray(tb.landmarks["vertebral_body_posterior"]),
            np.asarray(ta.landmarks["vertebral_body_posterior"]),
        )
        add(
            f"wrong-patient-{a[-4:]}-mri{b[-4:]}-aligned",
            a,
            "reject",
            "another seed's MRI, its vertebral bodies placed on this one's",
            mri=_shift_affine(_case(base, b)["mri"], var / f"wp-{a}-{b}.nii.gz", fit),
        )

    # wrong level: the MRI's world moved by one vertebra along the spine (the navigation
    # initialised on the neighbouring level); the truth moves with it
    for case, sign in [("baseline-1771", 1), ("baseline-1772", -1), ("baseline-1773", 1)]:
        t = load_truth(base / case)
        vb = np.asarray(t.landmarks["vertebral_body_posterior"])
        step = sign * (vb[1] - vb[0])
        shift = _translation(step)
        add(
            f"wrong-level-{case[-4:]}{'+' if sign > 0 else '-'}",
            case,
            "reject or find",
            f"MRI world moved {np.linalg.norm(step):.1f} mm along the spine",
            shift=shift,
            mri=_shift_affine(_case(base, case)["mri"], var / f"lvl-{case}.nii.gz", shift),
        )

    # calibration errors (written as 16 numbers, a documented CAL form)
    def cal(case, m, tag):
        return _write_matrix(var / f"cal-{tag}-{case}.txt", m)

    for case in ("baseline-1771", "baseline-1772"):
        m = _image_to_probe(base, case)
        flip = np.diag([-1.0, 1, 1, 1])
        flip[0, 3] = 255.0  # col -> 255 - col: the image mirrored left-right
        add(
            f"cal-mirrored-{case[-4:]}",
            case,
            "reject",
            "ImageToProbe with the image x flipped",
            calibration=cal(case, m @ flip, "mirror"),
        )
    case = "baseline-1773"
    m = _image_to_probe(base, case)
    d = rng.normal(size=3)
    add(
        f"cal-5mm-{case[-4:]}",
        case,
        "bounded",
        "ImageToProbe translated 5 mm (Probe frame)",
        calibration=cal(case, _translation(5 * d / np.linalg.norm(d)) @ m, "5mm"),
    )
    case = "baseline-1774"
    m = _image_to_probe(base, case)
    centre = (m @ [127.5, 127.5, 0, 1])[:3]
    ax = rng.normal(size=3)
    add(
        f"cal-5deg-{case[-4:]}",
        case,
        "bounded",
        "ImageToProbe rotated 5° about the image centre",
        calibration=cal(
            case, _offset_about(centre, 5 * ax / np.linalg.norm(ax), [0, 0, 0]) @ m, "5deg"
        ),
    )
    case = "baseline-1775"
    m = _image_to_probe(base, case)
    add(
        f"cal-scale110-{case[-4:]}",
        case,
        "bounded",
        "pixel spacing 10 % too large",
        calibration=cal(case, m @ np.diag([1.1, 1.1, 1.1, 1.0]), "scale"),
    )

    # initial estimate far off
    for case, mm, deg in [
        ("baseline-1772", 12, 0),
        ("baseline-1773", 15, 0),
        ("baseline-1774", 20, 0),
        ("baseline-1775", 4, 12),
        ("baseline-1776", 4, 20),
    ]:
        t = load_truth(base / case)
        d = rng.normal(size=3)
        ax = rng.normal(size=3)
        off = _offset_about(
            np.asarray(t.landmarks["tumor_centroid"]).ravel(),
            deg * ax / np.linalg.norm(ax),
            mm * d / np.linalg.norm(d),
        )
        add(
            f"init-{mm}mm-{deg}deg-{case[-4:]}",
            case,
            "reject or find",
            f"init = truth offset {mm} mm / {deg}° about the tumor",
            init=_write_matrix(var / f"init-{mm}-{deg}-{case}.txt", off @ t.reference_to_mri),
        )

    # an unstated tracker lag: the calibration given without its [temporal] section
    for case in ("lag-1779", "lag-1780"):
        if (base / case / "truth.json").is_file():
            lag = json.loads((base / case / "truth.json").read_text())["tracker_lag_s"]
            add(
                f"lag-{int(lag * 1000)}ms-{case[-4:]}",
                case,
                "bounded",
                f"images {lag * 1000:.0f} ms behind their poses, lag not stated",
                calibration=cal(case, _image_to_probe(base, case), "lag"),
            )

    # frames that show nothing
    rec = _case(base, "baseline-1771")["recording"]
    add(
        "frames-speckle-1771",
        "baseline-1771",
        "reject",
        "every frame pure Rayleigh speckle",
        recording=_rewrite_pixels(
            Path(rec),
            var / "speckle-1771.igs.mha",
            lambda p: np.clip(rng.rayleigh(40, p.shape), 0, 255),
        ),
    )
    rec = _case(base, "baseline-1772")["recording"]
    add(
        "frames-black-1772",
        "baseline-1772",
        "refuse or reject",
        "every frame all zeros",
        recording=_rewrite_pixels(Path(rec), var / "black-1772.igs.mha", lambda p: p * 0),
    )
    rec = _case(base, "baseline-1774")["recording"]

    def shuffle(p):
        return p[rng.permutation(len(p))]

    add(
        "frames-shuffled-1774",
        "baseline-1774",
        "reject",
        "real frames, each paired with another frame's pose",
        recording=_rewrite_pixels(Path(rec), var / "shuffled-1774.igs.mha", shuffle),
    )

    # a sweep that barely touches the MRI: the MRI cropped along the sweep to its first ~12 %
    case = "baseline-1773"
    t = load_truth(base / case)
    img = nib.load(_case(base, case)["mri"])
    data = np.asarray(img.dataobj)
    cl = np.asarray(t.landmarks["cord_centerline"])
    axis = cl[-1] - cl[0]
    axis /= np.linalg.norm(axis)
    ijk = np.indices(data.shape).reshape(3, -1).T
    xyz = ijk @ img.affine[:3, :3].T + img.affine[:3, 3]
    along = (xyz - cl[len(cl) // 2]) @ axis
    init = np.loadtxt(_case(base, case)["init"])  # noqa: F841  (documentation only)
    sweep_len = float(json.loads((base / case / "truth.json").read_text())["sweep"]["length_mm"])
    for fraction, tag in ((0.12, ""), (0.3, "30-"), (0.5, "50-")):
        keep = (along < -sweep_len / 2 + fraction * sweep_len).reshape(data.shape)
        sl = [np.flatnonzero(keep.any(axis=tuple(a for a in range(3) if a != k))) for k in range(3)]
        lo = [int(s.min()) for s in sl]
        hi = [int(s.max()) + 1 for s in sl]
        cropped = data[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        aff = img.affine.copy()
        aff[:3, 3] = img.affine[:3, :3] @ lo + img.affine[:3, 3]
        out = nib.Nifti1Image(cropped, aff, img.header)
        out.set_sform(aff, 1)
        out.set_qform(aff, 1)
        nib.save(out, str(var / f"crop-{tag}{case}.nii.gz"))
        add(
            f"mri-barely-{tag}{case[-4:]}",
            case,
            "reject",
            f"MRI cropped to the sweep's first ~{fraction:.0%} along the spine",
            mri=var / f"crop-{tag}{case}.nii.gz",
        )

    # MRI appearance
    def bias(data, img):
        ijk = np.indices(data.shape).astype(np.float64)
        g = ijk[1] / data.shape[1]
        return data * np.exp(np.log(20.0) * (g - 0.5))  # ×0.22 … ×4.5 across the volume

    add(
        "mri-bias20x-1774",
        "baseline-1774",
        "bounded",
        "a ×20 (0.22–4.5) exponential bias field across the MRI",
        mri=_with_data(Path(_case(base, "baseline-1774")["mri"]), var / "bias-1774.nii.gz", bias),
    )
    add(
        "mri-inverted-1775",
        "baseline-1775",
        "bounded or reject",
        "MRI contrast inverted",
        mri=_with_data(
            Path(_case(base, "baseline-1775")["mri"]),
            var / "inv-1775.nii.gz",
            lambda d, i: d.max() - d,
        ),
    )
    if (base / "slab3-1776" / "truth.json").is_file():
        add("mri-3mm-slices-1776", "slab3-1776", "bounded", "MRI with 3 mm slices (simulated)")

    # batch 2 (after batch 1 showed pure speckle passing the chance test and a wrong level
    # accepted): more of both, with their own random stream
    rng2 = np.random.default_rng(17712)
    for case, sign in [
        ("baseline-1774", -1),
        ("baseline-1775", 1),
        ("baseline-1776", -1),
        ("baseline-1777", 1),
        ("baseline-1778", -1),
    ]:
        t = load_truth(base / case)
        vb = np.asarray(t.landmarks["vertebral_body_posterior"])
        step = sign * (vb[1] - vb[0])
        shift = _translation(step)
        add(
            f"wrong-level-{case[-4:]}{'+' if sign > 0 else '-'}",
            case,
            "reject or find",
            f"MRI world moved {np.linalg.norm(step):.1f} mm along the spine",
            shift=shift,
            mri=_shift_affine(_case(base, case)["mri"], var / f"lvl-{case}.nii.gz", shift),
        )

    def iid(p):
        return np.clip(rng2.rayleigh(40, p.shape), 0, 255)

    def smooth_speckle(p):
        from scipy.ndimage import gaussian_filter

        out = np.empty(p.shape)
        for k in range(len(p)):
            re = gaussian_filter(rng2.normal(size=p.shape[1:]), (1.2, 2.0))
            im = gaussian_filter(rng2.normal(size=p.shape[1:]), (1.2, 2.0))
            env = np.hypot(re, im) / 0.2
            out[k] = 255 * np.clip(np.log10(1e-3 + env) / 2.6 + 0.6, 0, 1)
        return out

    def reverb(p):
        rows = np.arange(p.shape[1])[:, None]
        bands = sum(
            200 * 0.7**k * np.exp(-0.5 * ((rows - 20 - 19.2 * k) / 1.5) ** 2) for k in range(10)
        )
        return np.clip(bands[None] + rng2.rayleigh(12, p.shape), 0, 255)

    for case in ("baseline-1775", "baseline-1776", "baseline-1777"):
        rec = _case(base, case)["recording"]
        add(
            f"frames-speckle-{case[-4:]}",
            case,
            "reject",
            "every frame pure Rayleigh speckle",
            recording=_rewrite_pixels(Path(rec), var / f"speckle-{case}.igs.mha", iid),
        )
    for case in ("baseline-1772", "baseline-1773"):
        rec = _case(base, case)["recording"]
        add(
            f"frames-smooth-speckle-{case[-4:]}",
            case,
            "reject",
            "every frame fully developed speckle (correlated over ~0.3 × 0.45 mm), log-compressed",
            recording=_rewrite_pixels(Path(rec), var / f"sspeckle-{case}.igs.mha", smooth_speckle),
        )
    case = "baseline-1771"
    add(
        f"frames-speckle-truth-init-{case[-4:]}",
        case,
        "reject",
        "pure Rayleigh speckle, init = the true ReferenceToMri",
        recording=var / "speckle-1771.igs.mha",
        init=_write_matrix(
            var / f"init-truth-{case}.txt", load_truth(base / case).reference_to_mri
        ),
    )
    rec = _case(base, "baseline-1778")["recording"]
    add(
        "frames-air-reverb-1778",
        "baseline-1778",
        "reject",
        "probe in air: horizontal reverberation bands every 3 mm over faint noise",
        recording=_rewrite_pixels(Path(rec), var / "reverb-1778.igs.mha", reverb),
    )

    # batch 3: contact lost halfway (the second half of the frames noise or black)
    rng3 = np.random.default_rng(17713)

    def half_speckle(p):
        q = p.astype(np.float64)
        q[len(q) // 2 :] = np.clip(rng3.rayleigh(40, q[len(q) // 2 :].shape), 0, 255)
        return q

    def half_black(p):
        q = p.copy()
        q[len(q) // 2 :] = 0
        return q

    for case, fn, tag in (
        ("baseline-1776", half_speckle, "speckle"),
        ("baseline-1777", half_black, "black"),
    ):
        rec = _case(base, case)["recording"]
        add(
            f"frames-half-{tag}-{case[-4:]}",
            case,
            "register on the good half or reject",
            f"frames 75-149 replaced by {tag}",
            recording=_rewrite_pixels(Path(rec), var / f"half-{tag}-{case}.igs.mha", fn),
        )
    return v


# ---------------------------------------------------------------- running and scoring


def run_one(v: dict, out_dir: Path) -> dict:
    out = out_dir / f"{v['name']}.json"
    cmd = [
        "usnav",
        "register",
        v["recording"],
        "--mri",
        v["mri"],
        "--calibration",
        v["calibration"],
        "--init",
        v["init"],
        "--out",
        str(out),
        "--quiet",
        "--force",
    ]
    p = subprocess.run(cmd, capture_output=True, text=True)
    row = {
        "name": v["name"],
        "note": v["note"],
        "expect": v["expect"],
        "status": p.returncode,
        "stdout": p.stdout.strip(),
        "stderr": p.stderr.strip()[-400:],
    }
    if p.returncode != 0 or not out.is_file():
        return row
    r = json.loads(out.read_text())
    truth = load_truth(Path(v["truth"]).parent)
    back = np.linalg.inv(np.asarray(v["mri_shift"]))  # into the scored case's MRI world
    est = back @ np.asarray(r["ReferenceToMri"])
    cand = back @ np.asarray(r["CandidateReferenceToMri"])
    ini = back @ np.asarray(r["InitialReferenceToMri"])
    wrong_patient = v["name"].startswith("wrong-patient")
    row.update(
        accepted=r["accepted"],
        confident=r["confident"],
        uncertainty_mm=r["uncertainty_mm"],
        candidate_uncertainty_mm=r["candidate_uncertainty_mm"],
        correction_mm=r["correction_mm"],
        similarity=r["similarity"],
        initial_similarity=r["initial_similarity"],
        reason=r["reason"],
        # for another patient's MRI no pose is right: errors against this patient's truth
        # are given for orientation only
        error_now_mm=truth.mtre_now(est),
        candidate_error_now_mm=truth.mtre_now(cand),
        initial_error_now_mm=truth.mtre_now(ini),
        wrong_patient=wrong_patient,
    )
    u = r["uncertainty_mm"]
    fault = r["accepted"] and (
        wrong_patient or row["error_now_mm"] > 2.0 or u is None or row["error_now_mm"] > u
    )
    row["fault"] = bool(fault)
    return row


def overlay_error(row_variant: dict, result_json: Path) -> float:
    """Mean over frames of |E·P·C'·c − T·P·C·c| at the image centre c, mm: how far the MRI drawn
    on the image through the estimate E and the calibration C' given is from the anatomy the
    pixel shows (T, C: the truth). With a wrong C' a registration can move the image back
    onto the anatomy, so this can be small while E itself is off (cord shift not included)."""
    from usnav.io.sequence_reader import read_sequence
    from usnav.registration.files import read_matrix_file

    truth = json.loads(Path(row_variant["truth"]).read_text())
    t = np.asarray(truth["ReferenceToMri"])
    c_true = np.asarray(truth["ImageToProbe"])
    cal = Path(row_variant["calibration"])
    if cal.suffix == ".toml":
        import tomllib

        c_given = np.asarray(tomllib.loads(cal.read_text())["spatial"]["image_to_probe"])
    else:
        c_given = read_matrix_file(cal)
    e = np.linalg.inv(np.asarray(row_variant["mri_shift"])) @ np.asarray(
        json.loads(result_json.read_text())["ReferenceToMri"]
    )
    seq = read_sequence(Path(row_variant["recording"]))
    p2t, _ = seq.transforms("ProbeToTracker")
    r2t, _ = seq.transforms("ReferenceToTracker")
    lag = float(truth.get("tracker_lag_s") or 0.0)
    ts = np.array([float(seq.fields(i)["Timestamp"]) for i in range(len(seq))])
    centre = np.array([127.5, 127.5, 0.0, 1.0])
    errs = []
    for i in range(len(seq)):
        p = np.linalg.inv(r2t[i]) @ p2t[i]
        # the anatomy in the image of frame i was at the pose of t + lag: nearest frame
        j = int(np.argmin(np.abs(ts - (ts[i] + lag)))) if lag else i
        p_true = np.linalg.inv(r2t[j]) @ p2t[j]
        errs.append(np.linalg.norm((e @ p @ c_given @ centre - t @ p_true @ c_true @ centre)[:3]))
    return float(np.mean(errs))


def main(argv: list[str]) -> int:
    cmd = argv[0]
    if cmd == "make":
        base, var = Path(argv[1]), Path(argv[2])
        var.mkdir(parents=True, exist_ok=True)
        variants = make_variants(base, var)
        (var / "variants.json").write_text(json.dumps(variants, indent=1))
        print(f"{len(variants)} variants → {var / 'variants.json'}")
        return 0
    if cmd == "run":
        var, out = Path(argv[2]), Path(argv[3])
        names = set(argv[4:])
        variants = json.loads((var / "variants.json").read_text())
        results = out.parent / "results"
        results.mkdir(parents=True, exist_ok=True)
        for v in variants:
            if (
                names
                and v["name"] not in names
                and not any(v["name"].startswith(n.rstrip("*")) for n in names if n.endswith("*"))
            ):
                continue
            row = run_one(v, results)
            with out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(
                json.dumps(
                    {
                        k: row.get(k)
                        for k in (
                            "name",
                            "status",
                            "accepted",
                            "error_now_mm",
                            "uncertainty_mm",
                            "fault",
                        )
                    }
                ),
                flush=True,
            )
        return 0
    if cmd == "table":
        rows = [json.loads(ln) for ln in Path(argv[1]).read_text().splitlines() if ln.strip()]
        latest = {r["name"]: r for r in rows}
        print(
            "| variant | exit | accepted | error now (init → published) mm | bound mm | "
            "candidate mm (its bound) | fault |"
        )
        print("|---|---|---|---|---|---|---|")
        for r in latest.values():
            if r["status"] != 0:
                print(f"| {r['name']} | {r['status']} | – | – | – | – | {r['stderr'][-160:]} |")
                continue
            u = r["uncertainty_mm"]
            cu = r["candidate_uncertainty_mm"]
            print(
                f"| {r['name']} | 0 | {'yes' if r['accepted'] else 'no'} | "
                f"{r['initial_error_now_mm']:.2f} → {r['error_now_mm']:.2f} | "
                f"{'–' if u is None else f'{u:.2f}'} | {r['candidate_error_now_mm']:.2f} "
                f"({'–' if cu is None else f'{cu:.2f}'}) | {'**FAULT**' if r['fault'] else ''} |"
            )
        return 0
    raise SystemExit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
