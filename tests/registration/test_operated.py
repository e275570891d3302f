"""The MRI of the operated spine: the removed tissue's label (any grid, MRI space) filled with
fluid, everything else untouched; a label that marks nothing or lies outside is refused."""

from __future__ import annotations

import numpy as np
import pytest

from usnav.errors import InputError
from usnav.io.volume import Volume
from usnav.registration.operated import operated_mri, removed_in_mri_grid
from usnav.registration.options import RegistrationOptions


def _mri() -> Volume:
    rng = np.random.default_rng(3)
    data = rng.integers(0, 1000, size=(20, 24, 30)).astype(np.int16)
    affine = np.diag([-0.8, 0.8, 0.8, 1.0])  # i → left, as a scanner's grid
    affine[:3, 3] = [10.0, -5.0, 2.0]
    return Volume(data, affine, source="mri")


def _centres(volume: Volume) -> np.ndarray:
    ijk = np.indices(volume.shape).reshape(3, -1)
    return (volume.affine[:3, :3] @ ijk + volume.affine[:3, 3:4]).T.reshape(*volume.shape, 3)


def test_the_removed_box_on_a_finer_grid_marks_exactly_the_mri_voxels_inside_it():
    mri = _mri()
    # the label on its own grid: 0.4 mm, shifted, axes in another order than the MRI's
    label_affine = np.diag([0.4, 0.4, 0.4, 1.0])
    label_affine[:3, 3] = [-20.0, -10.0, -3.0]
    label = np.zeros((80, 60, 90), np.uint8)
    box_lo, box_hi = np.array([-2.0, 0.0, 6.0]), np.array([3.0, 4.0, 15.0])  # RAS mm
    lo = np.ceil((box_lo - label_affine[:3, 3]) / 0.4).astype(int)
    hi = np.floor((box_hi - label_affine[:3, 3]) / 0.4).astype(int)
    label[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1] = 3
    mask = removed_in_mri_grid(mri, Volume(label, label_affine, source="removed"))
    c = _centres(mri)
    # voxel centres well inside / well outside the box (nearest neighbour decides the edge)
    inside = np.all((c > box_lo + 0.3) & (c < box_hi - 0.3), axis=-1)
    outside = np.any((c < box_lo - 0.3) | (c > box_hi + 0.3), axis=-1)
    assert inside.sum() > 100
    assert mask[inside].all()
    assert not mask[outside].any()


def test_operated_mri_fills_only_the_removed_voxels_with_the_fluid_intensity():
    mri = _mri()
    label = np.zeros(mri.shape, np.uint8)
    label[5:9, 6:12, 10:20] = 1
    out = operated_mri(mri, Volume(label, mri.affine, source="removed"), fill_percentile=99.5)
    fluid = np.percentile(mri.data, 99.5)
    assert out.data.dtype == mri.data.dtype
    np.testing.assert_array_equal(out.data[label > 0], np.int16(fluid))
    np.testing.assert_array_equal(out.data[label == 0], mri.data[label == 0])
    np.testing.assert_array_equal(out.affine, mri.affine)
    assert mri.data[5:9, 6:12, 10:20].std() > 0  # the input is not modified
    dark = operated_mri(mri, Volume(label, mri.affine), fill_percentile=1.0)
    assert dark.data[label > 0].max() == np.int16(np.percentile(mri.data, 1.0))


def test_a_label_that_marks_nothing_or_lies_outside_the_mri_is_refused():
    mri = _mri()
    with pytest.raises(InputError, match="marks no voxel"):
        operated_mri(mri, Volume(np.zeros((4, 4, 4), np.uint8), np.eye(4), source="empty.nii"))
    far = np.eye(4)
    far[:3, 3] = [500.0, 0.0, 0.0]
    with pytest.raises(InputError, match="outside the MRI") as info:
        operated_mri(mri, Volume(np.ones((4, 4, 4), np.uint8), far, source="far.nii"))
    assert "far.nii" in str(info.value)


