"""A probe calibrated at several depths: ``usnav run --calibration A.toml B.toml`` places each
frame with the calibration made for its image size, so the surgeon can change the depth on the
scanner mid-run (session 41; until then a depth change left every frame STALE until a restart
with the other calibration). Real loopback OpenIGTLink server, real ZeroMQ display."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_bad_input, usnav
from pipeline_helpers import LoopbackDevice, wait_until
from test_live import Collector

from usnav.client import MarginMessage
from usnav.config.calibration import (
    CalibrationFile,
    PivotCalibration,
    TemporalCalibration,
    calibration_for_size,
    check_depth_calibrations,
    load_calibration,
    save_calibration,
)
from usnav.devices import ProbeClient
from usnav.devices.config import ProbeConfig
from usnav.errors import ConfigError
from usnav.frames import TrackedFrame, TrackedTransform, TransformStatus
from usnav.io.volume import load_volume
from usnav.pipeline.config import PipelineOptions
from usnav.pipeline.live import LivePipeline
from usnav.pipeline.run import open_pipeline
from usnav.protocol.display import STALE
from usnav.registration.files import read_initial

TRACKER = ["ProbeToTracker", "ReferenceToTracker"]


class _Scanner(LoopbackDevice):
    """The sweep at 20 Hz, each image with :attr:`extra_rows` more rows below (the depth
    changed on the scanner: 0 is the depth of the case's calibration)."""

    extra_rows = 0

    def messages(self, frame, timestamp: float):
        if self.extra_rows:
            frame = dataclasses.replace(
                frame, image=np.pad(frame.image, ((0, self.extra_rows), (0, 0)))
            )
        return super().messages(frame, timestamp)


def _other_depth(
    calibration: CalibrationFile, size: tuple[int, int], path: Path, *, x_scale: float = 1.1
) -> CalibrationFile:
    """The calibration of another depth preset: its own image size and mm per pixel (columns
    ``x_scale`` times as wide), saved and read back as a file."""
    assert calibration.spatial is not None
    matrix = calibration.spatial.matrix.copy()
    matrix[:3, 0] *= x_scale
    spatial = calibration.spatial.model_copy(
        update={"image_to_probe": matrix.tolist(), "image_size_px": list(size)}
    )
    save_calibration(calibration.model_copy(update={"spatial": spatial}), path)
    return load_calibration(path)


def test_several_calibrations_must_be_told_apart_by_image_size(
    small_case: Path, tmp_path: Path
) -> None:
    first = load_calibration(small_case / "calibration.toml")
    cols, rows = first.image_size
    deeper = _other_depth(first, (cols, rows + 64), tmp_path / "deeper.toml")
    check_depth_calibrations([first, deeper])  # two sizes: accepted
    assert calibration_for_size([first, deeper], (cols, rows)) is first
    assert calibration_for_size([first, deeper], (cols, rows + 64)) is deeper
    assert calibration_for_size([first, deeper], (cols, rows + 32)) is None

    same = _other_depth(first, (cols, rows), tmp_path / "same.toml")
    with pytest.raises(ConfigError) as caught:
        check_depth_calibrations([first, same])
    assert str(tmp_path / "same.toml") in str(caught.value)
    assert f"{cols} × {rows} px" in str(caught.value) and "one calibration per" in str(caught.value)

    unsized = first.model_copy(
        update={"spatial": first.spatial.model_copy(update={"image_size_px": None})}
    )
    save_calibration(unsized, tmp_path / "unsized.toml")
    with pytest.raises(ConfigError, match="does not record the image size"):
        check_depth_calibrations([deeper, load_calibration(tmp_path / "unsized.toml")])
    # one calibration alone, sized or not, is as before
    check_depth_calibrations([load_calibration(tmp_path / "unsized.toml")])

    # one probe and tracker: one lag (in one file, or the same in each)
    a = first.model_copy(update={"temporal": TemporalCalibration(tracker_lag_s=0.05)})
    b = deeper.model_copy(update={"temporal": TemporalCalibration(tracker_lag_s=0.02)})
    with pytest.raises(ConfigError, match="tracker lag"):
        check_depth_calibrations([a, b])
    check_depth_calibrations([a, deeper])


def test_the_depth_changed_mid_run_is_placed_with_that_depths_calibration(
    small_case: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = load_calibration(small_case / "calibration.toml")
    cols, rows = first.image_size
    deeper = _other_depth(first, (cols, rows + 64), tmp_path / "deeper.toml")
    scanner = _Scanner(small_case)
    probe = ProbeClient(
        ProbeConfig(port=scanner.server.port, transforms=TRACKER), calibration=first
    )
    pipeline = LivePipeline(
        probe,
        load_volume(small_case / "tumor_label.nii.gz"),
        first,
        read_initial(small_case / "init_ReferenceToMri.txt"),
        mri=load_volume(small_case / "mri.nii.gz"),
        options=PipelineOptions(
            publish_address="tcp://127.0.0.1:*", status_interval_s=0.1, registration=False
        ),
        other_depths=[deeper],
    )
    pipeline.prepare()
    display = Collector(pipeline.endpoint)

    def placed(shape: tuple[int, int]) -> list[MarginMessage]:
        return [
            m
            for m in display.of(MarginMessage)
            if m.image_shape == shape and m.header.image_to_mri is not None
        ]

    try:
        display.join(pipeline)
        with caplog.at_level(logging.INFO, logger="usnav.pipeline"):
            pipeline.start()
            assert wait_until(lambda: len(placed((rows, cols))) >= 3, 30)
            scanner.extra_rows = 64
            assert wait_until(lambda: len(placed((rows + 64, cols))) >= 3, 15)
            scanner.extra_rows = 0
            back = len(placed((rows, cols)))
            assert wait_until(lambda: len(placed((rows, cols))) >= back + 3, 15)
            # each size with its own calibration's mm per pixel, nothing refused
            assert pipeline.counters.problems.get("image_size", 0) == 0
            for shape, cal in (((rows, cols), first), ((rows + 64, cols), deeper)):
                for m in placed(shape):
                    assert m.spacing_mm == pytest.approx(cal.spatial.spacing_mm, rel=1e-6)
            said = [r.getMessage() for r in caplog.records if "are placed with" in r.getMessage()]
            assert any(str(tmp_path / "deeper.toml") in line for line in said), said
            assert any(str(small_case / "calibration.toml") in line for line in said), said
            # the status says which file places the frames now
            assert pipeline.status()["calibration_in_use"] == first.where

            # a depth nobody calibrated: not placed, said with the sizes that were
            scanner.extra_rows = 32
            assert wait_until(lambda: pipeline.counters.problems.get("image_size", 0) >= 3, 15)
        # the terminal's warning says what to do too (not only the run's summary at its end)
        warned = [
            r.getMessage()
            for r in caplog.records
            if r.levelno == logging.WARNING and "calibrations given are for" in r.getMessage()
        ]
        assert len(warned) == 1, warned
        assert "calibrate this depth" in warned[0] and "set the scanner back" in warned[0]
        reason = pipeline.status()["display_reason"]
        assert f"{cols} × {rows + 32} px: no calibration was given for this size" in reason
        assert f"{cols} × {rows}, {cols} × {rows + 64} px" in reason
        assert not placed((rows + 32, cols))
        assert pipeline.status()["display_state"] == STALE
    finally:
        pipeline.stop()
        display.close()
        scanner.close()


def test_usnav_run_refuses_two_calibrations_for_one_size(small_case: Path, tmp_path: Path) -> None:
    """Which of the two would a frame be placed with? One line naming the second file, exit 2,
    before any socket is opened."""
    first = load_calibration(small_case / "calibration.toml")
    twin = _other_depth(first, first.image_size, tmp_path / "twin.toml")
    device = tmp_path / "probe.toml"
    device.write_text("[probe]\nport = 1\n")
    result = usnav(
        tmp_path,
        "run",
        "--device",
        str(device),
        "--mri",
        str(small_case / "mri.nii.gz"),
        "--label",
        str(small_case / "tumor_label.nii.gz"),
        "--calibration",
        str(small_case / "calibration.toml"),
        str(twin.where),
        "--no-registration",
    )
    cols, rows = first.image_size
    assert_bad_input(
        result, str(tmp_path / "twin.toml"), f"{cols} × {rows} px", "one calibration per image"
    )


@pytest.mark.parametrize("deeper_first", [False, True])
def test_each_depths_calibration_is_checked_against_the_lag_frames_are_paired_at(
    small_case: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, deeper_first: bool
) -> None:
    """An ImageToProbe computed with its images paired at another lag than the run pairs at
    is said (one line naming the file), whichever place its file has among the calibrations:
    only the probe's own (the first with a [temporal] section, else the first) was checked,
    so a deeper preset calibrated at +0.08 s was used without a word unless listed first."""
    first = load_calibration(small_case / "calibration.toml")
    cols, rows = first.image_size
    deeper = _other_depth(first, (cols, rows + 64), tmp_path / "deeper.toml")
    assert deeper.spatial is not None
    lagged = deeper.spatial.model_copy(update={"tracker_lag_s": 0.08})
    save_calibration(deeper.model_copy(update={"spatial": lagged}), tmp_path / "deeper.toml")
    device = tmp_path / "probe.toml"
    device.write_text("[probe]\nport = 1\n")
    files = [small_case / "calibration.toml", tmp_path / "deeper.toml"]
    with caplog.at_level(logging.WARNING):
        open_pipeline(
            device,
            small_case / "mri.nii.gz",
            small_case / "tumor_label.nii.gz",
            files[::-1] if deeper_first else files,
            init=small_case / "init_ReferenceToMri.txt",
            options=PipelineOptions(registration=False),
        )
    said = [
        r.getMessage()
        for r in caplog.records
        if "paired with the pose at t +0.080 s" in r.getMessage()
    ]
    assert len(said) == 1, said
    assert str(tmp_path / "deeper.toml") in said[0]


def test_the_stylus_pivot_is_taken_from_whichever_depths_file_holds_it(
    small_case: Path, tmp_path: Path
) -> None:
    """``usnav calibrate pivot --out`` writes the [pivot] section into one file; with the depth
    presets given as ``--calibration 3cm.toml 5cm.toml`` and the pivot in 5cm.toml, the
    stylus was silently never placed (only the first file's pivot was read). Two files whose
    pivots differ are refused: one stylus has one tip."""
    first = load_calibration(small_case / "calibration.toml")
    cols, rows = first.image_size
    deeper = _other_depth(first, (cols, rows + 64), tmp_path / "deeper.toml")
    pivot = PivotCalibration(
        tip_in_tool_mm=[0.0, 0.0, 10.0], pivot_in_reference_mm=[0.0, 0.0, 0.0], rms_error_mm=0.1
    )
    save_calibration(deeper.model_copy(update={"pivot": pivot}), tmp_path / "deeper.toml")
    deeper = load_calibration(tmp_path / "deeper.toml")
    probe = ProbeClient(ProbeConfig(port=1, transforms=TRACKER), calibration=first)
    pipeline = LivePipeline(
        probe,
        load_volume(small_case / "tumor_label.nii.gz"),
        first,
        read_initial(small_case / "init_ReferenceToMri.txt"),
        options=PipelineOptions(registration=False),
        other_depths=[deeper],
    )
    stylus = np.eye(4)
    stylus[0, 3] = 5.0
    frame = TrackedFrame(
        image=np.zeros((rows, cols), np.uint8),
        transforms={pivot.tool: TrackedTransform(stylus, TransformStatus.OK)},
    )
    tip = pipeline._stylus_tip_mri(frame, pipeline.initial)
    assert tip is not None
    expected = pipeline.initial.margins_reference_to_mri @ [5.0, 0.0, 10.0, 1.0]
    np.testing.assert_allclose(tip, expected[:3])

    other = pivot.model_copy(update={"tip_in_tool_mm": [0.0, 0.0, 12.0]})
    with pytest.raises(ConfigError, match="pivot") as caught:
        check_depth_calibrations([first.model_copy(update={"pivot": other}), deeper])
    assert str(tmp_path / "deeper.toml") in str(caught.value)
    check_depth_calibrations([first.model_copy(update={"pivot": pivot}), deeper])  # the same


def test_a_file_that_cannot_record_its_size_is_told_what_to_write(
    small_case: Path, tmp_path: Path
) -> None:
    """Among several calibrations, a 16-number (or PLUS XML) file records no image size; it has
    no [spatial] section to add ``image_size_px`` to, as the message told to do."""
    first = load_calibration(small_case / "calibration.toml")
    cols, rows = first.image_size
    deeper = _other_depth(first, (cols, rows + 64), tmp_path / "deeper.toml")
    numbers = tmp_path / "ImageToProbe.txt"
    numbers.write_text("\n".join(" ".join(map(str, row)) for row in first.image_to_probe))
    with pytest.raises(ConfigError) as caught:
        check_depth_calibrations([deeper, load_calibration(numbers)])
    said = str(caught.value)
    assert str(numbers) in said and "does not record the image size" in said
    assert "to its [spatial] section" not in said
    assert "usnav TOML" in said and "image_size_px = [cols, rows]" in said


def test_a_device_files_other_lag_names_the_depths_file_it_differs_from(
    small_case: Path, tmp_path: Path
) -> None:
    """The device file's calibration keeps the tracker lag; one of several depth files with
    another lag was refused as "the calibration the command was given": which one, of
    several, was left to guess."""
    first = load_calibration(small_case / "calibration.toml")
    cols, rows = first.image_size
    deeper = _other_depth(first, (cols, rows + 64), tmp_path / "deeper.toml")
    timed = deeper.model_copy(update={"temporal": TemporalCalibration(tracker_lag_s=0.05)})
    save_calibration(timed, tmp_path / "deeper.toml")
    (tmp_path / "lag.toml").write_text("[temporal]\ntracker_lag_s = 0.02\n")
    device = tmp_path / "probe.toml"
    device.write_text('[probe]\nport = 1\ncalibration = "lag.toml"\n')
    with pytest.raises(ConfigError) as caught:
        open_pipeline(
            device,
            small_case / "mri.nii.gz",
            small_case / "tumor_label.nii.gz",
            [small_case / "calibration.toml", tmp_path / "deeper.toml"],
            init=small_case / "init_ReferenceToMri.txt",
            options=PipelineOptions(registration=False),
        )
    said = str(caught.value)
    assert "+0.0200 s" in said and "+0.0500 s" in said
    assert str(tmp_path / "deeper.toml") in said
