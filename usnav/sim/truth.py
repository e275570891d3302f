"""Reading a simulated case's ground truth (``truth.json``) and scoring a registration with it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from usnav.errors import InputError

#: Landmark sets whose mean TRE is the headline figure (all on or in the solid tumor).
TUMOR_LANDMARKS = ("tumor_centroid", "tumor_pole_superior", "tumor_pole_inferior", "tumor_boundary")


@dataclass
class CaseTruth:
    """Ground truth of one case.

    Attributes
    ----------
    reference_to_mri
        True ReferenceToMri (4×4, mm).
    init_reference_to_mri
        The perturbed initial guess.
    landmarks
        Name → (N, 3) MRI RAS mm, preoperative anatomy (None when absent, e.g. no cyst).
    landmarks_intraoperative
        The same points displaced by the cord shift (MRI coordinates via the true transform).
    cord_shift_max_mm
        Magnitude of the cord-shift field.
    document
        The whole JSON document.
    """

    reference_to_mri: np.ndarray
    init_reference_to_mri: np.ndarray
    landmarks: dict[str, np.ndarray | None]
    landmarks_intraoperative: dict[str, np.ndarray | None]
    cord_shift_max_mm: float
    document: dict

    def points(self, names: tuple[str, ...] = TUMOR_LANDMARKS) -> np.ndarray:
        """The named landmarks stacked (M, 3), MRI mm (missing ones skipped)."""
        parts = [
            np.atleast_2d(self.landmarks[n]) for n in names if self.landmarks.get(n) is not None
        ]
        return np.concatenate(parts, axis=0)

    def tre(
        self, reference_to_mri: np.ndarray, names: tuple[str, ...] = TUMOR_LANDMARKS
    ) -> np.ndarray:
        """Per-landmark target registration error of an estimate against the bony truth, mm:
        ``|E @ inv(T_true) @ X - X|`` for each preoperative landmark X (the cord shift is
        not in it: see :meth:`tre_now`)."""
        x = self.points(names)
        m = np.asarray(reference_to_mri, dtype=np.float64) @ np.linalg.inv(self.reference_to_mri)
        mapped = x @ m[:3, :3].T + m[:3, 3]
        return np.linalg.norm(mapped - x, axis=1)

    def mtre(self, reference_to_mri: np.ndarray, names: tuple[str, ...] = TUMOR_LANDMARKS) -> float:
        """Mean TRE over the named landmarks, mm (rigid: against the bony truth)."""
        return float(self.tre(reference_to_mri, names).mean())

    def tre_now(
        self, reference_to_mri: np.ndarray, names: tuple[str, ...] = TUMOR_LANDMARKS
    ) -> np.ndarray:
        """Per-landmark error at the anatomy *where it is during surgery*, mm.

        The ultrasound images a landmark at its intraoperative place Y = X + u(X) (cord shift
        u); an estimate E maps that image point to ``E @ inv(T_true) @ Y`` in the MRI, where
        the plan has it at X. The error ``|E @ inv(T_true) @ Y - X|`` is what an overlay
        drawn from the MRI is off by on the image; with E the true (bony) transform it is the
        cord shift |u(X)| itself, which no rigid registration to bone removes.
        """
        pre = self.points(names)
        now = np.concatenate(
            [
                np.atleast_2d(self.landmarks_intraoperative[n])
                for n in names
                if self.landmarks.get(n) is not None
            ],
            axis=0,
        )
        m = np.asarray(reference_to_mri, dtype=np.float64) @ np.linalg.inv(self.reference_to_mri)
        mapped = now @ m[:3, :3].T + m[:3, 3]
        return np.linalg.norm(mapped - pre, axis=1)

    def mtre_now(
        self, reference_to_mri: np.ndarray, names: tuple[str, ...] = TUMOR_LANDMARKS
    ) -> float:
        """Mean error over the named landmarks where they are during surgery, mm
        (:meth:`tre_now`: the cord shift included)."""
        return float(self.tre_now(reference_to_mri, names).mean())


def load_truth(path: str | Path) -> CaseTruth:
    """Read ``truth.json`` (or the case folder holding it).

    Raises
    ------
    InputError
        Missing or unreadable file, or a document without the expected keys.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "truth.json"
    if not p.is_file():
        raise InputError(p, "no such file", "simulate a case with usnav simulate")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
        marks = {
            k: None if v is None else np.asarray(v, dtype=np.float64)
            for k, v in doc["landmarks"].items()
            if isinstance(v, list) or v is None
        }
        intra = {
            k: None if v is None else np.asarray(v, dtype=np.float64)
            for k, v in doc["landmarks_intraoperative"].items()
            if isinstance(v, list) or v is None
        }
        truth = CaseTruth(
            reference_to_mri=np.asarray(doc["ReferenceToMri"], dtype=np.float64),
            init_reference_to_mri=np.asarray(doc["init_ReferenceToMri"], dtype=np.float64),
            landmarks=marks,
            landmarks_intraoperative=intra,
            cord_shift_max_mm=float(doc["cord_shift"]["max_mm"]),
            document=doc,
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(p, f"not a usnav truth file: {exc}") from exc
    problem = _scoring_problem(truth)
    if problem:
        raise InputError(p, f"not a usnav truth file: {problem}")
    return truth


def _scoring_problem(truth: CaseTruth) -> str:
    """What keeps ``truth`` from scoring an estimate (``""`` if nothing): the transforms, and
    the tumor landmarks, before and after the cord shift, as the errors pair them."""
    for key, m in (
        ("ReferenceToMri", truth.reference_to_mri),
        ("init_ReferenceToMri", truth.init_reference_to_mri),
    ):
        if m.shape != (4, 4) or not np.all(np.isfinite(m)) or abs(np.linalg.det(m[:3, :3])) < 1e-6:
            return f"{key} is not an invertible 4x4 matrix"
    present = [n for n in TUMOR_LANDMARKS if truth.landmarks.get(n) is not None]
    if not present:
        return f"no tumor landmark ({', '.join(TUMOR_LANDMARKS)})"
    for name in present:
        pre = np.atleast_2d(truth.landmarks[name])
        now = truth.landmarks_intraoperative.get(name)
        if pre.ndim != 2 or pre.shape[1] != 3 or not pre.shape[0] or not np.all(np.isfinite(pre)):
            return f"landmarks.{name} is not a list of finite 3-D points"
        if now is None or np.atleast_2d(now).shape != pre.shape or not np.all(np.isfinite(now)):
            return f"landmarks_intraoperative.{name} does not pair with landmarks.{name}"
    return ""
