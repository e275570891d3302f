"""A frozen ultrasound image: the scanner (or its video) frozen while the probe moves on.

The scanner's freeze button, or a frame grabber capturing a frozen screen (PLUS's usual way
to take any scanner's images), keeps delivering the same image while the tracker keeps
delivering the probe's live pose. Every overlay is then drawn at the probe's present plane
over an image of a past one, and the registration would be fed images that do not belong to
their poses. Live ultrasound does not repeat itself once the probe has moved: speckle
decorrelates within about a beam width (1–2 mm across the image plane), and the scanner's
electronic noise changes every frame.

:class:`FrozenImageMonitor` says a frame is frozen when its image has not changed since the
last image that did (of every :data:`SUBSAMPLE`-th pixel finite in both, at most
:data:`MAX_CHANGED_FRACTION` differ by more than :data:`PIXEL_CHANGE` of that image's intensity
range and, in an integer image, by more than :data:`NOISE_GREY_LEVELS` grey levels) while the
probe moved more than ``motion_mm`` at the image's corners. A still probe over a still scene is
not frozen: the overlay is right then, whatever the image does.

Counting changed pixels, not averaging the change: an image mostly black (a water bath's
N-wire phantom, ~99 % of pixels 0) changes by a mean of 0.03 % of its range from frame to frame
while a few wire echoes move (session 41's first rule, a mean under 0.5 %, called 142 of 158
such live frames frozen); measured on PLUS's and the simulator's recordings (notes/session-41.md)
the fraction of pixels changed by more than 2 % of the range is 0.28–0.8 % at least between
consecutive live frames of a phantom in water, 20 % and more for tissue, and 0 for a frozen frame
re-encoded with ±2 grey levels of noise. On an image of narrow range 2 % of it is less than that
noise (PLUS's water-tank video: its frames span 28–232 grey levels, 2 % of that 0.6–4.6, and a
third of its noisy repeats were taken for new images): the floor of 4 grey levels (two ±2
captures differ by at most 4) recognised every one, and its live frames still changed 0.41 %
of their pixels at least (notes/session-43-noise.md).

A repeated image is not a frozen one. PLUS usually takes a scanner's images with a frame grabber
(``MmfVideo``, Epiphan) that captures the scanner's screen at 30 frames/s while the scanner
updates its image 8–15 times a second: each image arrives 2–4 times, each time with a new
tracker pose. The image belongs to its first arrival (whose pose the temporal calibration
paired with it); its repeats' poses are 33–130 ms later (0.5–3.6 mm at 14–28 mm/s). Within
``repeat_s`` (:data:`REPEAT_S`) of its first arrival an unchanged image is such a *repeat*:
:attr:`FrozenImageMonitor.repeat` says so, and :attr:`~FrozenImageMonitor.image_pose` is its
first arrival's pose, where its margins are to be drawn; it is never called frozen then,
whatever the probe did, since no scanner stops updating for so short a time that a slow one
would not too. An image unchanged for longer is
frozen once the probe moved more than ``motion_mm`` from its first arrival's pose (session 41's
rule, measured from that pose); while the probe stays within ``motion_mm`` of it (a still probe
over an unchanged image: never flagged, as before) it is still a repeat, placed at its first
arrival's pose (session 41 placed it at the frame's own, up to ``motion_mm`` off).

Which frame an image first came with is decided on every received frame
(:meth:`FrozenImageMonitor.see`, cheap: every 16th pixel), so that a first arrival the frame path
skipped (the newest frame wins there) is still the one a repeat is drawn at;
:meth:`FrozenImageMonitor.judge` then classifies the frame the frame path takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from usnav.pipeline.reference_motion import displacements_mm, image_corners_mm

#: The probe's motion, mm at the image's corners, over which an unchanged image is frozen:
#: about twice the elevational beam width, over which live speckle no longer correlates
FROZEN_MOTION_MM = 2.0

#: A pixel has changed when it differs by more than this fraction of the image's intensity
#: range (5 grey levels of 255: above a compressed video's re-encoding noise)
PIXEL_CHANGE = 0.02

#: An image "has not changed" when at most this fraction of its compared pixels changed (a
#: frozen frame: 0; the sparsest live image measured, an N-wire phantom in water: 0.28 %)
MAX_CHANGED_FRACTION = 0.0005

#: How long after its first arrival an unchanged image is a repeat of it, s (the device's clock):
#: a scanner updating 4 times a second or faster behind any faster frame grabber (8–15 per
#: second is usual, each image then repeated for at most 125 ms; at 30 frames/s the repeats of
#: one image span at most 3 grabber frames, 100 ms)
REPEAT_S = 0.25

#: ... and by more than this many grey levels, in an integer image (a frame grabber's
#: re-encoding noise is a few grey levels whatever the image's range: ±2 per capture, two
#: captures up to 4 apart — more than 2 % of a narrow range: PLUS's water-tank video's frames
#: span 28–232); a float image (any scale) has no grey levels and is judged by the range alone
NOISE_GREY_LEVELS = 4

#: Every SUBSAMPLE-th pixel in each direction is compared (a 256 × 256 image: 4096 pixels)
SUBSAMPLE = 4


def _thumbnail(image: np.ndarray) -> np.ndarray:
    return np.asarray(image[::SUBSAMPLE, ::SUBSAMPLE], dtype=np.float32)


def _pixel_tolerance(image: np.ndarray, small: np.ndarray | None) -> float:
    """How much a pixel of ``image`` (its thumbnail ``small``) may differ and still be the
    same: :data:`PIXEL_CHANGE` of the thumbnail's intensity range, and at least
    :data:`NOISE_GREY_LEVELS` in an integer image (NaN: no finite pixel)."""
    if small is None:
        return float("nan")
    finite = small[np.isfinite(small)]
    if not finite.size:
        return float("nan")
    tolerance = PIXEL_CHANGE * float(finite.max() - finite.min())
    if np.issubdtype(np.asarray(image).dtype, np.integer):
        tolerance = max(tolerance, float(NOISE_GREY_LEVELS))
    return tolerance


def _unchanged(
    before: np.ndarray, tolerance: float, after: np.ndarray, max_fraction: float
) -> bool:
    """Whether the thumbnail ``after`` shows the same image as ``before``: at most
    ``max_fraction`` of the pixels finite in both differ by more than ``tolerance``
    (:func:`_pixel_tolerance` of ``before``). Pixels not finite in either (NaN outside a float
    image's field of view) are not compared — any comparison with NaN is false, so every live
    frame was "unchanged" —; nothing left to compare counts as changed."""
    diff = np.abs(after - before)
    finite = np.isfinite(diff)
    if not finite.any():
        return False
    changed = float((diff[finite] > tolerance).mean())
    return changed <= max_fraction


@dataclass(frozen=True)
class Arrival:
    """Which received frame a frame's image first came with (:meth:`FrozenImageMonitor.see`).

    Attributes
    ----------
    first
        What was given to :meth:`~FrozenImageMonitor.see` with the image's first arrival (the
        frame itself when its image is new).
    repeats
        How many frames carried the image unchanged since its first arrival, this one
        included (0: the image is new in this frame).
    """

    first: Any
    repeats: int = 0

    @property
    def new(self) -> bool:
        """Whether the image is new in this frame."""
        return self.repeats == 0


class FrozenImageMonitor:
    """Whether the newest frame's image is new, a repeat of an earlier frame's, or frozen (see
    the module's docstring).

    Parameters
    ----------
    motion_mm
        The probe's motion at the image's corners, mm, over which an image unchanged for
        longer than ``repeat_s`` is frozen (None: freezes are not watched).
    max_changed_fraction
        The largest fraction of compared pixels that may have changed (by more than
        :data:`PIXEL_CHANGE` of the image's intensity range) in an image that has not changed.
    repeat_s
        How long after its first arrival (s, the device's clock) an unchanged image is a repeat
        of it whatever the probe did (later: only while the probe stays within ``motion_mm``;
        None: no frame is a repeat, each is placed at its own pose and an unchanged image is
        judged by the freeze rule alone, session 41's behaviour).
    """

    def __init__(
        self,
        motion_mm: float | None = FROZEN_MOTION_MM,
        max_changed_fraction: float = MAX_CHANGED_FRACTION,
        repeat_s: float | None = REPEAT_S,
    ):
        self.motion_mm = motion_mm
        self.max_changed_fraction = float(max_changed_fraction)
        self.repeat_s = repeat_s
        # see(): the image of the last arrival that changed (subsampled), how much a pixel of
        # it may differ and be the same (_pixel_tolerance), what came with it and how many
        # frames repeated it since
        self._image: np.ndarray | None = None
        self._tolerance = 0.0
        self._first: Any = None
        self._repeats = 0
        #: how far the probe moved since the image's first arrival, mm (0: it is new)
        self.moved_mm = 0.0
        #: whether the newest frame is frozen, and whether it is the first of a frozen run
        self.frozen = False
        self.newly_frozen = False
        #: whether the newest frame repeats the image of an earlier one (a frame grabber faster
        #: than the scanner, or a still probe over an unchanged image): its margins belong at
        #: that frame's pose (:attr:`image_pose`)
        self.repeat = False
        #: how long ago the newest frame's image first came, s by the device's clock (0: new;
        #: None: a frame without a time)
        self.image_age_s: float | None = 0.0
        #: the pose (4×4 ``ImageToReference``) the newest frame's image is to be placed at: its
        #: first arrival's while it repeats, else the frame's own (None before any judgment)
        self.image_pose: np.ndarray | None = None
        #: frames found frozen, and frames found repeating an earlier frame's image
        self.frozen_frames = 0
        self.repeated_frames = 0

    @property
    def watching(self) -> bool:
        """Whether anything is watched (freezes or repeats)."""
        return self.motion_mm is not None or self.repeat_s is not None

    def see(self, image: np.ndarray, token: Any) -> Arrival:
        """Take one received frame's image; say which frame it first came with.

        Called on every frame received, in order (the frame path may skip some: the newest
        wins there), so that a repeat is placed at its image's true first arrival.

        Parameters
        ----------
        image
            The frame's image (rows, cols), any numeric type.
        token
            What stands for this frame (the pipeline gives the frame itself): returned as
            :attr:`Arrival.first` by this call and by the calls of the frames that repeat it.
        """
        if not self.watching:
            return Arrival(token)
        small = _thumbnail(image) if np.size(image) else None
        if (
            small is None
            or self._image is None
            or small.shape != self._image.shape
            or not _unchanged(self._image, self._tolerance, small, self.max_changed_fraction)
        ):
            self._image = small
            self._tolerance = _pixel_tolerance(image, small)
            self._first, self._repeats = token, 0
            return Arrival(token)
        self._repeats += 1
        return Arrival(self._first, self._repeats)

    def judge(
        self,
        arrival: Arrival,
        image_to_reference: np.ndarray,
        t_s: float | None,
        first_image_to_reference: np.ndarray,
        first_t_s: float | None,
        image_shape: tuple[int, int],
    ) -> str:
        """Judge the frame the frame path takes; return why its image is not the present (""
        if it is: new, a repeat, or unchanged on a still probe). :attr:`repeat`,
        :attr:`image_pose` and :attr:`image_age_s` say the rest: an unchanged image that is
        not frozen repeats its first frame's and belongs to that frame's pose (a slow
        scanner's repeat within ``repeat_s``, or an image unchanged for longer while the probe
        stayed within ``motion_mm`` of that pose).

        Parameters
        ----------
        arrival
            What :meth:`see` said of this frame.
        image_to_reference, t_s
            The frame's ``ImageToReference`` (pixel → Reference mm, the pose the tracker gave
            it) and its device time, s (None: unknown — then it is never a repeat).
        first_image_to_reference, first_t_s
            The same of the frame the image first came with (``arrival.first``; the frame's
            own when the image is new).
        image_shape
            (rows, cols) of the image: the motion is measured at its corners.
        """
        was_frozen = self.frozen
        self.frozen = self.newly_frozen = self.repeat = False
        pose = np.asarray(image_to_reference, dtype=np.float64)
        self.image_pose = pose
        self.moved_mm = 0.0
        self.image_age_s = 0.0
        if arrival.new or not self.watching:
            return ""
        first_pose = np.asarray(first_image_to_reference, dtype=np.float64)
        age = None if t_s is None or first_t_s is None else float(t_s) - float(first_t_s)
        self.image_age_s = age
        within = self.repeat_s is not None and age is not None and 0.0 <= age <= self.repeat_s
        if not within and self.motion_mm is not None:
            corners = image_corners_mm(np.eye(4), image_shape)  # pixels (col, row, 0)
            self.moved_mm = float(displacements_mm(first_pose, pose, corners)[0])
            if self.moved_mm > self.motion_mm:
                return self._frozen(was_frozen)
        if self.repeat_s is None:  # session 41: each frame at its own pose
            return ""
        self.repeat = True
        self.image_pose = first_pose
        self.repeated_frames += 1
        return ""

    def _frozen(self, was_frozen: bool) -> str:
        self.frozen = True
        self.newly_frozen = not was_frozen
        self.frozen_frames += 1
        return (
            f"the ultrasound image has not changed while the probe moved {self.moved_mm:.2f} mm: "
            "frozen on the scanner (or nothing in contact, or images coming slower than the "
            "probe moves)? — unfreeze it; margins over a past image are not the present"
        )

    def observe(
        self, image: np.ndarray, image_to_reference: np.ndarray, t_s: float | None = None
    ) -> str:
        """:meth:`see` and :meth:`judge` of one frame at once (every frame taken); return why
        its image is not the present ("" if it is).

        Parameters
        ----------
        image
            The frame's image (rows, cols), any numeric type.
        image_to_reference
            Its ``ImageToReference`` (pixel → Reference mm), the pose the tracker gave it.
        t_s
            Its device time, s (None: unknown — no frame is then a repeat).
        """
        pose = np.asarray(image_to_reference, dtype=np.float64)
        arrival = self.see(image, (pose, t_s))
        first_pose, first_t_s = arrival.first
        return self.judge(arrival, pose, t_s, first_pose, first_t_s, image.shape[:2])
