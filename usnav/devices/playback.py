"""Playback device: a PLUS sequence file served over OpenIGTLink like a PLUS server.

For every frame of the recording the server sends, in one bundle to every client:

- one TRANSFORM per transform of the frame (device name = transform name, v2 metadata
  ``TransformStatus`` / ``TransformValid`` as PLUS sends them), then
- one IMAGE named ``Image_Reference`` (``<ImageName>_<ReferenceFrame>``) whose matrix is
  ``ImageToReference`` including mm/pixel when the frame's transforms (plus an optional
  calibration's ``ImageToProbe``) allow it, identity otherwise; its v2 metadata carries the
  frame's fields (``FrameNumber``, ``ImageStatus``, ``<Name>TransformStatus``,
  ``UltrasoundImageOrientation`` and any custom field), as PLUS sends per-frame fields, and
  the file's ``UltrasoundImageType``.

Timestamps are the file's (looping adds the recording's length each round so they keep
increasing, and the frame numbers run on likewise); frames are paced by them (``rate`` 1.0 =
real time, 2.0 = twice as fast, ``"max"`` = as fast as the slowest client reads, without loss).
A step back in the file's timestamps (the recorded server restarted) counts as one median frame
period: the frames after it are paced by their own intervals and stamped on a clock that runs
on, as a device's would (:func:`device_clock`). Transforms go before the image, so a client
pairs them with no waiting.

A playback is a :class:`~usnav.devices.base.Device`: ``connect()`` binds, ``start()`` plays
(by default from the moment the first client connects), ``stop()`` pauses, ``close()``
releases. :func:`serve_in_subprocess` runs ``usnav replay`` in another process.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from usnav.config.calibration import CalibrationFile, load_calibration
from usnav.devices.base import Device, DeviceState
from usnav.devices.config import MAX_RATE, PlaybackConfig, resolve_path
from usnav.errors import ConfigError, InputError, TransformError, UsnavError
from usnav.frames import TrackedFrame, TrackedTransform, TransformStatus, frame_in_mf
from usnav.igtl import DEFAULT_PORT, IgtlServer, LinkStats
from usnav.igtl.codec import ImageContent, Message, TransformContent
from usnav.lifeline import child_env
from usnav.transforms.repository import TransformRepository

log = logging.getLogger("usnav.devices.playback")

#: how long a new client has to say which header version it speaks before frames go to it, s
_GREETING_S = 0.5


@dataclass
class PlaybackStats:
    """``frames_sent``: frames broadcast (to at least one client or not);
    ``loops``: completed passes through the recording."""

    frames_sent: int = 0
    frames_without_client: int = 0
    loops: int = 0


def frame_messages(
    frame: TrackedFrame,
    *,
    timestamp: float,
    image_device: str = "Image_Reference",
    reference_frame: str = "Reference",
    image_to_probe: np.ndarray | None = None,
    send_invalid_transforms: bool = True,
    transform_lag_s: float = 0.0,
) -> list[Message]:
    """The OpenIGTLink messages a PLUS server sends for one tracked frame.

    Parameters
    ----------
    frame
        The frame (image rows × cols, transforms with statuses).
    timestamp
        Timestamp to send, s (≥ 0).
    image_device
        IMAGE device name.
    reference_frame
        The frame the IMAGE matrix maps to (``Image<To><reference_frame>``).
    image_to_probe
        Calibration matrix; it replaces an ``ImageToProbe`` the frame carries (its status
        kept), as the calibration given wins in every command.
    send_invalid_transforms
        Send non-OK transforms too (with their status); PLUS's default sends only valid ones.
    transform_lag_s
        The TRANSFORMs are stamped ``timestamp + transform_lag_s`` (≥ 0 overall): a frame
        paired at the tracker lag L (a usnav recording's ``UsnavTrackerLagSec``) holds the
        tracker's pose of t + L, so it is sent with that stamp, as the tracker sent it.

    Returns
    -------
    list[Message]
        TRANSFORMs first, then the IMAGE (none for a tracker-only frame).
    """
    stored = frame.transforms.get("ImageToProbe")
    if stored is not None and image_to_probe is not None:
        transforms = dict(frame.transforms)
        transforms["ImageToProbe"] = TrackedTransform(image_to_probe, stored.status)
        frame = replace(frame, transforms=transforms)
    messages = []
    statuses: dict[str, str] = {}
    for name, tt in frame.transforms.items():
        status_word = frame.fields.get(f"{name}TransformStatus", tt.status.value)
        statuses[f"{name}TransformStatus"] = status_word
        if not tt.ok and not send_invalid_transforms:
            continue
        matrix = tt.matrix if np.all(np.isfinite(tt.matrix)) else np.eye(4)
        messages.append(
            Message(
                "TRANSFORM",
                name,
                TransformContent(matrix),
                timestamp + transform_lag_s,
                {"TransformStatus": status_word, "TransformValid": "1" if tt.ok else "0"},
            )
        )
    if frame.image.size == 0:
        return messages
    embedded = f"ImageTo{reference_frame}"
    calibration = None
    if image_to_probe is not None and "ImageToProbe" not in frame.transforms:
        calibration = {"ImageToProbe": image_to_probe}
    repo = TransformRepository.from_frame(frame, calibration=calibration)
    try:
        image_to_reference = repo.get(embedded)
        matrix, status = image_to_reference.matrix, image_to_reference.status.value
    except TransformError:
        matrix, status = np.eye(4), "PATH_NOT_FOUND"
    if not np.all(np.isfinite(matrix)):
        matrix, status = np.eye(4), "INVALID"
    # every field, whatever its name's alphabet: v2 metadata keys are UTF-8 (a name that is
    # not ASCII was left out, and lost by a recording of the replay)
    metadata = {k: str(v) for k, v in frame.fields.items()}
    metadata.update(statuses)
    metadata[f"{embedded}TransformStatus"] = status
    metadata["FrameNumber"] = str(frame.frame_number)
    metadata["ImageStatus"] = "OK" if frame.image_ok else "INVALID"
    metadata["UltrasoundImageOrientation"] = frame.orientation
    image = frame.image
    messages.append(
        Message(
            "IMAGE",
            image_device,
            ImageContent.from_array(image, matrix, channels=image.ndim == 3),
            timestamp,
            metadata,
        )
    )
    return messages


def _mark_absent_transforms(frame: TrackedFrame, last_seen: dict[str, np.ndarray]) -> TrackedFrame:
    """The frame with every transform an earlier frame had but this one lacks, as MISSING.

    A recording made from a PLUS server that sends valid transforms only (or by ``usnav
    record``, which writes only what arrived) has frames without some transform. Sent without
    it, a client pairs the image with the last pose it got, as OK, for up to
    ``max_interpolation_gap_s`` (docs/devices.md): a recording of the replay, or ``usnav
    run`` on it, would get a stale pose marked OK where the file had none. Sent as MISSING
    (with the last matrix, as a tracker that lost a tool repeats it) it stays MISSING.
    ``last_seen`` (name → last matrix) is updated.
    """
    absent = {name: m for name, m in last_seen.items() if name not in frame.transforms}
    for name, tt in frame.transforms.items():
        last_seen[name] = tt.matrix
    if not absent:
        return frame
    transforms = dict(frame.transforms)
    for name, matrix in absent.items():
        transforms[name] = TrackedTransform(matrix, TransformStatus.MISSING)
    return replace(frame, transforms=transforms)


def device_clock(timestamps: np.ndarray) -> tuple[np.ndarray, float]:
    """The clock a replay stamps and paces its frames by: the file's timestamps, run on past
    any step back.

    A recording of a server that restarted has a step back in its timestamps (they start over).
    Pacing by the raw timestamps made every frame after it overdue, sent in a burst; a device
    clock that goes back also makes a client start its clock over
    (:mod:`usnav.pipeline.arrival`). Here a backward or non-finite step counts as one frame
    period instead, so the clock only runs forward and each frame keeps its recorded interval
    to the one before it.

    Parameters
    ----------
    timestamps
        The recording's frame timestamps, s, in file order.

    Returns
    -------
    clock : np.ndarray
        One time per frame, s, never decreasing: equal to ``timestamps`` (the same values) up
        to the first step back, and shifted by a constant after each.
    period : float
        The frame period a step back counts as, s: the median of the forward steps (0.1 for a
        single frame), at least 1 ms. Looping counts the wrap to the first frame the same way.
    """
    t = np.asarray(timestamps, dtype=np.float64)
    steps = np.diff(t)
    forward = steps[np.isfinite(steps) & (steps >= 0)]
    period = max(float(np.median(forward)) if forward.size else 0.1, 1e-3)
    if t.size and np.all(np.isfinite(t)) and forward.size == steps.size:
        return t, period
    clock = np.empty_like(t)
    clock[:1] = t[:1] if t.size and np.isfinite(t[0]) else 0.0
    offset = 0.0  # clock − file time, changed at each step back
    for i in range(1, t.size):
        step = steps[i - 1]
        if not (np.isfinite(step) and step >= 0):
            # this frame comes one period after the last one, the later ones keep their steps
            offset = float(clock[i - 1] + period - t[i]) if np.isfinite(t[i]) else 0.0
        clock[i] = t[i] + offset if np.isfinite(t[i]) else clock[i - 1] + period
    return clock, period


class PlaybackServer(Device):
    """Serve a recording over OpenIGTLink (see the module docstring).

    Parameters
    ----------
    recording
        A PLUS sequence file (``.igs.mha``, ``.mha``, ``.seq.nrrd``, ``.igs.nrrd``).
    host, port
        Where to listen (127.0.0.1 unless ``allow`` lists peers); port 0 = any free port.
    rate
        Speed factor (1.0 = as recorded) or ``"max"``.
    loop
        Start again at the end.
    calibration
        A calibration (object or file) whose ``ImageToProbe`` lets the IMAGE carry
        ImageToReference when the recording has only tracker transforms. One made for another
        image size than the recording's (``[spatial] image_size_px``) is refused at connect
        (ConfigError).
    image_device, reference_frame
        IMAGE device name and the frame its matrix maps to.
    allow
        Peer addresses allowed besides loopback (required for a non-loopback ``host``).
    wait_for_client
        Start playing when the first client connects (else at :meth:`start`).
    send_invalid_transforms
        Also send non-OK transforms, with their status.
    keepalive_s, max_clients, send_queue_messages, send_timeout_s
        Server options (see :class:`~usnav.igtl.server.IgtlServer`).

    Raises
    ------
    InputError
        The recording cannot be read or has negative timestamps.
    """

    def __init__(
        self,
        recording: str | Path,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        rate: float | str = 1.0,
        loop: bool = False,
        calibration: CalibrationFile | str | Path | None = None,
        image_device: str = "Image_Reference",
        reference_frame: str = "Reference",
        allow: SequenceABC[str] = (),
        wait_for_client: bool = True,
        send_invalid_transforms: bool = True,
        keepalive_s: float = 0.5,
        max_clients: int = 16,
        send_queue_messages: int = 256,
        send_timeout_s: float = 5.0,
        name: str = "playback",
    ):
        super().__init__(name)
        self.recording = Path(recording)
        if rate != "max" and not (isinstance(rate, int | float) and 0 < float(rate) <= MAX_RATE):
            raise InputError(
                "rate", f"{rate!r} is not 'max' or a speed factor in (0, {MAX_RATE:g}]"
            )
        self.rate = rate
        self.loop = loop
        if isinstance(calibration, str | Path):
            calibration = load_calibration(calibration)
        #: the calibration whose ImageToProbe is sent (its image size is checked at connect)
        self.calibration = calibration
        self.image_to_probe = (
            calibration.image_to_probe
            if calibration is not None and calibration.spatial is not None
            else None
        )
        self.image_device = image_device
        self.reference_frame = reference_frame
        self.wait_for_client = wait_for_client
        self.send_invalid_transforms = send_invalid_transforms
        self.send_timeout_s = send_timeout_s
        self.stats = PlaybackStats()
        self.server = IgtlServer(
            host,
            port,
            allow=allow,
            max_clients=max_clients,
            keepalive_s=keepalive_s,
            send_queue_messages=send_queue_messages,
            send_timeout_s=send_timeout_s,
            name=f"{name} server",
        )
        self._sequence = None
        self._paired_lag_s = 0.0  # the recording's own pairing lag, s (UsnavTrackerLagSec)
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        self._paused = threading.Event()
        self._paused_at = 0.0  # time.monotonic() of the last stop()
        self._playing = False  # past the wait for a first client
        self._play_lock = threading.RLock()  # the pause and the state change together
        self._done = threading.Event()
        #: why the player stopped early (a damaged frame...), None while fine
        self.failure: Exception | None = None

    @classmethod
    def from_config(
        cls, config: PlaybackConfig, config_path: str | Path | None = None, **overrides: object
    ) -> PlaybackServer:
        """A playback configured by a ``[playback]`` section.

        Parameters
        ----------
        config
            The ``[playback]`` options.
        config_path
            The device file they came from (relative paths are looked up beside it).
        **overrides
            Any :class:`PlaybackServer` argument (e.g. ``port=0``); they win over ``config``.

        Raises
        ------
        InputError
            No recording is given, or (from the constructor) a bad rate or calibration.
        """
        if not config.recording and "recording" not in overrides:
            raise InputError(config_path or "[playback]", "no recording given")
        options: dict[str, object] = {
            "recording": resolve_path(config.recording, config_path),
            "host": config.host,
            "port": config.port,
            "rate": config.rate,
            "loop": config.loop,
            "calibration": resolve_path(config.calibration, config_path)
            if config.calibration
            else None,
            "image_device": config.image_device,
            "reference_frame": config.reference_frame,
            "allow": config.allow,
            "wait_for_client": config.wait_for_client,
            "send_invalid_transforms": config.send_invalid_transforms,
            "keepalive_s": config.keepalive_s,
            "max_clients": config.max_clients,
            "send_queue_messages": config.send_queue_messages,
            "send_timeout_s": config.send_timeout_s,
        }
        options.update(overrides)
        return cls(**options)  # type: ignore[arg-type]

    # -- properties ------------------------------------------------------------------------
    @property
    def host(self) -> str:
        """The interface it listens on."""
        return self.server.host

    @property
    def port(self) -> int:
        """The listening port (the real one after :meth:`connect` when created with 0)."""
        return self.server.port

    @property
    def frame_count(self) -> int:
        """Frames in the recording (0 before :meth:`connect` reads it)."""
        return len(self._sequence) if self._sequence is not None else 0

    def link_stats(self) -> LinkStats:
        """Message counters over all clients (sent, dropped for slow clients...)."""
        return self.server.stats()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the playback has ended.

        Parameters
        ----------
        timeout_s
            Longest wait, s (None: no limit; with ``loop`` the playback ends only when
            closed).

        Returns
        -------
        bool
            True once it ended: played to the end (state ``finished``), failed
            (:attr:`failure` says why) or closed (by another thread too); False after
            ``timeout_s``.
        """
        return self._done.wait(timeout_s)

    # -- Device ----------------------------------------------------------------------------
    def _connect(self) -> None:
        from usnav.io.sequence import read_sequence

        sequence = read_sequence(self.recording)
        if len(sequence) == 0:
            sequence.close()
            raise InputError(self.recording, "has no frames to play")
        if (
            len(sequence) == 1
            and len(tuple(sequence.frame_shape)) >= 3
            and (not sequence.transform_names)
        ):
            sequence.close()
            raise InputError(
                self.recording,
                "is a 3D volume, not a tracked sweep",
                "replay a recording of 2D frames (.igs.mha with per-frame transforms)",
            )
        if self.calibration is not None:
            try:  # its ImageToProbe would be sent with images of a size it does not hold for
                self.calibration.check_image_size(sequence.image_size, self.recording)
                self.calibration.check_pixel_spacing(sequence.spacing, self.recording)
            except ConfigError:
                sequence.close()
                raise
        timestamps = np.asarray(sequence.timestamps, dtype=np.float64)
        if not np.all(np.isfinite(timestamps)):
            bad = int(np.count_nonzero(~np.isfinite(timestamps)))
            sequence.close()
            raise InputError(
                self.recording,
                f"{bad} of {len(timestamps)} frame(s) have no finite Timestamp, so the "
                "frames cannot be paced or stamped",
                "give every frame a Seq_FrameNNNN_Timestamp (s)",
            )
        if np.any(timestamps < 0):
            # a relative clock that starts before 0: OpenIGTLink's stamps are unsigned, and
            # only differences matter to a receiver; the clock is moved to start at 0
            log.info(
                "%s: timestamps start at %.6f s; sent from 0", self.recording, timestamps.min()
            )
            timestamps = timestamps - timestamps.min()
        self._warn_if_calibration_differs(sequence)
        # a usnav recording's frames are paired at the probe's lag (its header says which):
        # their poses are sent stamped at t + lag, as the tracker sent them, so that a client
        # pairing at that lag gets them back, not the pose of t + 2·lag
        try:
            self._paired_lag_s = sequence.paired_tracker_lag_s
        except InputError:
            sequence.close()
            raise
        if self._paired_lag_s < 0 and timestamps.min() + self._paired_lag_s < 0:
            timestamps = timestamps - (timestamps.min() + self._paired_lag_s)
        self._sequence = sequence
        self._timestamps = timestamps
        try:
            self.server.start()
        except UsnavError:
            sequence.close()
            raise
        self._set_state(DeviceState.LISTENING, f"on {self.host}:{self.port}")

    def _warn_if_calibration_differs(self, sequence) -> None:
        """Say once when the file carries an ``ImageToProbe`` that the given calibration
        replaces and the two place the image's centre apart."""
        if self.image_to_probe is None or "ImageToProbe" not in sequence.transform_names:
            return
        first = sequence.frame(0)
        stored = first.transforms.get("ImageToProbe")
        if stored is None:
            return
        centre = np.array([first.cols / 2, first.rows / 2, 0.0, 1.0])
        apart = float(np.linalg.norm((stored.matrix - self.image_to_probe) @ centre))
        if apart > 0.01:
            log.warning(
                "%s: the file's ImageToProbe and the calibration given place the image centre "
                "%.2f mm apart; the calibration given is used",
                self.recording,
                apart,
            )

    def _start(self) -> None:
        with self._play_lock:
            self._paused.clear()
            if self._thread is None:
                self._thread = threading.Thread(target=self._play, name=f"{self.name}", daemon=True)
                self._thread.start()
            elif self._state is DeviceState.STOPPED:
                # stopped before the first client came: still waiting for it
                resumed = DeviceState.STREAMING if self._playing else DeviceState.LISTENING
                self._set_state(resumed, "resumed")

    def _stop(self) -> None:
        with self._play_lock:
            self._paused_at = time.monotonic()
            self._paused.set()
            self._set_state(DeviceState.STOPPED, "paused")

    def _close(self) -> None:
        self._halt.set()
        self._paused.clear()
        # the server first: its connections closing end a player waiting for room in a
        # slow client's queue (up to send_timeout_s, 5 s, with rate "max"), which close()
        # waited out
        self.server.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.send_timeout_s + 2)
        if self._sequence is not None:
            self._sequence.close()
        self._done.set()

    # -- the player ------------------------------------------------------------------------
    def _play(self) -> None:
        try:
            self._play_loop()
        except Exception as exc:  # the player thread must report, not vanish
            if isinstance(exc, UsnavError):  # e.g. a frame damaged in the file: say which
                log.info("%s: playback stopped: %s", self.name, exc)
            else:
                log.exception("%s: playback failed", self.name)
            self.failure = exc
            self._set_state(DeviceState.FINISHED, f"failed: {exc}")
            self._done.set()

    def _play_loop(self) -> None:
        assert self._sequence is not None
        if self.wait_for_client:
            while not self._halt.is_set() and not self.server.wait_for_clients(1, 0.2):
                pass
        if self._halt.is_set():
            return
        # Give new clients a moment to say which header version they speak (a v2 client's
        # first message), so even the first frames carry their metadata.
        greeting_deadline = time.monotonic() + _GREETING_S
        while time.monotonic() < greeting_deadline and not self._halt.is_set():
            if all(n > 0 for _, n in self.server.client_versions().values()):
                break
            time.sleep(0.01)
        with self._play_lock:
            self._playing = True
            if not self._paused.is_set():  # stop() before the first client: stays STOPPED
                self._set_state(DeviceState.STREAMING, "playing")
        # stamps and pacing follow the device's clock: the file's timestamps, run on past a
        # step back (a restart of the recorded server), which the raw ones made a burst of
        t, period = device_clock(self._timestamps)
        n = len(t)
        length = float(t[-1] - t[0]) + period
        wait_s = self.send_timeout_s if self.rate == "max" else 0.0
        round_offset = 0.0
        # frame numbers run on each pass too (a device numbers on), as the timestamps do
        numbers = np.asarray(self._sequence.frame_numbers, dtype=np.int64)
        number_span = int(numbers.max() - numbers.min()) + 1 if numbers.size else 0
        number_offset = 0
        wall_start = time.monotonic()
        last_seen: dict[str, np.ndarray] = {}  # each transform's last matrix, for gaps
        while not self._halt.is_set():
            for i in range(n):
                while True:
                    if self._halt.is_set():
                        return
                    if self._paused.is_set():
                        while self._paused.is_set() and not self._halt.is_set():
                            time.sleep(0.02)
                        # the device's clock runs on while it is stopped, as a scanner's
                        # does: the frames after it are stamped later by the pause (a display
                        # judges a frame's age by that clock, usnav.pipeline.arrival)
                        if self.stats.frames_sent == 0:  # stopped before it played: from t[0]
                            wall_start = time.monotonic()
                        else:
                            paused_s = time.monotonic() - self._paused_at
                            speed = 1.0 if self.rate == "max" else float(self.rate)
                            round_offset += paused_s * speed
                    stamp = float(t[i]) + round_offset
                    if self.rate != "max":
                        due = wall_start + (stamp - t[0]) / float(self.rate)
                        delay = due - time.monotonic()
                        if delay > 0 and self._halt.wait(delay):
                            return
                    if not self._paused.is_set():
                        break  # else stop() came while it waited: not sent until resumed
                # a PLUS server sends MF images (it turns them on input); the calibration
                # that places them is defined on MF pixels
                frame = _mark_absent_transforms(frame_in_mf(self._sequence.frame(i)), last_seen)
                if "UltrasoundImageType" not in frame.fields:
                    # the header's image type (RF_REAL...), so a recording of the replay does
                    # not take RF for B-mode: the recorder writes the server's word
                    frame = replace(
                        frame,
                        fields={**frame.fields, "UltrasoundImageType": self._sequence.image_type},
                    )
                if number_offset:
                    frame = replace(frame, frame_number=frame.frame_number + number_offset)
                messages = frame_messages(
                    frame,
                    timestamp=stamp,
                    image_device=self.image_device,
                    reference_frame=self.reference_frame,
                    image_to_probe=self.image_to_probe,
                    send_invalid_transforms=self.send_invalid_transforms,
                    transform_lag_s=self._paired_lag_s,
                )
                # a client that joins while playing gets frames once it said it speaks v2
                # (or after _GREETING_S), not its first ones without their metadata
                if self.server.broadcast(messages, wait_s=wait_s, hold_new_s=_GREETING_S) == 0:
                    self.stats.frames_without_client += 1
                self.stats.frames_sent += 1
            self.stats.loops += 1
            if not self.loop:
                break
            round_offset += length
            number_offset += number_span
        self.server.flush(self.send_timeout_s)
        self._set_state(DeviceState.FINISHED, f"{self.stats.frames_sent} frames sent")
        self._done.set()


