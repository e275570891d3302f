"""Offline margins: the per-frame margins the live pipeline publishes, computed for a recorded
sweep, written to a margins file, read back and scored against a simulator's truth.

Each frame goes through what ``usnav run`` does to it (:mod:`usnav.pipeline.live`): its
``ImageToReference`` from the tracking and the calibration (the calibration stage,
:mod:`usnav.calibration.stage`), then the same :class:`~usnav.margins.MarginEstimator` with
``ReferenceToMri · ImageToReference``.
A frame with an invalid image is skipped (the pipeline publishes nothing for it); a frame
without valid tracking gets a record with ``in_view: false`` and the pipeline's reason.

The margins file (``.jsonl``, or gzip-compressed ``.jsonl.gz``) is JSON Lines: line 1 a header
(``"format": "usnav-margins"``, ``"version": 1``, the inputs, ``ReferenceToMri``), then one line
per frame with the fields of the ``margin`` topic of ``docs/protocol.md`` and each contour's
point arrays as nested lists. ``docs/evaluation.md`` lists every field.
"""

from __future__ import annotations

import gzip
import io
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import usnav
from usnav.errors import InputError
from usnav.frames import frame_in_mf
from usnav.io.volume import Volume
from usnav.margins.estimator import (
    OUTSIDE_LABEL_MAP,
    FrameMargins,
    MarginContour,
    TumorExtent,
)

if TYPE_CHECKING:
    from usnav.margins.evaluate import BoundaryScore

MARGINS_FORMAT = "usnav-margins"
MARGINS_VERSION = 1

#: contour arrays written per contour (name → decimals kept)
_CONTOUR_ARRAYS = {
    "predicted_px": 3,
    "normals_px": 4,
    "observed_px": 3,
    "disagreement_mm": 3,
    "confidence": 3,
    "predicted_mri_mm": 3,
    "observed_mri_mm": 3,
}


@dataclass(frozen=True)
class MarginRecord:
    """One frame's margins with where they came from.

    Attributes
    ----------
    frame_number, t_device
        The frame's number and device timestamp (s) in the recording.
    image_shape
        (rows, cols) of the frame.
    margins
        The estimate (``margins.image_to_mri``: pixel → MRI RAS mm as used; NaN when the
        frame had no valid tracking).
    """

    frame_number: int
    t_device: float
    image_shape: tuple[int, int]
    margins: FrameMargins


@dataclass(frozen=True)
class MarginsSummary:
    """What :func:`write_margins_file` wrote.

    Attributes
    ----------
    path
        The margins file.
    frames
        Frame records written.
    in_view
        Frames with a tumor cross-section in view.
    skipped_image
        Frames left out for an invalid image.
    no_tracking
        Frames recorded as not placed (tracking not OK).
    """

    path: Path
    frames: int
    in_view: int
    skipped_image: int
    no_tracking: int


def read_reference_to_mri(path: str | Path) -> tuple[np.ndarray, dict]:
    """``ReferenceToMri`` from 16 numbers (row-major) or a usnav ``RESULT.json``.

    Returns
    -------
    matrix, document
        The rigid 4×4, and the RESULT.json document (empty for a numbers file).

    Raises
    ------
    InputError
        Missing file, not 16 numbers / no ``ReferenceToMri`` in the JSON, not rigid.
    """
    from usnav.io.inputs import require_existing
    from usnav.registration.files import read_initial
    from usnav.transforms.matrices import is_rigid

    p = Path(path)
    require_existing(p)
    if p.is_dir():
        raise InputError(p, "is a folder", "give 16 numbers or a usnav RESULT.json")
    head = p.read_bytes()[:64].lstrip()
    if p.suffix.lower() != ".json" and not head.startswith(b"{"):
        return read_initial(p), {}
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
        m = np.asarray(doc["ReferenceToMri"], dtype=np.float64)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise InputError(
            p, f"not a usnav RESULT.json with a ReferenceToMri ({exc})", "or give 16 numbers"
        ) from None
    if m.shape != (4, 4) or not np.all(np.isfinite(m)) or not is_rigid(m, tol=1e-3):
        raise InputError(p, "ReferenceToMri is not a finite rigid 4×4")
    return m, doc


