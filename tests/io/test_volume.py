"""Volumes: NIfTI and NRRD in one RAS type; LPS converted once; bad affines refused."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
from _seq_samples import oblique_itk_image

from usnav.cli.main import main
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


# --- Where a file leaves its placement open: read as ITK (3D Slicer) does, or refuse -------------

LPS_HEADER = {
    "space directions": np.diag([0.8, 0.9, 1.1]),
    "space origin": np.array([10.0, 20.0, 30.0]),
    "kinds": ["domain"] * 3,
}


def _label() -> np.ndarray:
    data = np.zeros((4, 5, 6), np.uint8)
    data[1, 2, 3] = 1
    return data


def _itk_ras(path: Path, ijk: tuple[int, int, int]) -> np.ndarray:
    """Where ITK (3D Slicer's reader) puts voxel ``ijk`` of ``path``, RAS mm."""
    sitk = pytest.importorskip("SimpleITK")
    lps = sitk.ReadImage(str(path)).TransformIndexToPhysicalPoint([int(v) for v in ijk])
    return np.array(lps) * [-1.0, -1.0, 1.0]


@pytest.mark.parametrize(
    "space", [{"space dimension": 3}, {"space": "3D-right-handed"}, {"space": "scanner-xyz"}]
)
def test_nrrd_space_without_anatomy_is_read_as_lps_where_slicer_shows_it(
    tmp_path: Path, space: dict
) -> None:
    path = tmp_path / "label.nrrd"
    nrrd.write(str(path), _label(), {**LPS_HEADER, **space}, index_order="F")
    vol = load_volume(path)
    # (10, 20, 30) LPS = (-10, -20, 30) RAS; +i goes to L
    np.testing.assert_allclose(vol.affine @ [0, 0, 0, 1], [-10, -20, 30, 1])
    np.testing.assert_allclose(vol.affine @ [1, 2, 3, 1], [-10.8, -21.8, 33.3, 1])
    np.testing.assert_allclose(vol.affine[:3] @ [1, 2, 3, 1], _itk_ras(path, (1, 2, 3)))
    assert "taken as LPS" in vol.read_as


def test_nrrd_with_only_spacings_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "spacings.nrrd"
    nrrd.write(str(path), _label(), {"spacings": np.array([0.8, 0.9, 1.1])}, index_order="F")
    with pytest.raises(InputError, match=r"spacings\.nrrd: NRRD has 'spacings' but no 'space dir"):
        load_volume(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nrrd_with_a_broken_number_in_space_directions_names_it(
    tmp_path: Path, bad: float, capsys: pytest.CaptureFixture
) -> None:
    """A NaN or inf in one voxel axis was dropped as if the axis were 'none', and the volume
    refused as "expected a 3D volume with 3 space directions, got shape (4, 5, 6)"."""
    path = tmp_path / "broken.nrrd"
    directions = np.diag([0.8, 0.9, 1.1])
    directions[1, 2] = bad
    nrrd.write(str(path), _label(), {**LPS_HEADER, "space directions": directions}, index_order="F")
    with pytest.raises(InputError, match=r"'space directions' of axis 1 holds NaN or infinite"):
        load_volume(path)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "broken.nrrd" in err and "space directions" in err
    # a voxel axis written 'none' (a list axis) in a 3D volume: the count of directions is said
    none = np.array([[0.8, 0.0, 0.0], [np.nan] * 3, [0.0, 0.0, 1.1]])
    nrrd.write(str(path), _label(), {**LPS_HEADER, "space directions": none}, index_order="F")
    with pytest.raises(InputError, match=r"and 2 space direction\(s\)"):
        load_volume(path)


def test_info_says_how_a_volume_was_read(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "label.nrrd"
    header = {**LPS_HEADER, "space dimension": 3, "space units": ["mm", "mm", "mm"]}
    nrrd.write(str(path), _label(), header, index_order="F")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "spacing      0.8 x 0.9 x 1.1 mm" in out
    assert "read as      no 'space' field: taken as LPS, as ITK and 3D Slicer read it" in out
    assert "space units mm mm mm" in out


def _nifti(path: Path, sform: np.ndarray, qform: np.ndarray, codes: tuple[int, int]) -> Path:
    img = nib.Nifti1Image(np.zeros((10, 12, 14), np.float32), sform)
    img.set_sform(sform, code=codes[0])
    img.set_qform(qform, code=codes[1])
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))
    return path


def test_nifti_sform_and_qform_placing_the_volume_apart_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    mirrored_x = np.diag([-1.0, 1.0, 1.0, 1.0]) @ AFFINE
    path = _nifti(tmp_path / "mri.nii.gz", AFFINE, mirrored_x, (2, 1))
    # the reason: ITK (3D Slicer) takes the qform here, nibabel the sform
    itk = _itk_ras(path, (0, 0, 0))
    np.testing.assert_allclose(itk, mirrored_x[:3, 3], atol=1e-4)
    with pytest.raises(InputError) as caught:
        load_volume(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: sform (code 2) and qform (code 1) disagree")
    assert "corners up to 80.5 mm apart and one is the mirror image of the other" in message
    assert "img.set_qform(img.get_sform(), code=2)" in message
    # the CLI: one line, exit 2
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "disagree" in err and "Traceback" not in err


def test_nifti_forms_2_mm_apart_or_mirrored_in_place_are_refused(tmp_path: Path) -> None:
    shifted = AFFINE.copy()
    shifted[1, 3] += 2.0
    with pytest.raises(InputError, match=r"up to 2\.0 mm apart; nibabel"):
        load_volume(_nifti(tmp_path / "shifted.nii", AFFINE, shifted, (1, 1)))
    # one 0.3 mm slice mirrored about its middle: the corners move 0.3 mm, the handedness flips
    thin = np.diag([0.5, 0.6, 0.3, 1.0])
    img = nib.Nifti1Image(np.zeros((4, 5, 1), np.float32), thin)
    img.set_sform(thin, code=1)
    img.set_qform(thin @ np.diag([1.0, 1.0, -1.0, 1.0]), code=1)
    nib.save(img, str(tmp_path / "slice.nii"))
    with pytest.raises(InputError, match=r"up to 0\.3 mm apart and one is the mirror image"):
        load_volume(tmp_path / "slice.nii")


def test_nifti_forms_that_differ_by_rounding_still_load(tmp_path: Path) -> None:
    # an oblique affine: the qform's quaternion is float32, the sform's matrix too
    angle = np.deg2rad(17.3)
    turn = np.eye(4)
    turn[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    oblique = turn @ AFFINE
    vol = load_volume(_nifti(tmp_path / "oblique.nii", oblique, oblique, (1, 1)))
    np.testing.assert_allclose(vol.affine, oblique, atol=1e-4)
    # 0.05° apart: well under 0.5 mm at the corners of this small volume
    tiny = np.eye(4)
    tiny[:2, :2] = [[1.0, -np.deg2rad(0.05)], [np.deg2rad(0.05), 1.0]]
    vol = load_volume(_nifti(tmp_path / "tiny.nii", oblique, tiny @ oblique, (2, 1)))
    np.testing.assert_allclose(vol.affine, oblique, atol=1e-4)
    assert vol.read_as.startswith("sform (code 2); the qform (code 1) agrees within")


def test_saved_nifti_with_a_shear_loads_again(tmp_path: Path) -> None:
    sheared = AFFINE.copy()
    sheared[0, 1] = 0.3  # no quaternion holds this: the qform is left out
    vol = Volume(np.zeros((4, 5, 6), np.float32), sheared)
    back = load_volume(save_volume(vol, tmp_path / "sheared.nii"))
    np.testing.assert_allclose(back.affine, sheared, atol=1e-6)


def test_saved_nifti_with_a_slight_shear_has_no_qform_for_itk_to_misplace(tmp_path: Path) -> None:
    """A shear small enough for a quaternion to come within 0.5 mm still leaves the qform out:
    ITK (3D Slicer) reads the qform of a sheared sform, which put its voxel 0.07 mm away from
    usnav's on this volume."""
    sheared = AFFINE.copy()
    sheared[0, 1] = 0.003  # mm per voxel along j: a qform would miss a corner by ~0.1 mm
    vol = Volume(np.arange(40 * 50 * 30, dtype=np.int16).reshape(40, 50, 30), sheared)
    path = save_volume(vol, tmp_path / "slight.nii.gz")
    header = nib.load(path).header
    assert (int(header["sform_code"]), int(header["qform_code"])) == (1, 0)
    np.testing.assert_allclose(load_volume(path).affine, sheared, atol=1e-5)
    sitk = pytest.importorskip("SimpleITK")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError:
        return  # ITK refuses a sheared sform alone: refused, not misplaced
    ijk = [39, 49, 29]
    lps = np.array(image.TransformIndexToPhysicalPoint(ijk))
    np.testing.assert_allclose(lps * [-1, -1, 1], (sheared @ [*ijk, 1])[:3], atol=1e-3)


@pytest.mark.parametrize("name", ["m.nii.gz", "m.nrrd"])
@pytest.mark.parametrize("dtype", [np.bool_, np.int64])
def test_boolean_and_64_bit_voxels_are_saved(tmp_path: Path, name: str, dtype: type) -> None:
    data = (np.arange(4 * 5 * 6).reshape(4, 5, 6) % 3 == 0).astype(dtype)
    back = load_volume(save_volume(Volume(data, AFFINE), tmp_path / name))
    np.testing.assert_array_equal(back.data, data)
    assert back.data.dtype == (np.uint8 if dtype is np.bool_ else np.int64)


@pytest.mark.parametrize(("unit", "mm_per_unit"), [("meter", 1000.0), ("micron", 0.001)])
def test_nifti_lengths_in_metres_or_micrometres_are_converted_to_mm(
    tmp_path: Path, unit: str, mm_per_unit: float
) -> None:
    in_unit = AFFINE.copy()
    in_unit[:3] /= mm_per_unit
    img = nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), in_unit)
    img.set_sform(in_unit, code=1)
    img.set_qform(in_unit, code=1)
    img.header.set_xyzt_units(unit)
    nib.save(img, str(tmp_path / "mri.nii"))
    vol = load_volume(tmp_path / "mri.nii")
    np.testing.assert_allclose(vol.affine, AFFINE, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(vol.spacing_mm, [0.5, 0.6, 0.7], rtol=1e-5)
    # as ITK converts them (spacing and origin)
    np.testing.assert_allclose(
        _itk_ras(tmp_path / "mri.nii", (1, 2, 3)), vol.affine[:3] @ [1, 2, 3, 1], atol=1e-3
    )
    assert f", ×{mm_per_unit:g} to mm" in vol.read_as


@pytest.mark.parametrize("xyzt_units", [0, 2])
def test_nifti_lengths_in_mm_or_without_a_unit_are_mm(tmp_path: Path, xyzt_units: int) -> None:
    img = nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), AFFINE)
    img.header["xyzt_units"] = xyzt_units
    nib.save(img, str(tmp_path / "mri.nii"))
    np.testing.assert_allclose(load_volume(tmp_path / "mri.nii").affine, AFFINE, atol=1e-6)


