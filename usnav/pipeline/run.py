"""Building the live pipeline of ``usnav run`` from files, refusing bad input before it starts."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from usnav.config.calibration import load_calibration
from usnav.devices.config import load_device_set
from usnav.devices.probe import ProbeClient
from usnav.devices.recorder import check_recording_target
from usnav.errors import InputError
from usnav.io.volume import Volume, load_volume
from usnav.pipeline.config import PipelineOptions
from usnav.pipeline.live import LivePipeline
from usnav.transforms import is_rigid

log = logging.getLogger("usnav.pipeline")


def read_matrix(path: str | Path, what: str) -> np.ndarray:
    """16 numbers (row-major 4×4) from a text file, or InputError naming the file."""
    from usnav.registration.files import read_matrix_file

    return read_matrix_file(path, what)


def open_pipeline(
    device: str | Path,
    mri: str | Path,
    label: str | Path,
    calibration: str | Path,
    *,
    init: str | Path | None = None,
    record: str | Path | None = None,
    options: PipelineOptions | None = None,
) -> LivePipeline:
    """Load and check every input of ``usnav run``, then build the pipeline (not started).

    Everything that can be wrong with a file is found here, before a socket is opened: the
    device set, the MRI and label map (usable affine, finite voxels), the calibration
    (rigid × scale), the initial registration (rigid), the recording target (its folder
    exists and is writable).

    Raises
    ------
    InputError, ConfigError
        With the file, the key and what to do.
    """
    options = options or PipelineOptions()
    device_set = load_device_set(device)
    if device_set.probe is None:
        raise InputError(device, "has no [probe] section", "usnav run needs an OpenIGTLink source")
    cal = load_calibration(calibration)
    if cal.spatial is None:
        raise InputError(
            calibration,
            "has no spatial calibration (ImageToProbe)",
            "run usnav calibrate spatial, or give a PLUS device-set XML",
        )
    mri_volume = load_volume(mri)
    mri_volume.check_finite()
    label_volume = load_volume(label)
    if init is not None:
        initial = read_matrix(init, "initial ReferenceToMri")
        if not is_rigid(initial):
            raise InputError(
                init,
                "the initial ReferenceToMri is not rigid",
                "give a rotation + translation (16 numbers, row-major)",
            )
    else:
        log.warning("no --init: ReferenceToMri starts as identity (Reference = MRI space)")
        initial = np.eye(4)
    check_label_map(label_volume, options.margins.solid_label, options.margins.cyst_label)
    if record is not None:
        check_recording_target(Path(record))
    probe = ProbeClient(device_set.probe, calibration=cal, config_path=device)
    return LivePipeline(
        probe, label_volume, cal, initial, mri=mri_volume, options=options, record_path=record
    )


def check_label_map(label: Volume, solid: int, cyst: int | None, max_values: int = 64) -> None:
    """Refuse a "label map" that is not one: non-integer values (an MRI given by mistake), a
    great many distinct values, or none of the configured tumor labels.

    Raises
    ------
    InputError
        Naming the file and what was found.
    """
    data = np.asarray(label.data)
    if data.dtype.kind == "f":
        sample = data[:: max(1, data.shape[0] // 32)]
        if not np.all(np.isfinite(sample)) or not np.all(np.mod(sample, 1) == 0):
            raise InputError(
                label.source,
                "is not a label map (it has non-integer values — an image?)",
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
            "set [margins] solid_label / cyst_label in the pipeline options",
        )


def default_log_path() -> Path:
    """``logs/usnav-run-YYYYmmdd-HHMMSS.log`` in the current folder."""
    return Path("logs") / time.strftime("usnav-run-%Y%m%d-%H%M%S.log")


class InterruptToStop:
    """Ctrl-C (SIGINT) as a request to stop, never an exception, while the block runs.

    The first Ctrl-C sets :attr:`stop` (and calls ``on_interrupt(1)``); later ones only call
    ``on_interrupt(n)``. So a second Ctrl-C while the pipeline shuts down and writes out its
    recording cannot lose the recording or the run's summary. Only the main thread receives
    signals; elsewhere (and for code that never waits on :attr:`stop`) this changes nothing.
    ``ignore_after``: leave Ctrl-C ignored after the block (the process is about to exit; a
    late one would otherwise kill it by signal while it shuts down).

    Examples
    --------
    >>> with InterruptToStop(lambda n: None) as interrupt:       # doctest: +SKIP
    ...     while not interrupt.stop.wait(0.25):
    ...         pass                                            # run until Ctrl-C
    ...     pipeline.stop()                                     # Ctrl-C here is only noted
    """

    def __init__(self, on_interrupt: Callable[[int], None], *, ignore_after: bool = False):
        self.on_interrupt = on_interrupt
        self.ignore_after = ignore_after
        self.stop = threading.Event()
        self.count = 0
        self._previous: object = None
        self._installed = False

    def _handler(self, signum: int, frame: object) -> None:
        self.count += 1
        self.stop.set()
        self.on_interrupt(self.count)

    def __enter__(self) -> InterruptToStop:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            restore = signal.SIG_IGN if self.ignore_after else self._previous
            signal.signal(signal.SIGINT, restore)  # type: ignore[arg-type]
            self._installed = False
