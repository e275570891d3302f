"""Watching the patient reference against the tracker between two image checks.

The registration (``ReferenceToMri``) is only as good as the patient reference's hold on the
spine. A reference that is bumped, or a patient who moves against it, makes the registration
in use wrong at once, while the images can say so only when a later window disagrees (8-9 s,
notes/session-37-bump.md). The tracker sees such a move at once: ``ReferenceToTracker`` jumps.

:class:`ReferenceMotionMonitor` keeps, for the registration in use, the reference's poses over
the frames it was last checked on (estimated or confirmed on the images) and measures, at each
frame, how far the reference has moved since: the largest displacement of the frame's image
corners from any of those poses to its own (a point of anatomy fixed in the tracker's frame is
mapped that far from where it was). Beyond
:attr:`usnav.protocol.display.DisplayRules.max_reference_motion_mm` every message is
UNCERTAIN until the images check the registration again on frames whose reference poses
agree (a whole patient moved with the reference is then confirmed, a bumped reference is
contradicted or corrected).

It cannot tell a bumped reference from a moved camera or a patient moved as a whole with
the reference (the registration is still right then): it says "the reference moved" and
waits for the images. Streams that carry only ``ProbeToReference`` cannot be watched.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from usnav.frames import TrackedFrame, TransformStatus
from usnav.protocol.display import REFERENCE_MOVED_PREFIX
from usnav.transforms import TransformRepository


def moved_mm(
    reference_to_tracker_then: np.ndarray,
    reference_to_tracker_now: np.ndarray,
    points_reference_mm: np.ndarray,
) -> float:
    """How far a reference move displaces points of anatomy, mm.

    Parameters
    ----------
    reference_to_tracker_then
        4×4 ``ReferenceToTracker`` (Reference mm → Tracker mm) before, or a stack (n, 4, 4)
        of such poses (the largest displacement from any of them is returned).
    reference_to_tracker_now
        4×4 ``ReferenceToTracker`` after.
    points_reference_mm
        (m, 3) points in Reference mm (as the system placed them before the move).

    Returns
    -------
    float
        The largest distance, mm, between where the points were and where the system now
        places the same anatomy (fixed in the tracker's frame):
        ``‖inv(now) · then · p − p‖``.
    """
    then = np.asarray(reference_to_tracker_then, dtype=np.float64).reshape(-1, 4, 4)
    # one inverse, then a batched product: per frame on the frame path, against up to a
    # window of poses (a batched solve and an einsum took ~2-6x as long)
    change = np.linalg.inv(np.asarray(reference_to_tracker_now, dtype=np.float64)) @ then
    pts = np.asarray(points_reference_mm, dtype=np.float64).reshape(-1, 3)
    moved = pts @ change[:, :3, :3].transpose(0, 2, 1) + change[:, None, :3, 3] - pts
    return float(np.sqrt((moved**2).sum(axis=-1)).max())


def image_corners_mm(image_to_reference: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
    """The four corners of an image (rows, cols) in Reference mm, (4, 3)."""
    rows, cols = image_shape[:2]
    pix = np.array(
        [[0, 0, 0, 1], [cols - 1, 0, 0, 1], [0, rows - 1, 0, 1], [cols - 1, rows - 1, 0, 1]],
        dtype=np.float64,
    )
    return (pix @ np.asarray(image_to_reference, dtype=np.float64).T)[:, :3]


def reference_to_tracker(frame: TrackedFrame, reference: str = "Reference") -> np.ndarray | None:
    """The frame's valid ``ReferenceToTracker`` (4×4), None when it carries none or its status
    is not OK."""
    name = f"{reference}ToTracker"
    try:
        repo = TransformRepository.from_frame(frame)
        if not repo.has(name):
            return None
        tt = repo.get(name)
    except Exception:  # a frame's odd transforms never stop the frame path
        return None
    matrix = np.asarray(tt.matrix, dtype=np.float64)
    if tt.status is not TransformStatus.OK or matrix.shape != (4, 4):
        return None
    if not np.all(np.isfinite(matrix)):
        return None
    return matrix


class ReferenceMotionMonitor:
    """The patient reference's motion since the registration in use was checked on the images.

    A check (an estimate, or a confirmation, on the worker's window) is taken to hold for the
    reference's poses over that window's frames: the estimate may fit any of them. A frame's
    motion is the largest displacement, at its image corners, from any of those poses to its
    own; a reference that moved *during* the window (a bump, a drift) therefore counts at
    once, and a drift cannot hide in an estimate that lags it.

    Parameters
    ----------
    limit_mm
        Motion beyond which a frame's registration is in doubt, mm (None: never).
    window_frames
        How many recent frames a check looks at (the registration worker's window).
    """

    def __init__(self, limit_mm: float | None, window_frames: int = 150) -> None:
        self.limit_mm = limit_mm
        #: (device time s, ReferenceToTracker) of the recent frames
        self._recent: deque[tuple[float, np.ndarray]] = deque(maxlen=max(1, int(window_frames)))
        #: ``ReferenceToTracker`` at the frames the registration in use was last checked on,
        #: (n, 4, 4)
        self._anchor: np.ndarray | None = None
        self._checked_key: tuple[int, float] | None = None
        #: the newest frame's motion since the check, mm (None: not known)
        self.motion_mm: float | None = None
        #: frames that carried a valid ReferenceToTracker (0: the stream cannot be watched)
        self.watched_frames = 0
        #: frames whose registration was put in doubt by the reference's motion
        self.doubted_frames = 0
        #: for the newest frame, when its motion is over the limit: ``inv(ReferenceToTracker
        #: at the check's newest frame) · ReferenceToTracker now`` (Reference mm now →
        #: Reference mm then), else None
        self.reference_change: np.ndarray | None = None
        #: whether the newest frame is the first of a run of doubted frames (a new move)
        self.newly_moved = False

    @property
    def watching(self) -> bool:
        """Whether any frame carried ``ReferenceToTracker`` (else nothing can be said)."""
        return self.watched_frames > 0

    def observe(
        self,
        reference_to_tracker: np.ndarray | None,
        image_to_reference: np.ndarray,
        image_shape: tuple[int, ...],
        *,
        checked_key: tuple[int, float] | None,
        t_device: float = 0.0,
        checked_since_t: float | None = None,
    ) -> str:
        """Take one placed frame and say why its registration is in doubt ("" if it is not).

        Parameters
        ----------
        reference_to_tracker
            The frame's ``ReferenceToTracker`` (None: the stream does not carry it, or it is
            not valid in this frame: nothing is said).
        image_to_reference
            The frame's ``ImageToReference`` (pixel → Reference mm).
        image_shape
            The image's (rows, cols).
        checked_key
            Identifies the registration in use and its last check (its sequence number and
            the host time it was estimated or confirmed); None for a registration never
            checked on the images (never LIVE anyway: nothing is said).
        t_device
            The frame's device time, s.
        checked_since_t
            Device time of the oldest frame the registration's check looked at (None: every
            recent frame, the worker's window;
            :attr:`usnav.registration.estimate.RegistrationEstimate.checked_since_t`).
        """
        was_doubted = self.reference_change is not None
        self.reference_change = None
        self.newly_moved = False
        if reference_to_tracker is None or self.limit_mm is None:
            self.motion_mm = None
            return ""
        self.watched_frames += 1
        self._recent.append((float(t_device), reference_to_tracker))
        if checked_key is None:
            self.motion_mm = None
            return ""
        if checked_key != self._checked_key or self._anchor is None:
            # (re)checked on the recent frames: the reference's poses over them
            self._checked_key = checked_key
            since = -np.inf if checked_since_t is None else checked_since_t
            poses = [pose for t, pose in self._recent if t >= since] or [reference_to_tracker]
            self._anchor = np.stack(poses)
        corners = image_corners_mm(image_to_reference, image_shape)
        self.motion_mm = moved_mm(self._anchor, reference_to_tracker, corners)
        if self.motion_mm <= self.limit_mm:
            return ""
        self.doubted_frames += 1
        self.reference_change = np.linalg.solve(self._anchor[-1], reference_to_tracker)
        self.newly_moved = not was_doubted
        return (
            f"{REFERENCE_MOVED_PREFIX}{self.motion_mm:.1f} mm against the tracker since the "
            f"frames the registration was checked on (over {self.limit_mm:g} mm), re-checking "
            "on the images"
        )
