"""Options of the spine simulator (validated before any work starts)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from usnav.config.loader import format_validation_error
from usnav.errors import InputError

#: Shortest vertebral pitch (body + disc) the anatomy draws, mm: bounds the segment length.
MIN_PITCH_MM = 22.0
#: Margin kept between the tumor and the ends of the segment, mm.
SEGMENT_MARGIN_MM = 4.0

Range = tuple[float, float]


def _check_range(name: str, value: Range, lo: float, hi: float) -> None:
    a, b = value
    if not (lo <= a <= b <= hi):
        raise ValueError(
            f"{name} must be [min, max] with {lo} <= min <= max <= {hi}, got [{a}, {b}]"
        )


class SimOptions(BaseModel):
    """What ``usnav simulate`` can vary. Lengths mm, angles degrees, times s.

    The defaults make the standard case: 150 frames of 256×256 px (38.4 mm aperture, 40 mm
    depth, 10 MHz) at 30 Hz over a 2-level laminectomy of a 3-level thoracic segment on a
    0.4 mm anatomy grid, MRI at 0.8 mm.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: str = Field(
        "baseline",
        description="appearance family drawn per case from the seed (--list-families)",
    )
    frames: int = Field(150, gt=0, le=5000, description="frames in the sweep")
    frame_rate_hz: float = Field(30.0, gt=0, le=500, description="video frame rate")
    depth_mm: float = Field(40.0, gt=0, le=120, description="imaging depth")
    aperture_mm: float = Field(38.4, gt=0, le=100, description="linear array width")
    image_cols: int = Field(256, ge=16, le=2048, description="pixels per row (scanlines)")
    image_rows: int = Field(256, ge=16, le=2048, description="pixels per column (depth)")
    frequency_mhz: float = Field(10.0, ge=2, le=25, description="centre frequency")
    voxel_mm: float = Field(0.4, ge=0.25, le=1.0, description="anatomy label grid spacing")
    mri_spacing_mm: tuple[float, float, float] = Field(
        (0.8, 0.8, 0.8), description="MRI voxel size (i, j, k)"
    )
    levels: int = Field(3, ge=2, le=6, description="vertebrae in the segment")
    laminectomy_levels: int = Field(2, ge=1, le=6, description="levels decompressed")
    tumor_length_mm: Range = Field((10.0, 25.0), description="solid tumor length range")
    tumor_echogenicity: Literal["random", "hyperechoic", "isoechoic"] = Field(
        "random", description="tumor echogenicity (random: by seed)"
    )
    cyst: Literal["random", "yes", "no"] = Field(
        "random", description="a cyst at one tumor pole (random: half the seeds)"
    )
    cord_shift_mm: Range = Field((0.5, 2.0), description="cord-shift magnitude range")
    init_offset_mm: Range = Field((4.0, 8.0), description="initial-guess translation error")
    init_offset_deg: Range = Field((3.0, 8.0), description="initial-guess rotation error")
    tracker_lag_s: float = Field(
        0.0, ge=-0.5, le=0.5, description="simulated tracker lag (0 = none)"
    )
    jitter_mm: float = Field(0.15, ge=0, le=5, description="tracking jitter, RMS position")
    jitter_deg: float = Field(0.05, ge=0, le=5, description="tracking jitter, RMS angle")
    sweep_length_mm: float | None = Field(
        None, gt=0, le=200, description="sweep length (default: window - 6 mm)"
    )
    elevation_rays: int = Field(2, ge=1, le=8, description="sub-rays across the beam thickness")
    preview: bool = Field(False, description="write preview PNGs")
    preview_frames: int = Field(3, ge=1, le=20, description="frames shown in the previews")
    save_anatomy: bool = Field(True, description="write the anatomy label volumes")
    workers: int = Field(2, ge=1, le=64, description="threads simulating frames")

    @model_validator(mode="after")
    def _consistent(self) -> SimOptions:
        from usnav.sim.families import FAMILIES

        if self.family not in FAMILIES:
            raise ValueError(
                f"family: unknown appearance family {self.family!r}; choose one of "
                + ", ".join(FAMILIES)
            )
        _check_range("tumor_length_mm", self.tumor_length_mm, 0.5, 1000.0)
        _check_range("cord_shift_mm", self.cord_shift_mm, 0.0, 3.0)
        _check_range("init_offset_mm", self.init_offset_mm, 0.0, 100.0)
        _check_range("init_offset_deg", self.init_offset_deg, 0.0, 45.0)
        for s in self.mri_spacing_mm:
            if not 0.2 <= s <= 5.0:
                raise ValueError(f"mri_spacing_mm values must be in [0.2, 5] mm, got {s}")
        if self.laminectomy_levels > self.levels:
            raise ValueError(
                f"laminectomy_levels ({self.laminectomy_levels}) exceeds the "
                f"segment's levels ({self.levels})"
            )
        segment = self.levels * MIN_PITCH_MM - 2 * SEGMENT_MARGIN_MM
        if self.tumor_length_mm[1] > segment:
            raise ValueError(
                f"tumor_length_mm: a {self.tumor_length_mm[1]:g} mm tumor is longer than the "
                f"simulated segment ({self.levels} levels: at most {segment:g} mm of cord); "
                "use a shorter tumor or more levels"
            )
        if self.sweep_length_mm is not None and self.sweep_length_mm > self.levels * MIN_PITCH_MM:
            raise ValueError(
                f"sweep_length_mm ({self.sweep_length_mm:g}) is longer than the segment"
            )
        return self

    @property
    def pixel_mm(self) -> tuple[float, float]:
        """mm per pixel along a row (lateral) and a column (depth)."""
        return self.aperture_mm / self.image_cols, self.depth_mm / self.image_rows


def make_options(**values: Any) -> SimOptions:
    """Build :class:`SimOptions`, turning a validation failure into one clear
    :class:`~usnav.errors.InputError` (``simulation options: key 'depth_mm': ...``)."""
    try:
        return SimOptions(**values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            if err["loc"]:
                problems.append(
                    format_validation_error(
                        ValidationError.from_exception_data(exc.title, [err]), SimOptions
                    )
                )
            else:  # a cross-field check: its message names the option
                problems.append(str(err["msg"]).removeprefix("Value error, "))
        raise InputError("simulation options", "; ".join(problems)) from exc
