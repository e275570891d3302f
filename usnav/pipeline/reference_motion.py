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

import numpy as np

from usnav.frames import TrackedFrame, TransformStatus
from usnav.protocol.display import REFERENCE_BREATH_S, REFERENCE_MOVED_PREFIX
from usnav.transforms import TransformRepository

#: Seconds of device time over which the reference's poses are averaged to see a drift through
#: breathing (:data:`usnav.protocol.display.REFERENCE_BREATH_S`, where the figures are)
BREATH_AVERAGE_S = REFERENCE_BREATH_S

#: How many breaths back the swing of breathing is measured (its smallest over them)
BREATH_SWING_SPANS = 3

#: Seconds the poses are averaged over before breathing's swing is measured (a breath of
#: 3 s or longer keeps ~95 % of its swing; the tracker's frame-to-frame jitter averages out)
SWING_SMOOTH_S = 0.5

#: At most this many recent frames kept for it (three such spans at 60 Hz).
BREATH_MAX_FRAMES = 1080

#: Why a frame's registration is in doubt when the check in use looked at frames from before
#: the device's clock went back (session 43: the newest frame had been taken as the checked
#: pose, and a reference 139 mm away was LIVE again after 6 frames).
UNHELD_CHECK_DOUBT = (
    "patient reference not watched: the registration was checked on frames from before the "
    "device's clock went back (another recording, or a restarted server?); re-checking on the "
    "images"
)


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


