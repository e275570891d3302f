"""The stated uncertainty: a 95 % bound on the error at the field of view's centre, made of a
measured spread and a systematic budget; an estimate it cannot bound below 2 mm is flagged (never
confident), an ambiguous one rejected."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usnav.registration.rigid import (
    RegistrationOptions,
    SweepRegistration,
    register_sweep,
    uncertainty_terms,
)


def test_terms_add_in_quadrature_and_scale_with_depth():
    opts = RegistrationOptions(
        statistical_scale=2.0,
        similarity_bias_mm=0.5,
        calibration_error_mm=1.0,
        calibration_error_deg=1.0,
        speed_of_sound_error=0.04,
        echo_offset_mm=0.3,
    )
    shallow = uncertainty_terms(0.25, 10.0, opts, tumor_shift_mm=3.0)
    deep = uncertainty_terms(0.25, 40.0, opts, tumor_shift_mm=3.0)
    assert shallow["statistical"] == pytest.approx(0.5)
    assert shallow["calibration"] == pytest.approx(1.0 + np.radians(1.0) * 10.0)
    assert shallow["speed_of_sound"] == pytest.approx(0.4)
    assert shallow["tumor_shift"] == 3.0
    parts = [v for k, v in shallow.items() if k != "uncertainty_mm"]
    assert shallow["uncertainty_mm"] == pytest.approx(np.sqrt(np.sum(np.square(parts))))
    assert deep["uncertainty_mm"] > shallow["uncertainty_mm"]  # lever arm and depth scaling
    # nothing known to be wrong and nothing measured: no uncertainty is claimed beyond 0
    zero = RegistrationOptions(
        statistical_scale=0,
        similarity_bias_mm=0,
        calibration_error_mm=0,
        calibration_error_deg=0,
        speed_of_sound_error=0,
        echo_offset_mm=0,
        tumor_shift_mm=0,
    )
    assert uncertainty_terms(1.0, 20.0, zero)["uncertainty_mm"] == 0.0
    # unless told otherwise, the bound carries the options' whole tumor shift
    assert uncertainty_terms(1.0, 20.0, opts)["tumor_shift"] == opts.tumor_shift_mm


def test_a_clear_case_is_accepted_confident_with_a_bound_covering_its_error(
    small_case, small_case_registered
):
    _, _, _, truth = small_case
    result = small_case_registered  # register_sweep(mri, sweep, truth.init_reference_to_mri)
    assert result.accepted, result.reason
    error = truth.mtre_now(result.reference_to_mri)  # at the tumor where it is now
    assert result.uncertainty_mm >= error, (result.uncertainty_mm, error)
    assert result.confident == (result.uncertainty_mm <= 2.0)
    doc = result.to_json()
    assert doc["confident"] is result.confident
    assert doc["uncertainty_mm"] == pytest.approx(result.uncertainty_mm, abs=1e-5)
    assert set(doc["uncertainty_terms"]) >= {"statistical", "calibration", "uncertainty_mm"}
    assert result.estimate().uncertainty_mm == result.uncertainty_mm


def test_an_estimate_that_cannot_be_bounded_below_2_mm_is_flagged(small_case):
    """The same registration, declared with a calibration known only to 2 mm / 2°: the image
    cannot see that error, so the bound exceeds 2 mm and the estimate, although better than
    the start, is not confident (a display must show UNCERTAIN)."""
    mri, sweep, _, truth = small_case
    opts = RegistrationOptions(calibration_error_mm=2.0, calibration_error_deg=2.0)
    result = register_sweep(mri, sweep, truth.init_reference_to_mri, opts)
    assert result.accepted, result.reason
    assert result.uncertainty_mm > 2.0
    assert not result.confident
    assert "UNCERTAIN" in result.reason
    assert result.to_json()["confident"] is False


def test_an_ambiguous_candidate_is_rejected_without_an_uncertainty_claim(small_case):
    """A pose 6 mm along the sweep from the optimum (the direction a transverse sweep of the
    cord resolves least) is rejected as ambiguous: never accepted, never confident."""
    mri, sweep, _, truth = small_case
    problem = SweepRegistration(mri, sweep, truth.reference_to_mri)
    optimum = problem.run(truth.reference_to_mri, warm=True).candidate
    rotation = optimum[:3, :3]
    wrong, current = optimum.copy(), optimum.copy()
    wrong[:3, 3] += 6.0 * (rotation @ problem.elevation_direction)
    current[:3, 3] += 10.0 * (
        rotation @ np.cross(problem.elevation_direction, problem.beam_direction)
    )
    judged = problem.judge(wrong, current)
    assert not judged.accepted and not judged.confident
    assert "ambiguous" in judged.reason
    assert judged.diagnostics["ambiguity_margin"] < problem.options.ambiguity_min_gain
    # RESULT.json: the ReferenceToMri written is the one kept, and no bound is claimed for it;
    # the candidate's own bound is kept apart (a script reading the pair must not be misled)
    doc = judged.to_json()
    np.testing.assert_allclose(doc["ReferenceToMri"], current)
    assert doc["uncertainty_mm"] is None
    if np.isfinite(judged.uncertainty_mm):
        assert doc["candidate_uncertainty_mm"] == pytest.approx(judged.uncertainty_mm, abs=1e-5)


def test_the_bound_carries_the_tumor_shift_until_the_tumor_stage_follows_it(
    small_case, small_case_dirs
):
    """Margins drawn with the global (bony) estimate may be off by the whole cord shift, so
    its bound carries ``tumor_shift_mm``; once the tumor stage moved the estimate to the
    tumor, the stage's residual ``tumor_stage_error_mm`` replaces it."""
    from usnav.io.volume import load_volume

    mri, sweep, _, truth = small_case
    label = load_volume(small_case_dirs[7] / "tumor_label.nii.gz")
    # a site budget small enough that the staged estimate can be confident
    site = {"similarity_bias_mm": 0.3, "calibration_error_mm": 0.3, "calibration_error_deg": 0.2}
    opts = RegistrationOptions(
        **site, speed_of_sound_error=0.005, tumor_shift_mm=3.0, tumor_stage_error_mm=0.4
    )
    bony = register_sweep(mri, sweep, truth.init_reference_to_mri, opts)
    assert bony.accepted, bony.reason
    assert bony.uncertainty_terms["tumor_shift"] == 3.0
    assert bony.uncertainty_mm > 3.0 and not bony.confident
    staged = register_sweep(mri, sweep, truth.init_reference_to_mri, opts, tumor_label=label)
    assert staged.tumor_stage is not None and staged.tumor_stage["applied"], staged.reason
    assert staged.uncertainty_terms["tumor_shift"] == 0.4
    others = {k: v for k, v in staged.uncertainty_terms.items() if k != "uncertainty_mm"}
    assert staged.uncertainty_mm == pytest.approx(np.sqrt(sum(v * v for v in others.values())))
    assert staged.uncertainty_mm < bony.uncertainty_mm
    assert staged.to_json()["uncertainty_mm"] == pytest.approx(staged.uncertainty_mm, abs=1e-5)
    assert "tumor stage's estimate" in staged.reason
    # the reason says what the restated bound says, never the pre-stage UNCERTAIN
    assert "UNCERTAIN" in bony.reason
    assert staged.confident == (staged.uncertainty_mm <= opts.max_confident_uncertainty_mm)
    assert ("UNCERTAIN" in staged.reason) == (not staged.confident)


