"""Bad inputs found by session 35's outside audit of the command line; each failed before its
fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import assert_bad_input, usnav

from usnav.errors import InputError
from usnav.evaluate.resect import write_resect_dataset


@pytest.mark.parametrize(
    ("args", "words"),
    [
        # reached numpy's random generator: "internal error: ValueError: expected
        # non-negative integer", exit 3, after an empty DIR was made
        (["--seed", "-1"], ["--seed", "non-negative"]),
        (["--sweeps", "0"], ["--sweeps", "at least 1"]),
        (["--frames", "1"], ["--frames", "at least 2"]),
    ],
)
def test_resect_sweeps_refuses_bad_counts_before_making_anything(
    tmp_path: Path, args: list[str], words: list[str]
) -> None:
    # no outside data here: the refusal must come before it is looked for
    result = usnav(tmp_path, "resect-sweeps", "--out", "ds", "--data", "nowhere", *args)
    assert_bad_input(result, *words)
    assert not (tmp_path / "ds").exists()


def test_resect_dataset_refuses_a_negative_seed_before_reading_the_data(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="seed"):
        write_resect_dataset(tmp_path / "nowhere", tmp_path / "ds", seed=-1)


#: usnav run's required options (files it never reaches: --options is read first)
RUN = ["run", "--device", "d.toml", "--mri", "m.nii", "--label", "l.nii", "--calibration", "c.toml"]


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "options.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "key"),
    [
        # a key above the table is at the top level: it was ignored without a word, and the
        # run went on with the default metric
        ('metric = "lc2"\n[registration]\nthreads = 1\n', "'metric'"),
        ('[registration]\nthreads = 1\n[other]\nmetric = "lc2"\n', "'other'"),
    ],
)
def test_a_registration_option_outside_its_table_is_refused(
    tmp_path: Path, text: str, key: str
) -> None:
    config = _config(tmp_path, text)
    result = usnav(tmp_path, "evaluate", "manifest.csv", "--out", "runs", "--config", str(config))
    assert_bad_input(result, str(config), key, "[registration] table")


@pytest.mark.parametrize(
    ("command", "text", "seen"),
    [
        (["evaluate", "manifest.csv", "--out", "runs", "--config"], "threads = -5\n", "got -5"),
        (
            ["evaluate", "manifest.csv", "--out", "runs", "--config"],
            '[registration]\nmetric = "nope"\n',
            "got 'nope'",
        ),
        # register's [registration] table given to usnav run --options, whose `registration`
        # is a switch: "should be a valid boolean" alone did not say what the file had
        (
            [*RUN, "--options"],
            '[registration]\nmetric = "lc2"\n',
            "got a table",
        ),
        (
            ["replay", "--port", "0", "--config"],
            '[playback]\nrecording = "r.igs.mha"\nport = "5556x"\n',
            "got '5556x'",
        ),
        (["replay", "--port", "0", "--config"], "[playback]\nrecording = [1, 2]\n", "got a list"),
    ],
)
def test_a_config_value_of_the_wrong_kind_says_what_the_file_gave(
    tmp_path: Path, command: list[str], text: str, seen: str
) -> None:
    config = _config(tmp_path, text)
    assert_bad_input(usnav(tmp_path, *command, str(config)), str(config), seen)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        # TOML has inf: a LIVE threshold of inf made every registration LIVE, accepted silently
        ("[display]\nlive_max_boundary_error_mm = inf\n", "'display.live_max_boundary_error_mm'"),
        ("[display]\nmax_unchecked_s = inf\n", "'display.max_unchecked_s'"),
        ("[margins]\nmin_area_mm2 = inf\n", "'margins.min_area_mm2'"),
        ("record_finish_timeout_s = inf\n", "'record_finish_timeout_s'"),
        ("[registration_budget]\nsimilarity_bias_mm = inf\n", "'registration_budget"),
        # squared to derive the registration's limit: an OverflowError, "internal error", exit 3
        ("[display]\nlive_max_boundary_error_mm = 1e308\n", "'display.live_max_boundary_error_mm'"),
    ],
)
def test_run_options_refuse_values_no_threshold_can_have(
    tmp_path: Path, text: str, key: str
) -> None:
    config = _config(tmp_path, text)
    assert_bad_input(usnav(tmp_path, *RUN, "--options", str(config)), str(config), key)


def test_the_viewer_refuses_a_lost_after_that_would_hide_a_hung_publisher(tmp_path: Path) -> None:
    """``--lost-after 1e23`` was accepted: a publisher that hung with its connection open would
    have kept its last overlay as it was for ever."""
    result = usnav(tmp_path, "view", "--connect", "tcp://127.0.0.1:1", "--lost-after", "1e23")
    assert_bad_input(result, "lost_after_s", "120")
