"""The do-no-harm verdict on a candidate ``ReferenceToMri`` and its stated uncertainty.

A candidate replaces the current estimate only if, on the same frames at the finest level, its
similarity is higher by a clear margin (paired over frames), it stands above chance, its
correction exceeds its resolution, it is plausible, no other pose along the sweep scores
as well (the ambiguity probe), and, for a correction larger than 2 mm, a search started from the
current estimate itself does not end elsewhere at a pose at least as good (the confirmation:
the evidence must support moving away from the current estimate's own optimum). Anything else
is reported as rejected and the current estimate stays.

``uncertainty_mm`` is a 95 % bound on the candidate's error at the field of view's centre
(where the tumor is imaged): a statistical part measured on the case (the spread of
re-registrations on the two halves of the sweep) and a systematic budget for what the image
cannot resolve (probe-calibration error, speed-of-sound depth scaling, the echo trailing its
interface, the similarity's own bias), see :func:`uncertainty_terms`. An accepted estimate
whose bound exceeds ``max_confident_uncertainty_mm`` is flagged (``confident`` false): a
display must show it as UNCERTAIN, never LIVE.

A candidate rejected **only** because a pose along the sweep scores as well (the ambiguity
probe, along the elevation direction) still carries what the image does determine: its position
across the sweep and its rotation. :attr:`RegistrationResult.across_sweep_reference_to_mri` is
that candidate moved back along the sweep to the current estimate's position there (session
25: on 16 such rejections, in three sets of cases including another simulator, its error across
the sweep was 0.1-1.3 mm where the navigation's was 0.6-6.4 mm). It is never accepted and never
bounded: margins may be drawn with it, as UNCERTAIN as the navigation registration itself.

Whatever the tie, a candidate rejected **only** for it is a pose the image clearly prefers
to the current estimate (the gain, its consistency across frames and the margin over chance
passed; the resolution too, when the bound is computed) that the image cannot single out:
another distinct pose scored within ``ambiguity_min_gain`` of it, or better (a search that
does not climb along the sweep may stop short of that pose). The confirmation, which comes
after the tie test, did not run on it. :attr:`RegistrationResult.tied_candidate_reference_to_mri`
is that candidate. Never accepted, never bounded: margins may be drawn with it, as UNCERTAIN
as the navigation registration (session 27: it replaced the across-sweep estimate for the
live margins; docs/pipeline.md "Session 27" for how that was chosen and on what).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from usnav.registration.estimate import RegistrationEstimate
from usnav.registration.options import RegistrationOptions
from usnav.registration.pose import (
    _apply,
    _optimise,
    _paired_gain,
    _subset_level,
    correction,
    mean_displacement,
)
from usnav.registration.similarity import FrameSimilarity

#: Fewest finest-level frames a candidate is judged on: the paired t of the per-frame gains and
#: the half-sweep spread of the bound (two halves of at least 3) need them.
MIN_VERDICT_FRAMES = 6


@dataclass
class RegistrationResult:
    """Outcome of :func:`register_sweep`.

    Attributes
    ----------
    reference_to_mri
        The estimate to use: the candidate if accepted, else ``initial``; with a tumor label,
        an accepted candidate moved by the tumor stage (the error at the tumor where it is
        now: ``bony_reference_to_mri`` keeps the candidate).
    candidate
        What the optimiser found (even if rejected).
    initial
        The starting ``ReferenceToMri``.
    accepted
        Verdict (see the module docstring).
    similarity, initial_similarity
        Finest-level similarity of the candidate and of the initial estimate (same frames).
    uncertainty_mm
        95 % bound on the error at the tumor where it is now, mm: the candidate's error at the
        field of view's centre plus the tumor's possible shift against it (the cord shift; the
        tumor stage's residual once :meth:`followed_tumor` restated it). NaN when the candidate
        failed a test before it was computed.
    confident
        Accepted and ``uncertainty_mm`` ≤ ``max_confident_uncertainty_mm``: may be shown LIVE.
    uncertainty_terms
        The terms of ``uncertainty_mm`` (:func:`uncertainty_terms`).
    diagnostics
        The verdict's statistics (paired t, gain, margin over chance, split spread, ambiguity
        margin), those that were computed.
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
    bony_reference_to_mri
        The accepted global (bony) estimate when the tumor stage moved ``reference_to_mri`` to
        the tumor (:mod:`usnav.registration.tumor`); None otherwise.
    tumor_stage
        The tumor stage's outcome (:meth:`usnav.registration.tumor.TumorStage.to_json`), None
        when it did not run (no label, or the estimate was not accepted).
    across_sweep_reference_to_mri
        For a candidate rejected only as ambiguous along the sweep: the candidate moved along
        the sweep (the frames' mean normal) so that the field of view's centre keeps the
        current estimate's position along it, 4×4. What the images determined (across the
        sweep, the rotation) with the navigation's position along it. Not accepted, no bound:
        see the module docstring. None otherwise.
    tied_candidate_reference_to_mri
        For a candidate rejected only as ambiguous (along the sweep, the image or both): the
        candidate, 4×4 (``diagnostics["tie_spread_mm"]``: how far the farthest tied pose lies
        from it, mean over the field of view). Not accepted, no bound: see the module
        docstring. None otherwise.
    only_tied
        Rejected for one reason only: another pose, farther than ``ambiguity_distinct_mm``
        (along the sweep or the image), scored within ``ambiguity_min_gain`` of the candidate
        or better (``diagnostics["ambiguity_margin"]`` says by how much). The tests before it
        (gain, its consistency across frames, the margin over chance, the resolution) passed;
        the confirmation search, which comes after it, did not run.
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
    confident: bool = False
    uncertainty_terms: dict[str, float] = field(default_factory=dict)
    diagnostics: dict[str, float] = field(default_factory=dict)
    bony_reference_to_mri: np.ndarray | None = None
    tumor_stage: dict | None = None
    across_sweep_reference_to_mri: np.ndarray | None = None
    tied_candidate_reference_to_mri: np.ndarray | None = None
    only_tied: bool = False

    @property
    def bony_estimate(self) -> np.ndarray:
        """The global (bony) estimate: ``reference_to_mri`` before the tumor stage moved it."""
        if self.bony_reference_to_mri is None:
            return self.reference_to_mri
        return self.bony_reference_to_mri

    @property
    def quality(self) -> float:
        """0..1 for a display: accepted, similar, and certain (see docs/registration.md)."""
        if not self.accepted:
            return 0.0
        unc = self.uncertainty_mm if np.isfinite(self.uncertainty_mm) else 2.0
        sim = float(np.clip(self.similarity / 0.3, 0.0, 1.0))
        return float(sim * np.exp(-unc / 2.0))

    def followed_tumor(self, options: RegistrationOptions) -> None:
        """Restate ``uncertainty_mm`` (and ``confident``) for margins drawn with the tumor
        stage's estimate: its ``tumor_shift`` term becomes ``options.tumor_stage_error_mm``
        (the stage's residual) instead of the whole shift ``options.tumor_shift_mm``."""
        if not self.uncertainty_terms:
            return
        terms = dict(self.uncertainty_terms, tumor_shift=options.tumor_stage_error_mm)
        self.uncertainty_terms = _with_total(terms)
        self.uncertainty_mm = self.uncertainty_terms["uncertainty_mm"]
        self.confident = (
            self.accepted and self.uncertainty_mm <= options.max_confident_uncertainty_mm
        )
        # the verdict's UNCERTAIN note described the bound before the stage: restate it
        self.reason = self.reason.replace(_uncertain_note(options), "")
        self.reason += (
            f"; at the tumor stage's estimate: error ≤ {self.uncertainty_mm:.2f} mm (95 %)"
        )
        if self.accepted and not self.confident:
            self.reason += _uncertain_note(options)

    def reject_off_level(self, seen: float, least: float) -> None:
        """Reject an accepted estimate whose tumor stage saw the tumor in only ``seen`` (< the
        option ``tumor_min_sweep_fraction`` ``least``) of the sweep's frames: a possible
        wrong vertebral level. The initial estimate is kept; the candidate and the tumor
        stage's outcome stay in the result."""
        self.reason = (
            f"rejected: possible wrong vertebral level: the tumor label lies under "
            f"{seen:.0%} of the sweep's frames (fewer than {least:.0%}); a sweep over the "
            f"tumor registered one vertebra off puts it at the sweep's end (the candidate "
            f"otherwise: {self.reason})"
        )
        self.accepted = False
        self.confident = False
        self.reference_to_mri = self.initial.copy()
        self.bony_reference_to_mri = None

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
            # a bound on the error of the ReferenceToMri above: a rejected candidate's bound
            # says nothing about the initial estimate kept in its place (kept beside it)
            "uncertainty_mm": _finite_or_none(self.uncertainty_mm) if self.accepted else None,
            "candidate_uncertainty_mm": _finite_or_none(self.uncertainty_mm),
            "confident": bool(self.confident),
            "uncertainty_terms": {k: round(v, 4) for k, v in self.uncertainty_terms.items()},
            "diagnostics": {k: _finite_or_none(v) for k, v in self.diagnostics.items()},
            "correction_mm": _finite_or_none(self.correction_mm),
            "quality": round(self.quality, 4),
            "reason": self.reason,
            "BonyReferenceToMri": self.bony_estimate.tolist(),
            "tumor_stage": self.tumor_stage,
            "CandidateReferenceToMri": self.candidate.tolist(),
            "InitialReferenceToMri": self.initial.tolist(),
            "AcrossSweepReferenceToMri": (
                None
                if self.across_sweep_reference_to_mri is None
                else self.across_sweep_reference_to_mri.tolist()
            ),
            "TiedCandidateReferenceToMri": (
                None
                if self.tied_candidate_reference_to_mri is None
                else self.tied_candidate_reference_to_mri.tolist()
            ),
            "evaluations": int(self.evaluations),
            "levels": self.levels,
        }


