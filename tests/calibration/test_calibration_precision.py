"""Precision of the N-wire calibration (moving-block bootstrap): deterministic, grows with the
noise and with fewer frames, covers the true error of simulated calibrations, goes into the
calibration file, the JSON and a ``[registration_budget]`` snippet."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import _nwire_synth as synth
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from usnav.calibration.output import write_calibration
from usnav.calibration.phantom import CalibrationConfig, read_calibration_config
from usnav.calibration.precision import (
    NAMED_POINTS,
    block_band,
    block_length,
    calibration_precision,
    residual_autocorrelation,
)
from usnav.calibration.segmentation import middle_ratios
from usnav.calibration.spatial import calibrate_spatial, solve_image_to_probe
from usnav.config.calibration import load_calibration
from usnav.pipeline.config import RegistrationBudget

IMAGE_SIZE = (synth.COLS, synth.ROWS)
SCALE = np.diag([synth.SPACING[0], synth.SPACING[1], sum(synth.SPACING) / 2, 1.0])


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> CalibrationConfig:
    d = tmp_path_factory.mktemp("precision")
    return read_calibration_config(synth.config_xml(d / "phantom.xml"))


def simulate(
    phantom: CalibrationConfig,
    frames: int,
    px_noise: float,
    seed: int,
    *,
    pose_deg: float = 0.0,
    pose_mm: float = 0.0,
    correlation: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A calibration's middle dots with known truth, without rendering images.

    Frames are the synthetic recordings' poses; every segmented dot (all three of each N) gets
    Gaussian noise of ``px_noise`` px per axis, so the N-ratio and the middle point carry it as
    the pipeline would; the tracked pose gets ``pose_deg``/``pose_mm`` of error per axis, an
    AR(1) series with lag-1 correlation ``correlation`` over the frames.

    Returns ImageToProbe (truth), image points (frames, 3, 2) px, probe points (frames, 3, 3) mm.
    """
    rng = np.random.default_rng(seed)
    truth = synth.image_to_probe_truth()
    rigid = truth @ np.linalg.inv(SCALE)  # Image mm → Probe
    image, probe = [], []
    drift = np.zeros(6)
    for _ in range(frames):
        image_to_phantom = synth.image_pose(rng)
        dots = synth.wire_pixels(image_to_phantom @ SCALE)
        dots = dots + rng.normal(0.0, px_noise, dots.shape)
        alpha = middle_ratios(dots)
        middle = np.stack(
            [phantom.patterns[j].middle_points(alpha[j : j + 1])[0] for j in range(3)]
        )
        drift = correlation * drift + math.sqrt(1 - correlation**2) * rng.normal(0, 1, 6)
        tracker = np.eye(4)
        tracker[:3, :3] = Rotation.from_rotvec(np.radians(pose_deg) * drift[:3]).as_matrix()
        tracker[:3, 3] = pose_mm * drift[3:]
        phantom_to_probe = tracker @ rigid @ np.linalg.inv(image_to_phantom)
        probe.append(middle @ phantom_to_probe[:3, :3].T + phantom_to_probe[:3, 3])
        image.append(dots[:, 1, :])
    return truth, np.array(image), np.array(probe)


def _precision(image: np.ndarray, probe: np.ndarray, **kw):
    fitted, _ = solve_image_to_probe(image, probe)
    return fitted, calibration_precision(fitted, image, probe, IMAGE_SIZE, **kw)


def _image_grid(cols: int, rows: int, n: int = 9) -> np.ndarray:
    uu, vv = np.meshgrid(np.linspace(0, cols - 1, n), np.linspace(0, rows - 1, n))
    return np.stack([uu.ravel(), vv.ravel(), np.zeros(uu.size), np.ones(uu.size)])


# -- on the synthetic recordings ------------------------------------------------------------


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("nwire_precision")
    cfg = synth.config_xml(d / "phantom.xml")
    cal = synth.write_recording(d / "cal.igs.mha", 24, seed=3)
    val = synth.write_recording(d / "val.igs.mha", 8, seed=4)
    return d, cfg, cal, val


