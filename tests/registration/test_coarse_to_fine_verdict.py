"""Coarse-to-fine ambiguity probes and confirmation (session 32, the time target): with
``ambiguity_coarse_evaluations`` / ``confirm_coarse_evaluations`` most of their evaluations move
from the finest level to the one before it, and the finest level's drop to its small budget.
Both default to 0: the finest level alone, as before (notes/session-32-speed.md)."""

from __future__ import annotations

import numpy as np

from usnav.registration.options import RegistrationOptions
from usnav.registration.pose import mean_displacement
from usnav.registration.search import SweepRegistration


def _problem(small_case, **update: object) -> SweepRegistration:
    mri, sweep, _, truth = small_case
    options = RegistrationOptions().model_copy(update=update)
    return SweepRegistration(mri, sweep, truth.reference_to_mri, options)


def _counts(problem: SweepRegistration) -> tuple[int, int]:
    """(evaluations at the finest level, at the level before it) so far."""
    return problem.level(-1).similarity.evaluations, problem.level(-2).similarity.evaluations


def test_coarse_to_fine_probes_move_their_evaluations_to_the_coarser_level(small_case):
    truth = small_case[3].reference_to_mri
    plain = _problem(small_case)
    before = _counts(plain)
    poses, _ = plain._sweep_probes(truth)
    fine, coarse = np.subtract(_counts(plain), before)
    assert coarse == 0 and fine > 8 * 10  # eight probes of up to 30 finest evaluations

    c2f = _problem(small_case, ambiguity_coarse_evaluations=30, ambiguity_evaluations=10)
    before = _counts(c2f)
    poses_c2f, total = c2f._sweep_probes(truth)
    fine_c2f, coarse_c2f = np.subtract(_counts(c2f), before)
    assert fine_c2f <= 8 * 10 and coarse_c2f > 8 * 10
    assert total == fine_c2f + coarse_c2f
    # the same probes (offset, axis), each ending near where the finest-level probe ended
    assert [p[1:] for p in poses_c2f] == [p[1:] for p in poses]
    pts = plain.verdict_points()
    moved = [mean_displacement(a[0], b[0], pts) for a, b in zip(poses, poses_c2f, strict=True)]
    assert np.median(moved) < 3.0, moved


def test_coarse_to_fine_confirmation_moves_its_evaluations_to_the_coarser_level(small_case):
    truth = small_case[3]
    candidate = truth.reference_to_mri
    current = truth.init_reference_to_mri

    def confirm(problem: SweepRegistration) -> tuple[int, int, dict]:
        before = _counts(problem)
        sim = problem.level(-1).similarity(candidate)
        corr = mean_displacement(candidate, current, problem.verdict_points())
        _, n, facts = problem._confirm(candidate, current, sim, corr, problem.verdict_points())
        fine, coarse = np.subtract(_counts(problem), before)
        assert n == fine - 1 + coarse  # the candidate's own score is not the search's
        return fine - 1, coarse, facts

    fine, coarse, facts = confirm(_problem(small_case))
    assert coarse == 0 and fine > 20
    fine_c2f, coarse_c2f, facts_c2f = confirm(
        _problem(small_case, confirm_coarse_evaluations=60, confirm_evaluations=20)
    )
    assert fine_c2f <= 20 and coarse_c2f > 20
    # the search from the current estimate still ends at the candidate's optimum (the truth)
    assert facts["local_distance_mm"] < 2.0 and facts_c2f["local_distance_mm"] < 2.0


def test_zero_coarse_evaluations_is_the_finest_level_alone(small_case):
    truth = small_case[3].reference_to_mri
    a, _ = _problem(small_case)._sweep_probes(truth)
    b, _ = _problem(small_case, ambiguity_coarse_evaluations=0)._sweep_probes(truth)
    for (pa, *ka), (pb, *kb) in zip(a, b, strict=True):
        assert ka == kb and np.array_equal(pa, pb)