def run_playback(
    server: PlaybackServer,
    on_listening: Callable[[PlaybackServer], None] | None = None,
    stop: threading.Event | None = None,
) -> PlaybackStats:
    """Serve until the recording ends (forever with ``loop``), ``stop`` is set or Ctrl-C;
    always closes.

    Parameters
    ----------
    server
        The playback to run (not yet connected).
    on_listening
        Called once the server listens, with the server (e.g. to print its port).
    stop
        Set to end the playback early (looked at every 50 ms); the stats so far are returned.

    Raises
    ------
    UsnavError
        The player stopped early on a problem a user can fix (e.g. a frame damaged in the
        recording); it is raised here, after closing, so the command fails with that message.
    """
    try:
        server.connect()
        if on_listening is not None:
            on_listening(server)
        server.start()
        while not server.wait(0.05):
            if stop is not None and stop.is_set():
                break
    finally:
        server.close()
    if server.failure is not None:
        raise server.failure
    return server.stats


# -- subprocess ----------------------------------------------------------------------------
_LISTENING = re.compile(r"listening on (\S+):(\d+)")


class PlaybackProcess:
    """``usnav replay`` running in another process (see :func:`serve_in_subprocess`)."""

    def __init__(
        self, process: subprocess.Popen, host: str, port: int, readers: list[threading.Thread]
    ):
        self.process = process
        self.host = host
        self.port = port
        self._readers = readers

    @property
    def running(self) -> bool:
        """Whether the ``usnav replay`` process has not exited yet."""
        return self.process.poll() is None

    def stop(self, timeout_s: float = 5.0) -> int:
        """Ask it to stop (SIGINT, like Ctrl-C), then kill it after ``timeout_s`` (s); returns
        the exit status (130 after a clean stop)."""
        if self.running:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                # SIGTERM would only ask again, as SIGINT did
                self.process.kill()
        return self._reap(timeout_s)

    def kill(self) -> int:
        """Kill it at once (SIGKILL: a crashed server, as a test of the client)."""
        if self.running:
            self.process.kill()
        return self._reap(5.0)

    def wait(self, timeout_s: float | None = None) -> int:
        """Wait for it to exit by itself (e.g. at the end of a recording without loop)."""
        self.process.wait(timeout_s)
        return self._reap(5.0)

    def _reap(self, timeout_s: float) -> int:
        code = self.process.wait(timeout_s)
        for reader in self._readers:  # they end at EOF of the pipes
            reader.join(timeout_s)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        return code

    def __enter__(self) -> PlaybackProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_in_subprocess(
    recording: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    rate: float | str = 1.0,
    loop: bool = False,
    calibration: str | Path | None = None,
    wait_for_client: bool = True,
    extra_args: SequenceABC[str] = (),
    startup_timeout_s: float = 30.0,
) -> PlaybackProcess:
    """Start ``usnav replay`` in a new process and return once it listens.

    An exception while it starts (Ctrl-C) kills the process before it propagates.

    Parameters
    ----------
    recording, host, port, rate, loop, calibration, wait_for_client
        As for :class:`PlaybackServer` (port 0: a free port, read it from ``.port``).
    extra_args
        More ``usnav replay`` options.
    startup_timeout_s
        Longest wait for the server to listen.

    Raises
    ------
    UsnavError
        The process exited or did not listen in time (its error output is in the message).
    """
    command = [sys.executable, "-m", "usnav", "replay", str(recording), "--host", host]
    command += ["--port", str(port), "--rate", str(rate)]
    if loop:
        command.append("--loop")
    if calibration is not None:
        command += ["--calibration", str(calibration)]
    if not wait_for_client:
        command.append("--no-wait")
    command += list(extra_args)
    # the child ends with this process, even one killed by SIGKILL (usnav/lifeline.py): a
    # `--loop` server left behind streamed forever
    env = child_env(PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    found: list[tuple[str, int]] = []

    def read_stdout() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            match = _LISTENING.search(line)
            if match and not found:
                found.append((match.group(1), int(match.group(2))))

    stdout_reader = threading.Thread(target=read_stdout, daemon=True)
    stdout_reader.start()
    deadline = time.monotonic() + startup_timeout_s
    try:
        while not found and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    except BaseException:
        # Ctrl-C while it starts: the caller never gets the process to stop, and a `--loop`
        # server outlives a parent that goes on (the lifeline ends it only with the parent)
        with contextlib.suppress(OSError):
            process.kill()
        process.wait(5)
        stdout_reader.join(5)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
        raise
    if not found:
        with contextlib.suppress(OSError):
            process.kill()
        process.wait(5)
        error = process.stderr.read() if process.stderr else ""
        stdout_reader.join(5)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
        raise UsnavError(
            f"usnav replay {recording} did not start listening: "
            + (error.strip().splitlines()[-1] if error.strip() else "no output")
        )
    # Keep draining stderr so the child never blocks on a full pipe.
    stderr_reader = threading.Thread(
        target=lambda: process.stderr.read() if process.stderr else None, daemon=True
    )
    stderr_reader.start()
    return PlaybackProcess(process, found[0][0], found[0][1], [stdout_reader, stderr_reader])
