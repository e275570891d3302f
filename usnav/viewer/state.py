"""What the viewer shows: its options, the state built from received messages, and the verdict.

The verdict (:func:`assess`) is the safety logic of every usnav display (the viewer, the web
page): it is the ``display_state`` the publisher sent with the newest data (LIVE, UNCERTAIN,
STALE — see :mod:`usnav.protocol.display`, the one definition of "show as good"), made worse
by what only the display sees (WAITING before any data, STALE when the connection dropped or
the data stopped). It is kept separate from drawing so it is tested on its own. Display code
must take the state from here and never re-derive LIVE or STALE.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from usnav.client import FrameMessage, MarginMessage, Message, RegistrationMessage, StatusMessage
from usnav.protocol.display import (
    DISPLAY_STATES,
    LIVE,
    OUTSIDE_MRI_PREFIX,
    STALE,
    STATE_HOLD_S,
    UNCERTAIN,
    WAITING,
    DisplayState,
    StateHold,
    display_state,
    steady_state,
)
from usnav.protocol.messages import Header
from usnav.protocol.wire import MAX_HEADER_BYTES, MAX_MESSAGE_BYTES
from usnav.viewer.mri import MriContext

__all__ = [
    "LIVE",
    "STALE",
    "UNCERTAIN",
    "WAITING",
    "Verdict",
    "ViewModel",
    "ViewState",
    "ViewerOptions",
    "assess",
    "assess_now",
    "registration_age_s",
]


#: width of the panel of numbers and locators beside the image panes, pixels
PANEL_WIDTH = 400


class ViewerOptions(BaseModel):
    """Viewer settings.

    Attributes
    ----------
    stale_after_s
        Deprecated, ignored since protocol 2: how old a registration may be is the
        publisher's ``display_state`` rule (``DisplayRules.max_unchecked_s``).
    lost_after_s
        No message for this long (or a dropped connection), or newest margins this old, make
        the display STALE, s. Publishers send ``status`` at ≥ 2 Hz, so silence means trouble.
        At most 120 s: a longer silence would let a hung publisher's last overlay stand as
        it was for minutes.
    min_quality
        Deprecated, ignored since protocol 2: a quality score decides nothing; the
        publisher's ``display_state`` (from the registration's stated uncertainty) does.
    min_disagreement_mm
        The ultrasound-supported margin is drawn where it differs from the MRI-predicted one
        by at least this much, mm.
    support_threshold
        Confidence from which a point counts as supported by the ultrasound.
    width, height
        Picture size, pixels. Each image pane (the ultrasound, and the MRI when one is given)
        is ``height`` × ``height`` and the panel takes the rest; ``width`` None (the default)
        makes it exactly that with a panel of :data:`PANEL_WIDTH` pixels.
    fill_alpha
        Opacity of the tumor fill.
    max_message_bytes
        Largest message part the display's subscriber takes, bytes (ZeroMQ's MAXMSGSIZE;
        default 128 MiB, twice the largest frame image the probe's side accepts: see
        :data:`usnav.protocol.wire.MAX_MESSAGE_BYTES`). A publisher that sends a larger one is
        dropped by ZeroMQ before anything is allocated; the display then shows STALE, saying
        so, and reconnects.
    state_hold_s
        How long a better state must hold before the display shows it, s
        (:data:`usnav.protocol.display.STATE_HOLD_S`, 0.5): the worse state shows at once, so
        the banner never alternates at frame rate and a LIVE frame between UNCERTAIN ones is
        not shown LIVE (:func:`assess`). 0: no hold (each picture shows its own data's state).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    stale_after_s: float = Field(10.0, gt=0.0)
    lost_after_s: float = Field(1.5, gt=0.0, le=120.0)
    min_quality: float = Field(0.5, ge=0.0, le=1.0)
    min_disagreement_mm: float = Field(0.5, ge=0.0)
    support_threshold: float = Field(0.5, ge=0.0, le=1.0)
    width: int | None = Field(None, ge=320, le=4096)
    height: int = Field(720, ge=240, le=4096)
    fill_alpha: float = Field(0.30, ge=0.0, le=1.0)
    max_message_bytes: int = Field(MAX_MESSAGE_BYTES, ge=MAX_HEADER_BYTES, le=2**31)
    state_hold_s: float = Field(STATE_HOLD_S, ge=0.0, le=2.0)

    def canvas_width(self, panes: int) -> int:
        """The picture's width with ``panes`` image panes (1: ultrasound; 2: and MRI)."""
        return self.width if self.width is not None else panes * self.height + PANEL_WIDTH


@dataclass
class ViewState:
    """Everything one rendered picture depends on (plain data; rendering is a pure function).

    Attributes
    ----------
    address
        The publisher address (shown while waiting).
    now
        Host time of the picture, s since the epoch.
    image
        The ultrasound frame to show (uint8/uint16, rows × cols), or None.
    image_frame_number
        Its frame number (-1 if none).
    margin, registration
        The newest messages of those topics, or None.
    registration_update
        The newest registration estimate published as itself (``resent`` false: adopted or
        not), or None. The estimate in use is re-sent every status interval, so
        ``registration`` is mostly that re-send: what the latest update did is read here.
    status
        The newest pipeline status map ({} if none).
    status_message
        The newest ``status`` message (its header carries the publisher's display state
        while no margins flow), or None.
    connected
        Whether the TCP connection is up (and, after a drop, data arrived over it again).
    reconnected
        The connection came back after a drop but no data arrived over it yet.
    last_message_s
        Host time of the newest valid message of any topic, or None before the first.
    fps
        Margin messages per second over the last couple of seconds (None if unknown).
    latency_ms
        Frame received by usnav → arrival here, for the newest margin (or frame), ms.
    gaps, skipped
        Messages lost (sequence gaps) and bad messages skipped, since start.
    """

    address: str
    now: float = field(default_factory=time.time)
    image: np.ndarray | None = None
    image_frame_number: int = -1
    margin: MarginMessage | None = None
    registration: RegistrationMessage | None = None
    registration_update: RegistrationMessage | None = None
    status: dict = field(default_factory=dict)
    status_message: StatusMessage | None = None
    connected: bool = False
    reconnected: bool = False
    last_message_s: float | None = None
    fps: float | None = None
    latency_ms: float | None = None
    gaps: int = 0
    skipped: int = 0
    #: why the link to the publisher cannot work (e.g. refused CURVE handshake), "" if none
    link_problem: str = ""
    #: the MRI (and tumor label) the display reslices, None when none was given
    mri: MriContext | None = None
    #: the MRI through the shown frame's plane (uint8, the frame's grid, maybe subsampled)
    mri_plane: np.ndarray | None = None
    #: 4×4 frame pixel → MRI RAS mm of the shown frame (None if unknown)
    image_to_mri: np.ndarray | None = None
    #: why the display's MRI or label is not the run's ("" when they are, or the run does
    #: not say): the MRI pane and the locators are then not drawn
    mri_mismatch: str = ""
    #: the shown frame's plane lies entirely outside the MRI (the pane would be black): said
    #: on the pane instead of "MRI, same plane"
    mri_outside: bool = False
    #: UNCERTAIN / STALE → (host time the data last said it, s since the epoch; its reason):
    #: what :func:`assess` holds a better state against (kept by :class:`ViewModel`)
    worse_seen: dict[str, tuple[float, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    """The display's state word, its reason, and whether the overlay may look confident."""

    word: str
    reason: str

    @property
    def confident(self) -> bool:
        return self.word == LIVE


def registration_age_s(state: ViewState) -> float | None:
    """Age of the registration behind the newest margin (or registration message) now, s."""
    for message in (state.margin, state.registration):
        if message is not None and message.header.age_s is not None:
            return message.header.age_s + max(0.0, state.now - message.header.t_arrived)
    return None


def _published(state: ViewState) -> tuple[DisplayState | None, float | None]:
    """The publisher's display state for the overlay, and when the message carrying it arrived:
    the newest margin's; before any margin the newest status's, else the registration's."""
    if state.margin is not None:
        return state.margin.header.display, state.margin.header.t_arrived
    if state.status_message is not None:
        return state.status_message.header.display, None
    if state.registration is not None:
        return state.registration.header.display, None
    return None, None


def assess(state: ViewState, options: ViewerOptions) -> Verdict:
    """WAITING / STALE / UNCERTAIN / LIVE for a state: what the data say now
    (:func:`assess_now`), held against the worse states said in the last
    ``options.state_hold_s`` (:func:`usnav.protocol.display.steady_state`).

    The worse state shows at once, a better one only once it has held for
    ``options.state_hold_s`` (0.5 s): an imaging plane skimming the tumor gives margins
    alternately LIVE and UNCERTAIN, each right on its own, and a banner that flipped 30 times
    a second was unreadable, its LIVE frames between UNCERTAIN ones read as good (session
    44). The hold only makes the state worse: it never shows a STALE or UNCERTAIN frame LIVE.
    What was said when is :attr:`ViewState.worse_seen`, kept by :class:`ViewModel`.

    The one place a display's state is decided: the window, the snapshot, ``usnav web``'s
    bridge (which sends the word to the page) and the demo all take it from here, and nothing
    else derives it.
    """
    now = assess_now(state, options)
    shown = steady_state(
        DisplayState(now.word, now.reason),
        state.worse_seen,
        now=state.now,
        hold_s=options.state_hold_s,
    )
    return Verdict(shown.state, shown.reason)


def assess_now(state: ViewState, options: ViewerOptions) -> Verdict:
    """The state the data say at ``state.now``, without the hold of :func:`assess`: the
    publisher's ``display_state`` of the newest data, made worse by the link
    (:func:`usnav.protocol.display.display_state`), and by the display's own MRI.

    A LIVE frame whose plane lies entirely outside the display's MRI
    (:attr:`ViewState.mri_outside`) is shown UNCERTAIN (:data:`OUTSIDE_DISPLAY_MRI`): a
    publisher before session 43 does not check it, and sent such frames LIVE ("no tumor in
    view") while the display only labelled its MRI pane. Only when that MRI may be the run's
    (:attr:`ViewState.mri_mismatch` empty: the same digests, or a run that does not say):
    another file's extent says nothing about the run's. Never better: UNCERTAIN and STALE are
    kept as they are (with the publisher's own reason).
    """
    problem = f": {state.link_problem}" if state.link_problem else ""
    published, arrived = _published(state)
    probe_state = str(state.status.get("state", "")) if state.status else ""
    if (
        state.last_message_s is not None
        and state.connected
        # protocol.md: anything but "streaming" means the overlay is not live ("" : the
        # publisher does not say)
        and probe_state not in ("", "streaming")
    ):
        peer = state.status.get("peer", "the probe")
        published = DisplayState(STALE, f"no signal from {peer} ({probe_state})")
    verdict = display_state(
        published,
        now=state.now,
        last_message_s=state.last_message_s,
        data_arrived_s=arrived,
        connected=state.connected,
        lost_after_s=options.lost_after_s,
        waiting_reason=f"waiting for usnav on {state.address}{problem}",
    )
    reason = verdict.reason
    if reason.startswith("connection lost"):
        if state.reconnected:
            # up again, but nothing has come over it: what is kept may be a finished run's
            reason = "reconnected, no data yet" + reason[len("connection lost") :]
        # why, when the subscriber knows (e.g. ZeroMQ dropped a publisher that sent a message
        # over max_message_bytes)
        reason += problem
    elif reason.startswith("no data for"):
        reason += problem  # e.g. every message since the last valid one was refused
    if (
        verdict.state == LIVE
        and state.mri is not None
        and state.mri_outside
        and not state.mri_mismatch  # another file's extent says nothing of the run's
    ):
        return Verdict(UNCERTAIN, OUTSIDE_DISPLAY_MRI)
    return Verdict(verdict.state, reason)


#: Why a LIVE frame is shown UNCERTAIN when its plane lies entirely outside the display's own
#: MRI (:func:`assess_now`): a publisher before session 43 sent such frames LIVE ("no tumor in
#: view") and does not say so; a later one sends them UNCERTAIN itself
OUTSIDE_DISPLAY_MRI = (
    f"{OUTSIDE_MRI_PREFIX} (by this display's --mri; the publisher did not say so): "
    "no tumor can be ruled out — check the MRI and the registration"
)


def mri_mismatch(mri: MriContext | None, status: dict) -> str:
    """Why the display's MRI or label is not the one the run computes on ("" when they are,
    or when the run does not say: a publisher before session 43).

    ``usnav run`` publishes the :meth:`~usnav.io.volume.Volume.digest` of its MRI and label
    (status ``mri_digest``, ``label_digest``). Another file given to the display (another
    patient's, another series, yesterday's case) was drawn as "MRI, same plane" under the
    run's overlay, and its label placed the tumor on the locators.
    """
    if mri is None:
        return ""
    said = []
    run_mri = status.get("mri_digest")
    if isinstance(run_mri, str) and run_mri and run_mri != mri.digest:
        said.append("MRI")
    run_label = status.get("label_digest")
    if isinstance(run_label, str) and run_label and mri.label_digest not in ("", run_label):
        said.append("label")
    if not said:
        return ""
    return f"{' and '.join(said)} NOT the run's: check --mri/--label"


def _said(header: Header) -> DisplayState:
    """A message's published state (a word that is not one of the four: UNCERTAIN, as
    :func:`usnav.protocol.display.display_state` reads it)."""
    said = header.display
    if said.state not in DISPLAY_STATES:
        return DisplayState(UNCERTAIN, f"unknown display state {said.state!r}")
    return said


def _rank(margin: MarginMessage) -> int:
    """How bad a margin's published state is: LIVE 0, UNCERTAIN 1, anything else 2."""
    return {LIVE: 0, UNCERTAIN: 1}.get(margin.header.display.state, 2)


class ViewModel:
    """Builds :class:`ViewState` from the messages a subscriber delivers.

    Keeps the newest message per topic and a few recent frames by number, so the picture
    pairs a margin with the frame it was computed on when that frame is at hand; and when
    the data last said UNCERTAIN or STALE (every margin received, and :func:`assess_now` at
    each update), which :func:`assess` holds a better state against.

    Parameters
    ----------
    address
        The publisher's address (shown while waiting).
    keep_frames
        Recent frames kept to pair margins with.
    mri
        The MRI the display reslices, or None.
    options
        The viewer's options (``lost_after_s`` and ``state_hold_s`` for what is noted at
        each update); the defaults when None. Give the same options to :func:`assess`.
    """

    def __init__(
        self,
        address: str,
        keep_frames: int = 8,
        mri: MriContext | None = None,
        options: ViewerOptions | None = None,
    ):
        self.state = ViewState(address=address, mri=mri)
        self.options = options or ViewerOptions()
        self._hold = StateHold(self.options.state_hold_s)
        self.state.worse_seen = self._hold.worse_seen
        self._plane_key: bytes | None = None
        self._frame_matrix: np.ndarray | None = None
        self._frames: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._keep = keep_frames
        self._arrivals: collections.deque[float] = collections.deque(maxlen=240)
        #: a margin received before its frame: shown once the frame is at hand (margins are
        #: published just before their frame), so a margin is never drawn over another image
        self._pending: MarginMessage | None = None
        #: the publisher instance (header ``stream``) the kept messages came from
        self._stream: int | None = None
        #: the connection dropped and nothing has arrived since: what is kept predates it
        self._dropped = False

    #: longest a margin waits for its own frame before it is drawn over the newest one, s
    #: (its frame was lost, e.g. dropped at a slow display's high-water mark)
    PAIRING_WAIT_S = 0.25

    def update(
        self,
        messages: dict[str, Message],
        *,
        connected: bool,
        last_message_s: float | None,
        gaps: int = 0,
        skipped: int = 0,
        now: float | None = None,
        link_problem: str = "",
        superseded: Sequence[Header] = (),
    ) -> ViewState:
        """Fold newly received messages (newest per topic) into the state.

        ``superseded``: the headers of margins drained with them but not returned, a newer
        margin having come in the same drain (:attr:`usnav.client.Subscriber.superseded_margins`):
        their published states count for the hold (:func:`assess`), so an UNCERTAIN margin
        between two LIVE ones in one drain still holds the display UNCERTAIN.
        """
        s = self.state
        s.now = time.time() if now is None else now
        # a connection that came back is not up for the display until data arrive over it:
        # ZeroMQ reconnects before a restarted publisher's first message, and until then only
        # the old run's data are at hand (a LIVE margin of it was shown LIVE again, session 33)
        if not connected:
            self._dropped = True
        elif messages:
            self._dropped = False
        s.connected = connected and not self._dropped
        s.reconnected = connected and self._dropped
        s.link_problem = link_problem
        s.last_message_s = last_message_s
        s.gaps, s.skipped = gaps, skipped
        messages = self._current_stream(messages)
        frame = messages.get("frame")
        if isinstance(frame, FrameMessage):
            self._frames[frame.header.frame_number] = frame.image
            self._frame_matrix = frame.header.image_to_mri
            while len(self._frames) > self._keep:
                self._frames.popitem(last=False)
            if s.margin is None:
                s.image, s.image_frame_number = frame.image, frame.header.frame_number
            if frame.header.latency_s is not None and s.margin is None:
                s.latency_ms = 1e3 * frame.header.latency_s
        margin = messages.get("margin")
        for header in superseded:
            self._hold.note(_said(header), header.t_arrived)
        if isinstance(margin, MarginMessage):
            self._pending = margin
            self._arrivals.append(margin.header.t_arrived)
            # said by the data when it arrived, whether or not it is ever drawn (a margin
            # superseded before its frame came still counts for the hold)
            self._hold.note(_said(margin.header), margin.header.t_arrived)
        pending = self._pending
        if pending is not None and (
            not self._frames  # no frame feed: nothing to pair with
            or pending.header.frame_number in self._frames
            or s.now - pending.header.t_arrived >= self.PAIRING_WAIT_S
            # bad news is not held back for a frame: a STALE margin (tracking lost: usnav
            # publishes it without a frame) left the previous LIVE one up for the wait
            or (s.margin is not None and _rank(pending) > _rank(s.margin))
        ):
            s.margin, self._pending = pending, None
            if pending.header.latency_s is not None:
                s.latency_ms = 1e3 * pending.header.latency_s
        if s.margin is not None:
            wanted = s.margin.header.frame_number
            if wanted in self._frames:
                s.image, s.image_frame_number = self._frames[wanted], wanted
            elif self._frames:
                number = next(reversed(self._frames))
                s.image, s.image_frame_number = self._frames[number], number
        registration = messages.get("registration")
        if isinstance(registration, RegistrationMessage):
            s.registration = registration
            if not registration.resent:
                s.registration_update = registration
        status = messages.get("status")
        if isinstance(status, StatusMessage):
            s.status = status.status
            s.status_message = status
            s.mri_mismatch = mri_mismatch(s.mri, s.status)
        self._update_plane()
        # what the data say now (the link, silence, the publisher): held against by assess;
        # not the UNCERTAIN of a display that has no state from the publisher yet (it says
        # only that nothing is known yet, as WAITING does, and would delay the first LIVE)
        now = assess_now(s, self.options)
        if _published(s)[0] is not None or now.word != UNCERTAIN:
            self._hold.note(DisplayState(now.word, now.reason), s.now)
        recent = [t for t in self._arrivals if s.now - t <= 2.0]
        s.fps = (
            (len(recent) - 1) / (recent[-1] - recent[0])
            if len(recent) >= 3 and (recent[-1] > recent[0])
            else None
        )
        return s

    def _current_stream(self, messages: dict[str, Message]) -> dict[str, Message]:
        """The messages of the publisher instance now speaking; everything kept from an
        earlier one is forgotten when a new one speaks.

        A new ``stream`` id means the publisher restarted: its predecessor's margin, frames,
        registration and status describe a run that is over. Kept, the last LIVE margin of the
        old run was shown LIVE again as soon as the new one connected (until it was
        ``lost_after_s`` old), while the new publisher said UNCERTAIN (session 33). Within one
        drain the message that arrived last names the instance now speaking.
        """
        if not messages:
            return messages
        newest = max(messages.values(), key=lambda m: m.header.t_arrived)
        stream = newest.header.stream
        if self._stream is not None and stream != self._stream:
            s = self.state
            s.margin = s.registration = s.registration_update = s.status_message = None
            s.status = {}
            s.image, s.image_frame_number = None, -1
            s.latency_ms = None
            s.mri_plane = s.image_to_mri = None
            s.mri_mismatch = ""
            self._pending = None
            self._frames.clear()
            self._frame_matrix = None
            self._plane_key = None
            self._arrivals.clear()
        self._stream = stream
        return {topic: m for topic, m in messages.items() if m.header.stream == stream}

    def _update_plane(self) -> None:
        """Reslice the MRI through the shown frame's plane when that plane changed."""
        s = self.state
        matrix = self._frame_matrix
        if s.margin is not None and s.margin.header.image_to_mri is not None:
            matrix = s.margin.header.image_to_mri
        s.image_to_mri = matrix
        if s.mri is None or matrix is None:
            s.mri_plane = None
            s.mri_outside = False
            return
        if s.image is not None:
            shape = s.image.shape[:2]
        elif s.margin is not None:
            shape = s.margin.image_shape
        else:
            return
        key = np.asarray(matrix, np.float64).tobytes() + np.asarray(shape).tobytes()
        if key != self._plane_key:
            s.mri_plane = s.mri.reslice(matrix, shape)
            s.mri_outside = s.mri.extent.misses(matrix, shape)
            self._plane_key = key
