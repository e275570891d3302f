"""Dot segmentation, N labelling and the orientation/geometry check on synthetic frames."""

from __future__ import annotations

from pathlib import Path

import _nwire_synth as synth
import numpy as np
import pytest

from usnav.calibration.phantom import SegmentationParameters, read_calibration_config
from usnav.calibration.segmentation import (
    DotSegmenter,
    FrameStatus,
    PatternFinder,
    check_orientation,
    geometry_misfit_mm,
    region_of_interest,
    segment_frame,
    to_mf,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    cfg = read_calibration_config(synth.config_xml(tmp_path_factory.mktemp("cfg") / "c.xml"))
    seg = DotSegmenter(cfg.segmentation)
    finder = PatternFinder(cfg.patterns, cfg.segmentation)
    roi = region_of_interest(cfg.segmentation, (synth.COLS, synth.ROWS))
    return cfg, seg, finder, roi


def _frame(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scale = np.diag([synth.SPACING[0], synth.SPACING[1], 0.0975, 1.0])
    truth = synth.wire_pixels(synth.image_pose(rng) @ scale)
    return synth.render(truth, rng), truth


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_wires_found_and_labelled_like_plus(setup, seed: int) -> None:
    _cfg, seg, finder, roi = setup
    image, truth = _frame(seed)
    result = segment_frame(image, seg, finder, roi)
    assert result.status is FrameStatus.OK, result.detail
    # wires right (marked side) to left, patterns top to bottom, within half a pixel
    np.testing.assert_allclose(result.wire_points, truth, atol=0.5)
    assert result.geometry_rms_mm < 0.3
    # the long bright wall line was removed by the top-hat: no candidate on it
    assert not np.any((result.candidates[:, 1] > 348) & (result.candidates[:, 1] < 360))


@pytest.mark.parametrize(
    ("flip", "words"), [("lr", "left-right"), ("ud", "top-bottom"), ("both", "180")]
)
def test_mirrored_image_contradicts_the_phantom(setup, flip: str, words: str) -> None:
    _, seg, finder, roi = setup
    image, _ = _frame(3)
    mirrored = {"lr": image[:, ::-1], "ud": image[::-1], "both": image[::-1, ::-1]}[flip]
    result = segment_frame(np.ascontiguousarray(mirrored), seg, finder, roi)
    assert result.status is FrameStatus.ORIENTATION_MISMATCH
    assert words in result.detail


@pytest.mark.parametrize(("code", "flip"), [("UF", "lr"), ("MN", "ud"), ("UN", "both")])
def test_declared_orientation_is_undone(setup, code: str, flip: str) -> None:
    _, seg, finder, roi = setup
    image, truth = _frame(4)
    stored = {"lr": image[:, ::-1], "ud": image[::-1], "both": image[::-1, ::-1]}[flip]
    result = segment_frame(to_mf(stored, code), seg, finder, roi)
    assert result.status is FrameStatus.OK
    np.testing.assert_allclose(result.wire_points, truth, atol=0.5)


def test_transposed_orientation_is_turned_and_unknown_refused() -> None:
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    # FM: +x points far, +y to the marked side: MF is its transpose
    np.testing.assert_array_equal(to_mf(image, "FM"), image.T)
    with pytest.raises(ValueError, match="N-wire calibration cannot use it"):
        to_mf(image, "XY")
    assert to_mf(np.zeros((4, 4), np.uint8), "MFA").shape == (4, 4)


def test_too_many_candidates_fails_the_frame(setup) -> None:
    _, seg, finder, roi = setup
    rng = np.random.default_rng(9)
    _, truth = _frame(5)
    clutter = np.column_stack([rng.uniform(60, 420, 25), rng.uniform(60, 330, 25)])
    image = synth.render(np.concatenate([truth.reshape(-1, 2), clutter]), rng)
    result = segment_frame(image, seg, finder, roi)
    assert result.status is FrameStatus.TOO_MANY_CANDIDATES
    assert len(result.candidates) > 20


def test_empty_and_partial_frames(setup) -> None:
    _, seg, finder, roi = setup
    blank = np.zeros((synth.ROWS, synth.COLS), np.uint8)
    assert segment_frame(blank, seg, finder, roi).status is FrameStatus.WIRES_NOT_FOUND
    _, truth = _frame(3)
    two_patterns = synth.render(truth[:2], np.random.default_rng(1))
    assert segment_frame(two_patterns, seg, finder, roi).status is FrameStatus.WIRES_NOT_FOUND
    assert segment_frame(np.zeros((0, 0), np.uint8), seg, finder, roi).status is (
        FrameStatus.NO_IMAGE
    )


def test_geometry_check_rejects_dots_off_their_wires(setup) -> None:
    cfg, *_ = setup
    _, truth = _frame(3)
    assert check_orientation(truth, cfg.patterns)[0] is FrameStatus.OK
    shifted = truth.copy()
    shifted[1, :, 0] += 60  # the middle N moved 6 mm sideways: no plane fits all dots
    status, misfit, _ = check_orientation(shifted, cfg.patterns)
    assert status is FrameStatus.GEOMETRY_MISMATCH and misfit > 2.0


def test_geometry_misfit_is_zero_for_exact_dots(setup) -> None:
    cfg, *_ = setup
    _, truth = _frame(6)
    assert geometry_misfit_mm(truth, cfg.patterns) < 1e-6
    assert geometry_misfit_mm(truth[:, ::-1], cfg.patterns) > 0.5


def test_plus_parameters_drive_the_segmentation(tmp_path: Path, setup) -> None:
    """A bar shorter than a dot would erase the dots: the XML value must be used."""
    image, _ = _frame(3)
    p = synth.config_xml(tmp_path / "c.xml")
    p.write_text(
        p.read_text().replace(
            'MorphologicalOpeningBarSizeMm="2.0"', 'MorphologicalOpeningBarSizeMm="0.15"'
        )
    )
    cfg = read_calibration_config(p)
    seg = DotSegmenter(cfg.segmentation)
    finder = PatternFinder(cfg.patterns, cfg.segmentation)
    roi = region_of_interest(cfg.segmentation, (synth.COLS, synth.ROWS))
    assert segment_frame(image, seg, finder, roi).status is not FrameStatus.OK


def test_a_bar_of_one_pixel_finds_no_dots_without_failing() -> None:
    # read from XML such parameters are refused (test_calibration_phantom); built directly,
    # the segmenter's b = 0 slices must still cover the image (``[-0:]`` is all of it)
    params = SegmentationParameters(approximate_spacing_mm_per_px=10.0)
    assert params.bar_half_length_px == 0
    image, _ = _frame(3)
    roi = region_of_interest(params, (synth.COLS, synth.ROWS))
    seg = DotSegmenter(params)
    assert seg.filtered(image, roi).shape == (roi[3] - roi[1], roi[2] - roi[0])
    assert seg.dots(image, roi).shape == (0, 3)
