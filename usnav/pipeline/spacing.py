"""The pixel size a live IMAGE states, against the calibration that places its pixels.

``ImageToProbe`` carries the mm per pixel (as in PLUS) and holds for the depth it was made at.
When the depth is changed on the scanner, the image may keep its size (many scanners and every
frame grabber keep it) while each pixel now spans more or fewer mm; the image-size check
(:meth:`usnav.config.calibration.CalibrationFile.image_size_mismatch`) cannot see that, and every
overlay would be drawn at the old depth's scale. A server that knows the new pixel size says so
in the IMAGE message: the matrix it sends (``ImageToReference`` for PLUS's ``Image_Reference``,
or the scanner's own ``ImageTo…``) has its columns scaled by the mm per pixel, the OpenIGTLink
IMAGE's spacing.

:func:`stated_spacing_mm` reads that spacing from the matrix the probe client keeps
(``[probe] image_transform``); :class:`SpacingWatch` compares it with the calibration's and
says why a frame is in doubt when the two differ by more than :data:`SPACING_TOLERANCE`.

Not stated, so never compared: 1 × 1 mm (PLUS writes ``ElementSpacing 1 1 1`` and an IMAGE
whose matrix holds no scale when it places pixels by its own ``ImageToProbe`` — its
``Image_Image`` device, or the identity a server sends when it could not compute the
transform), a transform the server said was MISSING, and ``image_transform = ""`` (the matrix
ignored). Frames placed without a spatial calibration use the IMAGE's own matrix: nothing to
compare.
"""

from __future__ import annotations

import math

import numpy as np

#: The largest relative difference, per image axis, between the pixel size an IMAGE states
#: and the calibration's before the frame is in doubt: 2 %. Half the depth-scale error the
#: registration's stated uncertainty already allows for the speed of sound (4 % of depth,
#: ``speed_of_sound_error``), so a difference within it is covered by the bound a display is
#: told; a depth preset's step changes the pixel size by 5 % (10 → 10.5 cm) to 25 % (4 → 5 cm),
#: which it catches. Float32 on the wire rounds at 1e-7.
SPACING_TOLERANCE = 0.02
#: A stated pixel size this close to 1 mm on both axes is PLUS's "no spacing" (its IMAGE
#: carries ``ElementSpacing 1 1 1`` and ImageToProbe places the pixels): not compared.
UNIT_SPACING_TOLERANCE = 1e-3
#: How every such doubt begins (what a display or a test looks for).
SPACING_MISMATCH_PREFIX = "the image's pixel size is not the calibration's"


def stated_spacing_mm(matrix: np.ndarray) -> tuple[float, float] | None:
    """The mm per pixel along columns and rows an IMAGE's ``ImageTo…`` matrix states (the
    norms of its first two columns), None when it states none: 1 × 1 mm
    (:data:`UNIT_SPACING_TOLERANCE`), or not finite and positive."""
    at = np.asarray(matrix).item  # six Python floats: ~1 µs a frame, no array made
    sx = math.hypot(at(0, 0), at(1, 0), at(2, 0))
    sy = math.hypot(at(0, 1), at(1, 1), at(2, 1))
    if not (sx > 0 and sy > 0 and math.isfinite(sx) and math.isfinite(sy)):
        return None
    if abs(sx - 1.0) <= UNIT_SPACING_TOLERANCE and abs(sy - 1.0) <= UNIT_SPACING_TOLERANCE:
        return None
    return sx, sy


class SpacingWatch:
    """Compares each frame's stated pixel size with the calibration's (one per calibration in
    use; :meth:`use` when it changes).

    Attributes
    ----------
    doubt
        Why the newest frame compared is in doubt ("" while the sizes agree or none is
        stated): names both sizes, the calibration and what to do.
    newly
        The newest frame began a disagreement (or another one): to be said once in the log.
    """

    def __init__(self) -> None:
        self._expected: tuple[float, float] | None = None
        self._where = ""
        self._said: tuple[float, float] | None = None
        self.doubt = ""
        self.newly = False

    def use(self, spacing_mm: tuple[float, float] | None, where: str) -> None:
        """Compare with ``spacing_mm`` (the calibration's mm per pixel along columns and rows;
        None: frames are placed by their own matrix, nothing to compare) of the calibration
        ``where`` from now on."""
        self._expected = spacing_mm
        self._where = where
        self._said = None

    def see(self, matrix: np.ndarray | None) -> str:
        """Judge one frame by its IMAGE's matrix (None: the frame carries none); returns and
        keeps :attr:`doubt`."""
        self.newly = False
        expected = self._expected
        stated = None if matrix is None or expected is None else stated_spacing_mm(matrix)
        if (
            stated is None
            or expected is None
            or (
                abs(stated[0] - expected[0]) <= SPACING_TOLERANCE * expected[0]
                and abs(stated[1] - expected[1]) <= SPACING_TOLERANCE * expected[1]
            )
        ):
            self.doubt = ""
            self._said = None
            return ""
        said = self._said
        if (  # formatted once per disagreement, not per frame (float32 jitter is not another)
            said is None
            or abs(stated[0] - said[0]) > 1e-3 * said[0]
            or abs(stated[1] - said[1]) > 1e-3 * said[1]
        ):
            self.newly = True
            self._said = stated
            self.doubt = (
                f"{SPACING_MISMATCH_PREFIX}: the scanner states {stated[0]:.3g} × "
                f"{stated[1]:.3g} mm per pixel, {self._where} was made for {expected[0]:.3g} × "
                f"{expected[1]:.3g} mm (the depth changed on the scanner?), so the overlay may "
                "be drawn at the wrong scale — recalibrate at this depth, or give the "
                "calibration made for it (or set the scanner back)"
            )
        return self.doubt
