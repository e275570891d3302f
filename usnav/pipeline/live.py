"""The live pipeline: probe → calibration → (registration worker) → margins → ZeroMQ.

Threads and hand-overs (2 cores; Numba kernels release the GIL)::

    ProbeClient socket thread ─> source thread ─LatestSlot─> frame-path thread ─> ZeroMQ PUB
                                      │                        │ margins (+ Slicer re-export)
                                      └─RecordQueue─> recorder └─submit─> registration worker
    status thread: fps, latency, drops, link state ─> status topic and status()

Policies when a stage falls behind: the frame path takes the newest frame (older unread
frames are dropped and counted: a display wants the present); the recorder gets every frame
through a memory-bounded queue (an overflow is counted and reported, never silent); the
registration worker keeps its own ring buffer of recent frames and never holds a frame back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from usnav.calibration.stage import CalibrationStage
from usnav.config.calibration import (
    CalibrationFile,
    calibration_for_size,
    check_depth_calibrations,
)
from usnav.devices.base import DeviceState
from usnav.devices.probe import ProbeClient
from usnav.errors import UsnavError
from usnav.frames import TrackedFrame, TransformStatus, frame_in_mf
from usnav.igtl import LinkState
from usnav.io.volume import Volume
from usnav.margins import MarginEstimator
from usnav.pipeline.arrival import ArrivalClock
from usnav.pipeline.config import PipelineOptions
from usnav.pipeline.frozen import Arrival, FrozenImageMonitor
from usnav.pipeline.queues import LatestSlot, RecordQueue
from usnav.pipeline.reference_motion import ReferenceMotionMonitor, reference_to_tracker
from usnav.pipeline.spacing import SpacingWatch
from usnav.pipeline.stats import LatencyMeter, RateMeter
from usnav.protocol.display import (
    OUTSIDE_MRI_DOUBT,
    STALE,
    DisplayRules,
    DisplayState,
    VolumeExtent,
    seen_disagreement_doubt,
)
from usnav.registration.estimate import RegistrationEstimate
from usnav.transforms import TransformRepository

if TYPE_CHECKING:
    from usnav.publish.publisher import Publisher

log = logging.getLogger("usnav.pipeline")


@dataclass
class PipelineCounters:
    """What happened to the frames (all counts since start)."""

    received: int = 0
    processed: int = 0
    published: int = 0
    skipped_tracking: int = 0
    skipped_image: int = 0
    display_dropped: int = 0
    recorded: int = 0
    record_dropped: int = 0
    record_error: str = ""
    record_files: list[Path] = field(default_factory=list)
    errors: int = 0
    stale_published: int = 0
    submitted_to_registration: int = 0
    #: placed frames not offered to the registration because their image lay entirely outside
    #: the MRI (counted apart from the repeats, the frozen and the stale, which are not offered
    #: either)
    withheld_from_registration: int = 0
    #: frames whose image repeated an earlier frame's (a frame grabber faster than the
    #: scanner, or a still probe over an unchanged image): drawn at that frame's pose, not
    #: offered to the registration
    repeated: int = 0
    #: frames whose image lay entirely outside the MRI (another patient's images or MRI, a
    #: registration far off, or a probe far from the imaged region): never LIVE
    outside_mri: int = 0
    #: placed frames whose IMAGE stated a pixel size other than the calibration's (the depth
    #: changed on the scanner, its image size kept): UNCERTAIN, not offered to the registration
    spacing_mismatch: int = 0
    last_problem: str = ""
    problems: dict[str, int] = field(default_factory=dict)

    def problem(self, key: str, message: str) -> None:
        self.problems[key] = self.problems.get(key, 0) + 1
        self.last_problem = message


class LivePipeline:
    """Runs the live pipeline on a probe client until stopped.

    Parameters
    ----------
    probe
        A configured (not yet connected) :class:`~usnav.devices.probe.ProbeClient`.
    label
        Tumor label map (MRI RAS).
    calibration
        The probe's calibration (``ImageToProbe``; its temporal lag is applied by the probe).
    initial_reference_to_mri
        ``ReferenceToMri`` from the navigation system's patient registration (4×4).
    mri
        The preoperative MRI (needed by the registration worker).
    options
        :class:`PipelineOptions`.
    record_path
        Write every received frame to this PLUS sequence file (optional).
    input_digests
        :meth:`~usnav.io.volume.Volume.digest` of the MRI and label files as given (keys
        ``mri``, ``label``), published in the status for displays to check their own copies
        against; by default those of ``mri`` and ``label`` (:func:`open_pipeline` gives the
        MRI's before the removed tissue is cut out of it).
    worker
        A registration worker (``start() / submit(frame, image_to_reference) /
        latest_accepted() / latest() / stop()``); built from ``mri`` when None and
        ``options.registration``.
    """

    def __init__(
        self,
        probe: ProbeClient,
        label: Volume,
        calibration: CalibrationFile,
        initial_reference_to_mri: np.ndarray,
        *,
        mri: Volume | None = None,
        options: PipelineOptions | None = None,
        record_path: str | Path | None = None,
        worker: Any = None,
        other_depths: Sequence[CalibrationFile] = (),
        input_digests: dict[str, str] | None = None,
    ) -> None:
        self.options = options or PipelineOptions()
        self.probe = probe
        self.calibration = calibration
        #: every calibration of the probe, one per image size (the scanner's depth presets):
        #: each frame is placed with the one made for its size (the first alone: as before)
        self.calibrations = (calibration, *other_depths)
        check_depth_calibrations(self.calibrations)
        #: the transform the probe keeps the IMAGE's own matrix as ("": ignored), whose scale
        #: is the pixel size the server states
        self._image_transform = str(getattr(getattr(probe, "config", None), "image_transform", ""))
        #: each frame's stated pixel size against the calibration's
        self.spacing_watch = SpacingWatch()
        self._use_calibration(calibration)
        #: the stylus's pivot calibration: from whichever file holds it (the files agree)
        self.pivot = next((c.pivot for c in self.calibrations if c.pivot is not None), None)
        # a calibration usnav calibrate flagged (the command's, or the device file's whose
        # lag the probe uses): logged when loaded, and kept in every status so that it is not
        # lost in the terminal's scroll-back
        device_calibration = getattr(probe, "device_calibration", None)
        flags = [c.flag_warning() for c in self.calibrations]
        if device_calibration is not None and device_calibration not in self.calibrations:
            flags.append(device_calibration.flag_warning())
        self.calibration_flagged = "; ".join(dict.fromkeys(f for f in flags if f))
        #: why no overlay of this run may be LIVE ("" if nothing): a flagged calibration's
        #: error is not known to be within the budget the stated uncertainty assumes
        self.standing_doubt = (
            "calibration flagged by usnav calibrate (see the run's log)"
            if self.calibration_flagged
            else ""
        )
        # the navigation system's registration: in use until an image-based one replaces
        # it, never shown LIVE (source "init": not checked on the ultrasound)
        self.initial = RegistrationEstimate(
            np.asarray(initial_reference_to_mri, dtype=np.float64),
            quality=0.0,
            accepted=True,
            source="init",
            reason="initial registration (navigation system, not checked on the ultrasound)",
        )
        self.mri = mri
        self.label = label
        #: :meth:`usnav.io.volume.Volume.digest` of the MRI and label files as given (keys
        #: ``mri``, ``label``), published in the status: a display checks its own copies
        self.input_digests = dict(input_digests or {})
        if "mri" not in self.input_digests:
            self.input_digests["mri"] = mri.digest() if mri is not None else ""
        if "label" not in self.input_digests:
            self.input_digests["label"] = label.digest()
        #: the MRI's extent (the label map's when no MRI is given: it lies in the MRI): a frame
        #: whose image misses it can neither check the registration nor support "no tumor"
        grid = mri if mri is not None else label
        self.mri_extent = VolumeExtent(grid.affine, grid.shape)
        #: why the newest placed frame is in doubt by where it lies ("" while in the MRI)
        self._outside_mri = ""
        self.record_path = Path(record_path) if record_path else None
        self.worker = worker
        self.counters = PipelineCounters()
        self.rate_in = RateMeter()
        self.rate_out = RateMeter()
        self.latency = LatencyMeter()
        self.compile_seconds: dict[str, float] = {}
        self._slot: LatestSlot[tuple[TrackedFrame, Arrival]] = LatestSlot()
        self._record_queue: RecordQueue[TrackedFrame] | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._started = False
        self._estimator: MarginEstimator | None = None
        self._publisher = None
        self._slicer = None
        self._last_frame_time = 0.0
        # how late each frame arrived by the device's clock (a backlog flushed after a stall)
        self._arrival = ArrivalClock(self.options.stale_after_s)
        self._lateness_s = 0.0
        #: why the newest frame could not be placed ("" once a frame's tracking is OK again)
        self._tracking_lost = ""
        #: why the newest frame's image cannot be placed with the calibration (its size is not
        #: the one the calibration was made for; "" once a frame of that size comes again)
        self._wrong_image_size = ""
        self._status_listeners: list = []
        self._last_estimate_published = -1
        self.last_drawn_estimate: RegistrationEstimate | None = None
        #: the patient reference against the tracker since the registration was checked
        self.reference_motion = _reference_motion_monitor(self.options.display, worker)
        #: the image frozen on the scanner while the probe moves on
        #: and the image repeated by a frame grabber faster than the scanner
        self.frozen_image = FrozenImageMonitor(
            self.options.frozen_image_motion_mm, repeat_s=self.options.image_repeat_s
        )
        #: why the newest frame's image is not the present ("" while it changes)
        self._image_frozen = ""
        #: the frame an image first came with, its ImageToReference and that pose's status
        #: (the pose its repeats are drawn at, computed once per image)
        self._image_first: tuple[TrackedFrame, np.ndarray, TransformStatus] | None = None

    # -- life cycle ------------------------------------------------------------------------
    def prepare(self) -> dict[str, float]:
        """Bind the publisher (and the Slicer re-export), then build the estimator and compile
        every kernel — before any frame. Binding comes first: a taken address or port is said
        at once, not after the warm-up.

        Returns the compile/warm-up seconds per part (shown to the user).
        """
        self._publisher = self.make_publisher()
        try:
            if self.options.slicer_port:
                from usnav.publish.slicer import SlicerExporter

                self._slicer = SlicerExporter(
                    port=self.options.slicer_port, port_option="--slicer-port"
                ).start()
            t0 = time.perf_counter()
            self._estimator = MarginEstimator(self.label, self.options.margins, warm_up=True)
            self.compile_seconds["margins"] = time.perf_counter() - t0
            if self.worker is None and self.options.registration and self.mri is not None:
                self.worker = self._build_worker()
                self.reference_motion = _reference_motion_monitor(self.options.display, self.worker)
            if self.worker is not None:
                from usnav.registration import warm_up

                self.compile_seconds["registration"] = warm_up()
        except BaseException:
            if self._slicer is not None:
                self._slicer.close()
                self._slicer = None
            self._publisher.close()
            raise
        _return_freed_memory()
        return dict(self.compile_seconds)

    def _use_calibration(self, calibration: CalibrationFile) -> None:
        """Place frames with ``calibration`` from now on (one of :attr:`calibrations`)."""
        #: the calibration frames are placed with now (the one made for their image size)
        self.calibration_in_use = calibration
        self.image_to_probe = calibration.image_to_probe if calibration.spatial else None
        self.calibration_stage = CalibrationStage.from_calibration(calibration)
        #: mm per pixel (columns, rows) of the calibration, None without one: what a frame
        #: that cannot be placed is published with (once here, not per frame)
        self._calibration_spacing_mm = _pixel_spacing_mm(self.calibration_stage.image_to_probe)
        self.spacing_watch.use(self._calibration_spacing_mm, calibration.where)

    def _build_worker(self) -> Any:
        from usnav.registration.worker import RegistrationWorker, WorkerOptions

        assert self.mri is not None and self.image_to_probe is not None
        options = WorkerOptions(
            min_interval_s=self.options.registration_interval_s,
            max_tied_correction_mm=self.options.max_tied_correction_mm,
            test_moved_reference=self.options.follow_moved_reference,
        )
        budget = self.options.registration_budget.overrides()
        if budget:  # the site's own measured budget, in every estimate's stated uncertainty
            options = options.model_copy(
                update={
                    "full": options.full.model_copy(update=budget),
                    "warm": options.warm.model_copy(update=budget),
                }
            )
        _say_if_nothing_can_be_live(options.full, self.mri, self.options.display)
        return RegistrationWorker(
            self.mri,
            self.image_to_probe,
            self.initial.reference_to_mri,
            options,
            tumor_label=self.label,
        )

    @property
    def endpoint(self) -> str:
        """The ZeroMQ endpoint actually bound (after :meth:`prepare`)."""
        return self._publisher.endpoint if self._publisher else self.options.publish_address

    def make_publisher(self, address: str | None = None) -> Publisher:
        """The publisher of this run's margins (bound to ``address``, default the options'),
        told the run's :attr:`standing_doubt`."""
        from usnav.publish.publisher import Publisher

        return Publisher(
            self.options.publish_address if address is None else address,
            hwm=self.options.publish_hwm,
            curve_secret_key=self.options.curve_secret_key,
            display_rules=self.options.display,
            standing_doubt=self.standing_doubt,
        )

    def start(self) -> None:
        """Start the worker, the recorder, the frame path and the probe."""
        if self._publisher is None:
            self.prepare()
        self._stop.clear()
        if self.record_path is not None:
            self._record_queue = RecordQueue(self.options.record_queue_frames)
            self._spawn(self._recorder_loop, "recorder")
        if self.worker is not None:
            self.worker.start()
        self._spawn(self._frame_path_loop, "frame-path")
        self._spawn(self._status_loop, "status")
        self._spawn(self._source_loop, "source")
        self.probe.connect()
        self.probe.start()
        self._started = True

    def _spawn(self, target, name: str) -> None:
        t = threading.Thread(target=target, name=f"usnav-{name}", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self, timeout_s: float = 1.0) -> None:
        """Stop everything within about ``timeout_s``, then wait for the recording to be
        written out (its final file is assembled from the journal)."""
        if not self._started:
            return
        self._started = False
        self._stop.set()
        self.probe.close()
        self._slot.close()
        if self._record_queue is not None:
            self._record_queue.close()
        if self.worker is not None:
            self.worker.stop(timeout=max(0.1, timeout_s - 0.3))
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            if t.name != "usnav-recorder":
                t.join(max(0.05, deadline - time.monotonic()))
        for t in self._threads:
            if t.name == "usnav-recorder":
                t.join(self.options.record_finish_timeout_s)  # never lose what was recorded
                if t.is_alive():
                    self.counters.record_error = (
                        f"the recording was still being written after "
                        f"{self.options.record_finish_timeout_s:.0f} s"
                    )
        if self._publisher is not None:
            self._publish_status()
            self._publisher.close()
        if self._slicer is not None:
            self._slicer.close()

    def __enter__(self) -> LivePipeline:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- source ----------------------------------------------------------------------------
    def _source_loop(self) -> None:
        while not self._stop.is_set():
            frame = self.probe.get_frame(timeout_s=0.1)
            if frame is not None:
                self._on_frame(frame)

    def _on_frame(self, frame: TrackedFrame) -> None:
        """Hand a received frame on to the frame path and the recorder; never blocks."""
        self.counters.received += 1
        self.rate_in.tick()
        self._last_frame_time = time.monotonic()
        # which frame its image first came with: judged here, on every frame, since the frame
        # path may skip the first (the newest frame wins there)
        self._slot.put((frame, self.frozen_image.see(frame.image, frame)))
        if self._record_queue is not None and not self._record_queue.put(frame):
            self.counters.record_dropped += 1

    # -- frame path --------------------------------------------------------------------------
    def current_estimate(self) -> RegistrationEstimate:
        """The newest accepted registration (the initial one until the worker improves it)."""
        if self.worker is not None:
            est = self.worker.latest_accepted()
            if est is not None:
                return est
        return self.initial

    def _frame_path_loop(self) -> None:
        while not self._stop.is_set():
            item = self._slot.get(timeout=0.1)
            if item is None:
                continue
            frame, arrival = item
            try:
                self.process(frame, arrival)
            except Exception as exc:  # one bad frame never stops the pipeline
                self.counters.errors += 1
                self.counters.problem("error", f"frame {frame.frame_number}: {exc}")
                log.exception("frame %s failed", frame.frame_number)
        self.counters.display_dropped = self._slot.dropped

    def process(self, frame: TrackedFrame, arrival: Arrival | None = None) -> None:
        """Margins for one frame, published; the frame is offered to the registration worker.

        ``arrival``: which frame its image first came with (:meth:`FrozenImageMonitor.see`
        on every received frame; None: the image is taken as new). A frame repeating an
        earlier frame's image is drawn at that frame's pose, the image's own."""
        assert self._estimator is not None and self._publisher is not None
        self.counters.processed += 1
        self._lateness_s = self._arrival.lateness_s(frame.t_device, frame.t_received)
        if frame.image.size == 0 or not frame.image_ok:
            self.counters.skipped_image += 1
            self.counters.problem("image", f"frame {frame.frame_number}: image missing/invalid")
            return
        try:  # devices deliver MF (PLUS's rule); a frame from elsewhere is turned here
            frame = frame_in_mf(frame)
        except ValueError as exc:
            self.counters.skipped_image += 1
            self.counters.problem("image", f"frame {frame.frame_number}: {exc}")
            return
        if self._image_size_refused(frame):
            return
        i2r, status = self.calibration_stage.image_to_reference(frame)
        # the status topic and the Slicer re-export say so too, not only this frame's margin
        self._tracking_lost = "" if status is TransformStatus.OK else _tracking_reason(status)
        if status is not TransformStatus.OK:
            self.counters.skipped_tracking += 1
            self.counters.problem(
                "tracking", f"frame {frame.frame_number}: tracking {status.value} — no overlay"
            )
            self._publish_no_tracking(frame, status, i2r)
            return
        arrival = self._first_arrival(frame, arrival or Arrival(frame), i2r, status)
        if arrival is None:
            return
        first = arrival.first
        self._watch_frozen_image(frame, arrival, i2r, first)
        watch = self.frozen_image
        # the pose the image belongs to: its first arrival's while it repeats
        i2r = watch.image_pose if watch.image_pose is not None else i2r
        repeat_of = first.frame_number if watch.repeat else None
        if watch.repeat:
            self.counters.repeated += 1
        estimate = self.current_estimate()
        #: the registration the latest margins were drawn with (a later estimate may come
        #: after the last frame: no margin was drawn with it)
        self.last_drawn_estimate = estimate
        image_to_mri = estimate.margins_reference_to_mri @ i2r  # at the tumor when known
        stylus = self._stylus_tip_mri(frame, estimate)
        margins = self._estimator.estimate(
            frame.image, image_to_mri, estimate, stylus, frame_number=frame.frame_number
        )
        stale_reason = self._stale_reason(frame)
        if stale_reason:
            self.counters.stale_published += 1
        self._watch_outside_mri(frame, image_to_mri)
        spacing_doubt = self._watch_spacing(frame)
        # the reference's motion, and an image outside the MRI, put the registration in doubt
        # on every topic (the frame, the status and the re-sent registration too), not only
        # this frame's margins
        moved = self.reference_motion.observe(
            reference_to_tracker(frame, self.calibration_stage.reference),
            i2r,
            frame.image.shape[:2],
            checked_key=(estimate.sequence, estimate.t_computed) if estimate.checked else None,
            t_device=frame.t_device,
            checked_since_t=estimate.checked_since_t,
        )
        self._publisher.registration_doubt = "; ".join(
            d for d in (self._outside_mri, spacing_doubt, moved) if d
        )
        motion = self.reference_motion
        if motion.newly_moved:
            log.warning(
                "frame %s: the patient reference moved %.1f mm against the tracker since the "
                "registration was checked on the images; margins UNCERTAIN until it is checked "
                "again",
                frame.frame_number,
                motion.motion_mm or 0.0,
            )
        if motion.newly_moved and motion.reference_change is not None:
            # the pose that follows the move, for the images to choose (no-op unless the
            # worker's test_moved_reference is on)
            propose = getattr(self.worker, "propose_moved_reference", None)
            if propose is not None:
                propose(motion.reference_change, frame.t_device, motion.motion_mm)
        doubt = self._estimator.absence_doubt(
            margins, estimate.uncertainty_mm, frame.image.shape[:2]
        ) or seen_disagreement_doubt(
            in_view=margins.in_view,
            seen_fraction=margins.supported_fraction,
            median_disagreement_mm=margins.median_abs_disagreement_mm,
            rules=self.options.display,
        )
        self._publisher.publish_margins(
            frame,
            margins,
            estimate,
            stale=bool(stale_reason),
            stale_reason=stale_reason,
            doubt=doubt,
            repeat_of=repeat_of,
            image_age_s=watch.image_age_s,
        )
        if self.options.publish_frames:
            self._publisher.publish_frame(
                frame,
                image_to_mri=image_to_mri,
                estimate=estimate,
                stale_reason=stale_reason,
                repeat_of=repeat_of,
                image_age_s=watch.image_age_s,
            )
        self._publish_estimate_if_new()
        now = time.time()
        self.latency.add(now - frame.t_received)
        self.counters.published += 1
        self.rate_out.tick()
        if self._slicer is not None:
            display = self._publisher.display_of(estimate, stale_reason=stale_reason, doubt=doubt)
            self._slicer.publish(frame, i2r, estimate.reference_to_mri, margins, display)
        # a repeated image is no new information (and its own time is its first arrival's);
        # an image entirely outside the MRI has nothing to be compared with (the worker would
        # only spend its time finding that no window holds it)
        if self.worker is not None and not stale_reason and not watch.repeat:
            if self._outside_mri or spacing_doubt:  # nothing to compare / at the wrong scale
                self.counters.withheld_from_registration += 1
            else:
                self.worker.submit(frame.image, i2r, frame.t_device)
                self.counters.submitted_to_registration += 1

    def _image_size_refused(self, frame: TrackedFrame) -> bool:
        """True (the frame counted, said and published without margins) when its image is
        not of a size any calibration was made for: its mm per pixel would be wrong (the
        depth was changed on the scanner), so nothing is placed with them. Else the frame is
        placed with the calibration made for its size (:attr:`calibrations`: one per depth
        preset; switching is logged).

        Logged once when such frames begin (and again if the size changes); the status and
        the Slicer re-export say it until a frame of a calibrated size comes."""
        rows, cols = frame.image.shape[:2]
        chosen = calibration_for_size(self.calibrations, (cols, rows))
        if chosen is not None:
            if chosen is not self.calibration_in_use:
                self._use_calibration(chosen)
                log.info(
                    "frame %s: frames of %d × %d px are placed with %s",
                    frame.frame_number,
                    cols,
                    rows,
                    chosen.where,
                )
            if self._wrong_image_size:
                log.info("frames of a calibrated image size again: margins drawn again")
            self._wrong_image_size = ""
            return False
        if len(self.calibrations) == 1:
            mismatch = self.calibration.image_size_mismatch((cols, rows), "the probe's stream")
            reason = (
                f"image {cols} × {rows} px is not the size the calibration was made for: "
                "not placed (calibrate for this depth, or set the scanner back)"
            )
        else:
            made = ", ".join(
                f"{size[0]} × {size[1]}"
                for size in (c.image_size for c in self.calibrations)
                if size
            )
            mismatch = (
                f"the probe's stream has {cols} × {rows} px images; the calibrations given are "
                f"for {made} px ({', '.join(cal.where for cal in self.calibrations)}) — "
                "calibrate this depth too and restart with its file among them, or set the "
                "scanner back"
            )
            reason = (
                f"image {cols} × {rows} px: no calibration was given for this size (the "
                f"calibrations are for {made} px): not placed (calibrate for this depth, or set "
                "the scanner back)"
            )
        if reason != self._wrong_image_size:
            log.warning(
                "frame %s: %s (no margins are drawn on frames of that size)",
                frame.frame_number,
                mismatch,
            )
        self._wrong_image_size = reason
        self.counters.skipped_image += 1
        self.counters.problem("image_size", f"frame {frame.frame_number}: {reason}")
        self._publish_unplaced(frame, reason, (float("nan"), float("nan")))
        return True

    def _publish_no_tracking(
        self, frame: TrackedFrame, status: TransformStatus, image_to_reference: np.ndarray
    ) -> None:
        """Tracking lost: say so on the margin topic (no margin is drawn from a guess). The
        frame cannot be placed (its ``ImageToMri`` goes out nil), but its pixel size is the
        calibration's whatever the tracker says."""
        spacing = (
            self._calibration_spacing_mm or _pixel_spacing_mm(image_to_reference) or (1.0, 1.0)
        )
        self._publish_unplaced(frame, _tracking_reason(status), spacing)

    def _publish_unplaced(
        self, frame: TrackedFrame, reason: str, spacing_mm: tuple[float, float]
    ) -> None:
        """A frame that cannot be placed: no margin, ``ImageToMri`` nil, STALE for ``reason``;
        ``spacing_mm`` the pixel size to publish (NaN: unknown)."""
        from usnav.margins.estimator import FrameMargins

        assert self._publisher is not None
        margins = FrameMargins(
            frame.frame_number, False, reason, (), None, np.full((4, 4), np.nan), spacing_mm
        )
        self._publisher.publish_margins(
            frame, margins, self.current_estimate(), stale=True, stale_reason=reason
        )

    def _stylus_tip_mri(
        self, frame: TrackedFrame, estimate: RegistrationEstimate
    ) -> np.ndarray | None:
        pivot = self.pivot
        if pivot is None:
            return None
        tool = pivot.tool
        try:
            tt = TransformRepository.from_frame(frame).get(tool)
        except UsnavError:
            return None
        if tt.status is not TransformStatus.OK:
            return None
        tip = tt.matrix @ np.append(np.asarray(pivot.tip_in_tool_mm, dtype=np.float64), 1.0)
        # the margins' transform (tumor stage, tied candidate, across-sweep estimate): the tip
        # and the margins it is measured against are placed by the same transform
        return (estimate.margins_reference_to_mri @ tip)[:3]

    def _first_arrival(
        self,
        frame: TrackedFrame,
        arrival: Arrival,
        i2r: np.ndarray,
        status: TransformStatus,
    ) -> Arrival | None:
        """``arrival`` with the frame ``frame``'s image first came with, whose pose is kept in
        :attr:`_image_first`. When that frame could not be placed: None (the frame published
        STALE without margins, counted) while ``frame`` would repeat it — a repeat is drawn at
        its image's pose or not at all —, and ``frame`` taken as the image's first arrival
        once the image is older than a repeat can be (a still probe over an unchanged image
        is placed again when tracking comes back)."""
        first = arrival.first if isinstance(arrival.first, TrackedFrame) else frame
        if first is frame:
            self._image_first = (frame, i2r, status)
            return Arrival(frame)
        if self._image_first is None or self._image_first[0] is not first:
            try:
                placed = frame_in_mf(first)
            except ValueError:
                pose, first_status = np.full((4, 4), np.nan), TransformStatus.INVALID
            else:
                pose, first_status = self.calibration_stage.image_to_reference(placed)
            self._image_first = (first, pose, first_status)
        if self._image_first[2] is TransformStatus.OK:
            return Arrival(first, arrival.repeats)
        repeat_s = self.frozen_image.repeat_s
        if repeat_s is None or not frame.t_device - first.t_device <= repeat_s:
            self._image_first = (frame, i2r, status)
            return Arrival(frame)
        reason = (
            f"the image repeats frame {first.frame_number}'s, whose tracking was "
            f"{self._image_first[2].value}: not placed (the image's own pose is unknown)"
        )
        self.counters.skipped_tracking += 1
        self.counters.problem("tracking", f"frame {frame.frame_number}: {reason}")
        self._publish_unplaced(frame, reason, self._calibration_spacing_mm or (1.0, 1.0))
        return None

    def _watch_frozen_image(
        self, frame: TrackedFrame, arrival: Arrival, i2r: np.ndarray, first: TrackedFrame
    ) -> None:
        """Whether the frame's image is new, a repeat of an earlier frame's, or frozen on the
        scanner while the probe moves (:mod:`usnav.pipeline.frozen`). A freeze is counted,
        said once in the log when it begins and when it ends, and kept as
        :attr:`_image_frozen` (the frame's and the status's STALE reason; such a frame is not
        offered to the registration); the first repeat of the run is said once."""
        assert self._image_first is not None and self._image_first[0] is first
        watch = self.frozen_image
        reason = watch.judge(
            arrival,
            i2r,
            frame.t_device,
            self._image_first[1],
            first.t_device,
            frame.image.shape[:2],
        )
        if watch.repeat and watch.repeated_frames == 1:
            log.info(
                "frame %s repeats the image of frame %s (%.0f ms before): a frame grabber "
                "capturing faster than the scanner updates (or a still probe over an unchanged "
                "image)? Such frames are drawn at the pose of their image's first frame and not "
                "offered to the registration",
                frame.frame_number,
                first.frame_number,
                1000.0 * (watch.image_age_s or 0.0),
            )
        if reason:
            self.counters.problem("image_frozen", f"frame {frame.frame_number}: {reason}")
            if self.frozen_image.newly_frozen:
                log.warning("frame %s: %s", frame.frame_number, reason)
        elif self._image_frozen:
            log.info("frame %s: the ultrasound image changes again", frame.frame_number)
        self._image_frozen = reason

    def _watch_outside_mri(self, frame: TrackedFrame, image_to_mri: np.ndarray) -> None:
        """Whether the frame's image (its field of view, placed by ``image_to_mri``) lies
        entirely outside the MRI (:attr:`mri_extent`): counted, kept as :attr:`_outside_mri`
        (UNCERTAIN on every topic until a frame lies in it again), said in the log when such
        frames begin and end. A partial overlap is not doubted: the registration is checked
        on the part inside, and the tumor the label map holds lies inside too."""
        outside = self.mri_extent.misses(image_to_mri, frame.image.shape[:2])
        if outside:
            self.counters.outside_mri += 1
            self.counters.problem("outside_mri", f"frame {frame.frame_number}: {OUTSIDE_MRI_DOUBT}")
            if not self._outside_mri:
                log.warning("frame %s: %s", frame.frame_number, OUTSIDE_MRI_DOUBT)
        elif self._outside_mri:
            log.info("frame %s: the image lies in the MRI again", frame.frame_number)
        self._outside_mri = OUTSIDE_MRI_DOUBT if outside else ""

    def _watch_spacing(self, frame: TrackedFrame) -> str:
        """Whether the pixel size the frame's IMAGE states disagrees with the calibration's
        (:class:`~usnav.pipeline.spacing.SpacingWatch`): the returned doubt keeps every topic
        UNCERTAIN ("" when they agree or none is stated), the frame is counted, and the
        disagreement is said in the log when it begins and when it ends."""
        watch = self.spacing_watch
        was = watch.doubt
        embedded = frame.transforms.get(self._image_transform) if self._image_transform else None
        doubt = watch.see(None if embedded is None else embedded.matrix)
        if doubt:
            self.counters.spacing_mismatch += 1
            self.counters.problem("image_spacing", f"frame {frame.frame_number}: {doubt}")
            if watch.newly:
                log.warning("frame %s: %s", frame.frame_number, doubt)
        elif was:
            log.info(
                "frame %s: the image's pixel size agrees with the calibration again",
                frame.frame_number,
            )
        return doubt

    def _stale_reason(self, frame: TrackedFrame) -> str:
        """Why this frame's margins may not show the present ("" if they do)."""
        state = self.probe.state
        if state is not DeviceState.STREAMING:
            return f"probe {state.value}"
        late = self._lateness_s
        age = time.time() - frame.t_received + late
        if age > self.options.stale_after_s:
            if late > 0:  # received just now, made seconds ago (a backlog after a stall)
                return f"frame {age:.1f} s old (it arrived {late:.1f} s late by the device's clock)"
            return f"frame {age:.1f} s old"
        return self._image_frozen

    def _publish_estimate_if_new(self) -> None:
        """Publish each estimate the worker made since the last one published, in order.

        Looking at the newest alone lost one when two came between two frames (session 37:
        a first estimate, adopted and drawn LIVE, then the full window's judgment of it; the
        adopted one never went out as an estimate, only in the periodic re-sends)."""
        if self.worker is None:
            return
        since = getattr(self.worker, "estimates_since", None)
        new = since(self._last_estimate_published) if since else [self.worker.latest()]
        new = [e for e in new if e is not None and e.sequence != self._last_estimate_published]
        if not new:  # the common case, once per frame
            return
        in_use = self.current_estimate().sequence
        for estimate in new:
            self._last_estimate_published = estimate.sequence
            # "margins are now computed with it": an accepted one already replaced is not
            self._publisher.publish_registration(
                estimate, in_use=estimate.accepted and estimate.sequence == in_use
            )

    # -- recorder ----------------------------------------------------------------------------
    def _recorder_loop(self) -> None:
        """Write every queued frame; a change of image size (the depth was changed on the
        scanner) continues in a new file, since a sequence file holds one frame size."""
        from usnav.devices.recorder import SplitRecording

        assert self._record_queue is not None and self.record_path is not None
        queue = self._record_queue
        recording = SplitRecording(
            self.record_path, tracker_lag_s=getattr(self.probe, "time_offset_s", None)
        )
        self.counters.record_files = recording.files  # grows with each part
        try:
            while True:
                frame = queue.get(timeout=0.1)
                if frame is None:
                    if (queue.closed or self._stop.is_set()) and len(queue) == 0:
                        break
                    continue
                try:
                    closed = recording.append(frame)
                except (OSError, UsnavError) as exc:
                    self.counters.record_error = f"recording to {recording.path} failed: {exc}"
                    log.error(self.counters.record_error)
                    self.counters.record_dropped += 1
                    self._drain_uncounted(queue)
                    return
                self.counters.recorded += 1
                if closed is not None:
                    log.warning(
                        "image size changed from %s to %s: the recording continues in %s",
                        closed.shape,
                        recording.parts[-1].shape,
                        recording.path,
                    )
        finally:
            try:
                recording.close()
            except (OSError, UsnavError) as exc:
                self.counters.record_error = f"finishing {recording.path} failed: {exc}"
                log.error(self.counters.record_error)

    def _drain_uncounted(self, queue: RecordQueue[TrackedFrame]) -> None:
        """After a recording failure: keep counting what cannot be written."""
        while not (queue.closed and len(queue) == 0):
            if queue.get(timeout=0.1) is not None:
                self.counters.record_dropped += 1

    # -- status ------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """A snapshot for the status line and the ``status`` topic."""
        p50, p99 = self.latency.percentiles_ms(50, 99)
        est = self.current_estimate()
        latest = self.worker.latest() if self.worker is not None else None
        if latest is not None and latest.source == "init":
            latest = None  # the worker's own start: the navigation registration, not a try
        link = self.probe.link_stats()
        probe_state = self.probe.state  # read once: the state and the reason must agree
        stale = self.link_stale_reason(probe_state)
        display = (
            self._publisher.display_of(est, stale_reason=stale)
            if self._publisher is not None
            else DisplayState(STALE, stale or "not started")
        )
        state = probe_state.value
        error = self.probe.last_error or ""
        checked = est.checked
        streaming = probe_state is DeviceState.STREAMING
        # connected (no image yet, or none for a while): the error ended an earlier connection
        # or attempt; shown as the link's error it sent an OR engineer looking for a server
        # that refuses connections ("cannot connect ... refused") while connected to it
        past = streaming or self.probe.link_state is LinkState.CONNECTED
        return {
            "state": state,
            "link": self.probe.link_state.value,
            "peer": f"{self.probe.config.host}:{self.probe.config.port}",
            # a display showing last_error must not show a connection failure while frames
            # flow again: once streaming, the error is history (recovered_from)
            "last_error": "" if past else error,
            "recovered_from": error if past else "",
            "fps_in": round(self.rate_in.rate(), 2),
            "fps_out": round(self.rate_out.rate(), 2),
            "latency_p50_ms": p50,
            "latency_p99_ms": p99,
            "frames_received": self.counters.received,
            "frames_published": self.counters.published,
            "dropped_display": self._slot.dropped,
            "dropped_link": int(sum(link.dropped_in.values())),
            "dropped_record": self.counters.record_dropped,
            "skipped_tracking": self.counters.skipped_tracking,
            "skipped_image": self.counters.skipped_image,
            "stale_published": self.counters.stale_published,
            # frames whose image repeated an earlier frame's (a frame grabber faster than the
            # scanner): drawn at that frame's pose, marked repeat_of, not offered to the
            # registration
            "frames_repeated": self.counters.repeated,
            # frames whose image lay entirely outside the MRI: UNCERTAIN, never LIVE
            "frames_outside_mri": self.counters.outside_mri,
            # frames whose IMAGE stated a pixel size other than the calibration's (the depth
            # changed on the scanner?): UNCERTAIN, not offered to the registration
            "frames_spacing_mismatch": self.counters.spacing_mismatch,
            "errors": self.counters.errors,
            "recorded": self.counters.recorded,
            "record_error": self.counters.record_error,
            # the navigation system's registration was never estimated on the images: no
            # age, no score (a display must not read "accepted" or "0.0 s" as a check)
            "registration_checked": checked,
            "registration_age_s": est.age_s() if checked else None,
            "registration_quality": est.quality if checked else None,
            "registration_similarity": est.similarity if checked else None,
            "registration_uncertainty_mm": est.uncertainty_mm,
            "display_state": display.state,
            "display_reason": display.reason,
            "registration_source": est.source,
            # which MRI and label the margins are computed on: a display that loaded its own
            # copies (usnav view --mri --label) refuses to show another patient's or series
            "mri_digest": self.input_digests.get("mri", ""),
            "label_digest": self.input_digests.get("label", ""),
            # the newest image-based try's verdict (None: no try yet)
            "registration_latest_adopted": bool(latest.accepted) if latest else None,
            "registration_latest_reason": latest.reason if latest else est.reason,
            "transforms": {k: v.value for k, v in self.probe.transform_states().items()},
            "last_problem": self.counters.last_problem,
            "calibration_flagged": self.calibration_flagged,
            # the file frames are placed with now (one per depth preset: the newest frame's
            # image size chose it)
            "calibration_in_use": self.calibration_in_use.where,
            # the patient reference's motion against the tracker since the registration was
            # checked on the images, mm at the newest frame's corners (None: not watched,
            # e.g. a stream of ProbeToReference only, or nothing checked yet)
            "reference_motion_mm": (
                None
                if self.reference_motion.motion_mm is None
                else round(self.reference_motion.motion_mm, 2)
            ),
            # its step (the distance from the nearest pose the check saw, mm): what tracking
            # jitter alone reaches shows here, against max_reference_step_mm (session 40)
            "reference_step_mm": (
                None
                if self.reference_motion.step_mm is None
                else round(self.reference_motion.step_mm, 2)
            ),
            "reference_watched": self.reference_motion.watching,
        }

    def link_stale_reason(self, state: DeviceState | None = None) -> str:
        """Why the pipeline's output may not show the present right now ("" if it does);
        ``state`` is the probe's state if already read."""
        state = self.probe.state if state is None else state
        if state is not DeviceState.STREAMING:
            return f"probe {state.value}"
        if self._last_frame_time and (
            time.monotonic() - self._last_frame_time > self.options.stale_after_s
        ):
            return f"no frame for {time.monotonic() - self._last_frame_time:.1f} s"
        if self._tracking_lost or self._wrong_image_size or self._image_frozen:
            # frames flow, but the newest could not be placed (or its image is a past one):
            # its margin went out STALE, and a display joining now (or one reading the status
            # alone) must not be told better
            return self._wrong_image_size or self._tracking_lost or self._image_frozen
        late = self._lateness_s
        if late > 0 and self._last_frame_time:
            # frames flow again after a stall, but the newest ones were made seconds ago (the
            # margins drawn from them go out STALE): the status and the registration re-sent
            # beside them must not tell a display joining now anything better
            age = time.monotonic() - self._last_frame_time + late
            if age > self.options.stale_after_s:
                return (
                    f"newest frame {age:.1f} s old (it arrived {late:.1f} s late by the "
                    "device's clock)"
                )
        return ""

    def _publish_status(self) -> None:
        """The status, and the registration in use re-sent: a display that joins at any moment
        learns both within one status interval (the late-joiner snapshot)."""
        if self._publisher is not None:
            stale = self.link_stale_reason()
            self._publisher.publish_registration(
                self.current_estimate(), in_use=True, resent=True, stale_reason=stale
            )
            self._publisher.publish_status(self.status(), stale_reason=stale)

    def _status_loop(self) -> None:
        while not self._stop.wait(self.options.status_interval_s):
            try:
                self._publish_status()
                state = self.probe.state
                if self._slicer is not None:
                    if state is not DeviceState.STREAMING:
                        self._slicer.mark_stale(f"probe {state.value}")
                    elif self._tracking_lost or self._wrong_image_size:
                        # no frame reaches Slicer while tracking is lost: without this, the
                        # last overlay and its transforms stayed OK through the loss
                        self._slicer.mark_stale(self._wrong_image_size or self._tracking_lost)
            except Exception:  # status must never take the pipeline down
                log.exception("status publishing failed")


