"""Appearance families: each changes what it claims to change, measured on small phantoms and
small cases; the draws are recorded and reproducible."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from sim_helpers import TINY, pixel_labels

from usnav.sim import build_case, make_options
from usnav.sim.anatomy import LabelGrid, random_anatomy
from usnav.sim.case import appearance_settings, appearance_tables
from usnav.sim.families import (
    AXIAL_SIGMA_10MHZ_MM,
    FAMILIES,
    PULSE_LENGTH_SIGMAS,
    SWEEP_PATTERNS,
    Appearance,
    draw_appearance,
)
from usnav.sim.sweep import plan_sweep
from usnav.sim.tissues import TUMOR_BACKSCATTER, Tissue, acoustic_tables
from usnav.sim.ultrasound import (
    ProbeGeometry,
    ScannerSettings,
    UltrasoundSimulator,
    add_sidelobes,
    log_compress,
)

T = Tissue
H = 0.25  # phantom voxel, mm


def layered(layers: list[tuple[float, Tissue]], width_mm: float = 12.0, depth_mm: float = 40.0):
    """A LabelGrid whose y axis is depth: (start depth mm, tissue) layers."""
    n = int(width_mm / H)
    ny = int(depth_mm / H)
    labels = np.zeros((n, ny, n), np.uint8)
    y = np.arange(ny) * H
    for start, tissue in layers:
        labels[:, y >= start, :] = int(tissue)
    return LabelGrid(labels, np.zeros(3), H)


def simulator(
    grid: LabelGrid,
    appearance: Appearance = Appearance(),
    *,
    frequency_mhz: float = 10.0,
    cols: int = 16,
    rows: int = 400,
    depth_mm: float = 20.0,
    width_mm: float = 2.4,
    scatter: bool = True,
) -> UltrasoundSimulator:
    tables = appearance_tables(0.3, appearance)
    if not scatter:
        tables.backscatter[:] = 0.0
    geometry = ProbeGeometry(
        cols=cols,
        rows=rows,
        spacing_x_mm=width_mm / cols,
        spacing_y_mm=depth_mm / rows,
        frequency_mhz=frequency_mhz,
        focus_mm=depth_mm / 2,
    )
    settings = appearance_settings(appearance, frequency_mhz, 1)
    texture = np.zeros((2, 2, 2), np.float32)
    return UltrasoundSimulator(grid, texture, np.zeros(3), 1.0, tables, geometry, settings, seed=3)


def pose(grid: LabelGrid, start_mm: float = 0.3) -> np.ndarray:
    """Transducer at the top centre of the phantom, beam along +y, array along x."""
    m = np.eye(4)
    centre = grid.labels.shape[0] * H / 2
    m[:3, 3] = [centre, start_mm, centre]
    return m


def echo_depth(sim: UltrasoundSimulator, grid: LabelGrid, near_mm: float) -> float:
    """Depth (mm) of the envelope peak near ``near_mm`` (mean over columns, parabolic fit)."""
    env = sim.envelope(pose(grid)).mean(axis=1)
    dy = sim.geometry.spacing_y_mm
    lo, hi = int((near_mm - 1.5) / dy), int((near_mm + 1.5) / dy)
    i = lo + int(np.argmax(env[lo:hi]))
    a, b, c = np.log(env[i - 1 : i + 2])
    return (i + 0.5 * (a - c) / (a - 2 * b + c)) * dy


#: A small built case: a few frames of small images on a coarse anatomy grid (~0.5 s).
TINY_CASE = {**TINY, "frames": 4, "image_rows": 64}


def built(family: str, seed: int, appearance: Appearance | None = None, **options):
    """``build_case`` of a small case of ``family``; with ``appearance``, that appearance
    instead of the family's draw (the same patient, sweep and speckle: their streams do not
    depend on it)."""
    import usnav.sim.case as case_module

    draw = case_module.draw_appearance
    if appearance is not None:
        case_module.draw_appearance = lambda name, s: appearance
    try:
        return build_case(seed, make_options(family=family, **{**TINY_CASE, **options}))
    finally:
        case_module.draw_appearance = draw


def seed_where(family: str, test) -> int:
    """The first seed whose draw of ``family`` passes ``test``."""
    return next(s for s in range(200) if test(draw_appearance(family, s)))


# --- baseline ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 7, 123])
def test_baseline_draws_nothing_and_builds_the_tuned_simulator(seed):
    assert draw_appearance("baseline", seed) == Appearance()
    assert appearance_settings(Appearance(), 10.0, 2) == ScannerSettings(elevation_rays=2)
    for echo in TUMOR_BACKSCATTER.values():
        ours, plain = appearance_tables(echo, Appearance()), acoustic_tables(echo)
        for f in dataclasses.fields(plain):
            np.testing.assert_array_equal(getattr(ours, f.name), getattr(plain, f.name))


# --- draws: recorded, reproducible, within the stated ranges -----------------------------------


@pytest.mark.parametrize("name", [n for n in FAMILIES if n != "baseline"])
def test_draws_are_reproducible_per_seed_and_differ_between_seeds(name):
    a, again, other = draw_appearance(name, 5), draw_appearance(name, 5), draw_appearance(name, 6)
    assert a == again
    assert a.family == name
    assert a != other
    assert a != Appearance(family=name)  # it changes something


#: What each family draws, with the range docs/simulator.md gives (log-uniform where ``True``);
#: written out here, not read from usnav.sim.families, so that a family that stops drawing a
#: value (or draws it elsewhere) fails. ``sweep-anatomy``'s pattern-specific values are below.
DOCUMENTED_DRAWS: dict[str, dict[str, tuple[float, float, bool]]] = {
    "trailing-echo": {
        "echo_delay_pulses": (0.4, 0.6, False),
        "specular_exponent": (3.0, 40.0, True),
        "roughness_offset": (-0.1, 0.45, False),
    },
    "frequency-psf": {"frequency_mhz": (7.0, 15.0, False)},
    "probe-geometry": {
        "depth_mm": (32.0, 50.0, False),
        "aperture_mm": (25.0, 45.0, False),
        "focus_fraction": (0.3, 0.75, False),
    },
    "compressed-gain": {
        "gain_db": (-8.0, 8.0, False),
        "tgc_db_per_cm": (2.0, 14.0, False),
        "dynamic_range_db": (35.0, 75.0, False),
        "compression_gamma": (0.6, 1.7, True),
    },
    "sos-error": {
        "saline_speed_m_s": (1480.0, 1580.0, False),
        "csf_speed_m_s": (1480.0, 1580.0, False),
    },
    "reverb-sidelobe": {
        "reverb_face_reflection": (0.3, 0.8, False),
        "reverb_bounces": (1, 3, False),
        "sidelobe_db": (-28.0, -14.0, False),
        "sidelobe_offset_fwhm": (1.2, 2.0, False),
    },
    "speckle-shadow": {
        "scatter_gain_scale": (0.5, 2.0, True),
        "scatterer_density_scale": (0.01, 1.0, True),
        "bone_attenuation_scale": (0.05, 1.5, True),
    },
    "miscalibrated": {
        "calibration_rotation_deg": (0.3, 1.0, False),
        "calibration_translation_mm": (0.3, 1.0, False),
        "jitter_mm": (0.1, 0.5, False),
        "jitter_deg": (0.05, 0.3, False),
        "unrecorded_lag_s": (-0.04, 0.04, False),
    },
    "sweep-anatomy": {
        "levels": (2, 4, False),
        "laminectomy_levels": (1, 4, False),
        "vertebra_scale": (0.85, 1.2, False),
        "tumor_length_mm": (6.0, 35.0, False),
        "tumor_backscatter": (0.07, 0.6, True),
        "cord_shift_mm": (0.5, 3.0, False),
    },
}
SWEEP_DRAWS = {
    "sagittal": {"sagittal_half_width_mm": (5.0, 10.0, False)},
    "fan": {"fan_half_angle_deg": (12.0, 25.0, False)},
    "partial": {"coverage": (0.35, 0.65, False)},
}


def check_draws(values: dict[str, list[float]], ranges: dict[str, tuple[float, float, bool]]):
    """Every value inside its documented range, and the draws spread over at least half of it
    (on a log scale where log-uniform): a value the family no longer draws sits at the
    baseline's default and fails."""
    for key, (lo, hi, log) in ranges.items():
        v = np.array(values[key], dtype=float)
        assert v.min() >= lo - 1e-9 and v.max() <= hi + 1e-9, (key, v.min(), v.max())
        f = np.log if log else (lambda x: x)
        assert np.ptp(f(v)) >= 0.5 * (f(hi) - f(lo)), (key, v.min(), v.max())


