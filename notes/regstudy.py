"""Registration study harness (not shipped): run register on cases of several families and
print per-case rows as JSON lines.  Recording-level families (applied at load time, the
simulator untouched): base, calib (ImageToProbe off by <= 1 mm / 1 deg), sos (depth scaled
1480-1580 m/s), echo (echo trails by 2-4 px = 0.3-0.6 mm), gain (gamma 0.5-2).
"""

from __future__ import annotations

import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from usnav.config.calibration import load_calibration
from usnav.io.volume import load_volume
from usnav.registration.sweep import load_sweep
from usnav.sim import load_truth


def rigid(rng, mm, deg):
    d = rng.normal(size=3)
    d *= rng.uniform(0, mm) / np.linalg.norm(d)
    a = rng.normal(size=3)
    a *= np.radians(rng.uniform(0, deg)) / np.linalg.norm(a)
    m = np.eye(4)
    m[:3, :3] = Rotation.from_rotvec(a).as_matrix()
    m[:3, 3] = d
    return m


def load_family(folder: Path, family: str, seed: int):
    rng = np.random.default_rng(seed * 7 + zlib.crc32(family.encode()) % 1000)
    cal = load_calibration(folder / "calibration.toml").image_to_probe
    truth = load_truth(folder)
    mri = load_volume(folder / "mri.nii.gz")
    info = {}
    used = cal.copy()
    if family in ("calib", "geom"):
        d = rigid(rng, 1.0, 1.0)
        used = d @ used
        info["calib"] = True
    if family in ("sos", "geom"):
        c = rng.uniform(1480, 1580)
        used = used @ np.diag([1.0, 1540.0 / c, 1.0, 1.0])
        info["sos"] = c
    sweep = load_sweep(folder / "sweep.igs.mha", used)
    if family in ("echo", "geom"):
        n = int(rng.integers(2, 5))
        im = sweep.images.copy()
        im[:, n:, :] = sweep.images[:, :-n, :]
        im[:, :n, :] = 0
        sweep.images = im
        info["echo_px"] = n
    if family == "gain":
        g = rng.uniform(0.5, 2.0)
        im = (255.0 * (sweep.images / 255.0) ** g).astype(np.uint8)
        sweep.images = im
        info["gamma"] = g
    return mri, sweep, truth, info


def tre_now(truth, e):
    """Mean error at the tumor where it is during surgery (intraoperative landmarks)."""
    return truth.mtre_now(e)


def run_case(folder, family, seed, opts=None, extra=None):
    from usnav.registration.rigid import RegistrationOptions, SweepRegistration

    mri, sweep, truth, info = load_family(folder, family, seed)
    init = truth.init_reference_to_mri
    opts = opts or RegistrationOptions()
    problem = SweepRegistration(mri, sweep, init, opts)
    t0 = time.perf_counter()
    res = problem.run(init)
    secs = time.perf_counter() - t0
    fine = problem.level(-1).similarity
    row = {
        "family": family,
        "seed": seed,
        **info,
        "init": truth.mtre(init),
        "cand": truth.mtre(res.candidate),
        "cand_now": tre_now(truth, res.candidate),
        "truth_now": tre_now(truth, truth.reference_to_mri),
        "accepted": bool(res.accepted),
        "unc": res.uncertainty_mm,
        "corr": res.correction_mm,
        "sim": res.similarity,
        "sim_truth": fine(truth.reference_to_mri),
        "secs": secs,
        "reason": res.reason[:120],
        **{"d_" + k: v for k, v in getattr(res, "diagnostics", {}).items()},
        "confident": bool(getattr(res, "confident", False)),
        "spread": getattr(res, "uncertainty_terms", {}).get("statistical", float("nan"))
        / max(opts.statistical_scale, 1e-9),
        "depth": getattr(problem, "fov_depth_mm", float("nan")),
        **(res.diagnostics if hasattr(res, "diagnostics") else {}),
    }
    if extra:
        row.update(extra(problem, res, truth))
    return row


def _opts():
    from usnav.registration.rigid import RegistrationOptions

    kw = {}
    for a in sys.argv[4:]:
        if "=" in a:
            k, v = a.split("=", 1)
            kw[k] = json.loads(v)
    return RegistrationOptions(**kw)


def main():
    from usnav.registration import warm_up

    warm_up()
    root = Path(sys.argv[1])
    families = sys.argv[2].split(",")
    seeds = [int(s) for s in sys.argv[3].split(",")]
    wait = "--wait" in sys.argv  # cases still being simulated: seeds outer, wait for each
    order = (
        [(f, s) for s in seeds for f in families]
        if wait
        else [(f, s) for f in families for s in seeds]
    )
    for fam, s in order:
        folder = root / f"{fam[3:]}-{s}" if fam.startswith("sf:") else root / f"s{s}"
        while wait and not (folder / "truth.json").exists():
            time.sleep(10)
        row = run_case(
            folder, fam, s, opts=_opts(), extra=diagnostics if "--diag" in sys.argv else None
        )
        print(
            json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}),
            flush=True,
        )


def diagnostics(problem, res, truth):
    """Per-case statistics that might predict the error of the candidate."""
    from usnav.registration.rigid import (
        FrameSimilarity,
        _apply,
        _optimise,
        correction,
        mean_displacement,
    )

    cand = res.candidate
    pts = problem.points_reference[:: max(1, len(problem.points_reference) // 4000)]
    level = problem.level(-1)
    s = level.frames.spacing_mm
    centre = _apply(cand, problem.points_reference).mean(axis=0)
    out = {}

    def refine(sim, x0, n=40, step=0.6):
        def cost(p):
            return -sim(correction(p, centre) @ cand)

        x, f, _ = _optimise(cost, x0, np.r_[[step * s] * 3, [step * s] * 3], n, 0.03 * s)
        return correction(x, centre) @ cand, -f

    # perturbed starts
    rng = np.random.default_rng(0)
    ends = []
    for _ in range(3):
        x0 = np.r_[rng.normal(size=3), rng.normal(size=3)]
        x0 *= 2.0 / np.linalg.norm(x0)
        e, _ = refine(level.similarity, x0, 40)
        ends.append(e)
    out["d_starts"] = max(mean_displacement(e, cand, pts) for e in ends)
    # other patch size
    for ph in (2, 3):
        sim = FrameSimilarity(level.mri, level.frames, metric="lc2", patch_half=ph)
        e, _ = refine(sim, np.zeros(6), 50)
        out[f"d_patch{ph}"] = mean_displacement(e, cand, pts)
    # true error over the FOV (mean displacement of FOV between cand and truth)
    out["err_fov"] = mean_displacement(cand, truth.reference_to_mri, pts)
    # beam component of the error at the tumour centroid
    m = cand @ np.linalg.inv(truth.reference_to_mri)
    x = truth.landmarks["tumor_centroid"].reshape(3)
    d = m[:3, :3] @ x + m[:3, 3] - x
    beam = truth.reference_to_mri[:3, :3] @ problem.beam_direction
    elev = truth.reference_to_mri[:3, :3] @ problem.elevation_direction
    out["err_beam"] = float(d @ beam)
    out["err_elev"] = float(d @ elev)
    out["err_lat"] = float(np.sqrt(max(0.0, d @ d - (d @ beam) ** 2 - (d @ elev) ** 2)))
    return out


if __name__ == "__main__":
    main()
