"""``usnav calibrate``: JSON output, merged calibration files, PLUS XML, reports, bad input."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tomllib
from pathlib import Path

import _nwire_synth as synth
import cv2
import numpy as np
import pytest
from cli_helpers import assert_bad_input, usnav
from test_calibration_pivot import _recording
from test_calibration_temporal import _tank_recording

from usnav.cli.main import main
from usnav.config.calibration import load_calibration
from usnav.config.plus_xml import read_coordinate_definitions
from usnav.errors import ConfigError

LOGGER = "usnav.config.calibration"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("cli")
    cfg = synth.config_xml(d / "phantom.xml")
    cal = synth.write_recording(d / "cal.igs.mha", 24, seed=11, invalid=frozenset({2}))
    val = synth.write_recording(d / "val.igs.mha", 8, seed=12)
    return d, cfg, cal, val


def _spatial(cfg: Path, recording: Path, *more: str) -> int:
    """``usnav calibrate spatial --config CFG --calibration RECORDING MORE...``, in-process."""
    return main(
        ["calibrate", "spatial", "--config", str(cfg), "--calibration", str(recording), *more]
    )


def test_spatial_json_toml_xml_report(data, tmp_path: Path, capsys) -> None:
    _, cfg, cal, val = data
    out, xml, png = tmp_path / "cal/probe.toml", tmp_path / "probe.xml", tmp_path / "r.png"
    code = main(
        [
            "calibrate",
            "spatial",
            "--config",
            str(cfg),
            "--calibration",
            str(cal.path),
            "--validation",
            str(val.path),
            "--out",
            str(out),
            "--xml",
            str(xml),
            "--report",
            str(png),
            "--json",
        ]
    )
    assert code == 0
    d = json.loads(capsys.readouterr().out)
    m = np.asarray(d["ImageToProbe"])
    np.testing.assert_allclose(m, cal.image_to_probe, atol=0.15)
    assert {"mean", "sd"} <= d["calibration_error_mm"].keys()
    assert d["validation_error_mm"]["mean"] < 0.1
    assert d["calibration"]["skipped"] == {"probe or reference transform not OK": 1}
    saved = load_calibration(out)
    np.testing.assert_allclose(saved.image_to_probe, m)
    assert saved.spatial.validation_error_mm.mean == pytest.approx(d["validation_error_mm"]["mean"])
    assert str(cal.path) in saved.sources and saved.probe == "probe"
    # the image size its mm per pixel hold for, [cols, rows] of the calibration recording
    assert tomllib.loads(out.read_text())["spatial"]["image_size_px"] == [synth.COLS, synth.ROWS]
    assert saved.image_size_mismatch((synth.COLS, synth.ROWS)) is None
    assert "480 × 400" in (saved.image_size_mismatch((synth.ROWS, synth.COLS)) or "")
    precision = d["precision"]
    assert saved.spatial.precision.calibration_error_mm == precision["calibration_error_mm"] > 0
    assert saved.spatial.precision.calibration_error_deg == precision["calibration_error_deg"] > 0
    np.testing.assert_allclose(
        read_coordinate_definitions(xml)["ImageToProbe"].matrix, m, atol=1e-7
    )
    np.testing.assert_allclose(load_calibration(xml).image_to_probe, m, atol=1e-7)
    # PLUS's XML has no size; usnav's records it where PLUS does not look (UsnavImageSizePx)
    assert load_calibration(xml).spatial.image_size_px == [synth.COLS, synth.ROWS]
    image = cv2.imread(str(png))
    assert image is not None and image.shape[1] == 1230 and image.shape[0] > 600


def test_the_plus_xml_reads_back_the_image_size_and_lag_the_toml_records(
    tmp_path: Path, capsys
) -> None:
    # --xml kept the matrix only: read back by usnav (run, register...) it lost the image size
    # (another depth's images were placed with this one's mm per pixel) and the pairing lag
    # (a calibration made at --tracker-lag-s 0.05 used at lag 0 without the TOML's warning)
    cfg = synth.config_xml(tmp_path / "phantom.xml")
    cal = synth.write_recording(tmp_path / "cal.igs.mha", 30, seed=9101, smooth=True)
    out, xml = tmp_path / "probe.toml", tmp_path / "probe.xml"
    more = ["--tracker-lag-s", "0.05", "--out", str(out), "--xml", str(xml), "--json"]
    assert _spatial(cfg, cal.path, *more) in (0, 1)
    capsys.readouterr()
    toml, plus = load_calibration(out, warn=False), load_calibration(xml, warn=False)
    assert toml.spatial is not None and plus.spatial is not None
    np.testing.assert_array_equal(plus.spatial.matrix, toml.spatial.matrix)
    assert plus.spatial.image_size_px == toml.spatial.image_size_px == [synth.COLS, synth.ROWS]
    assert plus.spatial.tracker_lag_s == toml.spatial.tracker_lag_s == 0.05
    assert "480 × 400" in (plus.image_size_mismatch((synth.ROWS, synth.COLS)) or "")
    assert "paired with the pose at t +0.050 s" in (plus.spatial_lag_mismatch(0.0) or "")
    attributes = read_coordinate_definitions(xml)["ImageToProbe"].attributes
    assert attributes["UsnavImageSizePx"] == f"{synth.COLS} {synth.ROWS}"
    # usnav info describes it as it does the TOML (it refused every .xml as an unknown type)
    assert main(["info", str(xml)]) == 0
    assert f"ImageToProbe for {synth.COLS} × {synth.ROWS} px images" in capsys.readouterr().out
    # a damaged one is refused, not read as absent (which would switch its check off)
    xml.write_text(xml.read_text().replace(f'"{synth.COLS} {synth.ROWS}"', '"480x400"'))
    with pytest.raises(ConfigError, match="UsnavImageSizePx: is '480x400', expected two"):
        load_calibration(xml)


def test_the_plus_xml_reads_back_with_the_configuration_s_own_frame_names(
    data, tmp_path: Path, capsys
) -> None:
    # a device set naming the image frame otherwise (<vtkPlusProbeCalibrationAlgo
    # ImageCoordinateFrame=...>): --xml wrote "ImagePlaneToProbe", which usnav's own loader
    # refused ("no ImageToProbe transform") while the TOML of the same run loaded
    _, cfg, cal, val = data
    text = cfg.read_text()
    assert "<vtkPlusProbeCalibrationAlgo" not in text
    named = tmp_path / "named.xml"
    named.write_text(
        text.replace(
            "</PlusConfiguration>",
            '  <vtkPlusProbeCalibrationAlgo ImageCoordinateFrame="ImagePlane" />\n'
            "</PlusConfiguration>",
        )
    )
    xml, out = tmp_path / "probe.xml", tmp_path / "probe.toml"
    more = ["--validation", str(val.path), "--xml", str(xml), "--out", str(out), "--json"]
    assert _spatial(named, cal.path, *more) == 0
    capsys.readouterr()
    assert set(read_coordinate_definitions(xml)) == {"ImagePlaneToProbe"}  # PLUS's names kept
    plus, toml = load_calibration(xml, warn=False), load_calibration(out, warn=False)
    assert plus.spatial is not None and toml.spatial is not None
    np.testing.assert_array_equal(plus.spatial.matrix, toml.spatial.matrix)
    assert plus.spatial.image_size_px == [synth.COLS, synth.ROWS]


def test_sections_merge_into_one_file(data, tmp_path: Path, capsys) -> None:
    _, cfg, cal, _ = data
    out = tmp_path / "probe.toml"
    # no validation recording: flagged (exit 1), and written all the same
    assert _spatial(cfg, cal.path, "--out", str(out)) == 1
    captured = capsys.readouterr()
    printed = captured.out
    assert "warning: no validation recording" in printed
    assert captured.err.splitlines()[-1] == (
        "usnav calibrate spatial: exit status 1: the calibration is flagged by 1 warning "
        f"above; it was written all the same ({out})"
    )
    assert "ImageToProbe" in printed
    # the precision, and the budget lines to paste with the warning of what they leave out
    assert "calibration precision (95 %, bootstrap" in printed
    assert "warning: these numbers state the calibration's PRECISION only" in printed
    snippet = printed[printed.index("[registration_budget]\n") :].split("\nwrote ")[0]
    table = tomllib.loads(snippet)["registration_budget"]
    assert set(table) == {"calibration_error_mm", "calibration_error_deg"}
    stored = load_calibration(out).spatial.precision
    assert table["calibration_error_mm"] >= stored.calibration_error_mm
    pivot_rec = _recording(
        tmp_path / "pivot.igs.mha", np.array([1.0, 2.0, 150.0]), np.array([0.0, 0.0, 0.0])
    )
    assert main(["calibrate", "pivot", str(pivot_rec), "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tip_in_tool_mm"][2] == pytest.approx(150, abs=0.3)
    tank = _tank_recording(tmp_path / "tank.igs.mha", lag=0.05)
    # the [spatial] section was computed at lag 0, the new [temporal] lag is -0.05 s: flagged
    assert (
        main(
            [
                "calibrate",
                "temporal",
                "--video",
                str(tank),
                "--out",
                str(out),
                "--report",
                str(tmp_path / "t.png"),
            ]
        )
        == 1
    )
    captured = capsys.readouterr()
    assert "TrackerLagSec = -0.05" in captured.out
    assert "usnav calibrate temporal: exit status 1" in captured.err
    merged = load_calibration(out)
    assert merged.spatial is not None and merged.pivot is not None
    assert merged.tracker_lag_s == pytest.approx(-0.05, abs=0.004)
    # only keys usnav since session 34 reads: it refuses unknown ones (extra = "forbid"), so
    # rms_error_mm stays in the JSON (docs/calibration.md, "Error figures")
    temporal_keys = set(tomllib.loads(out.read_text())["temporal"])
    assert temporal_keys == {"tracker_lag_s", "error", "max_error", "flagged", "warnings"}
    assert len(merged.sources) == 4
    assert cv2.imread(str(tmp_path / "t.png")) is not None


def test_bad_input_is_one_line_and_exit_2(data, tmp_path: Path, capsys) -> None:
    _, cfg, cal, _ = data
    code = main(
        [
            "calibrate",
            "spatial",
            "--config",
            str(tmp_path / "nope.xml"),
            "--calibration",
            str(cal.path),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "nope.xml" in err and err.count("\n") == 1
    lying = synth.write_recording(tmp_path / "mirror.igs.mha", 10, seed=3, flip="lr")
    assert (
        main(["calibrate", "spatial", "--config", str(cfg), "--calibration", str(lying.path)]) == 2
    )
    assert "orientation contradicts the phantom" in capsys.readouterr().err
    # with --report, the refusal still leaves a picture of what was segmented
    png = tmp_path / "refused.png"
    assert (
        main(
            [
                "calibrate",
                "spatial",
                "--config",
                str(cfg),
                "--calibration",
                str(lying.path),
                "--report",
                str(png),
            ]
        )
        == 2
    )
    assert f"see the report {png}" in capsys.readouterr().err
    assert cv2.imread(str(png)) is not None
    # an existing file that is not a calibration is not overwritten
    other = tmp_path / "other.toml"
    other.write_text("hello = 1\n")
    assert _spatial(cfg, cal.path, "--out", str(other)) == 2
    assert other.read_text() == "hello = 1\n"
    assert "unknown key 'hello'" in capsys.readouterr().err


def test_real_process_prints_json_and_progress(data) -> None:
    _, cfg, cal, _ = data
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "usnav",
            "calibrate",
            "spatial",
            "--config",
            str(cfg),
            "--calibration",
            str(cal.path),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # no validation recording: flagged, status 1, said in the JSON and in one line on stderr
    assert proc.returncode == 1, proc.stderr
    printed = json.loads(proc.stdout)
    assert printed["calibration"]["used"] == 23 and printed["flagged"] is True
    assert "segmenting calibration" in proc.stderr and "24/24" in proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        "usnav calibrate spatial: exit status 1: the calibration is flagged by 1 warning in the "
        'JSON "warnings"; nothing written'
    )


@pytest.fixture(scope="module")
def tank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A water-tank video whose temporal calibration succeeds (about 140 frames)."""
    return _tank_recording(tmp_path_factory.mktemp("tank") / "tank.igs.mha", lag=0.1)