@settings(max_examples=60, deadline=None)
@given(
    spread=st.floats(0, 5),
    depth=st.floats(0, 80),
    model=st.floats(0, 3),
    stage=st.booleans(),
    operated=st.booleans(),
)
def test_no_estimate_states_less_than_the_budgets_systematic_floor(
    spread: float, depth: float, model: float, stage: bool, operated: bool
) -> None:
    """``systematic_floor_mm`` is what "nothing can be LIVE" rests on: every bound the verdict
    can state with the same budget is at least it, and it is reached (spread, model and depth
    0, the tumor followed)."""
    from usnav.registration.verdict import systematic_floor_mm, uncertainty_terms

    options = RegistrationOptions()
    floor = systematic_floor_mm(options, operated=operated)
    shift = options.tumor_stage_error_mm if stage else None
    removed = options.removed_label_error_mm if operated else 0.0
    terms = uncertainty_terms(
        spread,
        depth,
        options,
        model_spread_mm=model,
        tumor_shift_mm=shift,
        removed_label_mm=removed,
    )
    assert terms["uncertainty_mm"] >= floor - 1e-12
    reached = uncertainty_terms(
        0.0, 0.0, options, tumor_shift_mm=options.tumor_stage_error_mm, removed_label_mm=removed
    )
    assert reached["uncertainty_mm"] == pytest.approx(floor)
    # the defaults: 1.5 bias, 1.0 calibration, 0.3 echo, 1.1 stage → 2.13 mm > 2 mm
    assert systematic_floor_mm(options) == pytest.approx((1.5**2 + 1.0**2 + 0.3**2 + 1.1**2) ** 0.5)
