"""A check across the keys of a table (a model validator) is said as its own message, naming
the table: it read ``key '(top level)': Value error, …, got a table``. Real processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import assert_bad_input, usnav

RUN = ["run", "--device", "d.toml", "--mri", "m.nii", "--label", "l.nii", "--calibration", "c.toml"]


def _no_noise(line: str) -> None:
    assert "(top level)" not in line and "Value error" not in line and "got a table" not in line


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('family = "nosuch"\n', "family: unknown appearance family 'nosuch'; choose one of"),
        ("cord_shift_mm = [2.0, 1.0]\n", "cord_shift_mm must be [min, max]"),
        ("levels = 2\nlaminectomy_levels = 3\n", "laminectomy_levels (3) exceeds"),
    ],
)
def test_a_simulate_options_file_failing_a_cross_key_check(
    tmp_path: Path, text: str, says: str
) -> None:
    options = tmp_path / "sim.toml"
    options.write_text(text, encoding="utf-8")
    result = usnav(tmp_path, "simulate", "--seed", "1", "--options", str(options), "--out", "c")
    line = assert_bad_input(result, f"{options}: {says}")
    _no_noise(line)
    assert not (tmp_path / "c").exists()


def test_a_run_options_table_failing_a_cross_key_check_is_named(tmp_path: Path) -> None:
    options = tmp_path / "run.toml"
    options.write_text("[margins]\nsolid_label = 2\ncyst_label = 2\n", encoding="utf-8")
    line = assert_bad_input(
        usnav(tmp_path, *RUN, "--options", str(options)),
        f"{options}: [margins] cyst_label must differ from solid_label",
    )
    _no_noise(line)