def test_an_image_given_as_the_removed_label_is_refused_a_float_label_is_not():
    """The MRI given as --removed (a plausible slip: both are volumes of the same case) is > 0
    almost everywhere: every voxel became fluid and the registration compared the sweep with
    a uniform volume, "REJECTED", exit 0, the mistake never said (session 40)."""
    mri = _mri()
    with pytest.raises(InputError, match="not a label map") as info:
        operated_mri(mri, Volume(mri.data.copy(), mri.affine, source="mri.nii.gz"))
    assert "mri.nii.gz" in str(info.value) and "--removed" in str(info.value)
    # a probability map (or any float image) is refused for its fractions
    rng = np.random.default_rng(4)
    soft = rng.random(mri.shape).astype(np.float32)
    with pytest.raises(InputError, match="non-integer values"):
        removed_in_mri_grid(mri, Volume(soft, mri.affine, source="prob.nii.gz"))
    # a label map saved as float (0.0 / 1.0, as some tools write masks) is a label map
    label = np.zeros(mri.shape, np.float32)
    label[5:9, 6:12, 10:20] = 1.0
    mask = removed_in_mri_grid(mri, Volume(label, mri.affine, source="mask.nii.gz"))
    np.testing.assert_array_equal(mask, label > 0)


def test_the_operated_mri_matches_the_ultrasound_better_at_the_truth(small_case, small_case_dirs):
    """The simulator's ultrasound sees saline where the preoperative MRI has the laminae and
    the paraspinal muscle: filled with fluid, the MRI scores higher at the true pose. Fails
    if the fill does not reach the registration (or fills the wrong voxels)."""
    from usnav.io.volume import load_volume
    from usnav.registration.search import SweepRegistration

    mri, sweep, _, truth = small_case
    removed = load_volume(small_case_dirs[7] / "removed_label.nii.gz")
    pose = truth.reference_to_mri
    plain = SweepRegistration(mri, sweep, pose).level(-1).similarity(pose)
    operated = SweepRegistration(operated_mri(mri, removed), sweep, pose).level(-1).similarity(pose)
    assert operated > plain + 0.005, (plain, operated)


def test_usnav_register_removed_is_used_recorded_and_a_bad_one_refused(
    small_case_dirs, tmp_path, capsys
):
    import json

    from usnav.cli.main import main

    case = small_case_dirs[7]

    def register(removed: str | None, out: str) -> int:
        argv = ["register", str(case / "sweep.igs.mha"), "--mri", str(case / "mri.nii.gz")]
        argv += ["--calibration", str(case / "calibration.toml")]
        argv += ["--init", str(case / "init_ReferenceToMri.txt")]
        argv += [] if removed is None else ["--removed", removed]
        return main([*argv, "--out", str(tmp_path / out), "--quiet"])

    assert register(str(case / "removed_label.nii.gz"), "ok.json") == 0
    doc = json.loads((tmp_path / "ok.json").read_text())
    assert doc["inputs"]["removed"] == str(case / "removed_label.nii.gz")
    assert doc["accepted"] is True
    from usnav.sim import load_truth

    assert load_truth(case).mtre(np.asarray(doc["ReferenceToMri"])) < 2.0
    # the registration compared the sweep with the operated MRI: it scores higher than the
    # preoperative one (as at the truth above)
    assert register(None, "plain.json") == 0
    plain = json.loads((tmp_path / "plain.json").read_text())
    assert plain["inputs"]["removed"] is None
    assert doc["similarity"] > plain["similarity"] + 0.005, (doc["similarity"], plain["similarity"])
    # it follows the label's walls: the label's error is in the stated bound, and only then
    assert doc["uncertainty_terms"]["removed_label"] == RegistrationOptions().removed_label_error_mm
    assert plain["uncertainty_terms"]["removed_label"] == 0.0
    assert doc["uncertainty_mm"] > plain["uncertainty_mm"]
    capsys.readouterr()
    far = np.eye(4)
    far[:3, 3] = [900.0, 0.0, 0.0]
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.ones((3, 3, 3), np.uint8), far), tmp_path / "far.nii.gz")
    assert register(str(tmp_path / "far.nii.gz"), "far.json") == 2
    err = capsys.readouterr().err
    assert "far.nii.gz" in err and "outside the MRI" in err
    assert not (tmp_path / "far.json").exists()
    # the MRI itself given as --removed: refused by name, no result written
    assert register(str(case / "mri.nii.gz"), "mri.json") == 2
    err = capsys.readouterr().err
    assert "mri.nii.gz" in err and "not a label map" in err and "Traceback" not in err
    assert not (tmp_path / "mri.json").exists()