def margins_of_recording(
    recording: str | Path,
    label: str | Path | Volume,
    calibration: str | Path,
    reference_to_mri: np.ndarray,
    *,
    mri: str | Path | Volume | None = None,
    result: dict | None = None,
    options=None,
    stats: dict | None = None,
    checked: bool = False,
) -> Iterator[MarginRecord]:
    """The per-frame margins of a recorded sweep, in order.

    Parameters
    ----------
    recording
        PLUS sequence file (``ProbeToTracker`` + ``ReferenceToTracker``, or ``ProbeToReference``).
    label
        Tumor label map (MRI RAS; solid 1, cyst 2 by default): a file, or the volume already
        loaded.
    calibration
        ``ImageToProbe``: usnav calibration TOML, PLUS XML or 16 numbers.
    reference_to_mri
        4×4 Reference mm → MRI RAS mm used for every frame.
    mri
        The MRI (a file or a loaded volume); when given, the label map must belong to it
        (:func:`~usnav.io.volume.check_label_fits_mri`: a label from another patient or
        space is refused).
    result
        A RESULT.json document behind ``reference_to_mri`` (accepted, quality), if any.
        Without one (or without those keys) the frames say ``registration_accepted`` false
        and ``registration_quality`` null: no usnav registration judged the matrix.
    options
        :class:`~usnav.margins.MarginOptions` (defaults if None).
    stats
        Filled with ``skipped_image`` and ``no_tracking`` counts as frames go.
    checked
        The caller has judged ``label`` (a loaded volume) as here already
        (:func:`~usnav.pipeline.run.check_label_map` and, with ``mri``,
        :func:`~usnav.io.volume.check_label_fits_mri`): not judged again, so a warning they
        log is logged once.

    Raises
    ------
    InputError
        Unreadable inputs, a label map with none of the tumor labels, or one that does not
        overlap the MRI; a calibration made for another image size than the recording's
        (:meth:`~usnav.config.calibration.CalibrationFile.check_image_size`).
    """
    from usnav.calibration.stage import CalibrationStage
    from usnav.config.calibration import load_calibration
    from usnav.frames import TransformStatus
    from usnav.io.sequence import read_sequence
    from usnav.io.volume import check_label_fits_mri, load_volume
    from usnav.margins import MarginEstimator, MarginOptions
    from usnav.pipeline.run import check_label_map
    from usnav.registration.estimate import RegistrationEstimate

    calibration_file = load_calibration(calibration)
    stage = CalibrationStage(calibration_file.image_to_probe)
    label_volume = label if isinstance(label, Volume) else load_volume(label)
    margin_options = options or MarginOptions()
    # the live pipeline's own check: a label map with none of the tumor codes (e.g. a tumor
    # coded 7) would give "no tumor in view" in every frame instead of an error
    if not checked:
        check_label_map(
            label_volume,
            margin_options.solid_label,
            margin_options.cyst_label,
            hint="give the tumor segmentation of this MRI (solid tumor 1, cyst 2)",
        )
        if mri is not None:
            check_label_fits_mri(label_volume, mri if isinstance(mri, Volume) else load_volume(mri))
    estimator = MarginEstimator(label_volume, margin_options, warm_up=True)
    doc = result or {}
    # a matrix that no usnav registration judged (16 numbers: the navigation system's, say) is
    # not "accepted", and has no quality: until session 40 every frame said accepted, 0.5 —
    # the misreading protocol 2 removed from the live messages
    quality = doc.get("quality")
    estimate = RegistrationEstimate(
        np.asarray(reference_to_mri, np.float64),
        quality=float(quality) if isinstance(quality, int | float) else float("nan"),
        accepted=doc.get("accepted") is True,
        source="file",
        reason=str(doc.get("reason", "")),
    )
    counts = stats if stats is not None else {}
    counts.update(skipped_image=0, no_tracking=0, outside_label=0)
    path = Path(recording)
    if not path.exists():
        raise InputError(path, "no such recording")
    with read_sequence(path) as seq:
        # images of another size than the calibration's would be placed at a wrong scale
        calibration_file.check_image_size(seq.image_size, path)
        calibration_file.check_pixel_spacing(seq.spacing, path)
        for i in range(len(seq)):
            frame = seq.frame(i)
            if frame.image.size == 0 or not frame.image_ok:
                counts["skipped_image"] += 1
                continue
            # margins are drawn on MF pixels, where the calibration places them (PLUS's rule)
            frame = frame_in_mf(frame)
            shape = (int(frame.image.shape[0]), int(frame.image.shape[1]))
            i2r, status = stage.image_to_reference(frame)
            if status is not TransformStatus.OK:
                counts["no_tracking"] += 1
                reason = f"tracking {status.value}: the image cannot be placed in the MRI"
                margins = FrameMargins(
                    frame.frame_number, False, reason, (), None, np.full((4, 4), np.nan), (1, 1)
                )
            else:
                margins = estimator.estimate(
                    frame.image,
                    estimate.reference_to_mri @ i2r,
                    estimate,
                    frame_number=frame.frame_number,
                    now=estimate.t_computed,
                )
                counts["outside_label"] += margins.reason == OUTSIDE_LABEL_MAP
            yield MarginRecord(frame.frame_number, float(frame.t_device), shape, margins)


