"""Options of the margin estimator (the ``[margins]`` table of a config)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


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
        |inside − outside| mean intensity over the speckle SD below which a structure counts
        as iso-echoic (edge polarity then unknown: either sign is accepted).
    contrast_window_mm
        Depth of the regions compared just inside and just outside a boundary point, mm.
    confidence_smoothing_mm
        Half-length along the contour over which contrasts are averaged, mm.
    confidence_contrast0, confidence_contrast1
        Step across the observed boundary (inside − outside mean, averaged along the
        contour), in units of that statistic's spread in the band away from the boundary
        (its noise in this speckle), mapped to confidence 0 and 1.
    support_threshold
        Confidence from which a point counts as supported by the ultrasound.
    """

    model_config = ConfigDict(extra="forbid")

    solid_label: int = Field(1, ge=1, le=65535)
    cyst_label: int | None = Field(2, ge=1, le=65535)
    interpolation: Literal["linear", "nearest"] = "linear"
    point_spacing_mm: float = Field(0.5, gt=0.0, le=10.0)
    max_points_per_contour: int = Field(256, ge=8, le=4096)
    min_area_mm2: float = Field(1.0, ge=0.0)
    refine: bool = True
    band_mm: float = Field(3.0, gt=0.0, le=20.0)
    profile_step_mm: float = Field(0.2, gt=0.0, le=2.0)
    smoothing_mm: float = Field(0.5, ge=0.0, le=5.0)
    max_slope: float = Field(0.6, gt=0.0, le=10.0)
    prior_weight: float = Field(2.0, ge=0.0)
    contrast_threshold: float = Field(0.5, ge=0.0)
    contrast_window_mm: float = Field(1.0, gt=0.0, le=10.0)
    confidence_smoothing_mm: float = Field(2.0, ge=0.0, le=20.0)
    confidence_contrast0: float = Field(2.0, ge=0.0)
    confidence_contrast1: float = Field(4.0, gt=0.0)
    support_threshold: float = Field(0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check(self) -> MarginOptions:
        if self.cyst_label is not None and self.cyst_label == self.solid_label:
            raise ValueError("cyst_label must differ from solid_label")
        if self.confidence_contrast1 <= self.confidence_contrast0:
            raise ValueError("confidence_contrast1 must be larger than confidence_contrast0")
        if self.profile_step_mm > self.band_mm:
            raise ValueError("profile_step_mm must not exceed band_mm")
        return self
