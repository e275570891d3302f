"""Never confidently wrong on screen (issue 11), measured through the live pipeline and the
protocol on simulated cases no method was tuned on.

Each case is simulated, served by a playback server in another process over loopback
OpenIGTLink at the recording's pace, looped so the surgeon sweeps the region several times,
and run through ``LivePipeline`` with its registration worker. A raw ZeroMQ subscriber scores
every published margin against where the tumor really is in that frame (the simulator's
intraoperative anatomy resliced at the frame's true pose): per in-view margin, the boundary
error of each tissue-facing point (the ultrasound's point where the message says "seen", the
MRI's elsewhere) and its p95.

Rows:

- **safe display**: in-view margins whose ``display_state`` is LIVE with a boundary error p95
  over 2 mm (target 0). Baseline: the protocol-1 rule on the same messages (registration
  accepted with quality ≥ 0.5 — which the navigation registration was, at 0.5).
- **accuracy**: mean boundary error over all published in-view margins (target ≤ 1.0 mm);
  baseline: the MRI-predicted contour alone on the same messages.
- **coverage**: in-view frames LIVE after the first two sweeps (target ≥ 80 %).
- **late display**: a display started at random moments; time until it shows the state the
  publisher is sending (target ≤ 1 s). Baseline: the first margin message alone.
- **calibration**: the confidence of points shown as seen against the observed rate at which
  the ultrasound's point beats the MRI's, on fresh seeds of the held-out families (expected
  calibration error with a case-bootstrap interval; target: its upper bound ≤ 0.05); baseline:
  the raw confidence. And how often a seen point beats the MRI's (> 50 %), there and on fresh
  seeds of the tuning families (item 4's first rule).
- ``--full`` only: **run-to-run spread** (the same case replayed three times live, and twice
  on a fixed window schedule) and **coverage with a site-stated registration budget**; a
  bumped patient reference has its own module (:mod:`usnav.bench.bench_bump`).

Cases of the live rows: seeds 3101– (never used for tuning: registration tuned on
1001–1040, margins on 101–106, the confidence calibration on 1101–1124 of the tuning
families), each in an appearance family never tuned on (``usnav simulate --list-families``).
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from usnav.bench.registry import BenchContext, Figure, benchmark, smoke_only

#: (seed, appearance family) of the quick run; --full adds more. All held-out families
#: (``usnav.sim.HELD_OUT_FAMILIES``: never tuned on); the tumor's echogenicity is drawn per seed.
QUICK_CASES = ((3101, "frequency-psf"), (3102, "sos-error"))
FULL_CASES = (
    *QUICK_CASES,
    (3103, "miscalibrated"),  # held-out families only (usnav.sim.HELD_OUT_FAMILIES)
    (3104, "reverb-sidelobe"),
    (3105, "sweep-anatomy"),
    (3106, "mixed"),
)
PASSES = 4
SWEPT_TWICE = 2
RATE = 0.5


@dataclass
class CaseRun:
    """What the subscriber saw of one case."""

    seed: int
    frames: int
    #: per in-view margin message: (pass index, display state, p95, mean, mean MRI-only,
    #: protocol-1 LIVE, the registration's uncertainty_mm, the display reason, the message)
    in_view: list[tuple] = field(default_factory=list)
    #: per margin message wrong about whether the tumor is in the plane at all: (display
    #: state, protocol-1 LIVE, what it said): a tumor drawn where the true plane holds none,
    #: or "no tumor in view" where it holds at least the protocol's drawable 1 mm²
    wrong_view: list[tuple[str, bool, str]] = field(default_factory=list)
    joins_s: list[float] = field(default_factory=list)
    first_margin_s: list[float] = field(default_factory=list)
    final_tre_mm: float = float("nan")
    estimates: int = 0
    adopted: int = 0
    #: (case folder, truth masks): to replay the same case again
    case: tuple | None = None


def _simulate(seed: int, family: str, folder: Path, frames: int):
    """Write the case; return (case folder, per-frame truth masks by frame number)."""
    from usnav.margins import _kernels
    from usnav.sim.case import build_case, write_case
    from usnav.sim.options import make_options
    from usnav.sim.tissues import Tissue

    options = make_options(frames=frames, workers=2, save_anatomy=False, family=family)
    case = build_case(seed, options)
    folder.mkdir(parents=True, exist_ok=True)
    files = write_case(case, tempfile.mkdtemp(prefix=f"case{seed}-", dir=folder))
    intra, sweep = case.intraop, case.sweep
    codes = np.zeros(intra.labels.shape, np.uint8)
    codes[(intra.labels == Tissue.TUMOR) | (intra.labels == Tissue.CYST)] = 1
    mri_to_voxel = np.linalg.inv(case.anatomy.spine_to_mri @ intra.index_to_spine())
    rows, cols = case.geometry.rows, case.geometry.cols
    truth: dict[int, np.ndarray] = {}
    for i, number in enumerate(sweep.frame_numbers):
        fractions = np.zeros((1, rows, cols), np.float32)
        _kernels.reslice_label_fractions(
            codes, mri_to_voxel @ sweep.true_image_to_mri[i], 1, fractions
        )
        truth[int(number)] = fractions[0] >= 0.5
    return files.folder, truth


def _score(message, truth: np.ndarray) -> tuple[float, float, float]:
    """(p95, mean) boundary error of what the message shows, and the MRI-only mean, mm."""
    from usnav.margins.evaluate import sample_at, signed_distance_image

    sd = signed_distance_image(truth, message.spacing_mm)
    shown, mri = [], []
    for contour in message.contours:
        keep = contour.faces_tissue
        seen = contour.supported()
        e_pred = np.abs(sample_at(sd, contour.predicted_px))
        e_obs = np.abs(sample_at(sd, contour.observed_px))
        shown.append(np.where(seen, e_obs, e_pred)[keep])
        mri.append(e_pred[keep])
    s = np.concatenate(shown) if shown else np.zeros(0)
    m = np.concatenate(mri) if mri else np.zeros(0)
    s, m = s[np.isfinite(s)], m[np.isfinite(m)]
    if s.size == 0:
        return float("nan"), float("nan"), float("nan")
    return float(np.percentile(s, 95)), float(s.mean()), float(m.mean())


def _wrong_about_view(message, truth: np.ndarray) -> str:
    """What a margin message says wrongly about the tumor being in its plane at all ("" when
    it is right): a contour drawn where the true plane holds no tumor pixel, or "no tumor in
    view" where the true section reaches the protocol's drawable 1 mm². Neither has a
    boundary error to score, so the p95 figure cannot see them (session 37)."""
    if message.in_view and message.contours and not truth.any():
        return "tumor drawn, none in the plane"
    if not message.in_view and truth.any():
        from usnav.margins.options import MarginOptions

        spacing = message.spacing_mm
        drawable_mm2 = MarginOptions().min_area_mm2  # what the publisher draws at the least
        if float(truth.sum()) * float(spacing[0]) * float(spacing[1]) >= drawable_mm2:
            return "no tumor in view, a section in the plane"
    return ""


def _late_join(endpoint: str, reference: Callable[[], str]) -> tuple[float, float]:
    """Start a display now: seconds until its verdict equals ``reference()`` (the verdict of a
    display connected all along) with the registration and status known, and until its first
    margin message."""
    from usnav.client import Subscriber
    from usnav.viewer.state import ViewerOptions, ViewModel, assess

    t0 = time.monotonic()
    model = ViewModel(endpoint)
    first_margin = float("nan")
    with Subscriber(endpoint) as sub:
        while time.monotonic() - t0 < 5.0:
            latest = sub.receive_latest(timeout_s=0.01)
            if "margin" in latest and not np.isfinite(first_margin):
                first_margin = time.monotonic() - t0
            state = model.update(
                latest, connected=sub.connected, last_message_s=sub.last_message_time
            )
            informed = state.registration is not None and state.status_message is not None
            if informed and assess(state, ViewerOptions()).word == reference():
                return time.monotonic() - t0, first_margin
    return float("inf"), first_margin


def _run_case(
    ctx: BenchContext, seed: int, look: str, frames: int, options=None, *, files=None
) -> CaseRun:
    from usnav.bench.bench_pipeline import case_pipeline
    from usnav.client import MarginMessage, Subscriber
    from usnav.devices import serve_in_subprocess
    from usnav.pipeline.config import PipelineOptions
    from usnav.sim import load_truth
    from usnav.viewer.state import ViewerOptions, ViewModel, assess

    if files is None:
        ctx.progress(f"safety: simulating case {seed} ({look})")
        folder, truth = _simulate(seed, look, ctx.work_dir / "safety", frames)
    else:  # the same case files again (a repeat run)
        folder, truth = files
    opts = options or PipelineOptions(publish_address="tcp://127.0.0.1:*", publish_frames=False)
    # half the recording's pace: a sweep over the region takes ~8 s, as a surgeon's would
    server = serve_in_subprocess(folder / "sweep.igs.mha", port=0, rate=RATE, loop=True)
    try:
        pipeline = case_pipeline(folder, server.port, opts)
    except BaseException:
        server.stop()  # never leave the playback process behind
        raise
    run = CaseRun(seed, frames)
    run.case = (folder, truth)
    stop = threading.Event()
    seen: list[MarginMessage] = []
    lock = threading.Lock()
    watcher = ViewModel("bench")  # a display connected all along

    def collect(sub: Subscriber) -> None:
        while not stop.is_set():
            message = sub.receive(0.05)
            if message is None:
                continue
            if isinstance(message, MarginMessage):
                seen.append(message)
            with lock:
                watcher.update(
                    {message.header.topic: message},
                    connected=sub.connected,
                    last_message_s=sub.last_message_time,
                )

    def reference() -> str:
        with lock:
            watcher.state.now = time.time()
            return assess(watcher.state, ViewerOptions()).word

    try:
        pipeline.prepare()
        sub = Subscriber(pipeline.endpoint, hwm=100_000)
        collector = threading.Thread(target=collect, args=(sub,), daemon=True)
        collector.start()
        pipeline.start()
        ctx.progress(f"safety: case {seed}, {PASSES} sweeps through the live pipeline")
        rng = np.random.default_rng(seed)
        joins = sorted(rng.uniform(0.2, 0.9, 3) * PASSES * frames)
        deadline = time.monotonic() + 60.0 + 4 * PASSES * frames / (30.0 * RATE)
        while pipeline.counters.received < PASSES * frames and time.monotonic() < deadline:
            if joins and pipeline.counters.received >= joins[0]:
                joins.pop(0)
                joined, first = _late_join(pipeline.endpoint, reference)
                run.joins_s.append(joined)
                run.first_margin_s.append(first)
            time.sleep(0.05)
        time.sleep(0.3)
        final = pipeline.current_estimate()
        if pipeline.worker is not None:
            run.estimates = pipeline.worker.stats.updates
            run.adopted = pipeline.worker.stats.accepted
    finally:
        stop.set()
        pipeline.stop()
        server.stop()
    collector.join(2.0)
    sub.close()
    run.final_tre_mm = float(load_truth(folder).mtre(final.reference_to_mri))
    for message in seen:
        sweep, number = pass_and_frame(message.header.frame_number, truth)
        mask = truth.get(number)
        if mask is None:
            continue
        h = message.header
        old_rule = (not h.stale) and (
            not h.registration_checked or (h.quality is not None and h.quality >= 0.5)
        )
        wrong = _wrong_about_view(message, mask)
        if wrong:
            run.wrong_view.append((h.display_state, old_rule, wrong))
        if not message.in_view or not mask.any():
            continue
        p95, mean, mri_mean = _score(message, mask)
        if not np.isfinite(p95):
            continue
        sweep_index = min(PASSES - 1, sweep)
        run.in_view.append(
            (
                sweep_index,
                h.display_state,
                p95,
                mean,
                mri_mean,
                old_rule,
                h.uncertainty_mm,
                h.display_reason.split(":")[0][:60],
                message,
            )
        )
    return run


def pass_and_frame(frame_number: int, recorded: Collection[int]) -> tuple[int, int]:
    """(pass, the recording's frame number) of a frame a looping replay sent.

    The replay numbers its frames on from pass to pass, as a device would: each pass adds
    the recording's span of numbers (``recorded``: the recording's frame numbers). Until
    session 36 the bench looked its truth up by the number as sent, so no frame after the
    first pass was scored, and the coverage after two sweeps saw none.
    """
    first = min(recorded)
    span = max(recorded) - first + 1
    sweep, offset = divmod(int(frame_number) - first, span)
    return max(0, sweep), first + offset


def _mean_or_nan(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def _bound_covers(rows: list[tuple]) -> tuple[float, int]:
    """(% of in-view margins drawn with an image-based registration whose boundary error p95
    is within the bound a display is told, how many such margins): the registration's
    ``uncertainty_mm`` ⊕ the margin's own error (:class:`DisplayRules` defaults, which the
    bench's pipelines use)."""
    from usnav.protocol.display import DisplayRules

    margin = DisplayRules().margin_error_mm
    bounded = [
        (r[2], float(np.hypot(r[6], margin)))
        for r in rows
        if r[8].header.registration_checked and r[6] is not None and np.isfinite(r[6])
    ]
    if not bounded:
        return float("nan"), 0
    return 100.0 * sum(p95 <= bound for p95, bound in bounded) / len(bounded), len(bounded)


