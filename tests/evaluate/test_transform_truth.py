"""A truth given as the true ``ReferenceToMri`` (16 numbers) is scored at the case's tumor: the
mean displacement over the tumor label's surface voxels — so cases from another generator, or a
phantom with a known pose, are scored by ``usnav evaluate`` itself."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from evaluate_helpers import case_of_empty_files
from scipy.spatial.transform import Rotation

from usnav.errors import InputError
from usnav.evaluate.case import evaluate_case
from usnav.evaluate.truth import load_scorer, tumor_surface_mri
from usnav.io.manifest import ManifestCase


def _label(tmp_path: Path) -> Path:
    """A 6×6×6-voxel tumor (1.5 mm voxels) in a 20³ grid with an oblique affine, RAS mm."""
    data = np.zeros((20, 20, 20), np.uint8)
    data[5:11, 7:13, 4:10] = 1
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("z", 30, degrees=True).as_matrix() * 1.5
    affine[:3, 3] = [-10.0, 4.0, 30.0]
    path = tmp_path / "tumor_label.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def _truth(tmp_path: Path) -> tuple[Path, np.ndarray]:
    truth = np.eye(4)
    truth[:3, :3] = Rotation.from_rotvec([0.2, -0.1, 0.3]).as_matrix()
    truth[:3, 3] = [5.0, -3.0, 12.0]
    path = tmp_path / "truth.txt"
    np.savetxt(path, truth)
    return path, truth


def test_surface_is_the_label_boundary(tmp_path: Path) -> None:
    surface = tumor_surface_mri(_label(tmp_path))
    # a 6×6×6 block has 6³ − 4³ = 152 voxels with a face outside
    assert surface.shape == (152, 3)
    centre = np.array([7.5, 9.5, 6.5])  # voxel centre of the block, ijk
    affine = nib.load(tmp_path / "tumor_label.nii.gz").affine
    assert np.allclose(surface.mean(axis=0), affine[:3, :3] @ centre + affine[:3, 3])


def test_error_is_the_displacement_at_the_tumor(tmp_path: Path) -> None:
    label = _label(tmp_path)
    path, truth = _truth(tmp_path)
    scorer = load_scorer(path, label)
    assert scorer.kind == "transform"
    assert scorer.error_mm(truth) == pytest.approx(0.0, abs=1e-9)
    shifted = truth.copy()
    shifted[:3, 3] += [3.0, 0.0, 4.0]  # a translation in the MRI moves every point 5 mm
    assert scorer.error_mm(shifted) == pytest.approx(5.0)
    assert scorer.error_now_mm(shifted) == pytest.approx(5.0)  # no cord shift known
    # a rotation about the tumor's centre: the mean distance of its surface from the centre
    # times 2 sin(θ/2)
    surface = tumor_surface_mri(label)
    centre = surface.mean(axis=0)
    turn = np.eye(4)
    turn[:3, :3] = Rotation.from_euler("x", 10, degrees=True).as_matrix()
    turn[:3, 3] = centre - turn[:3, :3] @ centre
    expected = np.mean(
        np.linalg.norm((surface - centre) @ turn[:3, :3].T - (surface - centre), axis=1)
    )
    assert scorer.error_mm(turn @ truth) == pytest.approx(expected)
    assert expected > 0.5


def test_a_transform_truth_without_a_label_is_named(tmp_path: Path) -> None:
    path, _ = _truth(tmp_path)
    with pytest.raises(InputError) as info:
        load_scorer(path)
    assert str(path) in str(info.value) and "label" in str(info.value)
    empty = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), empty)
    with pytest.raises(InputError, match="no voxel > 0"):
        load_scorer(path, empty)
    bad = tmp_path / "scaled.txt"
    np.savetxt(bad, np.diag([1.1, 1.0, 1.0, 1.0]))
    with pytest.raises(InputError, match="not rigid"):
        load_scorer(bad, _label(tmp_path))


def test_a_batch_case_passes_its_label_to_the_truth(tmp_path: Path) -> None:
    """Through :func:`evaluate_case`: without a label a transform truth fails its case with a
    line naming the truth file (the truth is read before any registration); with the label the
    truth is accepted and the case goes on to its (here empty) recording."""
    path, _ = _truth(tmp_path)
    case = case_of_empty_files(tmp_path, path, tags={"site": "elsewhere"})
    row = evaluate_case(case, tmp_path / "results")
    assert row["status"] == "failed"
    assert str(path) in row["reason"] and "label" in row["reason"]

    labelled = ManifestCase(**{**case.__dict__, "label": _label(tmp_path)})
    row = evaluate_case(labelled, tmp_path / "results2")
    assert row["status"] == "failed"
    assert str(path) not in row["reason"] and "internal error" not in row["reason"]
