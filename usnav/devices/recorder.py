"""Recorder: every frame of an OpenIGTLink stream into a PLUS sequence file.

The recorder is a :class:`~usnav.devices.probe.ProbeClient` (so it pairs transforms the same
way the pipeline does) feeding a crash-safe :class:`usnav.io.sequence.SequenceWriter`: each
frame is journaled as it arrives, so an interrupted recording (Ctrl-C, ``kill -9``, a full
disk) is readable up to its last complete frame (Ctrl-C and a full disk still finish the
file; after ``kill -9`` run ``usnav convert FILE.journal FILE``). The counts received /
written / dropped are returned so a user can verify nothing was lost (PlusLib #608).

While recording, the probe client holds back (TCP back-pressure) instead of dropping when the
writer falls behind; frames are dropped only if the writer stalls for more than half the
receive timeout.

A sequence file holds frames of one image size: when the size changes mid-stream (the depth
was changed on the scanner), :class:`SplitRecording` goes on in a new part file named by
:func:`next_part_path` (``case.igs.mha``, ``case-2.igs.mha``, ...). Both this recorder and the
live pipeline's write through it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from usnav.devices.base import DeviceState
from usnav.devices.config import ProbeConfig
from usnav.devices.probe import ProbeClient
from usnav.errors import InputError, UsnavError
from usnav.io.sequence_reader import PAIRED_LAG_FIELD

if TYPE_CHECKING:
    from usnav.frames import TrackedFrame
    from usnav.io.sequence import SequenceWriter


@dataclass
class RecordProgress:
    """What the live line shows."""

    frames: int
    fps: float
    dropped: int
    elapsed_s: float
    state: DeviceState
    path: Path | None = None  # the file being written (a new part after a size change)
    #: gaps in the server's frame numbers: lost before reaching usnav (not dropped by it)
    missed: int = 0


@dataclass
class RecordedPart:
    """One file of a recording: a sequence file holds frames of one image size.

    ``shape`` and ``dtype`` are the image's (None until a frame with an image arrived).
    """

    path: Path
    frames: int = 0
    shape: tuple[int, ...] | None = None
    dtype: str | None = None


@dataclass
class RecordResult:
    """The outcome of a recording.

    ``received``: frames assembled from the stream. ``written``: frames in the file.
    ``dropped``: received while recording but not written (the writer stalled so long that
    the queue overflowed, or a write failed); ``received`` = ``written`` + ``dropped``.
    ``missed``: gaps in the server's frame numbers (lost before reaching us).
    ``messages_dropped``: malformed messages by reason. ``stopped_by``: why it ended.
    ``parts``: the files written, ``path`` first, then one more each time the image size
    changed (see :class:`SplitRecording`); ``files`` lists their paths. ``warnings``: what
    a person should know about the recording (a header-v1 link's poses all marked OK).
    """

    path: Path
    received: int = 0
    written: int = 0
    dropped: int = 0
    missed: int = 0
    reconnects: int = 0
    duration_s: float = 0.0
    stopped_by: str = ""
    messages_dropped: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    parts: list[RecordedPart] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        """Every file written, in order (``path`` first)."""
        return [part.path for part in self.parts]


def record(
    out: str | Path,
    *,
    config: ProbeConfig | None = None,
    host: str | None = None,
    port: int | None = None,
    duration_s: float | None = None,
    frames: int | None = None,
    stop_on_disconnect: bool = False,
    connect_timeout_s: float | None = 10.0,
    compress: bool = True,
    progress: Callable[[RecordProgress], None] | None = None,
    progress_interval_s: float = 0.25,
    stop: threading.Event | None = None,
    config_path: str | Path | None = None,
) -> RecordResult:
    """Record an OpenIGTLink stream to ``out`` (``.igs.mha``/``.mha``/``.seq.nrrd``).

    Parameters
    ----------
    out
        Target file; it must not exist yet, nor a journal beside it (checked before
        connecting).
    config
        Probe options (defaults otherwise); ``host``/``port`` override it.
    duration_s, frames
        Stop after this long (s, from the first frame) / this many frames.
    stop_on_disconnect
        End when the server closes the connection after frames were received (e.g. the end
        of a ``usnav replay`` without ``--loop``) instead of reconnecting.
    connect_timeout_s
        Give up if no frame arrives within this long (None: wait forever).
    compress
        Compress pixels as PLUS does.
    progress
        Called about every ``progress_interval_s`` with a :class:`RecordProgress`.
    stop
        Set it (from another thread) to end the recording. As after Ctrl-C, the frames
        received before it are written.
    config_path
        The device file ``config`` came from (its ``[probe] calibration`` is looked up
        beside it).

    Returns
    -------
    RecordResult
        Counts and why it stopped; Ctrl-C ends a recording normally (``stopped_by`` =
        ``"interrupted"``).

    Raises
    ------
    UsnavError
        No frame within ``connect_timeout_s`` (the message says what the link saw), or the
        file cannot be written.
    InputError
        Before connecting: the target exists, is a folder, has an unknown suffix or no
        folder; a port outside 1-65535; a non-positive ``connect_timeout_s``.
    """
    path = Path(out)
    check_recording_target(path)
    if port is not None and not 1 <= port <= 65535:
        raise InputError("--port", f"{port} is not a TCP port", "use 1-65535 (PLUS: 18944)")
    if connect_timeout_s is not None and connect_timeout_s <= 0:
        raise InputError("--connect-timeout", f"must be positive, got {connect_timeout_s:g}")
    base = config or ProbeConfig()
    updates: dict[str, object] = {"when_full": "wait", "frame_queue": max(base.frame_queue, 256)}
    if host is not None:
        updates["host"] = host
    if port is not None:
        updates["port"] = port
    probe_config = base.model_copy(update=updates)
    if frames is not None and frames < 1:
        raise InputError("--frames", f"must be at least 1, got {frames}")
    if duration_s is not None and duration_s <= 0:
        raise InputError("--duration", f"must be positive, got {duration_s}")
    result = RecordResult(path)
    if probe_config.header_version == 1:
        result.warnings.append(
            "header_version = 1: OpenIGTLink v1 carries no transform status, so every pose in "
            "the recording is marked OK, including poses the server knew were invalid; record "
            "with header_version = 2 (PLUS 2.x and later speak it)"
        )
    probe = ProbeClient(probe_config, name="recorder", config_path=config_path)
    recording = SplitRecording(path, compress=compress, tracker_lag_s=probe.time_offset_s)
    started = time.monotonic()
    first_frame_at: float | None = None
    last_progress = 0.0
    write_failures = 0
    try:
        probe.start()
        while True:
            if stop is not None and stop.is_set():
                result.stopped_by = "stop requested"
                break
            frame = probe.get_frame(0.05)
            now = time.monotonic()
            if frame is not None:
                if first_frame_at is None:
                    first_frame_at = now
                try:
                    recording.append(frame)  # a new image size: on in a new part file
                except (OSError, UsnavError) as exc:
                    write_failures += 1
                    result.error = f"writing {recording.path} failed: {exc}"
                    result.stopped_by = "write error"
                    break
                result.written += 1
                if frames is not None and result.written >= frames:
                    result.stopped_by = f"{frames} frames"
                    break
            if first_frame_at is not None:
                if duration_s is not None and now - first_frame_at >= duration_s:
                    result.stopped_by = f"{duration_s:g} s"
                    break
                if frame is None and stop_on_disconnect and probe.stats.reconnects > 0:
                    # The queue is drained: everything sent before the server closed is written.
                    result.stopped_by = "server closed the connection"
                    break
            elif connect_timeout_s is not None and now - started > connect_timeout_s:
                hint = probe.device_hint()
                if hint is not None:
                    raise UsnavError(
                        f"no frame from {probe_config.host}:{probe_config.port} within "
                        f"{connect_timeout_s:g} s: {hint}"
                    )
                why = probe.last_error or f"state {probe.state.value}"
                raise UsnavError(
                    f"no frame from {probe_config.host}:{probe_config.port} within "
                    f"{connect_timeout_s:g} s ({why}); is the server running and streaming "
                    f"IMAGE '{probe_config.image_device}'?"
                )
            if progress is not None and now - last_progress >= progress_interval_s:
                last_progress = now
                progress(_progress(result, probe, recording, first_frame_at, now))
    except KeyboardInterrupt:
        result.stopped_by = "interrupted"
    finally:
        probe.close()
        if result.stopped_by in ("interrupted", "stop requested"):
            # the frames the probe received before the stop are recorded too (they were
            # discarded, and counted nowhere: received = written + dropped did not hold)
            try:
                while (frame := probe.get_frame(0)) is not None:
                    recording.append(frame)
            except (OSError, UsnavError) as exc:
                write_failures += 1
                result.error = f"writing {recording.path} failed: {exc}"
        try:
            recording.close()
        except (OSError, UsnavError) as exc:
            result.error = result.error or f"finishing {recording.path} failed: {exc}"
        # Ctrl-C (or SIGTERM) may land between a frame's append and the count
        result.written = recording.written
        result.parts = recording.parts
        result.dropped = probe.stats.frames_dropped + write_failures
        result.received = result.written + result.dropped
        result.missed = probe.stats.frames_missed
        result.reconnects = probe.stats.reconnects
        result.messages_dropped = dict(probe.link_stats().dropped_in)
        result.duration_s = time.monotonic() - (first_frame_at or started)
    if progress is not None:
        progress(_progress(result, probe, recording, first_frame_at, time.monotonic()))
    return result


def _image_type(frame: TrackedFrame) -> str:
    """The PLUS ``UltrasoundImageType`` of a part that starts with ``frame``: the server's
    word when it sent one (as IMAGE metadata), else RGB_COLOR for 3- or 4-channel pixels (a
    colour Doppler or screen-grabbed stream) and BRIGHTNESS (B-mode) otherwise."""
    from usnav.io.sequence import IMAGE_TYPES

    said = frame.fields.get("UltrasoundImageType", "").strip().upper()
    if said in IMAGE_TYPES:
        return said
    image = frame.image
    return "RGB_COLOR" if image.ndim == 3 and image.shape[2] in (3, 4) else "BRIGHTNESS"


class SplitRecording:
    """A crash-safe recording that continues in a new part file when the image size changes.

    Frames go to ``path`` through a :class:`usnav.io.sequence.SequenceWriter`; a frame whose
    image differs in shape or pixel type from the part being written closes that part and
    starts the next one, named by :func:`next_part_path` (``case-2.igs.mha``, ...). Frames
    without an image go to the current part.

    Parameters
    ----------
    path
        The first part's file (checked by the caller: see :func:`check_recording_target`).
    compress
        Compress pixels as PLUS does.
    tracker_lag_s
        The lag at which the source paired each image with its poses (the probe's
        ``time_offset_s``), s; written in every part's header as ``UsnavTrackerLagSec`` so
        that a calibration from the recording knows it (:data:`PAIRED_LAG_FIELD`).
    """

    def __init__(
        self, path: str | Path, *, compress: bool = True, tracker_lag_s: float | None = None
    ):
        self.path = Path(path)  # the part being written
        self._header = {}
        if tracker_lag_s is not None:
            self._header[PAIRED_LAG_FIELD] = f"{tracker_lag_s:.6f}"
        self.parts: list[RecordedPart] = []
        self.files: list[Path] = []  # the parts' paths; the list grows as parts are started
        self._compress = compress
        self._writer: SequenceWriter | None = None
        self._part_type = ""  # the UltrasoundImageType of the part being written

    @property
    def written(self) -> int:
        """Frames written, in all parts."""
        return sum(part.frames for part in self.parts)

    def append(self, frame: TrackedFrame) -> RecordedPart | None:
        """Write one frame (durable in the current part's journal when this returns).

        Returns
        -------
        RecordedPart or None
            The part this frame closed because its image size differs (the frame starts the
            next part, now :attr:`path`); None when it went into the part being written.

        Raises
        ------
        UsnavError, OSError
            The frame cannot be written, or a part cannot be finished or started (disk
            full...): see :meth:`usnav.io.sequence.SequenceWriter.append`; :attr:`path`
            names the file. The frames written before are kept.
        """
        from usnav.io.sequence import SequenceWriter

        image = frame.image
        size = (tuple(image.shape), image.dtype.name) if image.size else None
        current = self.parts[-1] if self.parts else None
        closed = None
        if (
            current is not None
            and current.shape is not None
            and size is not None
            and size != (current.shape, current.dtype)
        ):
            self._finish_part()
            closed = current
            self.path = next_part_path(self.parts[0].path, len(self.parts) + 1)
        if self._writer is None:
            self._part_type = _image_type(frame)
            self._writer = SequenceWriter(
                self.path,
                compress=self._compress,
                image_type=self._part_type,
                header_fields=self._header,
            )
            self.parts.append(RecordedPart(self.path))
            self.files.append(self.path)
        part = self.parts[-1]
        said = frame.fields.get("UltrasoundImageType")
        if said is not None and said.strip().upper() == self._part_type:
            # the server's word for the part's header (_image_type), not a per-frame field
            fields = {k: v for k, v in frame.fields.items() if k != "UltrasoundImageType"}
            frame = replace(frame, fields=fields)
        self._writer.append(frame)
        part.frames = len(self._writer)
        if size is not None and part.shape is None:
            part.shape, part.dtype = size
        return closed

    def close(self) -> None:
        """Finish the part being written (its file is assembled from the journal).

        Raises
        ------
        UsnavError, OSError
            The file cannot be written; its journal is kept for ``usnav convert``.
        """
        self._finish_part()

    def _finish_part(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            # a frame appended just before an interrupt is counted here
            self.parts[-1].frames = len(writer)
            writer.close()


def check_recording_target(path: Path) -> None:
    """Refuse, before connecting, a target that could not be written or would be replaced."""
    from usnav.io.sequence import journal_path, sequence_format

    if path.is_dir():
        raise InputError(path, "is a folder", "give a file name, e.g. recordings/case.igs.mha")
    sequence_format(path)
    if not path.parent.is_dir():
        raise InputError(path.parent, "no such folder to write the recording into")
    if path.exists():
        raise InputError(
            path, "already exists", "choose another name (a recording is never overwritten)"
        )
    journal = journal_path(path)
    if journal.exists():
        raise InputError(
            journal,
            "a journal of an interrupted recording is already there",
            f"recover it with `usnav convert {journal} {path}` or remove it",
        )


def next_part_path(path: Path, part: int) -> Path:
    """``case.igs.mha`` → ``case-2.igs.mha`` (the next free name for part ``part``)."""
    name = path.name
    for suffix in (".igs.mha", ".seq.mha", ".igs.nrrd", ".seq.nrrd", ".mha", ".nrrd"):
        if name.lower().endswith(suffix):
            stem, ext = name[: -len(suffix)], name[-len(suffix) :]
            break
    else:
        stem, ext = path.stem, path.suffix
    n = max(2, part)
    while True:
        candidate = path.with_name(f"{stem}-{n}{ext}")
        if not candidate.exists() and not candidate.with_name(candidate.name + ".journal").exists():
            return candidate
        n += 1


def _progress(
    result: RecordResult,
    probe: ProbeClient,
    recording: SplitRecording,
    first: float | None,
    now: float,
) -> RecordProgress:
    elapsed = now - first if first is not None else 0.0
    fps = result.written / elapsed if elapsed > 0 else 0.0
    return RecordProgress(
        result.written,
        fps,
        probe.stats.frames_dropped,
        elapsed,
        probe.state,
        recording.path,
        missed=probe.stats.frames_missed,
    )
