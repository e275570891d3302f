"""Session-32 outside audit of the offline tools (reconstruct, register-points, margins): each
test here failed before its fix, except the known-object check of reconstruct, which pins the
geometry the audit measured (a sphere and a box swept through known poses land where they are,
with their size, in the NIfTI's and the NRRD's RAS, from MF and UN recordings alike)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
from cli_helpers import assert_bad_input, usnav

from usnav.frames import TrackedFrame, TrackedTransform, TransformStatus
from usnav.io.sequence import write_sequence

SPHERE_CENTRE = np.array([6.0, 2.0, 3.0])  # Reference mm
SPHERE_RADIUS = 5.0
BOX = (np.array([-12.0, 4.0, -8.0]), np.array([-6.0, 10.0, -4.0]))  # Reference mm
INVALID = (4, 11)  # frames whose probe pose is INVALID (and garbage)


def _rot_x(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def known_object_sweep(folder: Path, orientation: str) -> tuple[Path, Path]:
    """A sweep along Reference y (0.5 mm steps) through a bright sphere and a grey box, 0.25 mm
    pixels, tracked as ProbeToTracker + ReferenceToTracker; two frames INVALID."""
    rows, cols, px = 80, 120, 0.25
    image_to_probe = np.diag([px, px, px, 1.0])
    image_to_probe[:3, 3] = [-15, 0, 0]
    cal = folder / "cal.txt"
    np.savetxt(cal, image_to_probe.reshape(1, 16))
    reference_to_tracker = np.eye(4)
    reference_to_tracker[:3, :3] = _rot_x(25)
    reference_to_tracker[:3, 3] = [100, -50, 200]
    c, r = np.meshgrid(np.arange(cols), np.arange(rows))
    pixels = np.stack([c.ravel(), r.ravel(), np.zeros(c.size), np.ones(c.size)])
    frames = []
    for k in range(37):
        probe_to_reference = np.eye(4)
        probe_to_reference[:3, :3] = _rot_x(90)  # image rows go along Reference z
        probe_to_reference[:3, 3] = [0, -7 + 0.5 * k, -12]
        world = (probe_to_reference @ image_to_probe @ pixels)[:3].T
        image = np.full(world.shape[0], 20, np.uint8)
        image[np.linalg.norm(world - SPHERE_CENTRE, axis=1) <= SPHERE_RADIUS] = 200
        image[np.all((world >= BOX[0]) & (world <= BOX[1]), axis=1)] = 120
        image = image.reshape(rows, cols)
        if orientation == "UN":  # marker on the other side, near field at the bottom
            image = np.ascontiguousarray(image[::-1, ::-1])
        probe_to_tracker = reference_to_tracker @ probe_to_reference
        status = TransformStatus.OK
        if k in INVALID:
            status = TransformStatus.INVALID
            probe_to_tracker[:3, 3] += 80  # would stretch the grid if it were used
        transforms = {
            "ProbeToTracker": TrackedTransform(probe_to_tracker, status),
            "ReferenceToTracker": TrackedTransform(reference_to_tracker),
        }
        frames.append(
            TrackedFrame(
                image, transforms, t_device=0.05 * k, frame_number=k, orientation=orientation
            )
        )
    return write_sequence(folder / f"sweep_{orientation}.igs.mha", frames), cal


def _objects_in_ras(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Sphere centroid and volume, box bounds, RAS mm (voxel centres)."""
    idx = np.argwhere(np.ones(data.shape, bool))
    ras = np.c_[idx, np.ones(len(idx))] @ affine[:3].T
    values = data.ravel()
    reference_x = -ras[:, 0]  # the file is diag(-1, -1, 1) · Reference
    sphere = (values >= 110) & (reference_x > 0)
    box = (values >= 70) & (reference_x < 0)
    voxel = abs(np.linalg.det(affine[:3, :3]))
    bounds = np.array([ras[box].min(axis=0), ras[box].max(axis=0)])
    return ras[sphere].mean(axis=0), float(sphere.sum() * voxel), bounds


