"""Issue #17: results chain (RESULT.json as --init), the help says so, and ``usnav bench``
answers a wrong --only, missing outside data and --strict as a user expects."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import usnav
from scipy.spatial.transform import Rotation

from usnav.bench.registry import _REGISTRY, Figure, benchmark
from usnav.cli.main import main
from usnav.errors import InputError
from usnav.registration.files import read_initial

ROOT = Path(__file__).resolve().parents[2]


def _tag_file(path, moving_to_fixed):
    rng = np.random.default_rng(5)
    moving = rng.uniform(-40, 40, size=(6, 3))
    fixed = moving @ moving_to_fixed[:3, :3].T + moving_to_fixed[:3, 3]
    rows = [f"{a} {b} {c} {d} {e} {f}" for (a, b, c), (d, e, f) in zip(fixed, moving, strict=True)]
    path.write_text("MNI Tag Point File\nVolumes = 2;\nPoints =\n" + "\n".join(rows) + ";\n")
    return path


def test_register_points_result_is_accepted_as_init(tmp_path):
    truth = np.eye(4)
    truth[:3, :3] = Rotation.from_euler("xyz", [5, -3, 8], degrees=True).as_matrix()
    truth[:3, 3] = [4.0, -2.0, 7.5]
    tag = _tag_file(tmp_path / "p.tag", truth)
    result = usnav(tmp_path, "register-points", str(tag), "--out", "RESULT.json")
    assert result.returncode == 0, result.stderr
    doc = json.loads((tmp_path / "RESULT.json").read_text())
    chained = read_initial(tmp_path / "RESULT.json")
    np.testing.assert_allclose(chained, np.asarray(doc["ReferenceToMri"]))
    np.testing.assert_allclose(chained, truth, atol=1e-6)
    # and the 16-number text file still works
    (tmp_path / "init.txt").write_text(" ".join(str(v) for v in truth.ravel()))
    np.testing.assert_allclose(read_initial(tmp_path / "init.txt"), truth)


def test_a_json_without_reference_to_mri_is_refused(tmp_path):
    (tmp_path / "other.json").write_text(json.dumps({"fre_mm": [1.0]}))
    with pytest.raises(InputError, match="has no ReferenceToMri"):
        read_initial(tmp_path / "other.json")
    (tmp_path / "bad.json").write_text(json.dumps({"ReferenceToMri": [[1, 2], [3, "x"]]}))
    with pytest.raises(InputError, match="not a 4×4"):
        read_initial(tmp_path / "bad.json")


@pytest.mark.parametrize("command", ["run", "register"])
def test_help_says_init_takes_a_result_file(tmp_path, command):
    out = " ".join(usnav(tmp_path, command, "--help").stdout.split())
    assert "RESULT.json" in out and "16 numbers" in out
    assert "a text file of 16 numbers" in out  # --calibration: a file, not numbers on the line


@pytest.fixture
def missed_target_benchmark():
    """A registered benchmark whose figure misses its target (removed afterwards)."""

    @benchmark("zz strict probe", "zz-test")
    def probe(ctx):
        return [Figure("always late", 2.0, "s", "≤ 1 s", False, higher_is_better=False)]

    try:
        yield
    finally:
        _REGISTRY[:] = [b for b in _REGISTRY if b.group != "zz-test"]


def test_bench_strict_exits_1_on_a_missed_target(tmp_path, capsys, missed_target_benchmark):
    cache = str(tmp_path / "cache")
    assert main(["bench", "--only", "zz strict", "--cache", cache]) == 0
    assert main(["bench", "--only", "zz strict", "--cache", cache, "--strict"]) == 1
    assert "1 target(s) missed" in capsys.readouterr().err


def test_a_smoke_only_figure_is_not_judged_against_its_target(tmp_path, capsys):
    """Quick ``usnav bench`` registers one held-out case: a "no" on that one case read as the
    held-out median missing its target. Such figures keep their value, lose the target, and
    say why; ``--strict`` does not count them."""
    from usnav.bench.registry import smoke_only

    missed = Figure("held-out median", 5.39, "mm", "≤ 1.0 mm", False, note="1 case")
    (smoke,) = smoke_only([missed], "quick: 1 case(s), not the target's measurement")
    assert (smoke.value, smoke.target, smoke.met) == (5.39, "", None)
    assert smoke.note == "quick: 1 case(s), not the target's measurement; 1 case"

    @benchmark("zz smoke probe", "zz-test")
    def probe(ctx):
        return smoke_only([missed], "quick")

    try:
        cache = str(tmp_path / "cache")
        assert main(["bench", "--only", "zz smoke", "--cache", cache, "--strict"]) == 0
        assert "missed" not in capsys.readouterr().err
    finally:
        _REGISTRY[:] = [b for b in _REGISTRY if b.group != "zz-test"]


def test_bench_lists_rows_skipped_for_missing_outside_data(tmp_path):
    """Without the outside data the calibration rows are listed as skipped, with the reason,
    and the scratch files go to the per-user cache (removed with --clean)."""
    env_missing = tmp_path / "no-data"
    result = _bench(tmp_path, env_missing, "--only", "temporal calibration", "--clean")
    assert result.returncode == 0, result.stderr
    assert "skipped" in result.stdout
    assert "outside data not found" in " ".join(result.stdout.split())
    assert not (tmp_path / "usnav-cache" / "bench").exists()  # --clean


def _bench(tmp_path, data_dir, *args):
    import subprocess
    import sys

    from cli_helpers import usnav_env

    env = usnav_env(tmp_path)
    env["USNAV_TEST_DATA"] = str(data_dir)  # not a folder: no outside data
    return subprocess.run(
        [sys.executable, "-m", "usnav", "bench", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )


def test_an_initial_transform_from_a_pipe_is_read_once(tmp_path) -> None:
    """``--init <(...)``: a pipe can be read once, so it is not sniffed for a RESULT.json."""
    import os
    import threading

    pose = np.eye(4)
    pose[:3, 3] = [1.0, -2.0, 3.0]
    read_end, write_end = os.pipe()

    def feed() -> None:
        with os.fdopen(write_end, "w") as w:
            w.write(" ".join(f"{v:g}" for v in pose.ravel()))

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        got = read_initial(f"/dev/fd/{read_end}")
    finally:
        writer.join(timeout=10)
        os.close(read_end)
    np.testing.assert_allclose(got, pose)


def test_bench_clean_never_removes_a_folder_it_did_not_make(tmp_path):
    """``--cache DIR --clean`` removed DIR whole, with whatever the user kept in it."""
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("precious")
    no_data = tmp_path / "no-data"
    result = _bench(
        tmp_path, no_data, "--only", "temporal calibration", "--cache", str(mine), "--clean"
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "thesis" in lines[0] and "--clean would remove" in lines[0]
    assert (mine / "chapter1.tex").read_text() == "precious"
    # a folder the bench made (and uses again) is still removed by --clean
    cache = tmp_path / "bench-cache"
    first = _bench(tmp_path, no_data, "--only", "temporal calibration", "--cache", str(cache))
    assert first.returncode == 0, first.stderr
    assert cache.is_dir()
    again = _bench(
        tmp_path, no_data, "--only", "temporal calibration", "--cache", str(cache), "--clean"
    )
    assert again.returncode == 0, again.stderr
    assert not cache.exists()


def _rigid() -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = Rotation.from_euler("xyz", [20, -35, 110], degrees=True).as_matrix()
    m[:3, 3] = [21.9, -128.8, -105.9]
    return m


def test_an_init_written_as_a_json_python_numpy_or_matlab_matrix_reads_as_written(tmp_path):
    """The same 4×4 as a bare JSON list (a .json file, or text), numpy's print and MATLAB's
    literal: the brackets and semicolons were read as part of the numbers and refused."""
    m = _rigid()
    encodings = {
        "list.json": json.dumps(m.tolist()),
        "flat.json": json.dumps(m.ravel().tolist()),
        "list.txt": str(m.tolist()),
        "numpy.txt": np.array2string(m, precision=17, separator=" "),
        "matlab.txt": "[" + "; ".join(" ".join(repr(float(v)) for v in row) for row in m) + "]",
    }
    for name, text in encodings.items():
        (tmp_path / name).write_text(text)
        np.testing.assert_allclose(read_initial(tmp_path / name), m, atol=1e-12, err_msg=name)


def test_twelve_numbers_or_an_itk_tfm_are_refused_saying_what_to_give(tmp_path):
    m = _rigid()
    (tmp_path / "three_rows.txt").write_text(" ".join(repr(v) for v in m[:3].ravel()))
    with pytest.raises(
        InputError, match=r"three_rows\.txt: .*found 12 numbers.*add the row 0 0 0 1"
    ):
        read_initial(tmp_path / "three_rows.txt")
    (tmp_path / "t.tfm").write_text(
        "#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\n"
        "Parameters: 1 0 0 0 1 0 0 0 1 0 0 0\nFixedParameters: 0 0 0\n"
    )
    with pytest.raises(InputError, match=r"t\.tfm: .*ITK transform file.*16 numbers, row-major"):
        read_initial(tmp_path / "t.tfm")


#: units of figures where less is better: times, sizes, distances, counts of failures
LOWER_IS_BETTER_UNITS = {"s", "ms", "us", "µs", "min", "MB", "mm", "deg", "cases", "voxels"}


def test_every_bench_figure_of_a_time_size_or_error_says_lower_is_better() -> None:
    # Figure's default is higher_is_better=True: a start-up time, a peak memory or an overhead
    # left at the default was written to --json as "higher is better" and would turn its ratio
    # upside down the day it gets a baseline
    import ast

    wrong = []
    for path in sorted((ROOT / "usnav" / "bench").glob("bench_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Figure"):
                continue
            keywords = {k.arg: k.value for k in node.keywords}
            unit = keywords.get("unit", node.args[2] if len(node.args) > 2 else None)
            if not isinstance(unit, ast.Constant):
                continue
            lower = unit.value in LOWER_IS_BETTER_UNITS or unit.value.startswith("% of")
            flag = keywords.get("higher_is_better")
            if lower and not (isinstance(flag, ast.Constant) and flag.value is False):
                wrong.append(f"{path.name}:{node.lineno} ({unit.value})")
    assert not wrong, wrong


def test_no_benchmark_calls_seeds_fresh_that_the_project_ledger_records_as_used() -> None:
    # the registration accuracy benchmark was titled "(fresh seeds)" on 2041-2060, which
    # notes/seed-ledger.jsonl records as tuning; the bench reads its sets again on every run
    from usnav.bench import bench_registration as br
    from usnav.bench.registry import all_benchmarks
    from usnav.evaluate.ledger import read_ledger

    entries = read_ledger(ROOT / "notes" / "seed-ledger.jsonl")
    used = set().union(*(e.seed_set for e in entries if e.site == "usnav-sim"))
    bench_seeds = {*br.BENCH_SEEDS_FULL, *br.HELD_OUT_SEEDS_FULL, *br.TUNED_ON_SEEDS_FULL}
    assert bench_seeds <= used  # every set the bench reads has been looked at
    assert not [b.name for b in all_benchmarks() if "fresh seed" in b.name.lower()]
