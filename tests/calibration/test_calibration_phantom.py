"""Phantom definition, PhantomToReference and segmentation parameters from PLUS XML."""

from __future__ import annotations

from pathlib import Path

import _nwire_synth as _synth
import numpy as np
import pytest

from usnav.calibration.phantom import read_calibration_config
from usnav.errors import ConfigError


def test_reads_plus_fcal_config(shared_data: Path) -> None:
    xml = shared_data / "plus/ConfigFiles/Testing/PlusDeviceSet_fCal_Sim_SpatialCalibration_1.2.xml"
    cfg = read_calibration_config(xml)
    assert len(cfg.patterns) == 3
    top = cfg.patterns[0]
    assert [w.name for w in top.wires] == ["1:E2_e2", "2:I2_f2", "3:J2_j2"]
    # the diagonal (40,0,10)→(25,40,10) meets x=20 and x=45 (docs/references.md §4)
    np.testing.assert_allclose(top.w12, [20, 160 / 3, 10], atol=1e-9)
    np.testing.assert_allclose(top.w32, [45, -40 / 3, 10], atol=1e-9)
    assert [p.width_mm for p in cfg.patterns] == pytest.approx([25, 30, 30])
    assert cfg.phantom_to_reference[0, 3] == pytest.approx(9.59137)
    seg = cfg.segmentation
    assert seg.approximate_spacing_mm_per_px == 0.078
    assert seg.bar_half_length_px == 26 and seg.disc_radius_px == 3
    assert seg.clip_origin_px == (27, 27) and seg.clip_size_px == (766, 562)
    assert seg.max_candidates == 20 and seg.use_original_intensity_for_score is False
    assert len(cfg.landmarks) == 8
    assert (cfg.image_frame, cfg.probe_frame, cfg.phantom_frame) == ("Image", "Probe", "Phantom")


def test_middle_point_from_ratio(tmp_path: Path) -> None:
    cfg = read_calibration_config(_synth.config_xml(tmp_path / "c.xml"))
    pat = cfg.patterns[0]
    # α = 0 → W12, α = 1 → W32, and any α lies on the diagonal wire's line
    np.testing.assert_allclose(pat.middle_point(0.0), pat.w12)
    np.testing.assert_allclose(pat.middle_point(1.0), pat.w32)
    diag = pat.wires[1]
    p = pat.middle_point(0.37) - diag.front
    assert np.linalg.norm(np.cross(p, diag.direction)) < 1e-9


def test_pattern_with_missing_wire_is_refused(tmp_path: Path) -> None:
    """It was skipped with a warning, and the other two patterns labelled the image's three
    N's: on PLUS's fCal data the calibration came out 6° and 4 mm off, exit 0."""
    path = _synth.config_xml(tmp_path / "c.xml", drop_wire=True)
    with pytest.raises(ConfigError, match=r"c\.xml.*Pattern\[2\]: has 2 usable wires") as info:
        read_calibration_config(path)
    assert "every pattern the image shows must be a complete N-wire" in str(info.value)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("<PlusConfiguration/>", "no <PhantomDefinition>"),
        ("<PlusConfiguration><PhantomDefinition/></PlusConfiguration>", "no <Geometry>"),
        (
            "<PlusConfiguration><PhantomDefinition><Geometry>"
            '<Pattern Type="NWire"><Wire EndPointFront="0 0 0" EndPointBack="0 40 0"/></Pattern>'
            "</Geometry></PhantomDefinition></PlusConfiguration>",
            "Pattern\\[1\\]: has 1 usable wires",
        ),
        (
            "<PlusConfiguration><PhantomDefinition><Geometry><Pattern Type='NWire'>"
            "<Wire EndPointFront='0 0 0' EndPointBack='0 40 0'/>"
            "<Wire EndPointFront='5 0 0' EndPointBack='20 40 0'/>"
            "<Wire EndPointFront='25 0 0' EndPointBack='26 40 0'/>"
            "</Pattern></Geometry></PhantomDefinition></PlusConfiguration>",
            "not parallel",
        ),
        ("not xml at all", "not valid XML"),
    ],
)
def test_bad_phantom_definitions_are_refused(tmp_path: Path, body: str, message: str) -> None:
    p = tmp_path / "bad.xml"
    p.write_text(body)
    with pytest.raises(ConfigError, match=message) as info:
        read_calibration_config(p)
    assert str(p) in str(info.value)


def test_bad_segmentation_value_names_the_attribute(tmp_path: Path) -> None:
    p = _synth.config_xml(tmp_path / "c.xml")
    p.write_text(
        p.read_text().replace(
            'ApproximateSpacingMmPerPixel="0.1"', 'ApproximateSpacingMmPerPixel="abc"'
        )
    )
    with pytest.raises(ConfigError, match="ApproximateSpacingMmPerPixel"):
        read_calibration_config(p)


@pytest.mark.parametrize(
    ("attribute", "value"),
    [("ApproximateSpacingMmPerPixel", "78"), ("MorphologicalOpeningBarSizeMm", "0.03")],
)
def test_a_bar_under_half_a_pixel_is_refused_naming_the_spacing(
    tmp_path: Path, attribute: str, value: str
) -> None:
    # 78: the spacing in µm (fCal's 0.078 mm); the bar rounds to 0 px, where the top-hat
    # removes every dot (it was an OpenCV assertion, usnav's exit 3)
    p = _synth.config_xml(tmp_path / "c.xml")
    text = p.read_text()
    old = {"ApproximateSpacingMmPerPixel": '"0.1"', "MorphologicalOpeningBarSizeMm": '"2.0"'}
    p.write_text(text.replace(f"{attribute}={old[attribute]}", f'{attribute}="{value}"'))
    with pytest.raises(ConfigError, match="less than half a pixel") as info:
        read_calibration_config(p)
    assert "Segmentation@ApproximateSpacingMmPerPixel" in str(info.value)
    assert str(p) in str(info.value)