def write_margins_file(
    records: Iterator[MarginRecord] | list[MarginRecord],
    out: str | Path,
    header: dict,
    stats: dict | None = None,
    progress: Callable[[int], None] | None = None,
) -> MarginsSummary:
    """Write margin records to a margins file (gzip when ``out`` ends with ``.gz``).

    Parameters
    ----------
    records
        From :func:`margins_of_recording` (consumed as it is written: memory stays flat).
    out
        The file; its folder is created.
    header
        Extra header fields (inputs, ``ReferenceToMri``).
    stats
        The counts dict given to :func:`margins_of_recording` (read at the end).
    progress
        Called with the number of frames written so far.
    """
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".part")
    n = in_view = 0
    try:
        with _open_text(tmp, "w") as f:
            head = {"format": MARGINS_FORMAT, "version": MARGINS_VERSION}
            head["usnav_version"] = usnav.__version__
            head.update(_plain(header))
            f.write(json.dumps(head) + "\n")
            for record in records:
                f.write(json.dumps(record_to_json(record), allow_nan=False) + "\n")
                n += 1
                in_view += bool(record.margins.in_view)
                if progress is not None:
                    progress(n)
        tmp.replace(p)
    except BaseException:  # a refused input or Ctrl-C mid-way: no half file left behind
        tmp.unlink(missing_ok=True)
        raise
    counts = stats or {}
    return MarginsSummary(
        p, n, in_view, int(counts.get("skipped_image", 0)), int(counts.get("no_tracking", 0))
    )


def write_margins(
    recording: str | Path,
    mri: str | Path | Volume,
    label: str | Path | Volume,
    calibration: str | Path,
    reference_to_mri: str | Path,
    out: str | Path,
    *,
    options=None,
    progress: Callable[[int], None] | None = None,
    checked: bool = False,
) -> MarginsSummary:
    """``usnav margins``: the per-frame margins of a recording written to a margins file.

    ``reference_to_mri`` is a file of 16 numbers or a usnav RESULT.json; ``mri`` and ``label``
    files or volumes already loaded; ``checked``: the caller has judged the label map as
    :func:`margins_of_recording` would (it is not judged twice).
    """
    matrix, doc = read_reference_to_mri(reference_to_mri)
    stats: dict = {}
    records = margins_of_recording(
        recording,
        label,
        calibration,
        matrix,
        mri=mri,
        result=doc,
        options=options,
        stats=stats,
        checked=checked,
    )
    header = {
        "recording": str(recording),
        "mri": str(mri.source if isinstance(mri, Volume) else mri),
        "label": str(label.source if isinstance(label, Volume) else label),
        "calibration": str(calibration),
        "reference_to_mri_file": str(reference_to_mri),
        "ReferenceToMri": matrix,
    }
    summary = write_margins_file(records, out, header, stats, progress)
    placed = summary.frames - summary.no_tracking
    if placed > 0 and stats.get("outside_label", 0) == placed:
        # every placed frame misses the whole label map: the registration is not one of
        # this MRI (an inverse, or another patient's), not a sweep beside the tumor
        summary.path.unlink(missing_ok=True)
        raise InputError(
            reference_to_mri,
            f"with this ReferenceToMri none of the {placed} placed frame(s) of {recording} "
            "falls inside the tumor label map's volume",
            "check that it maps Reference to this MRI (not its inverse) and that --label is "
            "this patient's",
        )
    return summary


