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
        The metric value of this estimate (MIND-SSC since session 15, LC² before; 0..1, higher
        is better; NaN if none, e.g. the initial navigation registration).
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
    tumor_reference_to_mri
        The estimate refined at the tumor (:mod:`usnav.registration.tumor`: it follows the
        cord shift), None when the tumor stage did not run or did not apply. Margins are
        drawn with it (:attr:`margins_reference_to_mri`); ``reference_to_mri`` stays the
        global (bony) estimate that later updates start from and are compared with.
    unconfirmed
        For the navigation system's unchecked registration (``source="init"``): why the
        ultrasound has not confirmed it yet, once image-based tries have been rejected
        (e.g. "2 image-based tries rejected; latest: ambiguous along the sweep ..."); "" while
        no try has judged it. A display says so instead of "not yet checked".
    across_sweep_reference_to_mri
        For the navigation system's registration (``source="init"``) after the latest
        image-based try was rejected only as ambiguous along the sweep: that candidate moved
        back along the sweep to this estimate's position there
        (:attr:`usnav.registration.verdict.RegistrationResult.across_sweep_reference_to_mri`).
        Margins are drawn with it (:attr:`margins_reference_to_mri`) unless a tied candidate
        is set; it is no more checked than the navigation registration (never LIVE), and later
        tries still start from ``reference_to_mri``. None otherwise.
    tied_candidate_reference_to_mri
        For the navigation system's registration (``source="init"``) after the latest
        image-based try was rejected only as ambiguous: that try's candidate
        (:attr:`usnav.registration.verdict.RegistrationResult.tied_candidate_reference_to_mri`).
        Margins are drawn with it, before the across-sweep estimate
        (:attr:`margins_reference_to_mri`); it is as unchecked as the navigation registration
        (never LIVE), and later tries still start from ``reference_to_mri``. None otherwise,
        and None when that candidate lies farther from the navigation registration than
        ``WorkerOptions.max_tied_correction_mm`` (the reason then says so).
    contradicted
        For an image-based estimate in use: why the newest frames contradict it, in words ("":
        they do not). Set when a later update, not adopted, found a pose farther than
        ``WorkerOptions.confirm_within_mm`` from it that scores clearly better on the same
        frames (the patient reference was bumped, the patient moved); cleared when an estimate
        is accepted or this one is confirmed again. Display only: margins are still drawn with
        this estimate, but never as LIVE (:func:`usnav.protocol.display.publisher_state`).
    checked_since_t
        Device time (s) of the oldest frame this estimate was checked on, when that is not the
        worker's whole window: a pose that followed a moved patient reference is judged on
        the frames since the move only. None: the whole window.
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
    tumor_reference_to_mri: np.ndarray | None = None
    unconfirmed: str = ""
    across_sweep_reference_to_mri: np.ndarray | None = None
    tied_candidate_reference_to_mri: np.ndarray | None = None
    contradicted: str = ""
    checked_since_t: float | None = None

    @property
    def checked(self) -> bool:
        """Estimated or confirmed on the images, or from points: anything but the navigation
        system's unchecked registration (``source="init"``)."""
        return self.source != "init"

    @property
    def margins_reference_to_mri(self) -> np.ndarray:
        """The transform margins are drawn with: at the tumor when known, else a tied
        candidate, else the navigation registration corrected across the sweep, when a
        rejected try offered one, else the global."""
        if self.tumor_reference_to_mri is not None:
            return self.tumor_reference_to_mri
        if self.tied_candidate_reference_to_mri is not None:
            return self.tied_candidate_reference_to_mri
        if self.across_sweep_reference_to_mri is not None:
            return self.across_sweep_reference_to_mri
        return self.reference_to_mri

    def age_s(self, now: float | None = None) -> float:
        """Seconds since it was computed."""
        return (time.time() if now is None else now) - self.t_computed
