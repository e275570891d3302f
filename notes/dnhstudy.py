"""Do-no-harm study harness (#16, not shipped): register simulator cases with the
confirmation rule measured but never rejecting, and print one JSON line per case and variant
with every verdict statistic and the truth's errors, so that rules can be applied offline.

    python notes/dnhstudy.py ROOT SEEDS VARIANTS [--wait] [key=json ...]

ROOT holds ``<family>-<seed>`` folders (``usnav simulate --seeds``). Variants:

- ``nom``: the case as simulated (its own 4-8 mm / 3-8 deg initial estimate);
- ``small``: the truth offset by 0.5-2 mm / 0.5-2 deg (a navigation alignment that is already
  good: the Case 24 "unperturbed" situation, where any large correction is harm);
- ``geom``: the recording perturbed as notes/regstudy.py does (calibration <= 1 mm / 1 deg,
  speed of sound 1480-1580 m/s, echo trailing 2-4 px), nominal initial estimate;
- ``decoy``: a wrong candidate judged against a fair initial estimate (the truth offset by
  2-5 mm / 2-5 deg): the local optimum of the similarity reached from the truth shifted 7-12 mm
  in a random direction (another basin), as a search that jumped to the wrong basin would
  propose it. What a do-no-harm rule must reject when it scores above the initial estimate;
  ``decoy2``: the same with other random draws;
- ``gain``: the recording's grey levels through a gamma of 0.5-2, nominal initial estimate.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from regstudy import load_family

from usnav.evaluate.truth import load_scorer


def emit(row: dict) -> None:
    """One JSON line, floats rounded."""
    print(
        json.dumps({k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()}),
        flush=True,
    )


def small_init(
    truth_matrix: np.ndarray, seed: int, centre: np.ndarray, lo: float = 0.5, hi: float = 2.0
) -> np.ndarray:
    rng = np.random.default_rng(seed + 77)
    d = rng.normal(size=3)
    d *= rng.uniform(lo, hi) / np.linalg.norm(d)
    a = rng.normal(size=3)
    a *= rng.uniform(lo, hi) / np.linalg.norm(a)
    from scipy.spatial.transform import Rotation

    m = np.eye(4)
    m[:3, :3] = Rotation.from_rotvec(np.radians(a)).as_matrix()
    m[:3, 3] = centre - m[:3, :3] @ centre + d  # rotation about the tumor (MRI mm)
    return m @ truth_matrix


def decoy(problem, truth_matrix: np.ndarray, seed: int) -> np.ndarray:
    """The finest-level optimum reached from the truth shifted 7-12 mm in a random direction."""
    from usnav.registration.pose import _apply, _optimise, correction

    rng = np.random.default_rng(seed + 991)
    d = rng.normal(size=3)
    d *= rng.uniform(7.0, 12.0) / np.linalg.norm(d)
    level = problem.level(-1)
    centre = _apply(truth_matrix, problem.points_reference).mean(axis=0)
    sim = level.similarity

    def cost(p: np.ndarray) -> float:
        return -sim(correction(p, centre) @ truth_matrix)

    x, _, _ = _optimise(cost, np.r_[d, 0, 0, 0], np.r_[[1.0] * 3, [1.0] * 3], 80, 0.05)
    return correction(x, centre) @ truth_matrix


def run(folder: Path, seed: int, variant: str, opts) -> dict:
    from usnav.registration.rigid import SweepRegistration

    family = variant if variant in ("geom", "gain") else "base"
    mri, sweep, truth, _info = load_family(folder, family, seed)
    salt = 1000 if variant == "decoy2" else 0
    scorer = load_scorer(folder / "truth.json")
    init = truth.init_reference_to_mri
    if variant == "small":
        init = small_init(
            truth.reference_to_mri, seed, np.asarray(truth.landmarks["tumor_centroid"]).reshape(3)
        )
    if variant.startswith("decoy"):
        init = small_init(
            truth.reference_to_mri,
            seed + 1 + salt,
            np.asarray(truth.landmarks["tumor_centroid"]).reshape(3),
            2.0,
            5.0,
        )
    problem = SweepRegistration(mri, sweep, init, opts)
    t0 = time.perf_counter()
    facts = {}
    if variant.startswith("decoy"):
        wrong = decoy(problem, truth.reference_to_mri, seed + salt)
        res = problem.judge(wrong, init)
        # the confirmation's statistics even where an earlier test rejected the decoy
        pts = problem.points_reference[:: max(1, len(problem.points_reference) // 4000)]
        _, _, facts = problem._confirm(wrong, init, res.similarity, res.correction_mm, pts)
        facts = {"x_" + k: v for k, v in facts.items()}
    else:
        res = problem.run(init)
    row = {
        "case": folder.name,
        "family": folder.name.rsplit("-", 1)[0],
        "seed": seed,
        "variant": variant,
        "init": scorer.error_mm(init),
        "cand": scorer.error_mm(res.candidate),
        "accepted": bool(res.accepted),
        "unc": res.uncertainty_mm,
        "corr": res.correction_mm,
        "sim": res.similarity,
        "sim0": res.initial_similarity,
        "secs": time.perf_counter() - t0,
        "reason": res.reason[:160],
        **res.diagnostics,
        **facts,
    }
    return row


def main() -> None:
    from usnav.registration import warm_up
    from usnav.registration.rigid import RegistrationOptions

    warm_up()
    root = Path(sys.argv[1])
    a, b = (int(v) for v in sys.argv[2].split("-"))
    variants = sys.argv[3].split(",")
    kw = {}
    for arg in sys.argv[4:]:
        if "=" in arg:
            k, v = arg.split("=", 1)
            kw[k] = json.loads(v)
    opts = RegistrationOptions(**kw)
    for seed in range(a, b + 1):
        while True:
            found = [p for p in root.glob(f"*-{seed}") if (p / "truth.json").exists()]
            if found or "--wait" not in sys.argv:
                break
            time.sleep(10)
        for folder in found:
            for variant in variants:
                row = run(folder, seed, variant, opts)
                emit(row)


if __name__ == "__main__":
    main()
