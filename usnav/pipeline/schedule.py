"""The registration worker on a fixed window schedule: what a live run computes when no frame
is dropped and the worker is never busy, made repeatable.

In a live run (``usnav run``, ``usnav replay`` → ``LivePipeline``) the registration windows
depend on timing: the frame path passes on the newest frame (newest wins), and the worker takes
whatever the ring buffer holds when it wakes, so the same recording can end at different
estimates (``usnav bench --full --only run-to-run`` measures the spread). Here every frame is
offered in order and a window is registered after every ``min_new_frames`` new frames, in the
calling thread: the same recording gives the same estimates, bit for bit (each update is
deterministic: Nelder–Mead from the estimate in use, no random restarts).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from usnav.registration.worker import RegistrationWorker, WorkerOptions


def replay_fixed_schedule(
    recording: str | Path,
    mri,
    image_to_probe: np.ndarray,
    initial: np.ndarray,
    *,
    passes: int = 1,
    options: WorkerOptions | None = None,
    on_frame: Callable[[RegistrationWorker], None] | None = None,
) -> RegistrationWorker:
    """Register a recorded sweep, looped ``passes`` times, on the fixed window schedule.

    Parameters
    ----------
    recording
        PLUS sequence file with the frames' tracking (see
        :func:`usnav.registration.sweep.load_sweep`).
    mri
        The preoperative MRI (:class:`usnav.io.volume.Volume`, RAS mm).
    image_to_probe
        4×4 calibration, pixel → Probe mm.
    initial
        4×4 initial ``ReferenceToMri`` (the navigation system's).
    passes
        How many times the sweep is scanned (timestamps continue across passes).
    options
        The worker's options (default: the live pipeline's; ``min_interval_s`` plays no part).
    on_frame
        Called with the worker after every frame (after the update that frame started, if
        any): e.g. to record the estimate in use frame by frame, the navigation
        registration's before the first image-based one included.

    Returns
    -------
    The worker after the last window: ``latest_accepted()`` is the estimate in use, ``stats``
    the counts.
    """
    from usnav.registration.sweep import load_sweep

    sweep = load_sweep(recording, image_to_probe)
    opts = options or WorkerOptions()
    worker = RegistrationWorker(mri, image_to_probe, initial, opts)
    window: list[tuple[np.ndarray, np.ndarray, float]] = []
    duration = float(np.ptp(sweep.timestamps)) + 1.0
    new = 0
    for p in range(passes):
        for image, pose, t in zip(
            sweep.images, sweep.image_to_reference, sweep.timestamps, strict=True
        ):
            window.append((image, pose, p * duration + float(t)))
            window = window[-opts.window_frames :]
            new += 1
            if new >= opts.min_new_frames and len(window) >= opts.min_frames:
                new = 0
                worker.update(window)
            if on_frame is not None:
                on_frame(worker)
    return worker
