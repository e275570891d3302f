"""The bridge from the ZeroMQ stream to browser pages: subscribe, render, encode, keep the newest.

One thread subscribes like any display (:class:`usnav.client.Subscriber`), folds messages into
the viewer's :class:`~usnav.viewer.state.ViewModel`, renders with the viewer's own renderer
(one renderer for the window and the page, so they cannot disagree) and JPEG-encodes the
picture. Only the newest picture is kept: a page that reads slowly gets fewer pictures, never
older ones, and nothing waits on a page. While no page is open the bridge only drains the
subscriber (no rendering), so an idle or closed tab costs nothing; the picture it kept then
grows old, and is never sent once older than its validity (:meth:`Picture.is_current`): a
new page waits for the next turn's picture, rendered from the present state.

Wire format to the page, one binary WebSocket message per picture: a little-endian uint32
``n``, then ``n`` bytes of UTF-8 JSON (:attr:`Picture.meta` and the picture's ``age_ms`` when
sent), then the JPEG.
"""

from __future__ import annotations

import json
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2

from usnav.client import Subscriber
from usnav.viewer.mri import MriContext
from usnav.viewer.render import render_with_layout
from usnav.viewer.state import STALE, ViewerOptions, ViewModel

#: a page re-draws at least this often (s) even when nothing arrives, so a state change
#: (e.g. LIVE → STALE when the pipeline stops) reaches it promptly
REFRESH_S = 0.1


@dataclass(frozen=True)
class Picture:
    """One encoded picture and what it shows.

    Attributes
    ----------
    seq
        Increasing picture number (from 1 in each run of the bridge).
    jpeg
        The picture, JPEG-encoded.
    meta
        What the page is told with it (without ``age_ms``, added when it is sent).
    state, reason
        The display state word and its reason, from :func:`usnav.viewer.state.assess`.
    rendered
        When it was rendered, :func:`time.monotonic` seconds.
    valid_for_s
        How long after rendering it shows the present.
    """

    seq: int
    jpeg: bytes
    meta: dict
    state: str
    reason: str
    rendered: float
    valid_for_s: float

    def age_s(self, now: float | None = None) -> float:
        """Seconds since it was rendered (``now`` on the :func:`time.monotonic` clock)."""
        return (time.monotonic() if now is None else now) - self.rendered

    def is_current(self, now: float | None = None) -> bool:
        """Whether it still shows the present: rendered less than its validity ago."""
        return self.age_s(now) < self.valid_for_s

    def message(self, now: float | None = None) -> bytes:
        """The WebSocket message, with the picture's age now (``age_ms``).

        The page counts the picture's validity from when it was rendered (``valid_for_ms``
        minus ``age_ms``), not from when it arrived, and never compares the bridge's clock
        with its own.
        """
        age_ms = max(0, round(1e3 * self.age_s(now)))
        return encode_picture(self.seq, self.jpeg, {**self.meta, "age_ms": age_ms})


