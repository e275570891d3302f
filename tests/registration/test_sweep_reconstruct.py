"""Sweeps (field of view, invalid tracking, orientation) and PLUS-compatible reconstruction."""

from __future__ import annotations

import numpy as np
import pytest

from usnav.cli.main import main
from usnav.errors import ConfigError, InputError
from usnav.frames import TrackedFrame, TrackedTransform, TransformStatus
from usnav.io.sequence import read_sequence, write_sequence
from usnav.io.volume import load_volume
from usnav.registration.reconstruct import (
    ReconstructionOptions,
    load_image_to_probe,
    options_from_plus_xml,
    reconstruct_volume,
)
from usnav.registration.sweep import Sweep, detect_fov_mask, load_sweep

PLUS_CONFIG = (
    "plus/ConfigFiles/Testing/PlusDeviceSet_VolumeReconstructionOnly_SpinePhantom_NN_MEAN.xml"
)


def fan_frames(n=12, rows=80, cols=100, seed=0):
    """Sector-shaped field of view with speckle, plus a static text overlay outside it."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:rows, 0:cols]
    angle = np.degrees(np.arctan2(c - cols / 2, r + 10))
    radius = np.hypot(c - cols / 2, r + 10)
    fan = (np.abs(angle) < 30) & (radius > 15) & (radius < 85)
    frames = rng.integers(1, 255, size=(n, rows, cols)).astype(np.uint8) * fan
    frames[:, 2:8, 2:20] = 200  # a static annotation (outside the fan)
    frames[:, 40:46, 45:55] = 0  # an anechoic region inside the fan
    return frames, fan


def test_fov_mask_is_the_fan_without_overlays():
    frames, fan = fan_frames()
    mask = detect_fov_mask(frames, erode_px=0)
    assert not mask[2:8, 2:20].any()  # static overlay excluded
    assert mask[40:46, 45:55].all()  # anechoic region inside the fan kept
    inter = (mask & fan).sum() / fan.sum()
    assert inter > 0.97 and (mask & ~fan).sum() < 0.05 * fan.sum()


@pytest.mark.parametrize(
    ("dtype", "scale"), [(np.float32, 1 / 255), (np.uint16, 257), (np.float64, 1.0)]
)
def test_fov_mask_is_the_same_in_any_pixel_type(dtype, scale):
    """B-mode frames written as 0..1 floats or 16-bit: the same field of view as in uint8
    (0..1 floats found none, and usnav register refused them as "all pixels constant")."""
    frames, _ = fan_frames()
    expected = detect_fov_mask(frames)
    assert expected.any()
    same_images = (frames.astype(np.float64) * scale).astype(dtype)
    np.testing.assert_array_equal(detect_fov_mask(same_images), expected)


def frame(image, p2t, r2t, status=TransformStatus.OK, t=0.0):
    return TrackedFrame(
        image=image,
        transforms={
            "ProbeToTracker": TrackedTransform(p2t, status),
            "ReferenceToTracker": TrackedTransform(r2t, TransformStatus.OK),
        },
        t_device=t,
    )


def test_load_sweep_composes_poses_and_drops_invalid_frames(tmp_path):
    frames, _ = fan_frames(n=6)
    r2t = np.eye(4)
    r2t[:3, 3] = [5, 6, 7]
    seq = []
    for i in range(6):
        p2t = np.eye(4)
        p2t[:3, 3] = [i, 0, 0]
        status = TransformStatus.INVALID if i == 2 else TransformStatus.OK
        seq.append(frame(frames[i], p2t, r2t, status, t=0.1 * i))
    path = write_sequence(tmp_path / "s.igs.mha", seq)
    cal = np.diag([0.2, 0.3, 0.25, 1.0])
    sweep = load_sweep(path, cal)
    assert len(sweep) == 5 and sweep.dropped == 1
    expected = np.linalg.inv(r2t) @ seq[3].transforms["ProbeToTracker"].matrix @ cal
    np.testing.assert_allclose(sweep.image_to_reference[2], expected)
    assert sweep.pixel_spacing_mm == pytest.approx((0.2, 0.3))


def test_a_recording_with_inverse_transform_names_places_the_same_frames(tmp_path):
    """PLUS's transform repository inverts a transform a recording holds the other way round
    (TrackerToProbe, TrackerToReference, ReferenceToProbe); usnav refused such recordings as
    having "neither ProbeToReference nor ProbeToTracker + ReferenceToTracker"."""
    frames, _ = fan_frames(n=4)
    r2t = np.eye(4)
    r2t[:3, 3] = [5, 6, 7]
    cal = np.diag([0.2, 0.3, 0.25, 1.0])
    forward, inverse, single = [], [], []
    for i in range(4):
        p2t = np.eye(4)
        p2t[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
        p2t[:3, 3] = [i, 2, 0]
        forward.append(frame(frames[i], p2t, r2t, t=0.1 * i))
        names = {"TrackerToProbe": np.linalg.inv(p2t), "TrackerToReference": np.linalg.inv(r2t)}
        inverse.append(
            TrackedFrame(
                image=frames[i],
                transforms={n: TrackedTransform(m) for n, m in names.items()},
                t_device=0.1 * i,
            )
        )
        r2p = np.linalg.inv(p2t) @ r2t
        single.append(
            TrackedFrame(
                image=frames[i],
                transforms={"ReferenceToProbe": TrackedTransform(r2p)},
                t_device=0.1 * i,
            )
        )
    expected = load_sweep(write_sequence(tmp_path / "f.igs.mha", forward), cal).image_to_reference
    for name, seq in (("i.igs.mha", inverse), ("s.igs.mha", single)):
        placed = load_sweep(write_sequence(tmp_path / name, seq), cal).image_to_reference
        np.testing.assert_allclose(placed, expected, atol=1e-9)
    # a recording whose poses do not connect the probe to the reference is still refused
    alone = [frame(frames[0], np.eye(4), np.eye(4))]
    alone[0].transforms.pop("ReferenceToTracker")
    with pytest.raises(InputError, match=r"a\.igs\.mha.*nor their inverses.*ProbeToTracker"):
        load_sweep(write_sequence(tmp_path / "a.igs.mha", alone), cal)


def test_all_invalid_and_empty_sweeps_are_refused(tmp_path):
    frames, _ = fan_frames(n=3)
    seq = [frame(frames[i], np.eye(4), np.eye(4), TransformStatus.INVALID) for i in range(3)]
    path = write_sequence(tmp_path / "bad.igs.mha", seq)
    with pytest.raises(InputError, match=r"bad\.igs\.mha.*INVALID"):
        load_sweep(path, np.eye(4))
    with pytest.raises(InputError, match="empty"):
        Sweep.from_frames([], np.eye(4), source="empty.igs.mha")


def test_mn_orientation_is_flipped_to_mf():
    img = np.arange(12, dtype=np.uint8).reshape(3, 4)
    f = TrackedFrame(
        image=img, transforms={"ImageToReference": TrackedTransform(np.eye(4))}, orientation="MN"
    )
    sweep = Sweep.from_frames([f], np.eye(4))
    np.testing.assert_array_equal(sweep.images[0], img[::-1])


@pytest.mark.needs_data
def test_reconstruction_matches_plus_baseline(shared_data):
    """PLUS's own reconstruction of SpinePhantomFreehand (NN, MEAN, STICK 9): the same origin
    and extent exactly, voxels by correlation."""
    cfg = shared_data / PLUS_CONFIG
    opts = options_from_plus_xml(cfg)
    assert opts.interpolation == "nearest" and opts.fill_holes and opts.stick_length_limit == 9
    sweep = load_sweep(
        shared_data / "plus/TestImages/SpinePhantomFreehand.igs.mha", load_image_to_probe(cfg)
    )
    rec = reconstruct_volume(sweep, opts)
    with read_sequence(
        shared_data / "plus/TestImages/vtkVolumeReconstructorTestNNMEANvolumeRef.mha"
    ) as ref:
        ref_data = np.transpose(ref.image(0), (2, 1, 0)).astype(float)
        ref_origin = np.array(ref.origin[:3])
    assert rec.volume.shape == ref_data.shape == (147, 106, 105)
    np.testing.assert_allclose(rec.volume.affine[:3, 3], ref_origin, atol=5e-4)  # 6 digits
    np.testing.assert_allclose(rec.volume.spacing_mm, [0.5, 0.5, 0.5])
    ours = rec.volume.data.astype(float)
    assert np.corrcoef(ours.ravel(), ref_data.ravel())[0, 1] > 0.99
    pasted = rec.filled
    assert np.corrcoef(ours[pasted], ref_data[pasted])[0, 1] > 0.99


@pytest.mark.needs_data
def test_cli_reconstruct(shared_data, tmp_path, capsys):
    out = tmp_path / "vol.nii.gz"
    code = main(
        [
            "reconstruct",
            str(shared_data / "plus/TestImages/SpinePhantomFreehand.igs.mha"),
            "--calibration",
            str(shared_data / PLUS_CONFIG),
            "--out",
            str(out),
            "--spacing",
            "1.0",
            "--interpolation",
            "linear",
        ]
    )
    assert code == 0
    vol = load_volume(out)
    assert vol.spacing_mm == pytest.approx([1, 1, 1])
    assert vol.shape == (74, 54, 53)  # the 0.5 mm extents (146.3, 105.3, 103.9) halved, rounded
    printed = capsys.readouterr().out
    assert "21 frames" in printed
    # the origin printed is the Reference frame's, not the NIfTI's RAS (session 42)
    assert "mm in Reference" in printed


def test_a_voxel_holding_the_whole_sweep_is_refused():
    """``--spacing 1e9`` gave a 1×1×1 volume and exit 0; a merely coarse grid still works."""
    images = np.full((3, 10, 12), 80, np.uint8)
    poses = np.stack([np.diag([0.5, 0.5, 1.0, 1.0]) for _ in range(3)])
    poses[:, 2, 3] = [0.0, 2.0, 4.0]
    sweep = Sweep(images, poses, np.arange(3), fov_mask=np.ones((10, 12), bool))
    with pytest.raises(InputError, match=r"a voxel of 1e\+09 × 1e\+09 × 1e\+09 mm holds the whole"):
        reconstruct_volume(sweep, ReconstructionOptions(spacing_mm=(1e9, 1e9, 1e9)))
    coarse = reconstruct_volume(sweep, ReconstructionOptions(spacing_mm=(4.0, 4.0, 4.0)))
    assert coarse.volume.shape == (2, 2, 2)


def test_reconstruction_of_a_known_plane():
    """Frames of constant value stacked along z at 1 mm: every pasted voxel has its frame's
    value, holes between frames are filled by interpolation."""
    n = 5
    images = np.stack([np.full((10, 12), 50 + 20 * i, np.uint8) for i in range(n)])
    poses = np.stack([np.diag([0.5, 0.5, 1.0, 1.0]) for _ in range(n)])
    for i in range(n):
        poses[i, 2, 3] = 2.0 * i  # frames 2 mm apart
    sweep = Sweep(images, poses, np.arange(n), fov_mask=np.ones((10, 12), bool))
    rec = reconstruct_volume(
        sweep, ReconstructionOptions(spacing_mm=(0.5, 0.5, 1.0), stick_length_limit=4)
    )
    data = rec.volume.data
    assert data.shape == (12, 10, 9)  # 11 × 0.5, 9 × 0.5, 8 × 1 mm → +1
    for i in range(n):
        assert np.all(data[:, :, 2 * i] == 50 + 20 * i)
    assert np.all(data[:, :, 1] > 50) and np.all(data[:, :, 1] < 70)  # filled hole


def test_plus_xml_options_errors(tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text(
        '<PlusConfiguration><VolumeReconstruction CompoundingMode="LATEST" '
        'OutputSpacing="1 1 1"/></PlusConfiguration>'
    )
    with pytest.raises(ConfigError, match="LATEST"):
        options_from_plus_xml(bad)
    none = tmp_path / "none.xml"
    none.write_text("<PlusConfiguration/>")
    with pytest.raises(ConfigError, match="VolumeReconstruction"):
        options_from_plus_xml(none)


LN_MAXI_CONFIG = (
    "plus/ConfigFiles/Testing/PlusDeviceSet_VolumeReconstructionOnly_SpinePhantom_LN_MAXI.xml"
)


@pytest.mark.needs_data
def test_cli_linear_maximum_is_voxel_equal_to_plus_and_written_as_plus_writes_it(
    shared_data, tmp_path
):
    """PLUS's LINEAR/MAXIMUM reference volume of SpinePhantomFreehand, reproduced voxel for
    voxel by `usnav reconstruct` with PLUS's config, written as a .mha that `usnav info`
    describes exactly as PLUS's own (same origin, not mirrored)."""
    from usnav.io.info import describe_file

    out = tmp_path / "lnmaxi.mha"
    cfg = shared_data / LN_MAXI_CONFIG
    recording = shared_data / "plus/TestImages/SpinePhantomFreehand.igs.mha"
    assert main(["reconstruct", str(recording), "--calibration", str(cfg), "--out", str(out)]) == 0
    ref_path = shared_data / "plus/TestImages/vtkVolumeReconstructorTestLNMAXIvolumeRef.mha"
    with read_sequence(ref_path) as ref, read_sequence(out) as ours:
        np.testing.assert_array_equal(ours.image(0), ref.image(0))
        np.testing.assert_allclose(ours.origin[:3], ref.origin[:3], atol=5e-4)
        np.testing.assert_allclose(ours.spacing[:3], ref.spacing[:3])
    info_ours, info_ref = describe_file(out), describe_file(ref_path)
    for key in ("kind", "shape"):
        assert info_ours[key] == info_ref[key]
    # the same NIfTI lands where ITK/Slicer place PLUS's .mha (MetaIO world = LPS)
    nii = tmp_path / "lnmaxi.nii.gz"
    assert main(["reconstruct", str(recording), "--calibration", str(cfg), "--out", str(nii)]) == 0
    vol = load_volume(nii)
    with read_sequence(ref_path) as ref:
        expected_ras = np.array(ref.origin[:3]) * [-1, -1, 1]
    np.testing.assert_allclose(vol.affine[:3, 3], expected_ras, atol=5e-4)
    np.testing.assert_allclose(np.diag(vol.affine[:3, :3]), [-0.5, -0.5, 0.5])
