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
    seen_disagreement_doubt,
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


def test_an_unconfirmed_navigation_registration_says_why() -> None:
    """Once image-based tries were rejected, the reason is no longer "not yet checked"."""
    note = "2 image-based tries rejected (latest: ambiguous along the sweep)"
    state = _pub(checked=False, uncertainty_mm=0.5, unconfirmed=note)
    assert state.state == UNCERTAIN
    assert "not confirmed on the ultrasound" in state.reason and note in state.reason
    assert "not yet checked" not in state.reason
    # a checked registration ignores it
    assert _pub(unconfirmed=note) == DisplayState(LIVE)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        # a bound just over the limit reads as over it ("±2.0 mm exceeds 2 mm" did not)
        ({"uncertainty_mm": 2.01}, "±2.01 mm (95 %) exceeds 2 mm"),
        ({"uncertainty_mm": 2.8349}, "±2.8 mm (95 %) exceeds 2 mm"),
        ({"uncertainty_mm": math.nan}, "uncertainty unknown"),
        ({"uncertainty_mm": math.inf}, "uncertainty unknown"),
        ({"uncertainty_mm": None}, "uncertainty unknown"),
        ({"checked_age_s": 61.0}, "not re-checked on the images for 61 s"),
        ({"checked_age_s": math.nan}, "age unknown"),
        ({"doubt": "the tumor lies 0.4 mm from this plane"}, "0.4 mm from this plane"),
        (
            {"contradicted": "a pose 3.2 mm from it scores clearly better"},
            "contradicted by the newest frames: a pose 3.2 mm from it",
        ),
    ],
)
def test_uncertain_cases(kwargs, words) -> None:
    state = _pub(**kwargs)
    assert state.state == UNCERTAIN and words in state.reason


@pytest.mark.parametrize(
    "registration",
    [
        {"uncertainty_mm": 2.8},
        {"checked": False},
        {"checked": False, "unconfirmed": "1 image-based try rejected"},
        {"checked_age_s": 61.0},
        {"uncertainty_mm": None},
    ],
)
def test_the_messages_own_doubt_is_said_when_the_registration_is_uncertain_too(
    registration,
) -> None:
    """An absence claim near the tumor says so whatever else keeps the message from LIVE
    (protocol.md, ``in_view``). Session 37: after an estimate at ±2.8 mm, frames with the
    tumor in the plane went out "no tumor in view" with the registration's reason alone."""
    doubt = "the tumor lies 0.4 mm from this plane, within the registration's ±2.8 mm"
    alone = _pub(**registration)
    state = _pub(**registration, doubt=doubt)
    assert state.state == UNCERTAIN and alone.state == UNCERTAIN
    assert state.reason == f"{alone.reason}; {doubt}"
    assert _pub(doubt=doubt) == DisplayState(UNCERTAIN, doubt)  # the doubt alone, as before
    assert _pub(**registration, doubt=doubt, stale_reason="probe no-signal") == DisplayState(
        STALE, "probe no-signal"
    )


def test_stale_data_is_stale_whatever_the_registration() -> None:
    assert _pub(stale_reason="probe no-signal") == DisplayState(STALE, "probe no-signal")
    assert _pub(checked=False, stale_reason="tracking lost").state == STALE


def test_the_threshold_is_a_setting() -> None:
    strict = DisplayRules(live_max_uncertainty_mm=1.0)
    assert _pub(rules=strict).state == LIVE
    assert _pub(rules=strict, uncertainty_mm=1.5).state == UNCERTAIN


def test_the_registration_leaves_room_for_the_margins_own_error() -> None:
    """LIVE is decided on the boundary error: the registration's bound and the margin's own
    error (with a perfect registration) in quadrature must stay within the 2 mm target, so a
    registration bound just under 2 mm is not LIVE when the margin itself errs by 1.2 mm."""
    rules = DisplayRules(live_max_boundary_error_mm=2.0, margin_error_mm=1.2)
    assert rules.registration_limit_mm == pytest.approx(1.6)
    assert rules.live_max_uncertainty_mm == pytest.approx(1.6)  # what every message carries
    assert _pub(rules=rules, uncertainty_mm=1.59).state == LIVE
    state = _pub(rules=rules, uncertainty_mm=1.93)
    assert state.state == UNCERTAIN and "exceeds 1.6 mm" in state.reason
    # the default states no margin error: the registration alone is held to 2 mm
    assert DisplayRules().registration_limit_mm == 2.0
    assert _pub(rules=DisplayRules(), uncertainty_mm=2.0).state == LIVE