def test_same_input_same_numbers_and_the_seed_is_what_varies(recording) -> None:
    _, cfg, cal, val = recording
    a = calibrate_spatial(cfg, cal.path, val.path, precision_replicates=100)
    b = calibrate_spatial(cfg, cal.path, val.path, precision_replicates=100)
    assert a.precision is not None and b.precision is not None
    assert a.precision.as_dict() == b.precision.as_dict()
    other = calibrate_spatial(cfg, cal.path, val.path, precision_replicates=100, precision_seed=1)
    assert other.precision is not None
    assert other.precision.bootstrap_mm != a.precision.bootstrap_mm
    # rendered dots are nearly exact: a precise calibration (the truth is 0.1 mm / 0.05° away)
    p = a.precision
    assert 0 < p.calibration_error_mm < 0.3 and 0 < p.calibration_error_deg < 0.5
    assert p.image_size == IMAGE_SIZE and p.frames == 24 and p.failed == 0
    assert set(p.points_mm) == set(NAMED_POINTS)
    assert p.translation_mm == p.points_mm["top_centre"] <= p.calibration_error_mm
    assert not p.understated and p.validation_excess_mm == 0.0
    off = calibrate_spatial(cfg, cal.path, precision_replicates=0)
    assert off.precision is None and off.as_dict()["precision"] is None


def test_noise_on_the_recording_s_segmented_dots_widens_the_bound(recording) -> None:
    _, cfg, cal, _ = recording
    result = calibrate_spatial(cfg, cal.path, precision_replicates=0)
    seq = result.calibration
    rng = np.random.default_rng(0)
    clean = calibration_precision(
        result.image_to_probe, seq.image_points, seq.probe_points, seq.image_size, replicates=100
    )
    noisy_points = seq.image_points + rng.normal(0, 1.0, seq.image_points.shape)
    _, noisy = _precision(noisy_points, seq.probe_points, replicates=100)
    assert noisy.calibration_error_mm > 3 * clean.calibration_error_mm
    assert noisy.calibration_error_deg > 1.5 * clean.calibration_error_deg


# -- simulated calibrations with known truth ------------------------------------------------


def test_bound_grows_with_the_wire_noise_and_with_fewer_frames(phantom) -> None:
    def bound(frames: int, px: float):
        _, image, probe = simulate(phantom, frames, px, seed=7)
        return _precision(image, probe, replicates=150)[1]

    base, noisier, fewer = bound(60, 0.2), bound(60, 1.0), bound(15, 0.2)
    assert noisier.calibration_error_mm > 3 * base.calibration_error_mm
    assert noisier.calibration_error_deg > 3 * base.calibration_error_deg
    assert fewer.calibration_error_mm > 1.4 * base.calibration_error_mm
    assert fewer.calibration_error_deg > 1.4 * base.calibration_error_deg
    # the predicted PRE3D of a new recording follows the noise too
    assert noisier.predicted_pre3d_mm[0] > 3 * base.predicted_pre3d_mm[0]


def test_stated_bound_covers_the_true_error_of_simulated_calibrations(phantom) -> None:
    """20 calibrations of 20 frames, 0.5 px on every dot and 0.1° / 0.2 mm of tracker noise:
    the stated mm + radians(deg)·d covers the fitted calibration's true error at every point of
    the image in ≥ 90 % of them (all 20 here; 96.5 % of seeds 0–199, 93 % of seeds 1000–1299),
    and is not vacuous."""
    ratios = []
    grid = _image_grid(*IMAGE_SIZE)
    for seed in range(20):
        truth, image, probe = simulate(phantom, 20, 0.5, seed, pose_deg=0.1, pose_mm=0.2)
        fitted, p = _precision(image, probe, replicates=200, seed=seed)
        error = np.linalg.norm((fitted @ grid - truth @ grid)[:3], axis=0)
        depth = grid[1] * np.linalg.norm(fitted[:3, 1])
        ratios.append(float((error / p.bound_mm(depth)).max()))
    covered = sum(r <= 1.0 for r in ratios)
    assert covered >= 18, ratios
    assert 0.2 < float(np.median(ratios)) < 1.0  # a bound 5× too large would fail this