def _finite_or_none(value: float) -> float | None:
    return round(float(value), 6) if np.isfinite(value) else None


def uncertainty_terms(
    spread_mm: float,
    fov_depth_mm: float,
    options: RegistrationOptions,
    *,
    model_spread_mm: float = 0.0,
    tumor_shift_mm: float | None = None,
    removed_label_mm: float = 0.0,
) -> dict[str, float]:
    """The stated uncertainty and its terms (mm): the error of the global estimate at the field
    of view's centre, plus how far the tumor may lie from where that estimate puts it.

    Parameters
    ----------
    spread_mm
        Half the distance between the re-registrations on the two halves of the sweep (mean
        over the field of view), mm.
    fov_depth_mm
        Depth of the field of view's centre below the transducer face, mm (the lever arm of a
        calibration rotation error and the depth a speed-of-sound error scales).
    options
        The budget's bounds and scales.
    model_spread_mm
        Distance between the optima of two similarities (the model of echo formation), mm.
    tumor_shift_mm
        Bound on the tumor's position against the global estimate: the cord shift (None:
        ``options.tumor_shift_mm``) when the margins are drawn with the global estimate, or
        the tumor stage's residual (``options.tumor_stage_error_mm``) once it followed it.
    removed_label_mm
        How far the removed-tissue label's walls may lie from the real wound's
        (``options.removed_label_error_mm`` when the MRI is the operated one, else 0): the
        estimate follows them.

    Returns
    -------
    dict with ``statistical``, ``model``, ``calibration``, ``speed_of_sound``, ``echo_offset``,
    ``similarity_bias``, ``tumor_shift``, ``removed_label`` and ``uncertainty_mm`` = their
    quadrature sum (independent errors, each term a ~95 % bound).
    """
    o = options
    terms = {
        "statistical": o.statistical_scale * float(spread_mm),
        "model": o.model_scale * float(model_spread_mm),
        "calibration": o.calibration_error_mm
        + np.radians(o.calibration_error_deg) * max(fov_depth_mm, 0.0),
        "speed_of_sound": o.speed_of_sound_error * max(fov_depth_mm, 0.0),
        "echo_offset": o.echo_offset_mm,
        "similarity_bias": o.similarity_bias_mm,
        "tumor_shift": o.tumor_shift_mm if tumor_shift_mm is None else tumor_shift_mm,
        "removed_label": float(removed_label_mm),
    }
    return _with_total(terms)


