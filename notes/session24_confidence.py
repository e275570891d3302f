"""Session 24: can the per-point confidence use the point's disagreement with the MRI? (No.)

    PYTHONPATH=$PWD python notes/session24_confidence.py collect NAME FIRST LAST FAMILIES
        FAMILIES: tuning | held | report (usnav.sim TUNING_FAMILIES, HELD_OUT_FAMILIES,
        HELD_OUT_REPORT_ORDER); one .npz per case under $USNAV_CAL_DIR/s24/NAME (resumable).
        As notes/fit_confidence_calibration.py collects, plus each point's |disagreement|.
    PYTHONPATH=$PWD python notes/session24_confidence.py select
        Tuning seeds 1101-1124 only (NAME "tuning"): leave one tuning family out; candidates
        fitted on three families state the fourth's points. Rule (set before any held-out
        data was looked at): the lowest calibration error of the seen points pooled over the
        four folds.
    PYTHONPATH=$PWD python notes/session24_confidence.py report NAME...
        The shipped knots against the selected model (fitted on all tuning points).

What came out is in notes/session-24.md: the model won on the tuning families and did not
confirm on 189 held-out cases, so the shipped knots stayed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from usnav.margins.calibration import cases_for, check_calibration
from usnav.margins.estimator import MarginEstimator, calibrate_confidence
from usnav.margins.evaluate import (
    PointOutcomes,
    calibration_error,
    fit_confidence_calibration,
    sample_at,
    signed_distance_image,
    simulated_frames,
)
from usnav.margins.options import MarginOptions, load_confidence_calibration
from usnav.sim import HELD_OUT_FAMILIES, TUNING_FAMILIES
from usnav.sim.families import HELD_OUT_REPORT_ORDER

OUT = Path(os.environ.get("USNAV_CAL_DIR", "/tmp/usnav-confidence")) / "s24"
CAP_MM = 1.5


def collect(name: str, first: int, last: int, which: str) -> None:
    families = {"tuning": TUNING_FAMILIES, "held": HELD_OUT_FAMILIES}.get(
        which, HELD_OUT_REPORT_ORDER
    )
    folder = OUT / name
    folder.mkdir(parents=True, exist_ok=True)
    options = MarginOptions(confidence_calibration=None)
    for seed, family in cases_for(list(range(first, last + 1)), families):
        path = folder / f"{seed}-{family}.npz"
        if path.exists():
            continue
        sim = simulated_frames(seed, frames=24, workers=1, family=family)
        estimator = MarginEstimator(sim.label, options, warm_up=False)
        rng = np.random.default_rng(seed)  # the registration errors of point_outcomes
        rows = []
        for image, image_to_mri, truth in zip(
            sim.images, sim.image_to_mri, sim.truth_codes, strict=True
        ):
            direction = rng.normal(size=3)
            shift = np.eye(4)
            shift[:3, 3] = direction / np.linalg.norm(direction) * rng.uniform(0, 1.5)
            margins = estimator.estimate(image, shift @ image_to_mri, None)
            if not (margins.in_view and truth.any()):
                continue
            whole = signed_distance_image(truth > 0, margins.spacing_mm)
            for c in margins.contours:
                k = c.faces_tissue
                pred = np.abs(sample_at(whole, c.predicted_px))[k]
                obs = np.abs(sample_at(whole, c.observed_px))[k]
                rows.append(np.column_stack([c.confidence[k], c.disagreement_mm[k], pred, obs]))
        table = np.vstack(rows) if rows else np.zeros((0, 4))
        table = table[np.isfinite(table[:, 2]) & np.isfinite(table[:, 3])]
        np.savez_compressed(path, points=table, seed=seed, family=family)
        print(name, seed, family, len(table), flush=True)


def load(name: str) -> tuple[PointOutcomes, np.ndarray, np.ndarray]:
    """The points of a collected set, their disagreement (mm) and each point's family."""
    tables, families, cases = [], [], []
    for k, path in enumerate(sorted((OUT / name).glob("*.npz"))):
        with np.load(path, allow_pickle=False) as z:
            tables.append(z["points"])
            families += [str(z["family"])] * len(z["points"])
            cases += [k] * len(z["points"])
    t = np.vstack(tables)
    beat = t[:, 3] < t[:, 2]
    outcomes = PointOutcomes(t[:, 0], t[:, 0], beat, t[:, 2], t[:, 3], np.array(cases))
    return outcomes, t[:, 1], np.array(families)


