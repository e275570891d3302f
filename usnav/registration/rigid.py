"""Rigid US→MRI registration of a tracked sweep: multi-resolution LC², derivative-free search,
a split-sweep uncertainty and a do-no-harm verdict.

Pixel → MRI: ``ReferenceToMri · ImageToReference · [col, row, 0, 1]``. The search moves
``ReferenceToMri`` by a rigid correction about the sweep's centre (in MRI mm):
``ReferenceToMri(p) = T(c + t) · R(r) · T(−c) · ReferenceToMri₀``, ``p = (t mm, r degrees as a
rotation vector)``, so translation and rotation are decoupled at the ultrasound.

Verdict (do no harm): a candidate replaces the current estimate only if, on the same frames at
the finest level, its similarity is higher by a clear margin (paired over frames) **and** the
correction it makes is larger than its own uncertainty (the disagreement between estimates
from the two halves of the sweep). Anything else is reported as rejected and the current
estimate stays.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import minimize
from scipy.spatial.transform import Rotation

from usnav.errors import ConfigError, InputError
from usnav.io.volume import Volume
from usnav.registration.estimate import RegistrationEstimate
from usnav.registration.similarity import (
    FrameLevel,
    FrameSimilarity,
    MriLevel,
    build_mri_levels,
    crop_box,
    prepare_frame_level,
)
from usnav.registration.sweep import Sweep
from usnav.transforms.matrices import is_rigid

Progress = Callable[[str, float], None]


class RegistrationOptions(BaseModel):
    """Options of :func:`register_sweep` (TOML section ``[registration]``)."""

    model_config = ConfigDict(extra="forbid")

    metric: Literal["lc2", "ncc_gradient"] = "lc2"
    level_spacings_mm: list[float] = Field(default=[1.5, 1.0], min_length=1)
    """Pixel size of each level, coarse to fine, mm."""
    patch_half: list[int] = Field(default=[1, 1], min_length=1)
    """LC² patch half-width per level, pixels (1 → 3×3 patches: 3 mm at the 1 mm level;
    larger patches were biased by large-scale appearance on the tuning cases)."""
    max_frames: list[int] = Field(default=[40, 40], min_length=1)
    """Frames used per level (spread along the sweep)."""
    max_evaluations: list[int] = Field(default=[160, 100], min_length=1)
    """Similarity evaluations per level (the optimiser's budget)."""
    initial_step: tuple[float, float] = (2.0, 3.0)
    """First search step at the coarsest level: mm, degrees."""
    restarts: int = Field(default=0, ge=0)
    """Extra coarse-level starts: the initial pose shifted by ± twice the initial step along
    the sweep's principal directions (vertebrae repeat along the spine). Off by default: on
    the tuning seeds the extra starts found false optima of higher similarity as often as they
    escaped bad ones."""
    prior_weight: float = Field(default=5e-4, ge=0)
    """Gaussian prior on the correction at the coarser levels: similarity − w·|t|² − w·(ρ·θ)²
    (t mm, θ radians, ρ the sweep's RMS radius); it breaks near-ties between distant optima
    towards the navigation estimate. 0 = none. 5e-4 chosen on tuning seeds 1001-1040."""
    prior_at_finest: bool = False
    """Apply the prior at the finest level too (it then biases the result towards the
    initial estimate); by default it only chooses the basin at the coarser levels."""
    translation_grid_mm: float = Field(default=9.0, ge=0)
    """Half-width of a translation grid searched at the coarsest level before the local
    search (0: none)."""
    translation_grid_step_mm: float = Field(default=3.0, gt=0)
    grid_starts: int = Field(default=3, ge=1)
    """Best distinct grid points used as extra coarse starts."""
    grid_frames: int = Field(default=16, ge=2)
    """Frames used to score the translation grid."""
    carry_candidates: int = Field(default=3, ge=1)
    """Distinct coarse optima handed to the next level, which picks among them."""
    beam_restarts_mm: list[float] = Field(default=[-2.0, 2.0])
    """Extra finest-level starts shifted along the ultrasound beam (mm): a bone echo and the
    MRI's bone edge can offer two optima a few mm apart in depth."""
    screen_evaluations: int = Field(default=30, ge=5)
    """Evaluations of the short search that screens each extra start."""
    roi_margin_mm: float = Field(default=30.0, gt=0)
    """MRI crop margin around the sweep (must exceed the capture range)."""
    ignore_zero_pixels: bool = False
    uncertainty: bool = True
    """Estimate the uncertainty from the two half-sweeps (costs ~30 % more time)."""
    uncertainty_evaluations: int | None = Field(default=30, ge=5)
    """Budget of each half-sweep refinement (default: half the finest level's)."""
    uncertainty_floor_mm: float = Field(default=0.85, ge=0)
    """Added in quadrature to the half-sweep spread: the error the spread cannot see (bias of
    the similarity, cord shift). 0.85 mm = the median error on tuning seeds 1001-1040."""
    min_similarity_gain: float = Field(default=0.003, ge=0)
    """Smallest accepted gain of the mean similarity (absolute)."""
    min_paired_t: float = Field(default=3.0, ge=0)
    """Smallest paired t statistic (per-frame gain / its standard error)."""
    null_offset_mm: float = Field(default=15.0, ge=0)
    """Chance level = the similarity of the candidate shifted by ± this along each axis
    (0: no test)."""
    min_margin_over_null: float = Field(default=0.05, ge=0)
    """A candidate's similarity must exceed the chance level by this much."""
    min_correction_to_uncertainty: float = Field(default=2.0, ge=0)
    """A correction must be this many times its uncertainty to count as clearly better."""
    max_correction_mm: float = Field(default=25.0, gt=0)
    max_correction_deg: float = Field(default=25.0, gt=0)
    ambiguity_offset_mm: float = Field(default=6.0, ge=0)
    """Ambiguity probe: the candidate shifted by ± this along the sweep's mean elevation
    direction (the frame normal: the direction a freehand sweep constrains least, along the
    spine on a transverse sweep, where the cord is a tube) is refined at the finest level. A
    candidate whose similarity does not exceed that of every pose so found farther than
    ``ambiguity_distinct_mm`` by ``ambiguity_min_gain`` is rejected as ambiguous. 0: no probe."""
    ambiguity_min_gain: float = Field(default=0.003, ge=0)
    """Smallest similarity margin of the candidate over a distinct alternative (the same
    "clearly better" margin as ``min_similarity_gain``). No paired t here: a shift along the
    sweep changes only the frames over distinctive anatomy, so per-frame gains are few and
    large and t understates real differences (tuning seeds: correct candidates led their
    alternatives by ≥ 0.012 with t as low as 2.3)."""
    ambiguity_evaluations: int = Field(default=30, ge=5)
    """Budget of each ambiguity probe's refinement."""
    ambiguity_distinct_mm: float = Field(default=2.0, ge=0)
    """An alternative closer than this (mean over the field of view) belongs to the
    candidate's own optimum (2 mm: the accuracy that matters)."""

    def level(self, key: str, index: int):
        values = getattr(self, key)
        return values[min(index, len(values) - 1)]


@dataclass
class RegistrationResult:
    """Outcome of :func:`register_sweep`.

    Attributes
    ----------
    reference_to_mri
        The estimate to use: the candidate if accepted, else ``initial``.
    candidate
        What the optimiser found (even if rejected).
    initial
        The starting ``ReferenceToMri``.
    accepted
        Verdict (see the module docstring).
    similarity, initial_similarity
        Finest-level similarity of the candidate and of the initial estimate (same frames).
    uncertainty_mm
        Estimated error of the candidate at the ultrasound (mean over the field of view), mm.
    correction_mm
        Mean displacement of the field of view between initial and candidate, mm.
    seconds
        Wall time (JIT compile excluded: call :func:`usnav.registration.warm_up` first).
    evaluations
        Similarity evaluations.
    reason
        Why accepted or rejected.
    levels
        Per-level notes (spacing, frames, evaluations, similarity).
    """

    reference_to_mri: np.ndarray
    candidate: np.ndarray
    initial: np.ndarray
    accepted: bool
    similarity: float
    initial_similarity: float
    uncertainty_mm: float
    correction_mm: float
    seconds: float
    evaluations: int
    reason: str
    metric: str = "lc2"
    levels: list[dict] = field(default_factory=list)

    @property
    def quality(self) -> float:
        """0..1 for a display: accepted, similar, and certain (see docs/registration.md)."""
        if not self.accepted:
            return 0.0
        unc = self.uncertainty_mm if np.isfinite(self.uncertainty_mm) else 2.0
        sim = float(np.clip(self.similarity / 0.3, 0.0, 1.0))
        return float(sim * np.exp(-unc / 2.0))

    def estimate(self, sequence: int = 0) -> RegistrationEstimate:
        """As a :class:`RegistrationEstimate` (the candidate, with its verdict)."""
        return RegistrationEstimate(
            reference_to_mri=self.candidate.copy(),
            similarity=self.similarity,
            quality=self.quality,
            uncertainty_mm=self.uncertainty_mm,
            accepted=self.accepted,
            sequence=sequence,
            source="image",
            reason=self.reason,
        )

    def to_json(self) -> dict:
        """The RESULT.json object of ``usnav register``."""
        return {
            "ReferenceToMri": self.reference_to_mri.tolist(),
            "accepted": bool(self.accepted),
            "similarity": _finite_or_none(self.similarity),
            "seconds": round(float(self.seconds), 4),
            "metric": self.metric,
            "initial_similarity": _finite_or_none(self.initial_similarity),
            "uncertainty_mm": _finite_or_none(self.uncertainty_mm),
            "correction_mm": _finite_or_none(self.correction_mm),
            "quality": round(self.quality, 4),
            "reason": self.reason,
            "CandidateReferenceToMri": self.candidate.tolist(),
            "InitialReferenceToMri": self.initial.tolist(),
            "evaluations": int(self.evaluations),
            "levels": self.levels,
        }


def _finite_or_none(value: float) -> float | None:
    return round(float(value), 6) if np.isfinite(value) else None


# ----------------------------------------------------------------------------- parameters


def correction(params: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """4×4 rigid correction for ``params`` = (t mm, rotation vector in degrees) about
    ``centre`` (MRI mm)."""
    p = np.asarray(params, dtype=np.float64)
    r = Rotation.from_rotvec(np.radians(p[3:6])).as_matrix()
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = centre - r @ centre + p[:3]
    return m


def mean_displacement(a: np.ndarray, b: np.ndarray, points: np.ndarray) -> float:
    """Mean distance between ``a·x`` and ``b·x`` over ``points`` (N, 3), mm."""
    if len(points) == 0:
        return float("nan")
    h = np.c_[points, np.ones(len(points))]
    return float(np.linalg.norm((h @ a.T - h @ b.T)[:, :3], axis=1).mean())


def _optimise(
    cost: Callable[[np.ndarray], float],
    x0: np.ndarray,
    step: np.ndarray,
    max_evaluations: int,
    xtol: float,
) -> tuple[np.ndarray, float, int]:
    """Nelder–Mead (scipy) from ``x0`` with an initial simplex of ``step`` per axis."""
    simplex = np.vstack([x0, x0 + np.diag(step)])
    res = minimize(
        cost,
        x0,
        method="Nelder-Mead",
        options={
            "initial_simplex": simplex,
            "xatol": xtol,
            "fatol": 1e-5,
            "maxfev": max_evaluations,
            "adaptive": False,
        },
    )
    return np.asarray(res.x), float(res.fun), int(res.nfev)


# ----------------------------------------------------------------------------- checks


def check_inputs(mri: Volume, sweep: Sweep, initial: np.ndarray) -> None:
    """Refuse inputs that cannot give a meaningful registration (each message names it)."""
    mri.check_finite()
    if len(sweep) == 0:
        raise InputError(sweep.source, "the sweep is empty (no frames)")
    init = np.asarray(initial, dtype=np.float64)
    if init.shape != (4, 4) or not np.all(np.isfinite(init)):
        raise InputError("initial ReferenceToMri", "must be a finite 4×4 matrix")
    if not is_rigid(init, tol=1e-3):
        raise InputError(
            "initial ReferenceToMri",
            "is not a rigid transform (rotation + translation)",
            "give the navigation registration as 16 numbers",
        )
    if float(np.ptp(np.asarray(mri.data[:: max(1, mri.shape[0] // 32)]))) <= 0:
        raise InputError(mri.source, "the MRI is constant (no contrast to register to)")


# ----------------------------------------------------------------------------- the prepared problem


@dataclass
class PreparedLevel:
    """One resolution level: MRI, frames, similarity."""

    mri: MriLevel
    frames: FrameLevel
    similarity: FrameSimilarity


class SweepRegistration:
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
    """

    def __init__(
        self,
        mri: Volume,
        sweep: Sweep,
        initial: np.ndarray,
        options: RegistrationOptions | None = None,
        mri_levels: list[MriLevel] | None = None,
    ):
        self.options = options or RegistrationOptions()
        self.sweep = sweep
        opts = self.options
        spacings = opts.level_spacings_mm
        finest = prepare_frame_level(
            sweep,
            spacings[-1],
            max_frames=opts.level("max_frames", 99),
            ignore_zero_pixels=opts.ignore_zero_pixels,
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
        beams = sweep.image_to_reference[:, :3, 1]
        beam = (beams / np.linalg.norm(beams, axis=1, keepdims=True)).mean(axis=0)
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
        self.beam_direction = beam / max(np.linalg.norm(beam), 1e-12)
        normals = np.cross(sweep.image_to_reference[:, :3, 0], sweep.image_to_reference[:, :3, 1])
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        normal = (normals * np.sign(normals @ normals[len(normals) // 2])[:, None]).mean(axis=0)
        #: mean frame normal (elevation, image x × y), Reference frame, unit
        self.elevation_direction = normal / max(np.linalg.norm(normal), 1e-12)

    def _prepare(self, i: int, frames: FrameLevel | None = None) -> PreparedLevel:
        opts = self.options
        if frames is None:
            frames = prepare_frame_level(
                self.sweep,
                opts.level_spacings_mm[i],
                max_frames=opts.level("max_frames", i),
                ignore_zero_pixels=opts.ignore_zero_pixels,
            )
        sim = FrameSimilarity(
            self._mri_levels[i], frames, metric=opts.metric, patch_half=opts.level("patch_half", i)
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
                if (
                    np.linalg.norm(p[:3]) > opts.max_correction_mm * 1.5
                    or np.linalg.norm(p[3:]) > opts.max_correction_deg * 1.5
                ):
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
        result = self._verdict(candidate, initial, current, params, centre, evaluations, notes)
        result.seconds = time.perf_counter() - t0
        if progress:
            progress("done", 1.0)
        return result

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
        step = candidate @ np.linalg.inv(current)
        params = np.r_[
            step[:3, :3] @ centre + step[:3, 3] - centre,
            Rotation.from_matrix(step[:3, :3]).as_rotvec(degrees=True),
        ]
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
            metric=opts.metric,
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

    def _verdict(
        self,
        candidate: np.ndarray,
        initial: np.ndarray,
        current: np.ndarray,
        params: np.ndarray,
        centre: np.ndarray,
        evaluations: int,
        notes: list[dict],
    ) -> RegistrationResult:
        opts = self.options
        fine = self.level(-1).similarity
        new_sim, new_scores = fine.evaluate(candidate)
        cur_sim, cur_scores = fine.evaluate(current)
        evaluations += 2
        both = np.isfinite(new_scores) & np.isfinite(cur_scores)
        gain = new_scores[both] - cur_scores[both]
        mean_gain = new_sim - cur_sim
        t_stat = (
            float(gain.mean() / (gain.std(ddof=1) / np.sqrt(gain.size)))
            if gain.size > 2 and gain.std() > 0
            else (np.inf if gain.size and gain.mean() > 0 else 0.0)
        )
        pts = self.points_reference[:: max(1, len(self.points_reference) // 4000)]
        corr = mean_displacement(candidate, current, pts)
        angle = float(np.linalg.norm(params[3:]))
        shift = float(np.linalg.norm(params[:3]))
        reasons = []
        if shift > opts.max_correction_mm or angle > opts.max_correction_deg:
            reasons.append(f"implausible correction ({shift:.1f} mm, {angle:.1f}°)")
        if mean_gain < opts.min_similarity_gain:
            reasons.append(f"similarity gain {mean_gain:+.4f} below {opts.min_similarity_gain}")
        elif t_stat < opts.min_paired_t:
            reasons.append(f"gain not consistent across frames (t = {t_stat:.1f})")
        null_mean = float("nan")
        if not reasons and opts.null_offset_mm > 0:
            # the similarity of clearly wrong poses (the candidate shifted by ± the offset
            # along each axis): a candidate must stand well above this chance level
            nulls = []
            for axis in range(3):
                for sign in (-1.0, 1.0):
                    shifted = candidate.copy()
                    shifted[axis, 3] += sign * opts.null_offset_mm
                    nulls.append(fine(shifted))
            evaluations += 6
            null_mean = float(np.mean(nulls))
            if new_sim < null_mean + opts.min_margin_over_null:
                reasons.append(
                    f"similarity {new_sim:.4f} not clearly above chance ({null_mean:.4f} at "
                    f"±{opts.null_offset_mm:g} mm)"
                )
        uncertainty = float("nan")
        if not reasons and opts.uncertainty and len(self.level(-1).frames) >= 6:
            # only a candidate that passed the other tests is worth the split-sweep refinements
            uncertainty, n = self._split_uncertainty(candidate, centre, pts)
            evaluations += n
            if corr < opts.min_correction_to_uncertainty * uncertainty:
                reasons.append(
                    f"correction {corr:.2f} mm within its uncertainty ({uncertainty:.2f} mm)"
                )
        if not reasons and opts.ambiguity_offset_mm > 0:
            # last (it costs most): is there another pose, a few mm along the direction the
            # sweep constrains least, that the image likes as much as the candidate?
            ambiguity, n = self._ambiguity(candidate, new_sim, new_scores, pts)
            evaluations += n
            if ambiguity:
                reasons.append(ambiguity)
        accepted = not reasons
        reason = (
            f"accepted: similarity {cur_sim:.4f} → {new_sim:.4f} (t = {t_stat:.1f}), "
            f"correction {corr:.2f} mm"
            if accepted
            else "rejected: " + "; ".join(reasons)
        )
        return RegistrationResult(
            reference_to_mri=candidate if accepted else current.copy(),
            candidate=candidate,
            initial=initial,
            accepted=accepted,
            similarity=new_sim,
            initial_similarity=cur_sim,
            uncertainty_mm=uncertainty,
            correction_mm=corr,
            seconds=0.0,
            evaluations=evaluations,
            reason=reason,
            metric=opts.metric,
            levels=notes,
        )

    def _ambiguity(
        self, candidate: np.ndarray, similarity: float, scores: np.ndarray, pts: np.ndarray
    ) -> tuple[str, int]:
        """Refine from the candidate shifted ± ``ambiguity_offset_mm`` along the elevation
        direction (finest level) and compare each distinct optimum so found with the candidate
        (same frames). Returns (reason to reject or "", evaluations)."""
        opts = self.options
        level = self.level(-1)
        sim = level.similarity
        s = level.frames.spacing_mm
        centre_c = _apply(candidate, self.points_reference).mean(axis=0)
        direction = candidate[:3, :3] @ self.elevation_direction
        total = 0

        def cost(p: np.ndarray) -> float:
            return -sim(correction(p, centre_c) @ candidate)

        for sign in (-1.0, 1.0):
            x0 = np.r_[sign * opts.ambiguity_offset_mm * direction, 0.0, 0.0, 0.0]
            x, _, k = _optimise(
                cost, x0, np.r_[[0.6 * s] * 3, [0.6 * s] * 3], opts.ambiguity_evaluations, 0.05 * s
            )
            total += k
            other = correction(x, centre_c) @ candidate
            distance = mean_displacement(other, candidate, pts)
            if not distance > opts.ambiguity_distinct_mm:
                continue
            other_sim, other_scores = sim.evaluate(other)
            total += 1
            _, t_stat = _paired_gain(scores, other_scores)
            gain = similarity - other_sim
            if not gain >= opts.ambiguity_min_gain:
                return (
                    f"ambiguous: a pose {distance:.1f} mm away along the sweep scores "
                    f"{other_sim:.4f} against {similarity:.4f} (gain {gain:+.4f}, "
                    f"t = {t_stat:.1f})",
                    total,
                )
        return "", total

    def _split_uncertainty(
        self, candidate: np.ndarray, centre: np.ndarray, pts: np.ndarray
    ) -> tuple[float, int]:
        """Refine from the candidate on each half of the finest frames; half the distance
        between the two estimates is the uncertainty (each half has √2 × the error of the
        whole, their difference 2 × it)."""
        level = self.level(-1)
        n = len(level.frames)
        halves = [np.arange(0, n // 2), np.arange(n // 2, n)]
        estimates = []
        total = 0
        s = level.frames.spacing_mm
        budget = self.options.uncertainty_evaluations or max(
            30, self.options.level("max_evaluations", len(self._levels) - 1) // 2
        )
        for idx in halves:
            sub = _subset_level(level.frames, idx)
            sim = FrameSimilarity(
                level.mri, sub, metric=self.options.metric, patch_half=level.similarity.patch_half
            )

            def cost(p: np.ndarray, sim: FrameSimilarity = sim) -> float:
                return -sim(correction(p, centre) @ candidate)

            x, _, k = _optimise(
                cost, np.zeros(6), np.r_[[0.5 * s] * 3, [0.5 * s] * 3], budget, xtol=0.03 * s
            )
            total += k
            estimates.append(correction(x, centre) @ candidate)
        spread = 0.5 * mean_displacement(estimates[0], estimates[1], pts)
        return float(np.hypot(spread, self.options.uncertainty_floor_mm)), total


def _paired_gain(new_scores: np.ndarray, old_scores: np.ndarray) -> tuple[float, float]:
    """Mean per-frame gain of ``new`` over ``old`` and its paired t statistic (frames where
    both are finite)."""
    both = np.isfinite(new_scores) & np.isfinite(old_scores)
    gain = new_scores[both] - old_scores[both]
    if gain.size == 0:
        return float("nan"), 0.0
    if gain.size > 2 and gain.std() > 0:
        return float(gain.mean()), float(gain.mean() / (gain.std(ddof=1) / np.sqrt(gain.size)))
    return float(gain.mean()), (np.inf if gain.mean() > 0 else 0.0)


def _subset_level(frames: FrameLevel, idx: np.ndarray) -> FrameLevel:
    return FrameLevel(
        frames.spacing_mm,
        frames.us[idx],
        frames.us_grad[idx],
        frames.valid[idx],
        frames.pixel_to_reference[idx],
        frames.frame_index[idx],
    )


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:3, :3].T + m[:3, 3]


def register_sweep(
    mri: Volume,
    sweep: Sweep,
    initial: np.ndarray,
    options: RegistrationOptions | None = None,
    *,
    progress: Progress | None = None,
) -> RegistrationResult:
    """Register a tracked sweep to the MRI (batch).

    Parameters
    ----------
    mri
        Preoperative MRI (RAS mm).
    sweep
        Frames with ``ImageToReference`` poses.
    initial
        Initial ``ReferenceToMri`` (navigation or point-based), 4×4 rigid.
    options
        :class:`RegistrationOptions`.
    progress
        Called with (message, fraction done).

    Returns
    -------
    :class:`RegistrationResult`; ``reference_to_mri`` is the candidate only if accepted.

    Raises
    ------
    InputError
        Empty sweep, NaNs in the MRI, non-rigid initial, sweep outside the MRI.
    """
    check_inputs(mri, sweep, initial)
    t0 = time.perf_counter()
    problem = SweepRegistration(mri, sweep, initial, options)
    if progress:
        progress("prepared", 0.1)
    result = problem.run(initial, progress=progress)
    result.seconds = time.perf_counter() - t0
    return result


def load_registration_options(
    path: str | Path | None = None, *, metric: str | None = None
) -> RegistrationOptions:
    """Options from a TOML file (a ``[registration]`` table or top-level keys), then ``metric``.

    Raises
    ------
    ConfigError
        Unknown keys or bad values, naming the file and key.
    """
    import tomllib

    from pydantic import ValidationError

    from usnav.config.loader import format_validation_error

    opts = RegistrationOptions()
    if path is not None:
        p = Path(path)
        try:
            doc = tomllib.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(p, f"cannot read registration options: {exc}") from exc
        table = doc.get("registration", doc)
        try:
            opts = RegistrationOptions.model_validate(table)
        except ValidationError as exc:
            raise ConfigError(p, format_validation_error(exc, RegistrationOptions)) from exc
    if metric:
        opts = opts.model_copy(update={"metric": metric})
    return opts