@pytest.mark.parametrize("name", list(DOCUMENTED_DRAWS))
def test_each_family_draws_every_value_it_documents_over_its_whole_range(name):
    draws = [draw_appearance(name, seed).as_dict() for seed in range(80)]
    check_draws({k: [d[k] for d in draws] for k in DOCUMENTED_DRAWS[name]}, DOCUMENTED_DRAWS[name])
    if name == "sweep-anatomy":
        assert {d["sweep_pattern"] for d in draws} == set(SWEEP_PATTERNS)
        for pattern, ranges in SWEEP_DRAWS.items():
            chosen = [d for d in draws if d["sweep_pattern"] == pattern]
            check_draws({k: [d[k] for d in chosen] for k in ranges}, ranges)
        partial = [d for d in draws if d["sweep_pattern"] == "partial"]
        centres = np.array([d["coverage_centre"] for d in partial])
        assert np.ptp(centres) > 0.15  # placed at random, not always over the tumor


def test_drawn_values_stay_in_the_documented_ranges():
    for seed in range(60):
        for name in FAMILIES:
            a = draw_appearance(name, seed)
            assert 7.0 <= (a.frequency_mhz or 10.0) <= 15.0
            assert 1480.0 <= a.saline_speed_m_s <= 1580.0
            assert 1480.0 <= a.csf_speed_m_s <= 1580.0
            assert a.calibration_rotation_deg <= 1.0 and a.calibration_translation_mm <= 1.0
            assert a.cord_shift_mm is None or 0.0 <= a.cord_shift_mm <= 3.0
            assert a.sweep_pattern in SWEEP_PATTERNS
            assert a.echo_delay_pulses == 0.0 or 0.4 <= a.echo_delay_pulses <= 0.6


