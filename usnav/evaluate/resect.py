"""RESECT Case 24 as a dataset: freehand-like sweeps cut from its 3D ultrasound, written as
files (PLUS sequence, calibration, perturbed initial ``ReferenceToMri``) with a manifest whose
truth is the case's expert landmark ``.tag`` file, so ``usnav evaluate`` runs them like any
other case.

The sweeps and perturbations are those of the registration benchmark
(:func:`usnav.registration.cases.slice_sweep`,
:func:`~usnav.registration.cases.random_perturbation`: 3–8 mm and 3–8° about the landmarks'
centre). The outside data (MRI, ``.tag``) is referenced by absolute path, never copied.

Frames cut from the 3D ultrasound are 0 outside its fan. The benchmark's in-memory sweep
carries per-frame masks for that; a PLUS file cannot, so run these cases with the registration
option ``ignore_zero_pixels = true`` (``usnav evaluate --config``, docs/evaluation.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from usnav.errors import InputError

#: file names inside each sweep's folder
SWEEP_FILE = "sweep.igs.mha"
CALIBRATION_FILE = "calibration.toml"
INIT_FILE = "init_ReferenceToMri.txt"


def write_resect_dataset(
    data_dir: str | Path | None,
    out_dir: str | Path,
    *,
    sweeps: int = 4,
    frames: int = 150,
    seed: int = 24,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write ``sweeps`` sweeps of RESECT Case 24 and ``out_dir/manifest.csv``.

    Parameters
    ----------
    data_dir
        The outside data folder holding ``resect/case24`` (None: ``$USNAV_TEST_DATA`` or
        ``../shared/data``).
    out_dir
        Created; one folder ``resect24-NN`` per sweep.
    sweeps, frames
        Number of sweeps and frames per sweep.
    seed
        Seed of the perturbations (sweep ``k`` also gets wobble seed ``k``).
    progress
        Called with a short message per sweep.

    Returns
    -------
    Path
        The manifest.

    Raises
    ------
    InputError
        No Case 24 data, bad counts, a negative seed, an output path that is a file.
    """
    from usnav.config.calibration import CalibrationFile, SpatialCalibration, save_calibration
    from usnav.data import shared_data_dir
    from usnav.frames import TrackedFrame, TrackedTransform
    from usnav.io.manifest import ManifestCase, write_manifest
    from usnav.io.sequence import write_sequence
    from usnav.registration.cases import load_resect_case24, random_perturbation, slice_sweep

    if sweeps < 1 or frames < 2:
        raise InputError(
            "resect sweeps", f"need >= 1 sweep of >= 2 frames (got {sweeps}, {frames})"
        )
    if seed < 0:
        raise InputError("resect sweeps", f"the seed must be a non-negative integer, got {seed}")
    data = Path(data_dir) if data_dir is not None else shared_data_dir()
    if data is None:
        raise InputError(
            "--data", "no outside data folder found", "give --data or set USNAV_TEST_DATA"
        )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is a file", "give a folder")
    folder = data / "resect" / "case24"
    case = load_resect_case24(data)
    rng = np.random.default_rng(seed)
    centre = case.landmarks_reference.mean(axis=0)
    rows = []
    for k in range(sweeps):
        if progress:
            progress(f"sweep {k + 1}/{sweeps}")
        sweep = slice_sweep(case.us, n_frames=frames, seed=k)
        offset = random_perturbation(rng, centre)
        where = out / f"resect24-{k:02d}"
        where.mkdir(parents=True, exist_ok=True)
        pixel_mm = sweep.pixel_spacing_mm[0]
        image_to_probe = np.diag([pixel_mm, pixel_mm, pixel_mm, 1.0])
        probe_to_image = np.linalg.inv(image_to_probe)
        tracked = (
            TrackedFrame(
                image=sweep.images[i],
                transforms={
                    "ProbeToReference": TrackedTransform(
                        sweep.image_to_reference[i] @ probe_to_image
                    )
                },
                t_device=float(sweep.timestamps[i]),
                t_received=float(sweep.timestamps[i]),
                frame_number=i,
                orientation="MF",
            )
            for i in range(len(sweep))
        )
        write_sequence(where / SWEEP_FILE, tracked, compress=True, orientation="MF")
        save_calibration(
            CalibrationFile(
                probe="resect24-sliced",
                sources=[f"usnav resect-sweeps (RESECT Case 24, sweep {k})"],
                notes="frames cut from the 3D ultrasound: ImageToProbe is the pixel size only",
                spatial=SpatialCalibration(
                    image_to_probe=image_to_probe.tolist(), image_size_px=list(sweep.image_size)
                ),
            ),
            where / CALIBRATION_FILE,
        )
        # the navigation alignment is the identity (1.10 mm mTRE); the init is it perturbed
        np.savetxt(where / INIT_FILE, offset, fmt="%.9f")
        rows.append(
            ManifestCase(
                case=where.name,
                recording=where / SWEEP_FILE,
                mri=(folder / "Case24-T1_resliced-to-US_0p5mm.nii.gz").resolve(),
                calibration=where / CALIBRATION_FILE,
                init=where / INIT_FILE,
                truth=(folder / "Case24-MRI-beforeUS.tag").resolve(),
                tags={"family": "real", "seed": str(k), "site": "resect"},
            )
        )
    return write_manifest(out / "manifest.csv", rows)
