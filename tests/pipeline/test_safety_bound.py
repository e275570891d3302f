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