def test_temporal_out_is_checked_before_the_video_is_segmented(tank, tmp_path: Path) -> None:
    not_toml = tmp_path / "lag.json"
    result = usnav(tmp_path, "calibrate", "temporal", "--video", str(tank), "--out", str(not_toml))
    assert_bad_input(result, "lag.json", "must be a .toml file")
    assert "segmenting" not in result.stderr and not not_toml.exists()
    other = tmp_path / "pipeline.toml"
    other.write_text("[pipeline]\nx = 1\n")
    result = usnav(tmp_path, "calibrate", "temporal", "--video", str(tank), "--out", str(other))
    assert_bad_input(result, "pipeline.toml", "not a usnav calibration file")
    assert "segmenting" not in result.stderr
    assert other.read_text() == "[pipeline]\nx = 1\n"


def test_the_printed_lag_says_which_stream_leads_as_plus_does(tank, capsys) -> None:
    # the tank's tracker stamps each moment 0.1 s before the video stamps the image of it:
    # TrackerLagSec -0.1, which PLUS ("> 0 if the tracker data lags") calls the tracker
    # leading; the output said "negative: the tracker runs behind" until session 43
    assert main(["calibrate", "temporal", "--video", str(tank)]) == 0
    out = capsys.readouterr().out
    assert "TrackerLagSec = -0.10" in out
    assert "stamp of a moment is 100 ms earlier than the image's" in out
    assert "the tracker stream leads the video" in out and "behind" not in out


