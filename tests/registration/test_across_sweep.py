"""A candidate rejected only as ambiguous along the sweep still says where the anatomy is
across it: the across-sweep estimate (the candidate with the current estimate's position along
the sweep), its geometry, when it exists, and how the live worker draws margins with it. Any
candidate rejected only for a tie also offers itself (the tied candidate), which the worker
draws margins with first.

The ambiguity is made real on a small simulated case by asking the verdict for a lead no
similarity reaches (``ambiguity_min_gain`` = 1): every distinct optimum the probes find is
then a tie, and the candidate (which passes every other test) is rejected for that alone.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from usnav.registration.options import RegistrationOptions
from usnav.registration.pose import _apply
from usnav.registration.rigid import register_sweep
from usnav.registration.search import SweepRegistration
from usnav.registration.worker import (
    ACROSS_SWEEP_NOTE,
    TIED_CANDIDATE_NOTE,
    RegistrationWorker,
    WorkerOptions,
    live_cold_registration_options,
)


def _tied(axes: list[str], base: RegistrationOptions | None = None) -> RegistrationOptions:
    base = base or RegistrationOptions()
    return base.model_copy(update={"ambiguity_min_gain": 1.0, "ambiguity_axes": axes})


def _along_across(error: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    along = float(error @ s)
    return abs(along), float(np.linalg.norm(error - along * s))


@pytest.fixture(scope="module")
def tied_result(small_case):
    mri, sweep, _, truth = small_case
    options = _tied(["elevation"])
    problem = SweepRegistration(mri, sweep, truth.init_reference_to_mri, options)
    result = problem.run(truth.init_reference_to_mri)
    return problem, result


def test_a_tie_along_the_sweep_keeps_the_position_along_it_only(small_case, tied_result):
    *_, truth = small_case
    problem, result = tied_result
    assert not result.accepted and result.reason.startswith("rejected: ambiguous"), result.reason
    across = result.across_sweep_reference_to_mri
    assert across is not None
    np.testing.assert_array_equal(result.tied_candidate_reference_to_mri, result.candidate)
    cand, init = result.candidate, result.initial
    # the rotation is the candidate's; only a translation along the sweep differs from it
    np.testing.assert_allclose(across[:3, :3], cand[:3, :3], atol=1e-12)
    s = cand[:3, :3] @ problem.elevation_direction
    s /= np.linalg.norm(s)
    shift = across[:3, 3] - cand[:3, 3]
    np.testing.assert_allclose(shift, (shift @ s) * s, atol=1e-9)
    # the field of view's centre: along the sweep where the initial estimate puts it, across
    # the sweep where the candidate does
    c = problem.points_reference.mean(axis=0, keepdims=True)
    p_across, p_cand, p_init = (_apply(m, c)[0] for m in (across, cand, init))
    assert (p_across - p_init) @ s == pytest.approx(0.0, abs=1e-9)
    d = p_across - p_cand
    np.testing.assert_allclose(d - (d @ s) * s, 0.0, atol=1e-9)
    assert result.diagnostics["across_sweep_moved_mm"] == pytest.approx(abs(d @ s), abs=1e-9)
    # and on this case what the images determined is right: across the sweep the estimate is
    # nearer the truth at the field of view's centre than the navigation registration
    true_c = _apply(truth.reference_to_mri, c)[0]
    _, init_across = _along_across(p_init - true_c, s)
    _, est_across = _along_across(p_across - true_c, s)
    assert est_across < 0.5 * init_across


def test_the_result_file_carries_it_and_the_kept_estimate_is_unchanged(tied_result):
    _, result = tied_result
    doc = result.to_json()
    np.testing.assert_allclose(
        doc["AcrossSweepReferenceToMri"], result.across_sweep_reference_to_mri
    )
    # the CLI contract: a rejection keeps the initial ReferenceToMri, with no bound
    np.testing.assert_array_equal(doc["ReferenceToMri"], result.initial)
    assert doc["accepted"] is False and doc["uncertainty_mm"] is None


def test_no_across_sweep_estimate_for_other_rejections(small_case, small_case_registered):
    mri, sweep, _, truth = small_case
    # a tie along the image's lateral axis: the sweep direction is not what is in doubt
    lateral = register_sweep(mri, sweep, truth.init_reference_to_mri, _tied(["lateral"]))
    assert not lateral.accepted and "along the image" in lateral.reason, lateral.reason
    assert lateral.across_sweep_reference_to_mri is None
    assert lateral.to_json()["AcrossSweepReferenceToMri"] is None
    # an accepted estimate needs none
    accepted = small_case_registered  # register_sweep(mri, sweep, truth.init_reference_to_mri)
    assert accepted.accepted and accepted.across_sweep_reference_to_mri is None


@pytest.fixture(scope="module")
def lateral_tie(small_case):
    """A tie along the image only."""
    mri, sweep, _, truth = small_case
    return register_sweep(mri, sweep, truth.init_reference_to_mri, _tied(["lateral"]))


def test_a_tie_along_the_image_offers_its_candidate(lateral_tie):
    result = lateral_tie
    assert not result.accepted and result.only_tied, result.reason
    assert result.across_sweep_reference_to_mri is None
    np.testing.assert_array_equal(result.tied_candidate_reference_to_mri, result.candidate)
    # how far the farthest tied pose lies: at least as far as the one the reason names
    named = float(re.search(r"a pose (\d+\.\d) mm away", result.reason).group(1))
    assert result.diagnostics["tie_spread_mm"] >= named - 0.05
    doc = result.to_json()
    np.testing.assert_allclose(doc["TiedCandidateReferenceToMri"], result.candidate)
    # the CLI contract: a rejection keeps the initial ReferenceToMri, with no bound
    assert doc["accepted"] is False and doc["uncertainty_mm"] is None
    np.testing.assert_array_equal(doc["ReferenceToMri"], result.initial)


def test_a_rejection_for_another_reason_offers_no_tied_candidate(small_case):
    mri, sweep, _, truth = small_case
    options = _tied(["lateral"]).model_copy(update={"min_paired_t": 1e9})
    result = register_sweep(mri, sweep, truth.init_reference_to_mri, options)
    assert not result.accepted and not result.only_tied, result.reason
    assert result.tied_candidate_reference_to_mri is None
    assert result.to_json()["TiedCandidateReferenceToMri"] is None


def test_the_live_worker_draws_margins_with_a_tied_candidate_but_never_calls_it_checked(
    small_case,
):
    _, _, _, truth = small_case
    worker, window = _tied_worker(small_case, axes=["lateral"])
    estimate = worker.update(window)
    assert estimate is not None and not estimate.accepted and "along the image" in estimate.reason
    in_use = worker.latest_accepted()
    assert in_use.source == "init"  # the display state rule: never LIVE
    np.testing.assert_array_equal(in_use.reference_to_mri, truth.init_reference_to_mri)
    assert in_use.across_sweep_reference_to_mri is None
    assert in_use.tied_candidate_reference_to_mri is not None
    assert in_use.margins_reference_to_mri is in_use.tied_candidate_reference_to_mri
    assert in_use.unconfirmed.endswith(TIED_CANDIDATE_NOTE)
    # an accepted estimate (no tie forced) draws them with itself: the tie's candidate is gone
    worker.options = worker.options.model_copy(update={"full": live_cold_registration_options()})
    accepted = worker.update(window)
    assert accepted is not None and accepted.accepted, accepted
    in_use = worker.latest_accepted()
    assert in_use.source == "image" and in_use.tied_candidate_reference_to_mri is None
    np.testing.assert_array_equal(
        in_use.margins_reference_to_mri,
        in_use.tumor_reference_to_mri
        if in_use.tumor_reference_to_mri is not None
        else in_use.reference_to_mri,
    )
    # switched off: the navigation registration draws them
    off, window = _tied_worker(small_case, axes=["lateral"], margins_from_tied_candidate=False)
    off.update(window)
    in_use = off.latest_accepted()
    assert in_use.tied_candidate_reference_to_mri is None
    assert not in_use.unconfirmed.endswith(TIED_CANDIDATE_NOTE)
    np.testing.assert_array_equal(in_use.margins_reference_to_mri, truth.init_reference_to_mri)


def test_a_tied_candidate_far_from_the_navigation_is_not_drawn(small_case):
    """Session 29: an unconfirmed tie's candidate farther from the navigation registration
    than ``max_tied_correction_mm`` does not draw the margins (the navigation does), and the
    display's reason says why."""
    _, _, _, truth = small_case
    near, window = _tied_worker(small_case, axes=["lateral"])
    near.update(window)
    drawn = near.latest_accepted()
    assert drawn.tied_candidate_reference_to_mri is not None  # within the default 10 mm
    far, window = _tied_worker(small_case, axes=["lateral"], max_tied_correction_mm=0.01)
    estimate = far.update(window)
    assert estimate is not None and not estimate.accepted and "along the image" in estimate.reason
    in_use = far.latest_accepted()
    assert in_use.source == "init"
    assert in_use.tied_candidate_reference_to_mri is None
    np.testing.assert_array_equal(in_use.margins_reference_to_mri, truth.init_reference_to_mri)
    assert not in_use.unconfirmed.endswith(TIED_CANDIDATE_NOTE)
    assert re.search(
        r"its tied candidate, [0-9.]+ mm from the navigation registration, is "
        r"beyond the 0\.01 mm",
        in_use.unconfirmed,
    ), in_use.unconfirmed


