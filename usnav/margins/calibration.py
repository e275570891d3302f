"""The per-point confidence calibration: the shipped table, how it is fitted, how it is checked.

A margin point's published ``confidence`` (when ≥ 0.5: the point is shown as "seen") states
the probability that the ultrasound's point is closer to the true boundary than the MRI's
point at the same place — its error is within the MRI contour's own error there. The map from
the refinement's raw confidence to that probability is a small table of (raw, calibrated)
knots, linear in between, shipped as data (``confidence_calibration.json`` beside this
module) with its provenance. It is fitted on the TUNING appearance families only
(:data:`TUNING_FAMILIES`, seeds 1101-1124), per family, each bin stating the worst family's
rate (the raw confidence means less on some appearances than on others: a statement that
holds on every tuning family rather than on their mixture), and checked on held-out families
and fresh seeds (:data:`HELD_OUT_FAMILIES`) by its expected calibration error with a
case-bootstrap interval (``usnav bench --only calibrated``). The target
(:data:`TARGET_ECE`): the upper end of that interval ≤ 0.05.

Regenerate: ``python notes/fit_confidence_calibration.py`` (see its docstring).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from usnav.margins.evaluate import PointOutcomes, calibration_error
from usnav.margins.options import CALIBRATION_FILE, load_confidence_calibration
from usnav.sim import HELD_OUT_FAMILIES, TUNING_FAMILIES
from usnav.sim.dataset import dataset_plan

__all__ = [
    "CALIBRATION_FILE",
    "HELD_OUT_FAMILIES",
    "TARGET_ECE",
    "TUNING_FAMILIES",
    "CalibrationCheck",
    "cases_for",
    "check_calibration",
    "load_confidence_calibration",
    "load_outcomes",
    "save_outcomes",
]

#: The stated target: the seen points' expected calibration error on held-out families.
TARGET_ECE = 0.05


def cases_for(seeds: list[int], families: tuple[str, ...]) -> list[tuple[int, str]]:
    """(seed, family) pairs: the families taken in turn over the seeds, as ``usnav simulate
    --seeds --families`` plans them (:func:`usnav.sim.dataset.dataset_plan`)."""
    return [(seed, family) for family, seed in dataset_plan(seeds, families)]


def save_outcomes(outcomes: PointOutcomes, path: Path, cases: list[tuple[int, str]]) -> None:
    """Write collected point outcomes (and their cases) as an ``.npz`` of plain arrays."""
    np.savez_compressed(
        path,
        raw=outcomes.raw,
        published=outcomes.published,
        beat=outcomes.beat,
        predicted_mm=outcomes.predicted_mm,
        observed_mm=outcomes.observed_mm,
        case=outcomes.case,
        seeds=np.array([s for s, _ in cases], np.int64),
        families=np.array([f for _, f in cases]),
    )


def load_outcomes(path: Path) -> tuple[PointOutcomes, list[tuple[int, str]]]:
    """Read what :func:`save_outcomes` wrote (no pickle)."""
    with np.load(path, allow_pickle=False) as z:
        outcomes = PointOutcomes(
            z["raw"], z["published"], z["beat"], z["predicted_mm"], z["observed_mm"], z["case"]
        )
        cases = [(int(s), str(f)) for s, f in zip(z["seeds"], z["families"], strict=True)]
    return outcomes, cases


@dataclass(frozen=True)
class CalibrationCheck:
    """The calibration of the points shown as seen, on one set of cases.

    Attributes
    ----------
    ece, ece_low, ece_high
        Expected calibration error of the published confidence (equal-width bins of 0.1), and
        its 95 % case-bootstrap interval (cases resampled with replacement: points of one case
        are not independent).
    ece_raw
        The same for the raw refinement confidence (the baseline).
    seen, points
        Points shown as seen (published ≥ 0.5), and all tissue-facing points.
    beat_rate, beat_low, beat_high
        Observed rate at which a seen point beats the MRI's, with its bootstrap interval.
    mean_confidence
        Mean published confidence of the seen points.
    per_bin
        (bin low edge, points, mean confidence, observed rate) per non-empty bin.
    within_1mm
        Fraction of seen points whose boundary error is ≤ 1 mm (an absolute tolerance, for
        reading the relative statement above).
    """

    ece: float
    ece_low: float
    ece_high: float
    ece_raw: float
    seen: int
    points: int
    beat_rate: float
    beat_low: float
    beat_high: float
    mean_confidence: float
    per_bin: tuple[tuple[float, int, float, float], ...]
    within_1mm: float = float("nan")

    @property
    def met(self) -> bool:
        """Whether the target holds: the ECE's upper bootstrap bound ≤ :data:`TARGET_ECE`."""
        return self.ece_high <= TARGET_ECE


def check_calibration(
    outcomes: PointOutcomes,
    knots: tuple[tuple[float, float], ...] | None,
    *,
    seen_from: float = 0.5,
    resamples: int = 1000,
    seed: int = 0,
) -> CalibrationCheck:
    """How well ``knots`` state the seen points' chance of beating the MRI contour.

    ``outcomes.raw`` is mapped through ``knots`` (None: the published values as collected); a
    point is seen when its mapped confidence is ≥ ``seen_from``.
    """
    from usnav.margins.estimator import calibrate_confidence

    conf = outcomes.published if knots is None else calibrate_confidence(outcomes.raw, knots)
    seen = conf >= seen_from
    beat = outcomes.beat.astype(np.float64)
    ece = calibration_error(conf, beat, where=seen)
    ece_raw = calibration_error(outcomes.raw, beat, where=seen)
    cases = np.unique(outcomes.case)
    members = [np.flatnonzero(outcomes.case == c) for c in cases]
    rng = np.random.default_rng(seed)
    eces, rates = [], []
    for _ in range(resamples):
        pick = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        s = seen[pick]
        if not s.any():
            continue
        eces.append(calibration_error(conf[pick], beat[pick], where=s))
        rates.append(beat[pick][s].mean())
    bins = []
    index = np.minimum((conf * 10).astype(int), 9)
    for b in range(10):
        inside = seen & (index == b)
        if inside.any():
            bins.append(
                (b / 10, int(inside.sum()), float(conf[inside].mean()), float(beat[inside].mean()))
            )
    nan = float("nan")
    return CalibrationCheck(
        ece=ece,
        ece_low=float(np.percentile(eces, 2.5)) if eces else nan,
        ece_high=float(np.percentile(eces, 97.5)) if eces else nan,
        ece_raw=ece_raw,
        seen=int(seen.sum()),
        points=int(seen.size),
        beat_rate=float(beat[seen].mean()) if seen.any() else nan,
        beat_low=float(np.percentile(rates, 2.5)) if rates else nan,
        beat_high=float(np.percentile(rates, 97.5)) if rates else nan,
        mean_confidence=float(conf[seen].mean()) if seen.any() else nan,
        per_bin=tuple(bins),
        within_1mm=float((outcomes.observed_mm[seen] <= 1.0).mean()) if seen.any() else nan,
    )
