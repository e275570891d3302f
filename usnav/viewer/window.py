"""The on-screen window, in its own process.

OpenCV's GUI (Qt) aborts the whole process when it cannot reach a display, so the window
lives in a child process that only shows pictures: the viewer renders in the parent and
writes each picture to the child's stdin. If the child dies, the parent reports it and exits
cleanly.

Wire format on stdin, per picture: ``b"USNV"``, then height, width, channels as little-endian
uint32, then height × width × channels bytes (BGR). The child exits 0 when the user presses
``q``/Esc or closes the window, or when stdin closes.

A picture is only as current as the parent that sent it: when none follows within
``expire_after_s`` (the parent hung, was stopped, or is starved), the child covers the last one
with a red STALE banner and greys it, as ``usnav web``'s page does with ``valid_for_ms``. Until
session 33 the window kept showing the last picture, LIVE overlay and all, for as long as the
parent was stuck.
"""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from usnav.errors import UsnavError

MAGIC = b"USNV"
_HEADER = struct.Struct("<4sIII")
#: a picture older than this (no newer one from the viewer) is covered as STALE, s
EXPIRE_AFTER_S = 1.5


def display_available() -> bool:
    """Whether a GUI display is plausibly reachable (on Linux: DISPLAY or WAYLAND_DISPLAY)."""
    if sys.platform.startswith("linux") or "bsd" in sys.platform:
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class WindowProcess:
    """A child process showing pictures in an OpenCV window.

    Parameters
    ----------
    title
        Window title.
    display
        The X display to open the window on (e.g. ``":99"``); None: this process's own.
    expire_after_s
        The window covers its picture as STALE when no newer one came for this long, s.
    """

    def __init__(
        self,
        title: str = "usnav",
        display: str | None = None,
        expire_after_s: float = EXPIRE_AFTER_S,
    ):
        self.title = title
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child
        env = None
        if display is not None:
            env = {**os.environ, "DISPLAY": display}
            env.pop("WAYLAND_DISPLAY", None)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "usnav.viewer.window", title, repr(float(expire_after_s))],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env=env,
        )

    def show(self, picture: np.ndarray) -> bool:
        """Send one BGR picture; False once the window has been closed by the user.

        Raises
        ------
        UsnavError
            The window process failed (e.g. the display could not be opened).
        """
        if self._process.poll() is not None:
            self._check_exit()
            return False
        h, w = picture.shape[:2]
        c = picture.shape[2] if picture.ndim == 3 else 1
        try:
            assert self._process.stdin is not None
            self._process.stdin.write(_HEADER.pack(MAGIC, h, w, c))
            self._process.stdin.write(np.ascontiguousarray(picture, np.uint8).tobytes())
            self._process.stdin.flush()
        except (BrokenPipeError, OSError):
            self._process.wait(timeout=5)
            self._check_exit()
            return False
        return True

    def _check_exit(self) -> None:
        code = self._process.returncode
        if code == 0:
            return
        self._log.seek(0)
        text = self._log.read().decode("utf-8", "replace").strip().splitlines()
        last = text[-1] if text else ""
        how = f"signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or "(none)"
        raise UsnavError(
            f"the viewer window could not run on display {display} ({how}"
            f"{': ' + last if last else ''}) — check the display, or use --snapshot FILE.png"
        )

    def close(self) -> None:
        """Close the window (ends the child) and wait for it."""
        if self._process.stdin is not None and not self._process.stdin.closed:
            with contextlib.suppress(OSError):
                self._process.stdin.close()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()


def remap_when_unmanaged() -> bool:
    """Unmap and map again this process's viewable top-level windows when no window manager runs.

    Why: OpenCV's GUI is Qt 5, whose X11 backend counts a window as exposed only once it has
    handled the window's MapNotify event (``QXcbWindow::isExposed`` returns its "mapped" flag).
    On an X server without a window manager (Xvfb, a kiosk display) that event is lost in about
    one start in four (measured under Xvfb: the MapNotify and first Expose never reach Qt's event
    handler), and the window then stays black for its whole life: every picture is drawn into
    nothing. Mapping the window a second time, once Qt has finished showing it, delivers a
    MapNotify that Qt does handle. With a window manager the map goes through the manager (the
    race was not seen, and remapping could move the window), so nothing is done.

    Returns
    -------
    bool
        Whether a window was remapped (False without X, without python-xlib, or with a window
        manager). Never raises: the window must keep running whatever the X server answers.
    """
    try:
        from Xlib import X, Xatom
        from Xlib import display as xdisplay
        from Xlib import error as xerror
    except ImportError:
        return False
    failures = (
        xerror.XError,
        xerror.DisplayError,
        xerror.ConnectionClosedError,
        xerror.XauthError,
        OSError,
    )
    try:
        connection = xdisplay.Display()
    except failures:
        return False
    remapped = False
    try:
        root = connection.screen().root
        manager = connection.intern_atom("_NET_SUPPORTING_WM_CHECK")
        if root.get_full_property(manager, X.AnyPropertyType) is not None:
            return False
        pid_atom = connection.intern_atom("_NET_WM_PID")
        for window in root.query_tree().children:
            pid = window.get_full_property(pid_atom, Xatom.CARDINAL)
            if pid is None or len(pid.value) != 1 or int(pid.value[0]) != os.getpid():
                continue
            if window.get_attributes().map_state != X.IsViewable:
                continue
            window.unmap()
            window.map()
            remapped = True
        connection.sync()
    except failures:
        return remapped
    finally:
        connection.close()
    return remapped