def test_nifti_with_a_spatial_unit_code_that_is_none_is_refused(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), AFFINE)
    img.header["xyzt_units"] = 5
    nib.save(img, str(tmp_path / "mri.nii"))
    with pytest.raises(InputError, match=r"mri\.nii: xyzt_units has spatial code 5"):
        load_volume(tmp_path / "mri.nii")


def _nrrd_with_units(path: Path, units: str) -> Path:
    """A LPS NRRD whose ``space units`` line is ``units`` as written (UTF-8, which pynrrd's
    writer cannot do)."""
    header = {**LPS_HEADER, "space": "left-posterior-superior", "space units": ["x", "x", "x"]}
    nrrd.write(str(path), _label(), header, index_order="F")
    path.write_bytes(path.read_bytes().replace(b'"x" "x" "x"', units.encode("utf-8"), 1))
    return path


def test_nrrd_vectors_with_spaces_are_refused_saying_how_to_write_them(tmp_path: Path) -> None:
    """ITK reads '(0.5, 0, 0)' (teem allows the spaces), pynrrd cannot: the refusal says what
    to change rather than only pynrrd's words."""
    path = save_volume(_volume(), tmp_path / "v.nrrd")
    head, sep, payload = path.read_bytes().partition(b"\n\n")
    spaced = tmp_path / "spaced.nrrd"
    spaced.write_bytes(head.replace(b",", b", ") + sep + payload)
    with pytest.raises(InputError, match=r"spaced\.nrrd: cannot read NRRD.*without spaces"):
        load_volume(spaced)


