"""Probe client: tracked ultrasound frames from a PLUS server or any OpenIGTLink device.

The client receives IMAGE messages (device ``Image_Reference`` by default, whose matrix is
``ImageToReference`` including mm/pixel, centre convention on the wire) and TRANSFORM messages
(device name = transform name, ``TransformStatus`` in the v2 metadata), and assembles one
:class:`~usnav.frames.TrackedFrame` per image:

- the image's embedded matrix becomes the transform named by ``image_transform``;
- every TRANSFORM stream is paired to the image's timestamp plus the time offset (temporal
  calibration: the pose for an image stamped *t* is the tracker's pose at *t* + offset): an
  exact timestamp match is used as is, otherwise the two bracketing samples are interpolated
  (:class:`usnav.transforms.PoseSeries`: slerp + linear), or the nearest sample is held if it
  is within ``max_interpolation_gap_s``; anything else is MISSING;
- an image waits at most ``pairing_wait_s`` for the TRANSFORM samples that bracket it;
- a watchdog marks a transform MISSING when it has not been updated for ``watchdog_s``
  (SlicerIGT's watchdog: 0.5 s) — visible per transform in :meth:`ProbeClient.transform_states`;
- the connection state (connecting / streaming / no-signal) is the device state.

Frames are delivered in order to a bounded queue (read with :meth:`ProbeClient.frames` or
:meth:`ProbeClient.get_frame`; a full queue drops the oldest frame and counts it) and to any
callbacks registered with :meth:`ProbeClient.on_frame`.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from usnav.calibration.stage import CalibrationStage
from usnav.config.calibration import CalibrationFile, load_calibration
from usnav.devices.base import Device, DeviceState
from usnav.devices.config import ProbeConfig, load_probe_config, resolve_path
from usnav.errors import ConfigError, ExtrapolationError, TransformError
from usnav.frames import TrackedFrame, TrackedTransform, TransformStatus, frame_in_mf
from usnav.igtl import IgtlClient, LinkState, LinkStats
from usnav.igtl.codec import (
    STATUS_OK,
    ImageContent,
    Message,
    StatusContent,
    TrackingDataContent,
    TransformContent,
)
from usnav.transforms.matrices import may_scale, rigid_poses
from usnav.transforms.names import split_name
from usnav.transforms.series import SAME_SAMPLE_S, PoseSeries

log = logging.getLogger("usnav.devices.probe")

_SAMPLES_KEPT = 512
_MAX_STREAMS = 64
_MAX_SEEN_NAMES = 32  # device names remembered per message type (bounded against a noisy peer)


@dataclass
class ProbeStats:
    """What the client received and delivered.

    ``images``: IMAGE messages of the configured device received. ``frames_delivered``: frames
    put in the queue. ``frames_dropped``: frames pushed out of a full queue (the consumer was too
    slow). ``frames_missed``: gaps in the server's frame numbers (lost before reaching us).
    ``images_bad_orientation``: images whose ``UltrasoundImageOrientation`` could not be turned
    to MF (delivered marked invalid: no overlay is drawn on them). ``images_not_2d``: IMAGEs
    of the configured device with more than one slice (a 3D volume), refused: a frame is one
    2D image, and a (slices, rows, cols) array would be read as rows, cols and channels.
    """

    images: int = 0
    transforms: int = 0
    frames_delivered: int = 0
    frames_dropped: int = 0
    frames_missed: int = 0
    images_bad_orientation: int = 0
    images_not_2d: int = 0
    other_messages: collections.Counter[str] = field(default_factory=collections.Counter)
    reconnects: int = 0


@dataclass
class _Sample:
    t_device: float
    matrix: np.ndarray
    status: TransformStatus
    rigid: bool


@dataclass
class _Stream:
    samples: collections.deque[_Sample] = field(
        default_factory=lambda: collections.deque(maxlen=_SAMPLES_KEPT)
    )
    last_update: float = -1e18  # time.monotonic() of the last sample
    state: TransformStatus = TransformStatus.MISSING


@dataclass
class _Pending:
    frame: TrackedFrame
    arrived: float  # monotonic
    #: the status of each transform the IMAGE's metadata gave (``<Name>TransformStatus``)
    said: dict[str, TransformStatus] = field(default_factory=dict)


#: status words that say no more than TransformStatus itself
_PLAIN_WORDS = frozenset(s.value for s in TransformStatus)


def _status_from_metadata(metadata: dict[str, str], name: str) -> TransformStatus | None:
    for key in (f"{name}TransformStatus", f"{name}Status", "TransformStatus"):
        if key in metadata:
            return TransformStatus.parse(metadata[key])
    if metadata.get("TransformValid") == "0":
        return TransformStatus.INVALID
    return None


def _calibration_key(config_path: str | Path | None) -> str:
    return f"{config_path}: probe.calibration" if config_path else "probe.calibration"


def load_device_calibration(
    config: ProbeConfig, config_path: str | Path | None = None
) -> CalibrationFile | None:
    """The calibration a device file names (``[probe] calibration``), or None.

    Parameters
    ----------
    config
        The ``[probe]`` options.
    config_path
        The device file they came from: a relative path is looked up beside it.

    Raises
    ------
    ConfigError
        The file cannot be read, naming the device file's key and the path tried.
    """
    if not config.calibration:
        return None
    path = resolve_path(config.calibration, config_path)
    try:
        return load_calibration(path)
    except ConfigError as exc:
        raise ConfigError(
            _calibration_key(config_path),
            f"{path}: {exc.problem}",
            "give the calibration file's path, absolute or relative to the device file",
        ) from exc


class ProbeClient(Device):
    """Tracked frames from an OpenIGTLink server.

    Parameters
    ----------
    config
        The ``[probe]`` options (defaults: 127.0.0.1:18944, ``Image_Reference``).
    calibration
        The command's calibration (e.g. ``run --calibration``): its temporal section gives the
        time offset when ``time_offset_s`` is not set. The device file's own
        ``config.calibration`` is always loaded (a missing file is refused); its tracker lag
        is used when it has one, and must agree with this one's.
    config_path
        The device file ``config`` came from (relative paths are looked up beside it).
    name
        For logs.

    Examples
    --------
    >>> with ProbeClient(ProbeConfig(port=18944, transforms=["ProbeToReference"])) as probe:
    ...     for frame in probe.frames(timeout_s=5.0):
    ...         print(frame.frame_number, frame.transform("ProbeToReference").status)
    """

    def __init__(
        self,
        config: ProbeConfig | None = None,
        *,
        calibration: CalibrationFile | None = None,
        name: str = "probe",
        config_path: str | Path | None = None,
    ):
        super().__init__(name)
        self.config = config or ProbeConfig()
        device_calibration = load_device_calibration(self.config, config_path)
        #: the device file's own calibration (None: it names none)
        self.device_calibration = device_calibration
        lag = self.config.time_offset_s
        if calibration is None:
            calibration = device_calibration
        elif lag is None and device_calibration is not None and device_calibration.temporal:
            # the device file's calibration keeps the tracker lag of this device; the command's
            # own calibration (run --calibration) may carry one too: they must agree
            lag = device_calibration.tracker_lag_s
            if calibration.temporal and not math.isclose(
                calibration.tracker_lag_s, lag, abs_tol=1e-6
            ):
                raise ConfigError(
                    _calibration_key(config_path),
                    f"its tracker lag {lag:+.4f} s differs from the "
                    f"{calibration.tracker_lag_s:+.4f} s of {calibration.where}, the calibration "
                    "the command was given",
                    "keep the tracker lag in one of the two files",
                )
        # the tracker lag is the calibration stage's: streams are sampled at its pose_time()
        self.calibration_stage = CalibrationStage.from_calibration(calibration, tracker_lag_s=lag)
        self.time_offset_s = self.calibration_stage.tracker_lag_s
        mismatch = calibration.spatial_lag_mismatch(self.time_offset_s) if calibration else None
        if mismatch:
            log.warning("%s: %s", name, mismatch)
        self.stats = ProbeStats()
        self._queue: queue.Queue[TrackedFrame | None] = queue.Queue(maxsize=self.config.frame_queue)
        self._callbacks: list[Callable[[TrackedFrame], None]] = []
        self._transform_listeners: list[Callable[[str, TransformStatus], None]] = []
        self._streams: dict[str, _Stream] = {n: _Stream() for n in self.config.transforms}
        self._warned_not_rigid: set[str] = set()  # names already warned of (once each)
        self._pending: collections.deque[_Pending] = collections.deque()
        self._lock = threading.RLock()
        self._process_lock = threading.Lock()
        self._last_image = -1e18
        self._last_frame_number: int | None = None
        self._image_counter = 0
        self._link_state = LinkState.IDLE
        self._seen: dict[str, collections.Counter[str]] = {
            "IMAGE": collections.Counter(),
            "TRANSFORM": collections.Counter(),
        }
        self._connected_at: float | None = None
        self._hint_logged = False
        self._not_2d: str | None = None  # why the configured IMAGE was refused, if it was
        self._tick_stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._client = IgtlClient(
            self.config.host,
            self.config.port,
            on_message=self._on_message,
            on_state=self._on_link_state,
            header_version=self.config.header_version,
            receive_timeout_s=self.config.receive_timeout_s,
            reconnect=self.config.reconnect.policy(),
            max_message_bytes=self.config.max_message_bytes,
        )

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: object) -> ProbeClient:
        """A client configured by the ``[probe]`` section of ``devices/<name>.toml``.

        Parameters
        ----------
        path
            The device file (relative paths in it are looked up beside it).
        **kwargs
            ``calibration``, ``name``: as for :class:`ProbeClient`.

        Raises
        ------
        ConfigError
            The file does not validate (naming the key and what is allowed).
        """
        return cls(load_probe_config(path), config_path=path, **kwargs)  # type: ignore[arg-type]

    # -- public API ------------------------------------------------------------------------
    @property
    def link_state(self) -> LinkState:
        """State of the TCP link (connecting / connected)."""
        return self._link_state

    def on_frame(self, callback: Callable[[TrackedFrame], None]) -> None:
        """Call ``callback(frame)`` for every assembled frame (in the receiving thread; keep it
        short). Frames still go to the queue."""
        self._callbacks.append(callback)

    def add_transform_listener(self, listener: Callable[[str, TransformStatus], None]) -> None:
        """Call ``listener(name, status)`` when the watchdog state of a transform changes."""
        self._transform_listeners.append(listener)

    def transform_states(self) -> dict[str, TransformStatus]:
        """Watchdog view: OK if the transform was updated within ``watchdog_s``, else MISSING
        (or INVALID when its latest sample was INVALID)."""
        with self._lock:
            return {name: s.state for name, s in self._streams.items()}

    def get_frame(self, timeout_s: float | None = None) -> TrackedFrame | None:
        """The next frame, in order.

        Valid in every state: before :meth:`start` it waits like any other call (the frames
        come once another thread starts the device); after :meth:`close` (also by another
        thread while this call waits) it returns the frames still queued, then None at once.

        Parameters
        ----------
        timeout_s
            Longest wait, s (None: until a frame comes or the device is closed).

        Returns
        -------
        TrackedFrame or None
            The frame (``frame_number``; ``t_device``: the sender's timestamp, s;
            ``t_received``: host time, s since the epoch; each transform with its status), or
            None after ``timeout_s`` without one, or once closed and drained.
        """
        if self._state is DeviceState.CLOSED:
            timeout_s = 0.0  # nothing will come: what is queued, then None
        try:
            frame = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return None
        if frame is None:  # close() woke the readers: pass it on to the next one
            self._wake_readers()
        return frame

    def frames(self, timeout_s: float | None = None) -> Iterator[TrackedFrame]:
        """Yield frames (as :meth:`get_frame`) until the device is closed and the frames
        queued before are yielded, or until ``timeout_s`` (s) passes without a frame (None:
        wait until closed)."""
        last = time.monotonic()
        while True:
            frame = self.get_frame(0.1)
            if frame is not None:
                last = time.monotonic()
                yield frame
            else:
                closed = self.state is DeviceState.CLOSED
                if closed or (timeout_s is not None and time.monotonic() - last >= timeout_s):
                    return

    def _wake_readers(self) -> None:
        # a None in the queue ends a get_frame() waiting without a timeout; a full queue
        # has no waiting reader to wake
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)

    def link_stats(self) -> LinkStats:
        """Message counters of the connection(s): received, dropped by reason, sent."""
        return self._client.link_stats()

    @property
    def last_error(self) -> str | None:
        """Why the last connection attempt or connection ended."""
        return self._client.last_error

    def seen_devices(self) -> dict[str, dict[str, int]]:
        """Device names received so far, by message type (IMAGE, TRANSFORM), with counts."""
        with self._lock:
            return {kind: dict(names) for kind, names in self._seen.items()}

    def device_hint(self) -> str | None:
        """What to set in the device file when the expected device names never arrived.

        None while nothing arrived at all (a link problem, reported by :attr:`last_error`) or
        when the configured IMAGE and every configured TRANSFORM have arrived. When the
        configured IMAGE arrived only as 3D volumes (refused), or no intact IMAGE arrived but
        malformed messages were dropped (a CRC left 0), and no frame was delivered, the
        sentence that says so. Otherwise one
        sentence naming the IMAGE and TRANSFORM device names that did arrive and the
        ``[probe]`` key to set (``image_device``, ``transforms``).
        """
        seen = self.seen_devices()
        images, transforms = seen["IMAGE"], seen["TRANSFORM"]
        wanted_image = self.config.image_device
        dropped = self.link_stats().dropped_in
        if dropped and wanted_image not in images and self.stats.frames_delivered == 0:
            # a peer whose every message is refused (a CRC left 0, a wrong CRC) is streaming:
            # say so, rather than ask whether the server runs (the log line is easy to miss)
            reasons = ", ".join(f"{reason} ({n})" for reason, n in dropped.most_common())
            crc = (
                " (OpenIGTLink has no 'CRC not computed' value: a body's CRC-64 must be sent)"
                if "bad CRC" in dropped
                else ""
            )
            return (
                f"messages from the server were dropped as malformed: {reasons}{crc}; "
                f"no IMAGE named '{wanted_image}' was received intact"
            )
        if not images and not transforms:
            return None
        if self._not_2d is not None and self.stats.frames_delivered == 0:
            return self._not_2d
        missing = [n for n in self.config.transforms if n not in transforms]
        if wanted_image in images and not missing:
            return None
        problems = []
        if wanted_image not in images:
            problems.append(f"no IMAGE named '{wanted_image}' arrived")
        if missing:
            problems.append("no TRANSFORM named " + ", ".join(f"'{n}'" for n in missing))
        fixes = []
        note = ""
        if wanted_image not in images:
            if images:
                fixes.append(f'image_device = "{max(images, key=images.__getitem__)}"')
            else:
                fixes.append(
                    "image_device = the server's IMAGE name (this server sent no IMAGE: usnav "
                    "needs a tracked-ultrasound stream, a tracker alone is not enough)"
                )
        if missing:
            # only names the [probe] section accepts (<From>To<To>, ≤ 20 characters): a
            # TrackerServer's 'Tracker' was suggested, and the device file then refused it
            usable = [n for n in transforms if _is_transform_name(n)]
            names = ", ".join(f'"{n}"' for n in usable) if usable else "..."
            fixes.append(f"transforms = [{names}]")
            unusable = [n for n in transforms if n not in usable]
            if unusable:
                verb = (
                    "is not a transform name" if len(unusable) == 1 else "are not transform names"
                )
                note = (
                    f"; {', '.join(repr(n) for n in sorted(unusable))} {verb} (<From>To<To>, "
                    "at most 20 characters, e.g. ProbeToReference): name the tool so in the "
                    "server's configuration"
                )
        return (
            f"{' and '.join(problems)}; seen: IMAGE {_names(images)}, TRANSFORM "
            f"{_names(transforms)}; set {' and '.join(fixes)} in the [probe] section of the "
            f"device file (--config / --device, see devices/plus-server.toml){note}"
        )

    def send(self, message: Message) -> bool:
        """Send a message to the server (e.g. a STRING command); False if not connected."""
        return self._client.send(message)

    # -- Device ----------------------------------------------------------------------------
    def _connect(self) -> None:
        self._tick_stop.clear()
        self._ticker = threading.Thread(
            target=self._tick_loop, name=f"{self.name}-watchdog", daemon=True
        )
        self._ticker.start()
        self._client.start()

    def _start(self) -> None:
        if self._state is DeviceState.STOPPED:
            connected = self._link_state is LinkState.CONNECTED
            self._set_state(DeviceState.NO_SIGNAL if connected else DeviceState.CONNECTING)

    def _stop(self) -> None:
        self._set_state(DeviceState.STOPPED, "stopped by the user")

    def _close(self) -> None:
        self._tick_stop.set()
        self._client.stop()
        if self._ticker is not None and self._ticker is not threading.current_thread():
            self._ticker.join(timeout=2)
        self._wake_readers()

    # -- link events -----------------------------------------------------------------------
    def _on_link_state(self, state: LinkState) -> None:
        previous, self._link_state = self._link_state, state
        self._connected_at = time.monotonic() if state is LinkState.CONNECTED else None
        if state is LinkState.CONNECTING:
            if previous is LinkState.CONNECTED:
                self.stats.reconnects += 1
            # Deliver what arrived before the link dropped, paired with what there is.
            self._process(time.monotonic(), force=True)
            self._last_image = -1e18
            # A restarted server (or a replay from its start) may reuse earlier device times:
            # poses from the old connection must never be paired with new images.
            with self._lock:
                for stream in self._streams.values():
                    stream.samples.clear()
            if self._state is not DeviceState.STOPPED:
                self._set_state(DeviceState.CONNECTING, self._client.last_error or "")
        elif state is LinkState.CONNECTED and self._state is not DeviceState.STOPPED:
            self._set_state(DeviceState.NO_SIGNAL, f"connected to {self._client.peer}")

    def _on_message(self, message: Message) -> None:
        content = message.content
        if isinstance(content, TrackingDataContent) or message.type == "POSITION":
            # a tracker's poses as TDATA / QTDATA (one per tool) or POSITION (device name =
            # transform name), as PLUS and trackers may send them: used as TRANSFORMs (until
            # session 35 they were dropped as "unknown type", the frames left untracked)
            for name, pose in _poses_of(message):
                self._on_message(
                    Message(
                        "TRANSFORM",
                        name,
                        TransformContent(pose),
                        message.timestamp,
                        message.metadata,
                        message.version,
                    )
                )
            return
        now = time.monotonic()
        names = self._seen.get(message.type)
        if names is not None and (message.device_name in names or len(names) < _MAX_SEEN_NAMES):
            with self._lock:
                names[message.device_name] += 1
        if message.type == "TRANSFORM" and isinstance(message.content, TransformContent):
            self._add_transform(message, now)
        elif message.type == "IMAGE" and message.device_name == self.config.image_device:
            assert isinstance(message.content, ImageContent)
            self._add_image(message, now)
        else:
            self.stats.other_messages[message.type] += 1
            if isinstance(message.content, StatusContent) and message.content.code != STATUS_OK:
                self._server_status(message.device_name, message.content)
        self._process(now)

    def _server_status(self, device: str, status: StatusContent) -> None:
        """A STATUS other than OK from the server (a scanner's "probe unplugged", PLUS's
        device errors): counted and logged once per device, code and text, so an OR engineer
        sees what the server said even while frames keep arriving (it changes no state)."""
        words = " ".join(w for w in (status.error_name, status.message) if w).strip()
        key = f"STATUS {status.code} from {device!r}" + (f": {words}" if words else "")
        self.stats.other_messages[key] += 1
        if self.stats.other_messages[key] == 1:
            log.warning("%s: the server sent %s", self.config.host, key)

    def _add_transform(self, message: Message, now: float) -> None:
        matrix = message.content.matrix  # type: ignore[union-attr]
        status = _status_from_metadata(message.metadata, message.device_name)
        finite = bool(np.all(np.isfinite(matrix)))
        if status is None:
            status = TransformStatus.OK if finite else TransformStatus.INVALID
        elif not finite:
            status = TransformStatus.INVALID
        # rigid within 1e-3 (interpolated as a rotation); rigid_poses: ~3x cheaper than
        # is_rigid's allclose, and this runs for every TRANSFORM received
        rigid = finite and bool(rigid_poses(matrix, tol=1e-3))
        if (
            status is TransformStatus.OK
            and not rigid  # the looser test below only for the rare pose that fails this one
            and not may_scale(message.device_name)
            and not rigid_poses(matrix)
        ):
            # a tracker pose with a scale or shear places the image wrongly: not a pose
            status = TransformStatus.INVALID
            self.stats.other_messages["TRANSFORM not rigid (used as INVALID)"] += 1
            if message.device_name not in self._warned_not_rigid:
                self._warned_not_rigid.add(message.device_name)
                log.warning(
                    "%s: TRANSFORM %s is not rigid (a scale or shear in its rotation): its "
                    "frames are used as tracking INVALID; check the tracker's tool definition",
                    self.config.host,
                    message.device_name,
                )
        sample = _Sample(message.timestamp, matrix, status, rigid)
        with self._lock:
            stream = self._streams.get(message.device_name)
            if stream is None:
                if len(self._streams) >= _MAX_STREAMS:  # bounded memory against a noisy peer
                    self.stats.other_messages["TRANSFORM beyond the stream limit"] += 1
                    return
                stream = self._streams[message.device_name] = _Stream()
            stream.samples.append(sample)
            stream.last_update = now
            self._set_stream_state(message.device_name, stream, status)
        self.stats.transforms += 1

    def _add_image(self, message: Message, now: float) -> None:
        content: ImageContent = message.content  # type: ignore[assignment]
        slices, rows, cols, _ = content.pixels.shape
        if slices > 1:
            # a frame is one 2D image: a volume's (slices, rows, cols) array would be read
            # downstream as (rows, cols, channels), silently wrong pixels and geometry
            self.stats.images_not_2d += 1
            if self._not_2d is None:
                self._not_2d = (
                    f"IMAGE '{message.device_name}' is a 3D volume ({cols}×{rows}×{slices} "
                    "voxels): usnav takes 2D ultrasound images, one slice per IMAGE; such "
                    "IMAGEs are refused (counted in stats.images_not_2d)"
                )
                log.warning("%s: %s", self.name, self._not_2d)
            return
        self.stats.images += 1
        self._image_counter += 1
        metadata = dict(message.metadata)
        number = self._image_counter
        if "FrameNumber" in metadata:
            with contextlib.suppress(ValueError):
                number = int(metadata["FrameNumber"])
        if self._last_frame_number is not None and number > self._last_frame_number + 1:
            self.stats.frames_missed += number - self._last_frame_number - 1
        self._last_frame_number = number
        transforms: dict[str, TrackedTransform] = {}
        name = self.config.image_transform
        if name:
            status = _status_from_metadata(metadata, name) or TransformStatus.OK
            if status is not TransformStatus.MISSING:  # a server that could not compute it
                transforms[name] = TrackedTransform(content.ijk_to_ras, status)
        orientation = metadata.pop("UltrasoundImageOrientation", "MF")
        image_ok = metadata.pop("ImageStatus", "OK").upper() == "OK"
        said = {
            key[: -len("TransformStatus")]: TransformStatus.parse(word)
            for key, word in metadata.items()
            if key.endswith("TransformStatus") and key != f"{name}TransformStatus"
        }
        for key in [k for k in metadata if k.endswith("TransformStatus") or k == "FrameNumber"]:
            word = metadata.pop(key)
            if key.endswith("TransformStatus") and word.strip().upper() not in _PLAIN_WORDS:
                # PLUS's finer word (OUT_OF_VIEW, REQ_TIMEOUT...): kept beside the status it
                # means, as the sequence reader keeps it, if the pairing agrees (_pair)
                metadata[key] = word
        frame = TrackedFrame(
            image=content.array,
            transforms=transforms,
            t_device=message.timestamp,
            t_received=time.time(),
            frame_number=number,
            orientation=orientation or "MF",
            image_ok=image_ok,
            fields=metadata,
        )
        try:
            # every stage after the device works on MF images, as PLUS turns them on input;
            # the IMAGE's own matrix placed the pixels as sent, so it turns with them
            frame = frame_in_mf(frame, image_transforms=(name,) if name else ())
        except ValueError as exc:
            self.stats.images_bad_orientation += 1
            if self.stats.images_bad_orientation == 1:
                log.warning("%s: %s; such frames are marked invalid", self.name, exc)
            frame.image_ok = False
        with self._lock:
            self._pending.append(_Pending(frame, now, said))
        self._last_image = now

    # -- assembly --------------------------------------------------------------------------
    def _ready(self, pending: _Pending, now: float) -> bool:
        if now - pending.arrived >= self.config.pairing_wait_s:
            return True
        target = self.calibration_stage.pose_time(pending.frame.t_device)
        # every stream it will be paired with, not only those configured: with a positive lag
        # the pose of t + lag arrives after the image, and pairing at once held the newest
        # pose (of t) as that of t + lag
        for stream in self._streams.values():
            if now - stream.last_update > self.config.watchdog_s:
                continue  # stale: will be MISSING, no point waiting
            if not stream.samples or stream.samples[-1].t_device < target - SAME_SAMPLE_S:
                return False
        return True

    def _process(self, now: float, *, blocking: bool = True, force: bool = False) -> None:
        # One thread at a time pops, pairs and delivers, so frames stay in order.
        if not self._process_lock.acquire(blocking=blocking):
            return
        try:
            ready: list[TrackedFrame] = []
            with self._lock:
                while self._pending and (force or self._ready(self._pending[0], now)):
                    pending = self._pending.popleft()
                    self._pair(pending.frame, now, pending.said)
                    ready.append(pending.frame)
            for frame in ready:
                self._deliver(frame)
        finally:
            self._process_lock.release()

    def _pair(
        self, frame: TrackedFrame, now: float, said: dict[str, TransformStatus] | None = None
    ) -> None:
        target = self.calibration_stage.pose_time(frame.t_device)
        gap = self.config.max_interpolation_gap_s
        said = said or {}
        for name, stream in self._streams.items():
            if name in frame.transforms:
                continue
            if not stream.samples:
                # never received: not in the frame (frame.transform(name) says MISSING); an
                # identity written into a recording would read as a real pose in Slicer,
                # which ignores statuses
                continue
            if now - stream.last_update > self.config.watchdog_s:
                last = stream.samples[-1]
                frame.transforms[name] = TrackedTransform(last.matrix, TransformStatus.MISSING)
                continue
            pose = _pose_at(stream.samples, target, gap, name)
            status = said.get(name, TransformStatus.OK)
            if status is not TransformStatus.OK:
                # the server said this frame's pose was not valid: a server that sends valid
                # transforms only (PLUS's SendValidTransformsOnly) sends none for it, and the
                # poses around it were interpolated into an OK one
                pose = TrackedTransform(pose.matrix, pose.status.combine(status))
            frame.transforms[name] = pose
        for key in [k for k in frame.fields if k.endswith("TransformStatus")]:
            paired = frame.transforms.get(key[: -len("TransformStatus")])
            if paired is None or TransformStatus.parse(frame.fields[key]) is not paired.status:
                del frame.fields[key]  # a word for another pose than the one paired

    def _deliver(self, frame: TrackedFrame) -> None:
        if self._state in (DeviceState.STOPPED, DeviceState.CLOSED) or self._closing:
            return
        queued = False
        if self.config.when_full == "wait":
            # Recording: hold the receiving thread (TCP back-pressure slows the server) for up
            # to half the receive timeout, then fall back to dropping the oldest frame.
            with contextlib.suppress(queue.Full):
                self._queue.put(frame, timeout=self.config.receive_timeout_s / 2)
                queued = True
        while not queued:
            try:
                self._queue.put_nowait(frame)
                queued = True
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.stats.frames_dropped += 1
                except queue.Empty:
                    pass
        self.stats.frames_delivered += 1
        if self._state is not DeviceState.STREAMING:
            self._set_state(DeviceState.STREAMING, "frames arriving")
        for callback in list(self._callbacks):
            try:
                callback(frame)
            except Exception:
                log.exception("%s: frame callback failed", self.name)

    def _set_stream_state(self, name: str, stream: _Stream, state: TransformStatus) -> None:
        if stream.state is state:
            return
        stream.state = state
        log.info("%s: transform %s is %s", self.name, name, state.value)
        for listener in list(self._transform_listeners):
            try:
                listener(name, state)
            except Exception:
                log.exception("%s: transform listener failed", self.name)

    def _tick_loop(self) -> None:
        while not self._tick_stop.wait(0.01):
            now = time.monotonic()
            self._process(now, blocking=False)
            with self._lock:
                for name, stream in self._streams.items():
                    if (
                        stream.state is not TransformStatus.MISSING
                        and now - stream.last_update > self.config.watchdog_s
                    ):
                        self._set_stream_state(name, stream, TransformStatus.MISSING)
            self._log_device_hint(now)
            silent = now - self._last_image > self.config.no_signal_s
            if self._state is DeviceState.STREAMING and silent:
                self._set_state(
                    DeviceState.NO_SIGNAL, f"no image for {self.config.no_signal_s:.1f} s"
                )

    def _log_device_hint(self, now: float) -> None:
        """Once per client: warn with :meth:`device_hint` after 2 s (or 2 × ``no_signal_s``)
        connected."""
        connected_at = self._connected_at
        if self._hint_logged or connected_at is None:
            return
        if now - connected_at < max(2.0, 2 * self.config.no_signal_s):
            return
        hint = self.device_hint()
        if hint is not None:
            self._hint_logged = True
            log.warning("%s: %s: %s", self.name, self._client.peer, hint)


def _poses_of(message: Message) -> list[tuple[str, np.ndarray]]:
    """(transform name, 4×4) of each pose a TDATA, QTDATA or POSITION message carries."""
    content = message.content
    if isinstance(content, TrackingDataContent):
        return [(e.name, e.matrix) for e in content.elements if e.name]
    if isinstance(content, TransformContent):
        return [(message.device_name, content.matrix)]
    return []


def _is_transform_name(name: str) -> bool:
    """Whether ``name`` is a transform name the ``[probe]`` section accepts."""
    try:
        split_name(name)
    except TransformError:
        return False
    return len(name) <= 20


def _names(counts: dict[str, int]) -> str:
    if not counts:
        return "none"
    return ", ".join(f"'{name}' ({n})" for name, n in sorted(counts.items()))


def _pose_at(
    samples: collections.deque[_Sample], t: float, max_gap_s: float, name: str
) -> TrackedTransform:
    """Pose of a transform stream at time ``t`` (see the module docstring)."""
    newest = samples[-1]
    if abs(newest.t_device - t) <= SAME_SAMPLE_S:
        return TrackedTransform(newest.matrix, newest.status)
    times = np.fromiter((s.t_device for s in samples), dtype=np.float64, count=len(samples))
    j = int(np.searchsorted(times, t))
    candidates = [k for k in (j - 1, j) if 0 <= k < len(samples)]
    for k in candidates:
        if abs(times[k] - t) <= SAME_SAMPLE_S:
            return TrackedTransform(samples[k].matrix, samples[k].status)
    try:
        if len(candidates) == 2:
            a, b = samples[candidates[0]], samples[candidates[1]]
            if a.rigid and b.rigid:
                series = PoseSeries(
                    np.array([a.t_device, b.t_device]),
                    np.stack([a.matrix, b.matrix]),
                    [a.status, b.status],
                    name,
                )
                return series.at(t, max_gap_s)
            nearest = a if t - a.t_device <= b.t_device - t else b
        else:
            nearest = samples[candidates[0]]
        if abs(nearest.t_device - t) > max_gap_s:
            raise ExtrapolationError(
                f"{name}: nearest sample {abs(nearest.t_device - t):.3f} s away"
            )
        return TrackedTransform(nearest.matrix, nearest.status)
    except ExtrapolationError:
        k = min(candidates, key=lambda i: abs(times[i] - t))
        return TrackedTransform(samples[k].matrix, TransformStatus.MISSING)