def test_correlated_frames_are_resampled_in_blocks(phantom) -> None:
    # tracker error drifting over the sweep (lag-1 correlation 0.95): consecutive frames are
    # not independent evidence, and the bootstrap resamples runs of them
    _, image, probe = simulate(phantom, 60, 0.2, 3, pose_deg=0.2, pose_mm=0.3, correlation=0.95)
    fitted, blocks = _precision(image, probe, replicates=200)
    _, single = _precision(image, probe, replicates=200, block_frames=1)
    assert residual_autocorrelation(fitted, image, probe) > 0.5
    assert blocks.block_frames > 5
    assert any("correlated" in w for w in blocks.warnings)
    assert blocks.calibration_error_deg > single.calibration_error_deg
    # independent frames: single frames
    _, image, probe = simulate(phantom, 60, 0.5, 3)
    assert _precision(image, probe, replicates=50)[1].block_frames <= 2


def test_block_length_rule() -> None:
    assert block_length(0.0, 200) == 1 and block_length(-0.3, 200) == 1
    assert block_length(0.5, 200) == 8  # (3/2)^(1/3) · (4/3)^(2/3) · 200^(1/3) = 8.1
    assert block_length(0.98, 188) == 188 // 4  # capped: at least four blocks per resample
    assert block_length(0.9, 8) == 2


def test_the_bound_is_the_largest_over_block_lengths_around_the_rule_s(phantom) -> None:
    # The bound moves with the block length (PLUS's recording paired 0.4 s later: 1.77 mm in
    # blocks of 37, 2.20 mm in blocks of 42), and the AR(1) rule knows b only to a factor: the
    # bootstrap runs at b, b/√2 and √2·b (within [1, n/4]) and states the largest
    assert block_band(42, 182) == (42, 30, 45)
    assert block_band(37, 185) == (37, 26, 46)
    assert block_band(47, 188) == (47, 33)  # the rule at its cap: n/4
    assert block_band(3, 60) == (3, 2, 4)
    assert block_band(1, 20) == (1,)  # uncorrelated frames: single frames, as before
    _, image, probe = simulate(phantom, 60, 0.2, 3, pose_deg=0.2, pose_mm=0.3, correlation=0.95)
    _, p = _precision(image, probe, replicates=100)
    rule = p.block_frames
    assert p.block_lengths == block_band(rule, 60) and len(p.block_lengths) > 1
    _, alone = _precision(image, probe, replicates=100, block_frames=rule)
    assert alone.block_lengths == (rule,) and len(alone.bounds_by_block) == 1
    # the rule's block length is resampled first, as it is alone (same seed)
    assert p.bounds_by_block[0] == pytest.approx((alone.bootstrap_mm, alone.bootstrap_deg))
    assert p.bootstrap_deg == max(deg for _, deg in p.bounds_by_block) >= alone.bootstrap_deg
    assert all(p.points_mm[k] >= alone.points_mm[k] for k in NAMED_POINTS)
    d = p.as_dict()["bounds_by_block"]
    assert [row["block_frames"] for row in d] == list(p.block_lengths)


def test_a_validation_error_beyond_the_prediction_raises_the_stated_mm(phantom) -> None:
    _, image, probe = simulate(phantom, 30, 0.5, 11)
    _, within = _precision(image, probe, replicates=100)
    median, p95 = within.predicted_pre3d_mm
    _, consistent = _precision(image, probe, replicates=100, validation_pre3d_mm=median)
    assert not consistent.understated and consistent.validation_excess_mm == 0.0
    assert consistent.calibration_error_mm == consistent.bootstrap_mm
    _, larger = _precision(image, probe, replicates=100, validation_pre3d_mm=3 * p95)
    assert larger.understated
    excess = larger.validation_excess_mm
    assert excess == pytest.approx(math.sqrt((3 * p95) ** 2 - median**2))
    assert larger.calibration_error_mm == pytest.approx(max(larger.bootstrap_mm, excess))
    assert larger.calibration_error_mm > larger.bootstrap_mm
    assert any("under-states" in w for w in larger.warnings)
    assert "includes that excess" in larger.budget_snippet()


