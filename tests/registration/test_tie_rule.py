"""The tie rule (session 31): a rival the candidate leads by less than ``ambiguity_min_gain``
does not make a tie when the lead is at least ``ambiguity_consistent_gain`` and consistent
across frames (paired t at least ``ambiguity_consistent_t``).

As in test_across_sweep.py, the tie is made real on the small simulated case by asking for a
lead no similarity reaches (``ambiguity_min_gain`` = 1): every distinct rival is then within
the gain, and only the consistency of the candidate's lead can clear it.
"""

from __future__ import annotations

import numpy as np
import pytest

from usnav.registration.options import RegistrationOptions
from usnav.registration.rigid import register_sweep


def _options(**update: object) -> RegistrationOptions:
    base = {"ambiguity_min_gain": 1.0, "ambiguity_axes": ["elevation"]}
    return RegistrationOptions().model_copy(update=base | update)


@pytest.fixture(scope="module")
def tied(small_case):
    mri, sweep, _, truth = small_case
    return register_sweep(mri, sweep, truth.init_reference_to_mri, _options())


def test_without_the_rule_every_lead_under_the_gain_is_a_tie(tied):
    assert not tied.accepted and tied.only_tied, tied.reason
    # the smallest paired t over the tied rivals is stated, and it is the one the reason names
    # when a single rival is the worst
    assert np.isfinite(tied.diagnostics["ambiguity_tie_t"])


def test_a_consistent_lead_clears_the_tie(small_case, tied):
    mri, sweep, _, truth = small_case
    t_min = tied.diagnostics["ambiguity_tie_t"]
    margin = tied.diagnostics["ambiguity_margin"]
    assert margin > 0 and t_min > 1.0, (margin, t_min)  # this case's candidate is right
    # a lead at least as large as the gain asked for and a t no larger than the rivals' own
    cleared = register_sweep(
        mri,
        sweep,
        truth.init_reference_to_mri,
        _options(ambiguity_consistent_gain=0.5 * margin, ambiguity_consistent_t=0.5 * t_min),
    )
    assert cleared.accepted, cleared.reason
    np.testing.assert_allclose(cleared.candidate, tied.candidate, atol=1e-9)
    assert cleared.tied_candidate_reference_to_mri is None and not cleared.only_tied


@pytest.mark.parametrize("which", ["gain", "t"])
def test_a_lead_too_small_or_too_inconsistent_stays_a_tie(small_case, tied, which):
    mri, sweep, _, truth = small_case
    t_min = tied.diagnostics["ambiguity_tie_t"]
    margin = tied.diagnostics["ambiguity_margin"]
    gain, t = (2.0 * margin, 0.5 * t_min) if which == "gain" else (0.5 * margin, 2.0 * t_min)
    still = register_sweep(
        mri,
        sweep,
        truth.init_reference_to_mri,
        _options(ambiguity_consistent_gain=gain, ambiguity_consistent_t=t),
    )
    assert not still.accepted and still.only_tied, still.reason
