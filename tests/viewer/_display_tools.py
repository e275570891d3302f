"""Helpers of the display tests: required programs, an MRI for the phantom."""

from __future__ import annotations

import numpy as np


def require_program(path: str, package: str) -> str:
    """The program's path; skip when it is missing, except under CI, where that fails.

    The browser and X server tests are part of the project's checks: CI installs their
    Debian packages (.ci/run), so a missing program there is a broken setup, not a skip.
    """
    import shutil

    from ci_rules import skip_or_fail

    found = shutil.which(path)
    if found:
        return found
    skip_or_fail(f"{path} not found (Debian package {package}; .ci/run installs it)")
    raise AssertionError("unreachable")  # skip_or_fail always raises


def mri_for(case):
    """An MRI on the phantom's label grid: tumor bright, cyst brighter, a gradient elsewhere."""
    from usnav.io.volume import Volume
    from usnav.viewer.mri import MriContext

    label = np.asarray(case.label.data)
    i = np.arange(label.shape[0], dtype=np.float64)[:, None, None]
    data = 40.0 + 0.2 * i + 120.0 * (label != 0) + 60.0 * (label == 2)
    data[:, :, :4] = 300.0  # a bright slab away from the tumor (like fat) sets the window
    return MriContext(Volume(data.astype(np.float32), case.label.affine), case.label)
