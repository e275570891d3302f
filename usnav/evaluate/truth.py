"""A case's ground truth as a scorer: registration error of an estimated ``ReferenceToMri``.

Two kinds, chosen by the file:

- a simulator ``truth.json``: the mean target registration error over the tumor landmarks
  (centroid, poles, boundary points) against the bony truth, :meth:`usnav.sim.CaseTruth.mtre`,
  and the error at the tumor where it is during surgery (cord shift included),
  :meth:`usnav.sim.CaseTruth.mtre_now` — ``usnav bench`` and ``usnav evaluate`` report both;
- an MNI ``.tag`` file (RESECT: volume 1 = MRI, volume 2 = Reference): the mean landmark TRE,
  :func:`usnav.registration.cases.mean_tre` — what ``usnav bench`` reports for Case 24;
- any other file: the true ``ReferenceToMri`` as 16 numbers (row-major, the ``--init`` format),
  scored with the case's tumor label as the mean displacement over the tumor's surface voxels,
  :meth:`TruthScorer.error_mm` — so cases from any other generator (or a phantom with a known
  pose) are scored by the same instrument. Such a truth knows no cord shift: its error "now"
  is the same number.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from usnav.errors import InputError


@dataclass(frozen=True)
class TruthScorer:
    """Scores estimates of ``ReferenceToMri`` against one case's truth.

    Attributes
    ----------
    kind
        ``"simulator"``, ``"landmarks"`` or ``"transform"``.
    path
        The truth file.
    sim
        The simulator truth (:class:`usnav.sim.CaseTruth`), None for landmarks.
    landmarks_reference, landmarks_mri
        (N, 3) paired landmarks (``.tag`` truth), mm; None for the simulator.
    reference_to_mri, surface_mri
        The true ``ReferenceToMri`` (4×4) and the tumor's surface voxel centres in MRI mm
        (N, 3) of a ``"transform"`` truth; None otherwise.
    """

    kind: str
    path: Path
    sim: object | None = None
    landmarks_reference: np.ndarray | None = None
    landmarks_mri: np.ndarray | None = None
    reference_to_mri: np.ndarray | None = None
    surface_mri: np.ndarray | None = None

    def error_now_mm(self, reference_to_mri: np.ndarray) -> float:
        """Error of an estimate at the tumor *where it is during surgery*, mm: what an overlay
        drawn from the MRI through this estimate is off by (simulator: the cord shift is in
        it, :meth:`usnav.sim.CaseTruth.mtre_now`; ``.tag`` landmarks are already paired
        where the anatomy was imaged, so the same as :meth:`error_mm`)."""
        if self.sim is not None:
            return float(self.sim.mtre_now(np.asarray(reference_to_mri, np.float64)))
        return self.error_mm(reference_to_mri)

    def error_mm(self, reference_to_mri: np.ndarray) -> float:
        """Registration error of an estimate at the tumor against the bony truth (simulator:
        the cord shift is not in it) or at the landmarks (tag), mm."""
        if self.sim is not None:
            return float(self.sim.mtre(np.asarray(reference_to_mri, np.float64)))
        if self.reference_to_mri is not None and self.surface_mri is not None:
            # a tumor point X of the MRI lies at inv(T_true) X in the Reference; the estimate
            # E maps it to E inv(T_true) X, which an overlay then draws |. − X| off
            m = np.asarray(reference_to_mri, np.float64) @ np.linalg.inv(self.reference_to_mri)
            mapped = self.surface_mri @ m[:3, :3].T + m[:3, 3]
            return float(np.linalg.norm(mapped - self.surface_mri, axis=1).mean())
        from usnav.registration.cases import mean_tre

        return mean_tre(
            np.asarray(reference_to_mri, np.float64), self.landmarks_reference, self.landmarks_mri
        )


def load_scorer(path: str | Path, label: str | Path | None = None) -> TruthScorer:
    """Read a truth file (``truth.json``, ``.tag``, or a true ``ReferenceToMri`` as 16
    numbers, which needs the case's tumor ``label``).

    Raises
    ------
    InputError
        Missing, unreadable or unknown truth file; a transform truth without a label, or a
        label with no tumor voxel.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(
            p,
            "no such truth file",
            "give a simulator truth.json, an MNI .tag or the true ReferenceToMri (16 numbers)",
        )
    if p.suffix.lower() == ".tag":
        from usnav.registration.points import read_tag_file

        fixed, moving = read_tag_file(p)
        return TruthScorer("landmarks", p, landmarks_reference=moving, landmarks_mri=fixed)
    if p.suffix.lower() != ".json":
        return _transform_scorer(p, label)
    from usnav.sim.truth import load_truth

    return TruthScorer("simulator", p, sim=load_truth(p))


def _transform_scorer(path: Path, label: str | Path | None) -> TruthScorer:
    """A true ``ReferenceToMri`` (16 numbers) scored over the surface of ``label``'s tumor."""
    from usnav.registration.files import read_initial

    truth = read_initial(path, "true ReferenceToMri", truth_ok=True)
    if label is None:
        raise InputError(
            path,
            "a true ReferenceToMri is scored at the tumor, and this case has no tumor label",
            "give the case's label (manifest column 'label')",
        )
    return TruthScorer(
        "transform", path, reference_to_mri=truth, surface_mri=tumor_surface_mri(label)
    )


def tumor_surface_mri(label: str | Path) -> np.ndarray:
    """Centres of the tumor's surface voxels (label > 0 with a 6-neighbour outside), MRI mm.

    Raises
    ------
    InputError
        The label has no voxel > 0.
    """
    from scipy import ndimage

    from usnav.io.volume import load_volume

    volume = load_volume(label)
    inside = np.asarray(volume.data) > 0
    if not inside.any():
        raise InputError(label, "the tumor label has no voxel > 0", "give the case's tumor label")
    surface = inside & ~ndimage.binary_erosion(inside, border_value=0)
    ijk = np.argwhere(surface).astype(np.float64)
    return ijk @ volume.affine[:3, :3].T + volume.affine[:3, 3]