def test_too_little_to_resample_is_refused() -> None:
    m = synth.image_to_probe_truth()
    with pytest.raises(ValueError, match="at least 2"):
        calibration_precision(m, np.zeros((1, 3, 2)), np.zeros((1, 3, 3)), IMAGE_SIZE)
    with pytest.raises(ValueError, match="at least 20"):
        calibration_precision(
            m, np.zeros((5, 3, 2)), np.zeros((5, 3, 3)), IMAGE_SIZE, replicates=10
        )
    # 2 frames = 6 equations: no resample can be solved (more than 8 are needed)
    rng = np.random.default_rng(0)
    uv = rng.uniform(0, 400, (2, 3, 2))
    pr = uv @ m[:3, :2].T + m[:3, 3]
    with pytest.raises(ValueError, match="resamples gave a calibration"):
        calibration_precision(m, uv, pr, IMAGE_SIZE, replicates=40)


def test_non_finite_input_is_refused_saying_what(phantom) -> None:
    # a NaN once came out as "cannot convert float NaN to integer" (from the block length),
    # and an infinite validation PRE3D as calibration_error_mm = inf in the budget snippet
    _, image, probe = simulate(phantom, 12, 0.5, 1)
    fitted, _ = solve_image_to_probe(image, probe)
    bad = image.copy()
    bad[3, 1, 0] = np.nan
    with pytest.raises(ValueError, match="image points have NaN"):
        calibration_precision(fitted, bad, probe, IMAGE_SIZE, replicates=20)
    with pytest.raises(ValueError, match="ImageToProbe have NaN"):
        calibration_precision(fitted * np.nan, image, probe, IMAGE_SIZE, replicates=20)
    for pre3d in (math.inf, math.nan, -1.0):
        with pytest.raises(ValueError, match="validation PRE3D"):
            calibration_precision(
                fitted, image, probe, IMAGE_SIZE, replicates=20, validation_pre3d_mm=pre3d
            )


# -- outputs --------------------------------------------------------------------------------


def test_precision_goes_into_the_calibration_file_and_a_budget_snippet(
    recording, tmp_path: Path
) -> None:
    _, cfg, cal, val = recording
    result = calibrate_spatial(cfg, cal.path, val.path, precision_replicates=100)
    p = result.precision
    assert p is not None
    written = write_calibration(tmp_path / "probe.toml", spatial=result)
    loaded = load_calibration(tmp_path / "probe.toml")
    assert loaded.spatial == written.spatial
    stored = loaded.spatial.precision
    assert stored is not None
    assert stored.calibration_error_mm == p.calibration_error_mm
    assert stored.calibration_error_deg == p.calibration_error_deg
    assert stored.points_mm == p.points_mm and stored.block_frames == p.block_frames
    assert "precision only" in stored.note
    # the snippet is TOML the pipeline's [registration_budget] accepts, rounded up
    table = tomllib.loads(p.budget_snippet())["registration_budget"]
    budget = RegistrationBudget(**table)
    assert budget.overrides() == table == p.budget()
    assert p.calibration_error_mm <= table["calibration_error_mm"] < p.calibration_error_mm + 0.01
    assert "precision only" in p.budget_snippet() and "margin_error_mm" in p.budget_snippet()
    # and the JSON
    d = result.as_dict()["precision"]
    assert d["calibration_error_mm"] == p.calibration_error_mm and d["coverage"] == 0.95
    assert d["image_size"] == list(IMAGE_SIZE)