def test_a_stated_registration_threshold_wins_and_an_impossible_target_is_refused() -> None:
    stated = DisplayRules(live_max_uncertainty_mm=1.9, margin_error_mm=1.5)
    assert stated.registration_limit_mm == 1.9
    with pytest.raises(ValueError, match="leaves no room"):
        DisplayRules(live_max_boundary_error_mm=1.0, margin_error_mm=1.0)


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
    # old data whose publisher already said STALE keep its reason (the probe link is down:
    # the banner said "newest data N s old" alone once the last margin aged, session 36)
    lost = _shown(DisplayState(STALE, "no signal from 127.0.0.1:18944"), data_arrived_s=990.0)
    assert lost == DisplayState(STALE, "no signal from 127.0.0.1:18944 (newest data 10.0 s old)")
    assert _shown(live, data_arrived_s=990.0).reason == "newest data 10.0 s old"


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


def test_margins_the_ultrasound_contradicts_are_in_doubt() -> None:
    def doubt(**kwargs) -> str:
        base = {"in_view": True, "seen_fraction": 0.4, "median_disagreement_mm": 1.5}
        return seen_disagreement_doubt(**(base | kwargs), rules=RULES)

    assert "1.5 mm from the MRI's" in doubt()
    assert _pub(doubt=doubt()).state == UNCERTAIN
    assert doubt(median_disagreement_mm=0.8) == ""  # they agree
    assert doubt(seen_fraction=0.1) == ""  # too little of the margin is seen to say
    assert doubt(in_view=False) == "" and doubt(median_disagreement_mm=math.nan) == ""
    off = DisplayRules(max_seen_disagreement_mm=None)
    assert (
        seen_disagreement_doubt(
            in_view=True, seen_fraction=1.0, median_disagreement_mm=5.0, rules=off
        )
        == ""
    )


def test_an_options_file_switches_a_check_off_with_false(tmp_path) -> None:
    """TOML has no None: ``false`` turns the seen-points and reference-motion checks off
    (session 38: only their largest value did); ``true`` or nonsense is refused."""
    from usnav.config.loader import load_toml_model
    from usnav.errors import InputError
    from usnav.pipeline.config import PipelineOptions

    toml = tmp_path / "run.toml"
    toml.write_text(
        "[display]\nmax_reference_motion_mm = false\nmax_seen_disagreement_mm = false\n"
    )
    rules = load_toml_model(toml, PipelineOptions).display
    assert rules.max_reference_motion_mm is None and rules.max_seen_disagreement_mm is None
    assert DisplayRules().max_reference_motion_mm == 2.0
    for bad in ("true", "0", '"off"'):
        toml.write_text(f"[display]\nmax_reference_motion_mm = {bad}\n")
        with pytest.raises(InputError, match="max_reference_motion_mm"):
            load_toml_model(toml, PipelineOptions)
    # the breath the reference's motion is averaged over (session 39): seconds, or false for
    # session 38's rule (every pose counts)
    assert DisplayRules().reference_breath_s == 6.0
    toml.write_text("[display]\nreference_breath_s = false\n")
    assert load_toml_model(toml, PipelineOptions).display.reference_breath_s is None
    toml.write_text("[display]\nreference_breath_s = 9\n")
    assert load_toml_model(toml, PipelineOptions).display.reference_breath_s == 9.0
    for bad in ("true", "0", "600"):
        toml.write_text(f"[display]\nreference_breath_s = {bad}\n")
        with pytest.raises(InputError, match="reference_breath_s"):
            load_toml_model(toml, PipelineOptions)
    # a sudden move's own limit (session 40): mm, or false for none
    assert DisplayRules().max_reference_step_mm == 1.0
    toml.write_text("[display]\nmax_reference_step_mm = false\n")
    assert load_toml_model(toml, PipelineOptions).display.max_reference_step_mm is None
    toml.write_text("[display]\nmax_reference_step_mm = 1.5\n")
    assert load_toml_model(toml, PipelineOptions).display.max_reference_step_mm == 1.5
    for bad in ("true", "0", "-1", "nan"):
        toml.write_text(f"[display]\nmax_reference_step_mm = {bad}\n")
        with pytest.raises(InputError, match="max_reference_step_mm"):
            load_toml_model(toml, PipelineOptions)


def test_property_tests_have_no_deadline_whatever_the_environment() -> None:
    """tests/conftest.py's profile: an example slowed by the machine's load alone must not
    fail a property test (Hypothesis's 200 ms default applies when CI is not set)."""
    from hypothesis import settings

    assert settings().deadline is None