def test_nrrd_in_mm_loads(tmp_path: Path) -> None:
    vol = load_volume(_nrrd_with_units(tmp_path / "label.nrrd", '"mm" "mm" "mm"'))
    lps_mm = np.array([[0.8, 0, 0, 10.0], [0, 0.9, 0, 20.0], [0, 0, 1.1, 30.0], [0, 0, 0, 1]])
    np.testing.assert_allclose(vol.affine, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps_mm)


@pytest.mark.parametrize(
    "units",
    [
        '"m" "m" "m"',
        '"cm" "cm" "cm"',
        '"um" "um" "um"',
        '"\u00b5m" "\u00b5m" "\u00b5m"',  # pynrrd alone reads these as "m"
        '"mm" "mm" "cm"',
    ],
)
def test_nrrd_space_units_other_than_mm_are_refused(tmp_path: Path, units: str) -> None:
    """ITK (3D Slicer) ignores ``space units``: usnav neither ignores them (it would misread a
    file that means them) nor honours them (it would disagree with the plan seen in Slicer)."""
    path = _nrrd_with_units(tmp_path / "label.nrrd", units)
    with pytest.raises(InputError, match=r"label\.nrrd: NRRD 'space units' are .*not mm"):
        load_volume(path)


def test_nrrd_unknown_space_unit_is_refused(tmp_path: Path) -> None:
    path = _nrrd_with_units(tmp_path / "label.nrrd", '"furlong" "furlong" "furlong"')
    with pytest.raises(InputError, match=r"label\.nrrd: unknown NRRD space unit 'furlong'"):
        load_volume(path)


