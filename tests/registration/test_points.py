"""Paired-point registration: exact recovery, FRE, Fitzpatrick's expected TRE, point files,
the RESECT landmark floor, and ``usnav register-points``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from usnav.cli.main import main
from usnav.errors import InputError
from usnav.registration.points import (
    expected_tre,
    fit_rigid,
    read_points,
    read_tag_file,
    register_points,
)


@settings(max_examples=40, deadline=None)
@given(
    rotvec=st.lists(st.floats(-3, 3), min_size=3, max_size=3),
    shift=st.lists(st.floats(-200, 200), min_size=3, max_size=3),
    seed=st.integers(0, 10_000),
)
def test_fit_rigid_recovers_any_rigid_transform(rotvec, shift, seed):
    pts = np.random.default_rng(seed).uniform(-50, 50, size=(6, 3))
    truth = np.eye(4)
    truth[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    truth[:3, 3] = shift
    moved = pts @ truth[:3, :3].T + truth[:3, 3]
    np.testing.assert_allclose(fit_rigid(pts, moved), truth, atol=1e-7)


def test_never_a_reflection_even_for_mirrored_points():
    pts = np.random.default_rng(1).normal(size=(8, 3)) * 20
    mirrored = pts * np.array([-1, 1, 1])
    m = fit_rigid(pts, mirrored)
    assert np.linalg.det(m[:3, :3]) == pytest.approx(1.0)


def test_fre_and_estimated_fle_with_noise():
    rng = np.random.default_rng(2)
    pts = rng.uniform(-40, 40, size=(30, 3))
    noisy = pts + rng.normal(scale=0.5, size=pts.shape)
    reg = register_points(pts, noisy)
    assert reg.fre_rms_mm == pytest.approx(np.sqrt(np.mean(reg.residuals_mm**2)))
    # FLE per point is 0.5*sqrt(3) RMS; the estimate from the FRE should be near it
    assert reg.fle_rms_mm == pytest.approx(0.5 * np.sqrt(3), rel=0.25)


def test_expected_tre_formula():
    # fiducials on a square in the xy plane: at the centroid TRE = FLE / sqrt(N)
    f = np.array([[10, 0, 0], [-10, 0, 0], [0, 10, 0], [0, -10, 0]], float)
    assert expected_tre(f, np.zeros((1, 3)), 1.0)[0] == pytest.approx(0.5)
    # far along z (the axis with least fiducial spread in the perpendicular sense grows TRE)
    far = expected_tre(f, np.array([[0, 0, 50.0]]), 1.0)[0]
    near = expected_tre(f, np.array([[0, 0, 5.0]]), 1.0)[0]
    assert far > near > 0.5


def test_expected_tre_predicts_monte_carlo():
    rng = np.random.default_rng(3)
    fid = rng.uniform(-30, 30, size=(6, 3))
    target = np.array([[40.0, 10.0, -20.0]])
    fle = 1.0
    errs = []
    for _ in range(2000):
        noisy = fid + rng.normal(scale=fle / np.sqrt(3), size=fid.shape)
        m = fit_rigid(fid, noisy)
        errs.append(np.linalg.norm(target[0] @ m[:3, :3].T + m[:3, 3] - target[0]))
    measured = np.sqrt(np.mean(np.square(errs)))
    assert expected_tre(fid, target, fle)[0] == pytest.approx(measured, rel=0.15)


def test_too_few_or_collinear_points_are_refused():
    with pytest.raises(InputError, match="at least 3"):
        register_points(np.zeros((2, 3)), np.zeros((2, 3)), source="pts.txt")
    line = np.c_[np.arange(5.0), np.zeros(5), np.zeros(5)]
    with pytest.raises(InputError, match="collinear"):
        register_points(line, line + 1, source="pts.txt")


def test_point_files(tmp_path):
    (tmp_path / "a.txt").write_text("# x y z\n1 2 3\n4,5,6\n")
    np.testing.assert_allclose(read_points(tmp_path / "a.txt"), [[1, 2, 3], [4, 5, 6]])
    (tmp_path / "a.fcsv").write_text(
        "# Markups fiducial file version = 4.11\n# CoordinateSystem = LPS\n"
        "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n"
        "vtkMRMLMarkupsFiducialNode_0,1,2,3,0,0,0,1,1,1,0,F-1,,\n"
    )
    np.testing.assert_allclose(read_points(tmp_path / "a.fcsv"), [[-1, -2, 3]])
    for system, expected in (("RAS", [1, 2, 3]), ("0", [1, 2, 3]), ("1", [-1, -2, 3])):
        text = (tmp_path / "a.fcsv").read_text().replace("= LPS", f"= {system}")
        (tmp_path / "b.fcsv").write_text(text)
        np.testing.assert_allclose(read_points(tmp_path / "b.fcsv"), [expected])
    # an old Slicer's 2 = IJK (voxel indices): no world position, refused rather than read as RAS
    (tmp_path / "b.fcsv").write_text(text.replace("= 1", "= 2"))
    with pytest.raises(InputError, match=r"b\.fcsv: points in coordinate system '2'"):
        read_points(tmp_path / "b.fcsv")
    (tmp_path / "a.mrk.json").write_text(
        json.dumps(
            {"markups": [{"coordinateSystem": "LPS", "controlPoints": [{"position": [1, 2, 3]}]}]}
        )
    )
    np.testing.assert_allclose(read_points(tmp_path / "a.mrk.json"), [[-1, -2, 3]])
    # Slicer saves a landmark not placed yet at a dummy position (0, 0, 0): refused, not paired
    placed = {"label": "F-1", "position": [1, 2, 3], "positionStatus": "defined"}
    unplaced = {"label": "F-2", "position": [0, 0, 0], "positionStatus": "undefined"}
    (tmp_path / "b.mrk.json").write_text(
        json.dumps({"markups": [{"coordinateSystem": "RAS", "controlPoints": [placed, unplaced]}]})
    )
    with pytest.raises(InputError, match=r"b\.mrk\.json: control point F-2 is not placed"):
        read_points(tmp_path / "b.mrk.json")
    (tmp_path / "bad.txt").write_text("1 2 x\n")
    with pytest.raises(InputError, match="bad.txt"):
        read_points(tmp_path / "bad.txt")


@pytest.mark.needs_data
def test_resect_landmark_floor_is_0_83_mm(shared_data):
    mri_pts, us_pts = read_tag_file(shared_data / "resect/case24/Case24-MRI-beforeUS.tag")
    assert mri_pts.shape == us_pts.shape == (16, 3)
    m = fit_rigid(us_pts, mri_pts)
    mtre = np.linalg.norm(us_pts @ m[:3, :3].T + m[:3, 3] - mri_pts, axis=1).mean()
    assert mtre == pytest.approx(0.83, abs=0.005)
    assert np.linalg.norm(us_pts - mri_pts, axis=1).mean() == pytest.approx(1.10, abs=0.005)


def test_cli_register_points(tmp_path, capsys):
    rng = np.random.default_rng(4)
    fixed = rng.uniform(-50, 50, size=(8, 3))
    truth = np.eye(4)
    truth[:3, :3] = Rotation.from_euler("xyz", [5, -10, 20], degrees=True).as_matrix()
    truth[:3, 3] = [10, -20, 5]
    moving = (fixed - truth[:3, 3]) @ truth[:3, :3]  # inverse-map: truth maps moving → fixed
    np.savetxt(tmp_path / "m.txt", moving)
    np.savetxt(tmp_path / "f.txt", fixed)
    out = tmp_path / "r.json"
    code = main(
        [
            "register-points",
            "--moving",
            str(tmp_path / "m.txt"),
            "--fixed",
            str(tmp_path / "f.txt"),
            "--fle",
            "0.5",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    doc = json.loads(out.read_text())
    np.testing.assert_allclose(doc["ReferenceToMri"], truth, atol=1e-6)
    assert doc["fre_rms_mm"] < 1e-6
    assert doc["expected_tre_mm"][0] == pytest.approx(0.5 / np.sqrt(8), rel=1e-3)
    assert "FRE" in capsys.readouterr().out
    np.savetxt(tmp_path / "f2.txt", fixed[:5])
    code = main(
        [
            "register-points",
            "--moving",
            str(tmp_path / "m.txt"),
            "--fixed",
            str(tmp_path / "f2.txt"),
            "--out",
            str(tmp_path / "r2.json"),  # an existing RESULT.json is refused first
        ]
    )
    assert code == 2
    assert "paired" in capsys.readouterr().err
    # a tag file and point files together: which pairs were meant is not guessed
    (tmp_path / "pairs.tag").write_text(
        "MNI Tag Point File\nVolumes = 2;\nPoints =\n 0 0 0 1 1 1;\n"
    )
    code = main(
        [
            "register-points",
            str(tmp_path / "pairs.tag"),
            "--moving",
            str(tmp_path / "m.txt"),
            "--fixed",
            str(tmp_path / "f.txt"),
            "--out",
            str(tmp_path / "r3.json"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "both a tag file" in err and "--moving/--fixed" in err
    assert not (tmp_path / "r3.json").exists()
