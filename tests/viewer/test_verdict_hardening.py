"""The verdict never says LIVE when a publisher's registration fields are not numbers."""

from __future__ import annotations

import time

import msgpack
import pytest

from usnav.client import parse
from usnav.protocol import wire as p
from usnav.viewer.state import LIVE, STALE, UNCERTAIN, ViewerOptions, ViewModel, assess


def _margin(**registration) -> dict:
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
        "accepted": True,
        "quality": 0.9,
        "age_s": 1.0,
    }
    header.update(registration)
    message = parse(p.decode([b"margin", msgpack.packb(header)]), t_arrived=now)
    return {"margin": message}


def _verdict(**registration):
    model = ViewModel("tcp://127.0.0.1:5556")
    now = time.time()
    state = model.update(_margin(**registration), connected=True, last_message_s=now, now=now)
    return assess(state, ViewerOptions())


def test_well_formed_registration_is_live() -> None:
    assert _verdict().word == LIVE


@pytest.mark.parametrize("quality", ["high", float("nan"), [0.9]])
def test_quality_that_is_not_a_number_is_uncertain(quality) -> None:
    verdict = _verdict(quality=quality)
    assert verdict.word == UNCERTAIN
    assert "unknown" in verdict.reason


@pytest.mark.parametrize("age", ["fresh", float("nan"), float("inf")])
def test_registration_age_that_is_not_a_number_is_stale(age) -> None:
    verdict = _verdict(age_s=age)
    assert verdict.word == STALE
