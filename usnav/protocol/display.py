"""The one definition of "show as good": the ``display_state`` every message carries.

A display may draw an overlay as trustworthy (**LIVE**) only when the publisher said so *and*
nothing the display sees itself (a dropped link, silence) says otherwise. The publisher's rule
(:func:`publisher_state`) and the display's (:func:`display_state`) both live here, so the
publisher, the Python client, the viewer, the web display and the Slicer re-export all apply
the same rule.

The publisher's rule, per message, in this order:

1. **STALE** — the data may not show the present: the probe link is not streaming, tracking is
   lost, or the frame is old (the pipeline's ``stale_reason``).
2. **UNCERTAIN** — the registration was never checked on the ultrasound (the navigation
   system's initial registration: ``usnav run --no-registration``, and the time before the
   first image-based estimate), or its stated uncertainty is unknown or above
   :attr:`DisplayRules.live_max_uncertainty_mm`, or it was last checked on the images more than
   :attr:`DisplayRules.max_unchecked_s` ago, or the message's own content is in doubt (e.g. "no
   tumor in view" while the tumor lies within the uncertainty of the image plane).
3. **LIVE** — otherwise.

``uncertainty_mm`` is the registration's stated 95 % bound on the error at the tumor (from the
registration worker). A fixed quality score plays no part.

The display's rule can only make the publisher's state worse: **WAITING** before any message,
**STALE** when the connection dropped, nothing arrived for ``lost_after_s``, or the newest
data is that old.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

LIVE = "LIVE"
UNCERTAIN = "UNCERTAIN"
STALE = "STALE"
WAITING = "WAITING"
#: Every display state, best first.
DISPLAY_STATES = (LIVE, UNCERTAIN, STALE, WAITING)


class DisplayRules(BaseModel):
    """The publisher's thresholds for LIVE (named, documented, sent with every message).

    Attributes
    ----------
    live_max_uncertainty_mm
        LIVE only when the registration's stated uncertainty (a 95 % bound on the error at the
        tumor, mm) is at most this. 2.0 mm: the safe-display target of issue 11 (no LIVE margin
        with a boundary error p95 over 2 mm).
    max_unchecked_s
        LIVE only when the registration was estimated or confirmed on the ultrasound images at
        most this long ago, s (the cord can move; a registration nobody re-checked decays to
        UNCERTAIN, not to STALE: it is still the best there is).
    """

    model_config = ConfigDict(extra="forbid")

    live_max_uncertainty_mm: float = Field(default=2.0, gt=0)
    max_unchecked_s: float = Field(default=60.0, gt=0)


@dataclass(frozen=True)
class DisplayState:
    """A display state and why (``reason`` is "" for LIVE)."""

    state: str
    reason: str = ""

    @property
    def live(self) -> bool:
        return self.state == LIVE


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def publisher_state(
    *,
    checked: bool,
    uncertainty_mm: float | None,
    checked_age_s: float | None,
    rules: DisplayRules,
    stale_reason: str = "",
    doubt: str = "",
) -> DisplayState:
    """The publisher's display state of one message (see the module docstring).

    Parameters
    ----------
    checked
        Whether the registration in use was estimated or confirmed on the ultrasound (False
        for the navigation system's unchecked initial registration).
    uncertainty_mm
        Its stated 95 % error bound at the tumor, mm (None/NaN: unknown).
    checked_age_s
        Seconds since it was last estimated or confirmed on the images (None: unknown).
    rules
        The thresholds.
    stale_reason
        Non-empty when the data may not show the present.
    doubt
        Non-empty when the message's own content is in doubt (e.g. an absence claim within the
        registration's uncertainty).
    """
    if stale_reason:
        return DisplayState(STALE, stale_reason)
    if not checked:
        return DisplayState(UNCERTAIN, "navigation registration, not yet checked on the ultrasound")
    if not _finite(uncertainty_mm):
        return DisplayState(UNCERTAIN, "registration uncertainty unknown")
    assert uncertainty_mm is not None
    if uncertainty_mm > rules.live_max_uncertainty_mm:
        return DisplayState(
            UNCERTAIN,
            f"registration uncertain: ±{uncertainty_mm:.1f} mm (95 %) exceeds "
            f"{rules.live_max_uncertainty_mm:g} mm",
        )
    if not _finite(checked_age_s):
        return DisplayState(UNCERTAIN, "registration age unknown")
    assert checked_age_s is not None
    if checked_age_s > rules.max_unchecked_s:
        return DisplayState(
            UNCERTAIN, f"registration not re-checked on the images for {checked_age_s:.0f} s"
        )
    if doubt:
        return DisplayState(UNCERTAIN, doubt)
    return DisplayState(LIVE)


def display_state(
    published: DisplayState | None,
    *,
    now: float,
    last_message_s: float | None,
    data_arrived_s: float | None,
    connected: bool,
    lost_after_s: float,
    waiting_reason: str = "waiting for usnav",
) -> DisplayState:
    """What a display shows: the publisher's state, made worse by what the display sees.

    Parameters
    ----------
    published
        The display state of the newest message that carries the overlay (margin, else
        status, else registration); None before any.
    now
        Host time, s since the epoch.
    last_message_s
        Arrival time of the newest valid message of any topic (None: none yet).
    data_arrived_s
        Arrival time of the message ``published`` came from.
    connected
        Whether the connection to the publisher is up.
    lost_after_s
        Silence (or data this old) that makes the display STALE, s.
    waiting_reason
        The reason shown while WAITING.
    """
    if last_message_s is None:
        return DisplayState(WAITING, waiting_reason)
    silent = now - last_message_s
    if not connected:
        return DisplayState(STALE, f"connection lost ({silent:.1f} s without data)")
    if silent > lost_after_s:
        return DisplayState(STALE, f"no data for {silent:.1f} s")
    if published is None:
        return DisplayState(UNCERTAIN, "no registration state received yet")
    if data_arrived_s is not None and now - data_arrived_s > lost_after_s:
        return DisplayState(STALE, f"newest data {now - data_arrived_s:.1f} s old")
    if published.state not in DISPLAY_STATES:
        return DisplayState(UNCERTAIN, f"unknown display state {published.state!r}")
    return published