def record_to_json(record: MarginRecord) -> dict:
    """One frame's line of the margins file (the ``margin`` topic's fields, arrays as lists)."""
    m = record.margins
    extent = m.extent
    return {
        "frame_number": int(record.frame_number),
        "t_device": _num(record.t_device, 6),
        "image_shape": [int(v) for v in record.image_shape],
        "in_view": bool(m.in_view),
        "reason": m.reason,
        "image_to_mri": _plain(m.image_to_mri),
        "spacing_mm": [_num(v, 6) for v in m.spacing_mm],
        "extent": None
        if extent is None
        else {k: _num(getattr(extent, k), 4) for k in TumorExtent.__dataclass_fields__},
        "distance_to_top_mm": _num(m.distance_to_top_mm, 4),
        "polarity": dict(m.polarity),
        "supported_fraction": _num(m.supported_fraction, 4),
        "median_abs_disagreement_mm": _num(m.median_abs_disagreement_mm, 4),
        "registration_accepted": bool(m.registration_accepted),
        "registration_quality": _num(m.registration_quality, 4),
        "compute_s": _num(m.compute_s, 5),
        "contours": [
            {
                "structure": c.structure,
                "label": int(c.label),
                "hole": bool(c.hole),
                "faces_tissue": np.asarray(c.faces_tissue, bool).tolist(),
                **{k: np.round(getattr(c, k), d).tolist() for k, d in _CONTOUR_ARRAYS.items()},
            }
            for c in m.contours
        ],
    }


