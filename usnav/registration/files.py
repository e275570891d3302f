"""File-level entry points behind ``usnav register``, ``register-points`` and ``reconstruct``.

Each reads its inputs (refusing bad ones with a message naming the file), runs one library
function and writes its output; the CLI only parses arguments and prints.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from usnav.config.calibration import load_calibration
from usnav.config.plus_xml import parse_matrix_text
from usnav.errors import ConfigError, InputError
from usnav.io.volume import check_label_fits_mri, load_volume
from usnav.registration.operated import removed_in_mri_grid
from usnav.registration.points import read_points, read_tag_file, register_points
from usnav.registration.reconstruct import (
    Reconstruction,
    ReconstructionOptions,
    check_reconstruction_path,
    options_from_plus_xml,
    reconstruct_volume,
    save_reconstruction,
)
from usnav.registration.rigid import RegistrationOptions, RegistrationResult, register_sweep
from usnav.registration.sweep import load_sweep
from usnav.transforms.matrices import is_rigid

Progress = Callable[[str, float], None]


#: the largest translation an initial ReferenceToMri may have, mm (10 m: a unit mistake
#: or a corrupt file beyond it; such numbers overflowed the MRI crop's arithmetic)
MAX_TRANSLATION_MM = 1e4


def read_matrix_file(path: str | Path, what: str = "matrix") -> np.ndarray:
    """A 4×4 from a text file of 16 numbers (row-major; ``#`` comments and commas allowed)."""
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(
            p,
            f"cannot read the {what}: not a text file (a volume, a compressed or binary file?)",
            "give a text file of 16 numbers, row-major, or a RESULT.json of usnav register",
        ) from None
    except OSError as exc:
        raise InputError(p, f"cannot read the {what}: {exc}") from exc
    try:
        return parse_matrix_text(text, str(p))
    except ConfigError as exc:
        raise InputError(p, f"{what}: {exc.problem}", exc.hint) from exc


def read_initial(
    path: str | Path, what: str = "initial ReferenceToMri", *, truth_ok: bool = False
) -> np.ndarray:
    """The initial ``ReferenceToMri``, refused unless rigid.

    ``path`` is a text file of 16 numbers (row-major), or the RESULT.json of ``usnav
    register`` / ``usnav register-points`` (its ``ReferenceToMri``; a ``.json`` file, or any
    file that starts with ``{``), so results chain. ``what`` names the transform in messages
    (``usnav margins`` reads a fixed ``ReferenceToMri``, not an initial one). A simulator
    ``truth.json`` (whose ``ReferenceToMri`` is the answer) is refused unless ``truth_ok``:
    given as a starting estimate by mistake, it would make any registration look perfect.
    """
    p = Path(path)
    m = (
        _result_reference_to_mri(p, what, truth_ok=truth_ok)
        if p.suffix.lower() == ".json" or _starts_like_json(p)
        else read_matrix_file(path, what)
    )
    if not is_rigid(m, tol=1e-3):
        raise InputError(
            path,
            f"the {what} is not rigid (rotation + translation)",
            "give 16 numbers of a rigid transform, mm",
        )
    shift = float(np.abs(m[:3, 3]).max())  # (a norm of 1e300 overflows)
    if not shift <= MAX_TRANSLATION_MM:
        raise InputError(
            path,
            f"the {what} moves by {shift:.3g} mm along an axis (more than "
            f"{MAX_TRANSLATION_MM:g} mm: not a pose in an operating room)",
            "give the translation in mm",
        )
    return m


def _starts_like_json(path: Path) -> bool:
    """A file whose first non-blank byte is ``{`` (a RESULT.json saved under another name).
    Not sniffed when it is not a regular file: a pipe (``--init <(...)``) can be read once."""
    if not path.is_file():
        return False
    try:
        with path.open("rb") as f:
            return f.read(64).lstrip().startswith(b"{")
    except OSError:
        return False


def _result_reference_to_mri(path: Path, what: str, *, truth_ok: bool) -> np.ndarray:
    """``ReferenceToMri`` of a usnav RESULT.json, or a JSON file that is the 4×4 itself."""
    if not path.is_file():
        raise InputError(path, "no such file")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, OSError, ValueError) as exc:
        raise InputError(path, f"cannot read this JSON: {exc}") from exc
    if not truth_ok and isinstance(doc, dict) and "init_ReferenceToMri" in doc:
        raise InputError(
            path,
            f"is a simulator truth.json, not an {what}: its ReferenceToMri is the answer the "
            "registration is scored against",
            "give the case's init_ReferenceToMri.txt (the simulated navigation's start), or "
            "a RESULT.json of usnav register",
        )
    # a bare 4×4 (or 16 numbers) in JSON is the matrix itself, as in a text file
    value = (
        doc
        if isinstance(doc, list)
        else doc.get("ReferenceToMri")
        if isinstance(doc, dict)
        else None
    )
    if value is None:
        raise InputError(
            path,
            "has no ReferenceToMri",
            "give the RESULT.json of usnav register or register-points, or 16 numbers",
        )
    m = np.asarray(value, dtype=float) if _is_numeric_list(value) else None
    if m is None or m.size != 16 or not np.all(np.isfinite(m)):
        raise InputError(path, "ReferenceToMri is not a 4×4 matrix of numbers")
    return m.reshape(4, 4)


