"""The registration estimate that flows from the registration worker to margins and display."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class RegistrationEstimate:
    """One estimate of ``ReferenceToMri``.

    Attributes
    ----------
    reference_to_mri
        4×4, Reference mm → MRI RAS mm.
    similarity
        The metric value of this estimate (LC², 0..1, higher is better; NaN if none, e.g. the
        initial navigation registration).
    quality
        0..1 summary a display can threshold (1 = confident).
    uncertainty_mm
        Estimated target error at the region of interest, mm (NaN if unknown).
    accepted
        Whether the worker accepted it. A rejected estimate is published for information but
        must never be displayed as if it were good; the frame path keeps the last accepted one.
    t_computed
        Host time it was computed, s since the epoch.
    sequence
        Counter of estimates from one worker.
    source
        ``"init"``, ``"points"``, ``"image"``...
    reason
        Why it was accepted or rejected, in plain words.
    """

    reference_to_mri: np.ndarray
    similarity: float = float("nan")
    quality: float = 0.0
    uncertainty_mm: float = float("nan")
    accepted: bool = True
    t_computed: float = field(default_factory=time.time)
    sequence: int = 0
    source: str = "init"
    reason: str = ""

    def age_s(self, now: float | None = None) -> float:
        """Seconds since it was computed."""
        return (time.time() if now is None else now) - self.t_computed
