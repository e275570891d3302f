"""Appearance families: named, physically motivated ways in which ultrasound differs between
scanners, probes and patients.

A family is a preset of parameter *distributions*. For each case, :func:`draw_appearance` draws
one :class:`Appearance` from the family with the case's seed (its own random stream, so the
anatomy, sweep and speckle of a seed are the same in every family unless the family changes
them). ``baseline`` draws nothing: it is the simulator as it was tuned on, bit for bit.

Every drawn value is recorded in ``truth.json`` (``appearance``). The physics behind each family
and the sources of the ranges are in ``docs/simulator.md`` (Families).

Frames and units: lengths mm, angles degrees, speeds m/s, levels dB, frequency MHz.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from usnav.errors import InputError

#: Random stream of the family draw (the other streams are in :mod:`usnav.sim.case`).
FAMILY_STREAM = 7
#: Sweep patterns :func:`usnav.sim.sweep.plan_sweep` knows.
SWEEP_PATTERNS = ("transverse", "sagittal", "fan", "partial")
#: The spatial pulse length in units of the axial envelope σ (the envelope's ±2σ).
PULSE_LENGTH_SIGMAS = 4.0
#: Axial and lateral PSF σ at 10 MHz (they scale with the wavelength, 1/f).
AXIAL_SIGMA_10MHZ_MM = 0.12
LATERAL_SIGMA_10MHZ_MM = 0.22


@dataclass(frozen=True)
class Appearance:
    """Everything a family may change, with the baseline values as defaults.

    Attributes
    ----------
    family
        Name of the family the values were drawn from.
    echo_delay_pulses
        How far every echo trails the reflector that made it, in spatial pulse lengths
        (0 = the envelope is centred on the interface; 0.5 = the pulse starts at the interface,
        as in a scanner that does not compensate for the pulse's onset).
    specular_exponent
        Angular fall-off cos^m θ of a mirror-like interface echo (large m = mirror-like).
    roughness_offset
        Added to every tissue interface's roughness (clipped to [0, 1]): > 0 = more diffuse
        (Lambertian) reflection, < 0 = more specular.
    reverb_face_reflection
        Reflection coefficient of the transducer face for echoes coming back (0 = no
        reverberation): the strongest echo a of a scanline returns again at 2, 3... times its
        depth as a·(R·a)^k (see :func:`usnav.sim.ultrasound.add_reverberation`).
    reverb_bounces
        How many reverberation copies (at 2, 3, ... times the reflector's depth).
    sidelobe_db
        Level of the two lateral side lobes of the beam relative to the main lobe, dB
        (``None`` = no side lobes).
    sidelobe_offset_fwhm
        Distance of the side lobes from the beam axis, in main-lobe FWHMs at that depth.
    frequency_mhz
        Centre frequency (``None`` = the option's); axial and lateral resolution follow it.
    depth_mm, aperture_mm
        Imaging depth and array width (``None`` = the options'): another probe or depth
        setting, so another pixel spacing.
    focus_fraction
        Lateral focus depth as a fraction of the imaging depth (baseline 0.5).
    gain_db
        Overall receive gain (brightens everything; shifts the log-compressed histogram).
    tgc_db_per_cm
        Time-gain compensation slope.
    dynamic_range_db
        Displayed dynamic range of the log compression.
    compression_gamma
        Power applied to the normalised log-compressed value (1 = plain log compression, < 1
        lifts the dark grey levels, > 1 presses them down).
    saline_speed_m_s, csf_speed_m_s
        True speed of sound in the irrigation saline and in CSF (the scanner assumes 1540 m/s,
        so echoes behind them are drawn at the wrong depth).
    scatter_gain_scale
        Diffuse backscatter relative to the interface echoes (speckle brightness), a factor.
    scatterer_density_scale
        Factor on the scatterer density of every tissue (small = sparse bright dots instead of
        fully developed speckle).
    bone_attenuation_scale
        Factor on the attenuation of bone and marrow (small = shallow acoustic shadows).
    calibration_rotation_deg, calibration_axis
        Rotation of the *written* calibration against the true one, about the image centre,
        and its axis (transducer frame).
    calibration_translation_mm, calibration_direction
        Displacement of the written calibration's image centre and its direction (transducer
        frame).
    jitter_mm, jitter_deg
        Tracking jitter, RMS (``None`` = the options').
    unrecorded_lag_s
        Tracker lag that the written calibration does not know about (a temporal calibration
        error): the images are taken ``unrecorded_lag_s`` after the recorded poses.
    sweep_pattern
        ``transverse`` (slide along the cord, image plane across it), ``sagittal`` (image plane
        along the cord, slide across it), ``fan`` (rock the transverse plane about the array
        from one place) or ``partial`` (a transverse slide over part of the window only).
    coverage
        Fraction of the window the ``partial`` sweep covers.
    coverage_centre
        Where the ``partial`` sweep is centred, as a fraction of the window (0..1).
    fan_half_angle_deg
        Half the angle a ``fan`` sweep rocks through.
    sagittal_half_width_mm
        Half the lateral distance a ``sagittal`` sweep slides.
    levels, laminectomy_levels
        Vertebrae in the segment and levels decompressed (``None`` = the options').
    tumor_length_mm
        Solid tumor length (``None`` = drawn from the options' range).
    tumor_backscatter
        Tumor backscatter (``None`` = hyper/isoechoic by the options).
    cord_shift_mm
        Cord-shift magnitude (``None`` = drawn from the options' range).
    vertebra_scale
        Size of the vertebrae, canal and cord against a mid-thoracic level (< 1 upper
        thoracic, > 1 towards the thoracolumbar junction).
    """

    family: str = "baseline"
    echo_delay_pulses: float = 0.0
    specular_exponent: float = 12.0
    roughness_offset: float = 0.0
    reverb_face_reflection: float = 0.0
    reverb_bounces: int = 0
    sidelobe_db: float | None = None
    sidelobe_offset_fwhm: float = 1.5
    frequency_mhz: float | None = None
    depth_mm: float | None = None
    aperture_mm: float | None = None
    focus_fraction: float = 0.5
    gain_db: float = 0.0
    tgc_db_per_cm: float = 8.0
    dynamic_range_db: float = 52.0
    compression_gamma: float = 1.0
    saline_speed_m_s: float = 1520.0
    csf_speed_m_s: float = 1504.5
    scatter_gain_scale: float = 1.0
    scatterer_density_scale: float = 1.0
    bone_attenuation_scale: float = 1.0
    calibration_rotation_deg: float = 0.0
    calibration_axis: tuple[float, float, float] = (0.0, 0.0, 1.0)
    calibration_translation_mm: float = 0.0
    calibration_direction: tuple[float, float, float] = (1.0, 0.0, 0.0)
    jitter_mm: float | None = None
    jitter_deg: float | None = None
    unrecorded_lag_s: float = 0.0
    sweep_pattern: str = "transverse"
    coverage: float = 1.0
    coverage_centre: float = 0.5
    fan_half_angle_deg: float = 20.0
    sagittal_half_width_mm: float = 8.0
    levels: int | None = None
    laminectomy_levels: int | None = None
    tumor_length_mm: float | None = None
    tumor_backscatter: float | None = None
    cord_shift_mm: float | None = None
    vertebra_scale: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        """All values, JSON-ready (tuples as lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    def calibration_error(self, centre_mm: np.ndarray) -> np.ndarray:
        """The rigid error E (4×4, transducer frame, mm) of the written calibration:
        ``written ImageToProbe = TransducerToProbe · E · ImageToTransducer``.

        E rotates by ``calibration_rotation_deg`` about ``centre_mm`` (the image centre, in the
        transducer frame) and then moves by ``calibration_translation_mm``, so the image centre
        lands exactly that far from where it truly is.
        """
        axis = np.asarray(self.calibration_axis, dtype=np.float64)
        axis = axis / np.linalg.norm(axis)
        rot = Rotation.from_rotvec(np.radians(self.calibration_rotation_deg) * axis).as_matrix()
        d = np.asarray(self.calibration_direction, dtype=np.float64)
        c = np.asarray(centre_mm, dtype=np.float64)
        m = np.eye(4)
        m[:3, :3] = rot
        m[:3, 3] = c - rot @ c + self.calibration_translation_mm * d / np.linalg.norm(d)
        return m


def _unit(rng: np.random.Generator) -> tuple[float, float, float]:
    v = rng.normal(size=3)
    v /= np.linalg.norm(v)
    return (float(v[0]), float(v[1]), float(v[2]))


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _log_u(rng: np.random.Generator, lo: float, hi: float) -> float:
    """Log-uniform: as likely to be halved as doubled."""
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _nothing(rng: np.random.Generator) -> dict[str, Any]:
    return {}


def _echo(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "echo_delay_pulses": _u(rng, 0.4, 0.6),
        "specular_exponent": _log_u(rng, 3.0, 40.0),
        "roughness_offset": _u(rng, -0.1, 0.45),
    }


def _frequency(rng: np.random.Generator) -> dict[str, Any]:
    return {"frequency_mhz": _u(rng, 7.0, 15.0)}


def _probe(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "depth_mm": _u(rng, 32.0, 50.0),
        "aperture_mm": _u(rng, 25.0, 45.0),
        "focus_fraction": _u(rng, 0.3, 0.75),
    }


def _gain(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "gain_db": _u(rng, -8.0, 8.0),
        "tgc_db_per_cm": _u(rng, 2.0, 14.0),
        "dynamic_range_db": _u(rng, 35.0, 75.0),
        "compression_gamma": _log_u(rng, 0.6, 1.7),
    }


def _sos(rng: np.random.Generator) -> dict[str, Any]:
    return {"saline_speed_m_s": _u(rng, 1480.0, 1580.0), "csf_speed_m_s": _u(rng, 1480.0, 1580.0)}


def _reverb(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "reverb_face_reflection": _u(rng, 0.3, 0.8),
        "reverb_bounces": int(rng.integers(1, 4)),
        "sidelobe_db": _u(rng, -28.0, -14.0),
        "sidelobe_offset_fwhm": _u(rng, 1.2, 2.0),
    }


#: ``speckle-shadow``'s scatterer density factor, drawn log-uniform: at 1 a resolution cell holds
#: ~70 scatterer samples (Rayleigh speckle, contrast 0.52); at 0.01 it holds < 1, so the speckle
#: of the cord and the tumor is sparse bright dots (contrast ~0.85, docs/simulator.md).
SCATTERER_DENSITY_SCALE_RANGE = (0.01, 1.0)
#: ``speckle-shadow``'s bone and marrow attenuation factor, drawn log-uniform: at 1.5 the shadow
#: starts at the bone's surface echo; at 0.05 the marrow's echoes stay visible > 5 mm below it.
BONE_ATTENUATION_SCALE_RANGE = (0.05, 1.5)


def _speckle(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "scatter_gain_scale": _log_u(rng, 0.5, 2.0),
        "scatterer_density_scale": _log_u(rng, *SCATTERER_DENSITY_SCALE_RANGE),
        "bone_attenuation_scale": _log_u(rng, *BONE_ATTENUATION_SCALE_RANGE),
    }


def _speckle_mixed(rng: np.random.Generator) -> dict[str, Any]:
    """The speckle axis of ``mixed``: the first ranges of ``speckle-shadow`` (density 0.15-1,
    bone attenuation 0.25-1.5, both uniform), kept so that ``mixed`` -- a held-out family --
    draws the same cases as before ``speckle-shadow`` was widened."""
    return {
        "scatter_gain_scale": _log_u(rng, 0.5, 2.0),
        "scatterer_density_scale": _u(rng, 0.15, 1.0),
        "bone_attenuation_scale": _u(rng, 0.25, 1.5),
    }


def _calibration(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "calibration_rotation_deg": _u(rng, 0.3, 1.0),
        "calibration_axis": _unit(rng),
        "calibration_translation_mm": _u(rng, 0.3, 1.0),
        "calibration_direction": _unit(rng),
        "jitter_mm": _u(rng, 0.1, 0.5),
        "jitter_deg": _u(rng, 0.05, 0.3),
        "unrecorded_lag_s": _u(rng, -0.04, 0.04),
    }


def _sweep(rng: np.random.Generator) -> dict[str, Any]:
    pattern = SWEEP_PATTERNS[int(rng.integers(len(SWEEP_PATTERNS)))]
    values: dict[str, Any] = {"sweep_pattern": pattern}
    if pattern == "partial":
        coverage = _u(rng, 0.35, 0.65)
        values["coverage"] = coverage
        values["coverage_centre"] = _u(rng, coverage / 2, 1.0 - coverage / 2)
    elif pattern == "fan":
        values["fan_half_angle_deg"] = _u(rng, 12.0, 25.0)
    elif pattern == "sagittal":
        values["sagittal_half_width_mm"] = _u(rng, 5.0, 10.0)
    return values


def _anatomy(rng: np.random.Generator) -> dict[str, Any]:
    from usnav.sim.options import MIN_PITCH_MM, SEGMENT_MARGIN_MM

    levels = int(rng.integers(2, 5))  # 2-4: 5 would paint a 5/3 larger grid
    values = {
        "levels": levels,
        "laminectomy_levels": int(rng.integers(1, levels + 1)),
        "tumor_length_mm": 0.0,
        "tumor_backscatter": _log_u(rng, 0.07, 0.6),
        "cord_shift_mm": _u(rng, 0.5, 3.0),
        "vertebra_scale": _u(rng, 0.85, 1.2),
    }
    segment = levels * MIN_PITCH_MM * values["vertebra_scale"] - 2 * SEGMENT_MARGIN_MM
    values["tumor_length_mm"] = _u(rng, 6.0, min(35.0, segment))
    return values


def _sweep_anatomy(rng: np.random.Generator) -> dict[str, Any]:
    return {**_sweep(rng), **_anatomy(rng)}


#: The axes the ``mixed`` family draws from (each independently, half the time). Its speckle
#: axis keeps ``speckle-shadow``'s first, narrower ranges (:func:`_speckle_mixed`): ``mixed`` is
#: held out, and its cases must not change when a tuning family does.
_AXES: tuple[Callable[[np.random.Generator], dict[str, Any]], ...] = (
    _echo,
    _frequency,
    _probe,
    _gain,
    _sos,
    _reverb,
    _speckle_mixed,
    _calibration,
    _sweep,
    _anatomy,
)


def _mixed(rng: np.random.Generator) -> dict[str, Any]:
    values: dict[str, Any] = {}
    use = rng.random(len(_AXES)) < 0.5
    if not use.any():
        use[int(rng.integers(len(_AXES)))] = True
    for axis, on in zip(_AXES, use, strict=True):
        draw = axis(rng)  # always drawn, so one axis' values do not depend on the others' use
        if on:
            values.update(draw)
    return values


@dataclass(frozen=True)
class Family:
    """A named appearance family.

    Attributes
    ----------
    name
        What ``--family`` takes.
    description
        One line: what it models.
    sample
        Draws the family's values from a random generator (keys of :class:`Appearance`).
    """

    name: str
    description: str
    sample: Callable[[np.random.Generator], dict[str, Any]]


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("baseline", "the simulator the registration was tuned on (nothing drawn)", _nothing),
        Family(
            "trailing-echo",
            "echo trails its interface by ~half a pulse length; specular vs diffuse reflection",
            _echo,
        ),
        Family(
            "frequency-psf",
            "centre frequency 7-15 MHz: axial/lateral resolution, speckle size, attenuation",
            _frequency,
        ),
        Family(
            "probe-geometry",
            "another probe or depth setting: imaging depth, array width (pixel spacing), focus",
            _probe,
        ),
        Family(
            "compressed-gain",
            "receive gain, TGC slope, dynamic range and the compression curve",
            _gain,
        ),
        Family(
            "sos-error",
            "true speed of sound 1480-1580 m/s in saline and CSF (scanner assumes 1540)",
            _sos,
        ),
        Family(
            "reverb-sidelobe",
            "reverberation under the strongest reflector and lateral side lobes of the beam",
            _reverb,
        ),
        Family(
            "speckle-shadow",
            "speckle brightness and density, and how deep bone shadows reach",
            _speckle,
        ),
        Family(
            "miscalibrated",
            "probe calibration off by up to 1 mm / 1 deg (written file wrong), tracking jitter "
            "and an unrecorded tracker lag",
            _calibration,
        ),
        Family(
            "sweep-anatomy",
            "sweep pattern (transverse, sagittal, fan, partial); levels, tumor, cord shift <= 3 mm",
            _sweep_anatomy,
        ),
        Family("mixed", "each axis above drawn independently with probability 1/2", _mixed),
    )
}


#: The team's tuning / held-out split, fixed before any result on the families was seen: methods
#: and parameters may be chosen on these families (seeds 1001-1999) ...
TUNING_FAMILIES: tuple[str, ...] = (
    "baseline",
    "trailing-echo",
    "compressed-gain",
    "speckle-shadow",
)
#: ... and are only ever reported on these (and on the real RESECT case), never tuned on.
#: One exception, recorded so that it is not repeated unknowingly: session 31 chose (and then
#: rejected) a tie rule on ``sweep-anatomy`` seeds 1601-1648 (notes/session-31.md). Nothing
#: shipped was fitted to them, but a method for fan or partial sweeps chosen on that family
#: must move it to the tuning families first.
HELD_OUT_FAMILIES: tuple[str, ...] = tuple(n for n in FAMILIES if n not in TUNING_FAMILIES)
#: The order in which the registration's held-out report sets (seeds 6001-6042, 6501-6542,
#: 6601-6642) are simulated with ``--families`` (round-robin), so that ``usnav bench --full``
#: reproduces them case for case.
HELD_OUT_REPORT_ORDER: tuple[str, ...] = (
    "frequency-psf",
    "sos-error",
    "reverb-sidelobe",
    "miscalibrated",
    "sweep-anatomy",
    "mixed",
    "probe-geometry",
)


def family_names() -> list[str]:
    """The family names, baseline first."""
    return list(FAMILIES)


def check_family(name: str) -> Family:
    """The family of that name, or an :class:`InputError` listing the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise InputError(
            "family",
            f"unknown appearance family {name!r}",
            "choose one of " + ", ".join(FAMILIES) + " (usnav simulate --list-families)",
        ) from None


def draw_appearance(family: str, seed: int) -> Appearance:
    """Draw the appearance of case ``seed`` from ``family``.

    The same family and seed always give the same values; the draw uses its own random stream
    ``default_rng([seed, FAMILY_STREAM])``.

    Raises
    ------
    InputError
        Unknown family.
    """
    fam = check_family(family)
    values = fam.sample(np.random.default_rng([int(seed), FAMILY_STREAM]))
    return Appearance(family=fam.name, **values)
