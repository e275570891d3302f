"""B-mode ultrasound of a linear probe, simulated by acoustic ray marching (not from the MRI).

For each frame: one scanline per image column (plus sub-rays across the elevation beam width)
is marched through the *intraoperative* label volume by :func:`usnav.sim._kernels.trace_scanlines`
(interface reflection with transmitted energy carried on, frequency-dependent attenuation,
tissue-anchored speckle); the complex (IQ) echo signal is convolved with the point-spread
function (:func:`usnav.sim._kernels.psf_rows`), electronic noise is added, time-gain
compensation applied, and the envelope is log-compressed to uint8.

Image geometry (PLUS ``MF``): pixel (col, row) → Transducer frame
``x = (col - (cols-1)/2) * spacing_x`` (towards the marked side), ``y = row * spacing_y``
(depth), ``z = 0``. Row 0 lies on the transducer face.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from usnav.sim import _kernels as K
from usnav.sim.anatomy import LabelGrid
from usnav.sim.tissues import AcousticTables

#: Marching step and display-depth bin of the IQ signal, mm.
STEP_MM = 0.05
#: Scatterer cell size of the tissue-anchored scatterer field, mm.
SCATTER_CELL_MM = 0.06


@dataclass(frozen=True)
class ProbeGeometry:
    """Linear probe and image geometry.

    Attributes
    ----------
    cols, rows
        Image size in pixels (one scanline per column).
    spacing_x_mm, spacing_y_mm
        mm per pixel along a row (lateral) and along a column (depth).
    frequency_mhz
        Centre frequency.
    focus_mm
        Lateral focus depth.
    """

    cols: int = 256
    rows: int = 256
    spacing_x_mm: float = 0.15
    spacing_y_mm: float = 40.0 / 256
    frequency_mhz: float = 10.0
    focus_mm: float = 20.0

    @property
    def aperture_mm(self) -> float:
        return self.cols * self.spacing_x_mm

    @property
    def depth_mm(self) -> float:
        return self.rows * self.spacing_y_mm

    def image_to_transducer(self) -> np.ndarray:
        """4×4 pixel (col, row, 0, 1) → Transducer mm (x marked side, y depth, z = x × y).

        The z column has the mean of the two scalings, as PLUS does, so the matrix inverts.
        """
        m = np.eye(4)
        m[0, 0] = self.spacing_x_mm
        m[1, 1] = self.spacing_y_mm
        m[2, 2] = 0.5 * (self.spacing_x_mm + self.spacing_y_mm)
        m[0, 3] = -0.5 * (self.cols - 1) * self.spacing_x_mm
        return m


@dataclass(frozen=True)
class ScannerSettings:
    """Beamforming and display settings (a scanner's presets).

    Attributes
    ----------
    axial_sigma_mm
        Gaussian σ of the pulse envelope (axial resolution ≈ 2.35 σ).
    lateral_sigma_mm
        Lateral beam σ at the focus; it widens away from it (Rayleigh length ``rayleigh_mm``).
    elevation_rays, elevation_half_mm
        Sub-rays across the elevation beam and their spread.
    lateral_rays
        Sub-rays across each scanline's width (they smooth echoes of surfaces the beam grazes).
    specular_exponent
        Angular fall-off cos^m θ of a mirror-like interface echo.
    tgc_db_per_cm
        Time-gain compensation slope (displayed depth).
    scatter_gain
        Diffuse backscatter relative to the interface echoes (applied to the backscatter table).
    noise_level
        Electronic noise amplitude (before TGC), relative to the echo scale.
    dynamic_range_db
        Log compression: ``reference`` maps to 255, ``reference`` − range to 0.
    reference
        Echo amplitude shown white.
    echo_delay_mm
        How far every echo is drawn deeper than its reflector (0 = envelope centred on it;
        half the spatial pulse length = the pulse starts at the reflector).
    reverb_face_reflection, reverb_bounces
        Reverberation between the transducer face and the strongest reflector of each scanline
        (:func:`add_reverberation`): the face's reflection coefficient (0 = none) and how many
        copies (at 2, 3, ... times the reflector's depth).
    sidelobe_level, sidelobe_offset_fwhm
        Two lateral side lobes of the beam (amplitude relative to the main lobe, 0 = none) at
        ± ``sidelobe_offset_fwhm`` main-lobe FWHMs from the axis.
    compression_gamma
        Power applied to the normalised log-compressed value (1 = plain log compression).
    """

    axial_sigma_mm: float = 0.12
    lateral_sigma_mm: float = 0.22
    rayleigh_mm: float = 14.0
    elevation_rays: int = 2
    elevation_half_mm: float = 0.3
    lateral_rays: int = 2
    specular_exponent: float = 12.0
    tgc_db_per_cm: float = 8.0
    scatter_gain: float = 0.012
    noise_level: float = 1e-5
    dynamic_range_db: float = 52.0
    reference: float = 0.15
    echo_delay_mm: float = 0.0
    reverb_face_reflection: float = 0.0
    reverb_bounces: int = 0
    sidelobe_level: float = 0.0
    sidelobe_offset_fwhm: float = 1.5
    compression_gamma: float = 1.0


class UltrasoundSimulator:
    """Simulates B-mode frames of one case.

    Parameters
    ----------
    anatomy
        Intraoperative label grid (spine frame).
    texture, texture_origin, texture_spacing
        Smooth unit-variance field modulating echogenicity (spine frame grid).
    tables
        Acoustic tables (with the case's tumor backscatter).
    geometry, settings
        Probe/image geometry and scanner settings.
    seed
        Seed of the scatterer field and the electronic noise.
    """

    def __init__(
        self,
        anatomy: LabelGrid,
        texture: np.ndarray,
        texture_origin: np.ndarray,
        texture_spacing: float,
        tables: AcousticTables,
        geometry: ProbeGeometry,
        settings: ScannerSettings | None = None,
        seed: int = 0,
    ):
        self.anatomy = anatomy
        self.texture = np.ascontiguousarray(texture, dtype=np.float32)
        self.texture_origin = np.asarray(texture_origin, dtype=np.float64)
        self.texture_spacing = float(texture_spacing)
        self.tables = tables
        self.geometry = geometry
        self.settings = settings or ScannerSettings()
        self.seed = int(seed) & 0x7FFFFFFFFFFFFFFF
        g, s = geometry, self.settings
        self.backscatter = tables.backscatter * s.scatter_gain
        self.row_depth_mm = np.arange(g.rows) * g.spacing_y_mm
        beam = s.lateral_sigma_mm * np.sqrt(
            1.0 + ((self.row_depth_mm - g.focus_mm) / s.rayleigh_mm) ** 2
        )
        self.lateral_sigma_cols = beam / g.spacing_x_mm
        self.n_bins = (
            int(np.ceil((g.depth_mm + 4 * s.axial_sigma_mm + max(s.echo_delay_mm, 0.0)) / STEP_MM))
            + 2
        )
        self.n_steps = int(np.ceil(1.15 * g.depth_mm / STEP_MM)) + 4
        self.tgc = 10.0 ** (s.tgc_db_per_cm * self.row_depth_mm / 10.0 / 20.0)
        elevation = (
            np.linspace(-s.elevation_half_mm, s.elevation_half_mm, s.elevation_rays)
            if s.elevation_rays > 1
            else np.zeros(1)
        )
        # lateral sub-rays split the column width evenly (a scanline is a beam, not a line)
        lateral = (np.arange(s.lateral_rays) + 0.5) / s.lateral_rays - 0.5
        lat, elev = np.meshgrid(lateral * g.spacing_x_mm, elevation, indexing="ij")
        self.sub_offsets = np.stack([lat.ravel(), elev.ravel()], axis=1)  # (n_sub, 2) mm

    def scanline_origins(self, transducer_to_spine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scanline start points (cols, sub-rays, 3) and the beam direction (3,), spine mm."""
        g = self.geometry
        x = (np.arange(g.cols) - 0.5 * (g.cols - 1)) * g.spacing_x_mm
        n_sub = len(self.sub_offsets)
        local = np.zeros((g.cols, n_sub, 4))
        local[..., 0] = x[:, None] + self.sub_offsets[None, :, 0]
        local[..., 2] = self.sub_offsets[None, :, 1]
        local[..., 3] = 1.0
        world = local @ transducer_to_spine.T
        direction = transducer_to_spine[:3, 1] / np.linalg.norm(transducer_to_spine[:3, 1])
        return np.ascontiguousarray(world[..., :3]), np.ascontiguousarray(direction)

    def iq(self, transducer_to_spine: np.ndarray) -> np.ndarray:
        """The raw complex echo signal per scanline, (cols, bins) at ``STEP_MM`` display depth."""
        origins, direction = self.scanline_origins(transducer_to_spine)
        t = self.tables
        rf = np.zeros((self.geometry.cols, self.n_bins), dtype=np.complex128)
        K.trace_scanlines(
            self.anatomy.labels,
            self.anatomy.origin,
            self.anatomy.spacing,
            self.texture,
            self.texture_origin,
            self.texture_spacing,
            t.impedance,
            t.speed,
            t.attenuation,
            self.backscatter,
            t.density,
            t.texture_sigma,
            t.roughness,
            origins,
            direction,
            STEP_MM,
            self.n_steps,
            STEP_MM,
            self.geometry.frequency_mhz,
            self.settings.specular_exponent,
            SCATTER_CELL_MM,
            self.seed,
            rf,
        )
        s = self.settings
        if s.reverb_face_reflection > 0.0 and s.reverb_bounces > 0:
            add_reverberation(rf, s.reverb_face_reflection, s.reverb_bounces)
        return rf

    def envelope(self, transducer_to_spine: np.ndarray, frame_index: int = 0) -> np.ndarray:
        """The echo envelope after TGC, float (rows, cols), before log compression."""
        g, s = self.geometry, self.settings
        rf = self.iq(transducer_to_spine)
        pix = np.empty((g.rows, g.cols), dtype=np.complex128)
        # an echo trailing its reflector by d is the envelope centred d deeper: sample the
        # signal d shallower
        K.psf_rows(
            rf,
            STEP_MM,
            self.row_depth_mm - s.echo_delay_mm if s.echo_delay_mm else self.row_depth_mm,
            s.axial_sigma_mm,
            self.lateral_sigma_cols,
            pix,
        )
        if s.sidelobe_level > 0.0:
            pix = add_sidelobes(
                pix, s.sidelobe_level, s.sidelobe_offset_fwhm * 2.3548 * self.lateral_sigma_cols
            )
        rng = np.random.default_rng([self.seed, 7, frame_index])
        noise = rng.standard_normal((2, g.rows, g.cols))
        pix += s.noise_level * (noise[0] + 1j * noise[1])
        return np.abs(pix) * self.tgc[:, None]

    def frame(self, transducer_to_spine: np.ndarray, frame_index: int = 0) -> np.ndarray:
        """One B-mode frame, uint8 (rows, cols), for the transducer pose in the spine frame."""
        s = self.settings
        envelope = self.envelope(transducer_to_spine, frame_index)
        return log_compress(envelope, s.reference, s.dynamic_range_db, s.compression_gamma)


def log_compress(
    envelope: np.ndarray, reference: float, dynamic_range_db: float, gamma: float = 1.0
) -> np.ndarray:
    """Envelope → uint8: 20·log10(env/reference) mapped from −range..0 dB to 0..255, then (if
    ``gamma`` ≠ 1) the normalised value v ∈ [0, 1] shown as v^gamma."""
    db = 20.0 * np.log10(np.maximum(envelope, 1e-12) / reference)
    if gamma == 1.0:
        return np.clip((db + dynamic_range_db) / dynamic_range_db * 255.0 + 0.5, 0, 255).astype(
            np.uint8
        )
    v = np.clip((db + dynamic_range_db) / dynamic_range_db, 0.0, 1.0)
    return (v**gamma * 255.0 + 0.5).astype(np.uint8)


def add_reverberation(rf: np.ndarray, face_reflection: float, bounces: int) -> None:
    """Add transducer-face reverberations of each scanline's strongest echo (in place).

    The echo of the strongest reflector at depth d arrives with amplitude a = r·T(d) (its
    reflection coefficient times the round-trip transmission of the path, for a unit pulse).
    A fraction R (``face_reflection``) of it is sent back in by the transducer face, travels
    the same path, is reflected again and returns at 2d with amplitude a·(R·a), the next at 3d
    with a·(R·a)², and so on: strong reflectors behind fluid reverberate, weak or deep ones
    behind attenuating tissue do not. ``rf`` is (lines, bins) in display-depth bins from the
    face.
    """
    n_lines, n_bins = rf.shape
    b = np.argmax(np.abs(rf), axis=1)
    lines = np.arange(n_lines)
    # the echo is spread over a few bins (fractional deposits of one phase): copy those
    offsets = np.arange(-2, 3)
    src = np.clip(b[:, None] + offsets, 0, n_bins - 1)
    echo = rf[lines[:, None], src]
    total = echo.sum(axis=1)
    factor = face_reflection * np.abs(total)  # R·a per extra round trip
    unit = np.exp(1j * np.angle(total))
    for k in range(2, bounces + 2):
        target = k * b[:, None] + offsets
        ok = (target >= 0) & (target < n_bins) & (b[:, None] > 2)
        copy = echo * ((factor * unit) ** (k - 1))[:, None]
        rf[np.broadcast_to(lines[:, None], ok.shape)[ok], target[ok]] += copy[ok]


def add_sidelobes(pix: np.ndarray, level: float, offset_cols: np.ndarray) -> np.ndarray:
    """The beamformed image with two lateral side lobes: each pixel also receives ``level``
    times the signal ``offset_cols[row]`` scanlines to either side (rounded to whole lines)."""
    out = pix.copy()
    shifts = np.maximum(np.rint(offset_cols).astype(int), 1)
    n_cols = pix.shape[1]
    for d in np.unique(shifts):
        rows = shifts == d
        if d >= n_cols:
            continue
        out[rows, d:] += level * pix[rows, :-d]
        out[rows, :-d] += level * pix[rows, d:]
    return out
