"""A case whose truth file is damaged fails with one line naming that file, never an internal
error (and the run's other cases are not affected: each case is its own row)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from evaluate_helpers import case_of_empty_files

from usnav.errors import InputError
from usnav.evaluate.case import evaluate_case
from usnav.evaluate.truth import load_scorer


def _truth_doc() -> dict:
    """The parts of a simulator ``truth.json`` that scoring reads."""
    rng = np.random.default_rng(5)
    pre = {
        "tumor_centroid": [1.0, 2.0, 3.0],
        "tumor_pole_superior": [1.0, 2.0, 12.0],
        "tumor_pole_inferior": [1.0, 2.0, -6.0],
        "tumor_boundary": rng.normal(0.0, 5.0, (48, 3)).tolist(),
    }
    shift = np.array([0.0, 0.5, 0.0])
    now = {k: (np.asarray(v) + shift).tolist() for k, v in pre.items()}
    offset = np.eye(4)
    offset[:3, 3] = [4.0, 0.0, 0.0]
    return {
        "ReferenceToMri": np.eye(4).tolist(),
        "init_ReferenceToMri": offset.tolist(),
        "landmarks": {"frame": "Mri", **pre},
        "landmarks_intraoperative": {"frame": "Mri", **now},
        "cord_shift": {"max_mm": 0.5},
    }


def _damaged(doc: dict, how: str) -> dict:
    doc = json.loads(json.dumps(doc))
    if how == "empty boundary":
        doc["landmarks"]["tumor_boundary"] = []
    elif how == "boundary points not paired":
        doc["landmarks_intraoperative"]["tumor_boundary"].pop()
    elif how == "no intraoperative centroid":
        del doc["landmarks_intraoperative"]["tumor_centroid"]
    elif how == "2-D points":
        doc["landmarks"]["tumor_centroid"] = [1.0, 2.0]
        doc["landmarks_intraoperative"]["tumor_centroid"] = [1.0, 2.0]
    elif how == "no tumor landmark":
        for name in ("tumor_centroid", "tumor_pole_superior", "tumor_pole_inferior"):
            doc["landmarks"][name] = None
        del doc["landmarks"]["tumor_boundary"]
    elif how == "3x3 transform":
        doc["ReferenceToMri"] = np.eye(3).tolist()
    return doc


def test_an_intact_truth_scores(tmp_path: Path) -> None:
    path = tmp_path / "truth.json"
    path.write_text(json.dumps(_truth_doc()))
    scorer = load_scorer(path)
    assert scorer.error_mm(np.eye(4)) == pytest.approx(0.0)
    assert scorer.error_now_mm(np.eye(4)) == pytest.approx(0.5)


HOW = [
    "empty boundary",
    "boundary points not paired",
    "no intraoperative centroid",
    "2-D points",
    "no tumor landmark",
    "3x3 transform",
]


@pytest.mark.parametrize("how", HOW)
def test_a_damaged_truth_is_named_in_one_line(how: str, tmp_path: Path) -> None:
    """Each of these passed the reader and then failed inside the error computation, so the
    case's reason was 'internal error: ValueError: all the input array dimensions...' (seen
    with an empty tumor_boundary), naming neither the file nor what is wrong with it."""
    path = tmp_path / "truth.json"
    path.write_text(json.dumps(_damaged(_truth_doc(), how)))
    with pytest.raises(InputError) as info:
        load_scorer(path)
    assert str(path) in str(info.value) and "not a usnav truth file" in str(info.value)

    # as a case of a batch run: a failed row that names the truth file (the recording, MRI and
    # calibration are never read: the truth is read first)
    case = case_of_empty_files(tmp_path, path, tags={"family": "baseline"})
    row = evaluate_case(case, tmp_path / "results")
    assert row["status"] == "failed"
    assert "internal error" not in row["reason"]
    assert str(path) in row["reason"] and "not a usnav truth file" in row["reason"]
