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
        Similarity over the tumor's neighbourhood at the result minus at the input (the first
        similarity whose fit applied: ``tumor_metric`` unless its fit was skipped or refused).
    paired_t
        Paired t statistic of that gain over the frames (diagnostic).
    members
        Each similarity's own fit (metric, applied, translation_mm, frames, similarity_gain,
        reason): the stage moves by their mean (and keeps the input when that mean scores no
        better than the input).
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
    members: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        """The ``tumor_stage`` object of RESULT.json."""
        return {
            "members": self.members,
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


def tumor_long_axis(distance: Volume) -> tuple[np.ndarray, float]:
    """The tumor's principal axis (unit, MRI RAS) and its elongation: the ratio of the
    standard deviations of its voxels' positions along the first and second principal axes
    (``distance`` from :func:`tumor_distance_map`: the tumor is where it is 0)."""
    ijk = np.argwhere(np.asarray(distance.data) <= 0.0).astype(np.float64)
    xyz = ijk @ distance.affine[:3, :3].T
    xyz -= xyz.mean(axis=0)
    _, sd, vt = np.linalg.svd(xyz, full_matrices=False)
    if sd.size < 2:
        return np.array([0.0, 0.0, 1.0]), 1.0
    return vt[0], float(sd[0] / max(sd[1], 1e-9))


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
    #: the tumor's long axis (unit, MRI RAS) and its elongation, from the label's voxels
    long_axis: np.ndarray = field(init=False)
    elongation: float = field(init=False)

    def __post_init__(self) -> None:
        self.long_axis, self.elongation = tumor_long_axis(self.distance)

    def translation_basis(self, opts: RegistrationOptions) -> np.ndarray:
        """(3, k) orthonormal directions the stage's translation is fitted along (MRI mm):
        the plane normal to the long axis (k = 2) with ``tumor_transverse_only`` and an
        elongated tumor, else the three axes."""
        if not opts.tumor_transverse_only or self.elongation < opts.tumor_min_elongation:
            return np.eye(3)
        u, _, _ = np.linalg.svd(np.eye(3) - np.outer(self.long_axis, self.long_axis))
        return u[:, :2]

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
    (``opts``: the ``tumor_*`` options and those choosing the compared pixels).

    The translation is fitted once per similarity of the stage (``tumor_metric`` and, unless
    None, ``tumor_second_metric``, each with its own ROI and patch size); the stage moves by
    their mean, a refused or skipped fit counting as no shift. It applies when at least one
    fit did."""
    t0 = time.perf_counter()
    start = np.asarray(reference_to_mri, np.float64)
    frames = prepare_frame_level(
        sweep,
        context.mri_level.spacing_mm,
        max_frames=opts.tumor_max_frames,
        **opts.frame_mask_arguments(),
    )
    members = [(opts.tumor_metric, opts.tumor_roi_mm, opts.tumor_patch_half)]
    if opts.tumor_second_metric is not None:
        members.append(
            (opts.tumor_second_metric, opts.tumor_second_roi_mm, opts.tumor_second_patch_half)
        )
    fits = [_fit_member(frames, context, start, opts, *member) for member in members]
    applied = [fit for fit in fits if fit.applied]
    if not applied:
        first = fits[0]
        reason = first.reason
        if len(fits) > 1:
            reason += "; " + "; ".join(
                f"{fit.metric}: {fit.reason.removeprefix('tumor stage').lstrip(': ')}"
                for fit in fits[1:]
            )
        return TumorStage(
            start,
            False,
            first.translation_mm,
            first.frames,
            first.similarity_gain,
            time.perf_counter() - t0,
            reason,
            first.paired_t,
            members=[fit.to_json() for fit in fits],
        )
    t = np.mean([fit.translation_mm if fit.applied else np.zeros(3) for fit in fits], axis=0)
    moved = _translated(start, t)
    # the combined move as the first fitted similarity sees it (diagnostic)
    gain, paired_t = applied[0].score(moved)
    parts = ", ".join(
        f"{fit.metric} {np.linalg.norm(fit.translation_mm):.2f} mm over {fit.frames} frames"
        + ("" if fit.applied else " (not used)")
        for fit in fits
    )
    shift = float(np.linalg.norm(t))
    better = gain > 0.0  # two fits can disagree so that their mean scores no better
    if not better:
        reason = (
            f"tumor stage: the mean of {parts} scores no better at the tumor "
            f"(similarity {gain:+.4f}); the bony estimate is kept"
        )
    else:
        reason = (
            f"tumor stage: {shift:.2f} mm at the tumor"
            + (f", the mean of {parts}" if len(fits) > 1 else f" over {fits[0].frames} frames")
            + f" (similarity {gain:+.4f})"
        )
    return TumorStage(
        moved if better else start,
        better,
        t,
        applied[0].frames,
        gain,
        time.perf_counter() - t0,
        reason,
        paired_t,
        members=[fit.to_json() for fit in fits],
    )


def _translated(start: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``T(t) · start``: ``start`` moved by ``t`` mm in MRI space."""
    m = np.eye(4)
    m[:3, 3] = t
    return m @ start


@dataclass
class _MemberFit:
    """One similarity's fit of the stage's translation (see :func:`_fit_member`)."""

    metric: str
    applied: bool
    translation_mm: np.ndarray
    frames: int
    similarity_gain: float
    paired_t: float
    reason: str
    similarity: FrameSimilarity | None = None
    start: np.ndarray | None = None
    fitted_axes: str = "3-D"

    def score(self, pose: np.ndarray) -> tuple[float, float]:
        """(similarity gain, paired t) of ``pose`` over the start on this fit's frames."""
        after, after_frames = self.similarity.evaluate(pose)
        before, before_frames = self.similarity.evaluate(self.start)
        return after - before, _paired_gain(after_frames, before_frames)[1]

    def to_json(self) -> dict:
        return {
            "metric": self.metric,
            "applied": bool(self.applied),
            "translation_mm": [round(float(v), 4) for v in self.translation_mm],
            "frames": int(self.frames),
            "similarity_gain": round(float(self.similarity_gain), 6),
            "fitted_axes": self.fitted_axes,
            "reason": self.reason or "applied",
        }


def _fit_member(
    frames: FrameLevel,
    context: TumorContext,
    start: np.ndarray,
    opts: RegistrationOptions,
    metric: str,
    roi_mm: float,
    patch_half: int,
) -> _MemberFit:
    """Fit the local translation with one similarity on the pixels within ``roi_mm`` of the
    planned tumor (Nelder–Mead, ``tumor_evaluations``); refused beyond
    ``tumor_max_shift_mm`` or without a gain."""
    roi = roi_masks(frames, context.distance, start, roi_mm)
    keep = np.nonzero(roi.reshape(len(roi), -1).sum(axis=1) >= opts.tumor_min_pixels)[0]
    if keep.size < opts.tumor_min_frames:
        return _MemberFit(
            metric,
            False,
            np.zeros(3),
            int(keep.size),
            0.0,
            0.0,
            f"tumor stage skipped: {keep.size} frame(s) show the tumor's surroundings "
            f"(at least {opts.tumor_min_frames} needed)",
        )
    sub = _subset_level(frames, keep)
    sub = FrameLevel(
        sub.spacing_mm, sub.us, sub.us_grad, roi[keep], sub.pixel_to_reference, sub.frame_index
    )
    sim = FrameSimilarity(context.mri_level, sub, metric=metric, patch_half=patch_half)
    weight = opts.tumor_prior_weight
    basis = context.translation_basis(opts)

    def cost(p: np.ndarray) -> float:
        t = basis @ p
        return -sim(_translated(start, t)) + weight * float(t @ t)

    p0 = np.zeros(basis.shape[1])
    if opts.tumor_grid_step_mm > 0:
        p0 = _grid_start(cost, basis.shape[1], opts.tumor_grid_step_mm, opts.tumor_max_shift_mm)
    p, _, _ = _optimise(cost, p0, np.full(basis.shape[1], 0.5), opts.tumor_evaluations, 0.02)
    t = basis @ p
    axes = "transverse" if basis.shape[1] == 2 else "3-D"
    fit = _MemberFit(metric, False, t, int(keep.size), 0.0, 0.0, "", sim, start, axes)
    fit.similarity_gain, fit.paired_t = fit.score(_translated(start, t))
    shift = float(np.linalg.norm(t))
    if shift > opts.tumor_max_shift_mm:
        fit.reason = (
            f"tumor stage refused: it moved {shift:.2f} mm, more than a cord shift "
            f"({opts.tumor_max_shift_mm:g} mm); the bony estimate is kept"
        )
    elif fit.similarity_gain <= 0.0:
        fit.reason = (
            "tumor stage: no translation scores better at the tumor; the bony estimate is kept"
        )
    else:
        fit.applied = True
    return fit


def _grid_start(cost, k: int, step_mm: float, radius_mm: float) -> np.ndarray:
    """The best of ``cost`` over a k-dimensional grid of ``step_mm`` within ``radius_mm`` of
    zero (zero included, and kept on a tie)."""
    n = int(np.floor(radius_mm / step_mm))
    axis = np.arange(-n, n + 1) * step_mm
    grid = np.stack(np.meshgrid(*([axis] * k), indexing="ij"), axis=-1).reshape(-1, k)
    grid = grid[np.linalg.norm(grid, axis=1) <= radius_mm + 1e-9]
    best, best_cost = np.zeros(k), cost(np.zeros(k))
    for p in grid:
        if not p.any():  # zero: scored above
            continue
        c = cost(p)
        if c < best_cost:
            best, best_cost = p, c
    return best
