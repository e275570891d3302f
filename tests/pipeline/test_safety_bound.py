"""The safety bench's honesty figure: the bound a display is told (registration
``uncertainty_mm`` ⊕ the margin's own error) against each margin's boundary error p95, over
margins drawn with an image-based registration only."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from usnav.bench.bench_safety import _bound_covers
from usnav.protocol.display import DisplayRules


def _row(p95: float, uncertainty: float | None, checked: bool = True) -> tuple:
    message = SimpleNamespace(header=SimpleNamespace(registration_checked=checked))
    return (0, "UNCERTAIN", p95, p95 / 2, p95 / 2, False, uncertainty, "reason", message)


def test_the_bound_is_the_registration_and_the_margin_error_together() -> None:
    margin = DisplayRules().margin_error_mm
    bound = math.hypot(2.0, margin)
    rows = [_row(bound - 0.01, 2.0), _row(bound + 0.01, 2.0)]
    assert _bound_covers(rows) == (50.0, 2)


def test_margins_without_an_image_based_registration_are_not_counted() -> None:
    rows = [_row(0.1, 3.0), _row(9.0, None), _row(9.0, 3.0, checked=False)]
    assert _bound_covers(rows) == (100.0, 1)
    share, counted = _bound_covers([_row(9.0, 3.0, checked=False)])
    assert counted == 0 and math.isnan(share)


@pytest.mark.parametrize("uncertainty", [float("nan"), float("inf")])
def test_an_unstated_uncertainty_is_not_a_bound(uncertainty: float) -> None:
    assert _bound_covers([_row(0.1, uncertainty)])[1] == 0


def test_the_safety_bench_counts_margins_wrong_about_the_tumor_being_in_view() -> None:
    """A tumor drawn where the true plane holds none, and "no tumor in view" where a drawable
    section is, have no boundary error: the safety bench counts them apart (session 37)."""
    from types import SimpleNamespace

    import numpy as np

    from usnav.bench.bench_safety import _wrong_about_view

    none_there = np.zeros((40, 40), bool)
    section = np.zeros((40, 40), bool)
    section[10:14, 10:14] = True  # 16 px of 0.3 × 0.3 mm = 1.44 mm²
    sliver = np.zeros((40, 40), bool)
    sliver[10, 10:12] = True  # 0.18 mm²: below what the protocol draws

    def message(in_view: bool) -> SimpleNamespace:
        return SimpleNamespace(
            in_view=in_view, contours=("c",) if in_view else (), spacing_mm=(0.3, 0.3)
        )

    assert _wrong_about_view(message(True), none_there) == "tumor drawn, none in the plane"
    assert _wrong_about_view(message(False), section).startswith("no tumor in view")
    assert _wrong_about_view(message(True), section) == ""
    assert _wrong_about_view(message(False), none_there) == ""
    assert _wrong_about_view(message(False), sliver) == ""


def test_a_restated_message_keeps_a_contradicted_registration_uncertain() -> None:
    """The budget bench restates each margin's state under other display rules from what the
    message carries; a registration the newest frames contradicted (session 37) and a patient
    reference moved since the check (session 38) travel only in the display reason, and must
    stay UNCERTAIN when restated."""
    from usnav.bench.bench_safety import _restated
    from usnav.protocol.display import CONTRADICTED_PREFIX, REFERENCE_MOVED_PREFIX

    def message(reason: str) -> SimpleNamespace:
        header = SimpleNamespace(
            registration_checked=True,
            uncertainty_mm=1.0,
            age_s=2.0,
            stale=False,
            stale_reason="",
            display_reason=reason,
        )
        return SimpleNamespace(
            header=header, in_view=True, supported_fraction=0.0, median_abs_disagreement_mm=None
        )

    rules = DisplayRules(margin_error_mm=0.0)
    assert _restated(message(""), rules) == "LIVE"
    assert _restated(message(f"{CONTRADICTED_PREFIX}a pose 2.1 mm from it"), rules) == "UNCERTAIN"
    moved = f"{REFERENCE_MOVED_PREFIX}4.4 mm against the tracker since the registration was checked"
    assert _restated(message(moved), rules) == "UNCERTAIN"
    assert _restated(message(f"registration uncertain: ±2.4 mm; {moved}"), rules) == "UNCERTAIN"
    from usnav.protocol.display import OUTSIDE_MRI_DOUBT

    assert _restated(message(OUTSIDE_MRI_DOUBT), rules) == "UNCERTAIN"
    from usnav.pipeline.spacing import SPACING_MISMATCH_PREFIX

    assert _restated(message(f"{SPACING_MISMATCH_PREFIX}: 0.19 mm"), rules) == "UNCERTAIN"


def test_a_bumped_reference_moves_the_truth_and_leaves_the_anatomy_in_the_tracker() -> None:
    """The bumped-reference bench (session 38): the recording's bumped ``ReferenceToTracker``
    and the moved truth ``D · T`` agree that the anatomy stayed where it was in the tracker's
    frame (TrackerToMri unchanged) while the reference moved by the drawn 3-6 mm / 2-5°."""
    import numpy as np
    from scipy.spatial.transform import Rotation

    from usnav.bench.bench_bump import BUMP_DEG, BUMP_MM, bumped_reference_to_tracker, draw_bump

    rng = np.random.default_rng(0)
    centroid = np.array([12.0, -30.0, 55.0])
    bump = draw_bump(1841, centroid)
    assert BUMP_MM[0] <= bump.mm <= BUMP_MM[1] and BUMP_DEG[0] <= bump.deg <= BUMP_DEG[1]
    moved_centroid = bump.motion[:3, :3] @ centroid + bump.motion[:3, 3]
    assert np.linalg.norm(moved_centroid - centroid) == pytest.approx(bump.mm)  # about it
    assert np.degrees(Rotation.from_matrix(bump.motion[:3, :3]).magnitude()) == pytest.approx(
        bump.deg
    )
    t = np.eye(4)
    t[:3, :3] = Rotation.from_rotvec(rng.normal(size=3)).as_matrix()
    t[:3, 3] = rng.normal(scale=50.0, size=3)
    r2t = np.eye(4)
    r2t[:3, :3] = Rotation.from_rotvec(rng.normal(size=3)).as_matrix()
    r2t[:3, 3] = rng.normal(scale=200.0, size=3)
    bumped = bumped_reference_to_tracker(r2t, t, bump.motion)
    tracker_to_mri = t @ np.linalg.inv(r2t)
    np.testing.assert_allclose((bump.motion @ t) @ np.linalg.inv(bumped), tracker_to_mri, atol=1e-9)
    # the reference itself moved: a point of the reference lands elsewhere in the tracker
    point = np.linalg.solve(t, np.append(centroid, 1.0))
    assert np.linalg.norm((bumped @ point - r2t @ point)[:3]) > 1.0


def test_the_bumped_reference_bench_counts_what_was_live_after_the_bump() -> None:
    from usnav.bench.bench_bump import Margin, Timeline, bump_outcome

    timeline = Timeline(first=100, span=121, frames_per_pass=120, bump_index=240)
    assert timeline.index(100 + 2 * 121 + 5) == 245
    margins = [
        Margin(239, 10.0, "LIVE", 4, 0.8),
        Margin(240, 10.1, "LIVE", 4, 3.1),  # the stale registration, wrong and LIVE
        Margin(241, 10.2, "LIVE", 4),  # not in view: LIVE but unscored
        Margin(242, 10.3, "UNCERTAIN", 4, 3.5),
        Margin(260, 14.0, "LIVE", 5, 2.5),  # a new registration, LIVE and wrong
        Margin(261, 14.1, "LIVE", 5, 0.5),
    ]
    outcome = bump_outcome(margins, timeline.bump_index)
    assert outcome.live_at_bump
    assert (outcome.live_over_2mm, outcome.live_after, outcome.in_view_after) == (2, 3, 4)
    assert outcome.stale_over_2mm == 1
    assert outcome.stale_live_s == pytest.approx(0.1) and not outcome.censored
    assert outcome.stale_live == 2
    # only the first bumped frame LIVE: 0 s, but said
    first_only = bump_outcome([*margins[:2], Margin(242, 10.3, "UNCERTAIN", 4, 3.5)], 240)
    assert first_only.stale_live_s == 0.0 and first_only.stale_live == 1
    quiet = bump_outcome([Margin(m.index, m.t_received, "UNCERTAIN", 4) for m in margins], 240)
    assert quiet.stale_live_s == 0.0 and quiet.stale_live == 0
    assert not quiet.live_at_bump and quiet.live_over_2mm == 0
