"""A device file's ``[probe] calibration``: read by every command that opens the probe, found
beside the device file, and never silently outvoted by the command's own calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_bad_input, usnav

from usnav.config.calibration import (
    CalibrationFile,
    SpatialCalibration,
    TemporalCalibration,
    save_calibration,
)
from usnav.devices.config import load_probe_config
from usnav.devices.probe import ProbeClient
from usnav.errors import ConfigError

SPATIAL = SpatialCalibration(image_to_probe=np.diag([0.2, 0.2, 0.2, 1.0]).tolist())


def device_file(folder: Path, calibration: str) -> Path:
    path = folder / "dev.toml"
    path.write_text(f'[probe]\nport = 47999\ncalibration = "{calibration}"\n')
    return path


def test_the_device_files_tracker_lag_is_used_beside_the_commands_calibration(tmp_path) -> None:
    """`usnav run --calibration CAL` never read the device file's calibration: a tracker lag
    kept there (as docs/devices.md says to) was silently dropped."""
    save_calibration(
        CalibrationFile(temporal=TemporalCalibration(tracker_lag_s=-0.065)), tmp_path / "lag.toml"
    )
    dev = device_file(tmp_path, "lag.toml")  # relative: found beside the device file
    spatial_only = CalibrationFile(spatial=SPATIAL)
    probe = ProbeClient(load_probe_config(dev), calibration=spatial_only, config_path=dev)
    assert probe.time_offset_s == pytest.approx(-0.065)
    np.testing.assert_allclose(probe.calibration_stage.image_to_probe, np.diag([0.2] * 3 + [1]))


def test_two_different_tracker_lags_are_refused(tmp_path) -> None:
    save_calibration(
        CalibrationFile(temporal=TemporalCalibration(tracker_lag_s=-0.065)), tmp_path / "lag.toml"
    )
    dev = device_file(tmp_path, "lag.toml")
    other = CalibrationFile(spatial=SPATIAL, temporal=TemporalCalibration(tracker_lag_s=0.02))
    with pytest.raises(ConfigError, match=r"dev\.toml: probe\.calibration.*-0\.0650 s differs"):
        ProbeClient(load_probe_config(dev), calibration=other, config_path=dev)


def test_a_missing_device_calibration_is_refused_naming_the_key(tmp_path) -> None:
    dev = device_file(tmp_path, "nonexistent.toml")
    with pytest.raises(ConfigError, match=r"dev\.toml: probe\.calibration.*nonexistent\.toml"):
        ProbeClient(
            load_probe_config(dev), calibration=CalibrationFile(spatial=SPATIAL), config_path=dev
        )


def test_record_refuses_it_before_waiting_for_frames(tmp_path) -> None:
    """It said "waiting for frames…", then an error naming only 'nonexistent.toml'."""
    device_file(tmp_path, "nonexistent.toml")
    result = usnav(tmp_path, "record", "--config", "dev.toml", "--out", "r.igs.mha")
    line = assert_bad_input(result, "dev.toml: probe.calibration", "nonexistent.toml")
    assert "waiting for frames" not in result.stderr, line