@pytest.mark.needs_data
def test_a_mirrored_phantom_definition_exits_2_naming_the_file(
    shared_data: Path, tmp_path: Path, capsys
) -> None:
    from test_calibration_spatial import mirrored_fcal_definition

    config = mirrored_fcal_definition(shared_data, tmp_path / "mirrored.xml")
    plus = shared_data / "plus/TestImages"
    out = tmp_path / "probe.toml"
    code = _spatial(
        config,
        plus / "fCal_Test_Calibration_3NWires.igs.mha",
        "--validation",
        str(plus / "fCal_Test_Validation_3NWires.igs.mha"),
        "--out",
        str(out),
    )
    last = capsys.readouterr().err.splitlines()[-1]  # after the progress bars: one line
    assert code == 2 and not out.exists()
    assert last.startswith(f"usnav calibrate: error: {config}: the phantom definition mirrored")
    assert "check the <Wire> end points' x coordinates" in last


@pytest.mark.needs_data
def test_plus_water_tank_lag_is_printed_as_the_tracker_leading(plus_images: Path, capsys) -> None:
    video = plus_images / "WaterTankBottomTranslationVideoBuffer.igs.mha"
    tracker = plus_images / "WaterTankBottomTranslationTrackerBuffer.igs.mha"
    assert main(["calibrate", "temporal", "--video", str(video), "--tracker", str(tracker)]) == 0
    out = capsys.readouterr().out
    assert "TrackerLagSec = -0.0648 s" in out  # PLUS: -0.0648266
    assert "65 ms earlier than the image's, i.e. the tracker stream leads the video" in out


