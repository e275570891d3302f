"""Rigid US→MRI registration of a tracked sweep: multi-resolution LC², derivative-free search,
a do-no-harm verdict and a stated 95 % error bound.

Pixel → MRI: ``ReferenceToMri · ImageToReference · [col, row, 0, 1]``. The parts:

* :mod:`usnav.registration.options`: :class:`RegistrationOptions` and its TOML loader;
* :mod:`usnav.registration.pose`: the rigid correction the search moves, the optimiser;
* :mod:`usnav.registration.search`: :class:`SweepRegistration` (levels, grid, refinements);
* :mod:`usnav.registration.verdict`: the verdict and ``uncertainty_mm``
  (:class:`RegistrationResult`).

This module holds the batch entry point :func:`register_sweep` and the input checks, and
re-exports the names above (the stable import path).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from usnav.errors import InputError
from usnav.io.volume import Volume
from usnav.registration.options import RegistrationOptions, load_registration_options
from usnav.registration.pose import _optimise, correction, mean_displacement
from usnav.registration.search import (
    PreparedLevel,
    Progress,
    SweepRegistration,
    mri_voxel_frame,
    sweep_search_frame,
)
from usnav.registration.sweep import Sweep
from usnav.registration.verdict import RegistrationResult, uncertainty_terms
from usnav.transforms.matrices import is_rigid

__all__ = [
    "PreparedLevel",
    "Progress",
    "RegistrationOptions",
    "RegistrationResult",
    "SweepRegistration",
    "_optimise",
    "check_inputs",
    "correction",
    "load_registration_options",
    "mean_displacement",
    "register_sweep",
    "uncertainty_terms",
]


def check_inputs(
    mri: Volume, sweep: Sweep, initial: np.ndarray, *, mri_checked: bool = False
) -> None:
    """Refuse inputs that cannot give a meaningful registration (each message names it).

    ``mri_checked``: this MRI already passed (finite, not constant): its two checks, a pass
    over the voxels each, are skipped (the streaming worker checks its MRI once).
    """
    if not mri_checked:
        mri.check_finite()
    if min(mri.shape) < 2:  # (the crop then called the sweep "entirely outside the MRI")
        axis = "ijk"[int(np.argmin(mri.shape))]
        raise InputError(
            mri.source,
            f"is {' x '.join(map(str, mri.shape))} voxels: a single slice along {axis}, not a "
            "volume to register to",
            "give the 3D MRI",
        )
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
    if not mri_checked and _constant(mri.data):
        raise InputError(mri.source, "the MRI is constant (no contrast to register to)")


def _constant(data: np.ndarray) -> bool:
    """Whether every voxel has the same value: a sample of slices first (fast when it has
    contrast, the usual case), every voxel only when the sample is flat (an MRI with its
    anatomy between the sampled slices is not constant)."""
    if float(np.ptp(np.asarray(data[:: max(1, data.shape[0] // 32)]))) > 0:
        return False
    return float(np.ptp(np.asarray(data))) <= 0


def register_sweep(
    mri: Volume,
    sweep: Sweep,
    initial: np.ndarray,
    options: RegistrationOptions | None = None,
    *,
    progress: Progress | None = None,
    tumor_label: Volume | None = None,
    removed_label: Volume | None = None,
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
    tumor_label
        The planned tumor's label map (MRI RAS, tumor > 0). With it (and
        ``options.tumor_stage``) an accepted estimate is refined at the tumor
        (:mod:`usnav.registration.tumor`): ``reference_to_mri`` then follows the cord shift
        and ``bony_reference_to_mri`` keeps the global estimate.
    removed_label
        The tissue the surgery removed (MRI RAS, > 0: laminae, spinous processes, the wound
        over the decompressed levels). With it the sweep is compared with the MRI of the
        operated spine, that tissue filled with fluid
        (:func:`usnav.registration.operated.operated_mri`).

    Returns
    -------
    :class:`RegistrationResult`; ``reference_to_mri`` is the candidate only if accepted (moved
    to the tumor when the tumor stage applied).

    Raises
    ------
    InputError
        Empty sweep, NaNs in the MRI, non-rigid initial, sweep outside the MRI.
    """
    check_inputs(mri, sweep, initial)
    t0 = time.perf_counter()
    frame = None
    axes = (options or RegistrationOptions()).search_axes
    if axes != "mri_world":
        # search in the sweep's or the MRI voxels' axes: the MRI's world (not its voxels) is
        # turned to them, and the answer turned back
        frame = sweep_search_frame(sweep, initial) if axes == "sweep" else mri_voxel_frame(mri)
        given_initial = np.asarray(initial, np.float64)
        mri, tumor_label, removed_label = (
            None if v is None else dataclasses.replace(v, affine=frame @ v.affine)
            for v in (mri, tumor_label, removed_label)
        )
        assert mri is not None
        initial = frame @ given_initial
    if removed_label is not None:
        from usnav.registration.operated import operated_mri

        fill = (options or RegistrationOptions()).removed_fill_percentile
        mri = operated_mri(mri, removed_label, fill)
    problem = SweepRegistration(mri, sweep, initial, options)
    distance = None
    if tumor_label is not None and problem.options.tumor_stage:
        from usnav.registration.tumor import tumor_distance_map

        distance = tumor_distance_map(tumor_label)  # before the search: a bad label fails fast
    if progress:
        progress("prepared", 0.1)
    result = problem.run(initial, progress=progress)
    if distance is not None and result.accepted:
        from usnav.registration.tumor import refine_at_tumor

        if progress:
            progress("tumor stage", 0.97)
        stage = refine_at_tumor(problem, distance, result.reference_to_mri)
        result.tumor_stage = stage.to_json()
        if stage.applied:
            result.bony_reference_to_mri = result.reference_to_mri
            result.reference_to_mri = stage.reference_to_mri
            result.followed_tumor(problem.options)
        least = problem.options.tumor_min_sweep_fraction
        if least is not None:
            seen = stage.frames / max(1, min(len(sweep), problem.options.tumor_max_frames))
            if seen < least:
                result.reject_off_level(seen, least)
    if frame is not None:
        _to_mri_world(result, np.linalg.inv(frame), initial, given_initial)
    result.seconds = time.perf_counter() - t0
    return result


def _to_mri_world(
    result: RegistrationResult,
    frame_to_mri: np.ndarray,
    searched_initial: np.ndarray,
    given_initial: np.ndarray,
) -> None:
    """Every transform and vector of ``result`` from the search's frame back to the MRI's
    world (in place); the initial estimate, where kept, is the one given, to the bit."""

    def back(m: np.ndarray | None) -> np.ndarray | None:
        if m is None:
            return None
        if np.array_equal(m, searched_initial):
            return given_initial.copy()
        return frame_to_mri @ m

    result.reference_to_mri = back(result.reference_to_mri)
    result.candidate = back(result.candidate)
    result.initial = given_initial.copy()
    result.bony_reference_to_mri = back(result.bony_reference_to_mri)
    result.across_sweep_reference_to_mri = back(result.across_sweep_reference_to_mri)
    result.tied_candidate_reference_to_mri = back(result.tied_candidate_reference_to_mri)
    turn = frame_to_mri[:3, :3]
    stages = [result.tumor_stage] if result.tumor_stage else []
    stages += [m for s in list(stages) for m in s.get("members") or [] if isinstance(m, dict)]
    for stage in stages:
        if stage.get("translation_mm") is not None:
            stage["translation_mm"] = [
                round(float(v), 4) for v in turn @ np.asarray(stage["translation_mm"], float)
            ]