def _read_exact(stream, n: int) -> bytes | None:
    chunks = []
    remaining = n
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


class _Inbox:
    """Pictures read from the parent by a thread, the newest kept (the GUI loop never blocks
    on the pipe, so it can tell a silent parent from a slow picture)."""

    def __init__(self, stream):
        self._stream = stream
        self._lock = threading.Lock()
        self.arrived = threading.Event()
        self._picture: np.ndarray | None = None
        #: None while reading; then 0 (the parent closed the pipe) or 1 (a bad header)
        self.ended: int | None = None
        threading.Thread(target=self._read, name="usnav-window-read", daemon=True).start()

    def _read(self) -> None:
        while True:
            head = _read_exact(self._stream, _HEADER.size)
            if head is None:
                self._end(0)
                return
            magic, h, w, c = _HEADER.unpack(head)
            if magic != MAGIC:
                print("usnav viewer window: bad picture header", file=sys.stderr)
                self._end(1)
                return
            body = _read_exact(self._stream, h * w * c)
            if body is None:
                self._end(0)
                return
            picture = np.frombuffer(body, np.uint8).reshape((h, w, c) if c > 1 else (h, w))
            with self._lock:
                self._picture = picture
            self.arrived.set()

    def _end(self, code: int) -> None:
        self.ended = code
        self.arrived.set()

    def take(self) -> np.ndarray | None:
        """The newest picture not taken yet (None if none)."""
        with self._lock:
            picture, self._picture = self._picture, None
            self.arrived.clear()
        return picture


def expired_picture(picture: np.ndarray, age_s: float) -> np.ndarray:
    """``picture`` greyed and dimmed under a red STALE banner saying how old it is (the
    renderer's own banner)."""
    import cv2

    from usnav.viewer.render import draw_banner
    from usnav.viewer.state import STALE, Verdict

    grey = picture if picture.ndim == 2 else cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY)
    out = cv2.cvtColor((grey // 2).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    reason = f"no picture from usnav view for {age_s:.0f} s (viewer not responding)"
    draw_banner(out, Verdict(STALE, reason), out.shape[1])
    return out


def main(argv: list[str] | None = None) -> int:
    """Child entry point: show pictures from stdin until closed; cover the last one as STALE
    when the parent sends none for ``expire_after_s``."""
    import cv2  # only the child touches the GUI

    import usnav.viewer.render  # noqa: F401 - now, not when a picture first expires (0.2 s)

    args = sys.argv[1:] if argv is None else argv
    title = args[0] if args else "usnav"
    expire_after_s = float(args[1]) if len(args) > 1 else EXPIRE_AFTER_S
    inbox = _Inbox(sys.stdin.buffer)
    # no toolbar or status bar: the picture alone, pixel for pixel until the user resizes it
    cv2.namedWindow(title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)
    shown = remapped = False
    last: np.ndarray | None = None
    received = 0.0
    expired_shown = -1  # the age (whole seconds) the STALE cover shows, -1: not covered
    while True:
        inbox.arrived.wait(0.05)
        picture = inbox.take()
        if picture is None and inbox.ended is not None:
            return inbox.ended  # the last picture sent was shown first
        if picture is not None:
            last, received, expired_shown = picture, time.monotonic(), -1
            if not shown:
                h, w = picture.shape[:2]
                cv2.resizeWindow(title, w, h)
                shown = True
            cv2.imshow(title, picture)
        elif last is not None:
            age = time.monotonic() - received
            if age > expire_after_s and int(age) != expired_shown:
                cv2.imshow(title, expired_picture(last, age))
                expired_shown = int(age)
        if not shown:
            continue
        key = cv2.waitKey(1) & 0xFF
        if not remapped:  # once, after Qt has shown the window: see remap_when_unmanaged
            remap_when_unmanaged()
            remapped = True
        if key in (ord("q"), 27):
            return 0
        if cv2.getWindowProperty(title, cv2.WND_PROP_VISIBLE) < 1:
            return 0


if __name__ == "__main__":
    sys.exit(main())
