"""A refusal names the option the user gave and lists what works (QA): ``demo --cache`` under
a file, ``reconstruct --out`` of a format it cannot write. Real processes."""

from __future__ import annotations

import numpy as np
from cli_helpers import assert_bad_input, usnav

from usnav.frames import TrackedFrame, TrackedTransform
from usnav.io.sequence import write_sequence


def test_demo_cache_under_a_file_names_cache(tmp_path):
    blocker = tmp_path / "some.json"
    blocker.write_text("{}")
    line = assert_bad_input(
        usnav(tmp_path, "demo", "--cache", str(blocker / "c")),
        "some.json: is a file, so --cache cannot go under it",
    )
    assert "--out" not in line
    out = tmp_path / "snapshots"  # with --out given, the cache is still checked first
    assert_bad_input(
        usnav(tmp_path, "demo", "--cache", str(blocker / "c"), "--out", str(out)),
        "--cache cannot go under it",
    )


def test_reconstruct_out_lists_every_format_it_writes_before_reading_the_sweep(tmp_path):
    frames = [
        TrackedFrame(
            image=np.full((16, 20), 9, np.uint8),
            transforms={"ProbeToReference": TrackedTransform(np.eye(4))},
            t_device=0.1 * i,
        )
        for i in range(3)
    ]
    sweep = write_sequence(tmp_path / "sweep.igs.mha", frames)
    calibration = tmp_path / "calibration.txt"
    calibration.write_text("0.2 0 0 0  0 0.2 0 0  0 0 0.2 0  0 0 0 1\n")
    result = usnav(
        tmp_path, "reconstruct", str(sweep), "--calibration", str(calibration), "--out", "v.png"
    )
    assert_bad_input(result, "v.png: unknown volume format", "use .mha, .nii, .nii.gz or .nrrd")
    # checked first: a sweep that would be refused later does not hide it
    missing = tmp_path / "missing.igs.mha"
    result = usnav(
        tmp_path, "reconstruct", str(missing), "--calibration", str(calibration), "--out", "v.png"
    )
    assert_bad_input(result, "v.png: unknown volume format")
    assert (
        usnav(
            tmp_path, "reconstruct", str(sweep), "--calibration", str(calibration), "--out", "v.mha"
        ).returncode
        == 0
    )
