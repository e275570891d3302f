"""Simulated cases: the look the issue asks for (tissue statistics, not pixels), independence
from the MRI, determinism, the files and their ground truth, bad options, the CLI."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.ndimage import binary_erosion
from scipy.spatial.transform import Rotation
from sim_helpers import pixel_labels

from usnav.cli.main import main
from usnav.config.calibration import load_calibration
from usnav.errors import InputError
from usnav.io.sequence import read_sequence
from usnav.io.volume import load_volume
from usnav.sim import build_case, demo_case, load_truth, make_options, simulate_case
from usnav.sim.preview import reslice
from usnav.sim.tissues import Tissue as T

SMALL = dict(frames=9, cyst="yes")


@pytest.fixture(scope="module")
def hyper():
    return build_case(11, make_options(tumor_echogenicity="hyperechoic", **SMALL))


@pytest.fixture(scope="module")
def iso():
    return build_case(11, make_options(tumor_echogenicity="isoechoic", **SMALL))


def tissue_means(case, frames=(0, 4, 8), erode: int = 3) -> dict[T, float]:
    """Mean B-mode value per tissue over frames (masks eroded away from boundaries)."""
    sums: dict[T, list[float]] = {}
    for i in frames:
        image = case.simulator.frame(case.sweep.image_poses[i], i).astype(float)
        labels = pixel_labels(case, i)
        for t in T:
            mask = binary_erosion(labels == t, iterations=erode)
            if mask.sum() > 30:
                sums.setdefault(t, []).append(image[mask].mean())
    return {t: float(np.mean(v)) for t, v in sums.items()}


def tumor_frame(case) -> int:
    return int(np.argmin(np.abs(case.sweep.image_poses[:, 2, 3] - case.anatomy.tumor.center[2])))


def test_expected_look_of_each_tissue(hyper):
    means = tissue_means(hyper, frames=(0, tumor_frame(hyper), 8))
    cord = means[T.CORD]
    assert means[T.MARROW] < 0.15 * cord  # shadow behind the vertebral body's posterior cortex
    assert means[T.CSF] < 0.25 * cord  # CSF anechoic, darker than the cord
    assert means[T.SALINE] < 0.1 * cord  # saline anechoic
    assert 20 < cord < 140  # hypoechoic but visible speckle


def test_dura_and_vertebral_body_surface_are_bright_lines(hyper):
    i = 0
    image = hyper.simulator.frame(hyper.sweep.image_poses[i], i).astype(float)
    labels = pixel_labels(hyper, i)
    cord = image[binary_erosion(labels == T.CORD, iterations=3)].mean()
    cols = np.nonzero((labels == T.CORD).any(axis=0))[0]
    dura_peaks, bone_peaks = [], []
    for c in cols[len(cols) // 3 : 2 * len(cols) // 3]:
        column = labels[:, c]
        first_dura = np.argmax(column == T.DURA)
        first_bone = np.argmax(np.isin(column, [T.BONE, T.MARROW]))
        dura_peaks.append(image[max(first_dura - 4, 0) : first_dura + 6, c].max())
        if first_bone:
            bone_peaks.append(image[max(first_bone - 4, 0) : first_bone + 6, c].max())
    assert np.median(dura_peaks) > 1.8 * cord
    assert np.median(bone_peaks) > 1.8 * cord


def test_tumor_echogenicity_follows_the_case(hyper, iso):
    h = tissue_means(hyper, frames=(tumor_frame(hyper),))
    s = tissue_means(iso, frames=(tumor_frame(iso),))
    assert h[T.TUMOR] > 1.3 * h[T.CORD]  # hyperechoic
    assert 0.75 < s[T.TUMOR] / s[T.CORD] < 1.33  # iso-echoic
    assert h[T.TUMOR] > 1.3 * s[T.TUMOR]


def test_cyst_is_anechoic(hyper):
    frames = np.argsort(
        np.abs(hyper.sweep.image_poses[:, 2, 3] - hyper.anatomy.tumor.cyst_center[2])
    )[:2]
    means = tissue_means(hyper, frames=tuple(int(f) for f in frames), erode=2)
    assert means[T.CYST] < 0.3 * means[T.CORD]


def correlation_ratio(y: np.ndarray, x: np.ndarray, bins: int = 32) -> float:
    """η² = 1 - E[Var(y | x-bin)] / Var(y): 1 if y is a function of x, ~0 if unrelated."""
    edges = np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1])
    q = np.digitize(x, edges)
    within = sum(((y[q == b] - y[q == b].mean()) ** 2).sum() for b in np.unique(q))
    return float(1.0 - within / ((y - y.mean()) ** 2).sum())


def test_ultrasound_is_not_a_pixelwise_function_of_the_mri(hyper):
    us, mri = [], []
    g = hyper.geometry
    for i in (0, 4, 8):
        us.append(hyper.simulator.frame(hyper.sweep.image_poses[i], i).astype(float).ravel())
        mri.append(reslice(hyper.mri.mri, hyper.sweep.true_image_to_mri[i], g.rows, g.cols).ravel())
    us, mri = np.concatenate(us), np.concatenate(mri)
    # the estimator does detect a pixel-wise function...
    assert correlation_ratio(np.sqrt(mri) + 3.0 * np.log1p(mri), mri) > 0.95
    # ...and the ultrasound is far from one (shadows, speckle, angle dependence, cord shift)
    assert correlation_ratio(us, mri) < 0.35
    assert correlation_ratio(mri, us) < 0.35


def test_same_seed_same_case_and_other_seeds_other_anatomy(hyper):
    again = build_case(11, make_options(tumor_echogenicity="hyperechoic", **SMALL))
    assert np.array_equal(again.intraop.labels, hyper.intraop.labels)
    assert np.array_equal(again.mri.mri.data, hyper.mri.mri.data)
    assert np.array_equal(again.sweep.probe_to_tracker, hyper.sweep.probe_to_tracker)
    assert np.array_equal(
        again.simulator.frame(again.sweep.image_poses[3], 3),
        hyper.simulator.frame(hyper.sweep.image_poses[3], 3),
    )
    other = build_case(12, make_options(tumor_echogenicity="hyperechoic", **SMALL))
    a, b = hyper.anatomy, other.anatomy
    assert not np.allclose(a.tumor.center, b.tumor.center, atol=0.1)
    assert not np.allclose(a.canal, b.canal, atol=0.05)
    assert abs(a.kyphosis_radius - b.kyphosis_radius) > 1.0
    assert hyper.preop.labels.shape != other.preop.labels.shape or not np.array_equal(
        hyper.preop.labels, other.preop.labels
    )


# ------------------------------------------------------------------ files -------------------


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("case4")
    options = make_options(
        frames=12,
        image_cols=128,
        image_rows=128,
        mri_spacing_mm=(1.0, 1.0, 1.0),
        preview=True,
        tracker_lag_s=0.1,
        cyst="yes",
    )
    return simulate_case(4, out, options)


def test_case_files_are_readable_and_consistent(written):
    seq = read_sequence(written.sweep)
    assert len(seq) == 12 and seq.image_size == (128, 128)
    assert seq.orientation in ("MF", "MFA")
    assert {"ProbeToTracker", "ReferenceToTracker"} <= set(seq.transform_names)
    assert np.median(np.diff(seq.timestamps)) == pytest.approx(1 / 30, abs=1e-3)
    truth = load_truth(written.folder)
    calib = load_calibration(written.calibration)
    np.testing.assert_allclose(calib.image_to_probe, truth.document["ImageToProbe"], atol=1e-9)
    assert calib.tracker_lag_s == pytest.approx(0.1)
    assert calib.spatial.spacing_mm == pytest.approx((38.4 / 128, 40.0 / 128))
    mri = load_volume(written.mri)
    label = load_volume(written.tumor_label)
    assert mri.data.dtype == np.int16 and np.array_equal(mri.affine, label.affine)
    assert set(np.unique(label.data)) == {0, 1, 2}  # background, solid tumor, cyst
    # a scanner-like affine: origin far from zero, oblique, anterior axis pointing anterior
    assert np.linalg.norm(mri.affine[:3, 3]) > 20
    assert np.count_nonzero(np.abs(mri.affine[:3, :3]) > 1e-6) > 3
    assert mri.affine[1, 1] > 0
    init = np.loadtxt(written.init_reference_to_mri)
    np.testing.assert_allclose(init, truth.init_reference_to_mri, atol=1e-8)
    names = {p.name for p in written.previews}
    assert {"preview.png", "preview_sweep.png"} <= names and len(names) >= 4
    for png in written.previews:
        image = cv2.imread(str(png))
        assert image is not None and image.shape[0] >= 128
        # frame panels: B-mode | MRI; sweep view: 2 px per frame on each side
        assert image.shape[1] == (4 * 12 + 4 if png.name == "preview_sweep.png" else 2 * 128 + 4)


def test_landmarks_lie_where_the_mri_label_shows_the_tumor(written):
    truth = load_truth(written.folder)
    label = load_volume(written.tumor_label)

    def label_at(points):
        vox = (
            np.c_[np.atleast_2d(points), np.ones(len(np.atleast_2d(points)))]
            @ label.world_to_voxel.T
        )
        idx = np.round(vox[:, :3]).astype(int)
        return label.data[idx[:, 0], idx[:, 1], idx[:, 2]]

    marks = truth.landmarks
    assert label_at(marks["tumor_centroid"])[0] == 1
    assert label_at(marks["cyst_centroid"])[0] == 2
    # boundary points: tumor just inside, no tumor just outside (along the centroid ray)
    c = marks["tumor_centroid"]
    rays = marks["tumor_boundary"] - c
    unit = rays / np.linalg.norm(rays, axis=1, keepdims=True)
    inside = label_at(marks["tumor_boundary"] - 1.0 * unit)
    outside = label_at(marks["tumor_boundary"] + 1.0 * unit)
    assert np.mean(inside == 1) > 0.85 and np.mean(outside != 1) > 0.85
    length = np.linalg.norm(marks["tumor_pole_superior"] - marks["tumor_pole_inferior"])
    assert length == pytest.approx(truth.document["tumor"]["length_mm"], rel=1e-6)
    assert 10 - 1e-6 <= length <= 25 + 1e-6
    # the superior pole is the one towards the head (+S in RAS)
    assert marks["tumor_pole_superior"][2] > marks["tumor_pole_inferior"][2]
    line = marks["cord_centerline"]
    assert len(line) > 10 and np.all(np.diff(line[:, 2]) > 0)


def test_cord_shift_and_initial_offset_match_their_definitions(written):
    truth = load_truth(written.folder)
    doc = truth.document
    shift = truth.cord_shift_max_mm
    assert 0.5 <= shift <= 2.0
    moved = {
        k: np.linalg.norm(truth.landmarks_intraoperative[k] - v, axis=-1)
        for k, v in truth.landmarks.items()
        if v is not None
    }
    assert max(float(np.max(m)) for m in moved.values()) <= shift + 1e-9
    assert float(moved["tumor_centroid"]) == pytest.approx(
        doc["cord_shift"]["at_tumor_centroid_mm"]
    )
    assert float(np.max(moved["vertebral_body_posterior"])) < 1e-3  # bone does not move
    assert truth.mtre(truth.reference_to_mri) < 1e-9
    # where the tumor is now: with the bony truth the overlay is off by the cord shift itself,
    # and an estimate that moves the image by -u at the tumor (follows the cord) removes it
    tumor = ("tumor_centroid", "tumor_pole_superior", "tumor_pole_inferior", "tumor_boundary")
    shifts = np.concatenate([np.atleast_1d(moved[k]) for k in tumor])
    assert truth.tre_now(truth.reference_to_mri) == pytest.approx(shifts)
    assert truth.mtre_now(truth.reference_to_mri) > 0.3
    u = truth.landmarks_intraoperative["tumor_centroid"] - truth.landmarks["tumor_centroid"]
    follow = np.eye(4)
    follow[:3, 3] = -np.ravel(u)
    following = follow @ truth.reference_to_mri
    assert float(truth.tre_now(following, ("tumor_centroid",))[0]) < 1e-9
    assert truth.mtre(following) == pytest.approx(float(np.linalg.norm(u)))
    offset = truth.init_reference_to_mri @ np.linalg.inv(truth.reference_to_mri)
    angle = Rotation.from_matrix(offset[:3, :3]).magnitude()
    assert 3.0 <= np.degrees(angle) <= 8.0
    c = truth.landmarks["tumor_centroid"]
    assert 4.0 <= np.linalg.norm(offset[:3, :3] @ c + offset[:3, 3] - c) <= 8.0


def test_tracked_pixels_reach_the_mri_through_the_documented_chain(written):
    """ReferenceToMri · inv(ReferenceToTracker) · ProbeToTracker(t + lag) · ImageToProbe lands
    each pixel where the simulator imaged it (within tracking jitter)."""
    seq = read_sequence(written.sweep)
    truth = load_truth(written.folder)
    calib = load_calibration(written.calibration)
    case = build_case(4, make_options(**json.loads(json.dumps(truth.document["options"]))))
    probe = seq.pose_series("ProbeToTracker")
    ref, _ = seq.transforms("ReferenceToTracker")
    corners = np.array([[0, 0, 0, 1], [127, 0, 0, 1], [0, 127, 0, 1], [127, 127, 0, 1]]).T

    def errors(lag: float) -> np.ndarray:
        out = []
        for i in range(1, len(seq) - 3):
            pose = probe.at(seq.timestamps[i] + lag).matrix
            m = truth.reference_to_mri @ np.linalg.inv(ref[i]) @ pose @ calib.image_to_probe
            diff = (m @ corners - case.sweep.true_image_to_mri[i] @ corners)[:3]
            out.append(np.linalg.norm(diff, axis=0).max())
        return np.array(out)

    with_lag = errors(calib.tracker_lag_s)
    assert with_lag.mean() < 0.8
    assert errors(0.0).mean() > with_lag.mean()


# ------------------------------------------------------------------ bad input ---------------


@pytest.mark.parametrize(
    ("values", "word"),
    [
        ({"depth_mm": -5}, "depth_mm"),
        ({"frames": 0}, "frames"),
        ({"tumor_length_mm": (10, 120)}, "longer than the simulated segment"),
        ({"tumor_length_mm": (20, 10)}, "tumor_length_mm"),
        ({"laminectomy_levels": 4, "levels": 3}, "laminectomy_levels"),
        ({"cord_shift_mm": (0.5, 9)}, "cord_shift_mm"),
        ({"voxels": 1}, "voxels"),
    ],
)
def test_impossible_options_are_refused_with_the_option_named(values, word):
    with pytest.raises(InputError, match=word):
        make_options(**values)


def test_output_path_that_is_a_file_is_refused_before_any_work(tmp_path, monkeypatch):
    import usnav.sim.case as case_module

    def must_not_run(*args, **kwargs):
        raise AssertionError("simulation started before the output path was checked")

    monkeypatch.setattr(case_module, "build_case", must_not_run)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="is a file"):
        simulate_case(1, blocker, make_options(frames=2))
    with pytest.raises(InputError, match="is a file"):
        simulate_case(1, blocker / "sub", make_options(frames=2))
    with pytest.raises(InputError, match="seed"):
        simulate_case(-3, tmp_path / "x", make_options(frames=2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_cli_simulate_then_info(tmp_path, capsys):
    out = tmp_path / "cli_case"
    args = [
        "simulate",
        "--seed",
        "5",
        "--out",
        str(out),
        "--frames",
        "4",
        "--image-cols",
        "64",
        "--image-rows",
        "48",
        "--voxel-mm",
        "0.75",
        "--mri-spacing-mm",
        "1.5",
        "1.5",
        "1.5",
        "--tumor-length-mm",
        "12",
        "14",
        "--no-save-anatomy",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "cord shift" in printed and "sweep.igs.mha" in printed
    assert (out / "truth.json").is_file() and not (out / "anatomy_preop.nii.gz").exists()
    assert json.loads((out / "truth.json").read_text())["tumor"]["length_mm"] >= 12 - 1e-6
    assert main(["info", str(out / "sweep.igs.mha")]) == 0
    assert "4" in capsys.readouterr().out
    # the calibration says the image size it holds for: [cols, rows], the sweep's
    stored = tomllib.loads((out / "calibration.toml").read_text())["spatial"]["image_size_px"]
    assert stored == [64, 48] == list(read_sequence(out / "sweep.igs.mha").image_size)
    assert main(["simulate", "--seed", "5", "--out", str(tmp_path / "y"), "--depth-mm", "-5"]) == 2
    assert "--depth-mm:" in capsys.readouterr().err  # the flag typed, not the options' key
    assert main(["simulate", "--seed", "5", "--out", str(out / "truth.json")]) == 2
    assert not (tmp_path / "y").exists()


def test_cli_options_file_with_flags_overriding_it(tmp_path, capsys):
    toml = tmp_path / "small.toml"
    toml.write_text(
        'frames = 3\nimage_cols = 48\nimage_rows = 48\nvoxel_mm = 0.8\ncyst = "no"\n'
        "mri_spacing_mm = [1.6, 1.6, 1.6]\nsave_anatomy = false\n"
    )
    out = tmp_path / "from_toml"
    assert (
        main(
            ["simulate", "--seed", "2", "--out", str(out), "--options", str(toml), "--frames", "5"]
        )
        == 0
    )
    truth = json.loads((out / "truth.json").read_text())
    assert truth["options"]["frames"] == 5 and truth["options"]["image_cols"] == 48
    assert truth["tumor"]["has_cyst"] is False
    toml.write_text("frame = 3\n")
    assert main(["simulate", "--seed", "2", "--out", str(out), "--options", str(toml)]) == 2
    assert "unknown key 'frame'" in capsys.readouterr().err
    # a bad value is named as the user gave it: the flag typed, or the file's key
    assert main(["simulate", "--seed", "2", "--out", str(out), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "--workers:" in err and "key 'workers'" not in err
    toml.write_text("workers = 0\n")
    assert main(["simulate", "--seed", "2", "--out", str(out), "--options", str(toml)]) == 2
    assert "key 'workers'" in capsys.readouterr().err


def test_demo_case_is_generated_once_and_cached(tmp_path):
    first = demo_case(tmp_path)
    truth = first / "truth.json"
    assert truth.is_file() and (first / "sweep.igs.mha").is_file()
    stamp = os.stat(truth).st_mtime_ns
    assert demo_case(tmp_path) == first
    assert os.stat(truth).st_mtime_ns == stamp  # not simulated again
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary leftovers
    assert Path(first).name.startswith("demo-v")
