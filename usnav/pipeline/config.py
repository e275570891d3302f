"""Options of ``usnav run`` (a ``[run]``-free TOML, or built from the command line)."""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from usnav.margins.options import MarginOptions
from usnav.pipeline.frozen import FROZEN_MOTION_MM, REPEAT_S
from usnav.protocol.display import MEASURED_MARGIN_ERROR_MM, DisplayRules
from usnav.protocol.wire import DEFAULT_ADDRESS


class RegistrationBudget(BaseModel):
    """A site's measured systematic error budget of the registration (None: the default of
    :class:`usnav.registration.rigid.RegistrationOptions`, documented there; each a ~95 %
    bound, mm or degrees or a relative depth-scale error)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    similarity_bias_mm: float | None = Field(default=None, ge=0)
    calibration_error_mm: float | None = Field(default=None, ge=0)
    calibration_error_deg: float | None = Field(default=None, ge=0)
    speed_of_sound_error: float | None = Field(default=None, ge=0)
    echo_offset_mm: float | None = Field(default=None, ge=0)
    tumor_shift_mm: float | None = Field(default=None, ge=0)
    tumor_stage_error_mm: float | None = Field(default=None, ge=0)

    def overrides(self) -> dict[str, float]:
        """The fields the site stated (to update registration options with)."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class PipelineOptions(BaseModel):
    """How the live pipeline runs.

    Attributes
    ----------
    publish_address
        ZeroMQ PUB endpoint for display clients (loopback unless set otherwise).
    publish_frames
        Also publish each ultrasound image on topic ``frame`` (for displays with no other feed).
    publish_hwm
        ZeroMQ send high-water mark per subscriber (a slow viewer loses messages, never slows
        the pipeline).
    curve_secret_key
        The publisher's ``server.key_secret`` from ``usnav keys``: required to publish beyond
        loopback (ZeroMQ CURVE; authorised clients in ``authorized/`` beside it).
    slicer_port
        Re-export to 3D Slicer over OpenIGTLink on this port (0 = off).
    status_interval_s
        How often the status topic and the status line are refreshed, and the registration in
        use is re-sent for displays that joined late (≤ 1 s: a display started at any moment
        must show the right state within 1 s; displays count 1.5 s of silence as a lost link).
    stale_after_s
        Margins are published with ``stale = true`` when the probe link is not streaming or
        the frame is older than this (s: the time since its receipt plus how late it arrived
        by the device's clock); the status says "no signal" meanwhile.
    record_queue_frames
        Frames waiting to be written before the recorder counts drops (memory bound).
    record_finish_timeout_s
        On stop, longest wait for the recording's final file to be written, s.
    registration
        Run the registration worker (False: keep the initial ReferenceToMri).
    registration_interval_s
        Shortest time between two registration updates, s. At a probe's 30 fps an update
        comes every ~0.5 s anyway (every 15 new frames); at replay speed this keeps the worker
        from taking the CPU the frame path needs (2 cores, one GIL).
    registration_budget
        The site's own systematic error budget (the ``[registration_budget]`` table), replacing
        the registration's defaults in the stated uncertainty of every estimate (cold and
        warm): only values a site has measured on data like its own (see docs/protocol.md,
        "Why nothing is LIVE with the default budget"). Stating one requires stating
        ``[display] margin_error_mm`` too (or an explicit ``live_max_uncertainty_mm``): a
        tighter registration bound alone let margins that erred by more than 2 mm show LIVE.
        And not less than the margin's own measured error (session 44): ``margin_error_mm``
        ≥ :data:`~usnav.protocol.display.MEASURED_MARGIN_ERROR_MM` (1.90 mm), a stated
        ``live_max_uncertainty_mm`` ≤ :func:`margin_room_mm` of the target (0.62 mm).
    max_tied_correction_mm
        Until an image-based estimate is accepted, margins are drawn with a try's candidate
        that was rejected only for a tie (UNCERTAIN), but only when it lies at most this far
        from the navigation registration, mm (mean over the field of view). Default 10: just
        above the 4–8 mm (and 3–8°) navigation errors the registration is specified for
        (docs/registration.md, "A tie's candidate is drawn only within 10 mm"); a site whose
        navigation errs by more states its own.
    follow_moved_reference
        When the patient reference moves against the tracker, let the images choose between
        the registration in use and the one that follows the move
        (``WorkerOptions.test_moved_reference``; session 38: off — it corrected bumps within
        3 s, but on held-out seeds the composed pose kept the old estimate's error where the
        normal updates happened to find a better one, which the rule written before the run
        forbade; docs/pipeline.md).
    frozen_image_motion_mm
        A frame whose image has not changed while the probe moved more than this, mm at the
        image's corners, since the image last changed is frozen (the scanner's freeze button,
        or a frame grabber capturing a frozen screen): its margins are published STALE with
        the reason and it is not offered to the registration (:mod:`usnav.pipeline.frozen`;
        session 41). None (``false`` in an options file): not watched.
    image_repeat_s
        A frame whose image has not changed since a frame at most this long before (s, the
        device's clock) repeats that frame's image (a frame grabber capturing faster than the
        scanner updates): its margins are drawn at that frame's pose, the image's own, marked
        ``repeat_of`` on the wire, and it is not offered to the registration; it is never
        called frozen (session 43). Unchanged for longer, it is frozen once the probe moved
        more than ``frozen_image_motion_mm`` from that pose, and a repeat drawn at that pose
        until then. None (``false``): no frame is a repeat (session 41's behaviour: each
        unchanged image at its own frame's pose until the freeze rule says).
    display
        The thresholds of the ``display_state`` every published message carries (when an
        overlay may be shown LIVE; see docs/protocol.md).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    publish_address: str = DEFAULT_ADDRESS
    publish_frames: StrictBool = True
    publish_hwm: int = Field(default=20, ge=1, le=10_000)
    curve_secret_key: Path | None = None
    slicer_port: int = Field(default=0, ge=0, le=65535)
    status_interval_s: float = Field(default=0.25, gt=0, le=1.0)
    stale_after_s: float = Field(default=1.0, gt=0, le=60)
    record_queue_frames: int = Field(default=2000, ge=10, le=1_000_000)
    record_finish_timeout_s: float = Field(default=300.0, gt=0)
    registration: StrictBool = True
    registration_interval_s: float = Field(default=0.25, ge=0, le=60)
    max_tied_correction_mm: float = Field(default=10.0, gt=0)
    follow_moved_reference: StrictBool = False
    frozen_image_motion_mm: float | None = Field(default=FROZEN_MOTION_MM, gt=0, le=1000.0)
    image_repeat_s: float | None = Field(default=REPEAT_S, gt=0, le=1.0)
    margins: MarginOptions = MarginOptions()
    registration_budget: RegistrationBudget = RegistrationBudget()
    display: DisplayRules = DisplayRules()

    @field_validator("frozen_image_motion_mm", "image_repeat_s", mode="before")
    @classmethod
    def _false_is_off(cls, value: object) -> object:
        """``false`` switches the watch off (a TOML file cannot say None)."""
        if value is True:  # would be read as 1
            raise ValueError("true is not a number: give one, or false to switch it off")
        return None if value is False else value

    @field_validator("publish_address")
    @classmethod
    def _zmq_endpoint(cls, value: str) -> str:
        if not value.startswith(("tcp://", "ipc://", "inproc://")):
            raise ValueError("must be a ZeroMQ endpoint such as tcp://127.0.0.1:5556")
        if value.startswith("tcp://"):
            # as --publish is checked: ZeroMQ took port 99999 as 34463 (its low 16 bits) and
            # the run published where no display looked (session 42)
            host, sep, port = value[len("tcp://") :].rpartition(":")
            if not sep or not host:
                raise ValueError("has no HOST:PORT: write it like tcp://127.0.0.1:5556")
            if port != "*" and not (port.isdigit() and int(port) <= 65535):
                raise ValueError(f"the port {port!r} is not a TCP port: give a number 0..65535")
        return value

    @model_validator(mode="after")
    def _budget_with_margin_error(self) -> PipelineOptions:
        # a tighter registration budget makes LIVE possible; LIVE is about the boundary, so
        # the site must also say how far the margin itself errs, and may not say less than
        # the margin estimator's own measured error (session 44: 0 was accepted, and LIVE
        # margins over 2 mm went through with it, sessions 37-38)
        display = self.display
        stated = {"margin_error_mm", "live_max_uncertainty_mm"} & display.model_fields_set
        floor = MEASURED_MARGIN_ERROR_MM
        measured = (
            f"the margin's own error measured with a perfect registration, {floor:.2f} mm (95 "
            "%, the simulator's tuning families, seeds 1201-1208: docs/protocol.md, 'The "
            "margin's own error')"
        )
        room = margin_room_mm(display.live_max_boundary_error_mm)
        # a stated registration threshold, budget or not: 3 mm with the default budget let
        # every accepted estimate (bounds 2.4-2.8 mm) go LIVE whatever the margin's own error
        if "live_max_uncertainty_mm" in display.model_fields_set and (
            display.registration_limit_mm > room + 1e-9
        ):
            raise ValueError(
                f"[display] live_max_uncertainty_mm = {display.registration_limit_mm:g} leaves "
                f"no room for {measured}: it may be at most "
                f"{room:.2f} mm (√({display.live_max_boundary_error_mm:g}² − {floor:.2f}²)), or "
                "leave it out"
                + (f" and state margin_error_mm ≥ {floor:.2f}" if self._budget() else "")
            )
        # a stated boundary target without the margin's error held the registration alone to
        # it: live_max_boundary_error_mm = 3 let the default budget's bounds (2.4-2.8 mm) go
        # LIVE with margins up to √(3² + 1.9²) = 3.6 mm off
        target = "live_max_boundary_error_mm" in display.model_fields_set
        if not self._budget() and not target:
            return self
        what = "[registration_budget]" if self._budget() else "[display] live_max_boundary_error_mm"
        if not stated:
            raise ValueError(
                f"{what} needs [display] margin_error_mm: LIVE is decided on the "
                "boundary error, the registration's and the margin's own together (measured "
                f"on the simulator's tuning families: {floor} mm; with the "
                "registration alone held to 2 mm, most LIVE margins there erred by more than "
                "2 mm) — see docs/protocol.md, 'Why nothing is LIVE with the default budget'"
            )
        if "margin_error_mm" in display.model_fields_set and display.margin_error_mm < floor:
            raise ValueError(
                f"[display] margin_error_mm = {display.margin_error_mm:g} is below {measured}: "
                f"with a {what} state at least {floor:.2f} (a smaller value let "
                "LIVE margins over 2 mm through)"
            )
        return self

    def _budget(self) -> bool:
        """Whether the site stated a ``[registration_budget]``."""
        return bool(self.registration_budget.overrides())


def margin_room_mm(boundary_error_mm: float) -> float:
    """The largest registration bound (mm, 95 %) that still leaves room, within a boundary
    error target of ``boundary_error_mm``, for the margin's own measured error
    (:data:`~usnav.protocol.display.MEASURED_MARGIN_ERROR_MM`); 0 when the target is below it.
    """
    floor = MEASURED_MARGIN_ERROR_MM
    return math.sqrt(max(boundary_error_mm**2 - floor**2, 0.0))