def test_reconstruct_puts_a_known_object_where_it_is_and_says_which_frames_it_left_out(
    tmp_path: Path,
) -> None:
    """The 2 INVALID frames were left out silently ("35 frames"): the line now counts them."""
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    expected_box = np.sort(np.stack([lps_to_ras @ BOX[0], lps_to_ras @ BOX[1]]), axis=0)
    for orientation in ("MF", "UN"):
        recording, cal = known_object_sweep(tmp_path, orientation)
        for suffix in ("nii.gz", "nrrd"):
            out = tmp_path / f"{orientation}.{suffix}"
            result = usnav(
                tmp_path, "reconstruct", str(recording), "--calibration", str(cal),
                "--out", str(out), "--spacing", "0.5",
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
            assert "35 frames (2 of 37 left out" in result.stdout, result.stdout
            if suffix == "nii.gz":
                image = nib.load(out)
                data, affine = np.asarray(image.dataobj), image.affine
            else:
                data, header = nrrd.read(str(out))
                assert header["space"] == "left-posterior-superior"
                affine = np.eye(4)
                affine[:3, :3] = np.asarray(header["space directions"]).T
                affine[:3, 3] = header["space origin"]
                affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS → RAS
            centre, volume, box = _objects_in_ras(data, affine)
            np.testing.assert_allclose(centre, lps_to_ras @ SPHERE_CENTRE, atol=0.15)
            assert abs(volume / (4 / 3 * np.pi * SPHERE_RADIUS**3) - 1) < 0.06
            np.testing.assert_allclose(box, expected_box, atol=0.26)  # half a voxel


def _point_file(path: Path, rows: list[tuple[float, float, float]]) -> Path:
    path.write_text("\n".join(" ".join(repr(v) for v in row) for row in rows) + "\n")
    return path


def test_register_points_with_overflowing_coordinates_is_bad_input(tmp_path: Path) -> None:
    """1e308 mm coordinates hung the SVD (LAPACK on inf) at 100 % CPU, never returning."""
    points = _point_file(tmp_path / "p.txt", [(0, 0, 0), (1e308, 0, 0), (0, 1, 0), (0, 0, 1)])
    result = usnav(
        tmp_path, "register-points", "--moving", str(points), "--fixed", str(points),
        "--out", "r.json", timeout=60,
    )  # fmt: skip
    assert_bad_input(result, "p.txt", "too large")
    assert not (tmp_path / "r.json").exists()


def test_register_points_with_a_nan_target_is_bad_input(tmp_path: Path) -> None:
    """A NaN target gave exit 0 and a silent "–" for its expected TRE."""
    points = _point_file(tmp_path / "p.txt", [(0, 0, 0), (10, 0, 0), (0, 10, 0), (0, 0, 10)])
    targets = _point_file(tmp_path / "t.txt", [(1, 2, 3), (float("nan"), 0, 0)])
    result = usnav(
        tmp_path, "register-points", "--moving", str(points), "--fixed", str(points),
        "--targets", str(targets), "--out", "r.json",
    )  # fmt: skip
    assert_bad_input(result, "t.txt", "NaN")
    assert not (tmp_path / "r.json").exists()


def test_reconstruct_of_a_pose_a_kilometre_away_is_bad_input(tmp_path: Path) -> None:
    """One OK pose 1e6 mm off gave a 1000019 × 22 × 1 grid, under the voxel limit but beyond
    NIfTI's int16 sizes: 'internal error: HeaderDataError', exit 1, after the pasting."""
    image = np.full((40, 60), 100, np.uint8)
    frames = []
    for k in range(6):
        pose = np.eye(4)
        pose[1, 3] = k
        if k == 4:
            pose[0, 3] = 1e6
        transforms = {
            "ProbeToTracker": TrackedTransform(pose),
            "ReferenceToTracker": TrackedTransform(np.eye(4)),
        }
        frames.append(TrackedFrame(image, transforms, t_device=0.1 * k, frame_number=k))
    recording = write_sequence(tmp_path / "wild.igs.mha", frames)
    cal = tmp_path / "cal.txt"
    np.savetxt(cal, np.diag([0.3, 0.3, 0.3, 1.0]).reshape(1, 16))
    result = usnav(
        tmp_path, "reconstruct", str(recording), "--calibration", str(cal),
        "--out", "v.nii.gz", "--spacing", "1",
    )  # fmt: skip
    assert_bad_input(result, "wild.igs.mha", "32767 voxels", "check the tracking")
    assert not (tmp_path / "v.nii.gz").exists()


def test_an_output_that_is_one_of_the_inputs_is_refused_even_with_force(tmp_path: Path) -> None:
    """`reconstruct REC --out REC --force` replaced the only copy of the sweep with its volume
    (convert already refused this); register-points, margins and register did the same."""
    recording = tmp_path / "sweep.igs.mha"
    recording.write_bytes(b"the patient's sweep")
    tag = tmp_path / "pairs.tag"
    tag.write_text("MNI Tag Point File\n")
    commands = {
        "reconstruct": ["reconstruct", str(recording), "--calibration", "c.txt"],
        "register-points": ["register-points", str(tag)],
        "margins": ["margins", str(recording), "--mri", "m.nii.gz", "--label", "l.nii.gz",
                    "--calibration", "c.txt", "--reference-to-mri", "r.txt"],
        "register": ["register", str(recording), "--mri", "m.nii.gz", "--calibration", "c.txt",
                     "--init", "i.txt"],
    }  # fmt: skip
    for name, args in commands.items():
        target = tag if name == "register-points" else recording
        result = usnav(tmp_path, *args, "--out", str(target), "--force")
        assert_bad_input(result, "is one of the inputs", "write to another file")
    assert recording.read_bytes() == b"the patient's sweep"
    assert tag.read_text() == "MNI Tag Point File\n"
