"""How late a frame arrived, judged by the device's own clock: a frame received just now may
have been made seconds ago.

After a stall (a frozen server, a congested link) a device may flush the frames it held: they
arrive within a fraction of a second, each stamped seconds ago. Their age since *receipt* is
zero, so a display would show seconds-old images as live. Only the device's clock
(``t_device``) tells: over the frames before the stall it advances at a steady rate against
the host's clock (1 for a live probe, the playback rate for a replay). A frame that arrives
after a silence with a device time that advanced much less than the silence lasted is from the
backlog; its lateness is the host time elapsed since the last prompt frame minus the device
time elapsed, converted at that rate. The backlog ends when a frame arrives on time again.

The device's clock and the host's are never compared directly (they need not share an origin
or a rate), and nothing is judged before the rate is known or after the device's clock went
back (a restarted server, a replay from its start): then the clock starts over. A device whose
clock fell behind for good (a replay paused together with its clock) would look like a
permanent backlog; once frames have arrived at the device's own pace for ``paced_s``, the
lateness is taken for a clock offset and dropped. That also lets a constant transmission delay
through, as receipt age always did.
"""

from __future__ import annotations

import math

#: Device seconds per host second a clock may plausibly run at (a replay at 1/20 to 20×);
#: outside it (e.g. a device that stamps every frame with the same time) nothing is judged.
RATE_RANGE = (0.05, 20.0)


class ArrivalClock:
    """Lateness of each frame's arrival against the device's clock (see the module notes).

    Parameters
    ----------
    gap_s
        A silence longer than this (host s) between two frames is checked for a backlog (the
        pipeline's ``stale_after_s``: shorter silences cannot make a frame stale).
    tolerance_s
        Lateness within this (s) counts as on time.
    paced_s
        During a backlog, frames arriving at the device's own pace (not faster) for this long
        (host s) end it: the lateness is then a clock offset, not frames held back.
    min_baseline_s
        Host seconds of frames needed before the rate is estimated (and anything judged).
    """

    def __init__(
        self,
        gap_s: float,
        *,
        tolerance_s: float = 0.25,
        paced_s: float = 1.0,
        min_baseline_s: float = 2.0,
    ) -> None:
        self.gap_s = float(gap_s)
        self.tolerance_s = float(tolerance_s)
        self.paced_s = float(paced_s)
        self.min_baseline_s = float(min_baseline_s)
        self.restarts = 0
        """How many times the device's clock went back (the clock started over)."""
        self.offsets_dropped = 0
        """How many backlogs ended as a clock offset (frames at the device's pace)."""
        self.reset()

    def reset(self) -> None:
        """Forget everything (a new connection)."""
        self._first: tuple[float, float] | None = None  # (host s, device s) of the baseline
        self._last: tuple[float, float] | None = None
        self._rate: float | None = None
        self._anchor: tuple[float, float] | None = None  # the last prompt frame before a backlog
        self._window: tuple[float, float] | None = None  # start of the pace check in a backlog

    @property
    def rate(self) -> float | None:
        """Device seconds per host second, once known (None before ``min_baseline_s``)."""
        return self._rate

    @property
    def in_backlog(self) -> bool:
        """Whether the frames now arriving are judged late."""
        return self._anchor is not None

    def lateness_s(self, t_device: float, t_received: float) -> float:
        """Observe one frame; how late it arrived, s (0 when on time or not judged).

        Parameters
        ----------
        t_device
            The frame's time on the device's clock, s.
        t_received
            Host time it was received, s (any origin; only differences are used).
        """
        d, h = float(t_device), float(t_received)
        if not (math.isfinite(d) and math.isfinite(h)):
            return 0.0
        if self._last is None or d < self._last[1]:
            if self._last is not None:
                self.restarts += 1
            self.reset()
            self._first = self._last = (h, d)
            return 0.0
        rate = self._rate
        lateness = 0.0
        if self._anchor is None and rate is not None and h - self._last[0] > self.gap_s:
            gap = h - self._last[0]
            if gap - (d - self._last[1]) / rate > self.tolerance_s:
                self._anchor = self._last
                self._window = (h, d)
        if self._anchor is not None and rate is not None:
            lateness = (h - self._anchor[0]) - (d - self._anchor[1]) / rate
            assert self._window is not None
            host_span = h - self._window[0]
            if lateness <= self.tolerance_s:
                self._anchor = self._window = None  # caught up
                lateness = 0.0
            elif host_span >= self.paced_s:
                if (d - self._window[1]) / rate <= 1.2 * host_span:
                    # arriving at the device's pace, not draining a backlog: a clock offset
                    self.offsets_dropped += 1
                    self._anchor = self._window = None
                    self._first = (h, d)  # the rate's baseline restarts after the offset
                    lateness = 0.0
                else:
                    self._window = (h, d)
        self._last = (h, d)
        if self._anchor is None:
            self._update_rate()
        return max(lateness, 0.0)

    def _update_rate(self) -> None:
        assert self._first is not None and self._last is not None
        host = self._last[0] - self._first[0]
        if host < self.min_baseline_s:
            return
        rate = (self._last[1] - self._first[1]) / host
        low, high = RATE_RANGE
        self._rate = rate if low <= rate <= high else None
