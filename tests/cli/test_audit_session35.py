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
