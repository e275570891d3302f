"""The viewer loop: subscribe, keep the newest, render, show (or snapshot).

The loop drains the subscriber each turn and keeps the newest message per topic, so what is
drawn is milliseconds old even if drawing is slower than publishing. Rendering is the pure
:func:`usnav.viewer.render.render_view`; showing happens in a child process
(:class:`usnav.viewer.window.WindowProcess`) so a GUI failure cannot take the viewer down.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from usnav.client import DEFAULT_ADDRESS, ClientStats, Subscriber
from usnav.errors import InputError, UsnavError
from usnav.viewer.mri import MriContext
from usnav.viewer.render import render_with_layout
from usnav.viewer.state import WAITING, ViewerOptions, ViewModel
from usnav.viewer.window import WindowProcess, display_available

#: longest a turn waits for a message, s: with nothing arriving the picture changes only
#: with time (its "no data for N s"), so it is redrawn ten times a second, not ``max_fps``
#: times (session 33: 60 identical WAITING pictures a second took a third of a core)
IDLE_WAIT_S = 0.1


@dataclass(frozen=True)
class ViewerRun:
    """What a viewer session did.

    Attributes
    ----------
    pictures
        Pictures rendered.
    updates
        Turns in which a margin or frame message arrived.
    verdict, reason
        The state word (LIVE / STALE / UNCERTAIN / WAITING) and its reason at the end.
    snapshot
        The PNG written, if any (None too when nothing was received: verdict WAITING).
    render_ms
        Median render time per picture, ms.
    stats
        The subscriber's counters.
    """

    pictures: int
    updates: int
    verdict: str
    reason: str
    snapshot: Path | None
    render_ms: float
    stats: ClientStats


def check_snapshot(path: str | Path, *, force: bool = False) -> Path:
    """A snapshot file under the output rule (:func:`usnav.io.outputs.check_output`).

    Parameters
    ----------
    path
        The ``.png`` to write.
    force
        Replace an existing file.

    Returns
    -------
    Path
        ``path``, its folder created.

    Raises
    ------
    InputError
        Not a ``.png``; the file exists (without ``force``); a file stands where its folder
        should be, or the folder cannot be created or written into.
    """
    from usnav.io.outputs import check_output

    p = Path(path)
    if p.suffix.lower() != ".png":
        raise InputError(p, "the snapshot must be a .png file", "give --snapshot NAME.png")
    return check_output(p, force=force, option="--snapshot")


def run_viewer(
    address: str = DEFAULT_ADDRESS,
    *,
    options: ViewerOptions | None = None,
    snapshot: str | Path | None = None,
    frames: int = 30,
    timeout_s: float = 10.0,
    max_fps: float = 60.0,
    stop: threading.Event | None = None,
    curve_server_key: str | Path | None = None,
    curve_client_secret: str | Path | None = None,
    mri: MriContext | None = None,
) -> ViewerRun:
    """Run the viewer.

    Parameters
    ----------
    address
        The publisher to subscribe to.
    options
        Thresholds and size.
    snapshot
        Headless mode: write the picture to this PNG after ``frames`` updates (margin or frame
        messages), or after ``timeout_s`` if they do not come — then it shows what was there
        (STALE, UNCERTAIN, with the reason). Nothing is written when nothing at all was
        received (the verdict is still WAITING: its reason says what the link saw, e.g. a
        host that does not resolve); :attr:`ViewerRun.snapshot` is then None. No window, no
        display needed. Its folder is created; an existing file is replaced (check it first
        with :func:`check_snapshot`).
    frames
        Updates to wait for before the snapshot.
    timeout_s
        Longest wait for a snapshot, s.
    max_fps
        Upper bound on pictures per second.
    curve_server_key, curve_client_secret
        ZeroMQ CURVE key files for a publisher beyond loopback (see ``usnav keys``).
    stop
        Set it to end a windowed session from another thread.
    mri
        The MRI (and tumor label) to reslice beside the ultrasound and to draw the locators
        from; None shows the ultrasound only.

    Raises
    ------
    UsnavError
        Window mode without a display, or the window process failed.
    InputError
        The snapshot cannot be written.
    """
    options = options or ViewerOptions()
    if snapshot is None and not display_available():
        raise UsnavError(
            "no display found (DISPLAY/WAYLAND_DISPLAY unset): run on the OR workstation's "
            "screen, or use --snapshot FILE.png for a headless picture"
        )
    # an existing file is replaced here: usnav view checks --force first (check_snapshot)
    snapshot_path = check_snapshot(snapshot, force=True) if snapshot is not None else None
    period = 1.0 / max_fps
    subscriber = Subscriber(
        address,
        max_message_bytes=options.max_message_bytes,
        curve_server_key=curve_server_key,
        curve_client_secret=curve_client_secret,
    )
    model = ViewModel(address, mri=mri, options=options)
    window = (
        WindowProcess(f"usnav - {address}", expire_after_s=options.lost_after_s)
        if snapshot_path is None
        else None
    )
    # recent pictures only: a window may stay open for a whole operation
    render_times: collections.deque[float] = collections.deque(maxlen=600)
    pictures = updates = 0
    picture = None
    verdict = None
    start = time.monotonic()
    try:
        while True:
            turn = time.monotonic()
            # returns at the first message: waiting longer costs a live picture nothing
            messages = subscriber.receive_latest(timeout_s=max(period, IDLE_WAIT_S))
            if "margin" in messages or "frame" in messages:
                updates += 1
            state = model.update(
                messages,
                connected=subscriber.connected,
                last_message_s=subscriber.last_message_time,
                gaps=sum(subscriber.stats.gaps.values()),
                skipped=subscriber.stats.skipped_total,
                link_problem=subscriber.link_problem,
                superseded=subscriber.superseded_margins,
            )
            t0 = time.perf_counter()
            picture, _, verdict = render_with_layout(state, options)
            render_times.append(time.perf_counter() - t0)
            pictures += 1
            if window is not None:
                if not window.show(picture) or (stop is not None and stop.is_set()):
                    break
            elif updates >= frames or time.monotonic() - start >= timeout_s:
                break
            if stop is not None and stop.is_set():
                break
            rest = period - (time.monotonic() - turn)
            if rest > 0 and not messages:
                time.sleep(rest)
    finally:
        subscriber.close()
        if window is not None:
            window.close()
    if verdict is None or verdict.word == WAITING:
        snapshot_path = None  # a picture of nothing received would pass for a snapshot
    if snapshot_path is not None and picture is not None:
        try:
            ok = cv2.imwrite(str(snapshot_path), picture, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        except cv2.error as exc:
            raise InputError(snapshot_path, f"cannot write the snapshot: {exc}") from exc
        if not ok:
            raise InputError(snapshot_path, "cannot write the snapshot (permissions? disk full?)")
    return ViewerRun(
        pictures=pictures,
        updates=updates,
        verdict=verdict.word if verdict else "",
        reason=verdict.reason if verdict else "",
        snapshot=snapshot_path,
        render_ms=float(np.median(render_times) * 1e3) if render_times else float("nan"),
        stats=subscriber.stats,
    )
