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