def encode_picture(seq: int, jpeg: bytes, meta: dict) -> bytes:
    """The WebSocket message for a picture: uint32 LE JSON length, JSON, JPEG.

    Parameters
    ----------
    seq
        The picture's number (also in ``meta``).
    jpeg
        The encoded picture.
    meta
        What the page is told about it (JSON-serialisable, no NaN).

    Returns
    -------
    bytes
        One binary WebSocket message.
    """
    text = json.dumps(meta, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return struct.pack("<I", len(text)) + text + jpeg


def decode_picture(payload: bytes) -> tuple[dict, bytes]:
    """Split a picture message into (meta, JPEG bytes) — the page does the same in JS."""
    (n,) = struct.unpack_from("<I", payload, 0)
    return json.loads(payload[4 : 4 + n].decode("utf-8")), payload[4 + n :]


class Bridge:
    """Subscribes to a publisher and keeps the newest rendered picture.

    Parameters
    ----------
    address
        The publisher (ZeroMQ endpoint).
    viewer
        The viewer's options (thresholds, picture size).
    mri
        The MRI to show beside the ultrasound, or None.
    max_fps
        Upper bound on pictures per second.
    jpeg_quality
        JPEG quality, 1–100.
    on_picture
        Called (from the bridge thread) with each new :class:`Picture`.
    curve_server_key, curve_client_secret
        CURVE key files for a publisher beyond loopback.
    """

    def __init__(
        self,
        address: str,
        *,
        viewer: ViewerOptions | None = None,
        mri: MriContext | None = None,
        max_fps: float = 60.0,
        jpeg_quality: int = 80,
        on_picture: Callable[[Picture], None] | None = None,
        curve_server_key=None,
        curve_client_secret=None,
    ):
        self.address = address
        self.viewer = viewer or ViewerOptions()
        self.period_s = 1.0 / max_fps
        self.jpeg_quality = int(jpeg_quality)
        self.on_picture = on_picture
        self._subscriber = Subscriber(
            address,
            max_message_bytes=self.viewer.max_message_bytes,
            curve_server_key=curve_server_key,
            curve_client_secret=curve_client_secret,
        )
        self._model = ViewModel(address, mri=mri, options=self.viewer)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="usnav-web-bridge", daemon=True)
        self._lock = threading.Lock()
        self._latest: Picture | None = None
        #: pages currently watching (set by the server); 0 → drain only, render nothing
        self.watchers = 0
        self.pictures = 0
        self.render_ms: list[float] = []

    @property
    def latest(self) -> Picture | None:
        with self._lock:
            return self._latest

    def start(self) -> Bridge:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._subscriber.close()

    def _run(self) -> None:
        last_render = 0.0
        last_margin = 0.0
        shown = None
        pending = True
        while not self._stop.is_set():
            turn = time.monotonic()
            messages = self._subscriber.receive_latest(timeout_s=self.period_s)
            state = self._model.update(
                messages,
                connected=self._subscriber.connected,
                last_message_s=self._subscriber.last_message_time,
                gaps=sum(self._subscriber.stats.gaps.values()),
                skipped=self._subscriber.stats.skipped_total,
                link_problem=self._subscriber.link_problem,
                superseded=self._subscriber.superseded_margins,
            )
            # render once per margin shown (the model shows a margin once its own frame is at
            # hand), not once for the frame and again for its margin; frames alone (no
            # margins flowing) are drawn too
            now = time.monotonic()
            if state.margin is not shown:
                shown = state.margin
                last_margin = now
                pending = True
            elif messages and now - last_margin > 0.2:
                pending = True
            due = pending or now - last_render >= REFRESH_S
            if self.watchers > 0 and due:
                self._publish(state)
                last_render = time.monotonic()
                pending = False
            rest = self.period_s - (time.monotonic() - turn)
            if rest > 0:
                self._stop.wait(rest)

    def _publish(self, state) -> None:
        # the state drawn is this moment's: the picture's age counts from here
        rendered = time.monotonic()
        t0 = time.perf_counter()
        picture, _layout, verdict = render_with_layout(state, self.viewer)
        ok, jpeg = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        self.render_ms.append(1e3 * (time.perf_counter() - t0))
        del self.render_ms[:-600]
        if not ok:
            return
        valid_for_s = min(1.0, self.viewer.lost_after_s)
        margin = state.margin
        meta = {
            "seq": self.pictures + 1,
            "state": verdict.word,
            "reason": verdict.reason,
            "t_rendered": time.time(),
            # the margin drawn: when usnav received its frame and when it was published
            "frame_number": int(margin.header.frame_number) if margin is not None else -1,
            "t_received": _finite(margin.header.t_received) if margin is not None else None,
            "t_published": _finite(margin.header.t_published) if margin is not None else None,
            "width": int(picture.shape[1]),
            "height": int(picture.shape[0]),
            # the page's only rule of its own: a picture not followed by another within this
            # long no longer shows the present, and the page says so in these words; the page
            # counts it from rendering (the message's age_ms), not from arrival
            "valid_for_ms": round(1e3 * valid_for_s),
            "expired": {"state": STALE, "reason": "no picture from usnav web"},
        }
        self.pictures += 1
        picture_msg = Picture(
            self.pictures, jpeg.tobytes(), meta, *meta_words(meta), rendered, valid_for_s
        )
        with self._lock:
            self._latest = picture_msg
        if self.on_picture is not None:
            self.on_picture(picture_msg)


def meta_words(meta: dict) -> tuple[str, str]:
    return str(meta["state"]), str(meta["reason"])


def _finite(value: float | None) -> float | None:
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return float(value)
