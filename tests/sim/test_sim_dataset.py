"""``usnav simulate --seeds``: many cases, a manifest, resuming, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from sim_helpers import TINY

from usnav.config.calibration import load_calibration
from usnav.errors import InputError
from usnav.io.manifest import read_manifest
from usnav.sim.dataset import parse_families, parse_seeds, simulate_dataset
from usnav.sim.families import FAMILIES, Appearance, draw_appearance
from usnav.sim.options import make_options
from usnav.sim.truth import load_truth


@pytest.mark.parametrize(
    "spec, seeds",
    [("1-4", [1, 2, 3, 4]), ("1,3,7", [1, 3, 7]), ("1-3,10", [1, 2, 3, 10]), (" 5 ", [5])],
)
def test_seed_lists(spec, seeds):
    assert parse_seeds(spec) == seeds


@pytest.mark.parametrize("spec", ["", "a", "1-", "-3", "4-2", "1,1", "1-3,2", "1.5", "1;2"])
def test_bad_seed_lists_are_refused(spec):
    with pytest.raises(InputError, match="--seeds"):
        parse_seeds(spec)


def test_family_lists():
    assert parse_families(None) == list(FAMILIES)
    assert parse_families("sos-error, baseline") == ["sos-error", "baseline"]
    for bad in ("", "nope", "baseline,baseline"):
        with pytest.raises(InputError):
            parse_families(bad)
    # which one: "a family is listed twice" left the user to find it in a long list
    with pytest.raises(InputError, match="sos-error listed twice"):
        parse_families("sos-error,baseline,mixed,sos-error")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "data"
    options = make_options(**TINY)
    result = simulate_dataset([4, 9, 2], out, options, ["miscalibrated", "sos-error"])
    return out, options, result


#: What the two families of the dataset draw (docs/simulator.md), to read back from truth.json.
WRITTEN_DRAWS = {
    "miscalibrated": {
        "calibration_rotation_deg": (0.3, 1.0),
        "calibration_translation_mm": (0.3, 1.0),
        "jitter_mm": (0.1, 0.5),
        "jitter_deg": (0.05, 0.3),
        "unrecorded_lag_s": (-0.04, 0.04),
    },
    "sos-error": {"saline_speed_m_s": (1480.0, 1580.0), "csf_speed_m_s": (1480.0, 1580.0)},
}


def test_dataset_writes_one_case_per_seed_and_a_manifest_read_back_with_its_tags(dataset):
    out, _, result = dataset
    baseline = Appearance().as_dict()
    cases = read_manifest(out / "manifest.csv")
    assert [c.case for c in cases] == ["miscalibrated-4", "sos-error-9", "miscalibrated-2"]
    assert [c.family for c in cases] == ["miscalibrated", "sos-error", "miscalibrated"]
    assert [c.tags["seed"] for c in cases] == ["4", "9", "2"]
    assert {c.tags["site"] for c in cases} == {"usnav-sim"}
    for c in cases:
        for path in (c.recording, c.mri, c.label, c.calibration, c.init, c.truth):
            assert path is not None and path.is_file()
        truth = json.loads(c.truth.read_text())
        seed = int(c.tags["seed"])
        assert truth["seed"] == seed and truth["family"] == c.family
        drawn = draw_appearance(c.family, seed).as_dict()
        assert {k: truth["appearance"][k] for k in drawn} == drawn  # every drawn value
        # the sweep pattern is a tag, so usnav evaluate can group by it
        assert c.tags["sweep_pattern"] == truth["appearance"]["sweep_pattern"]
        # ... and they are the family's own values, not the baseline's
        for key, (lo, hi) in WRITTEN_DRAWS[c.family].items():
            assert lo <= truth["appearance"][key] <= hi
            assert truth["appearance"][key] != baseline[key]
    assert sorted(result.simulated) == sorted(c.case for c in cases) and not result.skipped


def test_written_calibration_is_the_wrong_one_for_a_miscalibrated_case(dataset):
    out, _, _ = dataset
    case = read_manifest(out / "manifest.csv")[0]
    truth = json.loads(case.truth.read_text())
    calibration = load_calibration(case.calibration)
    written = np.asarray(calibration.spatial.image_to_probe)
    assert calibration.temporal is None  # the true lag is not written for the user
    assert truth["tracker_lag_s"] == pytest.approx(truth["appearance"]["unrecorded_lag_s"])
    true = np.asarray(truth["ImageToProbe"])
    np.testing.assert_allclose(written, truth["calibration_written"]["ImageToProbe"])
    assert not np.allclose(written, true)
    err = truth["calibration_written"]
    assert err["error_image_centre_mm"] == pytest.approx(
        truth["appearance"]["calibration_translation_mm"]
    )
    assert err["error_rotation_deg"] == pytest.approx(
        truth["appearance"]["calibration_rotation_deg"], abs=1e-6
    )
    assert err["error_image_centre_mm"] <= 1.0 and err["error_rotation_deg"] <= 1.0


def test_rerun_resumes_only_the_missing_cases(dataset):
    out, options, _ = dataset
    (out / "sos-error-9" / "truth.json").unlink()  # an incomplete case
    before = (out / "miscalibrated-4" / "sweep.igs.mha").stat().st_mtime_ns
    again = simulate_dataset([4, 9, 2, 5], out, options, ["miscalibrated", "sos-error"])
    assert sorted(again.simulated) == ["sos-error-5", "sos-error-9"]
    assert sorted(again.skipped) == ["miscalibrated-2", "miscalibrated-4"]
    assert (out / "miscalibrated-4" / "sweep.igs.mha").stat().st_mtime_ns == before
    assert len(read_manifest(out / "manifest.csv")) == 4
    other = make_options(**{**TINY, "frames": 3})
    with pytest.raises(InputError, match="other options"):
        simulate_dataset([4], out, other, ["miscalibrated"])
    forced = simulate_dataset([4], out, other, ["miscalibrated"], force=True)
    assert forced.simulated == ["miscalibrated-4"] and not forced.skipped
    assert load_truth(out / "miscalibrated-4").document["options"]["frames"] == 3


def test_a_non_empty_folder_that_is_not_a_dataset_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        simulate_dataset([1], tmp_path, make_options(**TINY))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_two_worker_processes_give_the_same_cases_as_one(tmp_path, dataset):
    out, options, _ = dataset
    # (miscalibrated-4 was simulated again with other options by the resume test)
    two = simulate_dataset(
        [2, 9], tmp_path / "two", options, ["miscalibrated", "sos-error"], workers=2
    )
    assert sorted(two.simulated) == ["miscalibrated-2", "sos-error-9"]
    for name in two.simulated:
        a = json.loads((out / name / "truth.json").read_text())
        b = json.loads((tmp_path / "two" / name / "truth.json").read_text())
        assert a["appearance"] == b["appearance"]
        assert a["ReferenceToMri"] == b["ReferenceToMri"]
        sweep = "sweep.igs.mha"
        assert (out / name / sweep).read_bytes() == (tmp_path / "two" / name / sweep).read_bytes()


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "usnav", "simulate", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "args, word",
    [
        (["--seeds", "1-x"], "--seeds"),
        (["--seeds", "3-1"], "backwards"),
        (["--seeds", "1,1"], "twice"),
        (["--seeds", "1-2", "--families", "nope"], "nope"),
        (["--seed", "1", "--family", "nope"], "nope"),
        (["--seed", "1", "--seeds", "1-2"], "exactly one"),
        (["--seed", "1", "--families", "baseline"], "--families"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args, word):
    done = cli(*args, "--out", str(tmp_path / "x"))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and word in lines[0] and "Traceback" not in done.stderr
    assert not (tmp_path / "x").exists()


def test_cli_refuses_a_foreign_non_empty_folder_and_lists_families(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    for how in (["--seeds", "1-2"], ["--seed", "1"]):  # the project's output rule
        done = cli(*how, "--out", str(tmp_path))
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
        assert "not empty" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    listed = cli("--list-families")
    assert listed.returncode == 0
    names = [line.split()[0] for line in listed.stdout.strip().splitlines()]
    assert names == list(FAMILIES)


def test_the_manifest_tags_each_case_with_its_sweep_pattern(tmp_path):
    from usnav.sim.dataset import manifest_case

    for pattern in ("fan", "partial"):
        folder = tmp_path / f"sweep-anatomy-{pattern}"
        folder.mkdir()
        (folder / "truth.json").write_text(json.dumps({"appearance": {"sweep_pattern": pattern}}))
        assert manifest_case(folder, "sweep-anatomy", 1).tags["sweep_pattern"] == pattern
    old = tmp_path / "baseline-1"  # a truth file from before the pattern was drawn
    old.mkdir()
    (old / "truth.json").write_text(json.dumps({"appearance": {}}))
    assert manifest_case(old, "baseline", 1).tags["sweep_pattern"] == "transverse"


def test_workers_end_when_the_simulate_command_is_killed(tmp_path):
    """SIGKILL runs none of ``usnav simulate --seeds``'s code: its pool's workers, waiting for
    their next job, stayed forever (session 34). Each now watches its parent
    (usnav/lifeline.py). A real command, a real SIGKILL."""
    import signal

    import psutil
    from cli_helpers import start_usnav
    from waiting import wait_until

    args = ["simulate", "--seeds", "1-8", "--workers", "2", "--out", str(tmp_path / "data")]
    process = start_usnav(tmp_path, *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[psutil.Process] = []

    def pool_started() -> bool:
        workers[:] = [
            c
            for c in psutil.Process(process.pid).children()
            if "spawn_main" in " ".join(c.cmdline())
        ]
        return len(workers) == 2 or process.poll() is not None

    try:
        assert wait_until(pool_started, 120), "the pool never started"
        assert process.poll() is None
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        _gone, alive = psutil.wait_procs(workers, timeout=60)
        assert not alive, [w.cmdline() for w in alive]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
        for worker in workers:
            if worker.is_running():
                worker.kill()
