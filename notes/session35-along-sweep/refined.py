"""Session 35 helper C: the "profile with the other five degrees of freedom free" — what the
ambiguity probe sees (it refines the shifted pose), unlike the pure-translation profile.

For each shift s along elevation (and ±5 mm along lateral as a control) the translation along
that axis is held at s·direction and the other two translations and the three rotations are
refined by Nelder–Mead (60 evaluations, first steps 0.6 pixel mm / deg as the verdict's
_climb), from the pure shift. Also s = 0 (the metric's own optimum near the truth with the
axis held). Writes /tmp/s35/C/out_refined/<case>.json.

    PYTHONPATH=/work/main python /tmp/s35/C/refined.py CASE_DIR ...
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from usnav.io.volume import load_volume
from usnav.registration.pose import _optimise, correction
from usnav.registration.reconstruct import (
    ReconstructionOptions,
    load_image_to_probe,
    reconstruct_volume,
)
from usnav.registration.search import SweepRegistration
from usnav.registration.similarity import FrameSimilarity, VolumeSimilarity, set_threads
from usnav.registration.sweep import load_sweep
from usnav.sim import load_truth

OUT = Path("/tmp/s35/C/out_refined")
ELEV_SHIFTS = [-5.0, -3.0, 0.0, 3.0, 5.0]
LAT_SHIFTS = [-5.0, 5.0]
BUDGET = 60


def basis(d: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    e = d / np.linalg.norm(d)
    u = other - (other @ e) * e
    u /= np.linalg.norm(u)
    return e, u, np.cross(e, u)


def run(case: Path) -> None:
    t0 = time.perf_counter()
    truth = load_truth(case).reference_to_mri
    sweep = load_sweep(case / "sweep.igs.mha", load_image_to_probe(case / "calibration.toml"))
    reg = SweepRegistration(load_volume(case / "mri.nii.gz"), sweep, truth)
    centre = truth[:3, :3] @ reg.points_reference.mean(axis=0) + truth[:3, 3]
    elev = truth[:3, :3] @ reg.elevation_direction
    lat = truth[:3, :3] @ reg.lateral_direction
    fine = reg.level(-1)
    rec = reconstruct_volume(
        sweep,
        ReconstructionOptions(
            spacing_mm=(1.0, 1.0, 1.0), interpolation="linear", fill_holes=False, use_fov_mask=True
        ),
    )
    sims = {
        "mind_0.5": (fine.similarity, 0.5),
        "lc2_0.5": (FrameSimilarity(fine.mri, fine.frames, metric="lc2", patch_half=1), 0.5),
        "vol_lc2_1.0": (
            VolumeSimilarity(reg.level(1).mri, rec.volume, rec.filled, patch_half=1),
            1.0,
        ),
    }
    result: dict = {"case": case.name}
    for name, (sim, spacing) in sims.items():
        rows = []
        for axis_name, d, other, shifts in (
            ("elevation", elev, lat, ELEV_SHIFTS),
            ("lateral", lat, elev, LAT_SHIFTS),
        ):
            e, u, v = basis(d, other)

            def pose(p: np.ndarray, s: float, e=e, u=u, v=v) -> np.ndarray:
                t = s * e + p[0] * u + p[1] * v
                return correction(np.r_[t, p[2:5]], centre) @ truth

            for s in shifts:
                pure = float(sim(pose(np.zeros(5), s)))
                step = np.r_[[0.6 * spacing] * 2, [0.6 * spacing] * 3]
                x, f, n = _optimise(
                    lambda p, s=s, sim=sim: -sim(pose(p, s)),
                    np.zeros(5),
                    step,
                    BUDGET,
                    0.05 * spacing,
                )
                rows.append(
                    {
                        "axis": axis_name,
                        "shift_mm": s,
                        "pure": pure,
                        "refined": -f,
                        "params": np.round(x, 3).tolist(),
                        "evaluations": n,
                    }
                )
        result[name] = rows
    result["seconds"] = round(time.perf_counter() - t0, 1)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{case.name}.json").write_text(json.dumps(result))
    print(case.name, result["seconds"], flush=True)


if __name__ == "__main__":
    set_threads(1)
    for arg in sys.argv[1:]:
        if (OUT / f"{Path(arg).name}.json").exists():
            continue
        run(Path(arg))