def _restated(message, rules) -> str:
    """The display state the publisher would have sent with ``rules`` (everything it needs
    travels in the in-view margin message: registration checked, uncertainty, age, staleness,
    the seen points' disagreement; a contradicted registration, a moved patient reference, an
    image outside the MRI and a pixel size not the calibration's, by the display reason)."""
    from usnav.pipeline.spacing import SPACING_MISMATCH_PREFIX
    from usnav.protocol.display import (
        CONTRADICTED_PREFIX,
        OUTSIDE_MRI_DOUBT,
        OUTSIDE_MRI_PREFIX,
        REFERENCE_MOVED_PREFIX,
        publisher_state,
        seen_disagreement_doubt,
    )

    h = message.header
    contradicted = h.display_reason.partition(CONTRADICTED_PREFIX)[2]
    moved = h.display_reason.partition(REFERENCE_MOVED_PREFIX)[2].partition("; ")[0]
    seen = seen_disagreement_doubt(
        in_view=message.in_view,
        seen_fraction=message.supported_fraction,
        median_disagreement_mm=message.median_abs_disagreement_mm,
        rules=rules,
    )
    return publisher_state(
        contradicted=contradicted,
        checked=h.registration_checked,
        uncertainty_mm=h.uncertainty_mm,
        checked_age_s=h.age_s,
        rules=rules,
        stale_reason=h.stale_reason if h.stale else "",
        doubt="; ".join(
            d
            for d in (
                OUTSIDE_MRI_DOUBT if OUTSIDE_MRI_PREFIX in h.display_reason else "",
                SPACING_MISMATCH_PREFIX if SPACING_MISMATCH_PREFIX in h.display_reason else "",
                REFERENCE_MOVED_PREFIX + moved if moved else "",
                seen,
            )
            if d
        ),
    ).state


