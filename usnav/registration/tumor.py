"""The local stage at the tumor (#16 item 4): follow the cord shift after the bony registration.

The global registration aligns the whole field of view, which is mostly bone, dura and CSF: it
recovers the rigid patient registration. Once the dura is open the cord moves inside the sac
(up to ~3 mm), and the tumor it carries with it; an overlay drawn from the MRI through the bony
estimate is off by that shift. This stage fits a translation on the ultrasound pixels that lie
within ``tumor_roi_mm`` of the planned tumor (the MRI label, mapped through the current
estimate), with the same similarity at the finest level, over every frame that shows them:

    ReferenceToMri_tumor = T(t) · ReferenceToMri,   t = argmax  S_roi(T(t) · ReferenceToMri)

in MRI mm. It runs only on an estimate that is already accepted (a local search cannot repair
a wrong global basin, and must not pretend to), and its result is refused when ``|t|`` exceeds
``tumor_max_shift_mm`` (more than a cord shift: the ROI has matched something else).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from usnav.errors import InputError
from usnav.io.volume import Volume
from usnav.registration import _kernels as K
from usnav.registration.options import RegistrationOptions
from usnav.registration.pose import _optimise, _paired_gain, _subset_level
from usnav.registration.similarity import (
    FrameLevel,
    FrameSimilarity,
    MriLevel,
    build_mri_levels,
    crop_box,
    prepare_frame_level,
)
from usnav.registration.sweep import Sweep


@dataclass
class TumorStage:
    """Outcome of :func:`refine_at_tumor`.

    Attributes
    ----------
    reference_to_mri
        The estimate at the tumor (4×4, Reference → MRI mm): the input if not ``applied``.
    applied
        True if the local translation was accepted.
    translation_mm
        (3,) the translation t found (MRI mm, applied on the left), zeros if none was fitted.
    frames
        Frames that showed enough of the tumor's neighbourhood.
    similarity_gain
        Similarity over the tumor's neighbourhood at the result minus at the input.
    paired_t
        Paired t statistic of that gain over the frames (diagnostic).
    seconds
        Wall time.
    reason
        One line: what was done, or why not.
    """

    reference_to_mri: np.ndarray
    applied: bool
    translation_mm: np.ndarray = field(default_factory=lambda: np.zeros(3))
    frames: int = 0
    similarity_gain: float = 0.0
    seconds: float = 0.0
    reason: str = ""
    paired_t: float = 0.0

    def to_json(self) -> dict:
        """The ``tumor_stage`` object of RESULT.json."""
        return {
            "applied": bool(self.applied),
            "translation_mm": [round(float(v), 4) for v in self.translation_mm],
            "shift_mm": round(float(np.linalg.norm(self.translation_mm)), 4),
            "frames": int(self.frames),
            "similarity_gain": round(float(self.similarity_gain), 6),
            "paired_t": round(float(self.paired_t), 3) if np.isfinite(self.paired_t) else None,
            "seconds": round(float(self.seconds), 4),
            "reason": self.reason,
        }


def tumor_distance_map(label: Volume) -> Volume:
    """Distance from every voxel to the nearest tumor voxel (label > 0), mm, float32.

    Raises
    ------
    InputError
        The label has no tumor voxel (naming the label's file).
    """
    from scipy import ndimage

    inside = np.asarray(label.data) > 0
    if not inside.any():
        raise InputError(
            label.source, "the tumor label has no voxel > 0", "give the tumor segmentation"
        )
    dist = ndimage.distance_transform_edt(~inside, sampling=label.spacing_mm)
    return Volume(np.ascontiguousarray(dist, dtype=np.float32), label.affine, source=label.source)


def roi_masks(
    frames: FrameLevel, distance: Volume, reference_to_mri: np.ndarray, roi_mm: float
) -> np.ndarray:
    """(F, rows, cols) uint8: valid pixels whose MRI position under ``reference_to_mri`` lies
    within ``roi_mm`` of the tumor (``distance`` from :func:`tumor_distance_map`)."""
    n, rows, cols = frames.us.shape
    out = np.zeros((n, rows, cols), np.uint8)
    plane = np.empty((rows, cols), np.float32)
    data = np.ascontiguousarray(distance.data, dtype=np.float32)
    to_voxel = distance.world_to_voxel @ np.asarray(reference_to_mri, np.float64)
    for f in range(n):
        m = to_voxel @ frames.pixel_to_reference[f]
        K.reslice_plane(data, m[:3, 3].copy(), m[:3, 0].copy(), m[:3, 1].copy(), plane, 1e9)
        out[f] = (plane <= roi_mm) & (frames.valid[f] > 0)
    return out


@dataclass
class TumorContext:
    """What the tumor stage needs from the plan, built once: the tumor's distance map and the
    MRI at the stage's pixel size cropped around the tumor.

    Attributes
    ----------
    distance
        :func:`tumor_distance_map` of the label (MRI RAS mm).
    mri_level
        The MRI level the stage scores against.
    """

    distance: Volume
    mri_level: MriLevel

    @classmethod
    def build(
        cls, mri: Volume, label: Volume, spacing_mm: float, margin_mm: float = 30.0
    ) -> TumorContext:
        """From the MRI and the tumor label (both MRI RAS).

        Raises
        ------
        InputError
            The label has no tumor voxel.
        """
        distance = tumor_distance_map(label)
        inside = np.argwhere(np.asarray(label.data) > 0)
        corners = np.c_[[inside.min(axis=0), inside.max(axis=0)], np.ones(2)] @ label.affine.T
        box = crop_box(mri, corners[:, :3], margin_mm)
        return cls(distance, build_mri_levels(mri, [spacing_mm], box)[0])


def refine_at_tumor(
    problem,
    distance: Volume,
    reference_to_mri: np.ndarray,
    options: RegistrationOptions | None = None,
) -> TumorStage:
    """Fit the local translation at the tumor (module docstring) for a batch registration.

    Parameters
    ----------
    problem
        The :class:`usnav.registration.search.SweepRegistration` that produced the estimate
        (its sweep, finest MRI level and options are reused).
    distance
        :func:`tumor_distance_map` of the tumor label (MRI RAS mm).
    reference_to_mri
        The accepted global estimate.
    options
        Defaults to ``problem.options``.
    """
    opts = options or problem.options
    context = TumorContext(distance, problem.level(-1).mri)
    return fit_at_tumor(problem.sweep, context, reference_to_mri, opts)


def fit_at_tumor(
    sweep: Sweep,
    context: TumorContext,
    reference_to_mri: np.ndarray,
    opts: RegistrationOptions,
) -> TumorStage:
    """The tumor stage on ``sweep``'s frames resampled at ``context.mri_level``'s pixel size
    (``opts``: the ``tumor_*`` options and ``ignore_zero_pixels``)."""
    t0 = time.perf_counter()
    start = np.asarray(reference_to_mri, np.float64)
    distance = context.distance
    frames = prepare_frame_level(
        sweep,
        context.mri_level.spacing_mm,
        max_frames=opts.tumor_max_frames,
        ignore_zero_pixels=opts.ignore_zero_pixels,
    )
    roi = roi_masks(frames, distance, start, opts.tumor_roi_mm)
    keep = np.nonzero(roi.reshape(len(roi), -1).sum(axis=1) >= opts.tumor_min_pixels)[0]
    if keep.size < opts.tumor_min_frames:
        return TumorStage(
            start,
            False,
            frames=int(keep.size),
            seconds=time.perf_counter() - t0,
            reason=f"tumor stage skipped: {keep.size} frame(s) show the tumor's surroundings "
            f"(at least {opts.tumor_min_frames} needed)",
        )
    sub = _subset_level(frames, keep)
    sub = FrameLevel(
        sub.spacing_mm, sub.us, sub.us_grad, roi[keep], sub.pixel_to_reference, sub.frame_index
    )
    sim = FrameSimilarity(
        context.mri_level, sub, metric=opts.tumor_metric, patch_half=opts.tumor_patch_half
    )
    weight = opts.tumor_prior_weight

    def moved(t: np.ndarray) -> np.ndarray:
        m = np.eye(4)
        m[:3, 3] = t
        return m @ start

    def cost(t: np.ndarray) -> float:
        return -sim(moved(t)) + weight * float(t @ t)

    t, _, _ = _optimise(cost, np.zeros(3), np.full(3, 0.5), opts.tumor_evaluations, 0.02)
    after, after_frames = sim.evaluate(moved(t))
    before, before_frames = sim.evaluate(start)
    gain = after - before
    _, paired_t = _paired_gain(after_frames, before_frames)
    shift = float(np.linalg.norm(t))
    seconds = time.perf_counter() - t0
    applied = False
    if shift > opts.tumor_max_shift_mm:
        reason = (
            f"tumor stage refused: it moved {shift:.2f} mm, more than a cord shift "
            f"({opts.tumor_max_shift_mm:g} mm); the bony estimate is kept"
        )
    elif gain <= 0.0:
        reason = "tumor stage: no translation scores better at the tumor; the bony estimate is kept"
    else:
        applied = True
        reason = (
            f"tumor stage: {shift:.2f} mm at the tumor over {keep.size} frames "
            f"(similarity +{gain:.4f})"
        )
    return TumorStage(
        moved(t) if applied else start, applied, t, int(keep.size), gain, seconds, reason, paired_t
    )
