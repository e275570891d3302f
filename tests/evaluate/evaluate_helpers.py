"""Helpers of the ``usnav evaluate`` tests (a module of its own: ``conftest`` is not importable
by name)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from usnav.io.manifest import ManifestCase, write_manifest

ROOT = Path(__file__).resolve().parents[2]

#: a few seconds per case: 16 frames of 64×64 px, coarse anatomy and MRI
TINY = {
    "frames": 16,
    "image_cols": 64,
    "image_rows": 64,
    "voxel_mm": 0.8,
    "mri_spacing_mm": (1.6, 1.6, 1.6),
    "levels": 2,
    "laminectomy_levels": 1,
    "tumor_length_mm": (8.0, 12.0),
    "elevation_rays": 1,
    "workers": 1,
}


def case_of_empty_files(folder: Path, truth: Path, **fields) -> ManifestCase:
    """A case whose recording, MRI and calibration are empty files (a test of what is read
    before them: the truth) and whose init is the identity."""
    for name in ("sweep.igs.mha", "mri.nii.gz", "calibration.toml"):
        (folder / name).write_bytes(b"")
    init = folder / "init.txt"
    np.savetxt(init, np.eye(4))
    return ManifestCase(
        case="c1",
        recording=folder / "sweep.igs.mha",
        mri=folder / "mri.nii.gz",
        calibration=folder / "calibration.toml",
        init=init,
        truth=truth,
        **fields,
    )


def manifest_of(path: Path, cases: list[ManifestCase]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_manifest(path, cases)


def usnav(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m usnav ...`` in a new process, this tree first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "usnav", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
