"""One case of a batch evaluation: registration, offline margins and scoring, on plain files.

:func:`evaluate_case` is what a Dask task runs on a worker (and what a test can run without
Dask). It reads every input from the paths of the manifest row; it never raises: a case that
cannot be evaluated comes back as a row with ``status = "failed"`` and the reason.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from usnav.errors import InputError, UsnavError
from usnav.io.manifest import PATH_COLUMNS, REQUIRED_PATHS, ManifestCase

#: The result columns, in order (tag columns of the manifest follow them).
RESULT_COLUMNS = (
    "case",
    "status",
    "reason",
    "error_mm",
    "init_error_mm",
    "candidate_error_mm",
    "error_now_mm",
    "init_error_now_mm",
    "candidate_error_now_mm",
    "across_sweep_error_now_mm",
    "accepted",
    "tied",
    "uncertainty_mm",
    "candidate_uncertainty_mm",
    "similarity",
    "correction_mm",
    "registration_seconds",
    "verdict",
    "margin_frames",
    "margin_in_view",
    "margin_scored_frames",
    "margin_drawn_without_tumor",
    "margin_missed_tumor",
    "margin_error_mm",
    "margin_mri_error_mm",
    "margin_supported_fraction",
    "margin_note",
    "seconds",
    "cpu_seconds",
    "worker",
)


def case_to_task(case: ManifestCase) -> dict:
    """A manifest case as plain data (strings) for a task: paths, never file contents."""
    doc = {"case": case.case, "tags": dict(case.tags)}
    for column in PATH_COLUMNS:
        value = getattr(case, column)
        doc[column] = None if value is None else str(value)
    return doc


def case_from_task(doc: dict) -> ManifestCase:
    """Inverse of :func:`case_to_task`."""
    paths = {c: None if doc.get(c) is None else Path(doc[c]) for c in PATH_COLUMNS}
    return ManifestCase(case=doc["case"], tags=dict(doc.get("tags", {})), **paths)  # type: ignore[arg-type]


def failed_row(case: ManifestCase, reason: str) -> dict:
    """The row of a case whose task did not finish (the runner's, for timeouts and lost
    workers)."""
    row: dict = {c: "" for c in RESULT_COLUMNS}
    row.update(case.tags)
    row.update(case=case.case, status="failed", reason=_one_line(reason))
    return row


def evaluate_case(
    case: ManifestCase,
    out_dir: str | Path,
    *,
    registration_options=None,
    margins: bool = True,
) -> dict:
    """Register one case, compute its margins, score both against its truth.

    Parameters
    ----------
    case
        The manifest row.
    out_dir
        The run's results folder: this case's files go to ``out_dir/cases/<case>/``
        (``result.json`` as ``usnav register`` writes it, ``margins.jsonl.gz``).
    registration_options
        :class:`~usnav.registration.rigid.RegistrationOptions` (defaults if None).
    margins
        Compute the offline margins (when the case has a label map).

    Returns
    -------
    dict
        The result row (:data:`RESULT_COLUMNS` + the case's tags); numbers as floats, empty
        strings where a figure does not apply. ``worker`` is left empty (the runner fills it).
    """
    t0, cpu0 = time.perf_counter(), time.thread_time()
    row: dict = {c: "" for c in RESULT_COLUMNS}
    row.update(case.tags)
    row["case"] = case.case
    try:
        _evaluate(case, Path(out_dir) / "cases" / case.case, row, registration_options, margins)
        row["status"] = "ok"
    except UsnavError as exc:
        row.update(status="failed", reason=_one_line(str(exc)))
    except MemoryError:
        row.update(status="failed", reason="out of memory")
    except Exception as exc:  # an internal error fails this case only, named
        row.update(
            status="failed", reason=_one_line(f"internal error: {type(exc).__name__}: {exc}")
        )
    row["seconds"] = round(time.perf_counter() - t0, 3)
    row["cpu_seconds"] = round(time.thread_time() - cpu0, 3)  # < seconds: waited for a core
    return row


def _evaluate(case: ManifestCase, folder: Path, row: dict, options, margins: bool) -> None:
    from usnav.evaluate.margins_file import (
        margins_of_recording,
        read_reference_to_mri,
        score_against_simulator,
        write_margins_file,
    )
    from usnav.evaluate.truth import load_scorer
    from usnav.registration.files import register_recording

    for column in PATH_COLUMNS:
        path = getattr(case, column)
        if path is None:
            continue
        if not path.exists():
            what = "required" if column in REQUIRED_PATHS else "given"
            raise InputError(path, f"no such file ({what} '{column}' of case {case.case})")
    folder.mkdir(parents=True, exist_ok=True)
    initial, _ = read_reference_to_mri(case.init)
    init_path = case.init
    if Path(case.init).suffix.lower() == ".json":  # usnav register reads 16 numbers
        init_path = folder / "init_ReferenceToMri.txt"
        np.savetxt(init_path, initial, fmt="%.9f")
    scorer = load_scorer(case.truth, case.label) if case.truth is not None else None
    result = register_recording(
        case.recording,
        case.mri,
        case.calibration,
        init_path,
        folder / "result.json",
        options,
        label=case.label,
        removed=case.removed,
    )
    row.update(
        accepted=bool(result.accepted),
        # rejected for a tie alone: a live display draws the margins with the candidate
        tied=result.tied_candidate_reference_to_mri is not None,
        # as in RESULT.json: a bound on the published estimate only (a rejected candidate's
        # bound says nothing about the initial estimate kept in its place)
        uncertainty_mm=_round(result.uncertainty_mm) if result.accepted else "",
        candidate_uncertainty_mm=_round(result.uncertainty_mm),
        similarity=_round(result.similarity, 5),
        correction_mm=_round(result.correction_mm),
        registration_seconds=_round(result.seconds, 3),
        verdict=_one_line(result.reason),
    )
    if scorer is not None:
        # against the bony truth: the global estimate (before the tumor stage moved it);
        # at the tumor now: the published one
        bony = result.bony_estimate
        row.update(
            error_mm=_round(scorer.error_mm(bony)),
            init_error_mm=_round(scorer.error_mm(initial)),
            candidate_error_mm=_round(scorer.error_mm(result.candidate)),
            error_now_mm=_round(scorer.error_now_mm(result.reference_to_mri)),
            init_error_now_mm=_round(scorer.error_now_mm(initial)),
            candidate_error_now_mm=_round(scorer.error_now_mm(result.candidate)),
        )
        if result.across_sweep_reference_to_mri is not None:
            across = result.across_sweep_reference_to_mri
            row["across_sweep_error_now_mm"] = _round(scorer.error_now_mm(across))
    if not margins or case.label is None:
        row["margin_note"] = "no label map" if margins else "margins off"
        return
    stats: dict = {}
    records = list(
        margins_of_recording(
            case.recording,
            case.label,
            case.calibration,
            result.reference_to_mri,
            result=result.to_json(),
            stats=stats,
        )
    )
    header = {
        "case": case.case,
        "recording": str(case.recording),
        "label": str(case.label),
        "calibration": str(case.calibration),
        "reference_to_mri_file": str(folder / "result.json"),
        "ReferenceToMri": result.reference_to_mri,
    }
    summary = write_margins_file(records, folder / "margins.jsonl.gz", header, stats)
    row.update(margin_frames=summary.frames, margin_in_view=summary.in_view)
    if scorer is None or scorer.kind != "simulator":
        row["margin_note"] = "no simulator truth to score margins against"
        return
    try:
        score = score_against_simulator(records, scorer.path, result.reference_to_mri)
    except InputError as exc:
        row["margin_note"] = _one_line(str(exc))
        return
    row.update(
        margin_scored_frames=score.scored_frames,
        margin_drawn_without_tumor=score.drawn_without_tumor,
        margin_missed_tumor=score.missed_tumor,
    )
    boundary = score.boundary
    if boundary.refined_mm.size:
        row.update(
            margin_error_mm=_round(float(boundary.refined_mm.mean())),
            margin_mri_error_mm=_round(float(boundary.predicted_mm.mean())),
            margin_supported_fraction=_round(boundary.supported_fraction, 3),
        )
    else:
        row["margin_note"] = "no tumor in view in any frame"


def _round(value: float, decimals: int = 4) -> float | str:
    v = float(value)
    return round(v, decimals) if math.isfinite(v) else ""


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]