def _runs(ctx: BenchContext) -> list[CaseRun]:
    cached = getattr(ctx, "_display_runs", None)
    if cached is None:
        cases = FULL_CASES if ctx.full else QUICK_CASES
        frames = 120
        cached = [_run_case(ctx, seed, look, frames) for seed, look in cases]
        ctx._display_runs = cached  # type: ignore[attr-defined]
        if ctx.full:  # the same case again: how much do live runs differ?
            seed, look = cases[0]
            ctx._display_repeat = _run_case(ctx, seed, look, frames)  # type: ignore[attr-defined]
    return cached


@benchmark("never confidently wrong: live pipeline + protocol on unseen cases", "safety")
def bench_display_state(ctx: BenchContext) -> list[Figure]:
    runs = _runs(ctx)
    rows = [r for run in runs for r in run.in_view]
    note = (
        f"{len(runs)} unseen cases (seeds {', '.join(str(r.seed) for r in runs)}), "
        f"{PASSES} sweeps each, {len(rows)} in-view margins scored"
    )
    if not rows:
        raise RuntimeError("no in-view margin was received")
    live_bad = sum(1 for _, s, p95, *_ in rows if s == "LIVE" and p95 > 2.0)
    old_bad = sum(1 for r in rows if r[5] and r[2] > 2.0)
    mean = float(np.mean([r[3] for r in rows]))
    mri_mean = float(np.mean([r[4] for r in rows]))
    late = [r for r in rows if r[0] >= SWEPT_TWICE]
    coverage = 100.0 * sum(1 for r in late if r[1] == "LIVE") / max(1, len(late))
    joins = [j for run in runs for j in run.joins_s]
    firsts = [f for run in runs for f in run.first_margin_s if np.isfinite(f)]
    tre = [run.final_tre_mm for run in runs]
    repeat = getattr(ctx, "_display_repeat", None)
    states = {s: sum(1 for r in rows if r[1] == s) for s in ("LIVE", "UNCERTAIN", "STALE")}
    reasons: dict[str, int] = {}
    for r in rows:
        if r[1] == "UNCERTAIN":
            reasons[r[7]] = reasons.get(r[7], 0) + 1
    from usnav.registration.worker import (
        ACROSS_SWEEP_NOTE,
        TIED_CANDIDATE_NOTE,
        TIED_TOO_FAR_NOTE,
    )

    bad_live = [r[6] for r in rows if r[1] == "LIVE" and r[2] > 2.0]
    unchecked = [r[3] for r in rows if not r[8].header.registration_checked]

    def drawn_with(note: str) -> list[float]:
        """Errors of the unchecked margins whose display reason carries the worker's note."""
        return [
            r[3]
            for r in rows
            if not r[8].header.registration_checked
            and note.removeprefix("; ") in r[8].header.display_reason
        ]

    across, tied = drawn_with(ACROSS_SWEEP_NOTE), drawn_with(TIED_CANDIDATE_NOTE)
    # margins whose try's tied candidate was too far from the navigation to draw (session 29)
    refused = drawn_with(TIED_TOO_FAR_NOTE.split("{cap:g}")[1])
    checked = [r[3] for r in rows if r[8].header.registration_checked]
    honest, bounded = _bound_covers(rows)
    wrong_view = [w for run in runs for w in run.wrong_view]
    wrong_live = [what for state, _, what in wrong_view if state == "LIVE"]
    figures = [
        Figure(
            "in-view LIVE margins with boundary error p95 > 2 mm",
            live_bad,
            "margins",
            "0",
            live_bad == 0,
            "protocol-1 rule (accepted, quality ≥ 0.5)",
            old_bad,
            higher_is_better=False,
            note=f"{note}; states {states}; stated uncertainty of the bad LIVE ones "
            f"{', '.join(f'{u:.2f}' for u in bad_live if u is not None) or '-'} mm",
        ),
        Figure(
            "LIVE margins wrong about the tumor being in the plane at all",
            len(wrong_live),
            "margins",
            "0",
            not wrong_live,
            "protocol-1 rule (accepted, quality ≥ 0.5)",
            sum(1 for _, old, _ in wrong_view if old),
            higher_is_better=False,
            note=f"{len(wrong_view)} margin messages wrong about it in all (a tumor drawn where "
            f"the true plane has none, or none said where ≥ 1 mm² is), "
            f"{sum(1 for w in wrong_live if w.startswith('tumor drawn'))} of the LIVE ones "
            "drawing a tumor that is not there; no boundary error exists for them, so the p95 "
            "figure above cannot count them (session 37)",
        ),
        Figure(
            "mean boundary error, all published in-view margins",
            mean,
            "mm",
            "≤ 1.0 mm",
            mean <= 1.0,
            "MRI-predicted contour alone",
            mri_mean,
            higher_is_better=False,
            note=f"{note}; final registration mTRE {', '.join(f'{t:.2f}' for t in tre)} mm; "
            f"drawn with the unchecked navigation registration {len(unchecked)} at "
            f"{_mean_or_nan(unchecked):.2f} mm (of them corrected across the sweep by a try "
            f"rejected as ambiguous along it: {len(across)} at {_mean_or_nan(across):.2f} mm; "
            f"with a tied candidate: {len(tied)} at {_mean_or_nan(tied):.2f} mm; with the "
            f"navigation because the tied candidate lay beyond the cap: {len(refused)} at "
            f"{_mean_or_nan(refused):.2f} mm), "
            f"with an image-based one {len(checked)} at {_mean_or_nan(checked):.2f} mm",
        ),
        Figure(
            "stated bound ≥ boundary error p95, in-view margins with an image-based registration",
            honest,
            "%",
            "≥ 90 %",
            bounded > 0 and honest >= 90.0,
            higher_is_better=True,
            note=f"{bounded} margins; the bound a display is told: the registration's "
            f"uncertainty_mm ⊕ the margin's own error (display rules' margin_error_mm); "
            f"#16's coverage rule (≥ 90 %) applied to what a display is told",
        ),
        Figure(
            f"in-view frames LIVE after {SWEPT_TWICE} sweeps",
            coverage,
            "%",
            "≥ 80 %",
            coverage >= 80.0,
            note=f"{len(late)} in-view margins in sweeps {SWEPT_TWICE + 1}-{PASSES}; "
            f"estimates {sum(r.estimates for r in runs)}, adopted {sum(r.adopted for r in runs)}; "
            f"UNCERTAIN because: {reasons}",
        ),
        Figure(
            "late display: joined → shows the publisher's state (worst)",
            max(joins) if joins else float("inf"),
            "s",
            "≤ 1 s",
            bool(joins) and max(joins) <= 1.0,
            "first margin message",
            max(firsts) if firsts else None,
            higher_is_better=False,
            note=f"{len(joins)} displays started at random moments during the runs",
        ),
    ]
    if repeat is not None:
        spread = abs(repeat.final_tre_mm - runs[0].final_tre_mm)
        figures.append(
            Figure(
                "run-to-run spread of the final registration error (same case twice)",
                spread,
                "mm",
                "stated",
                None,
                higher_is_better=False,
                note=f"case {repeat.seed}: {runs[0].final_tre_mm:.2f} and "
                f"{repeat.final_tre_mm:.2f} mm (windows depend on timing in a live run)",
            )
        )
    return figures