@pytest.mark.parametrize("name", ["mri.nii.gz", "mri.nii", "mri.nrrd"])
def test_an_empty_volume_file_is_called_empty(tmp_path: Path, name: str) -> None:
    # a 0-byte file used to get the format library's own words (gzip, header size)
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(InputError, match="the file is empty"):
        load_volume(path)


def test_a_label_map_is_told_from_an_mri() -> None:
    """2-16 whole-number values: a label map (refused when given as the MRI); an MRI's
    grey levels (uint8 too), a constant volume (the registration's own refusal) and a float
    volume of few non-integer values are not."""
    rng = np.random.default_rng(3)
    label = np.zeros((20, 21, 22), np.uint8)
    label[5:9, 5:9, 5:9] = 1
    label[9:11, 5:9, 5:9] = 2
    with pytest.raises(
        InputError, match=r"tumor\.nii\.gz: holds only 3 distinct values \(0, 1, 2\)"
    ):
        Volume(label, AFFINE, source="tumor.nii.gz").check_not_label_map("give the MRI")
    with pytest.raises(InputError, match="2 distinct values"):
        Volume(label.astype(np.float32) > 0, AFFINE).check_not_label_map("give the MRI")
    mris = [
        rng.integers(0, 256, label.shape).astype(np.uint8),
        rng.normal(300, 50, label.shape).astype(np.int16),
        np.full(label.shape, 7, np.int16),
        rng.choice([0.25, 0.5, 0.75], label.shape).astype(np.float32),
        (label * 100).astype(np.int16),  # a piecewise-constant phantom MRI: 0, 100, 200
    ]
    for data in mris:
        Volume(data, AFFINE).check_not_label_map("give the MRI")


