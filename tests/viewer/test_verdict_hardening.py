"""The verdict never says LIVE unless a well-formed publisher said LIVE."""

from __future__ import annotations

import time

import msgpack
import pytest

from usnav.client import parse
from usnav.protocol import wire as p
from usnav.viewer.state import LIVE, STALE, UNCERTAIN, ViewerOptions, ViewModel, assess


def _margin(**fields) -> dict:
    now = time.time()
    header = {
        "schema": p.SCHEMA,
        "version": p.VERSION,
        "topic": "margin",
        "seq": 0,
        "frame_number": 7,
        "t_published": now,
        "t_received": now,
        "buffers": [],
        "in_view": False,
        "reason": "no tumor in this plane",
        "image_shape": [4, 4],
        "spacing_mm": [0.15, 0.15],
        "display_state": LIVE,
        "display_reason": "",
        "uncertainty_mm": 1.0,
        "registration_checked": True,
        "quality": 0.9,
        "age_s": 1.0,
    }
    header.update(fields)
    message = parse(p.decode([b"margin", msgpack.packb(header)]), t_arrived=now)
    return {"margin": message}


def _verdict(**fields):
    model = ViewModel("tcp://127.0.0.1:5556")
    now = time.time()
    state = model.update(_margin(**fields), connected=True, last_message_s=now, now=now)
    return assess(state, ViewerOptions())


def test_a_live_message_is_live() -> None:
    assert _verdict().word == LIVE


@pytest.mark.parametrize("word", ["live", "Live", 5, None, [LIVE], "GOOD"])
def test_a_display_state_that_is_not_one_of_the_four_is_uncertain(word) -> None:
    verdict = _verdict(display_state=word)
    assert verdict.word == UNCERTAIN


def test_the_publishers_stale_and_uncertain_are_kept() -> None:
    assert _verdict(display_state=STALE, display_reason="probe no-signal").word == STALE
    verdict = _verdict(display_state=UNCERTAIN, display_reason="±3.0 mm")
    assert verdict.word == UNCERTAIN and verdict.reason == "±3.0 mm"


def test_a_version_1_publisher_is_never_live() -> None:
    verdict = _verdict(version=1, accepted=True, quality=1.0)
    assert verdict.word == UNCERTAIN and "protocol 1" in verdict.reason
