"""The search of the rigid US→MRI registration: a sweep prepared against one MRI (resolution
levels built once), a translation grid and Nelder–Mead refinements from coarse to fine, then
the verdict (:mod:`usnav.registration.verdict`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from usnav.errors import InputError
from usnav.io.volume import Volume
from usnav.registration.operated import REMOVED_TISSUE_KEY
from usnav.registration.options import RegistrationOptions
from usnav.registration.pose import _apply, _optimise, _subset_level, correction
from usnav.registration.similarity import (
    FrameLevel,
    FrameSimilarity,
    MriLevel,
    PreparedFrameCache,
    build_mri_levels,
    crop_box,
    prepare_frame_level,
    set_threads,
)
from usnav.registration.sweep import Sweep
from usnav.registration.verdict import RegistrationResult, VerdictMixin

Progress = Callable[[str, float], None]


def _with_threads(method):
    """Run ``method`` with the similarity evaluations on ``self.options.threads`` threads
    (restored afterwards: the setting is per calling thread)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        previous = set_threads(self.options.threads)
        try:
            return method(self, *args, **kwargs)
        finally:
            set_threads(previous)

    return wrapper


def fov_depth_mm(sweep: Sweep) -> float:
    """Depth of the field of view's centre below the transducer face, mm: the mean row of the
    field-of-view mask × the row pixel size (row 0 is at the transducer in MF images)."""
    # the mean row from the per-row pixel counts: the same exact integer sum over the same
    # count as the mean of every mask pixel's row, without listing the pixels
    per_row = np.count_nonzero(sweep.mask(), axis=1)
    count = int(per_row.sum())
    if count == 0:
        return 0.0
    mean_row = float(np.float64(int(per_row @ np.arange(per_row.size))) / count)
    return float(mean_row * sweep.pixel_spacing_mm[1])


@dataclass
class PreparedLevel:
    """One resolution level: MRI, frames, similarity."""

    mri: MriLevel
    frames: FrameLevel
    similarity: FrameSimilarity


