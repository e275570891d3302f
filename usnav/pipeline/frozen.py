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
range) while the probe moved more than ``motion_mm`` at the image's corners. A still probe over
a still scene is not frozen: the overlay is right then, whatever the image does.

Counting changed pixels, not averaging the change: an image mostly black (a water bath's
N-wire phantom, ~99 % of pixels 0) changes by a mean of 0.03 % of its range from frame to frame
while a few wire echoes move (session 41's first rule, a mean under 0.5 %, called 142 of 158
such live frames frozen); measured on PLUS's and the simulator's recordings (notes/session-41.md)
the fraction of pixels changed by more than 2 % of the range is 0.28–0.8 % at least between
consecutive live frames of a phantom in water, 20 % and more for tissue, and 0 for a frozen frame
re-encoded with ±2 grey levels of noise.
"""

from __future__ import annotations

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

#: Every SUBSAMPLE-th pixel in each direction is compared (a 256 × 256 image: 4096 pixels)
SUBSAMPLE = 4


def _thumbnail(image: np.ndarray) -> np.ndarray:
    return np.asarray(image[::SUBSAMPLE, ::SUBSAMPLE], dtype=np.float32)


class FrozenImageMonitor:
    """Whether the newest frame's image is frozen (see the module's docstring).

    Parameters
    ----------
    motion_mm
        The probe's motion at the image's corners, mm, over which an unchanged image is
        frozen (None: nothing is watched).
    max_changed_fraction
        The largest fraction of compared pixels that may have changed (by more than
        :data:`PIXEL_CHANGE` of the image's intensity range) in an image that has not changed.
    """

    def __init__(
        self,
        motion_mm: float | None = FROZEN_MOTION_MM,
        max_changed_fraction: float = MAX_CHANGED_FRACTION,
    ):
        self.motion_mm = motion_mm
        self.max_changed_fraction = float(max_changed_fraction)
        #: the last image that changed (subsampled), its pose (4×4 ``ImageToReference``) and
        #: how much its intensities span
        self._image: np.ndarray | None = None
        self._pose: np.ndarray | None = None
        self._span = 0.0
        #: how far the probe moved since the image last changed, mm (0: it changed now)
        self.moved_mm = 0.0
        #: whether the newest frame is frozen, and whether it is the first of a frozen run
        self.frozen = False
        self.newly_frozen = False
        #: frames found frozen
        self.frozen_frames = 0

    def observe(self, image: np.ndarray, image_to_reference: np.ndarray) -> str:
        """Take one placed frame; return why its image is not the present ("" if it is).

        Parameters
        ----------
        image
            The frame's image (rows, cols), any numeric type.
        image_to_reference
            Its ``ImageToReference`` (pixel → Reference mm), the pose the tracker gave it.
        """
        was_frozen = self.frozen
        self.frozen = self.newly_frozen = False
        if self.motion_mm is None:
            return ""
        small = _thumbnail(image)
        pose = np.asarray(image_to_reference, dtype=np.float64)
        if self._image is None or self._image.shape != small.shape or self._pose is None:
            self._remember(small, pose)
            return ""
        # pixels that are not finite in either image (NaN outside a float image's field of
        # view) are not compared: any comparison with NaN is false, so every live frame was
        # "unchanged"; nothing left to compare (or no finite span) counts as changed
        diff = np.abs(small - self._image)
        finite = np.isfinite(diff)
        changed = (
            float((diff[finite] > PIXEL_CHANGE * self._span).mean())
            if finite.any()
            else float("nan")
        )
        if not changed <= self.max_changed_fraction:
            self._remember(small, pose)
            return ""
        corners = image_corners_mm(np.eye(4), image.shape[:2])  # pixels (col, row, 0)
        self.moved_mm = float(displacements_mm(self._pose, pose, corners)[0])
        if not self.moved_mm > self.motion_mm:
            return ""
        self.frozen = True
        self.newly_frozen = not was_frozen
        self.frozen_frames += 1
        return (
            f"the ultrasound image has not changed while the probe moved {self.moved_mm:.2f} mm: "
            "frozen on the scanner (or nothing in contact, or images coming slower than the "
            "probe moves)? — unfreeze it; margins over a past image are not the present"
        )

    def _remember(self, small: np.ndarray, pose: np.ndarray) -> None:
        self._image = small
        self._pose = pose
        finite = small[np.isfinite(small)]
        self._span = float(finite.max() - finite.min()) if finite.size else float("nan")
        self.moved_mm = 0.0