def test_pivot_output_names_the_frames_of_the_tool_given(tmp_path: Path, capsys) -> None:
    # StylusToTracker puts the pivot in Tracker coordinates: it was printed as "pivot in
    # reference frame" whatever --tool said
    tip, pivot = np.array([203.8, -12.3, 1.2]), np.array([5.0, 60.0, -30.0])
    path = _recording(tmp_path / "pivot.igs.mha", tip, pivot)
    assert main(["calibrate", "pivot", str(path), "--tool", "StylusToTracker"]) == 0
    out = capsys.readouterr().out
    assert "tip in Stylus frame (StylusTipToStylus): (203.7" in out
    assert "pivot in Tracker frame: (" in out and "eference" not in out
    assert main(["calibrate", "pivot", str(path)]) == 0
    assert "pivot in Reference frame: (4.9" in capsys.readouterr().out


@pytest.mark.parametrize(("kind", "replaced"), [("temporal", "--report"), ("pivot", "--xml")])
def test_force_help_names_only_options_the_command_has(kind: str, replaced: str, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["calibrate", kind, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    force = text[text.rindex("--force") :]
    assert force.startswith(f"--force replace an existing {replaced} file")


def test_a_flagged_temporal_calibration_exits_1_and_a_clean_one_0(
    tank, tmp_path: Path, capsys
) -> None:
    # a site's scripted QA reads the exit status: a lag computed from 5 s of motion is
    # flagged (status 1) and still written; the 12 s recording is not flagged (status 0)
    assert main(["calibrate", "temporal", "--video", str(tank), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["flagged"] is False
    short = _tank_recording(tmp_path / "short.igs.mha", lag=0.1, duration_s=5.0)
    out = tmp_path / "probe.toml"
    assert main(["calibrate", "temporal", "--video", str(short), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "warning: only" in captured.out and "record longer" in captured.out
    assert captured.err.splitlines()[-1] == (
        "usnav calibrate temporal: exit status 1: the calibration is flagged by 1 warning "
        f"above; it was written all the same ({out})"
    )
    assert load_calibration(out).tracker_lag_s == pytest.approx(-0.1, abs=0.01)


# -------------------------------------------- a flagged calibration stays flagged (session 34)


def _flag_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER and r.levelno == logging.WARNING and "FLAGGED" in r.getMessage()
    ]


def test_a_flagged_spatial_calibration_is_recorded_and_warned_of_on_every_load(
    data, tmp_path: Path, capsys, caplog
) -> None:
    _, cfg, cal, _ = data
    out, xml = tmp_path / "probe.toml", tmp_path / "probe.xml"
    # no validation recording: flagged (exit status 1), written all the same
    assert _spatial(cfg, cal.path, "--out", str(out), "--xml", str(xml), "--json") == 1
    capsys.readouterr()
    stored = tomllib.loads(out.read_text())["spatial"]
    assert stored["flagged"] is True
    assert len(stored["warnings"]) == 1 and "no validation recording" in stored["warnings"][0]
    # PLUS's reader sees the transform as before: From/To/Matrix; the flag is extra
    transform = read_coordinate_definitions(xml)["ImageToProbe"]
    assert transform.attributes["Flagged"] == "TRUE"
    assert transform.warnings == stored["warnings"]
    for path in (out, xml):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            loaded = load_calibration(path)
        assert loaded.spatial is not None and loaded.spatial.flagged is True
        lines = _flag_lines(caplog)
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"{path} is a FLAGGED calibration")
        assert "[spatial]: no validation recording" in lines[0]


@pytest.mark.parametrize(("word", "flagged"), [("true", True), (" False ", False), ("maybe", None)])
def test_a_flag_that_is_not_true_or_false_is_refused_not_cleared(
    data, tmp_path: Path, capsys, word: str, flagged: bool | None
) -> None:
    """``Flagged="maybe"`` (a damaged or hand-edited --xml) loaded as a calibration nobody
    flagged; PLUS's booleans in any case load, anything else is bad input naming the field."""
    _, cfg, cal, _ = data
    xml = tmp_path / "probe.xml"
    assert _spatial(cfg, cal.path, "--xml", str(xml)) == 1  # no validation recording
    capsys.readouterr()
    edited = tmp_path / "edited.xml"
    edited.write_text(xml.read_text().replace('Flagged="TRUE"', f'Flagged="{word}"'))
    if flagged is not None:
        assert load_calibration(edited, warn=False).spatial.flagged is flagged
        return
    with pytest.raises(ConfigError, match=r"Transform\[1\]: Flagged: is 'maybe', expected TRUE"):
        load_calibration(edited)
    code = main(["replay", str(cal.path), "--calibration", str(edited), "--port", "0"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "edited.xml" in err and "Flagged" in err


def test_an_unflagged_calibration_and_an_older_file_load_without_a_warning(
    data, tmp_path: Path, capsys, caplog
) -> None:
    _, cfg, cal, val = data
    out, xml = tmp_path / "probe.toml", tmp_path / "probe.xml"
    assert (
        _spatial(cfg, cal.path, "--validation", str(val.path), "--out", str(out), "--xml", str(xml))
        == 0
    )
    capsys.readouterr()
    assert tomllib.loads(out.read_text())["spatial"]["flagged"] is False
    assert read_coordinate_definitions(xml)["ImageToProbe"].attributes["Flagged"] == "FALSE"
    # a file written before session 34: no flagged key, read as not recorded, no warning
    older = tmp_path / "older.toml"
    older.write_text(
        "\n".join(
            line
            for line in out.read_text().splitlines()
            if not line.startswith(("flagged", "warnings"))
        )
    )
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for path in (out, xml, older):
            load_calibration(path)
    assert load_calibration(older).spatial.flagged is None
    assert _flag_lines(caplog) == []


def test_a_flagged_temporal_section_is_kept_when_the_spatial_one_is_replaced(
    data, tmp_path: Path, capsys, caplog
) -> None:
    _, cfg, cal, val = data
    out = tmp_path / "probe.toml"
    short = _tank_recording(tmp_path / "short.igs.mha", lag=0.0, duration_s=5.0)
    # a lag from 5 s of motion: flagged
    assert main(["calibrate", "temporal", "--video", str(short), "--out", str(out)]) == 1
    # a clean spatial calibration into the same file replaces only [spatial]
    assert _spatial(cfg, cal.path, "--validation", str(val.path), "--out", str(out)) == 0
    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        loaded = load_calibration(out)
    assert loaded.spatial.flagged is False and loaded.temporal.flagged is True
    lines = _flag_lines(caplog)
    assert len(lines) == 1 and "[temporal]: only" in lines[0] and "[spatial]" not in lines[0]