def systematic_floor_mm(options: RegistrationOptions, *, operated: bool = False) -> float:
    """The smallest ``uncertainty_mm`` any estimate can state with this budget, mm: its
    systematic terms at a field of view at the transducer face (depth only adds), with no
    statistical or model spread, the tumor followed by the tumor stage (the smaller of its
    two tumor terms), and ``removed_label_error_mm`` when the MRI is the operated one.

    A display's LIVE threshold below it means no overlay can ever be LIVE, whatever the
    registration's true error (docs/protocol.md, "Why nothing is LIVE with the default
    budget")."""
    terms = uncertainty_terms(
        0.0,
        0.0,
        options,
        tumor_shift_mm=min(options.tumor_stage_error_mm, options.tumor_shift_mm),
        removed_label_mm=options.removed_label_error_mm if operated else 0.0,
    )
    return terms["uncertainty_mm"]


def _uncertain_note(options: RegistrationOptions) -> str:
    """What an accepted estimate's reason says when its bound is too large to be confident."""
    return (
        f"; UNCERTAIN: the error cannot be bounded below "
        f"{options.max_confident_uncertainty_mm:g} mm"
    )


def _with_total(terms: dict[str, float]) -> dict[str, float]:
    """``terms`` (without a total) and ``uncertainty_mm``, their quadrature sum."""
    out = {k: float(v) for k, v in terms.items() if k != "uncertainty_mm"}
    out["uncertainty_mm"] = float(np.sqrt(sum(v * v for v in out.values())))
    return out