def fit_logistic(outcomes: PointOutcomes, disagreement: np.ndarray):
    """P(beat) = logistic(w0 + w1 raw + w2 min(|d|, 1.5)) on the points with raw >= 0.5; below,
    0.49 raw / 0.5 (never seen)."""
    keep = outcomes.raw >= 0.5
    x = np.column_stack(
        [np.ones(keep.sum()), outcomes.raw[keep], np.minimum(np.abs(disagreement[keep]), CAP_MM)]
    )
    y = outcomes.beat[keep].astype(float)
    w = minimize(
        lambda w: np.sum(np.logaddexp(0, x @ w) - y * (x @ w)) + 1e-3 * w @ w,
        np.zeros(3),
        method="BFGS",
    ).x

    def state(raw: np.ndarray, d: np.ndarray) -> np.ndarray:
        z = w[0] + w[1] * raw + w[2] * np.minimum(np.abs(d), CAP_MM)
        return np.where(raw >= 0.5, 1 / (1 + np.exp(-z)), 0.98 * raw)

    state.weights = w
    return state


def _subset(o: PointOutcomes, mask: np.ndarray) -> PointOutcomes:
    return PointOutcomes(*(getattr(o, f)[mask] for f in PointOutcomes.__annotations__))


CANDIDATES = {
    "knots, worst family (shipped)": lambda o, d, fam: fit_confidence_calibration(o, groups=fam),
    "knots, pooled": lambda o, d, fam: fit_confidence_calibration(o),
    "logistic: raw + min(|disagreement|, 1.5 mm)": lambda o, d, fam: fit_logistic(o, d),
}


def _state(calibration, raw: np.ndarray, d: np.ndarray) -> np.ndarray:
    return calibration(raw, d) if callable(calibration) else calibrate_confidence(raw, calibration)


def select() -> None:
    o, d, family = load("tuning")
    for name, fit in CANDIDATES.items():
        stated = np.zeros(o.raw.size)
        for held in sorted(set(family)):
            train, test = family != held, family == held
            calibration = fit(_subset(o, train), d[train], family[train])
            stated[test] = _state(calibration, o.raw[test], d[test])
        seen = stated >= 0.5
        refined = np.where(seen, o.observed_mm, o.predicted_mm)
        print(
            f"{name}: pooled ECE {calibration_error(stated, o.beat, where=seen):.3f}; seen "
            f"{seen.mean():.1%}, beat {o.beat[seen].mean():.3f}; refined boundary mean "
            f"{refined.mean():.3f} mm (MRI {o.predicted_mm.mean():.3f})"
        )


def report(names: list[str]) -> None:
    o, d, _ = load("tuning")
    model = fit_logistic(o, d)
    print("logistic weights (intercept, raw, |d|):", np.round(model.weights, 4))
    for name in names:
        o, d, _ = load(name)
        for label, calibration in (
            ("shipped knots", load_confidence_calibration()),
            ("logistic", model),
        ):
            stated = _state(calibration, o.raw, d)
            c = check_calibration(
                PointOutcomes(stated, stated, o.beat, o.predicted_mm, o.observed_mm, o.case),
                None,
            )
            seen = stated >= 0.5
            refined = np.where(seen, o.observed_mm, o.predicted_mm)
            print(
                f"{name} ({len(np.unique(o.case))} cases) {label}: ECE {c.ece:.3f} "
                f"[{c.ece_low:.3f}, {c.ece_high:.3f}]; seen {c.seen}/{c.points}; beat "
                f"{c.beat_rate:.3f} stated {c.mean_confidence:.3f}; refined boundary mean "
                f"{refined.mean():.3f} mm (MRI {o.predicted_mm.mean():.3f}); within 1 mm "
                f"{c.within_1mm:.3f}"
            )


if __name__ == "__main__":
    if sys.argv[1:2] == ["collect"]:
        collect(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    elif sys.argv[1:2] == ["select"]:
        select()
    elif sys.argv[1:2] == ["report"]:
        report(sys.argv[2:])
    else:
        print(__doc__)
