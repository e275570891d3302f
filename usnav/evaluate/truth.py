"""A case's ground truth as a scorer: registration error of an estimated ``ReferenceToMri``.

Two kinds, chosen by the file:

- a simulator ``truth.json``: the mean target registration error over the tumor landmarks
  (centroid, poles, boundary points) against the bony truth, :meth:`usnav.sim.CaseTruth.mtre`,
  and the error at the tumor where it is during surgery (cord shift included),
  :meth:`usnav.sim.CaseTruth.mtre_now` — ``usnav bench`` and ``usnav evaluate`` report both;
- an MNI ``.tag`` file (RESECT: volume 1 = MRI, volume 2 = Reference): the mean landmark TRE,
  :func:`usnav.registration.cases.mean_tre` — what ``usnav bench`` reports for Case 24.
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
        ``"simulator"`` or ``"landmarks"``.
    path
        The truth file.
    sim
        The simulator truth (:class:`usnav.sim.CaseTruth`), None for landmarks.
    landmarks_reference, landmarks_mri
        (N, 3) paired landmarks (``.tag`` truth), mm; None for the simulator.
    """

    kind: str
    path: Path
    sim: object | None = None
    landmarks_reference: np.ndarray | None = None
    landmarks_mri: np.ndarray | None = None

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
        from usnav.registration.cases import mean_tre

        return mean_tre(
            np.asarray(reference_to_mri, np.float64), self.landmarks_reference, self.landmarks_mri
        )


def load_scorer(path: str | Path) -> TruthScorer:
    """Read a truth file (``truth.json`` or ``.tag``).

    Raises
    ------
    InputError
        Missing, unreadable or unknown truth file.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "no such truth file", "give a simulator truth.json or an MNI .tag")
    if p.suffix.lower() == ".tag":
        from usnav.registration.points import read_tag_file

        fixed, moving = read_tag_file(p)
        return TruthScorer("landmarks", p, landmarks_reference=moving, landmarks_mri=fixed)
    from usnav.sim.truth import load_truth

    return TruthScorer("simulator", p, sim=load_truth(p))
