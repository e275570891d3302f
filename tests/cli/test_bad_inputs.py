"""Issue #17: every mistake a new user made gets one line, exit status 2 and no traceback,
before any long work starts. Each case runs the real CLI in a subprocess."""

from __future__ import annotations

import numpy as np
import pytest
from cli_helpers import assert_bad_input, usnav

from usnav.frames import TrackedFrame, TrackedTransform
from usnav.io.sequence import write_sequence
from usnav.io.volume import Volume


@pytest.fixture
def video(tmp_path):
    """A small tracked video (64 × 48 px, 12 frames): enough for the CLI's checks."""
    rng = np.random.default_rng(3)
    frames = []
    for i in range(12):
        pose = np.eye(4)
        pose[2, 3] = i
        frames.append(
            TrackedFrame(
                image=rng.integers(0, 255, size=(48, 64), dtype=np.uint8),
                transforms={"ProbeToReference": TrackedTransform(pose)},
                t_device=0.05 * i,
            )
        )
    return write_sequence(tmp_path / "tank.igs.mha", frames)


@pytest.mark.parametrize(
    ("clip", "words"),
    [
        (["5000", "5000", "10", "10"], ["--clip", "not inside the 64 x 48"]),
        (["60", "0", "10", "10"], ["--clip", "X + W <= 64"]),
        (["0", "0", "0", "0"], ["--clip", "must be positive"]),
    ],
)
def test_calibrate_temporal_clip_outside_the_video(tmp_path, video, clip, words):
    result = usnav(tmp_path, "calibrate", "temporal", "--video", str(video), "--clip", *clip)
    assert_bad_input(result, *words)


def test_calibrate_temporal_same_file_as_video_and_tracker(tmp_path, video):
    result = usnav(
        tmp_path, "calibrate", "temporal", "--video", str(video), "--tracker", str(video)
    )
    assert_bad_input(result, "--tracker", "same file as --video")


def test_calibrate_spatial_bad_output_is_refused_before_segmenting(tmp_path, video):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = usnav(
        tmp_path,
        "calibrate",
        "spatial",
        "--config",
        str(tmp_path / "missing.xml"),
        "--calibration",
        str(video),
        "--xml",
        str(blocker / "out.xml"),
    )
    assert_bad_input(result, "a_file", "is a file")
    assert "segmenting" not in result.stderr


def test_demo_out_is_an_existing_file_or_cannot_be_created(tmp_path):
    existing = tmp_path / "snap"
    existing.write_text("not a folder")
    assert_bad_input(usnav(tmp_path, "demo", "--out", str(existing)), "is a file, not a folder")
    assert_bad_input(usnav(tmp_path, "demo", "--out", str(existing / "sub")), "snap", "is a file")


def test_demo_refuses_to_replace_a_snapshot_without_force(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "snapshot.png").write_bytes(b"an earlier picture")
    assert_bad_input(usnav(tmp_path, "demo", "--out", str(out)), "already exists", "--force")
    assert (out / "snapshot.png").read_bytes() == b"an earlier picture"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--publish", "garbage"], ["--publish", "not a ZeroMQ endpoint"]),
        (["--publish", "tcp://127.0.0.1:http"], ["--publish", "not a number"]),
        (["--rate", "-2"], ["--rate", "positive"]),
        # past the playback server's fastest rate: the demo simulated the case, then failed
        # on two lines quoting `usnav replay --rate`'s error
        (["--rate", "1e23"], ["--rate", "at most 1000"]),
        (["--passes", "0"], ["--passes"]),
    ],
)
def test_demo_option_values(tmp_path, args, words):
    assert_bad_input(usnav(tmp_path, "demo", *args), *words)