def _is_numeric_list(value) -> bool:
    try:
        np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return False
    return True


def register_recording(
    recording: str | Path,
    mri_path: str | Path,
    calibration: str | Path,
    init: str | Path,
    out: str | Path | None = None,
    options: RegistrationOptions | None = None,
    *,
    progress: Progress | None = None,
    label: str | Path | None = None,
    removed: str | Path | None = None,
) -> RegistrationResult:
    """``usnav register``: read everything, register, write RESULT.json (if ``out``).

    With ``label`` (the planned tumor's label map, MRI space) an accepted estimate is refined
    at the tumor (:func:`usnav.registration.rigid.register_sweep`). With ``removed`` (the label
    map of the tissue the surgery removed, MRI space) the sweep is compared with the MRI of
    the operated spine (:func:`usnav.registration.operated.operated_mri`).

    Raises
    ------
    InputError / ConfigError
        Any unusable input, named: the MRI (no affine, NaNs), the calibration (not rigid ×
        scale), the initial transform, the recording (empty, all transforms invalid, outside
        the MRI).
    """
    t0 = time.perf_counter()
    calibration_file = load_calibration(calibration)
    calibration_file.image_to_probe  # noqa: B018 (no [spatial]: refused before the MRI is read)
    initial = read_initial(init)
    mri = load_volume(mri_path)
    mri.check_finite()
    mri.check_not_label_map("give the MRI itself as --mri (a tumor label map goes in --label)")
    if progress:
        progress("reading the sweep", 0.02)
    tumor_label = None if label is None else load_volume(label)
    if tumor_label is not None:  # another case's label: refused, as usnav run and margins do
        check_label_fits_mri(tumor_label, mri)
    removed_label = None if removed is None else load_volume(removed)
    if removed_label is not None:  # refused before the sweep is read and kernels compile
        removed_in_mri_grid(mri, removed_label)
    sweep = load_sweep(recording, calibration_file)  # (its image size checked against it)
    from usnav.registration._kernels import warm_up

    compile_s = warm_up()
    result = register_sweep(
        mri,
        sweep,
        initial,
        options,
        progress=progress,
        tumor_label=tumor_label,
        removed_label=removed_label,
    )
    if out is not None:
        doc = result.to_json()
        doc["total_seconds"] = round(time.perf_counter() - t0, 3)
        doc["compile_seconds"] = round(compile_s, 3)
        doc["frames"] = len(sweep)
        doc["frames_dropped"] = sweep.dropped
        # a calibration usnav calibrate flagged: said in the result too, and no estimate made
        # with it is confident (a display keeps it from LIVE: docs/protocol.md)
        doc["calibration_flagged"] = calibration_file.flag_warning() or ""
        if doc["calibration_flagged"]:
            doc["confident"] = False
        doc["inputs"] = {
            "recording": str(recording),
            "mri": str(mri_path),
            # the MRI's fingerprint: cases of one operation (its sweeps, its perturbed starts)
            # share it, and usnav budget counts them as one (docs/evaluation.md)
            "mri_digest": mri.digest(),
            "calibration": str(calibration),
            "init": str(init),
            "label": None if label is None else str(label),
            "removed": None if removed is None else str(removed),
        }
        _write_json(out, doc)
    return result


MAX_FLE_MM = 20.0
"""Largest fiducial localisation error accepted, RMS mm: a stylus on a bony landmark is
~1–2 mm and skin markers ~3 mm; 20 mm is no longer a navigation registration (a value in µm
given as mm, most likely)."""


