"""``usnav margins``: the live pipeline's per-frame margins of a recording, to a file, read
back and scored against the simulator's truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from usnav.cli.main import main
from usnav.config.calibration import load_calibration
from usnav.evaluate.margins_file import (
    margins_of_recording,
    read_margins_file,
    score_against_simulator,
)
from usnav.io.sequence import read_sequence, write_sequence
from usnav.io.volume import Volume, load_volume, save_volume
from usnav.margins import MarginEstimator
from usnav.sim import load_truth


def _args(case, reference: Path, out: Path, label: Path | None = None) -> list[str]:
    return [
        "margins",
        str(case.recording),
        "--mri",
        str(case.mri),
        "--label",
        str(label or case.label),
        "--calibration",
        str(case.calibration),
        "--reference-to-mri",
        str(reference),
        "--out",
        str(out),
    ]


def test_margins_file_holds_the_estimator_s_margins(tiny_cases, tmp_path: Path, capsys) -> None:
    case = tiny_cases["s7"]
    truth = load_truth(case.truth)
    result = tmp_path / "RESULT.json"
    result.write_text(
        json.dumps({"ReferenceToMri": truth.reference_to_mri.tolist(), "accepted": True})
    )
    out = tmp_path / "margins.jsonl.gz"
    assert main(_args(case, result, out)) == 0
    assert "16 frame(s)" in capsys.readouterr().out
    header, records = read_margins_file(out)
    assert header["format"] == "usnav-margins"
    np.testing.assert_allclose(header["ReferenceToMri"], truth.reference_to_mri)
    assert len(records) == 16
    assert sum(r.margins.in_view for r in records) >= 8

    # frame 5 independently: pixel → MRI through the tracking and calibration chain
    image_to_probe = load_calibration(case.calibration).image_to_probe
    with read_sequence(case.recording) as seq:
        frame = seq.frame(5)
    t = frame.transforms
    image_to_mri = (
        truth.reference_to_mri
        @ np.linalg.inv(t["ReferenceToTracker"].matrix)
        @ t["ProbeToTracker"].matrix
        @ image_to_probe
    )
    expected = MarginEstimator(load_volume(case.label)).estimate(frame.image, image_to_mri, None)
    got = records[5].margins
    assert records[5].frame_number == frame.frame_number
    np.testing.assert_allclose(got.image_to_mri, image_to_mri, atol=1e-9)
    assert got.in_view == expected.in_view
    assert len(got.contours) == len(expected.contours)
    for a, b in zip(got.contours, expected.contours, strict=True):
        np.testing.assert_allclose(a.predicted_px, b.predicted_px, atol=2e-3)
        np.testing.assert_allclose(a.predicted_mri_mm, b.predicted_mri_mm, atol=2e-3)

    # 16 numbers give the same file content as the RESULT.json
    numbers = tmp_path / "ReferenceToMri.txt"
    np.savetxt(numbers, truth.reference_to_mri)
    plain = tmp_path / "margins.jsonl"
    assert main(_args(case, numbers, plain)) == 0
    _, again = read_margins_file(plain)
    assert [r.margins.in_view for r in again] == [r.margins.in_view for r in records]
    # ... but no usnav registration judged those numbers: not "accepted", no quality (every
    # frame said accepted, quality 0.5 — the navigation matrix read as checked)
    assert all(r.margins.registration_accepted for r in records)  # the RESULT.json's verdict
    lines = [json.loads(line) for line in plain.read_text().splitlines()[1:]]
    assert lines and all(
        line["registration_accepted"] is False and line["registration_quality"] is None
        for line in lines
    )


def test_an_mn_recording_gives_the_margins_of_its_mf_twin(tiny_cases, tmp_path: Path) -> None:
    """The same sweep stored upside down with ``UltrasoundImageOrientation = MN``: the margins
    are drawn on the MF pixels the calibration places, not mirrored about the middle row."""
    case = tiny_cases["s7"]
    truth = load_truth(case.truth).reference_to_mri
    with read_sequence(case.recording) as seq:
        frames = list(seq)
    for f in frames:
        f.image = np.ascontiguousarray(f.image[::-1])
        f.orientation = "MN"
    twin = write_sequence(tmp_path / "mn.igs.mha", frames, orientation="MN")

    def margins(path: Path) -> list:
        return list(margins_of_recording(path, case.label, case.calibration, truth))

    original, flipped = margins(case.recording), margins(twin)
    assert sum(r.margins.in_view for r in original) >= 8
    for a, b in zip(original, flipped, strict=True):
        assert a.margins.in_view == b.margins.in_view
        np.testing.assert_allclose(a.margins.image_to_mri, b.margins.image_to_mri)
        for ca, cb in zip(a.margins.contours, b.margins.contours, strict=True):
            np.testing.assert_allclose(ca.predicted_px, cb.predicted_px, atol=1e-6)
            np.testing.assert_array_equal(ca.confidence, cb.confidence)


def test_scores_grow_with_a_registration_error(tiny_cases) -> None:
    """Scored against the simulator's truth, margins placed 2.5 mm off are worse than margins
    placed with the true registration (so the score measures the margins, not a constant).

    Frames that draw a tumor where the true one is not, or miss one that is, add no boundary
    error (a wrong registration could score well by leaving frames out): they are counted."""
    case = tiny_cases["s7"]
    truth = load_truth(case.truth)
    shifted = np.eye(4)
    shifted[:3, 3] = [1.5, -1.5, 1.4]  # 2.5 mm
    on_truth = list(
        margins_of_recording(case.recording, case.label, case.calibration, truth.reference_to_mri)
    )
    centres = [r.margins.image_to_mri[:3, 3] for r in on_truth]
    travel = np.asarray(centres[-1]) - np.asarray(centres[0])  # the sweep, MRI frame
    along = np.eye(4)
    along[:3, 3] = 8.0 * travel / np.linalg.norm(travel)  # 8 mm of a 13.5 mm sweep
    scores = {}
    for name, matrix in (
        ("true", truth.reference_to_mri),
        ("off", shifted @ truth.reference_to_mri),
        ("along", along @ truth.reference_to_mri),
    ):
        records = list(margins_of_recording(case.recording, case.label, case.calibration, matrix))
        scores[name] = score_against_simulator(records, case.truth, matrix)
    true, off, far = scores["true"], scores["off"], scores["along"]
    assert true.boundary.predicted_mm.size > 50
    assert true.boundary.refined_mm.mean() < 1.0
    assert off.boundary.predicted_mm.mean() > true.boundary.predicted_mm.mean() + 0.75
    # with the true registration the drawn tumor and the true one agree frame by frame (a
    # sliver at a pole may be called absent)
    assert true.scored_frames >= 10
    assert true.drawn_without_tumor + true.missed_tumor <= 2
    # registered 8 mm along the sweep, the planes are drawn past the tumor's end: missed
    assert far.missed_tumor >= true.missed_tumor + 5
    assert far.scored_frames <= true.scored_frames - 5
    # the true registration's margins scored as if drawn 8 mm along: where the truth has
    # left the tumor they draw one
    moved = score_against_simulator(on_truth, case.truth, along @ truth.reference_to_mri)
    assert moved.drawn_without_tumor >= 5


def test_bad_inputs_one_line_exit_2(tiny_cases, tmp_path: Path, capsys) -> None:
    case = tiny_cases["s7"]
    sheared = tmp_path / "sheared.txt"
    np.savetxt(sheared, np.array([[1, 0.4, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    assert main(_args(case, sheared, tmp_path / "m.jsonl")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sheared.txt" in err[0] and "rigid" in err[0]

    # a label map from somewhere else (1 m away) is refused
    label = load_volume(case.label)
    far = label.affine.copy()
    far[:3, 3] += 1000.0
    moved = tmp_path / "far_label.nii.gz"
    save_volume(Volume(np.asarray(label.data), far), moved)
    truth = tmp_path / "truth.txt"
    np.savetxt(truth, load_truth(case.truth).reference_to_mri)
    assert main(_args(case, truth, tmp_path / "m.jsonl", label=moved)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "far_label.nii.gz" in err[0] and "outside the MRI" in err[0]
    assert not (tmp_path / "m.jsonl").exists()


def test_a_registration_that_puts_every_frame_outside_the_label_map_is_refused(
    tiny_cases, tmp_path: Path, capsys
) -> None:
    """An identity ReferenceToMri puts the sweep outside the label map: not a confident "no
    tumor" in every frame with exit 0, but one line naming the file. One that keeps frames
    inside the map but away from the tumor (an inverse, in general) cannot be told from a
    sweep that missed it: the summary says what to check."""
    case = tiny_cases["s7"]
    identity = tmp_path / "identity.txt"
    np.savetxt(identity, np.eye(4))
    out = tmp_path / "m.jsonl"
    assert main(_args(case, identity, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "identity.txt" in err[0] and "inside the tumor label map" in err[0]
    assert not out.exists()
    # with the truth, frames beside the tumor still say so (inside the map, no tumor there)
    truth = load_truth(case.truth).reference_to_mri
    reasons = {
        r.margins.reason
        for r in margins_of_recording(case.recording, case.label, case.calibration, truth)
        if not r.margins.in_view
    }
    assert "no tumor in this frame's plane" in reasons
    assert not any("outside" in reason for reason in reasons)  # all inside the map
    # 30 mm to the side: every frame still inside the map, none on the tumor
    away = truth.copy()
    away[0, 3] += 30.0
    wrong = tmp_path / "wrong.txt"
    np.savetxt(wrong, away)
    assert main(_args(case, wrong, tmp_path / "w.jsonl")) == 0
    out = capsys.readouterr().out
    assert "tumor in view in 0" in out and "check --reference-to-mri" in out
    assert main(_args(case, truth_file(tmp_path, truth), tmp_path / "t.jsonl")) == 0
    assert "check --reference-to-mri" not in capsys.readouterr().out


def truth_file(folder: Path, matrix: np.ndarray) -> Path:
    path = folder / "truth.txt"
    np.savetxt(path, matrix)
    return path


def test_not_a_margins_file(tmp_path: Path) -> None:
    from usnav.errors import InputError

    p = tmp_path / "x.jsonl"
    p.write_text('{"format": "something else"}\n')
    with pytest.raises(InputError, match="not a usnav margins file"):
        read_margins_file(p)


def test_the_pipeline_and_the_cli_do_not_import_evaluate_or_dask() -> None:
    import subprocess
    import sys

    code = (
        "import sys, usnav.pipeline.live, usnav.pipeline.run\n"
        "from usnav.cli.main import build_parser\n"
        "build_parser()\n"
        "names = ('usnav.evaluate', 'dask', 'distributed')\n"
        "bad = [m for m in sys.modules if m.startswith(names)]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_run_that_fails_midway_leaves_no_part_file(tmp_path: Path) -> None:
    """A refused input (or Ctrl-C) while the records are written: neither the output nor its
    ``.part`` is left behind (the audit found ``OUT.part`` after a failed ``--force`` run)."""
    from usnav.errors import InputError
    from usnav.evaluate.margins_file import write_margins_file

    def records():
        raise InputError("sweep.igs.mha", "frame 3 is damaged")
        yield  # a generator, as margins_of_recording is

    out = tmp_path / "m.jsonl"
    with pytest.raises(InputError):
        write_margins_file(records(), out, {})
    assert list(tmp_path.iterdir()) == []


def test_the_library_refuses_a_label_without_the_tumor_codes(tiny_cases, tmp_path: Path) -> None:
    """``usnav evaluate`` reaches the margins through the library, not through ``usnav
    margins``' own checks: a tumor coded 7 must be refused there too, not give "no tumor in
    view" in every frame."""
    from usnav.errors import InputError
    from usnav.evaluate.margins_file import margins_of_recording

    case = tiny_cases["s7"]
    label = load_volume(case.label)
    recoded = tmp_path / "coded7.nii.gz"
    save_volume(
        Volume(np.where(np.asarray(label.data) > 0, 7, 0).astype(np.uint8), label.affine), recoded
    )
    truth = load_truth(case.truth).reference_to_mri
    with pytest.raises(InputError, match="coded7.nii.gz.*none of the tumor labels"):
        next(margins_of_recording(case.recording, recoded, case.calibration, truth))
