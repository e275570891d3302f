"""N-wire phantom definition and segmentation parameters from a PLUS device-set XML.

A PLUS fCal configuration (``PlusDeviceSet_fCal_*.xml``) holds everything a spatial calibration
needs besides the recordings:

- ``<PhantomDefinition>/<Geometry>/<Pattern Type="NWire">``: three wires each (``EndPointFront``,
  ``EndPointBack``, mm in the **Phantom** frame); wire 1 and 3 parallel, wire 2 the diagonal;
  one N per plane, the planes parallel. ``<Landmarks>``: points for the stylus registration.
- ``<CoordinateDefinitions>``: ``PhantomToReference`` (from PLUS's landmark registration).
- ``<Segmentation>``: PLUS's dot-segmentation parameters (used here as hints, see
  :class:`SegmentationParameters`).
- ``<vtkPlusProbeCalibrationAlgo>``: the names of the Image, Probe, Phantom, Reference frames.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from usnav.config.plus_xml import parse_matrix_text, read_xml_root
from usnav.errors import ConfigError

#: Two wires are parallel when the sine of their angle is below this.
_PARALLEL_SIN = 1e-3
#: The diagonal must pass this close (mm) to each side wire's (infinite) line.
_INTERSECT_TOL_MM = 1e-3


@dataclass(frozen=True)
class Wire:
    """One phantom wire: a straight segment, mm, Phantom frame."""

    name: str
    front: np.ndarray
    back: np.ndarray

    @property
    def direction(self) -> np.ndarray:
        """Unit vector front → back."""
        d = self.back - self.front
        return d / np.linalg.norm(d)


def _closest_points(p0: np.ndarray, d0: np.ndarray, p1: np.ndarray, d1: np.ndarray):
    """Closest points of two infinite lines ``p + s·d`` (not parallel)."""
    w = p0 - p1
    a, b, c = d0 @ d0, d0 @ d1, d1 @ d1
    d, e = d0 @ w, d1 @ w
    den = a * c - b * b
    s = (b * e - c * d) / den
    t = (a * e - b * d) / den
    return p0 + s * d0, p1 + t * d1


@dataclass(frozen=True)
class NWirePattern:
    """Three wires forming an N: ``wires[0]`` ∥ ``wires[2]``, ``wires[1]`` the diagonal.

    Attributes
    ----------
    index
        Position of the pattern in the XML (0-based), for messages.
    w12, w32
        Intersections (mm, Phantom frame) of the infinite lines wire1/wire2 and wire3/wire2.
    """

    index: int
    wires: tuple[Wire, Wire, Wire]
    w12: np.ndarray
    w32: np.ndarray

    @property
    def normal(self) -> np.ndarray:
        """Unit normal of the N's plane (Phantom frame)."""
        w1, _, w3 = self.wires
        n = np.cross(w1.back - w1.front, w3.front - w1.front)
        return n / np.linalg.norm(n)

    @property
    def width_mm(self) -> float:
        """Distance between the parallel side wires (= the N's width), mm."""
        w1, _, w3 = self.wires
        v = w3.front - w1.front
        d = w1.direction
        return float(np.linalg.norm(v - (v @ d) * d))

    def middle_point(self, alpha: float) -> np.ndarray:
        """The diagonal wire's point at ratio ``alpha = |p2 − p1| / |p3 − p1|`` (image), mm.

        The image plane cuts the three wires at points P1, P2, P3 on one straight line; by
        similar triangles P2 = W12 + α·(W32 − W12) (PLUS, Chen et al. 2009).
        """
        return self.w12 + alpha * (self.w32 - self.w12)

    def middle_points(self, alpha: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`middle_point`: ``alpha`` shape (n,) → points (n, 3)."""
        a = np.asarray(alpha, dtype=np.float64)[:, None]
        return self.w12[None, :] + a * (self.w32 - self.w12)[None, :]


@dataclass(frozen=True)
class SegmentationParameters:
    """PLUS ``<Segmentation>`` parameters (defaults = PLUS's defaults).

    All mm values are turned into pixels with ``approximate_spacing_mm_per_px``. They describe
    the expected look of the wire dots; the algorithm (usnav's own) uses them as PLUS does,
    and adds geometry checks of its own.
    """

    approximate_spacing_mm_per_px: float = 0.078
    opening_circle_radius_mm: float = 0.27
    opening_bar_size_mm: float = 2.0
    clip_origin_px: tuple[int, int] | None = None
    clip_size_px: tuple[int, int] | None = None
    threshold_image_percent: float = 10.0
    use_original_intensity_for_score: bool = False
    max_candidates: int = 20
    min_theta_deg: float = -70.0
    max_theta_deg: float = 70.0
    collinear_max_distance_mm: float = 0.6
    max_line_pair_distance_error_percent: float = 10.0
    angle_tolerance_deg: float = 10.0
    max_line_shift_mm: float = 10.0

    def px(self, mm: float) -> int:
        """mm → whole pixels, rounded half up (as PLUS does)."""
        return math.floor(mm / self.approximate_spacing_mm_per_px + 0.5)

    @property
    def bar_half_length_px(self) -> int:
        """Half length of the bar structuring element (the bar spans 2·b + 1 pixels)."""
        return self.px(self.opening_bar_size_mm)

    @property
    def disc_radius_px(self) -> int:
        return self.px(self.opening_circle_radius_mm)


@dataclass(frozen=True)
class CalibrationConfig:
    """What a spatial calibration reads from a PLUS device-set XML.

    Attributes
    ----------
    patterns
        The N-wire patterns, in XML order (PLUS: top of the image first).
    phantom_to_reference
        4×4, mm, or None if the XML has no PhantomToReference (then it must be given).
    landmarks
        Landmark name → position (mm, Phantom frame).
    segmentation
        The ``<Segmentation>`` parameters.
    image_frame, probe_frame, phantom_frame, reference_frame
        Frame names (``<vtkPlusProbeCalibrationAlgo>``; default Image, Probe, Phantom,
        Reference).
    source
        The XML file.
    phantom_name
        ``Description@Name`` and ``@Version``, for reports.
    """

    patterns: tuple[NWirePattern, ...]
    phantom_to_reference: np.ndarray | None
    landmarks: dict[str, np.ndarray]
    segmentation: SegmentationParameters
    image_frame: str = "Image"
    probe_frame: str = "Probe"
    phantom_frame: str = "Phantom"
    reference_frame: str = "Reference"
    source: str = ""
    phantom_name: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def n_wires(self) -> int:
        return 3 * len(self.patterns)


def _vector(text: str | None, n: int, where: str, kind=float) -> tuple | None:
    if text is None:
        return None
    parts = text.replace(",", " ").split()
    if len(parts) != n:
        raise ConfigError(where, f"expected {n} numbers, found {len(parts)}: {text!r}")
    try:
        values = tuple(kind(float(p)) if kind is int else kind(p) for p in parts)
    except ValueError as exc:
        raise ConfigError(where, f"not a number in {text!r}") from exc
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(where, f"NaN or infinite value in {text!r}")
    return values


def _bool(text: str | None, default: bool, where: str) -> bool:
    if text is None:
        return default
    word = text.strip().upper()
    if word in ("TRUE", "1", "YES", "ON"):
        return True
    if word in ("FALSE", "0", "NO", "OFF"):
        return False
    raise ConfigError(where, f"expected TRUE or FALSE, found {text!r}")


def read_segmentation_parameters(element: ET.Element | None, where: str) -> SegmentationParameters:
    """``<Segmentation>`` attributes → :class:`SegmentationParameters` (absent → defaults)."""
    d = SegmentationParameters()
    if element is None:
        return d

    def num(name: str, default: float) -> float:
        got = _vector(element.get(name), 1, f"{where}: Segmentation@{name}")
        return float(got[0]) if got else default

    origin = _vector(element.get("ClipRectangleOrigin"), 2, f"{where}: ClipRectangleOrigin", int)
    size = _vector(element.get("ClipRectangleSize"), 2, f"{where}: ClipRectangleSize", int)
    params = SegmentationParameters(
        approximate_spacing_mm_per_px=num(
            "ApproximateSpacingMmPerPixel", d.approximate_spacing_mm_per_px
        ),
        opening_circle_radius_mm=num(
            "MorphologicalOpeningCircleRadiusMm", d.opening_circle_radius_mm
        ),
        opening_bar_size_mm=num("MorphologicalOpeningBarSizeMm", d.opening_bar_size_mm),
        clip_origin_px=origin if origin and size else None,
        clip_size_px=size if origin and size else None,
        threshold_image_percent=num("ThresholdImagePercent", d.threshold_image_percent),
        use_original_intensity_for_score=_bool(
            element.get("UseOriginalImageIntensityForDotIntensityScore"),
            d.use_original_intensity_for_score,
            f"{where}: Segmentation@UseOriginalImageIntensityForDotIntensityScore",
        ),
        max_candidates=int(num("NumberOfMaximumFiducialPointCandidates", d.max_candidates)),
        min_theta_deg=num("MinThetaDegrees", d.min_theta_deg),
        max_theta_deg=num("MaxThetaDegrees", d.max_theta_deg),
        collinear_max_distance_mm=num(
            "CollinearPointsMaxDistanceFromLineMm", d.collinear_max_distance_mm
        ),
        max_line_pair_distance_error_percent=num(
            "MaxLinePairDistanceErrorPercent", d.max_line_pair_distance_error_percent
        ),
        angle_tolerance_deg=num("AngleToleranceDegrees", d.angle_tolerance_deg),
        max_line_shift_mm=num("MaxLineShiftMm", d.max_line_shift_mm),
    )
    if params.approximate_spacing_mm_per_px <= 0:
        raise ConfigError(
            f"{where}: Segmentation@ApproximateSpacingMmPerPixel",
            "must be > 0 (mm per pixel, e.g. 0.078)",
        )
    if params.bar_half_length_px < 1:
        # a bar of one pixel opens nothing away: the top-hat would remove every wire dot
        bar, spacing = params.opening_bar_size_mm, params.approximate_spacing_mm_per_px
        raise ConfigError(
            f"{where}: Segmentation@ApproximateSpacingMmPerPixel",
            f"MorphologicalOpeningBarSizeMm = {bar:g} mm is {bar / spacing:.2g} pixels at "
            f"{spacing:g} mm per pixel, less than half a pixel: the morphological filter "
            "would remove every wire dot",
            "ApproximateSpacingMmPerPixel is the image's mm per pixel (fCal's: 0.078), not "
            "µm or cm; MorphologicalOpeningBarSizeMm is mm (PLUS: 2.0)",
        )
    if params.clip_size_px is not None and min(params.clip_size_px) <= 0:
        raise ConfigError(f"{where}: Segmentation@ClipRectangleSize", "must be positive")
    if not 0 <= params.threshold_image_percent < 100:
        raise ConfigError(f"{where}: Segmentation@ThresholdImagePercent", "must be in [0, 100)")
    if params.max_candidates < 3:
        raise ConfigError(
            f"{where}: Segmentation@NumberOfMaximumFiducialPointCandidates", "must be at least 3"
        )
    return params


def _read_pattern(el: ET.Element, index: int, where: str) -> NWirePattern | str:
    """One ``<Pattern>``; returns a message instead when the pattern cannot be used."""
    label = f"Pattern[{index + 1}]"
    ptype = el.get("Type", "")
    if ptype.upper() != "NWIRE":
        return f"{label}: Type={ptype!r} is not supported (only NWire)"
    wires: list[Wire] = []
    for j, w in enumerate(el.findall("Wire")):
        name = w.get("Name") or f"{index * 3 + j + 1}"
        try:
            front = _vector(w.get("EndPointFront"), 3, f"{where}: {label}/Wire[{j + 1}]")
            back = _vector(w.get("EndPointBack"), 3, f"{where}: {label}/Wire[{j + 1}]")
        except ConfigError as exc:
            return f"{label}: wire {name!r}: {exc.problem}"
        if front is None or back is None:
            return f"{label}: wire {name!r} has no EndPointFront/EndPointBack"
        f, b = np.array(front, dtype=np.float64), np.array(back, dtype=np.float64)
        if np.linalg.norm(b - f) < 1e-6:
            return f"{label}: wire {name!r} has equal end points"
        wires.append(Wire(name, f, b))
    if len(wires) != 3:
        return f"{label}: has {len(wires)} usable wires, an N-wire needs 3"
    w1, w2, w3 = wires
    if np.linalg.norm(np.cross(w1.direction, w3.direction)) > _PARALLEL_SIN:
        return f"{label}: wires {w1.name!r} and {w3.name!r} are not parallel"
    if np.linalg.norm(np.cross(w1.direction, w2.direction)) < _PARALLEL_SIN:
        return f"{label}: the middle wire {w2.name!r} is parallel to the side wires (not an N)"
    a12, b12 = _closest_points(w1.front, w1.direction, w2.front, w2.direction)
    a32, b32 = _closest_points(w3.front, w3.direction, w2.front, w2.direction)
    if (
        np.linalg.norm(a12 - b12) > _INTERSECT_TOL_MM
        or np.linalg.norm(a32 - b32) > _INTERSECT_TOL_MM
    ):
        return f"{label}: the middle wire {w2.name!r} is not in the plane of the side wires"
    return NWirePattern(index, (w1, w2, w3), a12, a32)


def read_calibration_config(path: str | Path) -> CalibrationConfig:
    """Read phantom definition, PhantomToReference, segmentation parameters and frame names.

    Every ``<Pattern>`` must be a complete N-wire: the image shows the wires of all of them,
    and labelling the dots against a definition with one pattern left out fits them to the
    wrong wires (PLUS's fCal data without one wire gave an ImageToProbe 6° and 4 mm off, with
    a *lower* reprojection error).

    Raises
    ------
    ConfigError
        Not XML, no ``<PhantomDefinition>``, a pattern that cannot be used (fewer than 3
        wires, malformed end points, not an N, another type), non-parallel pattern planes, or
        a malformed value.
    """
    p = Path(path)
    root = read_xml_root(p)
    where = str(p)
    phantom = root.find(".//PhantomDefinition")
    if phantom is None:
        raise ConfigError(
            p,
            "no <PhantomDefinition> element",
            "use a PLUS fCal device-set file (PlusDeviceSet_fCal_*.xml)",
        )
    geometry = phantom.find("Geometry")
    if geometry is None:
        raise ConfigError(p, "<PhantomDefinition> has no <Geometry>")
    patterns: list[NWirePattern] = []
    unusable: list[str] = []
    for i, el in enumerate(geometry.findall("Pattern")):
        got = _read_pattern(el, i, where)
        if isinstance(got, str):
            unusable.append(got)
        else:
            patterns.append(got)
    if unusable:
        raise ConfigError(
            p,
            f"<PhantomDefinition>: {'; '.join(unusable)}",
            "correct the phantom definition: every pattern the image shows must be a complete "
            "N-wire (three wires), or the dots are labelled against the wrong wires",
        )
    if not patterns:
        raise ConfigError(p, "no N-wire pattern in <PhantomDefinition>: no <Pattern> elements")
    normal0 = patterns[0].normal
    for pat in patterns[1:]:
        if np.linalg.norm(np.cross(pat.normal, normal0)) > 0.02:
            raise ConfigError(
                p,
                f"Pattern[{pat.index + 1}] is not parallel to Pattern[1]",
                "PLUS N-wire phantoms have one N per plane, planes parallel",
            )
    landmarks: dict[str, np.ndarray] = {}
    for k, lm in enumerate(geometry.findall("Landmarks/Landmark")):
        pos = _vector(lm.get("Position"), 3, f"{where}: Landmarks/Landmark[{k + 1}]")
        if pos is not None:
            landmarks[lm.get("Name") or f"#{k + 1}"] = np.array(pos)

    algo = root.find(".//vtkPlusProbeCalibrationAlgo")
    names = {
        "image_frame": "Image",
        "probe_frame": "Probe",
        "phantom_frame": "Phantom",
        "reference_frame": "Reference",
    }
    if algo is not None:
        for key, attr in (
            ("image_frame", "ImageCoordinateFrame"),
            ("probe_frame", "ProbeCoordinateFrame"),
            ("phantom_frame", "PhantomCoordinateFrame"),
            ("reference_frame", "ReferenceCoordinateFrame"),
        ):
            if algo.get(attr):
                names[key] = algo.get(attr).strip()

    phantom_to_reference = None
    defs = root.find(".//CoordinateDefinitions")
    if defs is not None:
        for t in defs.findall("Transform"):
            src, dst = t.get("From"), t.get("To")
            if {src, dst} == {names["phantom_frame"], names["reference_frame"]}:
                m = parse_matrix_text(t.get("Matrix") or "", f"{where}: Transform {src}To{dst}")
                phantom_to_reference = m if src == names["phantom_frame"] else np.linalg.inv(m)

    description = phantom.find("Description")
    phantom_name = ""
    if description is not None:
        phantom_name = " ".join(
            x for x in (description.get("Name"), description.get("Version")) if x
        )
    segmentation = read_segmentation_parameters(root.find(".//Segmentation"), where)
    return CalibrationConfig(
        patterns=tuple(patterns),
        phantom_to_reference=phantom_to_reference,
        landmarks=landmarks,
        segmentation=segmentation,
        source=where,
        phantom_name=phantom_name,
        **names,
    )