def _tied_worker(small_case, axes=("elevation",), **options):
    mri, sweep, cal, truth = small_case
    full = _tied(list(axes), live_cold_registration_options())
    worker = RegistrationWorker(
        mri, cal, truth.init_reference_to_mri, WorkerOptions(full=full, **options)
    )
    window = [(sweep.images[i], sweep.image_to_reference[i], float(i)) for i in range(len(sweep))]
    return worker, window


@pytest.mark.parametrize("tied_first", [False, True])
def test_the_live_worker_draws_margins_across_the_sweep_but_never_calls_it_checked(
    small_case, tied_first
):
    _, _, _, truth = small_case
    worker, window = _tied_worker(small_case, margins_from_tied_candidate=tied_first)
    estimate = worker.update(window)  # in this thread: deterministic
    assert estimate is not None and not estimate.accepted, estimate
    in_use = worker.latest_accepted()
    assert in_use.source == "init"  # the display state rule: never LIVE
    np.testing.assert_array_equal(in_use.reference_to_mri, truth.init_reference_to_mri)
    assert in_use.across_sweep_reference_to_mri is not None
    if tied_first:  # the default: the tie's candidate itself comes before
        assert in_use.margins_reference_to_mri is in_use.tied_candidate_reference_to_mri
        assert in_use.unconfirmed.endswith(TIED_CANDIDATE_NOTE)
    else:
        assert in_use.tied_candidate_reference_to_mri is None
        assert in_use.margins_reference_to_mri is in_use.across_sweep_reference_to_mri
        assert in_use.unconfirmed.endswith(ACROSS_SWEEP_NOTE)
    # the next try still starts from the navigation registration, and a try that offers
    # neither takes the old ones away (only the latest try's is drawn)
    worker.options = worker.options.model_copy(
        update={"full": live_cold_registration_options().model_copy(update={"min_paired_t": 1e9})}
    )
    again = worker.update(window)
    assert again is not None and not again.accepted and "consistent" in again.reason
    in_use = worker.latest_accepted()
    assert in_use.across_sweep_reference_to_mri is None
    assert in_use.tied_candidate_reference_to_mri is None
    np.testing.assert_array_equal(in_use.margins_reference_to_mri, truth.init_reference_to_mri)


def test_the_worker_option_turns_it_off(small_case):
    worker, window = _tied_worker(
        small_case, margins_across_sweep=False, margins_from_tied_candidate=False
    )
    estimate = worker.update(window)
    assert estimate is not None and not estimate.accepted
    in_use = worker.latest_accepted()
    assert in_use.across_sweep_reference_to_mri is None
    assert not in_use.unconfirmed.endswith(ACROSS_SWEEP_NOTE)