# --- echo formation -----------------------------------------------------------------------------


def test_trailing_echo_draws_the_interface_half_a_pulse_deeper():
    grid = layered([(0, T.SALINE), (8, T.BONE)])
    centred = echo_depth(simulator(grid, scatter=False), grid, 8)
    trailing = Appearance(echo_delay_pulses=0.5)
    moved = echo_depth(simulator(grid, trailing, scatter=False), grid, 8)
    half_pulse = 0.5 * PULSE_LENGTH_SIGMAS * AXIAL_SIGMA_10MHZ_MM  # 0.24 mm at 10 MHz
    assert moved - centred == pytest.approx(half_pulse, abs=0.02)


def test_diffuse_reflection_keeps_an_oblique_interface_visible():
    """Tilted 30°: a mirror-like interface (large m, no roughness) echoes far less than a
    rough one."""
    grid = layered([(0, T.SALINE), (8, T.MUSCLE)])
    m = pose(grid)
    m[:3, :3] = Rotation.from_euler("z", 30, degrees=True).as_matrix()

    def level(a: Appearance) -> float:
        sim = simulator(grid, a, scatter=False)
        return float(sim.envelope(m).max())

    mirror = level(Appearance(specular_exponent=40.0, roughness_offset=-0.2))
    rough = level(Appearance(specular_exponent=40.0, roughness_offset=0.5))
    assert rough > 5 * mirror


def reverb_levels(layers, face: float, depth_mm: float) -> tuple[float, float, float, float]:
    """Envelope peaks (TGC off) at 1, 2 and 3 × the reflector's depth with reverberation of
    face reflection ``face``, and at 2 × without it."""
    grid = layered(layers)
    kw = dict(scatter=False, depth_mm=30.0, rows=600)
    with_r = Appearance(reverb_face_reflection=face, reverb_bounces=2, tgc_db_per_cm=0.0)
    env = simulator(grid, with_r, **kw).envelope(pose(grid)).mean(axis=1)
    env0 = simulator(grid, Appearance(tgc_db_per_cm=0.0), **kw).envelope(pose(grid)).mean(axis=1)
    dy = 30.0 / 600
    near = slice(int((depth_mm - 1) / dy), int((depth_mm + 1) / dy))
    d = (near.start + np.argmax(env[near])) * dy

    def at(e: np.ndarray, k: int) -> float:
        return float(e[int((k * d - 1) / dy) : int((k * d + 1) / dy)].max())

    return at(env, 1), at(env, 2), at(env, 3), at(env0, 2)


def test_reverberation_repeats_a_strong_echo_at_two_and_three_times_its_depth():
    """Bone behind saline: the echo a ≈ r (no loss in saline) comes back at 2d as a·(R·a) and
    at 3d as a·(R·a)²."""
    primary, second, third, without = reverb_levels([(0, T.SALINE), (8, T.BONE)], 0.6, 8.0)
    z = acoustic_tables(0.3).impedance
    r = (z[T.BONE] - z[T.SALINE]) / (z[T.BONE] + z[T.SALINE])
    assert second / primary == pytest.approx(0.6 * r, rel=0.1)
    assert third / primary == pytest.approx((0.6 * r) ** 2, rel=0.15)
    assert without < 0.01 * primary


def test_reverberation_fades_behind_attenuating_tissue():
    """The same bone behind 6 mm of muscle: each extra round trip loses what the path loses,
    so the reverberation relative to the echo is weaker by the echo's own loss."""
    clear = reverb_levels([(0, T.SALINE), (8, T.BONE)], 0.6, 8.0)
    lossy = reverb_levels([(0, T.SALINE), (2, T.MUSCLE), (8, T.BONE)], 0.6, 8.0)
    path_loss = lossy[0] / clear[0]  # the echo through muscle against through saline
    assert path_loss < 0.3  # ~ 2·α·f·6 mm = 12 dB
    assert (lossy[1] / lossy[0]) / (clear[1] / clear[0]) == pytest.approx(path_loss, rel=0.15)


