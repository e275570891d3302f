"""Is the phantom definition mirrored? Its mirror images fitted to the same frames.

Frames: **Image** (px of the MF image), **Probe**, **Phantom** (the definition's coordinates),
mm.

A phantom definition and its mirror image label every image the same way: the dots are
matched to wires from the image alone (right to left, top to bottom), the N ratios are the same
and a reflection keeps every distance, so every frame's dots fit both (session 44: PLUS's fCal
1.2 definition with its wires' x mirrored, x → 70 − x, segments all 188 + 94 frames as the right
one does). Only the tracked poses tell them apart: as the probe tilts and slides across the Ns,
the dots move as the real wires are placed, not as their mirror image is. A calibration from a
mirrored definition is the image flipped about its centre — on PLUS's data 60–68 mm off at the
image corners, 2 mm at the centre — and its errors are only moderately larger (PRE3D 1.38 and
2.15 mm against 1.16 and 1.25 mm), which the validation ratio flagged by a hair (1.56, limit 1.5).

So the calibration frames are also fitted to each mirror image of the definition (mirrored
across the Ns, along the wires, and across the stack of patterns, each about the centre of the
wires' end points), with the same solver, and each fit is judged on frames it was not fitted to:
the validation recording, else a contiguous 4-fold cross-validation of the calibration frames.
When a mirror image fits those frames better than the definition as given (:data:`MAX_RATIO`),
the definition is taken to be mirrored: :func:`usnav.calibration.spatial.calibrate_spatial`
refuses it (with a validation recording) or warns (without one, the evidence is weaker).

Measured on PLUS's fCal recordings (``notes/session44_mirror.py``; docs/calibration.md): the
ratio PRE3D(as given) / PRE3D(mirror) on the validation recording is 0.57 with the right
definition (0.38 paired at +0.4 s; at most 0.89 over 30–94-frame stretches of the calibration
recording) and 1.82 with its wires' x mirrored (2.50 at +0.4 s; at least 1.08 over those
stretches); the mirrors along the wires and across the stack give at most 0.33 with the right
definition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from usnav.calibration.phantom import CalibrationConfig
from usnav.calibration.spatial import (
    SegmentedSequence,
    percentile_stats,
    reprojection_errors_mm,
    solve_image_to_probe,
)

#: PRE3D(as given) / PRE3D(mirror image) on the held-out frames above this: the definition is
#: taken to be mirrored. 1: the better fit wins; PLUS's data put the right definition at ≤ 0.89
#: and a mirrored one at ≥ 1.08 (module docstring), no threshold fitted between them.
MAX_RATIO = 1.0
#: Folds of the cross-validation without a validation recording.
FOLDS = 4


@dataclass(frozen=True)
class MirrorFit:
    """One mirror image of the definition fitted to the calibration frames.

    Attributes
    ----------
    name
        ``"across the Ns"``, ``"along the wires"`` or ``"across the patterns"``.
    normal
        Unit normal of the mirror plane, Phantom frame.
    given_mm, mirrored_mm
        PRE3D (mean of the lowest 95 %) on the held-out frames of the definition as given and
        of this mirror image, mm.
    apart_mm
        Largest distance between where the two calibrations put an image corner, mm (Probe
        frame): how far off the calibration is if the mirror image is the right definition.
    """

    name: str
    normal: np.ndarray
    given_mm: float
    mirrored_mm: float
    apart_mm: float

    @property
    def ratio(self) -> float:
        """PRE3D(as given) / PRE3D(mirror image): above :data:`MAX_RATIO`, mirrored."""
        return self.given_mm / self.mirrored_mm if self.mirrored_mm > 0 else float("inf")

    def coordinate(self) -> str:
        """The Phantom coordinate the mirror flips (``"x"``...), or a description."""
        k = int(np.argmax(np.abs(self.normal)))
        return f"{'xyz'[k]} coordinates" if abs(self.normal[k]) > 0.9 else "coordinates"


@dataclass(frozen=True)
class MirrorCheck:
    """The definition against its mirror images (:func:`mirror_check`).

    Attributes
    ----------
    fits
        One per mirror image that could be fitted.
    held_out
        What the fits were judged on: ``"the validation recording"`` or ``"held-out
        calibration frames"`` (cross-validation).
    """

    fits: tuple[MirrorFit, ...]
    held_out: str

    @property
    def worst(self) -> MirrorFit | None:
        """The mirror image that fits best against the definition (largest ratio)."""
        return max(self.fits, key=lambda f: f.ratio, default=None)

    @property
    def mirrored(self) -> bool:
        """A mirror image fits the held-out frames better than the definition as given."""
        w = self.worst
        return w is not None and w.ratio > MAX_RATIO

    def problem(self) -> str:
        """What a mirrored definition is told (one line, no file name; '' when not mirrored)."""
        w = self.worst
        if w is None or not self.mirrored:
            return ""
        return (
            f"the phantom definition mirrored {w.name} fits {self.held_out} better than the "
            f"definition as given (PRE3D {w.mirrored_mm:.2f} mm against {w.given_mm:.2f} mm): "
            "the definition is probably mirrored, and the calibration from it up to "
            f"{w.apart_mm:.0f} mm off in the image"
        )

    def hint(self) -> str:
        """What to check (one line)."""
        w = self.worst
        what = w.coordinate() if w is not None else "coordinates"
        return (
            f"check the <Wire> end points' {what} against the phantom's drawing: a mirrored "
            "definition shows the same dots in every image, only the tracked poses tell it apart"
        )

    def as_dict(self) -> dict:
        return {
            "held_out": self.held_out,
            "max_ratio": MAX_RATIO,
            "mirrored": self.mirrored,
            "fits": [
                {
                    "mirror": f.name,
                    "given_mm": f.given_mm,
                    "mirrored_mm": f.mirrored_mm,
                    "ratio": f.ratio,
                    "apart_mm": f.apart_mm,
                }
                for f in self.fits
            ],
        }


def phantom_mirrors(config: CalibrationConfig) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The definition's three mirror planes: (name, unit normal, a point on it), Phantom mm.

    Across the Ns (normal = the N plane's normal × the first wire's direction), along the
    wires (normal = that direction) and across the patterns (normal = the N plane's normal),
    each through the centroid of every wire's end points.
    """
    first = config.patterns[0]
    along = first.wires[0].direction
    stack = first.normal
    across = np.cross(stack, along)
    ends = np.array([e for p in config.patterns for w in p.wires for e in (w.front, w.back)])
    centre = ends.mean(axis=0)
    return [
        ("across the Ns", across / np.linalg.norm(across), centre),
        ("along the wires", along, centre),
        ("across the patterns", stack, centre),
    ]