def read_margins_file(path: str | Path) -> tuple[dict, list[MarginRecord]]:
    """Read a margins file back.

    Returns
    -------
    header, records
        The header line and one :class:`MarginRecord` per frame line.

    Raises
    ------
    InputError
        Missing file, or not a usnav margins file (the line is named).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "no such margins file")
    records = []
    try:
        with _open_text(p, "r") as f:
            header = json.loads(f.readline() or "{}")
            if header.get("format") != MARGINS_FORMAT:
                raise InputError(p, "not a usnav margins file (no usnav-margins header)")
            for number, line in enumerate(f, start=2):
                if line.strip():
                    records.append(_record_from_json(json.loads(line), f"{p}, line {number}"))
    except (OSError, EOFError, ValueError) as exc:
        raise InputError(p, f"cannot read the margins file: {exc}") from None
    return header, records


def _record_from_json(doc: dict, where: str) -> MarginRecord:
    try:
        contours = tuple(
            MarginContour(
                structure=c["structure"],
                label=int(c["label"]),
                hole=bool(c["hole"]),
                faces_tissue=np.asarray(c["faces_tissue"], bool),
                **{
                    k: np.asarray(c[k], np.float64).reshape(-1, 3 if k.endswith("mri_mm") else 2)
                    if k.endswith(("_px", "_mri_mm"))
                    else np.asarray(c[k], np.float64)
                    for k in _CONTOUR_ARRAYS
                },
            )
            for c in doc["contours"]
        )
        extent = doc.get("extent")
        margins = FrameMargins(
            frame_number=int(doc["frame_number"]),
            in_view=bool(doc["in_view"]),
            reason=str(doc["reason"]),
            contours=contours,
            label_image=None,
            image_to_mri=_array(doc["image_to_mri"]),
            spacing_mm=tuple(float(v) for v in doc["spacing_mm"]),  # type: ignore[arg-type]
            extent=None if extent is None else TumorExtent(**{k: _f(v) for k, v in extent.items()}),
            distance_to_top_mm=_f(doc.get("distance_to_top_mm")),
            polarity=dict(doc.get("polarity", {})),
            supported_fraction=_f(doc.get("supported_fraction")),
            median_abs_disagreement_mm=_f(doc.get("median_abs_disagreement_mm")),
            registration_accepted=bool(doc.get("registration_accepted", False)),
            registration_quality=_f(doc.get("registration_quality")),
            compute_s=_f(doc.get("compute_s")),
        )
        shape = tuple(int(v) for v in doc["image_shape"])
        return MarginRecord(int(doc["frame_number"]), _f(doc["t_device"]), shape, margins)  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(where, f"not a margins frame record ({exc})") from None


def score_against_simulator(records: list[MarginRecord], truth: str | Path, used: np.ndarray):
    """Boundary errors of margins against a simulated case's intraoperative tumor.

    For each frame in view the true tumor cross-section is the simulator's intraoperative
    anatomy (``anatomy_intraop.nii.gz``, after the cord shift) resliced at the frame's tracked
    pose through the *true* ``ReferenceToMri``; the margins are scored as ``usnav bench``
    scores them (:func:`usnav.margins.evaluate.score_margins`: margin points facing tissue,
    absolute distance to the true boundary). Tracking jitter (0.15 mm RMS by default) is in the
    tracked pose, so it counts as error here, unlike the benchmark, which knows the true pose.
    Only frames with both the margins and the true tumor in view are scored; a tracked frame
    drawing a tumor where the true one is not in the plane, or saying "no tumor in view"
    where it is, adds no boundary error but is counted (:class:`SimulatorMarginScore`).

    Parameters
    ----------
    records
        The frames' margins.
    truth
        The case's ``truth.json``.
    used
        The ``ReferenceToMri`` the margins were computed with.

    Returns
    -------
    :class:`SimulatorMarginScore`: the boundary errors pooled over the scored frames, and the
    frames drawn without a tumor or missing one.

    Raises
    ------
    InputError
        No ``anatomy_intraop.nii.gz`` beside the truth (simulated with ``save_anatomy=False``).
    """
    from usnav.io.volume import load_volume
    from usnav.margins.evaluate import (
        pool_scores,
        score_margins,
        true_codes_in_frame,
        tumor_codes,
    )
    from usnav.margins.options import MarginOptions
    from usnav.sim.truth import load_truth

    case_truth = load_truth(truth)
    folder = Path(truth).parent
    name = case_truth.document.get("files", {}).get("anatomy_intraop", "anatomy_intraop.nii.gz")
    anatomy_path = folder / name
    if not anatomy_path.is_file():
        raise InputError(
            anatomy_path,
            "no intraoperative anatomy beside the truth: margins cannot be scored",
            "simulate with the anatomy volumes saved (save_anatomy)",
        )
    anatomy = load_volume(anatomy_path)
    codes = tumor_codes(np.asarray(anatomy.data))
    to_true = case_truth.reference_to_mri @ np.linalg.inv(np.asarray(used, np.float64))
    world_to_voxel = np.linalg.inv(anatomy.affine)
    threshold = MarginOptions().support_threshold
    parts = []
    drawn_without_tumor = missed = 0
    for record in records:
        m = record.margins
        image_to_mri = np.asarray(m.image_to_mri, np.float64)
        if image_to_mri.shape != (4, 4) or not np.all(np.isfinite(image_to_mri)):
            continue  # no tracked pose: nothing to compare with
        true_codes = true_codes_in_frame(
            codes, world_to_voxel @ to_true @ image_to_mri, record.image_shape
        )
        present = bool(true_codes.any())
        if m.in_view and present:
            masks = {"solid": true_codes == 1, "cyst": true_codes == 2}
            parts.append(score_margins(m, masks, threshold))
        elif m.in_view:
            drawn_without_tumor += 1
        elif present:
            missed += 1
    return SimulatorMarginScore(pool_scores(parts), len(parts), drawn_without_tumor, missed)


@dataclass(frozen=True)
class SimulatorMarginScore:
    """Margins of a case against the simulator's intraoperative tumor (frames with a tracked
    pose only).

    Attributes
    ----------
    boundary
        Boundary errors (mm) pooled over the scored frames: margins in view and the true tumor
        in the plane.
    scored_frames
        Frames scored.
    drawn_without_tumor
        Frames whose margins show a tumor where the true one does not cut the image plane.
    missed_tumor
        Frames that say "no tumor in view" where the true tumor cuts the image plane (however
        little of it: a sliver at a pole counts).
    """

    boundary: BoundaryScore
    scored_frames: int
    drawn_without_tumor: int
    missed_tumor: int


# ----------------------------------------------------------------------------- helpers


def _open_text(path: Path, mode: str) -> io.TextIOBase:
    if path.name.endswith((".gz", ".gz.part")):
        return gzip.open(path, mode + "t", encoding="utf-8")  # type: ignore[return-value]
    return path.open(mode, encoding="utf-8")


def _num(value: float, decimals: int) -> float | None:
    v = float(value)
    return round(v, decimals) if math.isfinite(v) else None


def _f(value) -> float:
    return float("nan") if value is None else float(value)


def _array(value) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in value], dtype=np.float64)


def _plain(value):
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()] if value.ndim else _plain(value.item())
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value