def test_side_lobes_copy_the_beam_at_the_stated_offset_and_level():
    pix = np.zeros((3, 41), complex)
    pix[:, 20] = 1.0
    out = add_sidelobes(pix, 0.1, np.array([4.0, 6.4, 9.0]))
    for row, d in enumerate((4, 6, 9)):
        expected = np.zeros(41)
        expected[20] = 1.0
        expected[20 - d] = expected[20 + d] = 0.1
        np.testing.assert_allclose(np.abs(out[row]), expected)


def test_side_lobes_spread_an_edge_beyond_the_main_lobe():
    """Bone under half the aperture: with side lobes, scanlines over saline ~2 FWHM from the
    edge receive the bone's echo at about the side-lobe level."""
    grid = layered([(0, T.SALINE), (8, T.BONE)])
    grid.labels[: grid.labels.shape[0] // 2, :, :] = int(T.SALINE)
    a = Appearance(sidelobe_db=-20.0, sidelobe_offset_fwhm=3.0)  # ~1.6 mm at 8 mm depth
    kw = dict(scatter=False, cols=64, width_mm=9.6)
    env = simulator(grid, a, **kw).envelope(pose(grid))
    env0 = simulator(grid, **kw).envelope(pose(grid))
    dy = 20.0 / 400
    band = slice(int(7.5 / dy), int(8.8 / dy))
    lateral, lateral0 = env[band].max(axis=0), env0[band].max(axis=0)
    bright = np.median(lateral0[40:])
    # columns 16..23 lie over saline, >= 1.35 mm (6 σ) from the edge at column 32
    assert lateral0[16:24].max() < 0.01 * bright
    assert lateral[16:24].max() == pytest.approx(0.1 * bright, rel=0.35)


# --- frequency and PSF --------------------------------------------------------------------------


def correlation_length(env: np.ndarray, axis: int) -> float:
    """Width (samples) at which the speckle envelope's autocorrelation falls to 1/2."""
    x = env - env.mean(axis=axis, keepdims=True)
    n = x.shape[axis]
    f = np.fft.rfft(x, n=2 * n, axis=axis)
    ac = np.fft.irfft(np.abs(f) ** 2, axis=axis)
    ac = ac.mean(axis=1 - axis) if axis == 0 else ac.mean(axis=0)
    ac = ac[:n] / ac[0]
    k = int(np.argmax(ac < 0.5))
    return k - 1 + (ac[k - 1] - 0.5) / (ac[k - 1] - ac[k])


def echo_fwhm(env: np.ndarray, dy: float) -> float:
    """Full width at half maximum (mm) of the single peak of a depth profile."""
    above = np.flatnonzero(env >= env.max() / 2)
    return (above[-1] - above[0] + 1) * dy


def test_lower_frequency_widens_the_echo_and_the_speckle():
    """Axial and lateral resolution ∝ wavelength ∝ 1/f: halving the frequency doubles the
    width of an interface echo and the lateral size of the speckle grain. The axial speckle
    grain widens less (its floor is the 0.06 mm scatterer cell and the 0.05 mm sampling)."""
    speckle = layered([(0, T.MUSCLE)])
    wall = layered([(0, T.SALINE), (8, T.BONE)])
    widths = {}
    for f in (7.5, 15.0):
        a = Appearance(frequency_mhz=f)
        sim = simulator(speckle, a, frequency_mhz=f, cols=96, rows=300, width_mm=9.6, depth_mm=8)
        env = sim.envelope(pose(speckle))[50:250]
        sharp = simulator(wall, a, frequency_mhz=f, scatter=False, rows=800)
        profile = sharp.envelope(pose(wall)).mean(axis=1)
        widths[f] = (
            echo_fwhm(profile, sharp.geometry.spacing_y_mm),
            correlation_length(env, 0),
            correlation_length(env, 1),
        )
    echo, axial, lateral = np.divide(widths[7.5], widths[15.0])
    assert echo == pytest.approx(2.0, rel=0.1)
    assert lateral == pytest.approx(2.0, rel=0.2)
    assert axial > 1.3


def test_the_drawn_frequency_reaches_the_built_case():
    """frequency-psf: the case's probe and PSF are at the drawn frequency (what the kernels
    attenuate with and what the PSF widths follow), not at the option's 10 MHz."""
    seed = seed_where("frequency-psf", lambda a: a.frequency_mhz < 8.5)
    case = built("frequency-psf", seed)
    f = case.appearance.frequency_mhz
    assert case.options.frequency_mhz == f and case.geometry.frequency_mhz == f
    s = case.simulator.settings
    assert s.axial_sigma_mm == pytest.approx(AXIAL_SIGMA_10MHZ_MM * 10.0 / f)
    assert s.lateral_sigma_mm == pytest.approx(0.22 * 10.0 / f)
    # the beam at the focus is as wide as the frequency says
    assert case.simulator.lateral_sigma_cols.min() * case.geometry.spacing_x_mm == pytest.approx(
        0.22 * 10.0 / f
    )


# --- speed of sound -----------------------------------------------------------------------------


def test_speed_of_sound_in_saline_scales_the_depth_an_interface_is_drawn_at():
    grid = layered([(0, T.SALINE), (15, T.BONE)])
    true_depth = 15 - 0.125 - 0.3  # voxel boundary; the transducer sits 0.3 mm in
    for c in (1480.0, 1580.0):
        a = Appearance(saline_speed_m_s=c)
        shown = echo_depth(simulator(grid, a, scatter=False), grid, 15.0 * 1540 / c)
        assert shown == pytest.approx(true_depth * 1540.0 / c, abs=0.05)


def test_speed_of_sound_in_csf_moves_what_lies_behind_it():
    grid = layered([(0, T.SALINE), (4, T.CSF), (10, T.BONE)])
    slow = echo_depth(simulator(grid, Appearance(csf_speed_m_s=1480.0), scatter=False), grid, 10)
    fast = echo_depth(simulator(grid, Appearance(csf_speed_m_s=1580.0), scatter=False), grid, 10)
    assert slow - fast == pytest.approx(6.0 * 1540 * (1 / 1480 - 1 / 1580), abs=0.04)


# --- gain, TGC, dynamic range, compression ------------------------------------------------------


@pytest.fixture(scope="module")
def speckle_envelope():
    grid = layered([(0, T.MUSCLE)])
    sim = simulator(grid, cols=64, rows=200, depth_mm=20.0, width_mm=6.4)
    return sim, sim.envelope(pose(grid))


def test_gain_shifts_the_grey_levels_by_gain_over_dynamic_range(speckle_envelope):
    sim, env = speckle_envelope
    s = sim.settings
    base = log_compress(env, s.reference, s.dynamic_range_db).astype(float)
    a = appearance_settings(Appearance(gain_db=6.0), 10.0, 1)
    brighter = log_compress(env, a.reference, a.dynamic_range_db).astype(float)
    inside = (base > 5) & (brighter < 250)
    shift = np.median(brighter[inside] - base[inside])
    assert shift == pytest.approx(6.0 / 52.0 * 255, abs=1.0)


def test_dynamic_range_scales_the_grey_level_spread(speckle_envelope):
    _, env = speckle_envelope
    ref = np.percentile(env, 99.9)
    narrow = log_compress(env, ref, 35.0).astype(float)
    wide = log_compress(env, ref, 70.0).astype(float)
    inside = narrow > 5
    assert np.std(narrow[inside]) / np.std(wide[inside]) == pytest.approx(2.0, rel=0.1)


def test_compression_curve_is_the_stated_power(speckle_envelope):
    sim, env = speckle_envelope
    s = sim.settings
    plain = log_compress(env, s.reference, s.dynamic_range_db).astype(float)
    db = 20 * np.log10(np.maximum(env, 1e-12) / s.reference)
    v = np.clip((db + s.dynamic_range_db) / s.dynamic_range_db, 0, 1)
    for gamma in (0.6, 1.7):
        curved = log_compress(env, s.reference, s.dynamic_range_db, gamma).astype(float)
        np.testing.assert_allclose(curved, 255 * v**gamma, atol=0.51)
    dark = plain < 128
    lifted = log_compress(env, s.reference, s.dynamic_range_db, 0.6)
    assert lifted[dark].mean() > plain[dark].mean() + 10


def test_tgc_slope_changes_the_echo_level_gradient_with_depth():
    grid = layered([(0, T.MUSCLE)])

    def slope_db_per_cm(tgc: float) -> float:
        sim = simulator(grid, Appearance(tgc_db_per_cm=tgc), cols=64, rows=200, width_mm=6.4)
        env = sim.envelope(pose(grid))
        depth_cm = np.arange(env.shape[0]) * sim.geometry.spacing_y_mm / 10
        sel = (depth_cm > 0.3) & (depth_cm < 1.8)
        level_db = 10 * np.log10((env[sel] ** 2).mean(axis=1))
        return np.polyfit(depth_cm[sel], level_db, 1)[0]

    assert slope_db_per_cm(14.0) - slope_db_per_cm(2.0) == pytest.approx(12.0, abs=0.3)


def test_a_compressed_gain_case_shows_its_frames_through_the_drawn_display_chain():
    """The built case's frames are its envelope shown with the drawn gain, dynamic range and
    compression curve, and the envelope carries the drawn TGC slope."""
    seed = seed_where(
        "compressed-gain",
        lambda a: abs(a.dynamic_range_db - 52) > 8 and abs(np.log(a.compression_gamma)) > 0.2,
    )
    case = built("compressed-gain", seed)
    a, sim = case.appearance, case.simulator
    pose = case.sweep.image_poses[1]
    env, frame = sim.envelope(pose, 1), sim.frame(pose, 1).astype(float)
    reference = ScannerSettings().reference / 10.0 ** (a.gain_db / 20.0)
    v = np.clip((20 * np.log10(env / reference) + a.dynamic_range_db) / a.dynamic_range_db, 0, 1)
    np.testing.assert_allclose(frame, 255 * v**a.compression_gamma, atol=0.51)
    plain = log_compress(env, reference, 52.0).astype(float)
    seen = (frame > 0) | (plain > 0)
    assert np.abs(frame - plain)[seen].mean() > 10  # not the baseline's chain
    depth_cm = sim.row_depth_mm / 10
    np.testing.assert_allclose(20 * np.log10(sim.tgc), a.tgc_db_per_cm * depth_cm, atol=1e-9)


# --- speckle and shadows ------------------------------------------------------------------------


def test_speckle_shadow_at_its_sparsest_gives_spiky_non_rayleigh_speckle():
    """Fully developed speckle has an envelope contrast std/mean ≈ 0.52 (Rayleigh); at the
    family's smallest drawn density a resolution cell of the cord holds about one scatterer, so
    the speckle is sparse bright dots: contrast more than twice Rayleigh's."""
    lowest = min(draw_appearance("speckle-shadow", s).scatterer_density_scale for s in range(100))
    grid = layered([(0, T.CORD)])
    kw = dict(cols=64, rows=200, depth_mm=10.0, width_mm=6.4)
    full = simulator(grid, **kw).envelope(pose(grid))[40:180]
    sparse = simulator(grid, Appearance(scatterer_density_scale=lowest), **kw)
    env = sparse.envelope(pose(grid))[40:180]

    def contrast(e: np.ndarray) -> float:
        e = e / e.mean(axis=1, keepdims=True)  # remove the depth trend
        return float(e.std())

    assert contrast(full) == pytest.approx(0.52, abs=0.08)
    assert contrast(env) > 2.0 * contrast(full)


def test_a_speckle_shadow_case_scales_its_speckle_by_the_drawn_gain():
    """Scattering adds linearly to the interface echoes, so the built case's speckle part of
    the echo signal is exactly ``scatter_gain_scale`` times the baseline gain's; and the drawn
    density and bone attenuation are in the case's tissue tables."""
    seed = seed_where("speckle-shadow", lambda a: abs(np.log(a.scatter_gain_scale)) > 0.4)
    case = built("speckle-shadow", seed)
    a, sim = case.appearance, case.simulator
    pose = case.sweep.image_poses[1]

    def with_gain(gain: float) -> np.ndarray:
        settings = dataclasses.replace(sim.settings, scatter_gain=gain)
        other = UltrasoundSimulator(
            case.intraop,
            sim.texture,
            sim.texture_origin,
            sim.texture_spacing,
            sim.tables,
            sim.geometry,
            settings,
            seed=sim.seed,
        )
        return other.iq(pose)

    no_speckle = with_gain(0.0)
    ours = sim.iq(pose) - no_speckle
    baseline_gain = with_gain(ScannerSettings().scatter_gain) - no_speckle
    assert np.abs(baseline_gain).max() > 0
    np.testing.assert_allclose(ours, a.scatter_gain_scale * baseline_gain, rtol=1e-9, atol=1e-15)
    plain = acoustic_tables(sim.tables.backscatter[T.TUMOR])
    assert sim.tables.density[T.CORD] == pytest.approx(a.scatterer_density_scale)
    assert sim.tables.attenuation[T.BONE] == pytest.approx(
        a.bone_attenuation_scale * plain.attenuation[T.BONE]
    )


def test_bone_attenuation_sets_how_deep_the_shadow_reaches():
    """Behind 1 mm of bone, a quarter of the attenuation lets the echoes through by
    2·(1 - 1/4)·α·f·1 mm dB (round trip)."""
    grid = layered([(0, T.SALINE), (6, T.MUSCLE), (8, T.BONE), (9, T.MUSCLE)])
    weak = Appearance(bone_attenuation_scale=0.25)

    def behind(a: Appearance) -> float:
        rf = simulator(grid, a).iq(pose(grid))
        return float(np.abs(rf[:, int(10.5 / 0.05) : int(12 / 0.05)]).mean())

    gained_db = 20 * np.log10(behind(weak) / behind(Appearance()))
    alpha = acoustic_tables(0.3).attenuation[T.BONE]
    assert gained_db == pytest.approx(2 * 0.75 * alpha * 10.0 * 0.1, abs=2.0)


def test_speckle_shadow_range_sets_how_deep_a_vertebral_shadow_reaches():
    """On a built case, below the posterior surface of a vertebral body (bone under the beam
    for >= 5 mm): at the family's smallest bone attenuation the marrow's echoes are still seen
    2-4 mm (displayed) below the surface echo; at its largest the shadow starts at the surface
    echo."""
    draws = [draw_appearance("speckle-shadow", s).bone_attenuation_scale for s in range(100)]
    options = dict(frames=6, image_cols=48, image_rows=128)
    grey = {}
    for scale in (min(draws), max(draws)):
        case = built("speckle-shadow", 3, Appearance(bone_attenuation_scale=scale), **options)
        dy = case.geometry.spacing_y_mm
        below = []
        for i in range(len(case.sweep.image_poses)):
            frame = case.simulator.frame(case.sweep.image_poses[i], i).astype(float)
            bone = np.isin(pixel_labels(case, i), (T.BONE, T.MARROW))
            for col in range(frame.shape[1]):
                rows = np.flatnonzero(bone[:, col])
                top = rows[0] if len(rows) else 0
                if 10 < top < frame.shape[0] - 5 / dy and bone[top : top + int(5 / dy), col].all():
                    below.append(frame[top + int(2 / dy) : top + int(4 / dy), col])
        assert len(below) > 20
        grey[scale] = float(np.mean(below))
    thin, thick = grey[min(draws)], grey[max(draws)]
    assert thick < 10  # a full shadow
    assert thin > 40  # echoes from inside the bone


# --- sweep patterns -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def anatomy():
    return random_anatomy(
        np.random.default_rng(4),
        levels=3,
        laminectomy_levels=2,
        tumor_length_mm=(12.0, 12.0),
        shift_mm=(1.0, 1.0),
        echogenicity="hyperechoic",
        cyst="no",
    )


def sweep(anat, pattern: str, **kw):
    return plan_sweep(
        anat,
        ProbeGeometry(),
        np.random.default_rng(9),
        n_frames=60,
        frame_rate_hz=30.0,
        sweep_length_mm=None,
        tracker_lag_s=0.0,
        jitter_mm=0.0,
        jitter_deg=0.0,
        pattern=pattern,
        **kw,
    )


def test_sweep_patterns_change_the_frame_normals_and_the_path(anatomy):
    lo, hi = anatomy.window
    trans = sweep(anatomy, "transverse")
    normals = trans.image_poses[:, :3, 2]  # the image plane's normal (transducer z)
    assert np.abs(normals[:, 2]).min() > 0.95  # plane across the cord
    assert np.ptp(trans.image_poses[:, 2, 3]) > 0.6 * (hi - lo)

    sag = sweep(anatomy, "sagittal", sagittal_half_width_mm=7.0)
    normals = sag.image_poses[:, :3, 2]
    assert np.abs(normals[:, 0]).min() > 0.95  # plane along the cord
    assert np.abs(sag.image_poses[:, :3, 0][:, 2]).min() > 0.95  # the array along z
    assert np.ptp(sag.image_poses[:, 0, 3]) > 12.0  # slides across it
    assert np.ptp(sag.image_poses[:, 2, 3]) < 3.0

    fan = sweep(anatomy, "fan", fan_half_angle_deg=20.0)
    first, last = fan.image_poses[0, :3, 2], fan.image_poses[-1, :3, 2]
    swept = np.degrees(np.arccos(np.clip(abs(first @ last), -1, 1)))
    assert swept == pytest.approx(40.0, abs=8.0)  # rocked through ± 20°
    assert np.ptp(fan.image_poses[:, 2, 3]) < 4.0  # from one place

    part = sweep(anatomy, "partial", coverage=0.4, coverage_centre=0.3)
    z = part.image_poses[:, 2, 3]
    assert np.ptp(z) == pytest.approx(0.4 * (hi - lo), abs=2.0)
    assert np.mean(z) == pytest.approx(lo + 0.3 * (hi - lo), abs=2.0)


# --- anatomy and calibration, on built cases -----------------------------------------------------

SMALL = dict(frames=2, image_cols=32, image_rows=32, voxel_mm=0.5, save_anatomy=False)


def test_sweep_anatomy_family_sets_the_anatomy_it_drew():
    for seed in range(40):
        a = draw_appearance("sweep-anatomy", seed)
        if a.cord_shift_mm > 2.0:
            break
    case = build_case(seed, make_options(family="sweep-anatomy", **SMALL))
    assert case.anatomy.levels == a.levels
    assert case.anatomy.laminectomy_levels == a.laminectomy_levels
    assert case.anatomy.shift_mm == pytest.approx(a.cord_shift_mm)
    assert case.anatomy.tumor.length_mm == pytest.approx(a.tumor_length_mm, rel=0.05)
    assert case.simulator.tables.backscatter[T.TUMOR] == pytest.approx(a.tumor_backscatter)
    assert case.sweep.pattern == a.sweep_pattern


def test_vertebra_scale_sizes_the_vertebrae_canal_and_cord_with_the_same_draws():
    kw = dict(
        levels=3,
        laminectomy_levels=2,
        tumor_length_mm=(12.0, 12.0),
        shift_mm=(1.0, 1.0),
        echogenicity="hyperechoic",
        cyst="no",
    )
    mid = random_anatomy(np.random.default_rng(4), **kw)
    low = random_anatomy(np.random.default_rng(4), size_scale=1.2, **kw)
    for name in ("body_height", "disc_height", "lamina_thickness"):
        assert getattr(low, name) == pytest.approx(1.2 * getattr(mid, name))
    np.testing.assert_allclose(low.canal, 1.2 * mid.canal)
    np.testing.assert_allclose(low.body, 1.2 * mid.body)
    assert np.all(low.cord > 1.1 * mid.cord)
    assert low.kyphosis_radius == mid.kyphosis_radius  # the other draws are the same


def test_probe_geometry_family_sets_depth_aperture_and_focus():
    case = build_case(6, make_options(family="probe-geometry", **SMALL))
    a, g = case.appearance, case.geometry
    assert g.depth_mm == pytest.approx(a.depth_mm) and g.aperture_mm == pytest.approx(a.aperture_mm)
    assert 32.0 <= g.depth_mm <= 50.0 and 25.0 <= g.aperture_mm <= 45.0
    spacing = np.linalg.norm(case.sweep.image_to_probe[:3, :2], axis=0)  # mm per pixel
    np.testing.assert_allclose(spacing, [a.aperture_mm / 32, a.depth_mm / 32])
    # the beam is narrowest at the drawn focus
    sim = case.simulator
    narrowest = sim.row_depth_mm[np.argmin(sim.lateral_sigma_cols)]
    assert narrowest == pytest.approx(a.focus_fraction * a.depth_mm, abs=g.spacing_y_mm)


def test_miscalibrated_family_writes_the_wrong_calibration_by_the_drawn_amount():
    case = build_case(8, make_options(family="miscalibrated", **SMALL))
    a = case.appearance
    true, written = case.sweep.image_to_probe, case.written_image_to_probe
    g = case.geometry
    centre = np.array([(g.cols - 1) / 2, (g.rows - 1) / 2, 0.0, 1.0])
    moved = np.linalg.norm((written @ centre - true @ centre)[:3])
    assert moved == pytest.approx(a.calibration_translation_mm, abs=1e-9)
    scale = np.linalg.norm(true[:3, :3], axis=0)
    rel = (written[:3, :3] / scale) @ (true[:3, :3] / scale).T
    angle = np.degrees(Rotation.from_matrix(rel).magnitude())
    assert angle == pytest.approx(a.calibration_rotation_deg, abs=1e-6)
    assert 0.3 <= moved <= 1.0 and 0.3 <= angle <= 1.0
    # the images are still simulated at the true calibration
    np.testing.assert_allclose(
        case.sweep.true_image_to_mri[0],
        case.anatomy.spine_to_mri @ case.sweep.image_poses[0] @ g.image_to_transducer(),
    )
    assert case.options.jitter_mm == pytest.approx(a.jitter_mm)
    # a tracker lag the calibration file does not know: images taken after the recorded poses
    assert a.unrecorded_lag_s != 0.0 and case.options.tracker_lag_s == 0.0
    assert case.sweep.tracker_lag_s == pytest.approx(a.unrecorded_lag_s)


def test_the_tuning_split_is_one_partition_of_the_families():
    """Every family is either tuned on or held out, never both: the split the registration's
    choices and every report (bench, evaluate) read from one place."""
    from usnav.sim import FAMILIES, HELD_OUT_FAMILIES, TUNING_FAMILIES

    assert set(TUNING_FAMILIES) | set(HELD_OUT_FAMILIES) == set(FAMILIES)
    assert not set(TUNING_FAMILIES) & set(HELD_OUT_FAMILIES)
    assert "baseline" in TUNING_FAMILIES and "mixed" in HELD_OUT_FAMILIES


def test_the_bench_family_table_is_the_dataset_usnav_simulate_writes():
    """``usnav bench --full``'s per-family cases are those of ``usnav simulate --seeds
    6001-6042 --families <held-out>``: evaluate on that dataset reproduces the table."""
    from usnav.bench.bench_registration import HELD_OUT_SEEDS_FULL, family_plan
    from usnav.sim import HELD_OUT_FAMILIES
    from usnav.sim.dataset import dataset_plan
    from usnav.sim.families import HELD_OUT_REPORT_ORDER

    plan = family_plan(full=True)
    held = [p for p in plan if p[0] in HELD_OUT_FAMILIES]
    assert sorted(HELD_OUT_REPORT_ORDER) == sorted(HELD_OUT_FAMILIES)
    assert held == dataset_plan(list(HELD_OUT_SEEDS_FULL), list(HELD_OUT_REPORT_ORDER))
    assert dataset_plan([1, 2, 3, 4], ["a", "b"]) == [("a", 1), ("b", 2), ("a", 3), ("b", 4)]
    assert len(held) >= 40 and len({s for _, s in plan}) == len(plan)
