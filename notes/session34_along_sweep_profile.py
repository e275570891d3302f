"""How flat is the similarity along the sweep? (session 34, report only)

The finest level's similarity (shipped options) at the truth shifted along the sweep's
elevation direction and along the image's lateral axis, -10..+10 mm by 1 mm, no refinement,
printed relative to the truth's own value.

    python notes/session34_along_sweep_profile.py indep:CASE_DIR usnav:CASE_DIR ...

``indep:`` an independent-simulator case (notes/indep-sim: cal.txt, truth.txt); ``usnav:`` a
``usnav simulate`` case (calibration.toml, truth.json).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from usnav.io.volume import load_volume
from usnav.registration.files import read_initial
from usnav.registration.pose import correction
from usnav.registration.reconstruct import load_image_to_probe
from usnav.registration.search import SweepRegistration
from usnav.registration.sweep import load_sweep


def profile(case: Path, calibration: Path, truth: np.ndarray) -> dict[str, list[float]]:
    """Similarity differences to the truth's, per axis, at shifts of -10..+10 mm."""
    sweep = load_sweep(case / "sweep.igs.mha", load_image_to_probe(calibration))
    reg = SweepRegistration(load_volume(case / "mri.nii.gz"), sweep, truth)
    level = reg.level(-1)
    centre = truth[:3, :3] @ reg.points_reference.mean(axis=0) + truth[:3, 3]
    out = {}
    for axis, d in (("elevation", reg.elevation_direction), ("lateral", reg.lateral_direction)):
        direction = truth[:3, :3] @ d
        values = [
            level.similarity(correction(np.r_[s * direction, 0, 0, 0], centre) @ truth)
            for s in np.arange(-10, 10.5, 1.0)
        ]
        out[axis] = np.round(np.array(values) - values[10], 4).tolist()
    return out


def main(args: list[str]) -> None:
    for arg in args:
        kind, path = arg.split(":", 1)
        case = Path(path)
        if kind == "indep":
            calibration, truth = case / "cal.txt", read_initial(case / "truth.txt")
        else:
            from usnav.sim import load_truth

            calibration, truth = case / "calibration.toml", load_truth(case).reference_to_mri
        for axis, values in profile(case, calibration, truth).items():
            print(case.name, axis, values, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
