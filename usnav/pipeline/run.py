"""Building the live pipeline of ``usnav run`` from files, refusing bad input before it starts."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from usnav.config.calibration import check_depth_calibrations, load_calibration
from usnav.devices.config import load_device_set
from usnav.devices.probe import ProbeClient
from usnav.devices.recorder import check_recording_target
from usnav.errors import InputError
from usnav.io.volume import Volume, check_label_fits_mri, load_volume
from usnav.pipeline.config import PipelineOptions
from usnav.pipeline.live import LivePipeline

log = logging.getLogger("usnav.pipeline")


def open_pipeline(
    device: str | Path,
    mri: str | Path,
    label: str | Path,
    calibration: str | Path | Sequence[str | Path],
    *,
    init: str | Path | None = None,
    record: str | Path | None = None,
    options: PipelineOptions | None = None,
    removed: str | Path | None = None,
) -> LivePipeline:
    """Load and check every input of ``usnav run``, then build the pipeline (not started).

    Everything that can be wrong with a file is found here, before a socket is opened: the
    device set, the MRI (usable affine, finite voxels, not a label map) and the label map,
    the calibration (rigid × scale), the initial registration (rigid), the recording target
    (its folder exists and is writable), the removed-tissue label (marks voxels inside the
    MRI).

    ``calibration`` may name several files, one per image size (the scanner's depth presets,
    each calibrated): every frame is placed with the one made for its size
    (:func:`usnav.config.calibration.check_depth_calibrations` says what they must agree on).

    With ``removed`` (the label map of the tissue the surgery removed, MRI space) the
    registration compares the ultrasound with the MRI of the operated spine
    (:func:`usnav.registration.operated.operated_mri`).

    Raises
    ------
    InputError, ConfigError
        With the file, the key and what to do.
    """
    options = options or PipelineOptions()
    device_set = load_device_set(device)
    if device_set.probe is None:
        raise InputError(device, "has no [probe] section", "usnav run needs an OpenIGTLink source")
    paths = [calibration] if isinstance(calibration, str | Path) else list(calibration)
    if not paths:
        raise InputError("--calibration", "no calibration given", "give the probe's calibration")
    cals = [load_calibration(path) for path in paths]
    for path, cal in zip(paths, cals, strict=True):
        if cal.spatial is None:
            raise InputError(
                path,
                "has no spatial calibration (ImageToProbe)",
                "run usnav calibrate spatial, or give a PLUS device-set XML",
            )
    check_depth_calibrations(cals)
    # the streams are paired at one tracker lag (the files agree on it): the probe's
    timed = next((c for c in cals if c.temporal is not None), cals[0])
    mri_volume = load_volume(mri)
    mri_volume.check_finite()
    # of the file as given (before the removed tissue is cut out): a display that loads the
    # same file checks it against this (status mri_digest / label_digest)
    digests = {"mri": mri_volume.digest()}
    # the tumor label given as the MRI ran to the end (every estimate rejected, nothing said)
    mri_volume.check_not_label_map(
        "give the MRI itself as --mri (a tumor label map goes in --label)"
    )
    if removed is not None:
        from usnav.registration.operated import operated_mri
        from usnav.registration.options import RegistrationOptions

        fill = RegistrationOptions().removed_fill_percentile
        mri_volume = operated_mri(mri_volume, load_volume(removed), fill)
    label_volume = load_volume(label)
    digests["label"] = label_volume.digest()
    if init is not None:
        from usnav.registration.files import read_initial

        initial = read_initial(init)  # 16 numbers, or a RESULT.json of usnav register
    else:
        log.warning("no --init: ReferenceToMri starts as identity (Reference = MRI space)")
        initial = np.eye(4)
    check_label_map(label_volume, options.margins.solid_label, options.margins.cyst_label)
    check_label_fits_mri(label_volume, mri_volume)
    if record is not None:
        check_recording_target(Path(record))
    probe = ProbeClient(device_set.probe, calibration=timed, config_path=device)
    for cal in cals:
        # the probe checked its own calibration's ImageToProbe against the lag it pairs at;
        # every other depth's was computed at a lag of its own too
        mismatch = cal.spatial_lag_mismatch(probe.time_offset_s) if cal is not timed else None
        if mismatch:
            log.warning("probe: %s", mismatch)
    return LivePipeline(
        probe,
        label_volume,
        cals[0],
        initial,
        mri=mri_volume,
        options=options,
        record_path=record,
        other_depths=cals[1:],
        input_digests=digests,
    )


def check_label_map(
    label: Volume,
    solid: int,
    cyst: int | None,
    max_values: int = 64,
    *,
    hint: str = "set [margins] solid_label / cyst_label in the pipeline options",
) -> None:
    """Refuse a "label map" that is not one: non-integer values (an MRI given by mistake), a
    great many distinct values, or none of the configured tumor labels (``hint`` then says
    what to do: the command's way of setting them).

    Raises
    ------
    InputError
        Naming the file and what was found.
    """
    data = np.asarray(label.data)
    if data.dtype.kind == "f":
        # every non-zero voxel (NaN included), not a sample of slices: a NaN or a fraction
        # in a slice a sample skips slipped through (and NaN then broke the label count)
        labelled = data[data != 0]
        if not np.all(np.isfinite(labelled)) or not np.all(np.mod(labelled, 1) == 0):
            raise InputError(
                label.source,
                "is not a label map (it has non-integer values — an image or a probability map?)",
                "give the tumor segmentation (solid tumor and cyst as integer labels)",
            )
    values = np.unique(data)
    if len(values) > max_values:
        raise InputError(
            label.source,
            f"has {len(values)} distinct values: not a label map",
            "give the tumor segmentation (solid tumor and cyst as integer labels)",
        )
    wanted = {solid} | ({cyst} if cyst is not None else set())
    present = {int(v) for v in values if v != 0}
    if not wanted & present:
        raise InputError(
            label.source,
            f"has none of the tumor labels {sorted(wanted)} (its labels: "
            f"{sorted(present)[:10] or 'none'})",
            hint,
        )
    # accepted, but what is drawn may not be what the planner meant (e.g. tumor 2 and cyst 4:
    # the tumor drawn as the cyst, the cyst not at all): say how the labels are read
    other = sorted(present - wanted)
    if other or solid not in present:
        roles = f"solid tumor {solid}" + (f", cyst {cyst}" if cyst is not None else "")
        said = []
        if solid not in present:
            said.append(f"no voxel is the solid tumor ({solid})")
        if other:
            listed = ", ".join(str(v) for v in other[:10]) + (", …" if len(other) > 10 else "")
            said.append(f"label(s) {listed} count as background")
        log.warning("%s: %s (read as %s)", label.source, "; ".join(said), roles)


def default_log_path() -> Path:
    """``usnav-run-YYYYmmdd-HHMMSS.log`` in the per-user log folder: ``$USNAV_LOG_DIR``, else
    ``$XDG_STATE_HOME/usnav/logs`` or ``~/.local/state/usnav/logs`` (never the current folder,
    so runs from a source tree leave nothing in it)."""
    import os

    env = os.environ.get("USNAV_LOG_DIR")
    if env:
        base = Path(env)
    else:
        xdg = os.environ.get("XDG_STATE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".local" / "state") / "usnav" / "logs"
    return base / time.strftime("usnav-run-%Y%m%d-%H%M%S.log")
