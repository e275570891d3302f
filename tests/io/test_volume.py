"""Volumes: NIfTI and NRRD in one RAS type; LPS converted once; bad affines refused."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest

from usnav.errors import InputError
from usnav.io.volume import Volume, load_volume, save_volume

AFFINE = np.array([[0.5, 0, 0, -40.0], [0, 0.6, 0, 25.0], [0, 0, 0.7, 110.0], [0, 0, 0, 1]])


def _volume() -> Volume:
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    return Volume(data, AFFINE)


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz", "v.nrrd"])
def test_round_trip(tmp_path: Path, name: str) -> None:
    vol = _volume()
    back = load_volume(save_volume(vol, tmp_path / name))
    np.testing.assert_array_equal(back.data, vol.data)
    np.testing.assert_allclose(back.affine, vol.affine)


def test_nrrd_lps_is_converted_to_ras(tmp_path: Path) -> None:
    data = np.zeros((3, 3, 3), np.uint8)
    header = {
        "space": "left-posterior-superior",
        "space directions": np.eye(3) * 2.0,
        "space origin": np.array([10.0, 20.0, 30.0]),
        "kinds": ["domain"] * 3,
    }
    nrrd.write(str(tmp_path / "lps.nrrd"), data, header, index_order="F")
    vol = load_volume(tmp_path / "lps.nrrd")
    # voxel (0,0,0) is at LPS (10,20,30) = RAS (-10,-20,30); +i goes to L = -R
    np.testing.assert_allclose(vol.affine @ [0, 0, 0, 1], [-10, -20, 30, 1])
    np.testing.assert_allclose(vol.affine @ [1, 0, 0, 1], [-12, -20, 30, 1])
    # and the NRRD we write is LPS, as Slicer and ITK expect
    save_volume(vol, tmp_path / "out.nrrd")
    _, out_header = nrrd.read(str(tmp_path / "out.nrrd"))
    assert out_header["space"] == "left-posterior-superior"
    np.testing.assert_allclose(out_header["space origin"], [10, 20, 30])


def test_nifti_without_orientation_is_refused(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.zeros((3, 3, 3), np.float32), None)
    img.header["sform_code"] = 0
    img.header["qform_code"] = 0
    nib.save(img, str(tmp_path / "noaffine.nii"))
    with pytest.raises(InputError, match=r"noaffine\.nii: NIfTI has no orientation"):
        load_volume(tmp_path / "noaffine.nii")
    assert load_volume(tmp_path / "noaffine.nii", allow_default_affine=True).shape == (3, 3, 3)


def test_singular_affine_and_nan_voxels_are_reported() -> None:
    with pytest.raises(InputError, match="singular"):
        Volume(np.zeros((2, 2, 2)), np.diag([1.0, 0.0, 1.0, 1.0]))
    vol = Volume(np.full((2, 2, 2), np.nan, np.float32), np.eye(4), source="mri.nii")
    with pytest.raises(InputError, match="mri.nii: 8 voxels are NaN"):
        vol.check_finite()


def test_missing_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_volume(tmp_path / "nope.nii.gz")
    (tmp_path / "v.txt").write_text("x")
    with pytest.raises(InputError, match="unknown volume format"):
        load_volume(tmp_path / "v.txt")


def test_real_resect_volume(shared_data: Path) -> None:
    vol = load_volume(shared_data / "resect/case24/Case24-US-before_0p5mm.nii.gz")
    assert vol.shape == (94, 107, 107)
    np.testing.assert_allclose(vol.spacing_mm, 0.5, atol=0.01)
    lo, hi = vol.bounds_ras()
    assert np.all(hi - lo > 40)