def test_demo_says_a_taken_publish_address_before_preparing_anything(tmp_path):
    """The endpoint is bound first: no case simulated, no server started, no kernels compiled
    before the one line."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cache = tmp_path / "cache"
        address = f"tcp://127.0.0.1:{port}"
        proc = usnav(tmp_path, "demo", "--publish", address, "--cache", str(cache))
        assert_bad_input(proc, f"tcp://127.0.0.1:{port}", "cannot bind", "Address already in use")
    assert "simulating the demo case" not in proc.stderr + proc.stdout
    assert not list(cache.glob("demo-v*")), "the case was simulated before the check"


def test_demo_incomplete_cached_case(tmp_path):
    from usnav.sim.case import SIM_VERSION
    from usnav.sim.demo import DEMO_SEED

    cache = tmp_path / "cache"
    half = cache / f"demo-v{SIM_VERSION}-seed{DEMO_SEED}"
    half.mkdir(parents=True)
    (half / "mri.nii.gz").write_bytes(b"cut short")
    result = usnav(tmp_path, "demo", "--cache", str(cache), "--out", str(tmp_path / "o"))
    assert_bad_input(result, "incomplete demo case", "delete this folder")


def test_keys_out_cannot_be_created(tmp_path):
    blocker = tmp_path / "FILE"
    blocker.write_text("x")
    assert_bad_input(usnav(tmp_path, "keys", "--out", str(blocker / "sub")), "is a file")
    assert_bad_input(usnav(tmp_path, "keys", "--out", str(blocker)), "not a folder")


def test_bench_only_matching_nothing_lists_the_names(tmp_path):
    result = usnav(tmp_path, "bench", "--only", "zzzz")
    line = assert_bad_input(result, "--only", "'zzzz'")
    assert "registration" in line and "calibration" in line and "--list" in line
    assert result.stdout == ""


def test_bench_json_path_is_checked_before_the_benchmarks_run(tmp_path):
    blocker = tmp_path / "FILE"
    blocker.write_text("x")
    result = usnav(tmp_path, "bench", "--only", "sequence", "--json", str(blocker / "b.json"))
    assert_bad_input(result, "FILE", "is a file")
    assert result.stdout == ""  # no table: nothing was run
    existing = tmp_path / "b.json"
    existing.write_text("{}")
    result = usnav(tmp_path, "bench", "--only", "sequence", "--json", str(existing))
    assert_bad_input(result, "already exists", "--force")
    assert existing.read_text() == "{}"


def test_register_points_negative_fle(tmp_path):
    tag = tmp_path / "points.tag"
    rows = [(0, 0, 0), (10, 0, 0), (0, 10, 0), (0, 0, 10)]
    tag.write_text(
        "MNI Tag Point File\nVolumes = 2;\nPoints =\n"
        + "\n".join(f"{x} {y} {z} {x + 1} {y} {z}" for x, y, z in rows)
        + ";\n"
    )
    result = usnav(
        tmp_path, "register-points", str(tag), "--fle", "-1", "--out", str(tmp_path / "r.json")
    )
    assert_bad_input(result, "--fle", "positive")
    assert not (tmp_path / "r.json").exists()
    # a finite but absurd error (µm given as mm) is refused too, not turned into a TRE
    result = usnav(
        tmp_path, "register-points", str(tag), "--fle", "500", "--out", str(tmp_path / "r.json")
    )
    assert_bad_input(result, "--fle", "up to 20")
    assert not (tmp_path / "r.json").exists()


def test_replay_of_a_volume_says_it_is_a_volume(tmp_path):
    from usnav.registration.reconstruct import save_reconstruction

    data = np.zeros((8, 7, 6), np.uint8)
    data[2:5, 2:5, 2:5] = 200
    path = save_reconstruction(Volume(data, np.diag([0.5, 0.5, 0.5, 1.0])), tmp_path / "v.mha")
    result = usnav(tmp_path, "replay", str(path), "--port", "0", timeout=60)
    assert_bad_input(result, "is a 3D volume, not a tracked sweep")
    assert "timestamps" not in result.stderr
    assert_bad_input(usnav(tmp_path, "replay", str(path), "--port", "-5"), "--port", "-5")


def test_convert_of_a_folder_that_is_not_a_journal(tmp_path):
    empty = tmp_path / "EMPTY.journal"
    empty.mkdir()
    result = usnav(tmp_path, "convert", str(empty), str(tmp_path / "out.igs.mha"))
    line = assert_bad_input(result, "not a usnav recording journal")
    assert "Errno" not in line


def test_usage_errors_are_one_line_with_a_pointer_to_help(tmp_path):
    line = assert_bad_input(usnav(tmp_path, "simulate", "--seed", "abc"), "--seed")
    assert line.endswith("(see usnav simulate --help)")
    line = assert_bad_input(usnav(tmp_path, "calibrate", "temporal"), "--video")
    assert "see usnav calibrate temporal --help" in line
    assert_bad_input(usnav(tmp_path, "no-such-command"), "see usnav --help")


def test_record_checks_out_and_port_before_waiting_for_frames(tmp_path):
    existing = tmp_path / "earlier.igs.mha"
    existing.write_bytes(b"an earlier recording")
    result = usnav(tmp_path, "record", "--out", str(existing), "--connect-timeout", "1")
    assert_bad_input(result, "already exists", "--force")
    assert "waiting" not in result.stderr and existing.read_bytes() == b"an earlier recording"
    result = usnav(tmp_path, "record", "--out", str(tmp_path / "r.igs.mha"), "--port", "70000")
    assert_bad_input(result, "--port", "70000")
    assert not (tmp_path / "r.igs.mha").exists()


def test_reconstruct_and_register_refuse_to_replace_results(tmp_path):
    existing = tmp_path / "vol.nii.gz"
    existing.write_bytes(b"earlier")
    result = usnav(
        tmp_path, "reconstruct", "x.igs.mha", "--calibration", "c.toml", "--out", str(existing)
    )
    assert_bad_input(result, "already exists", "--force")
    result_json = tmp_path / "RESULT.json"
    result_json.write_text("{}")
    result = usnav(
        tmp_path,
        "register",
        "x.igs.mha",
        "--mri",
        "m.nii.gz",
        "--calibration",
        "c.toml",
        "--init",
        "i.txt",
        "--out",
        str(result_json),
    )
    assert_bad_input(result, "already exists")
    assert existing.read_bytes() == b"earlier" and result_json.read_text() == "{}"


def test_bench_only_matching_only_long_benchmarks_asks_for_full(tmp_path):
    """Without --full, a word that selects only --full benchmarks ran nothing: an empty table,
    an empty --json and exit 0, as if every target were met."""
    report = tmp_path / "b.json"
    result = usnav(tmp_path, "bench", "--only", "2 GB", "--json", str(report))
    assert_bad_input(result, "--only", "'2 GB'", "only long benchmarks", "--full")
    assert result.stdout == "" and not report.exists()
    listed = usnav(tmp_path, "bench", "--list", "--only", "2 GB")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip().splitlines() == [
        "sequence io    open a 2 GB uncompressed recording  (--full)"
    ]  # --list shows what --only selects
    assert_bad_input(usnav(tmp_path, "bench", "--list", "--only", "zzzz"), "'zzzz'")


def test_bench_json_and_markdown_cannot_name_the_same_file(tmp_path):
    """--force let the JSON silently replace the Markdown table written just before it."""
    result = usnav(
        tmp_path,
        "bench",
        "--only",
        "sequence",
        "--json",
        "report.txt",
        "--markdown",
        str(tmp_path / "report.txt"),
        "--force",
    )
    assert_bad_input(result, "report.txt", "both --json and --markdown")
    assert result.stdout == ""