#: Fresh seeds for the calibration rows (never used to fit: the table was fitted on tuning
#: seeds 1101-1124): held-out families from 6201 (the first 21, or all 84, of the notes'
#: check, notes/fit_confidence_calibration.py; 6001-6124 are the registration bench's), and
#: tuning families from 1901 for item 4's first rule.
CALIBRATION_HELD_OUT_SEED = 6201
CALIBRATION_TUNING_SEED = 1901


@benchmark("per-point confidence calibrated, on held-out seeds and families", "safety")
def bench_confidence_calibration(ctx: BenchContext) -> list[Figure]:
    from usnav.margins.calibration import (
        HELD_OUT_FAMILIES,
        TARGET_ECE,
        TUNING_FAMILIES,
        cases_for,
        check_calibration,
    )
    from usnav.margins.evaluate import point_outcomes

    # the calibration error of 7 cases is mostly case-to-case spread (0.142 on 6201-6207, 0.035
    # on 6201-6284): 21 held-out cases in the quick run, 84 in the full one
    held_per_family = 12 if ctx.full else 3
    tuning_per_family = 3 if ctx.full else 1
    held_cases = cases_for(
        list(range(CALIBRATION_HELD_OUT_SEED, CALIBRATION_HELD_OUT_SEED + 7 * held_per_family)),
        HELD_OUT_FAMILIES,
    )
    tuning_cases = cases_for(
        list(range(CALIBRATION_TUNING_SEED, CALIBRATION_TUNING_SEED + 4 * tuning_per_family)),
        TUNING_FAMILIES,
    )
    ctx.progress(f"safety: margin points on {len(held_cases)} held-out cases")
    held = check_calibration(
        point_outcomes([s for s, _ in held_cases], frames=24, families=[f for _, f in held_cases]),
        None,
    )
    ctx.progress(f"safety: margin points on {len(tuning_cases)} fresh tuning-family cases")
    tuning = check_calibration(
        point_outcomes(
            [s for s, _ in tuning_cases], frames=24, families=[f for _, f in tuning_cases]
        ),
        None,
    )
    bins = "; ".join(f"{lo:.1f}: {n} stated {c:.2f} seen {r:.2f}" for lo, n, c, r in held.per_bin)
    seeds = f"seeds {held_cases[0][0]}-{held_cases[-1][0]}"
    figures = [
        Figure(
            "confidence of points shown as seen: calibration error (ECE), held-out families",
            held.ece,
            "",
            f"≤ {TARGET_ECE} (95 % upper bound)",
            held.met,
            "raw refinement confidence",
            held.ece_raw,
            higher_is_better=False,
            note=f"case-bootstrap 95 % interval [{held.ece_low:.3f}, {held.ece_high:.3f}]; "
            f"{held.seen} of {held.points} points seen; stated {held.mean_confidence:.3f} "
            f"against observed {held.beat_rate:.3f}; bins {bins}; {len(held_cases)} cases, "
            f"{seeds}, {', '.join(HELD_OUT_FAMILIES)} (fitted on tuning families only)",
        ),
        Figure(
            "points shown as seen whose ultrasound point beats the MRI's, held-out families",
            100.0 * held.beat_rate,
            "%",
            "> 50 %",
            held.beat_low > 0.5,
            note=f"95 % interval [{100 * held.beat_low:.1f}, {100 * held.beat_high:.1f}] %; "
            f"{100.0 * held.seen / max(1, held.points):.1f} % of points shown as seen; "
            f"{100 * held.within_1mm:.1f} % of them within 1 mm of the true boundary "
            f"(fresh tuning seeds: {100 * tuning.within_1mm:.1f} %)",
        ),
        Figure(
            "item 4's first rule: seen points beat the MRI contour, fresh tuning-family seeds",
            100.0 * tuning.beat_rate,
            "%",
            "> 50 %",
            tuning.beat_low > 0.5,
            note=f"95 % interval [{100 * tuning.beat_low:.1f}, {100 * tuning.beat_high:.1f}] %; "
            f"ECE there {tuning.ece:.3f}; {len(tuning_cases)} cases, seeds "
            f"{tuning_cases[0][0]}-{tuning_cases[-1][0]}, {', '.join(TUNING_FAMILIES)}",
        ),
    ]
    if ctx.full:
        return figures
    # 21 held-out cases bound the ECE within [0.02, 0.23] at best: no quick run can meet a
    # 95 % upper bound of 0.05 (84 cases in --full; 300 gave 0.023 [0.005, 0.048], session 36)
    return smoke_only(
        figures,
        f"quick: {len(held_cases)} held-out and {len(tuning_cases)} tuning cases, too few to "
        "judge (usnav bench --full judges on 84 and 12)",
    )