def _reflect(points: np.ndarray, normal: np.ndarray, centre: np.ndarray) -> np.ndarray:
    return points - 2.0 * ((points - centre) @ normal)[..., None] * normal


def _to_probe(seq: SegmentedSequence, phantom_points: np.ndarray, idx: np.ndarray) -> np.ndarray:
    ptp = seq.phantom_to_probe[idx]
    return np.einsum("nij,nkj->nki", ptp[:, :3, :3], phantom_points) + ptp[:, None, :3, 3]


def _held_out_pre3d(
    cal: SegmentedSequence, val: SegmentedSequence | None, points: tuple[np.ndarray, np.ndarray]
) -> tuple[float, np.ndarray]:
    """PRE3D on the held-out frames of the fit to the middle points ``points`` (calibration,
    validation; Phantom frame), and the fit to every calibration frame."""
    n = len(cal.used)
    everything = np.arange(n)
    whole, _ = solve_image_to_probe(cal.image_points, _to_probe(cal, points[0], everything))
    if val is not None:
        errors = reprojection_errors_mm(
            whole, val.image_points, _to_probe(val, points[1], np.arange(len(val.used)))
        )
        return percentile_stats(errors).mean, whole
    out = []
    for k in range(FOLDS):
        test = everything[k * n // FOLDS : (k + 1) * n // FOLDS]
        train = np.setdiff1d(everything, test)
        fit, _ = solve_image_to_probe(
            cal.image_points[train], _to_probe(cal, points[0][train], train)
        )
        out.append(
            reprojection_errors_mm(
                fit, cal.image_points[test], _to_probe(cal, points[0][test], test)
            )
        )
    return percentile_stats(np.concatenate(out)).mean, whole


def mirror_check(
    config: CalibrationConfig, cal: SegmentedSequence, val: SegmentedSequence | None
) -> MirrorCheck:
    """Fit the calibration frames to each mirror image of the definition (module docstring).

    Parameters
    ----------
    config
        The phantom definition the frames were segmented with.
    cal
        The calibration frames (their ``phantom_points`` and ``phantom_to_probe`` as paired).
    val
        The validation frames, paired the same way; None: cross-validation of ``cal``.

    Returns
    -------
    MirrorCheck
        A mirror image whose fit fails (too few equations left) is left out.
    """
    given = (cal.phantom_points, val.phantom_points if val is not None else None)
    held_out = "the validation recording" if val is not None else "held-out calibration frames"
    try:
        given_mm, given_fit = _held_out_pre3d(cal, val, given)  # type: ignore[arg-type]
    except ValueError:
        return MirrorCheck((), held_out)
    cols, rows = cal.image_size
    corners = np.array(
        [[0, 0, 0, 1], [cols - 1, 0, 0, 1], [0, rows - 1, 0, 1], [cols - 1, rows - 1, 0, 1]],
        dtype=np.float64,
    ).T
    fits = []
    for name, normal, centre in phantom_mirrors(config):
        mirrored = tuple(None if p is None else _reflect(p, normal, centre) for p in given)
        try:
            mirrored_mm, mirror_fit = _held_out_pre3d(cal, val, mirrored)  # type: ignore[arg-type]
        except ValueError:
            continue
        apart = np.linalg.norm((given_fit @ corners - mirror_fit @ corners)[:3], axis=0).max()
        fits.append(MirrorFit(name, normal, float(given_mm), float(mirrored_mm), float(apart)))
    return MirrorCheck(tuple(fits), held_out)