def _mean_axis(vectors: np.ndarray) -> np.ndarray:
    """Unit mean of per-frame axes (N, 3), each normalised and turned to the middle frame's
    side first (an axis, not a direction: a frame flipped by the sweep does not cancel)."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    mean = (unit * np.sign(unit @ unit[len(unit) // 2])[:, None]).mean(axis=0)
    return mean / max(np.linalg.norm(mean), 1e-12)


def _mean_beam(image_to_reference: np.ndarray) -> np.ndarray:
    """Unit mean of the frames' beam directions (image +y), in the poses' frame."""
    beams = image_to_reference[:, :3, 1]
    beam = (beams / np.linalg.norm(beams, axis=1, keepdims=True)).mean(axis=0)
    return beam / max(np.linalg.norm(beam), 1e-12)


def sweep_search_frame(sweep: Sweep, initial: np.ndarray) -> np.ndarray:
    """MRI world → the sweep's own frame (4×4 rigid): axes the sweep's mean lateral (image
    +x), beam (image +y, made orthogonal to it) and elevation (their cross product) turned
    into the MRI by ``initial``; origin at the frames' mean origin there.

    A search whose steps, grid and box follow these axes gives the same answer whatever the
    orientation of the MRI's or the tracker's world: turning either changes this frame with
    it (``sweep_search_frame(G·sweep, T·initial·G⁻¹) · T`` is this frame).
    """
    ir = sweep.image_to_reference
    lateral = _mean_axis(ir[:, :3, 0])
    beam = _mean_beam(ir)
    beam = beam - (beam @ lateral) * lateral
    beam = beam / max(float(np.linalg.norm(beam)), 1e-12)
    axes = np.asarray(initial, np.float64)[:3, :3] @ np.column_stack(
        [lateral, beam, np.cross(lateral, beam)]
    )
    origin = _apply(np.asarray(initial, np.float64), ir[:, :3, 3]).mean(axis=0)
    frame = np.eye(4)
    frame[:3, :3] = axes.T
    frame[:3, 3] = -axes.T @ origin
    return frame


def mri_voxel_frame(mri: Volume) -> np.ndarray:
    """MRI world → a frame whose axes are the MRI's voxel axes (the nearest rotation to its
    affine's 3×3, the third axis reversed if that is a reflection), 4×4. Turning the MRI's
    world turns this frame with it."""
    u, _, vt = np.linalg.svd(mri.affine[:3, :3])
    axes = u @ vt
    if np.linalg.det(axes) < 0:
        axes[:, 2] = -axes[:, 2]
    frame = np.eye(4)
    frame[:3, :3] = axes.T
    return frame


class SweepRegistration(VerdictMixin):
    """A sweep prepared for registration against one MRI (levels built once).

    Parameters
    ----------
    mri
        The MRI (RAS mm).
    sweep
        The tracked sweep (Reference mm).
    initial
        ``ReferenceToMri`` used to crop the MRI around the sweep.
    options
        :class:`RegistrationOptions`.
    mri_levels
        Reuse an already built (and large enough) MRI pyramid.
    frame_cache
        Frames prepared for earlier registrations of overlapping windows
        (:class:`~usnav.registration.similarity.PreparedFrameCache`; the streaming worker's):
        the frames found there are not resampled again (the same values).
    """

    def __init__(
        self,
        mri: Volume,
        sweep: Sweep,
        initial: np.ndarray,
        options: RegistrationOptions | None = None,
        mri_levels: list[MriLevel] | None = None,
        frame_cache: PreparedFrameCache | None = None,
    ):
        self.options = options or RegistrationOptions()
        self.sweep = sweep
        self._frame_cache = frame_cache
        opts = self.options
        spacings = opts.level_spacings_mm
        finest = prepare_frame_level(
            sweep,
            spacings[-1],
            max_frames=opts.level("max_frames", 99),
            cache=frame_cache,
            **opts.frame_mask_arguments(),
        )
        if len(finest) == 0:
            raise InputError(sweep.source, "no usable frame in the sweep")
        self.points_reference = finest.points_reference()
        if len(self.points_reference) == 0:
            raise InputError(sweep.source, "no ultrasound pixel in the field of view")
        pts_mri = _apply(initial, self.points_reference)
        if mri_levels is None:
            box = crop_box(mri, pts_mri, opts.roi_margin_mm)
            mri_levels = build_mri_levels(mri, spacings, box)
        self._mri_levels = mri_levels
        self._levels: list[PreparedLevel | None] = [None] * len(spacings)
        self._levels[-1] = self._prepare(len(spacings) - 1, finest)
        self.mri_source = mri.source
        # the MRI of the operated spine (usnav.registration.operated): the estimate follows
        # the removed-tissue label's walls, so the label's error enters the stated bound
        self.removed_label_error_mm = (
            opts.removed_label_error_mm if REMOVED_TISSUE_KEY in mri.meta else 0.0
        )
        #: RMS distance of the field of view from its centre, mm (rotation ↔ displacement)
        self.radius_mm = float(
            np.sqrt(
                np.mean(
                    np.sum(
                        (self.points_reference - self.points_reference.mean(axis=0)) ** 2, axis=1
                    )
                )
            )
        )
        #: mean ultrasound beam direction (image +y), Reference frame, unit
        self.beam_direction = _mean_beam(sweep.image_to_reference)
        frames_x = sweep.image_to_reference[:, :3, 0]
        #: mean frame normal (elevation, image x × y), Reference frame, unit
        self.elevation_direction = _mean_axis(
            np.cross(frames_x, sweep.image_to_reference[:, :3, 1])
        )
        #: mean image lateral axis (image +x: across the array), Reference frame, unit
        self.lateral_direction = _mean_axis(frames_x)
        #: depth of the field of view's centre below the transducer face (image row 0), mm
        self.fov_depth_mm = fov_depth_mm(sweep)

    def _prepare(self, i: int, frames: FrameLevel | None = None) -> PreparedLevel:
        opts = self.options
        if frames is None:
            frames = prepare_frame_level(
                self.sweep,
                opts.level_spacings_mm[i],
                max_frames=opts.level("max_frames", i),
                cache=self._frame_cache,
                **opts.frame_mask_arguments(),
            )
        sim = FrameSimilarity(
            self._mri_levels[i],
            frames,
            metric=opts.level_metric(i),
            patch_half=opts.level("patch_half", i),
        )
        return PreparedLevel(self._mri_levels[i], frames, sim)

    def level(self, i: int) -> PreparedLevel:
        """Level ``i`` (0 = coarsest; -1 = finest), prepared on first use."""
        i = i % len(self._levels)
        found = self._levels[i]
        if found is None:
            found = self._levels[i] = self._prepare(i)
        return found

    @property
    def levels(self) -> list[PreparedLevel]:
        """All levels (prepares the ones not used yet)."""
        return [self.level(i) for i in range(len(self._levels))]

    def overlap(self, reference_to_mri: np.ndarray) -> float:
        """Fraction of the finest level's field-of-view pixels inside the MRI crop."""
        _, _, inside = self.level(-1).similarity.per_frame(reference_to_mri)
        return float(inside.mean())

    @_with_threads
    def run(
        self,
        initial: np.ndarray,
        *,
        progress: Progress | None = None,
        current: np.ndarray | None = None,
        warm: bool = False,
    ) -> RegistrationResult:
        """Register from ``initial`` and judge the candidate against ``current`` (default:
        ``initial``).

        Parameters
        ----------
        warm
            Warm start (streaming): only the finest level, small steps, no restarts.
        """
        t0 = time.perf_counter()
        opts = self.options
        initial = np.asarray(initial, dtype=np.float64)
        current = initial if current is None else np.asarray(current, dtype=np.float64)
        if self.overlap(initial) < 0.05:
            raise InputError(
                self.sweep.source,
                "the sweep lies (almost) entirely outside the "
                f"MRI {self.mri_source} under the initial ReferenceToMri",
                "check --init and the MRI",
            )
        centre = _apply(initial, self.points_reference).mean(axis=0)
        params = np.zeros(6)
        evaluations = 0
        notes: list[dict] = []
        level_ids = list(range(len(self._levels)))
        if warm:
            level_ids = level_ids[-1:]
        for n_level, li in enumerate(level_ids):
            level = self.level(li)
            s = level.frames.spacing_mm
            sim = level.similarity
            if n_level == 0 and not warm:
                step = np.r_[[opts.initial_step[0]] * 3, [opts.initial_step[1]] * 3]
            else:
                step = np.r_[[0.6 * s] * 3, [0.6 * s] * 3]

            finest_level = li == len(self._levels) - 1

            def cost(
                p: np.ndarray, sim: FrameSimilarity = sim, finest_level: bool = finest_level
            ) -> float:
                if not _within_bounds(p, opts):
                    return 1.0
                penalty = 0.0
                if opts.prior_weight > 0 and (opts.prior_at_finest or not finest_level):
                    penalty = opts.prior_weight * (
                        float(p[:3] @ p[:3])
                        + (self.radius_mm * np.radians(1.0)) ** 2 * float(p[3:] @ p[3:])
                    )
                return -sim(correction(p, centre) @ initial) + penalty

            budget = opts.level("max_evaluations", li)
            if n_level == 0:
                starts = [params]
                if not warm and opts.restarts > 0:
                    starts += self._restart_points(params, step, opts.restarts, initial)
                if not warm and opts.translation_grid_mm > 0:
                    grid_cost = self._grid_cost(level, centre, initial, finest_level)
                    grid_starts, n = self._grid_starts(grid_cost, params, opts)
                    evaluations += n
                    starts += grid_starts
                found = []
                if len(starts) > 1 and opts.translation_grid_mm > 0:
                    # screen the grid's best points, run the best one fully
                    for x0 in starts:
                        x, f, n = _optimise(cost, x0, step, opts.screen_evaluations, xtol=0.05 * s)
                        evaluations += n
                        found.append((x, f))
                    found.sort(key=lambda item: item[1])
                    x, f, n = _optimise(cost, found[0][0], step, budget, xtol=0.05 * s)
                    evaluations += n
                    found[0] = (x, f)
                else:
                    # every coarse start runs fully; the distinct optima go on to the next
                    # level, where the finer similarity (less biased by large structures)
                    # chooses
                    for x0 in starts:
                        x, f, n = _optimise(cost, x0, step, budget, xtol=0.05 * s)
                        evaluations += n
                        found.append((x, f))
                found.sort(key=lambda item: item[1])
                candidates = []
                for x, f in found:
                    if all(
                        np.linalg.norm(x[:3] - c[:3]) > 1.0 or np.linalg.norm(x[3:] - c[3:]) > 1.0
                        for c, _ in candidates
                    ):
                        candidates.append((x, f))
                best = candidates[0]
                candidates = [c for c, _ in candidates[: max(1, opts.carry_candidates)]]
            else:
                starts = list(candidates)
                if li == len(self._levels) - 1 and not warm and opts.beam_restarts_mm:
                    beam = initial[:3, :3] @ self.beam_direction
                    starts += [
                        candidates[0] + np.r_[d * beam, 0, 0, 0] for d in opts.beam_restarts_mm
                    ]
                if len(starts) > 1:
                    # screen every start with a short search, refine the best one fully
                    screened = []
                    for x0 in starts:
                        x, f, n = _optimise(cost, x0, step, opts.screen_evaluations, xtol=0.05 * s)
                        evaluations += n
                        screened.append((x, f))
                    x0 = min(screened, key=lambda item: item[1])[0]
                else:
                    x0 = starts[0]
                x, f, n = _optimise(cost, x0, step, budget, xtol=0.05 * s)
                evaluations += n
                best = (x, f)
                candidates = [x]
            params = best[0]
            notes.append(
                {
                    "spacing_mm": s,
                    "frames": len(level.frames),
                    "similarity": round(-float(best[1]), 5),
                    "starts": len(starts),
                }
            )
            if progress:
                progress(f"level {s:g} mm", (n_level + 1) / (len(level_ids) + 1))
        candidate = correction(params, centre) @ initial
        if not warm and opts.sweep_climbs > 0 and opts.ambiguity_offsets_mm:

            def within(pose: np.ndarray) -> bool:  # the search's own bounds
                return _within_bounds(_params_about(pose, initial, centre), opts)

            candidate, moves, n = self._climb_along_sweep(candidate, within)
            evaluations += n
            if moves:
                params = _params_about(candidate, initial, centre)
                notes.append({"climbed_along_sweep": moves})
        result = self._verdict(candidate, initial, current, params, centre, evaluations, notes)
        result.seconds = time.perf_counter() - t0
        if progress:
            progress("done", 1.0)
        return result

    @_with_threads
    def judge(
        self, candidate: np.ndarray, current: np.ndarray, *, evaluations: int = 0
    ) -> RegistrationResult:
        """The do-no-harm verdict on ``candidate`` (any ``ReferenceToMri``, e.g. proposed by
        another method) against ``current``, as :meth:`run` gives it on its own candidate.

        Parameters
        ----------
        candidate, current
            4×4 rigid ``ReferenceToMri`` (Reference mm → MRI mm).
        """
        candidate = np.asarray(candidate, dtype=np.float64)
        current = np.asarray(current, dtype=np.float64)
        centre = _apply(current, self.points_reference).mean(axis=0)
        params = _params_about(candidate, current, centre)
        return self._verdict(candidate, current, current, params, centre, evaluations, [])

    def _grid_cost(
        self, level: PreparedLevel, centre: np.ndarray, initial: np.ndarray, finest: bool
    ) -> Callable[[np.ndarray], float]:
        """The level's cost on a subset of its frames (for the translation grid)."""
        opts = self.options
        n = len(level.frames)
        keep = np.unique(np.linspace(0, n - 1, min(n, opts.grid_frames)).round().astype(int))
        sim = FrameSimilarity(
            level.mri,
            _subset_level(level.frames, keep),
            metric=level.similarity.metric,
            patch_half=level.similarity.patch_half,
        )

        def cost(p: np.ndarray) -> float:
            penalty = 0.0
            if opts.prior_weight > 0 and (opts.prior_at_finest or not finest):
                penalty = opts.prior_weight * (
                    float(p[:3] @ p[:3])
                    + (self.radius_mm * np.radians(1.0)) ** 2 * float(p[3:] @ p[3:])
                )
            return -sim(correction(p, centre) @ initial) + penalty

        return cost

    @staticmethod
    def _grid_starts(
        cost: Callable[[np.ndarray], float], params: np.ndarray, opts: RegistrationOptions
    ) -> tuple[list[np.ndarray], int]:
        """The best distinct points of a translation grid around ``params`` (a global look
        before the local search, as DIRECT on translation does in LC² registrations)."""
        half = opts.translation_grid_mm
        step = opts.translation_grid_step_mm
        ticks = np.arange(-half, half + 1e-9, step)
        scored = []
        for tx in ticks:
            for ty in ticks:
                for tz in ticks:
                    p = params.copy()
                    p[:3] += (tx, ty, tz)
                    scored.append((cost(p), p))
        scored.sort(key=lambda item: item[0])
        chosen: list[np.ndarray] = []
        for _, p in scored:
            if all(np.linalg.norm(p[:3] - c[:3]) > 1.5 * step for c in chosen):
                chosen.append(p)
            if len(chosen) >= opts.grid_starts:
                break
        return chosen, len(scored)

    def _restart_points(
        self, params: np.ndarray, step: np.ndarray, count: int, initial: np.ndarray
    ) -> list[np.ndarray]:
        """Starts shifted along the sweep's main directions (MRI frame), where a periodic
        anatomy such as vertebrae offers false optima."""
        pts = self.points_reference - self.points_reference.mean(axis=0)
        _, _, vt = np.linalg.svd(pts[:: max(1, len(pts) // 2000)], full_matrices=False)
        out = []
        for k in range(count):
            direction = initial[:3, :3] @ vt[k // 2 % 3] * (1 if k % 2 == 0 else -1)
            p = params.copy()
            p[:3] += 2.0 * step[0] * direction
            out.append(p)
        return out


def _params_about(pose: np.ndarray, start: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """The correction parameters (translation of ``centre`` mm, rotation vector degrees) that
    take ``start`` to ``pose`` (:func:`usnav.registration.pose.correction`'s inverse)."""
    step = pose @ np.linalg.inv(start)
    return np.r_[
        step[:3, :3] @ centre + step[:3, 3] - centre,
        Rotation.from_matrix(step[:3, :3]).as_rotvec(degrees=True),
    ]


def _within_bounds(params: np.ndarray, opts: RegistrationOptions) -> bool:
    """Whether a correction (mm, degrees) lies inside the search's box: 1.5 × the largest
    plausible correction (the verdict then holds it to 1 ×)."""
    return bool(
        np.linalg.norm(params[:3]) <= opts.max_correction_mm * 1.5
        and np.linalg.norm(params[3:]) <= opts.max_correction_deg * 1.5
    )