SPREAD_RUNS = 3


def _fixed_schedule_replay(folder: Path, passes: int) -> tuple[np.ndarray, int]:
    """The final ``ReferenceToMri`` and the estimates adopted, on the fixed window schedule
    (:func:`usnav.pipeline.schedule.replay_fixed_schedule`)."""
    from usnav.config.calibration import load_calibration
    from usnav.io.volume import load_volume
    from usnav.pipeline.schedule import replay_fixed_schedule
    from usnav.registration.files import read_initial

    worker = replay_fixed_schedule(
        folder / "sweep.igs.mha",
        load_volume(folder / "mri.nii.gz"),
        load_calibration(folder / "calibration.toml").image_to_probe,
        read_initial(folder / "init_ReferenceToMri.txt"),
        passes=passes,
    )
    return worker.latest_accepted().reference_to_mri, worker.stats.accepted


@benchmark(
    "run-to-run spread: the same unseen case replayed through the live pipeline",
    "safety",
    quick=False,
)
def bench_run_spread(ctx: BenchContext) -> list[Figure]:
    from usnav.sim import load_truth

    seed, look = QUICK_CASES[0]
    runs = [_run_case(ctx, seed, look, 120)]
    for _ in range(SPREAD_RUNS - 1):
        runs.append(_run_case(ctx, seed, look, 120, files=runs[0].case))
    tre = [r.final_tre_mm for r in runs]
    folder = runs[0].case[0]
    ctx.progress("safety: the same case on a fixed window schedule, twice")
    fixed = [_fixed_schedule_replay(folder, PASSES) for _ in range(2)]
    truth = load_truth(folder)
    fixed_tre = [float(truth.mtre(m)) for m, _ in fixed]
    fixed_diff = float(np.abs(fixed[0][0] - fixed[1][0]).max())
    return [
        Figure(
            f"run-to-run spread of the final registration error ({SPREAD_RUNS} live runs)",
            max(tre) - min(tre),
            "mm",
            "stated",
            None,
            "fixed window schedule, run twice",
            abs(fixed_tre[0] - fixed_tre[1]),
            higher_is_better=False,
            note=f"case {seed} ({look}), {PASSES} sweeps at {RATE}x: live final mTRE "
            f"{', '.join(f'{t:.2f}' for t in tre)} mm, estimates adopted "
            f"{', '.join(str(r.adopted) for r in runs)} of "
            f"{', '.join(str(r.estimates) for r in runs)}; fixed schedule {fixed_tre[0]:.2f} and "
            f"{fixed_tre[1]:.2f} mm (adopted {fixed[0][1]}, {fixed[1][1]}; largest matrix "
            f"difference {fixed_diff:.1e})",
        )
    ]


