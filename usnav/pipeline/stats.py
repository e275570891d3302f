"""Rolling rates and latency percentiles for the status line and the status topic."""

from __future__ import annotations

import collections
import threading
import time

import numpy as np


class RateMeter:
    """Events per second over the last ``window_s`` seconds."""

    def __init__(self, window_s: float = 2.0) -> None:
        self.window_s = window_s
        self._times: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()
        self.count = 0

    def tick(self, now: float | None = None) -> None:
        t = time.monotonic() if now is None else now
        with self._lock:
            self._times.append(t)
            self.count += 1
            self._trim(t)

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()

    def rate(self, now: float | None = None) -> float:
        t = time.monotonic() if now is None else now
        with self._lock:
            self._trim(t)
            n = len(self._times)
            if n < 2:
                return 0.0
            span = max(t - self._times[0], 1e-9)
            return (
                n / span
                if span >= self.window_s * 0.5
                else (n - 1) / max(self._times[-1] - self._times[0], 1e-9)
            )


class LatencyMeter:
    """Keeps the last ``size`` latencies (s) and reports percentiles in ms."""

    def __init__(self, size: int = 2000) -> None:
        self._values: collections.deque[float] = collections.deque(maxlen=size)
        self._lock = threading.Lock()
        self.all_values: list[float] | None = None

    def keep_all(self) -> None:
        """Also keep every value (for a run summary)."""
        self.all_values = []

    def add(self, seconds: float) -> None:
        with self._lock:
            self._values.append(seconds)
            if self.all_values is not None:
                self.all_values.append(seconds)

    def percentiles_ms(self, *qs: float) -> list[float]:
        with self._lock:
            if not self._values:
                return [float("nan")] * len(qs)
            arr = np.fromiter(self._values, dtype=np.float64)
        return [float(np.percentile(arr, q) * 1000.0) for q in qs]
