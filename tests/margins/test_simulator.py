"""Margin accuracy on simulated spine cases (``usnav.sim``), against the intraoperative truth.

Seeds here (301–303) are neither the refinement's tuning seeds (101–106) nor the benchmark's
(201–208). Stated bound: mean margin boundary error ≤ 0.8 mm after a rigid registration, and
the ultrasound refinement never worse than the MRI-only margin by more than 0.05 mm.
"""

from __future__ import annotations

import numpy as np
import pytest

from usnav.margins.evaluate import score_stream, simulated_frames

pytestmark = pytest.mark.slow

BOUND_MM = 0.8


@pytest.fixture(scope="module")
def hyperechoic():
    return simulated_frames(301, frames=20, echogenicity="hyperechoic")


@pytest.fixture(scope="module")
def isoechoic():
    return simulated_frames(303, frames=20, echogenicity="isoechoic")


def test_truth_is_in_the_frames(hyperechoic, isoechoic) -> None:
    for sim in (hyperechoic, isoechoic):
        assert sim.images.shape[1:] == (256, 256)
        in_view = [t.any() for t in sim.truth_codes]
        assert sum(in_view) >= 5
    assert hyperechoic.echogenicity == "hyperechoic"
    assert isoechoic.echogenicity == "isoechoic"


@pytest.mark.parametrize("name", ["hyperechoic", "isoechoic"])
def test_margin_error_within_bound_after_registration(name: str, request) -> None:
    sim = request.getfixturevalue(name)
    score = score_stream(sim)
    assert score.predicted_mm.size > 100
    assert score.refined_mm.mean() <= BOUND_MM
    assert score.refined_mm.mean() <= score.predicted_mm.mean() + 0.05


def test_ultrasound_corrects_misregistered_margins(hyperechoic) -> None:
    # the registration off by 1.5 mm along four directions, on two hyperechoic cases: the MRI
    # margin is off, the ultrasound shows where the tumor really is. Not every direction of
    # every case improves; pooled, the ultrasound-supported margin is clearly closer.
    second = simulated_frames(302, frames=20, echogenicity="hyperechoic")
    predicted, refined, seen_predicted, seen_observed = [], [], [], []
    for sim in (hyperechoic, second):
        for direction in ([0.3, -1.2, 0.8], [1, 0, 0], [0, 1, 0], [0, 0, 1]):
            offset = np.asarray(direction, float)
            score = score_stream(sim, offset_mm=offset * 1.5 / np.linalg.norm(offset))
            predicted.append(score.predicted_mm)
            refined.append(score.refined_mm)
            seen_predicted.append(score.supported_predicted_mm)
            seen_observed.append(score.supported_observed_mm)
    predicted, refined = np.concatenate(predicted), np.concatenate(refined)
    seen_predicted, seen_observed = np.concatenate(seen_predicted), np.concatenate(seen_observed)
    assert seen_observed.size > 0.2 * predicted.size
    assert seen_observed.mean() < 0.7 * seen_predicted.mean()
    assert refined.mean() < predicted.mean() - 0.05


def test_where_an_iso_echoic_margin_is_claimed_it_is_not_worse(isoechoic) -> None:
    score = score_stream(isoechoic)
    if score.supported_observed_mm.size:
        assert score.supported_observed_mm.mean() <= score.supported_predicted_mm.mean() + 0.1
    assert score.supported_fraction < 0.5
