"""Issue #17, security and safety: ``usnav keys`` never writes outside KEYDIR, and ``usnav run``
refuses a label map that does not belong to the MRI (margins drawn where there is no tumor)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_bad_input, usnav

from usnav.errors import InputError
from usnav.io.volume import Volume
from usnav.pipeline.run import check_label_fits_mri
from usnav.protocol.curve import check_client_name, generate_keys


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize(
    "name", ["../evil", "", "..", "a/b", "/abs", ".hidden", "x\\..\\y", "server", "a..b"]
)
def test_key_names_that_leave_keydir_or_hide_files_are_refused(tmp_path, name):
    with pytest.raises(InputError, match="--client"):
        generate_keys(tmp_path / "K", client_name=name)
    assert _files(tmp_path) == set()  # nothing written anywhere, not even KEYDIR


def test_keys_cli_traversal_writes_nothing_outside_keydir(tmp_path):
    before = _files(tmp_path)
    result = usnav(tmp_path, "keys", "--out", "K", "--client", "../evil")
    assert_bad_input(result, "--client", "'../evil'")
    assert _files(tmp_path) == before
    assert not (tmp_path / "evil.key_secret").exists()
    result = usnav(tmp_path, "keys", "--out", "K", "--client", "")
    assert_bad_input(result, "--client")
    assert not (tmp_path / "K" / ".key").exists()


def test_keys_cli_good_name_and_the_output_rule(tmp_path):
    assert usnav(tmp_path, "keys", "--out", "K", "--client", "display-1").returncode == 0
    written = _files(tmp_path / "K")
    assert {"display-1.key", "display-1.key_secret", "server.key_secret"} <= written
    assert all(not Path(f).name.startswith(".") for f in written)
    secret = (tmp_path / "K" / "server.key_secret").read_bytes()
    assert_bad_input(usnav(tmp_path, "keys", "--out", "K", "--client", "display-1"), "--force")
    assert (tmp_path / "K" / "server.key_secret").read_bytes() == secret  # never clobbered
    assert usnav(tmp_path, "keys", "--out", "K", "--client", "display-1", "--force").returncode == 0
    assert (tmp_path / "K" / "server.key_secret").read_bytes() != secret  # replaced on purpose
    assert check_client_name("display-1") == "display-1"


def _volume(shape, spacing, origin, fill=None) -> Volume:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    data = np.zeros(shape, np.uint8) if fill is None else fill
    return Volume(data, affine, source="label.nii.gz")


def test_a_label_map_from_another_case_is_refused():
    """The issue's case: the tumor at S -95..-11 mm, the MRI covering S 5..107 mm."""
    mri = _volume((60, 60, 52), (1.0, 1.0, 2.0), (-30, -30, 5))
    data = np.zeros((60, 60, 43), np.uint8)
    data[20:30, 20:30, 5:40] = 1
    label = _volume(data.shape, (1.0, 1.0, 2.0), (-30, -30, -105), data)
    with pytest.raises(
        InputError, match=r"label\.nii\.gz.*S -95\.\..*outside the MRI \(.*S 4\.\.108"
    ):
        check_label_fits_mri(label, mri)


def test_a_label_mostly_outside_or_on_an_incomparable_grid_is_refused():
    mri = _volume((40, 40, 40), (1.0, 1.0, 1.0), (0, 0, 0))
    data = np.zeros((40, 40, 40), np.uint8)
    data[30:40, 10:20, 10:20] = 1
    shifted = _volume(data.shape, (1.0, 1.0, 1.0), (8, 0, 0), data)  # 2 of 10 slabs inside
    with pytest.raises(InputError, match="mostly outside"):
        check_label_fits_mri(shifted, mri)
    in_metres = _volume(data.shape, (0.001, 0.001, 0.001), (0, 0, 0), data)
    with pytest.raises(InputError, match="do not compare with the MRI"):
        check_label_fits_mri(in_metres, mri)


def test_a_label_on_the_mri_grid_or_a_finer_one_inside_it_is_accepted():
    mri = _volume((40, 40, 40), (1.0, 1.0, 1.0), (0, 0, 0))
    data = np.zeros((40, 40, 40), np.uint8)
    data[10:20, 10:20, 10:20] = 1
    check_label_fits_mri(_volume(data.shape, (1.0, 1.0, 1.0), (0, 0, 0), data), mri)
    check_label_fits_mri(_volume(data.shape, (0.5, 0.5, 0.5), (5, 5, 5), data), mri)


def test_run_refuses_the_label_of_another_case(tmp_path):
    """End to end: `usnav run` with a label that does not overlap the MRI exits 2 at once."""
    import nibabel as nib

    from usnav.sim import make_options, simulate_case

    case = simulate_case(44, tmp_path / "case", make_options(frames=4, save_anatomy=False))
    case_dir = case.folder
    label = nib.load(str(case_dir / "tumor_label.nii.gz"))
    moved = label.affine.copy()
    moved[2, 3] -= 200.0  # the same label, 200 mm lower: another patient's position
    far = tmp_path / "far_label.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(label.dataobj), moved), str(far))
    device = tmp_path / "probe.toml"
    device.write_text('[probe]\nport = 18999\ntransforms = ["ProbeToTracker"]\n')
    result = usnav(
        tmp_path,
        "run",
        "--device",
        str(device),
        "--mri",
        str(case_dir / "mri.nii.gz"),
        "--label",
        str(far),
        "--calibration",
        str(case_dir / "calibration.toml"),
        "--init",
        str(case_dir / "init_ReferenceToMri.txt"),
    )
    assert_bad_input(result, "far_label.nii.gz", "outside the MRI")


def test_secret_keys_are_never_readable_by_others_while_being_made(tmp_path, monkeypatch):
    """The certificates are written in a private folder (0700) and made 0600 there before
    they are moved in: written straight into the key folder under the default umask, the
    secrets were readable by others until their chmod (session 36)."""
    import stat

    import zmq.auth

    made_in = []
    create = zmq.auth.create_certificates

    def watched(folder, name):
        made_in.append(stat.S_IMODE(os.stat(folder).st_mode))
        return create(folder, name)

    monkeypatch.setattr(zmq.auth, "create_certificates", watched)
    keys = generate_keys(tmp_path / "K")
    assert made_in and all(mode & 0o077 == 0 for mode in made_in)
    for secret in (keys.server_secret, keys.client_secret):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and secret.parent == tmp_path / "K"
    assert sorted(p.name for p in (tmp_path / "K").iterdir()) == sorted(
        ["authorized", "client.key", "client.key_secret", "server.key", "server.key_secret"]
    )
