"""Ultrasound-to-MRI registration (LC² on a Numba core), point-based initial alignment,
volume reconstruction and the streaming registration worker.

Public API (imported lazily, so ``from usnav.registration import RegistrationEstimate`` does
not load Numba)
----------------------------------------------------------------------------------------------
- :func:`register_sweep` / :class:`RegistrationOptions` / :class:`RegistrationResult`: batch.
- :class:`RegistrationWorker` / :class:`WorkerOptions`: streaming, beside the frame path.
- :func:`register_points`: paired fiducials, FRE and expected TRE.
- :func:`reconstruct_volume`: PLUS-compatible freehand reconstruction.
- :func:`warm_up`: compile (or load) every kernel at start-up; returns the seconds spent.
"""

from __future__ import annotations

import importlib
from typing import Any

from usnav.registration.estimate import RegistrationEstimate

_LAZY = {
    "warm_up": "usnav.registration._kernels",
    "PointRegistration": "usnav.registration.points",
    "register_points": "usnav.registration.points",
    "ReconstructionOptions": "usnav.registration.reconstruct",
    "reconstruct_volume": "usnav.registration.reconstruct",
    "RegistrationOptions": "usnav.registration.rigid",
    "RegistrationResult": "usnav.registration.rigid",
    "register_sweep": "usnav.registration.rigid",
    "Sweep": "usnav.registration.sweep",
    "load_sweep": "usnav.registration.sweep",
    "RegistrationWorker": "usnav.registration.worker",
    "WorkerOptions": "usnav.registration.worker",
}

__all__ = ["RegistrationEstimate", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'usnav.registration' has no attribute {name!r}")
