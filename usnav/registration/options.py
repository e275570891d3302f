"""Options of the rigid US→MRI registration (:func:`usnav.registration.rigid.register_sweep`),
validated by pydantic (``extra="forbid"``), and their TOML loader."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from usnav.errors import ConfigError

#: Default margin of a candidate over the chance level (LC², LC² beam, NCC of gradients) ...
MARGIN_OVER_NULL = 0.05
#: ... and for MIND-SSC: 0.05 × its 15 mm drop over LC²'s (0.069 / 0.101), session 14.
MIND_MARGIN_OVER_NULL = 0.034

# list elements are checked one by one (a NaN pixel size reached the kernels and crashed them)
_PositiveMm = Annotated[float, Field(gt=0)]
_Mm = Annotated[float, Field(allow_inf_nan=False)]
_PositiveInt = Annotated[int, Field(ge=1)]
_NonNegativeInt = Annotated[int, Field(ge=0)]


class RegistrationOptions(BaseModel):
    """Options of :func:`register_sweep` (TOML section ``[registration]``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    metric: Literal["lc2", "lc2_beam", "ncc_gradient", "mind_ssc"] = "mind_ssc"
    """Similarity of the search. ``mind_ssc`` (MIND-SSC descriptors, Heinrich 2012/2013, US
    standard-deviation weighted; session 12) replaced LC² as the batch default: chosen on the
    tuning families (median candidate error 0.72 → 0.36 mm), then reported once on the 42
    held-out cases (1.08 → 0.68 mm, accepted > 2 mm 2 → 0) and Case 24 (same grid 2.06 →
    2.00 mm, re-gridded 2.29 → 1.88 mm); the verdict's thresholds, set on LC², were re-checked
    on its scale (notes/mind-ssc.md). The live worker uses it too since session 15
    (:func:`usnav.registration.worker.live_cold_registration_options`)."""
    level_metrics: list[Literal["lc2", "lc2_beam", "ncc_gradient", "mind_ssc"]] | None = None
    """Similarity per level, coarse to fine (as ``level_spacings_mm``; the last entry repeats);
    None: ``metric`` at every level. The verdict and the bound use the finest level's."""
    level_spacings_mm: list[_PositiveMm] = Field(default=[1.5, 1.0, 0.5], min_length=1)
    """Pixel size of each level, coarse to fine, mm. The 0.5 mm level (#16, notes/
    accuracy-levers.md) was chosen on the tuning families (median error 1.11 → 0.72 mm,
    accepted > 2 mm 2 → 0 of 17) and then reported once on the 42 held-out cases (1.35 →
    1.15 mm; accepted > 2 mm 7 → 2; harm 1 → 0; bound ≥ error 30/36 → 33/34), at ~2.2× the
    time. The streaming worker's warm updates keep [1.5, 1.0]."""
    patch_half: list[_NonNegativeInt] = Field(default=[1, 1, 1], min_length=1)
    """LC² patch half-width per level, pixels (1 → 3×3 patches: 3 mm at the 1 mm level;
    larger patches were biased by large-scale appearance on the tuning cases)."""
    max_frames: list[_PositiveInt] = Field(default=[40, 40, 40], min_length=1)
    """Frames used per level (spread along the sweep)."""
    max_evaluations: list[_PositiveInt] = Field(default=[160, 100, 80], min_length=1)
    """Similarity evaluations per level (the optimiser's budget)."""
    initial_step: tuple[_PositiveMm, _PositiveMm] = (2.0, 3.0)
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
    prior_at_finest: StrictBool = False
    """Apply the prior at the finest level too (it then biases the result towards the
    initial estimate); by default it only chooses the basin at the coarser levels."""
    search_axes: Literal["mri_world", "sweep", "mri_voxels"] = "mri_world"
    """The axes the search steps along (its simplex, translation grid and box). ``mri_world``:
    the MRI's RAS axes, which by the file's convention are the patient's (the spine runs
    along S), so the steps follow the anatomy; turning the MRI's world by hand (a header
    that no longer says where the patient is) moves the answer by up to ~0.5 mm. ``sweep``
    (the sweep's lateral, beam and elevation directions through the initial estimate) and
    ``mri_voxels`` (the MRI's voxel axes) give an answer that does not depend on how the
    MRI's world is oriented, but on the tuning seeds 1701-1748 they were worse case by case
    (15 cases worse by > 0.05 mm, 2 and 5 better; notes/session-35-search-axes.md): not the
    default. Batch registration (``register_sweep``)."""
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
    beam_restarts_mm: list[_Mm] = Field(default=[-2.0, 2.0])
    """Extra finest-level starts shifted along the ultrasound beam (mm): a bone echo and the
    MRI's bone edge can offer two optima a few mm apart in depth."""
    screen_evaluations: int = Field(default=30, ge=5)
    """Evaluations of the short search that screens each extra start."""
    threads: int = Field(default=0, ge=0)
    """Threads of the similarity evaluations (each evaluation's frames are split among them;
    every score is the same to the bit whatever the number): 0 = every core. The streaming
    worker sets its own (``WorkerOptions.threads``, 1: the other core stays with the frame
    path)."""
    roi_margin_mm: float = Field(default=30.0, gt=0)
    """MRI crop margin around the sweep (must exceed the capture range)."""
    ignore_zero_pixels: StrictBool = False
    near_field_mask: StrictBool = True
    """Exclude each frame's anechoic near field, the saline of the open wound between the
    transducer face and the first tissue, from the comparison
    (:func:`usnav.registration.similarity.anechoic_near_field`): the preoperative MRI has
    muscle and laminae there. A mask on the ultrasound side, so no label is needed and there
    are no walls for the estimate to follow. Default since session 22: on the tuning families
    it did no harm by the rule set before the run (median 0.38 → 0.40 mm, accepted 62 → 61,
    accepted > 2 mm 0 → 0); the reports are in docs/registration.md "The wound seen from the
    ultrasound side"."""
    near_field_fraction: float = Field(default=0.1, gt=0, lt=1)
    """Anechoic: below this fraction of the frame's 99th percentile."""
    near_field_min_depth_mm: float = Field(default=3.0, ge=0)
    """A column's anechoic layer counts from this depth (thinner: gel or skin)."""
    near_field_margin_mm: float = Field(default=1.0, ge=0)
    """The layer widened sideways by this much, so the wound's side walls are not compared."""
    uncertainty: StrictBool = True
    """Estimate the uncertainty from the two half-sweeps (costs ~30 % more time)."""
    uncertainty_floor_mm: float = Field(default=0.85, ge=0)
    """Added in quadrature to the half-sweep spread to give the *resolution* a correction must
    exceed (``min_correction_to_uncertainty`` times it) to count as clearly better. 0.85 mm =
    the median error on tuning seeds 1001-1040. (The stated ``uncertainty_mm`` adds the
    systematic budget below instead.)"""
    uncertainty_evaluations: int | None = Field(default=30, ge=5)
    """Budget of each half-sweep refinement (default 30; None: half the finest level's, at
    least 30)."""
    statistical_scale: float = Field(default=2.0, ge=0)
    """The half-sweep spread times this is the statistical part of ``uncertainty_mm`` (a 95 %
    bound from a one-pair spread; chosen on the tuning families, docs/registration.md)."""
    model_scale: float = Field(default=1.0, ge=0)
    """The distance between the optima of LC² and of LC² with the beam-directional gradient
    (two models of echo formation) times this is the ``model`` term of ``uncertainty_mm``
    (0: not measured)."""
    model_evaluations: int = Field(default=40, ge=0)
    """Budget of the refinement with the other similarity."""
    similarity_bias_mm: float = Field(default=1.5, ge=0)
    """Systematic budget: how far the similarity's optimum may sit from the truth on
    ultrasound that forms differently from the MRI's edges (mostly along the beam: the bone
    echo's depth against the MRI's bone edge). Default 1.5 mm, from real data: LC² reached
    1.57 mm mean TRE over RESECT (CuRIOUS 2018) and lies 1.6-2.0 mm from the landmarks on
    Case 24 from every start and patch size, measured before #16; on the simulator's families
    0.5 mm gave ≥ 95 % coverage (docs/registration.md). With it no estimate at a 20 mm deep
    field of view can be bounded below 2 mm: LIVE needs a site that has measured its own bias
    (and calibration) on data like its own and states smaller values."""
    calibration_error_mm: float = Field(default=1.0, ge=0)
    """Systematic budget: bound on the probe calibration's translation error. The image cannot
    see it: the registration moves the image back onto the anatomy and so carries the error
    into ``ReferenceToMri``."""
    calibration_error_deg: float = Field(default=1.0, ge=0)
    """Systematic budget: bound on the calibration's rotation error (× the depth of the field
    of view's centre below the probe)."""
    speed_of_sound_error: float = Field(default=0.04, ge=0)
    """Systematic budget: relative depth-scale error of the image (1480-1580 m/s against the
    scanner's 1540 m/s: -3.9 %/+2.6 %), × the depth of the field of view's centre."""
    echo_offset_mm: float = Field(default=0.3, ge=0)
    """Systematic budget: the echo of an interface may trail it by half a pulse length
    (3 cycles at 7 MHz: 0.33 mm). A sweep whose beams share a direction cannot tell it from a
    translation along the beam."""
    tumor_shift_mm: float = Field(default=3.0, ge=0)
    """Systematic budget: how far the tumor may have moved against the structures the global
    (bony) estimate aligns — the cord's shift once the dura is open (#16's anatomy family: up
    to 3 mm). ``uncertainty_mm`` bounds the error at the tumor where it is now, so it carries
    this term whenever the margins are drawn with the global estimate (no tumor label, or the
    tumor stage did not apply)."""
    tumor_stage_error_mm: float = Field(default=1.1, ge=0)
    """Systematic budget replacing ``tumor_shift_mm`` once the tumor stage followed the shift:
    what the stage leaves at the tumor beyond the global estimate's own error,
    √(error now² − bony error²). 1.1 mm = its 95th percentile (1.01 mm; median 0.33, max
    2.31) on the 61 accepted tuning cases (seeds 1401-1464) of the session-23 default (the
    stage fitted across the tumor's long axis only, ``tumor_transverse_only``, from a grid
    start, ``tumor_grid_step_mm``), rounded up. It was 1.8 mm in session 22 (the 3-D fit from
    zero: p95 1.77 mm) and 1.2 mm from session 13. On held-out families it is larger
    (seeds 7101-7184: p95 1.58 mm), so the bound covers less there (docs/registration.md)."""
    max_confident_uncertainty_mm: float = Field(default=2.0, gt=0)
    """An accepted estimate whose ``uncertainty_mm`` exceeds this is flagged (``confident``
    false): its error cannot be bounded below this, so a display must show UNCERTAIN."""
    min_similarity_gain: float = Field(default=0.003, ge=0)
    """Smallest accepted gain of the mean similarity (absolute)."""
    min_paired_t: float = Field(default=3.0, ge=0)
    """Smallest paired t statistic (per-frame gain / its standard error)."""
    null_offset_mm: float = Field(default=15.0, ge=0)
    """Chance level = the similarity of the candidate shifted by ± this along each axis
    (0: no test)."""
    min_margin_over_null: float | None = Field(default=None, ge=0)
    """A candidate's similarity must exceed the chance level by this much. None (default): by
    the finest level's similarity (:meth:`margin_over_null`): 0.05 for LC² and the others,
    0.034 for MIND-SSC — the same fraction of each similarity's drop 15 mm from the truth
    (LC² 0.101, MIND-SSC 0.069: tuning cases, notes/mind-ssc.md). Until session 14 MIND-SSC
    had LC²'s 0.05, which on 97 tuning cases (seeds 1101-1197) rejected 2 of the 95
    candidates under 2 mm and none over it (docs/registration.md)."""
    min_correction_to_uncertainty: float = Field(default=2.0, ge=0)
    """A correction must be this many times its resolution (half-sweep spread with
    ``uncertainty_floor_mm``) to count as clearly better."""
    max_correction_mm: float = Field(default=25.0, gt=0)
    max_correction_deg: float = Field(default=25.0, gt=0)
    ambiguity_offsets_mm: list[_PositiveMm] = Field(default=[6.0, 9.0])
    """Ambiguity probe: the candidate shifted by ± each of these along the sweep's mean
    elevation direction (the frame normal: the direction a freehand sweep constrains least,
    along the spine on a transverse sweep, where the cord is a tube) is refined at the finest
    level. A candidate whose similarity does not exceed that of every pose so found farther
    than ``ambiguity_distinct_mm`` by ``ambiguity_min_gain`` is rejected as ambiguous.
    Empty: no probe."""
    ambiguity_axes: list[Literal["elevation", "lateral"]] = Field(
        default=["elevation", "lateral"], min_length=1
    )
    """Along which directions the ambiguity probes (and the climb) shift the candidate:
    ``"elevation"``, the mean frame normal (along the spine on a transverse sweep), and
    ``"lateral"``, the image's mean lateral axis (along the spine on a sagittal sweep, where
    the elevation probe shifts across it). ``"lateral"`` since session 21: the default's one
    accepted failure on fresh held-out seeds 6901–6942 (`sweep-anatomy` 6933, a sagittal
    sweep, 4.7 mm off along the spine) had a pose 5.9 mm away along the image within 0.004;
    on the 64 tuning cases (transverse sweeps only) the lateral probe changed no verdict and no
    error by 0.1 mm (the rule set before the run: notes/session-21.md). Reported on fresh
    held-out seeds in docs/registration.md."""
    ambiguity_min_gain: float = Field(default=0.005)
    """Smallest similarity margin of the candidate over a distinct alternative. No paired t
    here: a shift along the sweep changes only the frames over distinctive anatomy, so
    per-frame gains are few and large and t understates real differences. Tuning (baseline
    seeds 1001-1016 with calibration and speed-of-sound perturbations): correct candidates
    led alternatives 6-9 mm away by ≥ 0.017 (≥ 0.0088 at 3 mm); an accepted 8.1 mm failure
    led by 0.0042 at 6 mm and trailed by 0.002 at 9 mm (it passed the earlier single ±6 mm
    probe at 0.003). Negative values switch the rejection off (the margin is still
    measured)."""
    ambiguity_consistent_gain: float | None = Field(default=None, ge=0)
    """A rival the candidate leads by less than ``ambiguity_min_gain`` does not make a tie if
    the lead is at least this and consistent across frames (paired t at least
    ``ambiguity_consistent_t``). None (default): every lead under ``ambiguity_min_gain`` is a
    tie. Not adopted (session 31, notes/session-31.md): chosen on 48 fresh ``sweep-anatomy``
    cases, 0.002 / t 2.5 rescued two ties (1.25, 0.95 mm) and accepted a third 12.2 mm off
    (lead +0.0042, t 3.6) with a stated 2.55 mm bound; a correct tie there led with t 1.4.
    The consistency of the lead does not tell right ties from wrong ones."""
    ambiguity_consistent_t: float = Field(default=2.5, gt=0)
    """See ``ambiguity_consistent_gain``."""
    sweep_climbs: int = Field(default=2, ge=0)
    """Before the verdict, the ambiguity probes (``ambiguity_offsets_mm`` along the sweep) are
    run from the candidate; where one ends at a distinct pose that scores higher by at least
    ``ambiguity_min_gain``, the search continues from there (refined with the finest level's
    budget), at most this many times.
    The verdict then judges the final candidate with every test. On the tuning cases (session
    13) 3 of the 5 rejected ones had such a pose 0.4-1.1 mm from the truth (their candidates
    6-9 mm off), and the verdict accepted each (1.04, 0.44, 0.34 mm). Chosen with MIND-SSC at
    the 0.5 mm level; the live worker's cold search (LC² at 1 mm) turns it off: there it
    moved a tuning case to a pose 23 mm off that the verdict accepted. 0: off."""
    ambiguity_evaluations: int = Field(default=30, ge=5)
    """Budget of each ambiguity probe's refinement."""
    ambiguity_coarse_evaluations: int = Field(default=0, ge=0)
    """Coarse-to-fine ambiguity probes (session 32, the ≤ 1 s time target): each probe is
    first refined with this budget at the level before the finest (≈ ¼ of the pixels of the
    finest level's 0.5 mm), then at the finest level with ``ambiguity_evaluations``; the
    verdict still scores the poses so found at the finest level. 0 (default): the finest
    level alone, as before. With the default 30 finest-level evaluations the eight probes
    were ~40 % of a sweep's similarity time (notes/speed.md, session 29). Session 32
    (notes/session-32-speed.md): 30 here and 5 at the finest level, with
    ``confirm_coarse_evaluations`` 80 and ``confirm_evaluations`` 10, passed the rule set
    before the run on 24 tuning cases at ~0.7 × the sweep's time (1.84 → 1.40 s), and on 28
    held-out cases rejected two correct candidates as ties (under 2 mm 25 → 23): not the
    default."""
    ambiguity_distinct_mm: float = Field(default=2.0, ge=0)
    """An alternative closer than this (mean over the field of view) belongs to the
    candidate's own optimum (2 mm: the accuracy that matters)."""

    confirm_evaluations: int = Field(default=80, ge=0)
    """Do-no-harm confirmation of a correction larger than ``ambiguity_distinct_mm``: budget of
    an independent search from the current estimate (finest level, no prior, first steps
    ``confirm_step``). Where it ends more than ``ambiguity_distinct_mm`` from the candidate,
    the candidate must lead that optimum's similarity by ``confirm_min_margin``, else it is
    rejected as unconfirmed: the image then offers, near the current estimate, a pose about as
    good, and a large move to the candidate is not supported by the evidence. 0: not run."""
    confirm_coarse_evaluations: int = Field(default=0, ge=0)
    """Coarse-to-fine confirmation (session 32, the time target): the search from the current
    estimate first runs with this budget at the level before the finest (first steps
    ``confirm_step``), then at the finest level with ``confirm_evaluations`` from there (first
    steps 0.6 × the finest spacing, as the levels' searches). 0 (default): the finest level
    alone, as before. Measured with the coarse-to-fine probes in session 32 (see
    ``ambiguity_coarse_evaluations``)."""
    confirm_step: tuple[_PositiveMm, _PositiveMm] = (1.5, 1.5)
    """First step of the confirmation search: mm, degrees."""
    confirm_min_margin: float = 0.0
    """See ``confirm_evaluations``: the candidate must at least beat the optimum found from the
    current estimate. Checked on the tuning families (notes/dnh-selection.md): correct
    candidates whose confirmation search ended elsewhere led it by ≥ +0.0022 (median +0.027);
    wrong candidates from another basin (decoys) that scored above the current estimate
    trailed it by ≥ 0.008; 0 lies in that gap (0.005 would have rejected one correct tuning
    candidate). −1: measured, never rejects (similarities lie in [0, 1])."""

    tumor_stage: StrictBool = True
    """Run the local stage at the tumor (:mod:`usnav.registration.tumor`) after an accepted
    estimate, when a tumor label is given."""
    tumor_roi_mm: float = Field(default=2.0, gt=0)
    """Pixels within this distance of the planned tumor (MRI label under the estimate) count."""
    tumor_metric: Literal["lc2", "lc2_beam", "ncc_gradient", "mind_ssc"] = "lc2"
    """Similarity of the tumor stage (LC², as it was chosen), whatever the global ``metric``."""
    tumor_patch_half: int = Field(default=2, ge=1)
    """LC² patch half-width of the tumor stage, finest-level pixels (2: 5×5 = 2.5 mm at 0.5 mm)."""
    tumor_second_metric: Literal["lc2", "lc2_beam", "ncc_gradient", "mind_ssc"] | None = None
    """A second similarity of the tumor stage (e.g. ``"mind_ssc"``): the translation is fitted
    again with it (on the pixels within ``tumor_second_roi_mm`` of the tumor, patches of
    ``tumor_second_patch_half``) and the stage moves by the mean of the two fits (a refused
    fit counts as no shift). None (default): LC² alone. Measured in session 14 on tuning
    cases only (MIND-SSC, ROI 3 mm, 3×3), and **not adopted**: chosen among ten pairs on 44
    accepted cases (seeds 1101-1149: median error now 0.75 → 0.63 mm, 90th percentile 1.30 →
    1.06 mm), it did not hold its median on 44 fresh accepted tuning cases (seeds 1150-1197:
    0.593 → 0.597 mm, mean 0.664 → 0.666 mm; the rule set before that run asked for neither
    to rise), only its tail (90th percentile 1.07 → 0.98, max 1.88 → 1.62 mm), for +0.25 s per
    sweep (docs/registration.md)."""
    tumor_second_roi_mm: float = Field(default=3.0, gt=0)
    """ROI of the second similarity's fit, mm."""
    tumor_second_patch_half: int = Field(default=1, ge=1)
    """Patch half-width of the second similarity's fit, pixels (1: MIND-SSC's 3×3)."""
    tumor_prior_weight: float = Field(default=0.0, ge=0)
    """Gaussian prior on the local translation: similarity − w·|t|² (per mm²)."""
    tumor_max_shift_mm: float = Field(default=3.0, gt=0)
    """A local translation longer than this is refused (more than a cord shift)."""
    tumor_evaluations: int = Field(default=80, ge=5)
    """Nelder–Mead budget of the local translation."""
    tumor_transverse_only: StrictBool = True
    """Fit the local translation in the plane normal to the tumor's long axis only (the
    principal axis of the label's voxels, MRI mm); the full 3-D fit when the label is not
    elongated (long / second axis < ``tumor_min_elongation``). An intramedullary tumor is long
    along the cord and narrow across it, so the similarity hardly changes as its ROI slides
    along it (on five of the six worst tuning cases its maximum lay 1-2.5 mm along the cord,
    its transverse part right); and the cord shifts after durotomy mostly dorsally and
    sideways. Chosen in session 23 on the tuning seeds 1401-1464 by a rule set before the run
    (notes/session-23.md): accepted estimates over 2 mm at the tumor now 3 → 1 of 61, median
    error now 0.65 → 0.53 mm (a grid start as well, ``tumor_grid_step_mm = 0.5``: 2, 0.52)."""
    tumor_min_elongation: float = Field(default=1.5, ge=1.0)
    """Ratio of the label's longest to second principal extent (standard deviations) from
    which ``tumor_transverse_only`` takes its axis as the cord's."""
    tumor_grid_step_mm: float = Field(default=0.5, ge=0)
    """Before Nelder–Mead, evaluate the stage's similarity on a grid of this step (mm) within
    ``tumor_max_shift_mm`` and start from the grid's best point (0: start at zero, as before
    session 23). Nelder–Mead from zero in the transverse plane was trapped on 3 of 73 accepted
    held-out cases (seeds 7101-7184) 1-2 mm from the grid's best, which lay near the truth.
    Chosen on that set as selection data by a rule set before the run (notes/session-23.md):
    accepted estimates over 2 mm at the tumor now 6 → 3, median now 0.76 → 0.73 mm; reported
    on fresh seeds. On the tuning families it changed 3 of 61 cases (accepted over 2 mm now
    1 → 2). Costs ~110 similarity evaluations (stage median 0.33 → 0.71 s)."""
    tumor_max_frames: int = Field(default=150, ge=1)
    """Frames resampled at the finest level for the local stage (those near the tumor count)."""
    tumor_min_pixels: int = Field(default=20, ge=1)
    """A frame counts if at least this many pixels lie near the tumor."""
    tumor_min_frames: int = Field(default=3, ge=1)
    """The stage runs only if at least this many frames count."""
    tumor_min_sweep_fraction: float | None = Field(default=None, gt=0, le=1)
    """Level check from the tumor label (session 37, notes/session-37-level.md; off by
    default, None): with a tumor label, an accepted estimate whose tumor stage found the
    tumor's surroundings (``tumor_min_pixels`` within ``tumor_roi_mm``) in fewer than this
    fraction of the sweep's frames (at most ``tumor_max_frames``) is rejected as a possible
    wrong vertebral level: a sweep made over the tumor, registered one vertebra off, puts the
    labelled tumor near its end or beyond it. Measured, not adopted: 0.30 was chosen on tuning
    seeds (right level 0.31–0.73 of the frames, wrong level 0–0.28) and, looked at after
    another rule's report on held-out seeds 7539–7550, flagged 6 of 8 wrong-level acceptances
    and none of 14 right ones (one right at 0.300). It assumes the sweep is centred on the
    tumor and covers about a vertebra either side; a partial sweep or a sweep far longer than
    the tumor is not checked by it. Batch registration only (``usnav register``, ``usnav
    evaluate``); the live worker does not apply it."""
    removed_fill_percentile: float = Field(default=99.5, ge=0, le=100)
    """With a removed-tissue label (``usnav register --removed``): the MRI intensity the
    removed tissue is filled with, as this percentile of the MRI's voxels (99.5: the
    brightest tissue, as fluid is on T2; for a T1 MRI, where fluid is dark, a low one).
    :func:`usnav.registration.operated.operated_mri`."""
    removed_label_error_mm: float = Field(default=2.0, ge=0)
    """With a removed-tissue label: how far its walls may lie from the real wound's (95 %,
    mm). The registration aligns the MRI's filled region with the saline the ultrasound sees,
    so it follows the label: on 64 tuning cases a label shifted 2 mm along the spine and
    grown 1.2 mm moved the median estimate from 0.30 to 1.35 mm off (docs/registration.md
    "The operated spine"). This term enters the stated uncertainty (``removed_label``) only
    when a removed-tissue label is given."""

    def margin_over_null(self, metric: str) -> float:
        """``min_margin_over_null``, or the default for ``metric`` when it is None."""
        if self.min_margin_over_null is not None:
            return self.min_margin_over_null
        return MIND_MARGIN_OVER_NULL if metric == "mind_ssc" else MARGIN_OVER_NULL

    def level_metric(self, index: int) -> str:
        """The similarity of level ``index`` (0 = coarsest)."""
        if not self.level_metrics:
            return self.metric
        return self.level("level_metrics", index)

    def level(self, key: str, index: int):
        values = getattr(self, key)
        return values[min(index, len(values) - 1)]

    def frame_mask_arguments(self) -> dict:
        """The keyword arguments of
        :func:`usnav.registration.similarity.prepare_frame_level` that choose the pixels of
        each frame that are compared."""
        return {
            "ignore_zero_pixels": self.ignore_zero_pixels,
            "near_field_fraction": self.near_field_fraction if self.near_field_mask else None,
            "near_field_min_depth_mm": self.near_field_min_depth_mm,
            "near_field_margin_mm": self.near_field_margin_mm,
        }


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

    from usnav.config.loader import (
        format_validation_error,
        toml_syntax_problem,
        validate_file_data,
    )

    opts = RegistrationOptions()
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            problem = toml_syntax_problem(text, exc)
            raise ConfigError(p, f"cannot read registration options: {problem}") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(p, f"cannot read registration options: {exc}") from exc
        in_table = isinstance(doc.get("registration"), dict)
        table = doc["registration"] if in_table else doc
        outside = [key for key in doc if key != "registration"] if in_table else []
        if outside:
            # read beside a [registration] table, a key at the top level (or in another
            # table) was silently ignored: the run went on with the default instead
            raise ConfigError(
                p,
                f"key '{outside[0]}' is outside the [registration] table"
                + (f" (and {len(outside) - 1} more)" if len(outside) > 1 else ""),
                "put every option in the [registration] table (or, without that table, all "
                "at the top level)",
            )
        try:
            opts = validate_file_data(RegistrationOptions, table)
        except ValidationError as exc:
            prefix = "registration." if in_table else ""
            message = format_validation_error(exc, RegistrationOptions, prefix)
            hint = None
            if not in_table and any(isinstance(v, dict) for v in doc.values()):
                # a mistyped table name ([registraton]) reads as an unknown top-level key
                hint = "the options go in a [registration] table (or at the top level)"
            raise ConfigError(p, message, hint) from exc
    if metric:
        opts = opts.model_copy(update={"metric": metric})
    return opts
