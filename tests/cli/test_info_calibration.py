"""``usnav info CAL.toml`` says which image size (depth preset) a calibration was made for,
its mm per pixel, lag and pivot (session 41: with one calibration per depth given to
``usnav run``, an OR engineer must tell the files apart). Real processes."""

from __future__ import annotations

import json
from pathlib import Path

from cli_helpers import assert_bad_input, usnav

from usnav.config.calibration import (
    PivotCalibration,
    TemporalCalibration,
    load_calibration,
    save_calibration,
)

ROOT = Path(__file__).resolve().parents[2]


def test_info_describes_a_calibration_file(tmp_path: Path) -> None:
    shipped = load_calibration(ROOT / "calibration" / "sim-L10.toml")
    cal = shipped.model_copy(
        update={
            "temporal": TemporalCalibration(tracker_lag_s=-0.0648),
            "pivot": PivotCalibration(
                tip_in_tool_mm=[0.0, 0.0, 150.0],
                pivot_in_reference_mm=[1.0, 2.0, 3.0],
                rms_error_mm=0.41,
            ),
        }
    )
    path = save_calibration(cal, tmp_path / "L10-4cm.toml")
    result = usnav(tmp_path, "info", str(path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"{path}: probe calibration (usnav-sim-L10)" in out
    assert "ImageToProbe for 256 × 256 px images, 0.1500 × 0.1562 mm per pixel" in out
    assert "tracker lag -0.0648 s" in out and "StylusToReference, rms 0.41 mm" in out

    doc = json.loads(usnav(tmp_path, "info", "--json", str(path)).stdout)
    assert doc["kind"] == "calibration" and doc["spatial"]["image_size_px"] == [256, 256]
    assert doc["spatial"]["spacing_mm"] == list(shipped.spatial.spacing_mm)
    assert doc["temporal"]["tracker_lag_s"] == -0.0648


def test_info_refuses_a_toml_that_is_no_calibration(tmp_path: Path) -> None:
    device = tmp_path / "probe.toml"
    device.write_text('[probe]\nhost = "127.0.0.1"\nport = 18944\n')
    line = assert_bad_input(usnav(tmp_path, "info", str(device)), str(device))
    assert "is not a probe calibration" in line and "a device or options file is not one" in line
