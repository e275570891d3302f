"""The per-point confidence calibration: the shipped table, the fit, the check (issue 11)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from usnav.errors import InputError
from usnav.margins import MarginOptions
from usnav.margins.calibration import (
    HELD_OUT_FAMILIES,
    TUNING_FAMILIES,
    cases_for,
    check_calibration,
    load_outcomes,
    save_outcomes,
)
from usnav.margins.estimator import calibrate_confidence
from usnav.margins.evaluate import PointOutcomes, fit_confidence_calibration
from usnav.margins.options import CONFIDENCE_CALIBRATION, load_confidence_calibration


def _outcomes(rate, n_cases: int = 20, per_case: int = 200, seed: int = 0) -> PointOutcomes:
    """Synthetic points: raw confidence uniform 0..1, the ultrasound beats the MRI with
    probability ``rate(raw)``."""
    rng = np.random.default_rng(seed)
    raw = rng.uniform(0, 1, n_cases * per_case)
    beat = rng.uniform(0, 1, raw.size) < rate(raw)
    errors = rng.uniform(0, 1, raw.size)
    case = np.repeat(np.arange(n_cases), per_case)
    return PointOutcomes(raw, raw.copy(), beat, errors, errors, case)


def test_the_shipped_table_is_package_data_and_the_default() -> None:
    knots = load_confidence_calibration()
    assert knots == CONFIDENCE_CALIBRATION == MarginOptions().confidence_calibration
    raw, out = np.asarray(knots).T
    assert np.all(np.diff(raw) > 0) and np.all(np.diff(out) >= 0)
    # below the raw "seen" bar a point is never published as seen
    assert calibrate_confidence(np.array([0.0, 0.3, 0.49]), knots).max() < 0.5


def test_a_broken_table_is_refused_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "table.json"
    bad.write_text(json.dumps({"knots": "not knots"}))
    with pytest.raises(InputError, match="table.json"):
        load_confidence_calibration(bad)
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"knots": [[0, 0], [0.5, 0.6], [1, 0.8]]}))
    assert load_confidence_calibration(good) == ((0.0, 0.0), (0.5, 0.6), (1.0, 0.8))


def test_a_fit_on_one_set_is_calibrated_on_another_from_the_same_source() -> None:
    """Fitted on one draw, the map states the rate of another draw of the same process."""

    def truth(raw):
        return np.clip(0.3 + 0.6 * raw, 0, 1)  # beats the MRI 60 % at raw 0.5, 90 % at 1

    knots = fit_confidence_calibration(_outcomes(truth, seed=1))
    check = check_calibration(_outcomes(truth, seed=2), knots)
    assert check.ece < 0.03 and check.ece_low <= check.ece <= check.ece_high
    assert check.met
    assert abs(check.mean_confidence - check.beat_rate) < 0.02
    # the raw confidence states 0.5..1 where the rate is 0.6..0.9: a worse calibration
    assert check.ece_raw > check.ece


def test_a_map_that_overstates_is_reported_as_not_calibrated() -> None:
    knots = fit_confidence_calibration(_outcomes(lambda raw: 0.3 + 0.6 * raw, seed=1))
    shifted = check_calibration(_outcomes(lambda raw: 0.2 + 0.3 * raw, seed=3), knots)
    assert shifted.mean_confidence - shifted.beat_rate > 0.2
    assert shifted.ece > 0.2 and not shifted.met


def test_points_that_do_not_beat_the_mri_are_never_published_as_seen() -> None:
    """Item 4's first rule: where the refined points do not beat the MRI contour more often
    than not on the tuning data, the fitted map keeps them below 0.5 (not seen)."""
    knots = fit_confidence_calibration(_outcomes(lambda raw: np.where(raw < 0.8, 0.3, 0.8)))
    published = calibrate_confidence(np.array([0.55, 0.7, 0.75]), knots)
    assert np.all(published < 0.5)
    assert calibrate_confidence(np.array([0.95]), knots)[0] > 0.5


def test_a_fit_by_family_states_the_worst_familys_rate() -> None:
    """Two appearances on which the same raw confidence means different rates: the fit by
    family states the worse one (it holds on both), the pooled fit their mixture."""
    good = _outcomes(lambda raw: np.full(raw.size, 0.9), n_cases=10, seed=4)
    poor = _outcomes(lambda raw: np.full(raw.size, 0.6), n_cases=10, seed=5)
    fields = PointOutcomes.__annotations__
    both = PointOutcomes(*(np.concatenate([getattr(good, f), getattr(poor, f)]) for f in fields))
    family = np.repeat(["good", "poor"], good.raw.size)
    robust = calibrate_confidence(np.array([0.9]), fit_confidence_calibration(both, groups=family))
    pooled = calibrate_confidence(np.array([0.9]), fit_confidence_calibration(both))
    assert robust[0] == pytest.approx(0.6, abs=0.05)
    assert pooled[0] == pytest.approx(0.75, abs=0.05)
    assert check_calibration(poor, fit_confidence_calibration(both, groups=family)).ece < 0.05


def test_outcomes_round_trip_through_a_plain_npz_file(tmp_path: Path) -> None:
    outcomes = _outcomes(lambda raw: raw, n_cases=3, per_case=10)
    cases = cases_for([6001, 6002, 6003], HELD_OUT_FAMILIES)
    save_outcomes(outcomes, tmp_path / "held.npz", cases)
    back, back_cases = load_outcomes(tmp_path / "held.npz")
    assert back_cases == [(6001, "frequency-psf"), (6002, "probe-geometry"), (6003, "sos-error")]
    for name in ("raw", "published", "beat", "predicted_mm", "observed_mm", "case"):
        np.testing.assert_array_equal(getattr(back, name), getattr(outcomes, name))


def test_the_family_split_is_disjoint() -> None:
    assert not set(TUNING_FAMILIES) & set(HELD_OUT_FAMILIES)


def test_a_case_whose_sweep_misses_the_tumor_gives_no_points_not_an_error(monkeypatch) -> None:
    """Seed 7739 (``sweep-anatomy``, 24 frames) never has the margins and the true tumor in
    view together: the collection of the session-33 check stopped on it (concatenating
    nothing). It gives no points; a case beside it still gives its own."""
    import functools

    from usnav.margins import evaluate
    from usnav.margins.evaluate import point_outcomes

    # each case simulated once (~5 s): the simulator is seeded, so the second call's 7739 is
    # the first call's frames; point_outcomes itself runs in full both times
    monkeypatch.setattr(evaluate, "simulated_frames", functools.cache(evaluate.simulated_frames))
    none = point_outcomes([7739], frames=24, families=["sweep-anatomy"], workers=1)
    assert none.raw.size == none.case.size == none.beat.size == 0
    assert none.case.dtype == np.int32
    both = point_outcomes(
        [7739, 7741], frames=24, families=["sweep-anatomy", "frequency-psf"], workers=1
    )
    assert both.raw.size > 50 and set(both.case.tolist()) == {1}
