"""Calibration files: typed, validated on load, readable from PLUS XML and plain text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from usnav.config.calibration import (
    CalibrationFile,
    ErrorStats,
    SpatialCalibration,
    TemporalCalibration,
    load_calibration,
    save_calibration,
)
from usnav.config.plus_xml import (
    PlusTransform,
    coordinate_definitions_xml,
    read_coordinate_definitions,
)
from usnav.errors import ConfigError
from usnav.transforms import rigid_from_params

IMAGE_TO_PROBE = rigid_from_params([11, 46, -7, 0.1, -0.2, 1.5]) @ np.diag([0.078, 0.074, 0.076, 1])


def test_round_trip_toml(tmp_path: Path) -> None:
    cal = CalibrationFile(
        probe="L14-5",
        depth_mm=40,
        spatial=SpatialCalibration(
            image_to_probe=IMAGE_TO_PROBE.tolist(),
            calibration_error_mm=ErrorStats(mean=1.15, sd=0.52),
        ),
        temporal=TemporalCalibration(tracker_lag_s=-0.0648),
    )
    path = save_calibration(cal, tmp_path / "probe.toml")
    back = load_calibration(path)
    np.testing.assert_allclose(back.image_to_probe, IMAGE_TO_PROBE, rtol=1e-12)
    assert back.tracker_lag_s == pytest.approx(-0.0648)
    assert back.spatial is not None
    sx, sy = back.spatial.spacing_mm
    assert sx == pytest.approx(0.078) and sy == pytest.approx(0.074)


def test_unknown_key_names_file_key_and_allowed(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        'probe = "x"\n[spatial]\nimage_to_probe = [[1,0,0,0],[0,1,0,0],[0,0,1,0],'
        "[0,0,0,1]]\nimage_to_prob = 3\n"
    )
    with pytest.raises(ConfigError) as info:
        load_calibration(path)
    message = str(info.value)
    assert str(path) in message and "spatial.image_to_prob" in message
    assert "allowed: image_to_probe" in message


def test_out_of_range_and_wrong_type(tmp_path: Path) -> None:
    path = tmp_path / "lag.toml"
    path.write_text("[temporal]\ntracker_lag_s = 5.0\n")
    with pytest.raises(ConfigError, match="temporal.tracker_lag_s"):
        load_calibration(path)
    path.write_text('depth_mm = "deep"\n')
    with pytest.raises(ConfigError, match="depth_mm"):
        load_calibration(path)


def test_shear_matrix_is_not_a_calibration(tmp_path: Path) -> None:
    shear = np.eye(4)
    shear[0, 1] = 0.5
    path = tmp_path / "shear.txt"
    path.write_text(" ".join(str(v) for v in shear.ravel()))
    with pytest.raises(ConfigError, match="not perpendicular"):
        load_calibration(path)


def test_a_mirrored_calibration_is_refused_in_plain_words(tmp_path: Path) -> None:
    """The image flipped left-right (a calibration of the other marked side): refused in the
    one line the user reads, without pydantic's "Value error, " in it (session 37: it was
    "ImageToProbe: Value error, not a rigid-times-scale …"), from 16 numbers and PLUS XML."""
    flip = np.diag([-1.0, 1, 1, 1])
    flip[0, 3] = 255.0  # column -> 255 - column
    mirrored = IMAGE_TO_PROBE @ flip
    text = tmp_path / "mirrored.txt"
    text.write_text(" ".join(repr(float(v)) for v in mirrored.ravel()))
    xml = tmp_path / "mirrored.xml"
    xml.write_text(coordinate_definitions_xml([PlusTransform("Image", "Probe", mirrored)]))
    for path in (text, xml):
        with pytest.raises(ConfigError) as info:
            load_calibration(path)
        message = str(info.value)
        assert path.name in message and "mirrors (negative determinant)" in message, message
        assert "Value error" not in message, message


@pytest.mark.parametrize("scale", [1e-4, 75.0, 1e8])
def test_pixel_size_outside_ultrasound_range_is_refused(tmp_path: Path, scale: float) -> None:
    """A matrix in metres or µm (or another matrix) is rigid × scale too: its pixel size gives
    it away, in a .txt and in a TOML file alike."""
    matrix = IMAGE_TO_PROBE @ np.diag([scale / 0.078, scale / 0.074, 1, 1])
    path = tmp_path / "units.txt"
    path.write_text(" ".join(repr(float(v)) for v in matrix.ravel()))
    with pytest.raises(ConfigError, match=r"units\.txt.*outside the 0\.001-10 mm.*mm per pixel"):
        load_calibration(path)
    toml = tmp_path / "units.toml"
    toml.write_text(f"[spatial]\nimage_to_probe = {matrix.tolist()}\n")
    with pytest.raises(ConfigError, match="spatial.image_to_probe.*outside the 0.001-10 mm"):
        load_calibration(toml)
    # the same matrix in mm per pixel loads
    good = tmp_path / "good.txt"
    good.write_text(" ".join(repr(float(v)) for v in IMAGE_TO_PROBE.ravel()))
    assert load_calibration(good).spatial.spacing_mm[0] == pytest.approx(0.078)


def test_text_with_15_numbers_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "short.txt"
    path.write_text(" ".join(["1"] * 15))
    with pytest.raises(ConfigError, match="expected 16 numbers.*found 15"):
        load_calibration(path)


def test_text_calibration_may_say_what_it_holds(tmp_path: Path) -> None:
    """``#`` comments and commas, as the init file allows: the words were counted as numbers
    ("expected 16 numbers ..., found 24")."""
    path = tmp_path / "cal.txt"
    rows = "\n".join(", ".join(repr(float(v)) for v in row) for row in IMAGE_TO_PROBE)
    path.write_text(f"# ImageToProbe (row-major), pixel (col,row,0,1) -> Probe mm\n{rows}\n")
    np.testing.assert_allclose(load_calibration(path).image_to_probe, IMAGE_TO_PROBE)


def test_a_calibration_in_metres_is_refused_in_the_words_of_its_check(tmp_path: Path) -> None:
    """The check's own sentence, without pydantic's "Value error, " before it and
    ", got a list of 4" after it."""
    path = tmp_path / "metres.toml"
    m = np.diag([1e-3, 1e-3, 1e-3, 1.0]) @ IMAGE_TO_PROBE
    rows = ", ".join("[" + ", ".join(repr(float(v)) for v in row) + "]" for row in m)
    path.write_text(f"[spatial]\nimage_to_probe = [{rows}]\n")
    with pytest.raises(ConfigError) as caught:
        load_calibration(path)
    line = str(caught.value)
    assert line.startswith(f"{path}: key 'spatial.image_to_probe': its pixels are ")
    assert line.endswith("give ImageToProbe in mm per pixel")


def test_a_calibration_of_12_numbers_is_refused_saying_what_to_give(tmp_path: Path) -> None:
    path = tmp_path / "three_rows.txt"
    path.write_text(" ".join(repr(float(v)) for v in IMAGE_TO_PROBE[:3].ravel()))
    with pytest.raises(
        ConfigError, match=r"three_rows\.txt: found 12 numbers.*add the row 0 0 0 1"
    ):
        load_calibration(path)


def test_plus_xml_coordinate_definitions_round_trip(tmp_path: Path) -> None:
    text = (
        "<PlusConfiguration>"
        + coordinate_definitions_xml(
            [PlusTransform("Image", "Probe", IMAGE_TO_PROBE, {"Date": "2026.11.25"})]
        )
        + "</PlusConfiguration>"
    )
    path = tmp_path / "PlusDeviceSet_x.xml"
    path.write_text(text)
    defs = read_coordinate_definitions(path)
    assert defs["ImageToProbe"].attributes["Date"] == "2026.11.25"
    # lossless: the XML's numbers read back as the very floats written (9 digits were 5e-8 off)
    np.testing.assert_array_equal(load_calibration(path).image_to_probe, IMAGE_TO_PROBE)


def test_bare_coordinate_definitions_element(tmp_path: Path) -> None:
    path = tmp_path / "defs.xml"
    path.write_text(coordinate_definitions_xml([PlusTransform("Image", "Probe", IMAGE_TO_PROBE)]))
    np.testing.assert_allclose(load_calibration(path).image_to_probe, IMAGE_TO_PROBE, rtol=1e-8)


def test_real_plus_config_without_image_to_probe_says_what_it_has(shared_data: Path) -> None:
    xml = shared_data / "plus/ConfigFiles/Testing/PlusDeviceSet_fCal_Sim_SpatialCalibration_1.2.xml"
    defs = read_coordinate_definitions(xml)
    assert "PhantomToReference" in defs
    np.testing.assert_allclose(defs["PhantomToReference"].matrix[0, 3], 9.59137)
    with pytest.raises(ConfigError, match="found: .*PhantomToReference"):
        load_calibration(xml)


def test_a_spatial_calibration_paired_at_another_lag_than_in_use_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # ImageToProbe computed with images paired 0.4 s later (calibrate spatial --tracker-lag-s
    # 0.4) is right only where images are paired the same way; live pairing uses [temporal]
    import logging

    from usnav.devices.config import ProbeConfig
    from usnav.devices.probe import ProbeClient

    spatial = SpatialCalibration(image_to_probe=IMAGE_TO_PROBE.tolist(), tracker_lag_s=0.4)
    alone = save_calibration(CalibrationFile(probe="p", spatial=spatial), tmp_path / "a.toml")
    line = load_calibration(alone).spatial_lag_mismatch()
    assert line is not None and "a.toml" in line and "+0.400 s" in line and "+0.000 s" in line
    # without a [temporal] lag the other remedy is to give the probe the lag the fit found, and
    # a recording made by usnav record is already paired at the device's lag
    assert "usnav calibrate temporal --out" in line and "time_offset_s" in line
    assert "usnav record" in line
    # a [spatial] that does not record its lag (older usnav, PLUS XML, usnav simulate's exact
    # matrix) is not compared: a simulated case with a tracker lag warned at every start-up
    unrecorded = CalibrationFile(
        probe="usnav-sim-L10",
        spatial=SpatialCalibration(image_to_probe=IMAGE_TO_PROBE.tolist()),
        temporal=TemporalCalibration(tracker_lag_s=0.05),
    )
    assert unrecorded.spatial is not None and unrecorded.spatial.tracker_lag_s is None
    assert unrecorded.spatial_lag_mismatch() is None
    older = tmp_path / "older.toml"
    older.write_text(
        "[spatial]\nimage_to_probe = "
        + str(IMAGE_TO_PROBE.tolist())
        + "\n\n[temporal]\ntracker_lag_s = -0.065\n"
    )
    assert load_calibration(older).spatial_lag_mismatch() is None
    both = CalibrationFile(
        probe="p", spatial=spatial, temporal=TemporalCalibration(tracker_lag_s=0.4)
    )
    assert both.spatial_lag_mismatch() is None
    assert both.spatial_lag_mismatch(0.0) is not None  # a device's own lag overrides the file's
    with caplog.at_level(logging.WARNING, logger="usnav.devices.probe"):
        ProbeClient(ProbeConfig(port=1), calibration=load_calibration(alone)).close()
        assert "images are paired at t +0.000 s" in caplog.text
        caplog.clear()
        ProbeClient(ProbeConfig(port=1), calibration=both).close()
        assert "tracker-lag-s" not in caplog.text


@pytest.mark.parametrize("value", ['"false"', '"true"', "0", "1"])
def test_a_flag_that_is_not_a_toml_boolean_is_refused(tmp_path: Path, value: str) -> None:
    """``flagged = "false"`` (a string) loaded as not flagged: a hand edit that clears the flag
    which keeps a calibration's overlays from LIVE must be a real boolean, as usnav writes it."""
    spatial = SpatialCalibration(image_to_probe=IMAGE_TO_PROBE.tolist())
    path = save_calibration(CalibrationFile(spatial=spatial), tmp_path / "cal.toml")
    text = path.read_text().replace("[spatial]\n", f"[spatial]\nflagged = {value}\n", 1)
    path.write_text(text)
    with pytest.raises(ConfigError, match="flagged"):
        load_calibration(path)


