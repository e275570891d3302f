"""The streaming registration worker: refines ``ReferenceToMri`` from the latest sweep window
beside the frame path.

The frame path calls :meth:`RegistrationWorker.submit` (O(1): a reference into a ring buffer
under a lock, never waiting for the optimiser) and reads
:meth:`RegistrationWorker.latest_accepted` whenever it needs the transform. A daemon thread
runs the registrations: the Numba kernels release the GIL (``nogil=True``), so the frame path
keeps running while they compute; see docs/registration.md for the measured latency impact on
2 cores and why a thread was chosen over a process.

Do no harm: every estimate is published (:meth:`latest`) with its verdict, but only an
accepted one replaces the current estimate (:meth:`latest_accepted`), and it must be clearly
better than that current estimate on the same frames (see :mod:`usnav.registration.rigid`).

Keep learning (the replacement rule, :class:`ReplacementRule`): after the first image-based
estimate, a later window's candidate replaces the estimate in use when, on that window's
frames, it is clearly better (paired per-frame gain ≥ ``min_gain`` with t ≥ ``min_t``) than
the estimate in use **and** than each of the last ``history`` estimates that were in use. Its
correction need not exceed its own uncertainty (that rule, right for the first big correction,
locked the registration after its first estimate). The margin is the hysteresis: an equally
good candidate never replaces; and since a candidate must clearly beat the estimates it would
return to, the registration cannot oscillate between two poses. Updates are deterministic for
the same windows (Nelder–Mead from the estimate in use, no random restarts); which frames form
a window depends on timing in a live run, so ``usnav bench`` measures the spread across runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from usnav.errors import InputError, UsnavError
from usnav.frames import TrackedFrame
from usnav.io.volume import Volume
from usnav.registration.estimate import RegistrationEstimate
from usnav.registration.pose import _paired_gain, mean_displacement
from usnav.registration.rigid import RegistrationOptions, SweepRegistration, check_inputs
from usnav.registration.similarity import (
    MriLevel,
    PreparedFrameCache,
    build_mri_levels,
    crop_box,
    fov_corners,
)
from usnav.registration.sweep import Sweep, detect_fov_mask, new_frame_ids
from usnav.registration.tumor import TumorContext, fit_at_tumor
from usnav.transforms.matrices import MAX_AXIS_SKEW_DEG, decompose_scaled_rigid, is_rigid

log = logging.getLogger(__name__)

#: estimates :meth:`RegistrationWorker.estimates_since` keeps (far more than come between two
#: frames: an update takes at least a frame's time)
RECENT_ESTIMATES = 32

#: The warm updates' "clearly better" gain of the mean similarity (and the replacement rule's):
#: LC²'s 0.003 × MIND-SSC's shallower peak (0.069 / 0.101), rounded.
LIVE_MIND_SIMILARITY_GAIN = 0.002

#: What a display's reason adds while margins are drawn with the navigation registration
#: corrected across the sweep by a try rejected as ambiguous along it.
ACROSS_SWEEP_NOTE = (
    "; margins drawn with the images' correction across the sweep, "
    "the position along the sweep is the navigation's"
)

#: ... and while they are drawn with the candidate of a try rejected only as a tie.
TIED_CANDIDATE_NOTE = (
    "; margins drawn with the latest try's candidate, which ties with other poses (not confirmed)"
)

#: ... and when that candidate is not drawn because it lies too far from the navigation
#: registration (``WorkerOptions.max_tied_correction_mm``).
TIED_TOO_FAR_NOTE = (
    "; its tied candidate, {mm:.1f} mm from the navigation registration, is beyond the "
    "{cap:g} mm within which one is drawn"
)


def streaming_registration_options() -> RegistrationOptions:
    """Warm-started updates: the 1 mm level only, 24 frames, a short search, MIND-SSC like the
    first (cold) estimate (:func:`live_cold_registration_options`). A correction need not
    exceed its uncertainty (``min_correction_to_uncertainty=0``): the
    :class:`ReplacementRule` decides, on the same frames, with hysteresis. Its "clearly
    better" gain, 0.002, is LC²'s 0.003 scaled by MIND-SSC's shallower peak (0.069 / 0.101,
    as the chance margin, :data:`~usnav.registration.options.MIND_MARGIN_OVER_NULL`). The
    ambiguity probe looks ±6 mm along the frame normal only (not along the image, as the cold
    search's does, which would double its cost): a warm update starts at the accepted
    estimate and moves it a few mm; the ±9 mm probe of the batch verdict guards the cold
    search's choice of basin (on a short window a correct update can trail a pose 9.6 mm away
    by < 0.005)."""
    return RegistrationOptions(
        metric="mind_ssc",
        level_spacings_mm=[1.5, 1.0],
        patch_half=[1, 1],
        max_frames=[40, 24],
        max_evaluations=[160, 36],
        uncertainty_evaluations=20,
        min_correction_to_uncertainty=0.0,
        min_similarity_gain=LIVE_MIND_SIMILARITY_GAIN,
        ambiguity_offsets_mm=[6.0],
        ambiguity_axes=["elevation"],
    )


def live_cold_registration_options() -> RegistrationOptions:
    """The live worker's first (cold) registration: the batch defaults (MIND-SSC) without the
    0.5 mm level. The worker compares its warm updates' similarities (1 mm level) with the
    accepted estimate's to confirm it and to replace it, so both must be scored with the same
    similarity at the same finest level; the 0.5 mm level (batch ``usnav register``,
    ``usnav evaluate``) would also make the first live estimate ~2× slower.

    MIND-SSC, not LC² (session 15, tuning families only): the first accepted estimate as
    49 tuning sweeps arrived (after 60–150 frames) had a median error at the bone of 0.65 mm
    against LC²'s 1.19 mm (> 2 mm: 0 against 4), and its ``uncertainty_mm`` covered the error
    at the tumor now in 47 of 48 accepted against 39 of 49; through the live pipeline on 8
    tuning cases (4 sweeps each, MIND-SSC warm updates too) the final error at the bone was
    0.49 mm median (max 0.90) against 0.87 mm (max 1.25). No climb along the sweep
    (``sweep_climbs``, chosen with MIND-SSC at 0.5 mm): with LC² at 1 mm it moved one of the
    49 tuning cases (trailing-echo 1119) to a pose 23 mm off that the verdict then accepted
    (session 13)."""
    return RegistrationOptions(
        metric="mind_ssc",
        level_spacings_mm=[1.5, 1.0],
        patch_half=[1, 1],
        max_frames=[40, 40],
        max_evaluations=[160, 100],
        sweep_climbs=0,
    )


@dataclass(frozen=True)
class WindowCoverage:
    """How far a window's frames move and what they cover (Reference mm).

    Attributes
    ----------
    origin_extent_mm
        Diagonal of the bounding box of the image origins (the transducer's corner).
    corner_motion_mm
        The largest such diagonal of any corner of the field of view: a fan sweep pivots about
        the transducer (its origin hardly moves) while its deep corners sweep the anatomy.
    spine_coverage_mm
        Extent of all the frames' field-of-view corners along the MRI's superior-inferior axis
        (the spine, turned into the Reference frame by the estimate in use): a transverse sweep
        covers what the probe travels along the spine, a sagittal one a frame's width at once.
    """

    origin_extent_mm: float
    corner_motion_mm: float
    spine_coverage_mm: float

    def enough(self, options: WorkerOptions, *, first: bool) -> bool:
        """Whether the window moved enough to register: ``min_extent_first_mm`` of transducer
        travel for the first (cold) try, or ``min_extent_mm`` of motion of the field of view
        while its frames cover ``min_extent_first_mm`` along the spine (a fan or sagittal
        sweep, which the transducer's travel alone never let through); after an image-based
        estimate, ``min_extent_mm`` of motion of the transducer or of the field of view."""
        moved = max(self.origin_extent_mm, self.corner_motion_mm) >= options.min_extent_mm
        if not first:
            return moved
        return self.origin_extent_mm >= options.min_extent_first_mm or (
            moved and self.spine_coverage_mm >= options.min_extent_first_mm
        )


def window_coverage(
    image_to_reference: np.ndarray, corners: np.ndarray, reference_to_mri: np.ndarray
) -> WindowCoverage:
    """:class:`WindowCoverage` of frames with poses ``image_to_reference`` (F, 4, 4), pixel →
    Reference mm, whose field of view has the homogeneous pixel ``corners`` (C, 4)
    (:func:`usnav.registration.similarity.fov_corners`; none: the transducer's travel
    only), under ``reference_to_mri`` (4×4; the MRI is RAS, the spine along its S axis)."""
    origins = image_to_reference[:, :3, 3]
    origin_extent = float(np.linalg.norm(origins.max(axis=0) - origins.min(axis=0)))
    if len(corners) == 0:
        return WindowCoverage(origin_extent, origin_extent, 0.0)
    pts = np.einsum("fij,cj->fci", image_to_reference, corners)[..., :3]  # (F, C, 3)
    motion = float(np.linalg.norm(pts.max(axis=0) - pts.min(axis=0), axis=1).max())
    spine = reference_to_mri[:3, :3].T @ np.array([0.0, 0.0, 1.0])
    along = pts.reshape(-1, 3) @ (spine / np.linalg.norm(spine))
    return WindowCoverage(origin_extent, motion, float(along.max() - along.min()))


def paired_gain(new_scores: np.ndarray, old_scores: np.ndarray) -> tuple[float, float]:
    """Mean per-frame gain of ``new`` over ``old`` (same frames; NaN frames skipped) and its
    paired t statistic (inf for a constant positive gain, 0 for none)."""
    return _paired_gain(np.asarray(new_scores, np.float64), np.asarray(old_scores, np.float64))


class ReplacementRule:
    """When a later window's candidate replaces the registration in use (see the module notes).

    Parameters
    ----------
    min_gain
        Smallest mean per-frame similarity gain that counts as clearly better (the hysteresis).
    min_t
        Smallest paired t statistic of that gain.
    history
        How many earlier estimates in use the candidate must also clearly beat (no return to a
        pose the registration left: no oscillation).
    """

    def __init__(self, min_gain: float, min_t: float, history: int = 4):
        self.min_gain = float(min_gain)
        self.min_t = float(min_t)
        self._past: deque[np.ndarray] = deque(maxlen=max(0, int(history)))

    def judge(
        self,
        score: Callable[[np.ndarray], np.ndarray],
        candidate: np.ndarray,
        current: np.ndarray,
    ) -> tuple[bool, str]:
        """Whether ``candidate`` replaces ``current``; and why (or why not), in words.

        ``score(reference_to_mri)`` returns the per-frame similarity on this window's frames,
        so every comparison is on the same frames.
        """
        new = score(candidate)
        others = [("the estimate in use", current)] + [
            (f"the estimate in use {k} replacement(s) ago", m)
            for k, m in enumerate(self._past, start=1)
        ]
        gains = []
        for label, other in others:
            gain, t = paired_gain(new, score(other))
            if not (gain >= self.min_gain and t >= self.min_t):
                return False, (
                    f"not clearly better than {label} on the same frames "
                    f"(gain {gain:+.4f}, t = {t:.1f}; needs ≥ {self.min_gain:g}, "
                    f"t ≥ {self.min_t:g})"
                )
            gains.append(gain)
        return True, f"clearly better on the same frames (gain {gains[0]:+.4f})"

    def adopted(self, previous: np.ndarray) -> None:
        """Record that the estimate ``previous`` was replaced (most recent first)."""
        self._past.appendleft(np.array(previous, dtype=np.float64))


class WorkerOptions(BaseModel):
    """Options of :class:`RegistrationWorker`."""

    model_config = ConfigDict(extra="forbid")

    window_frames: int = Field(default=150, ge=8)
    """Ring buffer: the most recent frames kept."""
    min_frames: int = Field(default=45, ge=6)
    """Frames needed before the first registration. 45 and ``min_extent_first_mm`` = 15 mm
    (60 and 20 mm until session 15), chosen on 8 tuning-family cases through the live
    pipeline (four sweeps, MIND-SSC worker with the field of view detected again): the mean
    boundary error of all in-view margins 1.08 → 0.98 mm (the first sweep's 2.87 → 2.28 mm;
    sweeps 2–4 0.55 → 0.59 mm), final error at the bone 0.59 → 0.61 mm median (max 0.99 →
    1.25). The first accepted estimate comes sooner (49 tuning sweeps: median 90 → 60
    frames; none within the sweep 4 → 2) and is less accurate (at the bone median 0.64 →
    0.81 mm, > 2 mm 0 → 3; bound ≥ error at the tumor now 44/45 → 43/47): later windows
    replace it. With LC² (session 14's worker) the same earlier start left the final error
    at 1.90 mm median, so it was not adopted then."""
    min_new_frames: int = Field(default=15, ge=1)
    """New frames since the last registration before the next one."""
    min_extent_mm: float = Field(default=10.0, ge=0)
    """A window must span at least this (the probe has to move to see 3D structure): the
    transducer's travel or the largest motion of a corner of the field of view (a fan pivots
    about the transducer); :class:`WindowCoverage`."""
    min_extent_first_mm: float = Field(default=15.0, ge=0)
    """... and the first (cold) registration at least this (most of a vertebral level; see
    ``min_frames``): of transducer travel, or of coverage along the spine by a window that
    moved ``min_extent_mm`` (a fan's deep field, a sagittal frame's width). Until session 25
    only the travel counted, and the live worker never tried a fan or a sagittal sweep
    narrower than 15 mm (held-out live cases 3506, 3605: no estimate in four sweeps)."""
    crop_margin_mm: float = Field(default=45.0, gt=0)
    """MRI crop around the window; rebuilt only when a window leaves it."""
    full: RegistrationOptions = Field(default_factory=live_cold_registration_options)
    """The first (cold) registration from the navigation estimate (1 mm finest level, like the
    warm updates: their similarities are compared with its own)."""
    warm: RegistrationOptions = Field(default_factory=streaming_registration_options)
    """Warm-started refinements after an image-based estimate was accepted."""
    min_interval_s: float = Field(default=0.0, ge=0)
    """Minimum time between registrations (0: as fast as frames arrive)."""
    rejudge_first: StrictBool = True
    """The first image-based estimate, when it came from a window shorter than
    ``window_frames``, is judged again once the window is full: a cold registration from the
    navigation registration on the full window (``full``). If that one is accepted it becomes
    the estimate in use; if it is rejected the first estimate is withdrawn and the navigation
    registration is in use again (the margins drawn with the rejected try's tied candidate or
    across-sweep estimate, when it offers one), and cold tries go on — unless it was rejected
    only for a tie (no distinct pose better by ``ambiguity_min_gain``) and its own optimum
    lies within the cold options' ``ambiguity_distinct_mm`` of the first estimate: the full
    window then finds the same pose and the first estimate stays (session 26: on a live case
    of the independent simulator the withdrawal threw away a 1.06 mm estimate for the 3.9 mm
    navigation registration, the full window's optimum lying by it; chosen on tuning seeds
    1359–1374, one case changed, 1.56 → 1.15 mm in use; docs/pipeline.md "Session 26").
    Session 25: a first estimate accepted from 45 frames stayed
    7.8 mm off for the rest of a held-out live case (3706) while every full window refused it.
    Chosen on eight tuning-family live cases (1351–1358): mean boundary error 0.71 → 0.62 mm,
    the final error lower on seven (docs/pipeline.md). False: the first estimate stays until
    a warm update replaces it."""
    margins_across_sweep: StrictBool = True
    """Until an image-based estimate is accepted, draw margins with the navigation
    registration corrected across the sweep when the latest cold try was rejected only as
    ambiguous along the sweep (:attr:`RegistrationEstimate.across_sweep_reference_to_mri`;
    still UNCERTAIN, never LIVE), unless :attr:`margins_from_tied_candidate` draws them with
    that try's candidate (the default since session 27). False: with the tied candidate when
    that option is on, else the navigation registration itself."""
    margins_from_tied_candidate: StrictBool = True
    """Until an image-based estimate is accepted, draw margins with the latest cold try's
    candidate when it was rejected only for a tie
    (:attr:`RegistrationEstimate.tied_candidate_reference_to_mri`, before the across-sweep
    estimate; still UNCERTAIN, never LIVE): the image clearly prefers it to the navigation
    registration, it only cannot single it out. Session 27 (docs/pipeline.md): on tuning seeds
    1391–1438 the margins' error in use 1.337 → 1.310 mm (8 cases better by > 0.1 mm, 2 worse,
    by ≤ 0.18 mm). False: the across-sweep estimate or the navigation registration."""
    max_tied_correction_mm: float = Field(default=10.0, gt=0)
    """... but only when that candidate lies at most this far from the navigation registration
    (its ``correction_mm``, mean over the field of view); farther, the across-sweep estimate or
    the navigation registration draws them. The registration is specified for navigation
    errors of 4–8 mm at the tumor (#16, with 3–8° of rotation, so a correct correction, a
    mean over the field of view, can come near 10 mm: 9.6 mm was seen); the candidates the cap
    refused were 7.5–18.5 mm from the truth. Session 29 (docs/registration.md "A tie's
    candidate is drawn only within 10 mm"): the best pooled rule on tuning seeds 1487–1534
    and 1 case better, none worse on 1439–1486, then reported on fresh held-out seeds
    3887–3914 and independent-simulator seeds 5191–5196, 5201–5206: the margins' error in use
    1.827 → 1.816 mm, 2 cases better, none worse."""
    confirm_within_mm: float = Field(default=0.75, ge=0)
    """A rejected update whose candidate lies within this of the accepted estimate (mean over
    the field of view) confirms it: the new frames still agree with it, so its age restarts.
    Without this a correct registration would age into STALE while the surgeon scans."""
    confirm_min_similarity_ratio: float = Field(default=0.8, ge=0, le=1)
    """... provided the accepted estimate's similarity on the new frames is at least this
    fraction of what it was when accepted (it has not collapsed: the anatomy did not move)."""
    demote_when_contradicted: StrictBool = True
    """An update not adopted whose candidate lies farther than ``confirm_within_mm`` from the
    image-based estimate in use and scores clearly better than it on the same frames (the
    warm options' ``min_similarity_gain`` and ``min_paired_t``: the replacement rule's
    "clearly") marks that estimate :attr:`RegistrationEstimate.contradicted`: a display shows
    it UNCERTAIN until an estimate is accepted or it is confirmed again. It changes no
    estimate. Session 37 (notes/session-37-bump.md, tuning seeds 1801-1808, live runs with a
    site budget that allows LIVE): after the patient reference was bumped by 3-6 mm the wrong
    estimate stayed LIVE for 28-61 s (until an update was finally adopted or
    ``max_unchecked_s`` ran out: the updates in between were rejected, most as ambiguous); with
    this it is UNCERTAIN 8.0-8.7 s after the bump. In 8 runs without a bump it fired once, for
    3.6 s (38 of 6722 in-view margins, none over 2 mm). False: no such demotion."""
    recover_when_contradicted: StrictBool = False
    """While the image-based estimate in use is contradicted
    (:attr:`demote_when_contradicted`), each update is a cold try (the ``full`` options: the
    first registration's search, with its restarts and its ambiguity probe) started from that
    estimate and judged against it on the same frames; its candidate is adopted when the
    verdict accepts it and it is clearly better than the estimate in use on the same frames
    (the replacement rule's "clearly", without its no-return history: the world moved, so a
    pose the registration left may be right again). A cold candidate within
    ``confirm_within_mm`` confirms the estimate as a warm one does; the correction need not
    exceed its own uncertainty (as for a warm update). Nothing changes while no estimate is
    contradicted (the same estimates, bit for bit, on four tuning cases). Session 37
    (notes/session-37-recover.md, tuning seeds 1801-1808, the bump harness): after a 3-6 mm
    bump the overlay was corrected 11.0-14.7 s after it in 5 of 5 live runs (0.15-0.64 mm at
    the tumor; ~2.5 s per cold try), against 1 of 5 within 72 s without it; offline every
    contradicted case was corrected at the first cold try, and a reference put back was
    followed back. Held-out seeds 7551-7556 (offline, a rule written before the run): bumps
    corrected 6 of 6 against 3 of 6 without it, none worse by over 0.05 mm; but in one ordinary
    run (mixed 7556) a contradiction fired and the flag's cold try changed the answer (0.99 ->
    0.97 mm), which the rule's "changes nothing without a bump" forbade: off by default, said
    so (notes/session-37-recover.md). False: the warm updates go on from the contradicted
    estimate."""
    test_moved_reference: StrictBool = False
    """When the pipeline sees the patient reference move against the tracker
    (:meth:`RegistrationWorker.propose_moved_reference`, session 38), the pose that follows
    the move — the estimate in use composed with it, right if the reference was bumped and
    the anatomy stayed — is scored against the estimate in use (right if the patient moved
    with the reference, or the camera moved) on the frames since the move, once
    ``min_frames`` of them cover enough ground, and adopted when it is clearly better (the
    replacement rule's "clearly", without its no-return history). No search: both poses come
    from tracking, the images only choose. Otherwise the proposal is dropped once the estimate
    in use scores clearly better, or a whole window of frames since the move could not tell
    them apart."""
    threads: int = Field(default=1, ge=0)
    """Threads of the worker's similarity evaluations (its registrations' ``threads`` is
    replaced by this). 1 leaves the other core of a 2-core machine to the frame path; 0 =
    every core."""
    tumor_spacing_mm: float = Field(default=0.5, gt=0)
    """Pixel size of the tumor stage (with a tumor label; its other options are ``full``'s
    ``tumor_*``): the 0.5 mm at which it was chosen for batch registration."""
    replace_history: int = Field(default=4, ge=0)
    """A later candidate must also clearly beat this many earlier estimates in use (same
    frames): the registration never returns to a pose it left (see :class:`ReplacementRule`);
    "clearly" is the warm options' ``min_similarity_gain`` and ``min_paired_t``."""

    fov_refresh_updates: int = Field(default=10, ge=1)
    """After the first image-based estimate, the field of view is detected again from the
    window once this many updates have used the mask (10: about a window's 150 new frames at
    ``min_new_frames``; before that estimate: at every try). A mask detected
    once from the first window and kept (until session 15) could miss a fifth of the field of
    view: tuning case trailing-echo 1119, 49 695 pixels from its first 75 frames against
    63 380 from 90, and with the smaller mask the 90-frame window's estimate was 10.2 mm off
    (rejected as ambiguous) where a fresh worker's was 1.0 mm (accepted). Detection costs
    ~10 ms (256² frames): at every warm update it would take the update past its 50 ms."""

    @model_validator(mode="after")
    def _same_finest_similarity(self) -> WorkerOptions:
        # the worker compares the similarity of a warm update with the accepted estimate's
        # (confirmation ratio): both must be the same score at the same pixel size
        last = len(self.full.level_spacings_mm) - 1, len(self.warm.level_spacings_mm) - 1
        cold = self.full.level_metric(last[0]), self.full.level_spacings_mm[-1]
        warm = self.warm.level_metric(last[1]), self.warm.level_spacings_mm[-1]
        if cold != warm:
            raise ValueError(
                "the first (full) and the warm registrations must end on the same similarity "
                f"at the same pixel size (their scores are compared); got full {cold[0]} at "
                f"{cold[1]:g} mm and warm {warm[0]} at {warm[1]:g} mm"
            )
        for name, options in (("full", self.full), ("warm", self.warm)):
            # the streaming worker steps along the MRI's world axes; an option it would
            # ignore is refused rather than silently not applied
            if options.search_axes != "mri_world":
                raise ValueError(
                    f"{name}.search_axes = {options.search_axes!r}: the streaming worker "
                    "searches along the MRI's world axes only ('mri_world'); the other axes "
                    "are for batch registration (usnav register)"
                )
        return self


class WindowArrays:
    """A sliding window's frames stacked into one array, each frame copied once.

    Consecutive windows share most of their frames (150 frames, 15 new per update): instead of
    stacking all of them at every update (~1.5 ms and a fresh ~10 MB array for 256² frames),
    the frames still in the window stay where they are, the new ones are copied after them,
    and the run is moved back to the start of the array when it reaches its end (every five
    updates: the array holds 1.5 windows). Each frame copied in gets a new id
    (:func:`~usnav.registration.sweep.new_frame_ids`), by which the frame cache knows it.
    The arrays hold the same values as ``np.stack`` of the window's images and poses.

    A frame is taken to be one already in the array when it is the same image and pose
    objects at the same place in the run. The worker keeps references to the frames offered
    to it and copies them when an update first uses them, so a frame must not be changed in
    place after it was offered (see :meth:`RegistrationWorker.submit`). A window whose frames
    are not all ndarrays of one shape and dtype with float64 4×4 poses is stacked afresh
    (``np.stack``, without ids).

    Parameters
    ----------
    window_frames
        The usual window length: the array holds 1.5 times it (or 1.5 times a longer window).
    """

    def __init__(self, window_frames: int = 150) -> None:
        self.window_frames = int(window_frames)
        self._images: np.ndarray | None = None
        self._poses: np.ndarray | None = None
        self._ids: np.ndarray | None = None
        #: the (image, pose) objects whose copies are in slots [_start, _start + len(_held))
        self._held: list[tuple[np.ndarray, np.ndarray]] = []
        self._start = 0

    def arrays(
        self, window: list[tuple[np.ndarray, np.ndarray, float]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(images (F, rows, cols), poses (F, 4, 4) float64, frame ids (F,) int64 or None) of
        ``window``'s (image, ImageToReference, t) frames: read-only views, valid until the
        next call."""
        n = len(window)
        kept, start = self._kept_run(window)
        images = self._images
        if (
            n == 0
            or images is None
            or n > images.shape[0]
            or not self._fits(window[kept:], images[0])
        ):
            if n == 0 or not self._fits(window, window[0][0]):
                # stacked afresh, as before (np.stack's error for no frames)
                if n:
                    self._drop()
                return np.stack([w[0] for w in window]), np.stack([w[1] for w in window]), None
            first = window[0][0]
            capacity = max(n, self.window_frames) * 3 // 2
            images = np.empty((capacity, *first.shape), first.dtype)
            self._images, self._poses = images, np.empty((capacity, 4, 4))
            self._ids = np.empty(capacity, np.int64)
            kept, start = 0, 0
        poses, ids = self._poses, self._ids
        assert poses is not None and ids is not None
        if start + n > images.shape[0]:
            # the kept run back to the front, in blocks that never overlap their source
            for a in range(0, kept, start):
                b = min(a + start, kept)
                for arr in (images, poses, ids):
                    arr[a:b] = arr[start + a : start + b]
            start = 0
        ids[start + kept : start + n] = new_frame_ids(n - kept)
        for i in range(kept, n):
            images[start + i] = window[i][0]
            poses[start + i] = window[i][1]
        self._held = [(w[0], w[1]) for w in window]
        self._start = start
        out = images[start : start + n], poses[start : start + n], ids[start : start + n]
        for view in out:
            view.flags.writeable = False
        return out

    def _drop(self) -> None:
        """Forget the array and the frames in it."""
        self._images = self._poses = self._ids = None
        self._held = []
        self._start = 0

    def _kept_run(self, window: list[tuple[np.ndarray, np.ndarray, float]]) -> tuple[int, int]:
        """(m, slot): ``window[:m]`` are held frames, in order, from array slot ``slot`` on."""
        held = self._held
        if not window or not held:
            return 0, 0
        image, pose = window[0][0], window[0][1]
        for j, (h_image, h_pose) in enumerate(held):
            if h_image is image and h_pose is pose:
                m = 1
                limit = min(len(window), len(held) - j)
                while (
                    m < limit and held[j + m][0] is window[m][0] and held[j + m][1] is window[m][1]
                ):
                    m += 1
                return m, self._start + j
        return 0, 0

    @staticmethod
    def _fits(frames: list[tuple[np.ndarray, np.ndarray, float]], like: np.ndarray) -> bool:
        """Whether ``frames`` are ndarrays of ``like``'s shape and dtype with float64 4×4
        poses (copied into the array they are what ``np.stack`` would give)."""
        shape, dtype = like.shape, like.dtype
        for w in frames:
            image, pose = w[0], w[1]
            if not (
                isinstance(image, np.ndarray)
                and image.shape == shape
                and image.dtype == dtype
                and isinstance(pose, np.ndarray)
                and pose.shape == (4, 4)
                and pose.dtype == np.float64
            ):
                return False
        return True


@dataclass
class WorkerStats:
    """Counters of a worker (read without locking: approximate)."""

    submitted: int = 0
    updates: int = 0
    accepted: int = 0
    rejected: int = 0
    confirmed: int = 0
    contradicted: int = 0  # updates that marked the estimate in use as contradicted
    moved_adopted: int = 0  # poses that followed a moved reference, adopted
    moved_dropped: int = 0  # such proposals dropped (the estimate in use held, or a tie)
    failed: int = 0
    bad_frames: int = 0  # offered but unusable (not 2D, pose not a finite 4×4): dropped
    last_update_s: float = float("nan")
    last_error: str = ""


@dataclass(frozen=True)
class _MovedReference:
    """A pose that follows a patient reference moved against the tracker, waiting for frames
    to be judged on (:meth:`RegistrationWorker.propose_moved_reference`)."""

    based_on: int  # the sequence of the estimate in use it was composed with
    reference_to_mri: np.ndarray
    tumor_reference_to_mri: np.ndarray | None
    since_t: float  # device time of the first frame after the move, s
    motion_mm: float


class RegistrationWorker:
    """Refines ``ReferenceToMri`` from the most recent frames, in a background thread.

    Parameters
    ----------
    mri
        Preoperative MRI (RAS mm). Checked (finite voxels) at construction.
    image_to_probe
        Calibration (pixel → Probe mm); used by :meth:`submit_frame` and to check pixel sizes.
    initial
        Initial ``ReferenceToMri`` (navigation or point-based), published as the first
        accepted estimate (``source="init"``).
    options
        :class:`WorkerOptions`.
    on_estimate
        Called from the worker thread with every new estimate (accepted or not). Keep it
        short; exceptions are logged and ignored.

    Examples
    --------
    >>> worker = RegistrationWorker(mri, image_to_probe, initial).start()  # doctest: +SKIP
    >>> worker.submit(image_u8, image_to_reference, t)                      # doctest: +SKIP
    >>> worker.latest_accepted().reference_to_mri                           # doctest: +SKIP
    >>> worker.stop()                                                       # doctest: +SKIP
    """

    def __init__(
        self,
        mri: Volume,
        image_to_probe: np.ndarray,
        initial: np.ndarray,
        options: WorkerOptions | None = None,
        *,
        on_estimate: Callable[[RegistrationEstimate], None] | None = None,
        tumor_label: Volume | None = None,
    ):
        self.options = options or WorkerOptions()
        self.mri = mri
        self.image_to_probe = np.asarray(image_to_probe, dtype=np.float64)
        try:
            decompose_scaled_rigid(self.image_to_probe, tol_deg=MAX_AXIS_SKEW_DEG)
        except ValueError as exc:
            raise InputError(
                "ImageToProbe",
                f"{exc}",
                "give the probe's calibration (usnav calibrate spatial, or PLUS's ImageToProbe)",
            ) from exc
        init = np.asarray(initial, dtype=np.float64)
        if init.shape != (4, 4) or not is_rigid(init):
            raise InputError("initial ReferenceToMri", "is not a rigid 4×4 transform")
        mri.check_finite()
        self._tumor: TumorContext | None = None
        if tumor_label is not None and self.options.full.tumor_stage:
            spacing = self.options.tumor_spacing_mm
            self._tumor = TumorContext.build(mri, tumor_label, spacing)
        self._on_estimate = on_estimate
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._frames: deque[tuple[np.ndarray, np.ndarray, float]] = deque(
            maxlen=self.options.window_frames
        )
        self._new = 0
        self._stop = False
        self._thread: threading.Thread | None = None
        self._sequence = 0
        first = RegistrationEstimate(
            init.copy(),
            accepted=True,
            quality=0.0,
            source="init",
            reason="initial registration (not image-based)",
        )
        self._latest = first
        #: the newest estimates, oldest first: two can come between two looks at
        #: :meth:`latest` (a first estimate and the full window's judgment of it)
        self._recent: deque[RegistrationEstimate] = deque([first], maxlen=RECENT_ESTIMATES)
        self._accepted = first
        self._navigation = first
        self._image_accepted = False
        #: the first image-based estimate came from a short window: judge it again when full
        self._rejudge_due = False
        #: image-based tries rejected while the navigation registration is in use
        self._cold_rejected = 0
        #: a pose that follows a moved reference, waiting to be judged
        self._moved: _MovedReference | None = None
        self.rule = self._fresh_rule()
        self._mri_levels: dict[str, list[MriLevel]] = {}
        self._mri_checked = False  # passed check_inputs' MRI checks once
        self._checked_start = b""  # the start (bytes) that passed check_inputs' last call
        self._crop: tuple[np.ndarray, np.ndarray] | None = None
        self._mask: np.ndarray | None = None
        self._mask_shape: tuple[int, ...] | None = None
        self._updates_since_mask = 0
        # frames resampled by earlier updates (each window shares most of its frames with the
        # previous one): a window's frames per level, for the levels of both registrations
        self._frame_cache = PreparedFrameCache(max_frames=self.options.window_frames)
        # the window's frames stacked once each (one update at a time uses the array: a
        # concurrent update stacks its own)
        self._window = WindowArrays(self.options.window_frames)
        self._window_lock = threading.Lock()
        self.stats = WorkerStats()

    # ---------------------------------------------------------------- frame path side

    def start(self) -> RegistrationWorker:
        """Start the background thread (kernels should be warm: ``warm_up()``)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="usnav-registration", daemon=True
            )
            self._thread.start()
        return self

    def submit(self, image: np.ndarray, image_to_reference: np.ndarray, t: float) -> None:
        """Offer one frame: ``image`` (rows, cols) uint8, its ``ImageToReference`` (4×4, mm),
        its time (s). Never blocks on the optimiser; a bad frame is dropped silently (counted
        in ``stats.bad_frames``). The worker keeps a reference to ``image`` (no copy here):
        it must not be changed afterwards (give each frame its own array)."""
        pose = np.asarray(image_to_reference, dtype=np.float64)
        img = np.asarray(image)
        if img.ndim != 2 or pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
            with self._lock:
                self.stats.bad_frames += 1
            return
        with self._lock:
            if self._frames and self._frames[-1][0].shape != img.shape:
                self._frames.clear()  # the probe or depth changed: a new sweep
                self._mask = None
            self._frames.append((img, pose, float(t)))
            self._new += 1
            self.stats.submitted += 1
            if self._new >= self.options.min_new_frames:
                self._wake.notify()

    def submit_frame(self, frame: TrackedFrame) -> bool:
        """Offer a :class:`TrackedFrame` carrying ``ImageToReference``, ``ProbeToReference``
        or ``ProbeToTracker`` + ``ReferenceToTracker``; returns False if its tracking is not
        valid (the frame is then skipped)."""
        from usnav.registration.sweep import _image_to_reference

        pose = _image_to_reference(frame, self.image_to_probe)
        if pose is None or not frame.image_ok or frame.image.ndim != 2:
            return False
        self.submit(frame.image, pose, frame.t_device)
        return True

    def latest_accepted(self) -> RegistrationEstimate:
        """The estimate to display: the newest accepted one (the initial one at first)."""
        with self._lock:
            return self._accepted

    def latest(self) -> RegistrationEstimate:
        """The newest estimate, accepted or rejected (for information only)."""
        with self._lock:
            return self._latest

    def estimates_since(self, sequence: int) -> list[RegistrationEstimate]:
        """Every estimate with a sequence number above ``sequence``, oldest first (of the last
        :data:`RECENT_ESTIMATES`): what :meth:`latest` alone misses when two estimates come
        between two looks."""
        with self._lock:
            return [e for e in self._recent if e.sequence > sequence]

    def propose_moved_reference(
        self, reference_change: np.ndarray, since_t: float, motion_mm: float
    ) -> bool:
        """The patient reference moved against the tracker (the pipeline saw it,
        :mod:`usnav.pipeline.reference_motion`): judge the pose that follows the move
        (:attr:`WorkerOptions.test_moved_reference`). Returns whether it was taken up.

        Parameters
        ----------
        reference_change
            4×4 rigid, ``inv(ReferenceToTracker before) · ReferenceToTracker after``: Reference
            mm after the move → Reference mm before it. If the anatomy stayed and the reference
            moved, the registration that holds after the move is ``ReferenceToMri ·
            reference_change``.
        since_t
            Device time of the first frame after the move, s (the frames it is judged on).
        motion_mm
            The move's size at the image, mm (for the reason).
        """
        change = np.asarray(reference_change, dtype=np.float64)
        if (
            not self.options.test_moved_reference
            or change.shape != (4, 4)
            or not np.all(np.isfinite(change))
            or not is_rigid(change)
        ):
            return False
        with self._lock:
            current = self._accepted
            if not current.checked:  # never LIVE anyway; the next try starts from it
                return False
            tumor = current.tumor_reference_to_mri
            self._moved = _MovedReference(
                current.sequence,
                current.reference_to_mri @ change,
                None if tumor is None else tumor @ change,
                float(since_t),
                float(motion_mm),
            )
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread after the registration in progress (if any)."""
        with self._lock:
            self._stop = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> RegistrationWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- worker side

    def _run(self) -> None:
        last = 0.0
        while True:
            with self._lock:
                while not self._stop and (
                    self._new < self.options.min_new_frames
                    or len(self._frames) < self.options.min_frames
                ):
                    self._wake.wait(0.5)
                if self._stop:
                    return
                window = list(self._frames)
                self._new = 0
            wait = self.options.min_interval_s - (time.monotonic() - last)
            if wait > 0:
                time.sleep(wait)
            last = time.monotonic()
            try:
                self.update(window)
            except UsnavError as exc:
                self.stats.failed += 1
                self.stats.last_error = str(exc)
                log.info("registration skipped: %s", exc)
            except Exception as exc:  # a worker never dies of one bad window
                self.stats.failed += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("registration failed")

    def update(
        self, window: list[tuple[np.ndarray, np.ndarray, float]]
    ) -> RegistrationEstimate | None:
        """Register one window of (image, ImageToReference, t) now, in the calling thread, and
        publish the estimate. Returns it (None if the window is unusable: too little motion).

        The frames are copied into the worker's window array the first time an update uses
        them (:class:`WindowArrays`): a frame given again must be the same, unchanged image
        and pose arrays (a changed frame is a new array)."""
        t0 = time.perf_counter()
        if not self._window_lock.acquire(blocking=False):  # another update is running
            stacked = np.stack([w[0] for w in window]), np.stack([w[1] for w in window]), None
            return self._update(window, t0, stacked)
        try:
            return self._update(window, t0, self._window.arrays(window))
        finally:
            self._window_lock.release()

    def _update(
        self,
        window: list[tuple[np.ndarray, np.ndarray, float]],
        t0: float,
        stacked: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    ) -> RegistrationEstimate | None:
        """:meth:`update` of the window stacked as (images, poses, frame ids or None)."""
        images, poses, frame_ids = stacked
        stamps = np.array([w[2] for w in window])
        if self._mask_is_due(images.shape[1:]):
            self._mask = detect_fov_mask(images)
            self._mask_shape = images.shape[1:]
            self._updates_since_mask = 0
        if self._moved is not None:
            judged = self._judge_moved(images, poses, stamps)
            if judged is not None:
                return judged
        coverage = window_coverage(poses, fov_corners(self._mask), self._accepted.reference_to_mri)
        if not coverage.enough(self.options, first=not self._image_accepted):
            return None
        self._updates_since_mask += 1
        sweep = Sweep(
            images,
            poses,
            stamps,
            source="streaming window",
            fov_mask=self._mask,
            frame_ids=frame_ids,
        )
        current = self.latest_accepted()
        warm = self._image_accepted
        rejudge = (
            warm
            and self._rejudge_due
            and self.options.rejudge_first
            and len(window) >= self.options.window_frames
        )
        first = current  # the estimate a re-judgment is about
        if rejudge:  # a cold try from the navigation registration on the full window
            self._rejudge_due = False
            current, warm = self._navigation, False
        # the estimate in use is contradicted: a cold try from it, judged against it
        recover = bool(warm and self.options.recover_when_contradicted and current.contradicted)
        if recover:
            warm = False
        opts = self.options.warm if warm else self.options.full
        if recover:  # a correction need not exceed its uncertainty (as for a warm update)
            opts = opts.model_copy(
                update={
                    "min_correction_to_uncertainty": self.options.warm.min_correction_to_uncertainty
                }
            )
        if opts.threads != self.options.threads:
            opts = opts.model_copy(update={"threads": self.options.threads})
        start = np.asarray(current.reference_to_mri).tobytes()
        if not (self._mri_checked and start == self._checked_start):
            # (the checks of a start that passed them once, on a window with frames, would
            # pass again)
            check_inputs(self.mri, sweep, current.reference_to_mri, mri_checked=self._mri_checked)
            self._checked_start = start
        self._mri_checked = True  # the worker's MRI does not change (its crops are cached too)
        levels = self._levels_for(sweep, current.reference_to_mri, opts)
        problem = SweepRegistration(
            self.mri,
            sweep,
            current.reference_to_mri,
            opts,
            mri_levels=levels,
            frame_cache=self._frame_cache,
        )
        result = problem.run(current.reference_to_mri, current=current.reference_to_mri, warm=warm)
        verdict = ""
        if warm and result.accepted:
            # a later window: the replacement rule, on the same frames, against the estimate in
            # use and the ones it replaced
            fine = problem.level(-1).similarity
            adopt, verdict = self.rule.judge(
                lambda m: fine.evaluate(m)[1], result.candidate, current.reference_to_mri
            )
            if not adopt:
                result.accepted = False
                verdict = f"rejected: {verdict}"
        elif recover:
            fine = problem.level(-1).similarity
            verdict = "a cold try from the contradicted estimate in use"
            if result.accepted:
                # against the estimate in use only: the no-return history does not apply
                adopt, why = ReplacementRule(self.rule.min_gain, self.rule.min_t, 0).judge(
                    lambda m: fine.evaluate(m)[1], result.candidate, current.reference_to_mri
                )
                if not adopt:
                    result.accepted = False
                    verdict = f"rejected: {verdict}, {why}"
                else:
                    verdict = f"{verdict}, {why}"
            else:
                verdict = f"rejected: {verdict}"
        if rejudge:
            # whatever the full window says, the replacement rule's history starts again
            self.rule = self._fresh_rule()
            if not result.accepted:
                keep, verdict = self._rejudged(problem, result, first, len(window))
                if not keep:
                    with self._lock:
                        self._accepted = self._navigation
                        self._image_accepted = False
        stage = None
        if self._tumor is not None and result.accepted:
            # where the tumor is now: margins are drawn with it, updates start from the global
            stage = fit_at_tumor(sweep, self._tumor, result.candidate, self.options.full)
            if stage.applied:
                result.followed_tumor(opts)  # the options the bound was computed with
        with self._lock:
            self._sequence += 1
            estimate = result.estimate(sequence=self._sequence)
            if verdict:
                estimate = replace(estimate, reason=f"{verdict}; {result.reason}")
            if stage is not None:
                estimate = replace(
                    estimate,
                    reason=f"{estimate.reason}; {stage.reason}",
                    tumor_reference_to_mri=stage.reference_to_mri if stage.applied else None,
                )
            self._latest = estimate
            self._recent.append(estimate)
            if estimate.accepted:
                if warm or recover:
                    self.rule.adopted(current.reference_to_mri)
                elif not rejudge:  # a first estimate from a short window is judged again
                    self._rejudge_due = len(window) < self.options.window_frames
                self._accepted = estimate
                self._image_accepted = True
            elif not self._image_accepted:
                # the navigation registration stays in use, but the images were tried and
                # did not confirm it: a display must not keep saying "not yet checked"
                self._cold_rejected += 1
                tries = "try" if self._cold_rejected == 1 else "tries"
                why = estimate.reason.removeprefix("rejected: ")
                across = (  # the latest try's, or None
                    result.across_sweep_reference_to_mri
                    if self.options.margins_across_sweep
                    else None
                )
                tied = (
                    result.tied_candidate_reference_to_mri
                    if self.options.margins_from_tied_candidate
                    else None
                )
                too_far = ""
                if tied is not None and result.correction_mm > self.options.max_tied_correction_mm:
                    too_far = TIED_TOO_FAR_NOTE.format(
                        mm=result.correction_mm, cap=self.options.max_tied_correction_mm
                    )
                    tied = None
                note = ACROSS_SWEEP_NOTE if across is not None else ""
                note = TIED_CANDIDATE_NOTE if tied is not None else note  # drawn first
                note = too_far + note
                self._accepted = replace(
                    self._accepted,
                    unconfirmed=f"{self._cold_rejected} image-based {tries} rejected "
                    f"(latest: {_shorten(why)})" + note,
                    across_sweep_reference_to_mri=across,
                    tied_candidate_reference_to_mri=tied,
                )
            elif self._confirms(result, current):
                self._accepted = replace(
                    current,
                    t_computed=time.time(),
                    reason=(
                        f"confirmed by image: the update from {len(window)} new frames lies "
                        f"{result.correction_mm:.2f} mm from it"
                    ),
                    contradicted="",
                    checked_since_t=None,
                )
                self.stats.confirmed += 1
            elif (
                warm
                and not rejudge
                and (why := self._contradiction(result, current, estimate.reason))
            ):
                # display only: the estimate in use stays, but is no longer shown as good
                self._accepted = replace(self._accepted, contradicted=why)
                self.stats.contradicted += 1
        self.stats.updates += 1
        self.stats.accepted += int(estimate.accepted)
        self.stats.rejected += int(not estimate.accepted)
        self.stats.last_update_s = time.perf_counter() - t0
        if self._on_estimate is not None:
            try:
                self._on_estimate(estimate)
            except Exception:
                log.exception("on_estimate callback failed")
        return estimate

    def _rejudged(
        self,
        problem: SweepRegistration,
        result,
        first: RegistrationEstimate,
        frames: int,
    ) -> tuple[bool, str]:
        """The verdict on the first estimate when the full window's cold try was rejected.

        It is kept when that try failed only for a tie (another distinct pose scored within
        ``ambiguity_min_gain`` of it, not better by more) and its own optimum lies within
        ``ambiguity_distinct_mm`` of the first estimate (mean over the field of view): the full
        window then finds the same pose, it only does not rule out another one, which the
        shorter window did. Otherwise it is withdrawn.
        Returns (keep it, the verdict for the estimate's reason).
        """
        pts = problem.verdict_points()
        apart = mean_displacement(result.candidate, first.reference_to_mri, pts)
        # a tie, not a clearly better pose elsewhere (the live cold search does not climb to
        # one): no distinct alternative leads the candidate by the verdict's own lead
        lead = problem.options.ambiguity_min_gain
        tie = result.only_tied and result.diagnostics.get("ambiguity_margin", -np.inf) > -lead
        if tie and apart <= problem.options.ambiguity_distinct_mm:
            return True, (
                "rejected, the first image-based estimate kept: the full window's own "
                f"optimum lies {apart:.2f} mm from it (a tie elsewhere, not another optimum)"
            )
        return False, (
            "rejected: the first image-based estimate, from a shorter window, is withdrawn: "
            f"the full window ({frames} frames) does not bear it out (its optimum lies "
            f"{apart:.2f} mm from it)"
        )

    def _fresh_rule(self) -> ReplacementRule:
        """The replacement rule of the warm options, with no history."""
        return ReplacementRule(
            self.options.warm.min_similarity_gain,
            self.options.warm.min_paired_t,
            self.options.replace_history,
        )

    def _mask_is_due(self, shape: tuple[int, ...]) -> bool:
        """Whether to detect the field of view again from this window: none yet or another
        frame size, every try before the first image-based estimate (a mask from a short
        first window can miss part of the field of view, and the first estimate must not
        depend on the windows tried before it); after it, once ``fov_refresh_updates`` updates
        have used the mask."""
        if self._mask is None or self._mask_shape != shape or not self._image_accepted:
            return True
        return self._updates_since_mask >= self.options.fov_refresh_updates

    def _confirms(self, result, current: RegistrationEstimate) -> bool:
        """Whether a rejected update confirms the accepted image-based estimate."""
        if not self._image_accepted or current.source != "image":
            return False
        if not np.isfinite(result.correction_mm):
            return False
        if result.correction_mm > self.options.confirm_within_mm:
            return False
        if np.isfinite(current.similarity) and current.similarity > 0:
            ratio = result.initial_similarity / current.similarity
            return bool(ratio >= self.options.confirm_min_similarity_ratio)
        return True

    def _contradiction(self, result, current: RegistrationEstimate, verdict: str) -> str:
        """Why a rejected warm update contradicts the image-based estimate in use ("" if it
        does not): its candidate lies farther than ``confirm_within_mm`` from it and scores
        clearly better on the same frames (:attr:`WorkerOptions.demote_when_contradicted`)."""
        if not (self.options.demote_when_contradicted and self._image_accepted):
            return ""
        if current.source != "image" or not np.isfinite(result.correction_mm):
            return ""
        gain = float(result.diagnostics.get("gain", np.nan))
        t = float(result.diagnostics.get("paired_t", np.nan))
        warm = self.options.warm
        if not (
            result.correction_mm > self.options.confirm_within_mm
            and gain >= warm.min_similarity_gain
            and t >= warm.min_paired_t
        ):
            return ""
        why = verdict.removeprefix("rejected: ")
        return (
            f"a pose {result.correction_mm:.1f} mm from it scores clearly better on the newest "
            f"frames (gain {gain:+.4f}, t = {t:.1f}), not adopted: {_shorten(why, 80)}"
        )

    def _judge_moved(
        self, images: np.ndarray, poses: np.ndarray, stamps: np.ndarray
    ) -> RegistrationEstimate | None:
        """Judge a pending moved-reference pose on the window's frames since the move: the
        adopted estimate, or None (not adopted; the update goes on as usual)."""
        moved = self._moved
        assert moved is not None
        current = self.latest_accepted()
        if current.sequence != moved.based_on:  # another estimate was adopted meanwhile
            self._moved = None
            return None
        since = np.flatnonzero(stamps >= moved.since_t)
        if since.size < self.options.min_frames:
            return None
        coverage = window_coverage(poses[since], fov_corners(self._mask), current.reference_to_mri)
        full = since.size >= self.options.window_frames
        if not coverage.enough(self.options, first=False):
            if full:
                self._moved = None
                self.stats.moved_dropped += 1
            return None
        sweep = Sweep(
            images[since],
            poses[since],
            stamps[since],
            source="frames since the move",
            fov_mask=self._mask,
        )
        opts = self.options.warm
        if opts.threads != self.options.threads:
            opts = opts.model_copy(update={"threads": self.options.threads})
        problem = SweepRegistration(
            self.mri,
            sweep,
            current.reference_to_mri,
            opts,
            mri_levels=self._levels_for(sweep, current.reference_to_mri, opts),
        )
        fine = problem.level(-1).similarity
        rule = ReplacementRule(self.rule.min_gain, self.rule.min_t, 0)
        adopt, why = rule.judge(
            lambda m: fine.evaluate(m)[1], moved.reference_to_mri, current.reference_to_mri
        )
        if not adopt:
            held, _ = rule.judge(
                lambda m: fine.evaluate(m)[1], current.reference_to_mri, moved.reference_to_mri
            )
            if held or full:
                self._moved = None
                self.stats.moved_dropped += 1
            return None
        scores = fine.evaluate(moved.reference_to_mri)[1]
        with self._lock:
            self._sequence += 1
            estimate = replace(
                current,
                reference_to_mri=moved.reference_to_mri,
                tumor_reference_to_mri=moved.tumor_reference_to_mri,
                similarity=float(np.mean(scores)),
                t_computed=time.time(),
                sequence=self._sequence,
                accepted=True,
                reason=(
                    f"the patient reference moved {moved.motion_mm:.1f} mm against the tracker; "
                    f"the registration that follows it is {why} since the move "
                    f"({since.size} frames): adopted; {_uncertainty_kept(current)}"
                ),
                contradicted="",
                checked_since_t=moved.since_t,
            )
            self.rule.adopted(current.reference_to_mri)
            self._accepted = estimate
            self._latest = estimate
            self._recent.append(estimate)
            self._moved = None
            self.stats.moved_adopted += 1
            self.stats.updates += 1
            self.stats.accepted += 1
        if self._on_estimate is not None:
            try:
                self._on_estimate(estimate)
            except Exception:  # a display callback never stops the worker
                log.exception("on_estimate failed")
        return estimate

    def _levels_for(
        self, sweep: Sweep, reference_to_mri: np.ndarray, opts: RegistrationOptions
    ) -> list[MriLevel]:
        """The MRI pyramid cropped around the window, rebuilt only when the window (plus the
        capture margin) leaves the cached crop."""
        corners = _sweep_corners(sweep)
        pts = corners @ reference_to_mri[:3, :3].T + reference_to_mri[:3, 3]
        need_lo, need_hi = crop_box(self.mri, pts, opts.roi_margin_mm)
        key = ",".join(f"{s:g}" for s in opts.level_spacings_mm)
        if (
            self._crop is not None
            and key in self._mri_levels
            and np.all(need_lo >= self._crop[0])
            and np.all(need_hi <= self._crop[1])
        ):
            return self._mri_levels[key]
        if self._crop is None or not (
            np.all(need_lo >= self._crop[0]) and np.all(need_hi <= self._crop[1])
        ):
            self._crop = crop_box(self.mri, pts, self.options.crop_margin_mm)
            self._mri_levels = {}
        self._mri_levels[key] = build_mri_levels(self.mri, opts.level_spacings_mm, self._crop)
        return self._mri_levels[key]


def _uncertainty_kept(current: RegistrationEstimate) -> str:
    """Why a pose that follows a moved reference keeps the estimate's stated bound."""
    return (
        f"its stated ±{current.uncertainty_mm:.2f} mm is the estimate's it was composed with "
        "(the tracked move adds ~0.1 mm)"
    )


def _shorten(text: str, limit: int = 120) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters (with "…")."""
    if len(text) <= limit:
        return text
    return text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:") + "…"


def _sweep_corners(sweep: Sweep) -> np.ndarray:
    cols, rows = sweep.image_size
    corners = np.array(
        [[0, 0, 0, 1], [cols - 1, 0, 0, 1], [0, rows - 1, 0, 1], [cols - 1, rows - 1, 0, 1]], float
    )
    return np.einsum("fij,cj->fci", sweep.image_to_reference, corners)[..., :3].reshape(-1, 3)