def _climb(cost, x0: np.ndarray, spacing_mm: float, evaluations: int) -> tuple[np.ndarray, int]:
    """A probe's refinement on a level of pixel size ``spacing_mm``: first steps 0.6 pixel in
    mm and in degrees, stop at 0.05 pixel. Returns (the optimum, evaluations used)."""
    step = np.r_[[0.6 * spacing_mm] * 3, [0.6 * spacing_mm] * 3]
    x, _, k = _optimise(cost, x0, step, evaluations, 0.05 * spacing_mm)
    return x, k


class VerdictMixin:
    """The verdict of :class:`~usnav.registration.search.SweepRegistration` (needs its
    ``options``, ``level()``, ``points_reference``, ``elevation_direction``,
    ``lateral_direction``, ``removed_label_error_mm`` and ``fov_depth_mm``)."""

    options: RegistrationOptions
    points_reference: np.ndarray
    elevation_direction: np.ndarray
    lateral_direction: np.ndarray
    removed_label_error_mm: float
    fov_depth_mm: float

    def verdict_points(self) -> np.ndarray:
        """The field-of-view points (Reference mm, at most ~4000) over which the verdict
        measures distances between poses (:func:`~usnav.registration.pose.mean_displacement`)."""
        return self.points_reference[:: max(1, len(self.points_reference) // 4000)]

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
        pts = self.verdict_points()
        corr = mean_displacement(candidate, current, pts)
        angle = float(np.linalg.norm(params[3:]))
        shift = float(np.linalg.norm(params[:3]))
        reasons = []
        frames = len(self.level(-1).frames)
        if frames < MIN_VERDICT_FRAMES:
            # one frame gave t = inf and an accepted estimate with no bound at all
            reasons.append(
                f"only {frames} frame(s) to judge it: the gain's consistency across frames and "
                f"the error bound need at least {MIN_VERDICT_FRAMES}"
            )
        if shift > opts.max_correction_mm or angle > opts.max_correction_deg:
            reasons.append(f"implausible correction ({shift:.1f} mm, {angle:.1f}°)")
        if mean_gain < opts.min_similarity_gain:
            reasons.append(f"similarity gain {mean_gain:+.4f} below {opts.min_similarity_gain}")
        elif t_stat < opts.min_paired_t:
            reasons.append(f"gain not consistent across frames (t = {t_stat:.1f})")
        null_mean = float("nan")
        diagnostics: dict[str, float] = {"paired_t": float(t_stat), "gain": float(mean_gain)}
        ambiguity = ""
        self._ambiguous_axes: set[str] = set()
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
            diagnostics["margin_over_chance"] = float(new_sim - null_mean)
            if new_sim < null_mean + opts.margin_over_null(fine.metric):
                reasons.append(
                    f"similarity {new_sim:.4f} not clearly above chance ({null_mean:.4f} at "
                    f"±{opts.null_offset_mm:g} mm)"
                )
        uncertainty = float("nan")
        terms: dict[str, float] = {}
        if not reasons and opts.uncertainty:
            # only a candidate that passed the other tests is worth the split-sweep refinements
            spread, n = self._split_spread(candidate, centre, pts)
            evaluations += n
            model, n = self._model_spread(candidate, centre, pts)
            evaluations += n
            diagnostics["model_spread_mm"] = float(model)
            terms = uncertainty_terms(
                spread,
                self.fov_depth_mm,
                opts,
                model_spread_mm=model,
                removed_label_mm=self.removed_label_error_mm,
            )
            uncertainty = terms["uncertainty_mm"]
            resolution = float(np.hypot(spread, opts.uncertainty_floor_mm))
            diagnostics["split_spread_mm"] = float(spread)
            if corr < opts.min_correction_to_uncertainty * resolution:
                reasons.append(
                    f"correction {corr:.2f} mm within its resolution ({resolution:.2f} mm)"
                )
        if not reasons and opts.ambiguity_offsets_mm:
            # last (it costs most): is there another pose, a few mm along the direction the
            # sweep constrains least, that the image likes as much as the candidate?
            ambiguity, n, margin = self._ambiguity(candidate, new_sim, new_scores, pts)
            evaluations += n
            diagnostics["ambiguity_margin"] = margin
            diagnostics.update(self._ambiguity_margins)
            if ambiguity:
                diagnostics["tie_spread_mm"] = self._tie_spread_mm
                reasons.append(ambiguity)
        if not reasons and opts.confirm_evaluations > 0 and corr > opts.ambiguity_distinct_mm:
            # a correction larger than the accuracy that matters must be confirmed: where does
            # a search from the current estimate itself lead, and how much better than that
            # optimum is the candidate?
            unconfirmed, n, facts = self._confirm(candidate, current, new_sim, corr, pts)
            evaluations += n
            diagnostics.update(facts)
            if unconfirmed:
                reasons.append(unconfirmed)
        accepted = not reasons
        only_tied = bool(ambiguity) and reasons == [ambiguity]
        across = tied = None
        if only_tied:
            tied = candidate.copy()
        if only_tied and self._ambiguous_axes == {"elevation"}:
            across, along_mm = self._across_sweep(candidate, current)
            diagnostics["across_sweep_moved_mm"] = along_mm
        confident = accepted and uncertainty <= opts.max_confident_uncertainty_mm
        reason = (
            f"accepted: similarity {cur_sim:.4f} → {new_sim:.4f} (t = {t_stat:.1f}), "
            f"correction {corr:.2f} mm, error ≤ {uncertainty:.2f} mm (95 %)"
            if accepted
            else "rejected: " + "; ".join(reasons)
        )
        if accepted and not confident:
            reason += _uncertain_note(opts)
        return RegistrationResult(
            reference_to_mri=candidate if accepted else current.copy(),
            candidate=candidate,
            initial=initial,
            accepted=accepted,
            similarity=new_sim,
            initial_similarity=cur_sim,
            uncertainty_mm=uncertainty,
            correction_mm=corr,
            confident=confident,
            uncertainty_terms=terms,
            diagnostics=diagnostics,
            across_sweep_reference_to_mri=across,
            tied_candidate_reference_to_mri=tied,
            only_tied=only_tied,
            seconds=0.0,
            evaluations=evaluations,
            reason=reason,
            metric=self.level(-1).similarity.metric,
            levels=notes,
        )

    def _sweep_probes(
        self, candidate: np.ndarray
    ) -> tuple[list[tuple[np.ndarray, float, str]], int]:
        """Refine from the candidate shifted ± each of ``ambiguity_offsets_mm`` along each of
        ``ambiguity_axes`` (the elevation direction: the one a transverse sweep constrains
        least; the image's lateral axis: along the spine on a sagittal sweep; finest level,
        ``ambiguity_evaluations`` each). Returns ([(pose, offset mm, axis)], evaluations). The
        same candidate always gives the same poses (and the similarity's cache then the
        scores)."""
        opts = self.options
        level = self.level(-1)
        sim = level.similarity
        s = level.frames.spacing_mm
        centre_c = _apply(candidate, self.points_reference).mean(axis=0)
        axes = {"elevation": self.elevation_direction, "lateral": self.lateral_direction}
        total = 0
        poses = []

        def cost(p: np.ndarray) -> float:
            return -sim(correction(p, centre_c) @ candidate)

        coarse = self._coarse_level(opts.ambiguity_coarse_evaluations)

        def coarse_cost(p: np.ndarray) -> float:
            assert coarse is not None
            return -coarse.similarity(correction(p, centre_c) @ candidate)

        for axis in opts.ambiguity_axes:
            direction = candidate[:3, :3] @ axes[axis]
            for offset in opts.ambiguity_offsets_mm:
                for sign in (-1.0, 1.0):
                    x0 = np.r_[sign * offset * direction, 0.0, 0.0, 0.0]
                    if coarse is not None:
                        # most of the climb on the coarser level's cheaper evaluations; the
                        # finest level's refinement then starts near its optimum
                        x0, k = _climb(
                            coarse_cost,
                            x0,
                            coarse.frames.spacing_mm,
                            opts.ambiguity_coarse_evaluations,
                        )
                        total += k
                    x, k = _climb(cost, x0, s, opts.ambiguity_evaluations)
                    total += k
                    poses.append((correction(x, centre_c) @ candidate, offset, axis))
        return poses, total

    def _coarse_level(self, evaluations: int):
        """The level before the finest (a :class:`~usnav.registration.search.PreparedLevel`)
        when a coarse-to-fine refinement asks for ``evaluations`` > 0 there and the search
        has more than one level; else None (the finest level alone, as before session 32)."""
        if evaluations <= 0 or len(self.options.level_spacings_mm) < 2:
            return None
        return self.level(-2)

    def _ambiguity(
        self, candidate: np.ndarray, similarity: float, scores: np.ndarray, pts: np.ndarray
    ) -> tuple[str, int, float]:
        """Compare each distinct optimum of :meth:`_sweep_probes` with the candidate (same
        frames). Returns (reason to reject or "", evaluations, the smallest margin of the
        candidate over a distinct alternative; inf if none)."""
        opts = self.options
        sim = self.level(-1).similarity
        worst = (np.inf, "")
        self._ambiguity_margins: dict[str, float] = {}
        self._ambiguous_axes = set()  # the probes' axes with an alternative within the gain
        self._tie_spread_mm = 0.0  # the farthest alternative within the gain, mm
        poses, total = self._sweep_probes(candidate)
        tie_t = np.inf  # the smallest paired t over the rivals within the gain
        for other, offset, axis in poses:
            distance = mean_displacement(other, candidate, pts)
            if not distance > opts.ambiguity_distinct_mm:
                continue
            other_sim, other_scores = sim.evaluate(other)
            total += 1
            _, t_stat = _paired_gain(scores, other_scores)
            gain = similarity - other_sim
            key = f"ambiguity_margin_{offset:g}mm"
            if axis != "elevation":
                key = f"ambiguity_margin_{axis}_{offset:g}mm"
            self._ambiguity_margins[key] = min(self._ambiguity_margins.get(key, np.inf), gain)
            if gain >= opts.ambiguity_min_gain:
                continue
            tie_t = min(tie_t, t_stat)
            if (
                opts.ambiguity_consistent_gain is not None
                and gain >= opts.ambiguity_consistent_gain
                and t_stat >= opts.ambiguity_consistent_t
            ):
                continue  # a small lead, but consistent across frames: not a tie
            self._ambiguous_axes.add(axis)
            self._tie_spread_mm = max(self._tie_spread_mm, distance)
            if gain < worst[0]:
                worst = (
                    gain,
                    f"ambiguous: a pose {distance:.1f} mm away "
                    f"{'along the sweep' if axis == 'elevation' else 'along the image'} scores "
                    f"{other_sim:.4f} against {similarity:.4f} (gain {gain:+.4f}, "
                    f"t = {t_stat:.1f})",
                )
        if np.isfinite(tie_t):
            self._ambiguity_margins["ambiguity_tie_t"] = float(tie_t)
        margins = [v for k, v in self._ambiguity_margins.items() if k.endswith("mm")]
        margin = min(margins, default=np.inf)
        return worst[1], total, float(margin)

    def _across_sweep(self, candidate: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, float]:
        """The candidate moved along the sweep (``elevation_direction`` turned by the
        candidate's rotation) until the field of view's centre lies where ``current`` puts it
        along that direction. Returns (4×4, the distance moved, mm)."""
        s = candidate[:3, :3] @ self.elevation_direction
        s = s / max(float(np.linalg.norm(s)), 1e-12)
        centre = self.points_reference.mean(axis=0, keepdims=True)
        along = float((_apply(candidate, centre) - _apply(current, centre))[0] @ s)
        moved = candidate.copy()
        moved[:3, 3] -= along * s
        return moved, abs(along)

    def _climb_along_sweep(
        self, candidate: np.ndarray, limit: Callable[[np.ndarray], bool] | None = None
    ) -> tuple[np.ndarray, int, int]:
        """Move the candidate to a clearly better optimum along the sweep while one exists:
        where a probe of :meth:`_sweep_probes` ends at a distinct pose that scores higher by
        at least ``ambiguity_min_gain`` (what the verdict calls clearly better; a smaller lead
        is a tie it would reject anyway), that pose, refined with the finest level's budget,
        becomes the candidate (at most ``sweep_climbs`` moves). The verdict then judges the
        final candidate as any other.

        Parameters
        ----------
        candidate
            4×4 ``ReferenceToMri`` the search found.
        limit
            Whether a pose lies within the search's bounds (e.g. the largest correction);
            a pose outside them is never moved to.

        Returns (candidate, moves, evaluations)."""
        opts = self.options
        level = self.level(-1)
        sim = level.similarity
        s = level.frames.spacing_mm
        pts = self.verdict_points()
        lead = max(opts.ambiguity_min_gain, 0.0)
        total = 0
        moves = 0
        for _ in range(opts.sweep_climbs):
            current = sim(candidate)
            best = current + lead
            poses, n = self._sweep_probes(candidate)
            total += n
            found = None
            for other, *_ in poses:
                score = sim(other)
                if (
                    score > best
                    and mean_displacement(other, candidate, pts) > opts.ambiguity_distinct_mm
                    and (limit is None or limit(other))
                ):
                    best, found = score, other
            if found is None:
                break
            centre_o = _apply(found, self.points_reference).mean(axis=0)

            def cost(p: np.ndarray, start: np.ndarray = found, c: np.ndarray = centre_o) -> float:
                return -sim(correction(p, c) @ start)

            x, _, n = _optimise(
                cost,
                np.zeros(6),
                np.r_[[0.6 * s] * 3, [0.6 * s] * 3],
                opts.level("max_evaluations", len(opts.level_spacings_mm) - 1),
                0.05 * s,
            )
            total += n
            refined = correction(x, centre_o) @ found
            if limit is not None and not limit(refined):
                break
            candidate = refined
            moves += 1
        return candidate, moves, total

    def _confirm(
        self,
        candidate: np.ndarray,
        current: np.ndarray,
        similarity: float,
        correction_mm: float,
        pts: np.ndarray,
    ) -> tuple[str, int, dict[str, float]]:
        """The independent search from the current estimate (finest level, no prior, the
        search's own first steps) and the verdict on a candidate it does not reach.

        Returns (reason to reject or "", evaluations, diagnostics: ``local_distance_mm``, the
        distance from the candidate to the optimum found from the current estimate (mean over
        the field of view); ``local_margin``, the candidate's similarity minus that
        optimum's)."""
        opts = self.options
        level = self.level(-1)
        sim = level.similarity
        centre = _apply(current, self.points_reference).mean(axis=0)

        def cost(p: np.ndarray) -> float:
            return -sim(correction(p, centre) @ current)

        step = np.r_[[opts.confirm_step[0]] * 3, [opts.confirm_step[1]] * 3]
        x0 = np.zeros(6)
        n = 0
        coarse = self._coarse_level(opts.confirm_coarse_evaluations)
        if coarse is not None:
            # the search from the current estimate on the coarser level first (its first
            # steps ``confirm_step``), then refined at the finest level with small steps
            coarse_sim = coarse.similarity
            sc = coarse.frames.spacing_mm

            def coarse_cost(p: np.ndarray) -> float:
                return -coarse_sim(correction(p, centre) @ current)

            x0, _, n = _optimise(coarse_cost, x0, step, opts.confirm_coarse_evaluations, 0.05 * sc)
            s = level.frames.spacing_mm
            step = np.r_[[0.6 * s] * 3, [0.6 * s] * 3]
        x, f, k = _optimise(
            cost, x0, step, opts.confirm_evaluations, 0.05 * level.frames.spacing_mm
        )
        n += k
        local = correction(x, centre) @ current
        distance = mean_displacement(local, candidate, pts)
        margin = float(similarity + f)
        facts = {
            "local_distance_mm": float(distance),
            "local_margin": margin,
        }
        if not distance > opts.ambiguity_distinct_mm:
            return "", n, facts
        if margin < opts.confirm_min_margin:
            return (
                f"unconfirmed: a search from the current estimate ends {distance:.1f} mm from "
                f"the candidate ({correction_mm:.1f} mm correction), which leads it by only "
                f"{margin:+.4f} (needs {opts.confirm_min_margin:g})",
                n,
                facts,
            )
        return "", n, facts

    def _model_spread(
        self, candidate: np.ndarray, centre: np.ndarray, pts: np.ndarray
    ) -> tuple[float, int]:
        """Distance (mean over the field of view) from the candidate to the optimum of another
        similarity that is as defensible a model of the ultrasound (LC² with the MRI's
        derivative along the beam for LC², and LC² for the others), refined from the candidate
        at the finest level. Where the two models of echo formation disagree, the image does
        not pin the pose down better than that. 0 when switched off."""
        opts = self.options
        if opts.model_scale <= 0 or opts.model_evaluations <= 0:
            return 0.0, 0
        level = self.level(-1)
        s = level.frames.spacing_mm
        other = "lc2_beam" if level.similarity.metric == "lc2" else "lc2"
        sim = FrameSimilarity(
            level.mri, level.frames, metric=other, patch_half=level.similarity.patch_half
        )

        def cost(p: np.ndarray) -> float:
            return -sim(correction(p, centre) @ candidate)

        x, _, k = _optimise(
            cost,
            np.zeros(6),
            np.r_[[0.5 * s] * 3, [0.5 * s] * 3],
            opts.model_evaluations,
            xtol=0.03 * s,
        )
        return mean_displacement(correction(x, centre) @ candidate, candidate, pts), k

    def _split_spread(
        self, candidate: np.ndarray, centre: np.ndarray, pts: np.ndarray
    ) -> tuple[float, int]:
        """Refine from the candidate on each half of the finest frames; half the distance
        between the two estimates (mean over the field of view) is the statistical spread
        (each half has √2 × the error of the whole, their difference 2 × it)."""
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
                level.mri,
                sub,
                metric=level.similarity.metric,
                patch_half=level.similarity.patch_half,
            )

            def cost(p: np.ndarray, sim: FrameSimilarity = sim) -> float:
                return -sim(correction(p, centre) @ candidate)

            x, _, k = _optimise(
                cost, np.zeros(6), np.r_[[0.5 * s] * 3, [0.5 * s] * 3], budget, xtol=0.03 * s
            )
            total += k
            estimates.append(correction(x, centre) @ candidate)
        return 0.5 * mean_displacement(estimates[0], estimates[1], pts), total