def displacements_mm(
    then_tracker: np.ndarray, now_tracker: np.ndarray, points_reference_mm: np.ndarray
) -> np.ndarray:
    """For each pose of a stack, the largest distance between where it and the pose now put
    the same points, in the tracker's frame, mm.

    Parameters
    ----------
    then_tracker
        (n, 4, 4) ``ReferenceToTracker`` poses (Reference mm → Tracker mm), or averages of such
        poses (a mean of matrices maps each point to the mean of its positions).
    now_tracker
        4×4 ``ReferenceToTracker`` now (or such an average).
    points_reference_mm
        (m, 3) points in Reference mm.

    Returns
    -------
    numpy.ndarray
        (n,) ``max over points ‖then · p − now · p‖``; for rigid poses this is
        :func:`moved_mm` of each pose alone (a rigid ``inv(now)`` keeps lengths).
    """
    then = np.asarray(then_tracker, dtype=np.float64).reshape(-1, 4, 4)
    now = np.asarray(now_tracker, dtype=np.float64)
    pts = np.asarray(points_reference_mm, dtype=np.float64).reshape(-1, 3)
    homogeneous = np.ones((4, len(pts)))
    homogeneous[:3] = pts.T
    moved = (then[:, :3, :] - now[:3, :]) @ homogeneous  # (n, 3, m), Tracker mm
    return np.sqrt(np.einsum("nij,nij->nj", moved, moved).max(axis=1))


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
    reference's poses over that window's frames: the estimate may fit any of them. The
    patient breathes, and the reference clamped to the spine moves with it (1.96 ± 1.32 mm at
    a spinous-process clamp, :data:`BREATH_AVERAGE_S`): the registration is right at every
    phase of the breath, so breathing must not count. A frame's motion is the largest of
    four displacements at its image corners (mm):

    - *a step*: from the nearest of the poses the check saw and of the last breath's poses
      (a breathing patient's poses recur within a breath; a bumped reference leaves them all);
    - *a drift*: the largest between the breath-averaged pose (the mean over
      ``breath_average_s``) now and at any checked frame (a drift, or a move, that outlasts a
      breath moves the average; breathing does not);
    - *a step inside the checked frames*: the largest step any checked frame made, when it
      arrived, from the breath before it (a check on frames from both sides of a move says
      nothing about either side);
    - *a drift's onset*, before the average shows it: the largest displacement from any
      checked pose (session 38's measure) less the swing of breathing alone — the smallest
      extent of the reference's poses (averaged over :data:`SWING_SMOOTH_S`) over each of the
      last :data:`BREATH_SWING_SPANS` breaths before the check (a drift widens the newest
      breaths, not those before it).

    ``breath_average_s=None`` keeps the session-38 rule: the largest displacement from any
    checked pose (every breath over the limit is then a move).

    A frame is also in doubt when its *step* alone (the first of the four) exceeds
    ``step_limit_mm``: a sudden move under ``limit_mm`` (a 1.5 mm knock) can still put a
    registration that was ~0.6 mm off over 2 mm off, and a step, unlike the other three, does
    not grow with breathing or jitter (its poses recur; session 40).

    Parameters
    ----------
    limit_mm
        Motion beyond which a frame's registration is in doubt, mm (None: never, and nothing
        is watched).
    window_frames
        How many recent frames a check looks at (the registration worker's window).
    breath_average_s
        Seconds of device time a breath is averaged over (None: no breathing allowed for).
    step_limit_mm
        A step (the distance from the nearest pose the check or the breath before it saw)
        beyond which a frame's registration is in doubt, mm (None: only ``limit_mm``).
    """

    def __init__(
        self,
        limit_mm: float | None,
        window_frames: int = 150,
        breath_average_s: float | None = BREATH_AVERAGE_S,
        step_limit_mm: float | None = None,
    ) -> None:
        self.limit_mm = limit_mm
        self.step_limit_mm = step_limit_mm
        #: the check during which a sudden move was said: it stays said until another check
        #: (a step near the limit flickers with the tracker's jitter)
        self._stepped_key: tuple[int, float] | None = None
        #: the newest frame's step (its distance from the nearest pose the check, or the
        #: breath before it, saw, or a larger step inside the checked frames), mm (None: not
        #: known)
        self.step_mm: float | None = None
        self.breath_average_s = breath_average_s
        self.window_frames = max(1, int(window_frames))
        #: the recent frames, oldest first (device time order): more than a window when
        #: breathing is allowed for (at least a breath)
        self._recent = _Recent(
            self.window_frames
            if breath_average_s is None
            else max(self.window_frames, BREATH_MAX_FRAMES)
        )
        #: ``ReferenceToTracker`` at the frames the registration in use was last checked on,
        #: (n, 4, 4)
        self._anchor: np.ndarray | None = None
        #: the poses a step is judged against: the checked frames' and the last breath's
        self._step_poses: np.ndarray | None = None
        #: the checked frames' breath averages (those that span a breath), (k, 4, 4)
        self._anchor_means: np.ndarray | None = None
        #: the largest step a checked frame made from the breath before it, mm
        self._inside_step_mm = 0.0
        #: how far breathing alone swung the reference before the check, mm
        self._swing_mm = 0.0
        self._checked_key: tuple[int, float] | None = None
        #: whether the check in use looked at frames no longer held (the device's clock went
        #: back after them): its poses are unknown, so every frame is in doubt until the next
        self._unheld = False
        #: device time of the newest frame that stepped over the limit from the breath before
        self._last_step_t = -np.inf
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

    def _see(self, t_device: float, pose: np.ndarray, corners: np.ndarray) -> np.ndarray | None:
        """Keep a frame with its step from the breath before it and its breath mean (the mean
        pose over the last ``breath_average_s``: breathing averages out); return that mean
        (None until the frames seen since the last step span a breath: a step over the limit
        starts it afresh, a mean across a move is neither pose)."""
        span = self.breath_average_s
        recent = self._recent
        if recent.count and t_device < recent.times[-1]:
            recent.clear()  # device time went back: a recording played again
            self._last_step_t = -np.inf
        mean = None
        step = 0.0
        if span is not None and recent.count:
            times = recent.times
            first = int(np.searchsorted(times, t_device - span))
            breath = recent.poses[first:]
            if len(breath):
                # from the breath before it, or from what was seen of it (its frame before
                # is among them: breathing moves a fraction of a mm from frame to frame)
                step = float(displacements_mm(breath, pose, corners).min())
            if step > (self.limit_mm or np.inf):
                self._last_step_t = t_device
            if t_device - max(times[0], self._last_step_t) >= span:
                mean = (breath.sum(axis=0) + pose) / (len(breath) + 1)
        recent.append(t_device, pose, mean, step)
        return mean

    def _anchor_on(
        self, t_device: float, checked_since_t: float | None, corners: np.ndarray
    ) -> None:
        """Take the frames a new check looked at (from ``checked_since_t``; None: the last
        window), the poses a step is judged against, and how far breathing alone swung the
        reference before the check (at ``corners``, Reference mm)."""
        recent = self._recent
        n = recent.count
        times = recent.times[:n]
        if checked_since_t is None:
            first, self._unheld = max(0, n - self.window_frames), False
        else:
            first = int(np.searchsorted(times, checked_since_t))
            # a check whose frames all came after every frame held: the device's clock went
            # back since (another recording, a restarted server) and those frames were let go
            # — the newest frame is no pose the check saw, so nothing is anchored until the
            # next check
            self._unheld = first >= n
            first = min(first, n - 1)
        self._anchor = recent.poses[first:n].copy()
        known = ~np.isnan(recent.means[first:n, 0, 0])
        self._anchor_means = recent.means[first:n][known].copy() if known.any() else None
        self._inside_step_mm = float(recent.steps[first:n].max())
        self._step_poses = self._anchor
        if self.breath_average_s is not None:
            # ... but not from before the newest step (a pose left before a move is not one
            # of this breath's: going back there is a move too)
            breath = int(np.searchsorted(times, t_device - self.breath_average_s))
            stepped = np.flatnonzero(recent.steps[:n] > (self.limit_mm or 0.0))
            if len(stepped):
                breath = max(breath, int(stepped[-1]))
            self._step_poses = recent.poses[min(first, breath) : n].copy()
            self._swing_mm = self._breath_swing_mm(t_device, corners)

    def _breath_swing_mm(self, t_device: float, corners: np.ndarray) -> float:
        """How far breathing alone swings the reference: the smallest extent of ``corners``'
        positions (Reference mm) over each of the last :data:`BREATH_SWING_SPANS` breaths since
        the newest step (a drift widens the newest breaths, not the ones before it began)."""
        span = self.breath_average_s
        recent = self._recent
        assert span is not None
        times, poses = recent.times, recent.poses
        since = max(self._last_step_t, t_device - BREATH_SWING_SPANS * span)
        swings = []
        for k in range(BREATH_SWING_SPANS):
            start, end = t_device - (k + 1) * span, t_device - k * span
            if k > 0 and (start < since or start < times[0]):
                break  # a part of a breath says less than the breaths already taken
            inside = (times >= max(start, since)) & (times <= end)
            if not inside.any():
                break
            chosen = poses[inside]
            positions = np.einsum("nij,mj->nmi", chosen[:, :3, :3], corners)
            positions += chosen[:, None, :3, 3]
            # over SWING_SMOOTH_S: the tracker's jitter is no breath (a breath hardly changes)
            dt = float(np.median(np.diff(times[inside]))) if len(chosen) > 1 else 0.0
            width = round(SWING_SMOOTH_S / dt) if dt > 0 else 1
            if 1 < width < len(positions):
                sums = np.cumsum(positions, axis=0)
                sums[width:] = sums[width:] - sums[:-width]
                positions = sums[width - 1 :] / width
            extent = positions.max(axis=0) - positions.min(axis=0)  # (m, 3)
            swings.append(float(np.sqrt((extent**2).sum(axis=1)).max()))
        return min(swings, default=0.0)

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
            The frame's device time, s (breathing is told apart by it).
        checked_since_t
            Device time of the oldest frame the registration's check looked at (None: every
            recent frame, the worker's window;
            :attr:`usnav.registration.estimate.RegistrationEstimate.checked_since_t`).
        """
        was_doubted = self.reference_change is not None
        self.reference_change = None
        self.newly_moved = False
        if reference_to_tracker is None or self.limit_mm is None:
            self.motion_mm = self.step_mm = None
            return ""
        self.watched_frames += 1
        corners = image_corners_mm(image_to_reference, image_shape)
        t_device = float(t_device)
        average = self._see(t_device, reference_to_tracker, corners)
        if checked_key is None:
            self.motion_mm = self.step_mm = None
            return ""
        if checked_key != self._checked_key or self._anchor is None:
            self._checked_key = checked_key
            self._anchor_on(t_device, checked_since_t, corners)
        assert self._anchor is not None and self._step_poses is not None
        if self._unheld:
            self.motion_mm = self.step_mm = None
            self.doubted_frames += 1
            return UNHELD_CHECK_DOUBT
        if self.breath_average_s is None:
            # one pass: the farthest checked pose is the motion, the nearest the step
            moved = displacements_mm(self._anchor, reference_to_tracker, corners)
            self.motion_mm, step = float(moved.max()), float(moved.min())
        else:
            # the checked poses are the newest of the step's poses: one pass serves both
            moved = displacements_mm(self._step_poses, reference_to_tracker, corners)
            step = float(moved.min())
            drift = 0.0
            if average is not None and self._anchor_means is not None:
                drift = float(displacements_mm(self._anchor_means, average, corners).max())
            # a drift's onset, before the average shows it: the farthest checked pose, less
            # the swing the check saw (a breath's poses swing that far and come back)
            onset = float(moved[-len(self._anchor) :].max()) - self._swing_mm
            self.motion_mm = max(step, drift, self._inside_step_mm, onset)
        # a check on frames from both sides of a sudden move says nothing about either side
        self.step_mm = step = max(step, self._inside_step_mm)
        stepped = self.step_limit_mm is not None and step > self.step_limit_mm
        if stepped:
            self._stepped_key = checked_key
        elif checked_key == self._stepped_key:
            stepped = True  # until the images check again
        if self.motion_mm <= self.limit_mm and not stepped:
            return ""
        self.doubted_frames += 1
        self.reference_change = np.linalg.solve(self._anchor[-1], reference_to_tracker)
        self.newly_moved = not was_doubted
        if self.motion_mm > self.limit_mm:
            over = f"over {self.limit_mm:g} mm"
        else:
            over = f"a sudden move over {self.step_limit_mm:g} mm"
        return (
            f"{REFERENCE_MOVED_PREFIX}{self.motion_mm:.1f} mm against the tracker since the "
            f"frames the registration was checked on ({over}), re-checking on the images"
        )


class _Recent:
    """The recent frames as arrays, oldest first (at most ``capacity``): device times (s),
    ``ReferenceToTracker`` poses, their breath means (NaN until known) and their
    steps from the breath before them (mm). The arrays hold twice the capacity, so dropping
    the oldest is a moved start and, once per ``capacity`` frames, one copy."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, int(capacity))
        size = 2 * self.capacity
        self._times = np.zeros(size)
        self._poses = np.zeros((size, 4, 4))
        self._means = np.full((size, 4, 4), np.nan)
        self._steps = np.zeros(size)
        self._start = 0
        self.count = 0

    def clear(self) -> None:
        self._start = 0
        self.count = 0

    @property
    def times(self) -> np.ndarray:
        return self._times[self._start : self._start + self.count]

    @property
    def poses(self) -> np.ndarray:
        return self._poses[self._start : self._start + self.count]

    @property
    def means(self) -> np.ndarray:
        return self._means[self._start : self._start + self.count]

    @property
    def steps(self) -> np.ndarray:
        return self._steps[self._start : self._start + self.count]

    def append(
        self,
        t_device: float,
        pose: np.ndarray,
        mean: np.ndarray | None,
        step_mm: float,
    ) -> None:
        arrays = (self._times, self._poses, self._means, self._steps)
        if self.count == self.capacity:
            self._start += 1
            self.count -= 1
        if self._start + self.count == len(self._times):  # the end: move the frames to the front
            for array in arrays:
                array[: self.count] = array[self._start : self._start + self.count]
            self._start = 0
        i = self._start + self.count
        self._times[i] = t_device
        self._poses[i] = pose
        self._means[i] = np.nan if mean is None else mean
        self._steps[i] = step_mm
        self.count += 1
