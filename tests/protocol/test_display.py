"""The one display-state rule on small cases: when may an overlay be shown LIVE."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from usnav.protocol.display import (
    DISPLAY_STATES,
    LIVE,
    STALE,
    UNCERTAIN,
    WAITING,
    DisplayRules,
    DisplayState,
    display_state,
    publisher_state,
)

RULES = DisplayRules(live_max_uncertainty_mm=2.0, max_unchecked_s=60.0)


def _pub(**kwargs) -> DisplayState:
    base = {"checked": True, "uncertainty_mm": 1.0, "checked_age_s": 1.0, "rules": RULES}
    return publisher_state(**(base | kwargs))


def test_a_checked_registration_within_the_threshold_is_live() -> None:
    assert _pub() == DisplayState(LIVE)
    assert _pub(uncertainty_mm=2.0).state == LIVE  # the threshold itself is LIVE


@pytest.mark.parametrize("uncertainty", [0.0, 0.5, 1.9, None, math.nan])
def test_the_unchecked_navigation_registration_is_never_live(uncertainty) -> None:
    state = _pub(checked=False, uncertainty_mm=uncertainty)
    assert state.state == UNCERTAIN and "not yet checked" in state.reason


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"uncertainty_mm": 2.01}, "±2.0 mm (95 %) exceeds 2 mm"),
        ({"uncertainty_mm": math.nan}, "uncertainty unknown"),
        ({"uncertainty_mm": math.inf}, "uncertainty unknown"),
        ({"uncertainty_mm": None}, "uncertainty unknown"),
        ({"checked_age_s": 61.0}, "not re-checked on the images for 61 s"),
        ({"checked_age_s": math.nan}, "age unknown"),
        ({"doubt": "the tumor lies 0.4 mm from this plane"}, "0.4 mm from this plane"),
    ],
)
def test_uncertain_cases(kwargs, words) -> None:
    state = _pub(**kwargs)
    assert state.state == UNCERTAIN and words in state.reason


def test_stale_data_is_stale_whatever_the_registration() -> None:
    assert _pub(stale_reason="probe no-signal") == DisplayState(STALE, "probe no-signal")
    assert _pub(checked=False, stale_reason="tracking lost").state == STALE


def test_the_threshold_is_a_setting() -> None:
    strict = DisplayRules(live_max_uncertainty_mm=1.0)
    assert _pub(rules=strict).state == LIVE
    assert _pub(rules=strict, uncertainty_mm=1.5).state == UNCERTAIN


def _shown(published, **kwargs) -> DisplayState:
    now = 1000.0
    base = {
        "now": now,
        "last_message_s": now - 0.1,
        "data_arrived_s": now - 0.1,
        "connected": True,
        "lost_after_s": 1.5,
    }
    return display_state(published, **(base | kwargs))


def test_the_display_adds_what_only_it_sees() -> None:
    live = DisplayState(LIVE)
    assert _shown(live) == live
    assert _shown(live, last_message_s=None).state == WAITING
    assert _shown(live, connected=False).state == STALE
    assert _shown(live, last_message_s=990.0).state == STALE
    assert _shown(live, data_arrived_s=990.0).state == STALE  # margins stopped, status flows
    assert _shown(None).state == UNCERTAIN
    assert _shown(DisplayState("live")).state == UNCERTAIN  # not one of the four words


_RANK = {LIVE: 0, UNCERTAIN: 1, STALE: 2, WAITING: 2}


@given(
    word=st.sampled_from([*DISPLAY_STATES, "bogus"]),
    connected=st.booleans(),
    silent=st.floats(0, 10),
    data_age=st.floats(0, 10),
)
def test_the_display_never_makes_a_state_better(word, connected, silent, data_age) -> None:
    published = DisplayState(word, "why")
    shown = _shown(
        published,
        connected=connected,
        last_message_s=1000.0 - silent,
        data_arrived_s=1000.0 - data_age,
    )
    assert shown.state in DISPLAY_STATES
    if word in _RANK:
        assert _RANK[shown.state] >= _RANK[word]
    if shown.state == LIVE:
        assert word == LIVE and connected and silent <= 1.5 and data_age <= 1.5