@pytest.mark.parametrize("extra", [(1,), (1, 1)])
def test_nifti_with_trailing_axes_of_one_loads_as_its_3d_volume(
    tmp_path: Path, extra: tuple[int, ...]
) -> None:
    """A 3D volume saved with a time axis of 1, or as ITK writes a one-component image
    ((x, y, z, 1, 1)), is the same volume: the same voxels, the same affine."""
    vol = _volume()
    img = nib.Nifti1Image(vol.data.reshape(vol.shape + extra), AFFINE)
    nib.save(img, str(tmp_path / "v.nii.gz"))
    back = load_volume(tmp_path / "v.nii.gz")
    np.testing.assert_array_equal(back.data, vol.data)
    np.testing.assert_allclose(back.affine, AFFINE)


def test_nifti_series_of_volumes_is_refused_saying_what_to_give(tmp_path: Path) -> None:
    data = np.zeros((3, 3, 3, 2, 1), np.float32)
    nib.save(nib.Nifti1Image(data, AFFINE), str(tmp_path / "series.nii"))
    with pytest.raises(InputError, match=r"series\.nii: .*holds 2 volumes: give one 3D volume"):
        load_volume(tmp_path / "series.nii")


@pytest.mark.parametrize("image", [nib.Nifti1Image, nib.Nifti2Image])
@pytest.mark.parametrize(("written", "named"), [("v.nii", "v.nii.gz"), ("v.nii.gz", "v.nii")])
def test_a_nifti_compressed_or_not_against_its_name_is_the_same_volume(
    tmp_path: Path, image, written: str, named: str
) -> None:
    """nibabel goes by the name ("is not a gzip file", "Cannot work out file type"); ITK reads
    an uncompressed .nii.gz. The bytes decide."""
    vol = _volume()
    img = image(vol.data, AFFINE)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(tmp_path / written))
    (tmp_path / written).rename(tmp_path / f"x_{named}")
    back = load_volume(tmp_path / f"x_{named}")
    np.testing.assert_array_equal(back.data, vol.data)
    np.testing.assert_allclose(back.affine, AFFINE)


@pytest.mark.parametrize("suffix", [".mha", ".mhd"])
def test_a_metaio_volume_loads_as_its_nrrd_does(tmp_path: Path, suffix: str) -> None:
    """Session 42: ``--mri`` refused ``.mha`` although ``usnav reconstruct`` writes it. ITK
    writes one oblique image as MetaIO and as NRRD; both load to the same voxels and affine."""
    sitk = pytest.importorskip("SimpleITK")
    image = oblique_itk_image(sitk)
    sitk.WriteImage(image, str(tmp_path / f"vol{suffix}"))
    sitk.WriteImage(image, str(tmp_path / "vol.nrrd"))
    metaio, reference = load_volume(tmp_path / f"vol{suffix}"), load_volume(tmp_path / "vol.nrrd")
    np.testing.assert_array_equal(metaio.data, reference.data)
    np.testing.assert_allclose(metaio.affine, reference.affine, atol=1e-9)


def test_a_metaio_origin_is_read_under_its_other_names(tmp_path: Path) -> None:
    """ITK's MetaImage reads ``Origin`` (and ``Position``) as ``Offset``."""
    header = (
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nElementSpacing = 0.5 0.5 2\n"
        "Origin = 10 20 30\nDimSize = 2 3 4\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n"
    )
    (tmp_path / "o.mha").write_bytes(header.encode() + bytes(24))
    vol = load_volume(tmp_path / "o.mha")
    np.testing.assert_allclose(vol.affine @ [1, 0, 1, 1], [-10.5, -20, 32, 1])


def test_a_recording_or_a_bad_offset_is_refused_as_a_volume(tmp_path: Path) -> None:
    header = (
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nDimSize = 2 3 4\n"
        "Kinds = domain domain list\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n"
    )
    (tmp_path / "rec.mha").write_bytes(header.encode() + bytes(24))
    with pytest.raises(InputError, match=r"rec\.mha: holds 4 frames, not one 3D grey volume"):
        load_volume(tmp_path / "rec.mha")
    header = header.replace("list", "domain").replace("NDims = 3\n", "NDims = 3\nOffset = 1 2\n")
    (tmp_path / "bad.mha").write_bytes(header.encode() + bytes(24))
    with pytest.raises(InputError, match=r"bad\.mha: Offset = '1 2' is not 3 numbers"):
        load_volume(tmp_path / "bad.mha")