def register_point_files(
    out: str | Path | None,
    *,
    tag: str | Path | None = None,
    moving: str | Path | None = None,
    fixed: str | Path | None = None,
    fle_mm: float | None = None,
    targets: str | Path | None = None,
) -> dict:
    """``usnav register-points``: paired fiducials → ReferenceToMri with FRE and expected TRE.

    Either ``tag`` (MNI tag file: volume 1 = MRI/fixed, volume 2 = Reference/moving) or
    ``moving`` + ``fixed`` point files (``x y z`` rows, Slicer ``.fcsv``/``.mrk.json``).
    """
    if fle_mm is not None and not (math.isfinite(fle_mm) and 0 < fle_mm <= MAX_FLE_MM):
        raise InputError(
            "--fle",
            f"must be a positive RMS error in mm up to {MAX_FLE_MM:g}, got {fle_mm}",
            "e.g. --fle 0.5",
        )
    if tag is not None and (moving is not None or fixed is not None):
        raise InputError(
            "register-points",
            f"both a tag file ({tag}) and --moving/--fixed were given",
            "give one: the tag file, or the two point files",
        )
    if tag is not None:
        fixed_pts, moving_pts = read_tag_file(tag)
        source = str(tag)
    elif moving is not None and fixed is not None:
        moving_pts = read_points(moving)
        fixed_pts = read_points(fixed)
        source = f"{moving} / {fixed}"
        if len(moving_pts) != len(fixed_pts):
            raise InputError(
                source,
                f"{len(moving_pts)} moving points but {len(fixed_pts)} fixed points",
                "the lists must be paired, in the same order",
            )
    else:
        raise InputError("register-points", "give a tag file or both --moving and --fixed")
    reg = register_points(moving_pts, fixed_pts, fle_mm=fle_mm, source=source)
    target_pts = read_points(targets) if targets is not None else fixed_pts.mean(axis=0)[None]
    if not np.all(np.isfinite(target_pts)):
        # a NaN target gave exit 0 and a silent "–" for its expected TRE
        raise InputError(
            targets or "--targets", "targets contain NaN or infinite values", "give x y z in mm"
        )
    tre = reg.expected_tre_mm(target_pts)
    doc = {
        "ReferenceToMri": reg.moving_to_fixed.tolist(),
        "points": len(moving_pts),
        "fre_rms_mm": round(reg.fre_rms_mm, 4),
        "fre_mm": [round(float(v), 4) for v in reg.residuals_mm],
        "fle_rms_mm": None if not np.isfinite(reg.fle_rms_mm) else round(reg.fle_rms_mm, 4),
        "fle_estimated": fle_mm is None,
        "expected_tre_mm": [None if not np.isfinite(v) else round(float(v), 4) for v in tre],
        "targets": np.round(target_pts, 4).tolist(),
    }
    if out is not None:
        _write_json(out, doc)
    return doc


def reconstruct_recording(
    recording: str | Path,
    calibration: str | Path,
    out: str | Path,
    *,
    spacing_mm: list[float] | None = None,
    config: str | Path | None = None,
    interpolation: str | None = None,
    fill_holes: bool | None = None,
) -> Reconstruction:
    """``usnav reconstruct``: a PLUS-compatible volume of the sweep, written to ``out``.

    Options come from ``config`` (a PLUS device-set XML's ``<VolumeReconstruction>``), or from
    ``calibration`` when it is such an XML, then the explicit arguments override them.
    """
    check_reconstruction_path(out)
    calibration_file = load_calibration(calibration)
    opts = ReconstructionOptions()
    xml = (
        config
        if config is not None
        else (calibration if Path(calibration).suffix.lower() == ".xml" else None)
    )
    if xml is not None:
        try:
            opts = options_from_plus_xml(xml)
        except ConfigError:
            if config is not None:
                raise
    updates: dict = {}
    if spacing_mm:
        s = [float(v) for v in spacing_mm]
        if len(s) not in (1, 3) or not all(math.isfinite(v) and v > 0 for v in s):
            raise InputError(
                "--spacing", f"give one or three positive numbers (mm), got {' '.join(map(str, s))}"
            )
        updates["spacing_mm"] = tuple(s * 3 if len(s) == 1 else s)
    if interpolation:
        updates["interpolation"] = interpolation
    if fill_holes is not None:
        updates["fill_holes"] = fill_holes
    if updates:
        opts = ReconstructionOptions(**{**opts.model_dump(), **updates})
    sweep = load_sweep(recording, calibration_file)  # (its image size checked against it)
    from usnav.registration._kernels import warm_up

    warm_up()
    result = reconstruct_volume(sweep, opts)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_reconstruction(result.volume, out_path)
    return result


def _write_json(path: str | Path, doc: dict) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
