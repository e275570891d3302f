"""The calibration stage: a probe's calibration applied to tracked frames, in one place.

A tracked frame becomes usable by two corrections, both defined here and nowhere else:

- **temporal** — the tracker pose that matches an image stamped *t* is the tracker's pose at
  ``t + tracker_lag_s`` (PLUS ``TrackerLagSec``; negative when the tracker stream leads the
  video, its stamp of a moment earlier than the image's). :meth:`CalibrationStage.pose_time` is the
  time at which each transform stream is sampled for an image: the probe client pairs its
  streams there (live), and a recording's frames were paired there when they were recorded.
- **spatial** — ``ImageToReference = ProbeToReference · ImageToProbe`` (pixel → Reference
  mm; ``ImageToProbe`` carries the mm per pixel). :meth:`CalibrationStage.image_to_reference`
  computes it from whatever probe pose the frame carries (``ProbeToReference``, or
  ``ProbeToTracker`` and ``ReferenceToTracker``), with the worst status along the chain; the
  live pipeline and the batch tools (sweep registration, reconstruction) both call it.

Without a spatial calibration (or without a probe pose in the frame) the ``ImageToReference``
the IMAGE message carried — the server's own calibration — is used as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from usnav.config.calibration import CalibrationFile
from usnav.frames import TrackedFrame, TransformStatus
from usnav.transforms import TransformRepository


@dataclass(frozen=True)
class CalibrationStage:
    """ImageToProbe and the tracker lag, applied to frames.

    Attributes
    ----------
    image_to_probe
        4×4, pixel (col, row, 0, 1) → Probe mm, or None (use the frame's embedded
        ``ImageTo<reference>``).
    tracker_lag_s
        s; the pose for an image stamped ``t`` is the tracker's pose at ``t + tracker_lag_s``.
    reference
        Name of the reference frame (``Reference`` as in PLUS).
    """

    image_to_probe: np.ndarray | None = None
    tracker_lag_s: float = 0.0
    reference: str = "Reference"

    @classmethod
    def from_calibration(
        cls,
        calibration: CalibrationFile | None,
        *,
        tracker_lag_s: float | None = None,
        reference: str = "Reference",
    ) -> CalibrationStage:
        """The stage of a calibration file (its spatial and temporal sections, either may be
        absent); ``tracker_lag_s`` overrides the file's lag (a device file's
        ``time_offset_s``)."""
        image_to_probe = None
        lag = 0.0
        if calibration is not None:
            if calibration.spatial is not None:
                image_to_probe = calibration.image_to_probe
            lag = calibration.tracker_lag_s
        if tracker_lag_s is not None:
            lag = tracker_lag_s
        return cls(image_to_probe, float(lag), reference)

    def pose_time(self, t_image: float) -> float:
        """When the tracker pose matching an image stamped ``t_image`` (s) was sampled (s)."""
        return t_image + self.tracker_lag_s

    def image_to_reference(self, frame: TrackedFrame) -> tuple[np.ndarray, TransformStatus]:
        """``ImageToReference`` of a frame: usnav's calibration when it applies, else the
        matrix the IMAGE message carried.

        Returns
        -------
        matrix, status
            4×4 (pixel → Reference mm) and the worst status along the chain (MISSING when the
            frame has nothing to compute it from).
        """
        embedded_name = f"ImageTo{self.reference}"
        probe_name = f"ProbeTo{self.reference}"
        if self.image_to_probe is not None:
            repo = TransformRepository.from_frame(frame, exclude=[embedded_name])
            if repo.has(probe_name):
                probe = repo.get(probe_name)
                return probe.matrix @ self.image_to_probe, probe.status
        embedded = frame.transforms.get(embedded_name)
        if embedded is not None:
            return np.asarray(embedded.matrix, dtype=np.float64), embedded.status
        return np.eye(4), TransformStatus.MISSING

    def image_to_reference_ok(self, frame: TrackedFrame) -> np.ndarray | None:
        """:meth:`image_to_reference` when its status is OK and it is finite, else None (the
        frame cannot be placed)."""
        matrix, status = self.image_to_reference(frame)
        if status is not TransformStatus.OK or not np.all(np.isfinite(matrix)):
            return None
        return matrix
