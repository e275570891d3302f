"""Options of the margin estimator (the ``[margins]`` table of a config)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: (raw, calibrated) knots fitted by ``usnav.margins.evaluate.fit_confidence_calibration`` on
#: the tuning seeds 2001-2008 (24 frames each, registration offsets 0-1.5 mm, random tumor
#: looks; 2964 tissue-facing points, 23 % with a boundary offered, of which 70 % beat the MRI
#: point). Held out (seeds 2101-2104): 61 % beat it; calibration error 0.12 (raw: 0.21).
#: Refit whenever the refinement changes.
CONFIDENCE_CALIBRATION: tuple[tuple[float, float], ...] = (
    (0.0, 0.0),
    (0.0658, 0.6366),
    (0.2257, 0.6502),
    (0.6891, 0.6502),
    (0.9951, 0.7467),
    (1.0, 0.7467),
)


class MarginOptions(BaseModel):
    """How tumor margins are found in each frame.

    Attributes
    ----------
    solid_label, cyst_label
        Values of the solid tumor and of the cyst in the tumor label map (``cyst_label`` None:
        no cyst structure). Any other value in the label map is background.
    interpolation
        ``"linear"``: partial-volume (trilinear indicator) reslice, boundary at the 0.5 level,
        sub-voxel; ``"nearest"``: the label of the nearest voxel (shows the MRI staircase).
    point_spacing_mm
        Spacing of the boundary points along each contour, mm.
    max_points_per_contour
        Cap on the number of boundary points per contour (spacing grows for very long ones).
    min_area_mm2
        Cross-sections smaller than this (a frame grazing the tumor) are not reported.
    refine
        Look for the boundary the ultrasound supports around the MRI-predicted one.
    method
        ``"edge"``: the boundary follows the intensity derivative along the normals (with the
        structure's polarity); ``"region"``: it separates an inside and an outside intensity
        level (a Chan–Vese model along the normals).
    region_truncation
        Region model: squared misfits are capped at this many speckle SDs, so intensities far
        from both the inside and outside levels (other layers) do not pull the boundary
        (None: no cap).
    band_mm
        Half-width of the search band along each boundary normal, mm.
    profile_step_mm
        Sample step along the normals, mm.
    smoothing_mm
        Gaussian sigma applied to the ultrasound before taking edges, mm (speckle suppression).
    max_slope
        Largest change of the ultrasound boundary's offset per mm along the contour (mm/mm).
    prior_weight
        Penalty (in units of edge z-score) for a boundary at the edge of the band; the penalty
        grows with the square of the offset.
    contrast_threshold
        |inside − outside| mean intensity at the predicted boundary, in speckle SDs, below
        which a structure counts as iso-echoic (its margin is then never claimed as seen).
    polarity_window_mm
        Depth of the strips compared either side of the predicted boundary for the polarity.
    polarity_memory
        Number of recent contours of a structure whose polarity contrasts are pooled (median)
        to decide its polarity.
    polarity_min_samples
        Contours of a structure seen before any of its points may be claimed as seen on
        ultrasound (its look is not known before).
    contrast_window_mm
        Depth of the strips compared either side of the observed boundary for confidence, mm.
    confidence_smoothing_mm
        Half-length along the contour over which the local step is averaged, mm.
    confidence_ratio0, confidence_ratio1
        Local step across the observed boundary as a fraction of the structure's contrast,
        mapped to confidence 0 and 1.
    confidence_ratio_max
        A local step this many times the structure's contrast gets confidence 0 (fading in
        from 0.75 × this): such a strong edge is another interface, not this margin.
    confidence_contrast0, confidence_contrast1
        |Polarity contrast| (speckle SDs) mapped to a 0..1 factor on every point's confidence:
        a faint structure's margin is never confidently seen.
    support_threshold
        Confidence from which a point counts as supported by the ultrasound ("seen").
    confidence_calibration
        Monotone map from the refinement's raw confidence to the published one: the
        probability that the ultrasound-observed point is closer to the true boundary than
        the MRI-predicted point, as (raw, calibrated) knots, linear in between. With the
        default ``support_threshold`` 0.5 a point is "seen" only where, on the tuning
        families, the refined point beat the MRI contour more often than not. None: publish
        the raw confidence. Fitted by :func:`usnav.margins.evaluate.fit_confidence_calibration`
        (see :data:`CONFIDENCE_CALIBRATION`); checked on held-out families by ``usnav bench``.
    """

    model_config = ConfigDict(extra="forbid")

    solid_label: int = Field(1, ge=1, le=65535)
    cyst_label: int | None = Field(2, ge=1, le=65535)
    interpolation: Literal["linear", "nearest"] = "linear"
    point_spacing_mm: float = Field(0.5, gt=0.0, le=10.0)
    max_points_per_contour: int = Field(256, ge=8, le=4096)
    min_area_mm2: float = Field(1.0, ge=0.0)
    refine: bool = True
    method: Literal["edge", "region"] = "region"
    region_truncation: float | None = Field(1.0, gt=0.0)
    band_mm: float = Field(3.0, gt=0.0, le=20.0)
    profile_step_mm: float = Field(0.2, gt=0.0, le=2.0)
    smoothing_mm: float = Field(0.5, ge=0.0, le=5.0)
    max_slope: float = Field(0.6, gt=0.0, le=10.0)
    prior_weight: float = Field(2.0, ge=0.0)
    contrast_threshold: float = Field(0.4, ge=0.0)
    polarity_window_mm: float = Field(2.0, gt=0.0, le=10.0)
    polarity_memory: int = Field(15, ge=1, le=1000)
    polarity_min_samples: int = Field(5, ge=1, le=1000)
    contrast_window_mm: float = Field(1.0, gt=0.0, le=10.0)
    confidence_smoothing_mm: float = Field(2.0, ge=0.0, le=20.0)
    confidence_ratio0: float = Field(0.35, ge=-1.0, le=2.0)
    confidence_ratio1: float = Field(0.75, ge=-1.0, le=2.0)
    confidence_ratio_max: float = Field(3.0, gt=0.0, le=100.0)
    confidence_contrast0: float = Field(0.4, ge=0.0)
    confidence_contrast1: float = Field(0.8, gt=0.0)
    support_threshold: float = Field(0.5, ge=0.0, le=1.0)
    confidence_calibration: tuple[tuple[float, float], ...] | None = CONFIDENCE_CALIBRATION

    @model_validator(mode="after")
    def _check(self) -> MarginOptions:
        if self.cyst_label is not None and self.cyst_label == self.solid_label:
            raise ValueError("cyst_label must differ from solid_label")
        if self.confidence_contrast1 <= self.confidence_contrast0:
            raise ValueError("confidence_contrast1 must be larger than confidence_contrast0")
        if self.confidence_ratio1 <= self.confidence_ratio0:
            raise ValueError("confidence_ratio1 must be larger than confidence_ratio0")
        if self.profile_step_mm > self.band_mm:
            raise ValueError("profile_step_mm must not exceed band_mm")
        knots = self.confidence_calibration
        if knots is not None:
            raw = [k[0] for k in knots]
            out = [k[1] for k in knots]
            if len(knots) < 2 or raw != sorted(raw) or len(set(raw)) != len(raw):
                raise ValueError("confidence_calibration: raw values must strictly increase")
            if out != sorted(out) or not all(0.0 <= v <= 1.0 for v in out):
                raise ValueError("confidence_calibration: calibrated values must rise within 0..1")
        return self
