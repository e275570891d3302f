"""The one output rule (usnav.io.outputs): an existing output is replaced only with --force, a
missing folder is created, a file in the way is named."""

from __future__ import annotations

import pytest

from usnav.errors import InputError
from usnav.io.outputs import check_output


def test_existing_file_needs_force_and_missing_folders_are_created(tmp_path):
    target = tmp_path / "a" / "b" / "vol.nii.gz"
    assert check_output(target) == target and target.parent.is_dir() and not target.exists()
    target.write_bytes(b"x")
    with pytest.raises(InputError, match="already exists.*--force"):
        check_output(target)
    assert check_output(target, force=True) == target
    assert target.read_bytes() == b"x"  # checking never deletes


def test_wrong_kinds_and_blocked_folders_are_named(tmp_path):
    blocker = tmp_path / "FILE"
    blocker.write_text("x")
    with pytest.raises(InputError, match=r"FILE: is a file, so --json cannot go under it"):
        check_output(blocker / "sub" / "b.json", option="--json")
    with pytest.raises(InputError, match="is a folder"):
        check_output(tmp_path)
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_output(blocker, folder=True)
    with pytest.raises(InputError, match="is empty"):
        check_output("")


def test_folders_may_exist_empty_and_need_force_when_not(tmp_path):
    d = tmp_path / "keys"
    assert check_output(d, folder=True).is_dir()
    assert check_output(d, folder=True) == d  # empty: fine
    (d / "server.key").write_text("k")
    with pytest.raises(InputError, match="not empty"):
        check_output(d, folder=True)
    assert check_output(d, folder=True, force=True) == d


def test_a_link_to_nothing_is_in_the_way_like_a_file(tmp_path):
    """Security review (session 36): a dangling symlink passed as "not there", so
    ``usnav view --snapshot`` wrote the link's target (anywhere) without --force."""
    elsewhere = tmp_path / "elsewhere" / "victim.png"
    link = tmp_path / "out" / "snap.png"
    link.parent.mkdir()
    link.symlink_to(elsewhere)
    with pytest.raises(InputError, match=r"is a link to .*victim\.png, which does not exist"):
        check_output(link)
    with pytest.raises(InputError, match="is a link to"):
        check_output(link, folder=True)
    assert check_output(link, force=True) == link
    assert not elsewhere.exists() and not elsewhere.parent.exists()


def test_a_refused_command_leaves_no_empty_output_folder_behind(tmp_path, capsys):
    """The output rule creates ``--out``'s folders before the long work (so a wrong ``--out``
    is said at once); a command refused after that — a bad value found later — removed
    nothing, and ``reconstruct … --spacing 0 --out new/deep/v.nii.gz`` left ``new/deep``
    (session 42). Now the folders it made and left empty go; a successful run keeps them, and
    a folder that existed before is never touched."""
    from usnav.cli.main import main
    from usnav.sim import make_options, simulate_case

    case = tmp_path / "case"
    simulate_case(3, case, make_options(frames=6, image_cols=48, image_rows=48, voxel_mm=0.8))
    sweep, cal = str(case / "sweep.igs.mha"), str(case / "calibration.toml")
    new = tmp_path / "new"
    args = ["reconstruct", sweep, "--calibration", cal, "--spacing", "0"]
    assert main([*args, "--out", str(new / "deep" / "v.nii.gz")]) == 2
    assert "--spacing" in capsys.readouterr().err
    assert not new.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    assert main([*args, "--out", str(kept / "deep" / "v.nii.gz")]) == 2
    assert kept.is_dir() and not (kept / "deep").exists()
    ok = ["reconstruct", sweep, "--calibration", cal, "--spacing", "1.0"]
    assert main([*ok, "--out", str(new / "deep" / "v.nii.gz")]) == 0
    assert (new / "deep" / "v.nii.gz").is_file()