def test_the_image_size_a_calibration_was_made_for_is_kept_and_checked(tmp_path: Path) -> None:
    """``[spatial] image_size_px = [cols, rows]``: written, read back, and images of another
    size named as a mismatch in one line (both sizes, the file, what to do); a file without
    it (older files, 16 numbers) checks nothing."""
    spatial = SpatialCalibration(image_to_probe=IMAGE_TO_PROBE.tolist(), image_size_px=[256, 200])
    path = save_calibration(CalibrationFile(spatial=spatial), tmp_path / "cal.toml")
    assert "image_size_px = [256, 200]" in path.read_text()
    cal = load_calibration(path)
    assert cal.spatial.image_size_px == [256, 200] and cal.format == 1
    assert cal.image_size_mismatch((256, 200)) is None
    cal.check_image_size((256, 200), "sweep.igs.mha")
    line = cal.image_size_mismatch((200, 256), "sweep.igs.mha")  # rows and columns swapped
    assert line is not None and "\n" not in line
    for words in ("cal.toml", "256 × 200", "200 × 256", "sweep.igs.mha", "calibrate for this"):
        assert words in line, line
    with pytest.raises(ConfigError, match=r"cal\.toml: was made for 256 × 200 px.*96 × 96 px"):
        cal.check_image_size((96, 96), "sweep.igs.mha")
    older = tmp_path / "older.toml"
    older.write_text(path.read_text().replace("image_size_px = [256, 200]\n", ""))
    text = tmp_path / "cal.txt"
    text.write_text(" ".join(repr(float(v)) for v in IMAGE_TO_PROBE.ravel()))
    for unsized in (older, text):
        loaded = load_calibration(unsized)
        assert loaded.spatial.image_size_px is None
        assert loaded.image_size_mismatch((96, 96)) is None
        loaded.check_image_size((96, 96), "sweep.igs.mha")
    for bad in ("[0, 200]", "[256]", "[256.5, 200]"):
        path.write_text(
            path.read_text().replace("image_size_px = [256, 200]", f"image_size_px = {bad}")
        )
        with pytest.raises(ConfigError, match="image_size_px"):
            load_calibration(path)
        path.write_text(
            path.read_text().replace(f"image_size_px = {bad}", "image_size_px = [256, 200]")
        )