def _reference_motion_monitor(display: DisplayRules, worker: Any) -> ReferenceMotionMonitor:
    """The patient reference's watch: the display rules' limit and breath, the worker's
    window."""
    return ReferenceMotionMonitor(
        display.max_reference_motion_mm,
        _worker_window_frames(worker),
        breath_average_s=display.reference_breath_s,
        step_limit_mm=display.max_reference_step_mm,
    )


def _worker_window_frames(worker: Any) -> int:
    """How many recent frames the registration worker judges (its window; 150, the
    default, when it does not say)."""
    window = getattr(getattr(worker, "options", None), "window_frames", None)
    return int(window) if isinstance(window, int) and window > 0 else 150


def _tracking_reason(status: TransformStatus) -> str:
    """Why a frame whose ImageToReference is ``status`` gets no overlay."""
    return f"tracking {status.value}: the image cannot be placed in the MRI"


def _return_freed_memory() -> None:
    """Give the set-up's freed scratch back to the system (glibc keeps it otherwise): the
    tumor stage's distance transform frees ~14 MB of temporaries that stayed in the process
    for the whole run (session 30). A no-op where ``malloc_trim`` does not exist."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)


def _say_if_nothing_can_be_live(options: Any, mri: Volume, rules: DisplayRules) -> None:
    """Log once, before the first frame, when the registration budget's systematic terms
    alone exceed the display's LIVE threshold: every overlay of the run will be UNCERTAIN at
    best, by arithmetic, and the OR engineer should know that it is the budget, not a failing
    registration (session 42)."""
    from usnav.registration.operated import REMOVED_TISSUE_KEY
    from usnav.registration.verdict import systematic_floor_mm

    floor = systematic_floor_mm(options, operated=REMOVED_TISSUE_KEY in mri.meta)
    limit = rules.registration_limit_mm
    if floor > limit:
        log.warning(
            "no overlay can be LIVE in this run: the registration budget's systematic terms "
            "alone state ±%.2f mm (95 %%) at the tumor, over the LIVE limit of %.2f mm — every "
            "margin is UNCERTAIN at best, whatever the registration's true error. A site that "
            "has measured its own bias (usnav budget) states it in the options' "
            "[registration_budget] (docs/protocol.md, 'Why nothing is LIVE with the default "
            "budget')",
            floor,
            limit,
        )


def _pixel_spacing_mm(matrix: np.ndarray | None) -> tuple[float, float] | None:
    """mm per pixel along columns and rows of an ``ImageTo…`` matrix (the norms of its first
    two columns), None when it is absent or not finite and positive. A frame without tracking
    is published with the calibration's, else its own ImageToReference's, else 1 mm (until
    session 36 always 1 mm per pixel: a display drew its depth ruler and scale bar from it)."""
    if matrix is None:
        return None
    spacing = np.linalg.norm(np.asarray(matrix, np.float64)[:3, :2], axis=0)
    if not (np.all(np.isfinite(spacing)) and np.all(spacing > 0)):
        return None
    return float(spacing[0]), float(spacing[1])