#: Site-stated systematic budgets (``[registration_budget]``) the coverage mechanism is shown
#: with — examples of what a site that measured its own bias and calibration could state, not
#: defaults and not evidence that any site may.
SITE_BUDGETS = (
    {"similarity_bias_mm": 0.5},
    {"similarity_bias_mm": 0.5, "calibration_error_mm": 0.5, "calibration_error_deg": 0.5},
)


def _state_figures(rows: list[tuple], rules=None) -> tuple[float, int, int]:
    """(coverage after two sweeps %, LIVE margins with p95 > 2 mm, LIVE margins): of the
    messages' own ``display_state``, or restated with other ``rules``."""
    states = [r[1] if rules is None else _restated(r[8], rules) for r in rows]
    late = [s for r, s in zip(rows, states, strict=True) if r[0] >= SWEPT_TWICE]
    coverage = 100.0 * sum(1 for s in late if s == "LIVE") / max(1, len(late))
    bad = sum(1 for r, s in zip(rows, states, strict=True) if s == "LIVE" and r[2] > 2.0)
    return coverage, bad, sum(1 for s in states if s == "LIVE")


@benchmark(
    "coverage with a site-stated registration budget (mechanism, not the target)",
    "safety",
    quick=False,
)
def bench_site_budget(ctx: BenchContext) -> list[Figure]:
    from usnav.pipeline.config import PipelineOptions, RegistrationBudget
    from usnav.protocol.display import MEASURED_MARGIN_ERROR_MM, DisplayRules

    figures = []
    shipped = DisplayRules(margin_error_mm=0.0)
    combined = DisplayRules(margin_error_mm=MEASURED_MARGIN_ERROR_MM)
    for budget in SITE_BUDGETS:
        # the registration alone held to 2 mm (margin_error_mm = 0, stated): what the budget
        # lets through; the combined rule is restated from the same messages. A site may not
        # state that (session 44: PipelineOptions refuses margin_error_mm below the measured
        # 1.90 mm with a budget), so the budget is set past the check: this measures it
        options = PipelineOptions(
            publish_address="tcp://127.0.0.1:*",
            publish_frames=False,
            display=DisplayRules(margin_error_mm=0.0),
        ).model_copy(update={"registration_budget": RegistrationBudget(**budget)})
        runs = [_run_case(ctx, seed, look, 120, options) for seed, look in QUICK_CASES]
        rows = [r for run in runs for r in run.in_view]
        coverage, bad, live = _state_figures(rows)
        c_coverage, c_bad, c_live = _state_figures(rows, combined)
        stated = [r[6] for r in rows if r[6] is not None]
        label = ", ".join(f"{k} = {v:g}" for k, v in budget.items())
        figures.append(
            Figure(
                f"in-view frames LIVE after {SWEPT_TWICE} sweeps, site budget {label}",
                coverage,
                "%",
                "mechanism",
                None,
                f"combined rule (margin's own {MEASURED_MARGIN_ERROR_MM} mm)",
                c_coverage,
                note=f"{len(rows)} in-view margins: {live} LIVE, {bad} of them with p95 > 2 mm "
                f"(registration ≤ {shipped.registration_limit_mm:.2f} mm); combined rule "
                f"(registration ≤ {combined.registration_limit_mm:.2f} mm): {c_live} LIVE, "
                f"{c_bad} with p95 > 2 mm; stated registration bounds "
                f"{min(stated, default=float('nan')):.2f}-{max(stated, default=float('nan')):.2f}"
                f" mm; final mTRE {', '.join(f'{r.final_tre_mm:.2f}' for r in runs)} mm",
            )
        )
    return figures
