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
   :attr:`DisplayRules.max_unchecked_s` ago, or the newest frames contradict it (a later
   update, not adopted, scored clearly better elsewhere: the patient reference was bumped), or
   the patient reference moved against the tracker since the registration was last checked
   (:attr:`DisplayRules.max_reference_motion_mm`), or the message's own content is in doubt
   (e.g. "no tumor in view" while the tumor lies within the uncertainty of the image plane), or
   the image lies entirely outside the MRI (:class:`VolumeExtent`: another patient's images or
   MRI, or a registration far off — nothing there can check the registration or support "no
   tumor in view").
3. **LIVE** — otherwise.

``uncertainty_mm`` is the registration's stated 95 % bound on the error at the tumor (from the
registration worker). A fixed quality score plays no part. The threshold it is held to is the
registration's share of the boundary-error target (:attr:`DisplayRules.registration_limit_mm`):
√(target² − margin's own error²) — 2.0 mm with the default ``margin_error_mm`` 0, 0.62 mm with
the measured 1.90 mm (docs/protocol.md, "Why nothing is LIVE with the default budget").

The display's rule can only make the publisher's state worse: **WAITING** before any message,
**STALE** when the connection dropped, nothing arrived for ``lost_after_s``, or the newest
data is that old.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

LIVE = "LIVE"
UNCERTAIN = "UNCERTAIN"
STALE = "STALE"
WAITING = "WAITING"
#: Every display state, best first.
DISPLAY_STATES = (LIVE, UNCERTAIN, STALE, WAITING)


#: The default margin's own error: 0 — the registration alone is held to the 2 mm target, as in
#: protocol 2 so far. Measured on the tuning families (seeds 1201-1208, baseline, trailing-echo,
#: compressed-gain, speckle-shadow, 24 frames each, the true registration): the 95th percentile
#: over 111 in-view frames of a frame's boundary error p95 is 1.90 mm (cord shift, label
#: resolution; 1.8 % of frames exceed 2 mm with a perfect registration). Stating that value
#: leaves a registration 0.62 mm — nothing the registration can bound; see docs/protocol.md,
#: "Why nothing is LIVE with the default budget".
MARGIN_ERROR_MM = 0.0
#: The measured value above, for sites and benches that apply the combined rule.
MEASURED_MARGIN_ERROR_MM = 1.90


#: The largest distance any display threshold may be, mm (a file's typo, not a tolerance)
MAX_THRESHOLD_MM = 1000.0

#: Seconds over which the patient reference's breathing is averaged out (session 39): longer
#: than a ventilated breath (8-20 per minute: 3-7.5 s). A spinous-process clamp moves 1.96 ±
#: 1.32 mm with ventilation, most in the lower thoracic spine (Global Spine J 2019,
#: PMC6686387): as much as the 2 mm display limit.
REFERENCE_BREATH_S = 6.0

#: A sudden move of the patient reference beyond this, mm, puts the registration in doubt
#: (:attr:`DisplayRules.max_reference_step_mm`; session 40, notes/session-40.md)
REFERENCE_STEP_MM = 1.0


class DisplayRules(BaseModel):
    """The publisher's thresholds for LIVE (named, documented, sent with every message).

    Attributes
    ----------
    live_max_boundary_error_mm
        The safe-display target: a LIVE margin's boundary error p95 stays within this, mm
        (issue 11: 2.0).
    margin_error_mm
        The margin's own error with a perfect registration (a 95 % bound, mm:
        :data:`MARGIN_ERROR_MM`). The boundary error is the registration's error and this
        together (independent errors, added in quadrature), so the registration's bound must
        leave room for it.
    live_max_uncertainty_mm
        LIVE only when the registration's stated uncertainty (a 95 % bound on the error at the
        tumor, mm) is at most this. None (the default): what the target leaves once the
        margin's own error is taken out, √(``live_max_boundary_error_mm``² −
        ``margin_error_mm``²). A number: that threshold, as stated. Always a number after
        validation (the value every message carries).
    max_unchecked_s
        LIVE only when the registration was estimated or confirmed on the ultrasound images at
        most this long ago, s (the cord can move; a registration nobody re-checked decays to
        UNCERTAIN, not to STALE: it is still the best there is).
    max_seen_disagreement_mm, min_seen_fraction
        A frame's margins are UNCERTAIN when at least ``min_seen_fraction`` of their points are
        seen on the ultrasound and those put the margin, by their median, more than
        ``max_seen_disagreement_mm`` from the MRI's (the image contradicts the overlay: a
        registration within its bound plus a shifted cord can still be that far off). None
        (``false`` in an options file): no such check.
    max_reference_motion_mm
        A frame's margins are UNCERTAIN when the patient reference has moved against the
        tracker by more than this, mm (the largest displacement at the frame's image
        corners), since the registration in use was last checked on the images, until the
        images check it again (:mod:`usnav.pipeline.reference_motion`; session 38). The
        default, 2 mm, is the safe-display target: a move that alone could put the overlay
        that far off. Raise it where breathing moves the reference more; None (``false`` in an
        options file): no such check (and none is possible on streams that carry only
        ``ProbeToReference``).
    max_reference_step_mm
        A frame's margins are UNCERTAIN, as for ``max_reference_motion_mm``, when the
        reference's pose stands farther than this, mm, from every pose the registration's
        check (or the breath before it) saw: a sudden move, which breathing (whose poses
        recur) and tracking jitter are not (session 40). A 1.5 mm knock moves the anatomy
        1.5-2 mm at the image corners: under ``max_reference_motion_mm``, yet on a registration
        already ~0.6 mm off it put the overlay over 2 mm off. The default, 1 mm, is half the
        display target and three times the largest such step measured without a move (0.34
        mm, simulated tracking jitter 0.15 mm / 0.05° RMS, breathing 4 mm peak to peak); with
        0.32 mm / 0.1° of jitter it reached 0.79 mm: a noisier tracker, or a reference far
        from the image, needs a larger value (the status's ``reference_step_mm`` shows it on a
        still patient). None (``false`` in an options file): no such check.
    reference_breath_s
        Seconds over which the reference's breathing is averaged out before its motion is
        judged (session 39): longer than a ventilated breath (8-20 per minute: 3-7.5 s), so a
        patient who breathes with the reference clamped to the spine is not a moved
        reference; a bump still counts at its first frame. Set it longer for slower
        ventilation; None (``false`` in an options file): every pose of the checked frames
        counts, breathing too (session 38's rule).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # bounded: 1e308 overflowed squaring it (an internal error of usnav run, not the file's key)
    live_max_boundary_error_mm: float = Field(default=2.0, gt=0, le=MAX_THRESHOLD_MM)
    margin_error_mm: float = Field(default=MARGIN_ERROR_MM, ge=0, le=MAX_THRESHOLD_MM)
    live_max_uncertainty_mm: float | None = Field(default=None, gt=0, le=MAX_THRESHOLD_MM)
    max_unchecked_s: float = Field(default=60.0, gt=0)
    max_seen_disagreement_mm: float | None = Field(default=1.0, gt=0)
    min_seen_fraction: float = Field(default=0.2, ge=0, le=1)
    max_reference_motion_mm: float | None = Field(default=2.0, gt=0, le=MAX_THRESHOLD_MM)
    max_reference_step_mm: float | None = Field(
        default=REFERENCE_STEP_MM, gt=0, le=MAX_THRESHOLD_MM
    )
    reference_breath_s: float | None = Field(default=REFERENCE_BREATH_S, gt=0, le=60.0)

    @field_validator(
        "max_seen_disagreement_mm",
        "max_reference_motion_mm",
        "max_reference_step_mm",
        "reference_breath_s",
        mode="before",
    )
    @classmethod
    def _false_is_off(cls, value: object) -> object:
        """``false`` switches a check off: a TOML file cannot say None (session 38: the only
        way to turn one off was its largest value)."""
        if value is True:  # would be read as 1
            raise ValueError("true is not a number: give one, or false to switch it off")
        return None if value is False else value

    @model_validator(mode="after")
    def _registration_limit(self) -> DisplayRules:
        if self.live_max_uncertainty_mm is None:
            if self.margin_error_mm >= self.live_max_boundary_error_mm:
                raise ValueError(
                    f"margin_error_mm ({self.margin_error_mm:g}) leaves no room below "
                    f"live_max_boundary_error_mm ({self.live_max_boundary_error_mm:g}): "
                    "nothing could be LIVE"
                )
            # derived, not stated: kept out of ``model_fields_set``
            self.__dict__["live_max_uncertainty_mm"] = math.sqrt(
                self.live_max_boundary_error_mm**2 - self.margin_error_mm**2
            )
        return self

    @property
    def registration_limit_mm(self) -> float:
        """The LIVE threshold on the registration's stated uncertainty, mm."""
        assert self.live_max_uncertainty_mm is not None  # set by the validator
        return self.live_max_uncertainty_mm


@dataclass(frozen=True)
class DisplayState:
    """A display state and why (``reason`` is "" for LIVE)."""

    state: str
    reason: str = ""

    @property
    def live(self) -> bool:
        return self.state == LIVE


#: How a display reason for a contradicted registration begins.
CONTRADICTED_PREFIX = "registration contradicted by the newest frames: "
#: How the doubt of a patient reference moved since the registration was checked begins
#: (:mod:`usnav.pipeline.reference_motion`); it holds no "; ".
REFERENCE_MOVED_PREFIX = "patient reference moved "


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
    unconfirmed: str = "",
    contradicted: str = "",
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
    unconfirmed
        For an unchecked registration: why image-based tries have not confirmed it ("": none
        has judged it yet).
    contradicted
        For a checked registration: why the newest frames contradict it ("": they do not;
        :attr:`usnav.registration.estimate.RegistrationEstimate.contradicted`). Never LIVE
        while set.
    """
    if stale_reason:
        return DisplayState(STALE, stale_reason)
    why = _registration_doubt(
        checked, uncertainty_mm, checked_age_s, rules, unconfirmed, contradicted
    )
    # the message's own doubt is said too when the registration already keeps it from LIVE: a
    # display told "registration uncertain" alone would show "no tumor in view" without the
    # reason protocol.md promises ("the tumor lies 0.4 mm from this plane ...")
    reasons = [r for r in (why, doubt) if r]
    if reasons:
        return DisplayState(UNCERTAIN, "; ".join(reasons))
    return DisplayState(LIVE)


def _registration_doubt(
    checked: bool,
    uncertainty_mm: float | None,
    checked_age_s: float | None,
    rules: DisplayRules,
    unconfirmed: str,
    contradicted: str,
) -> str:
    """Why the registration keeps a message from LIVE ("" when it does not)."""
    if not checked:
        if unconfirmed:
            # the images were tried and could not confirm it: "not yet checked" would suggest
            # that waiting is all it takes
            return f"navigation registration, not confirmed on the ultrasound: {unconfirmed}"
        return "navigation registration, not yet checked on the ultrasound"
    if not _finite(uncertainty_mm):
        return "registration uncertainty unknown"
    assert uncertainty_mm is not None
    limit = rules.registration_limit_mm
    if uncertainty_mm > limit:
        return (
            f"registration uncertain: ±{_over(uncertainty_mm, limit)} mm (95 %) exceeds "
            f"{limit:.3g} mm"
        )
    if contradicted:
        return f"{CONTRADICTED_PREFIX}{contradicted}"
    if not _finite(checked_age_s):
        return "registration age unknown"
    assert checked_age_s is not None
    if checked_age_s > rules.max_unchecked_s:
        return f"registration not re-checked on the images for {checked_age_s:.0f} s"
    return ""


def _over(value: float, limit: float) -> str:
    """``value`` (> ``limit``) with one decimal, or as many more as it takes to read as over
    the limit: ±2.02 mm is not "±2.0 mm exceeds 2 mm"."""
    for decimals in (1, 2, 3):
        text = f"{value:.{decimals}f}"
        if float(text) > limit:
            return text
    return f"{value:.3g}"


def seen_disagreement_doubt(
    *,
    in_view: bool,
    seen_fraction: float,
    median_disagreement_mm: float | None,
    rules: DisplayRules,
) -> str:
    """Why a frame's margins are in doubt although the registration is good ("" if not): the
    points the ultrasound shows put the margin, by their median, more than
    ``rules.max_seen_disagreement_mm`` from the MRI's, over at least ``rules.min_seen_fraction``
    of the margin."""
    limit = rules.max_seen_disagreement_mm
    if (
        limit is None
        or not in_view
        or seen_fraction < max(rules.min_seen_fraction, 1e-9)
        or not _finite(median_disagreement_mm)
    ):
        return ""
    assert median_disagreement_mm is not None
    if median_disagreement_mm <= limit:
        return ""
    return (
        f"the ultrasound shows the margin {median_disagreement_mm:.1f} mm from the MRI's "
        f"({100 * seen_fraction:.0f} % of it seen)"
    )


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
        old = f"newest data {now - data_arrived_s:.1f} s old"
        if published.state == STALE and published.reason:
            # the publisher's own reason says why (the probe link is down, tracking lost):
            # kept, not replaced by the age alone (session 36)
            return DisplayState(STALE, f"{published.reason} ({old})")
        return DisplayState(STALE, old)
    if published.state not in DISPLAY_STATES:
        return DisplayState(UNCERTAIN, f"unknown display state {published.state!r}")
    return published


#: How the doubt of a frame whose image lies entirely outside the MRI begins
#: (:class:`VolumeExtent`); it holds no "; " (reasons are joined with it)
OUTSIDE_MRI_PREFIX = "the image lies entirely outside the MRI"
#: ... and the whole of it.
OUTSIDE_MRI_DOUBT = (
    f"{OUTSIDE_MRI_PREFIX}: the registration cannot be checked there and "
    "no tumor can be ruled out — check that the MRI is this patient's and the registration "
    "(or scan where the MRI was imaged)"
)


class VolumeExtent:
    """The box a volume's voxels fill, to tell whether an image's field of view misses it.

    Parameters
    ----------
    affine
        4×4 voxel index → MRI RAS mm (nibabel's ``affine``; any rotation, scaling or shear).
    shape
        The volume's (i, j, k) size, voxels. The box spans voxel indices −0.5 … n − 0.5 along
        each axis (the voxels' own extent, as the label map's check in the margins has it).
    """

    def __init__(self, affine: np.ndarray, shape: tuple[int, ...]) -> None:
        affine = np.asarray(affine, dtype=np.float64)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise ValueError("the volume's affine is not a finite 4×4 matrix")
        #: MRI RAS mm → voxel index
        self.ras_to_voxel = np.linalg.inv(affine)
        size = [float(n) for n in shape[:3]]
        #: the box's centre and half size, voxel index units
        self._centre = tuple(0.5 * (n - 1.0) for n in size)
        self._half = tuple(0.5 * n for n in size)

    def misses(self, image_to_ras: np.ndarray, image_shape: tuple[int, int]) -> bool:
        """Whether the image's field of view lies entirely outside the volume.

        The field of view spans the pixels' edges (−0.5 … cols − 0.5, −0.5 … rows − 0.5).
        Exact for a planar image (a parallelogram under any affine ``ImageTo…``) against the
        volume's box, by the separating-axis test: the box's 3 axes, the image's normal and
        the 6 cross products of the image's 2 edge directions with the box's axes. Touching
        the box counts as inside; a partial overlap is not a miss.

        Parameters
        ----------
        image_to_ras
            4×4 image pixel (x = column, y = row, z = 0) → MRI RAS mm.
        image_shape
            (rows, cols) of the image.

        Returns
        -------
        bool
            True when the image misses the volume; False when it overlaps it, or when
            ``image_to_ras`` is not finite (nothing can be said: the frame is not placed).
        """
        rows, cols = image_shape[:2]
        t = (self.ras_to_voxel @ np.asarray(image_to_ras, np.float64)).tolist()
        if rows <= 0 or cols <= 0 or not all(map(math.isfinite, t[0] + t[1] + t[2])):
            return False
        # the image as a parallelogram in voxel index units, from the box's centre: its
        # corner o at pixel (−0.5, −0.5) and its edges a (along the columns) and b (rows);
        # plain floats: 3-8 µs a frame (a corner inside ends it at once) where numpy's
        # small-array calls took ~50
        a = (t[0][0] * cols, t[1][0] * cols, t[2][0] * cols)
        b = (t[0][1] * rows, t[1][1] * rows, t[2][1] * rows)
        o = tuple(t[i][3] - 0.5 * (t[i][0] + t[i][1]) - self._centre[i] for i in range(3))
        hx, hy, hz = self._half
        for dx, dy, dz in (o, _add(o, a), _add(o, b), _add(_add(o, a), b)):
            if abs(dx) <= hx and abs(dy) <= hy and abs(dz) <= hz:
                return False  # a corner inside: the common case, said at once
        ax, ay, az = a
        bx, by, bz = b
        # axes: the box's 3, the image's normal a × b, a × e_i and b × e_i (a zero cross
        # product projects everything to 0: it never separates)
        for axis in (
            (1.0, 0.0, 0.0),
            (0.0, 1.0, 0.0),
            (0.0, 0.0, 1.0),
            (ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx),
            (0.0, az, -ay),
            (-az, 0.0, ax),
            (ay, -ax, 0.0),
            (0.0, bz, -by),
            (-bz, 0.0, bx),
            (by, -bx, 0.0),
        ):
            start = _dot(axis, o)
            along_a, along_b = _dot(axis, a), _dot(axis, b)
            low = start + min(along_a, 0.0) + min(along_b, 0.0)
            high = start + max(along_a, 0.0) + max(along_b, 0.0)
            reach = _dot_abs(axis, self._half)  # the box's half extent along the axis
            if low > reach or high < -reach:
                return True
        return False


def _dot(p: tuple[float, ...], q: tuple[float, ...]) -> float:
    return p[0] * q[0] + p[1] * q[1] + p[2] * q[2]


def _add(p: tuple[float, ...], q: tuple[float, ...]) -> tuple[float, float, float]:
    return (p[0] + q[0], p[1] + q[1], p[2] + q[2])


def _dot_abs(p: tuple[float, ...], q: tuple[float, ...]) -> float:
    return abs(p[0]) * q[0] + abs(p[1]) * q[1] + abs(p[2]) * q[2]


#: How long a display keeps showing a worse state after the data last said it, s: a better
#: state is shown only once it has held this long (:func:`steady_state`). Long enough that a
#: banner never alternates at frame rate (an imaging plane skimming the tumor makes 30 fps of
#: alternating LIVE and UNCERTAIN margins, each right on its own: unreadable, and a LIVE frame
#: between UNCERTAIN ones read as good), short enough that good news is at most half a second
#: late. Bad news is never late: a worse state shows at once.
STATE_HOLD_S = 0.5

#: How bad a state is, for holding: LIVE 0, UNCERTAIN 1, STALE 2 (WAITING is not held: it is
#: the time before any message, with nothing drawn).
_HOLD_RANK = {LIVE: 0, UNCERTAIN: 1, STALE: 2}


def steady_state(
    state: DisplayState,
    worse_seen: dict[str, tuple[float, str]],
    *,
    now: float,
    hold_s: float = STATE_HOLD_S,
) -> DisplayState:
    """The state a display shows: ``state``, or a worse one the data said within ``hold_s``.

    The rule (session 44): the worse state shows at once, a better one only after it has held
    for ``hold_s``. So the display shows the worst state of the last ``hold_s``, with that
    state's newest reason. It only ever makes ``state`` worse: a STALE or UNCERTAIN message is
    never shown better than it is, and a LIVE one is shown LIVE only when nothing worse came
    in the last ``hold_s``. The per-message ``display_state`` on the wire is unchanged; this
    is the display's own rule, applied by usnav's viewer and web page
    (:class:`usnav.viewer.state.ViewModel`) and the Slicer re-export (:class:`StateHold`).

    Parameters
    ----------
    state
        The state the data say now (:func:`display_state`).
    worse_seen
        For ``UNCERTAIN`` and ``STALE``: (the host time it was last said, s since the epoch,
        and its reason then) — :meth:`StateHold.note` keeps it.
    now
        Host time, s since the epoch.
    hold_s
        How long a better state must hold, s (0: no hold).

    Returns
    -------
    DisplayState
        ``state``, or the worst state said within ``hold_s`` before ``now`` when it is
        worse, its reason ending "(in the last 0.5 s)": the numbers beside it (a panel's
        registration bound) are the newest data's, which may already say better.
    """
    if state.state not in _HOLD_RANK:
        return state  # WAITING (nothing received), or a word the display does not know
    shown = state
    for word, (seen, reason) in worse_seen.items():
        if now - seen < hold_s and _HOLD_RANK.get(word, 0) > _HOLD_RANK[shown.state]:
            shown = DisplayState(word, f"{reason} (in the last {hold_s:g} s)")
    return shown


class StateHold:
    """A display's memory of the worse states it was shown, for :func:`steady_state`.

    Parameters
    ----------
    hold_s
        How long a better state must hold before it is shown, s.
    """

    def __init__(self, hold_s: float = STATE_HOLD_S) -> None:
        self.hold_s = float(hold_s)
        #: UNCERTAIN / STALE → (host time last said, s since the epoch; its reason then)
        self.worse_seen: dict[str, tuple[float, str]] = {}

    def note(self, state: DisplayState, at: float) -> None:
        """Remember that the data said ``state`` at host time ``at`` (s since the epoch)."""
        if _HOLD_RANK.get(state.state, 0) == 0:
            return
        seen = self.worse_seen.get(state.state)
        if seen is None or at >= seen[0]:
            self.worse_seen[state.state] = (at, state.reason)

    def shown(self, state: DisplayState, now: float) -> DisplayState:
        """Note ``state`` as said at ``now`` and return what to show (:func:`steady_state`)."""
        self.note(state, now)
        return steady_state(state, self.worse_seen, now=now, hold_s=self.hold_s)
