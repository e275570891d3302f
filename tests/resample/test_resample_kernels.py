"""The shared trilinear samplers against numpy reference implementations, edge rule by edge
rule, and the two rooms that use them get the rule they were written for."""

from __future__ import annotations

import numpy as np
import pytest

from usnav.registration import _kernels as registration_kernels
from usnav.resample import trilinear_clamp, trilinear_nan
from usnav.sim import _kernels as sim_kernels


def _reference(vol: np.ndarray, p: np.ndarray) -> float:
    """Trilinear by the definition: the 8 corners weighted by the product of 1-D weights."""
    lo = np.minimum(np.floor(p).astype(int), np.array(vol.shape) - 2)
    t = p - lo
    total = 0.0
    for corner in np.ndindex(2, 2, 2):
        c = np.array(corner)
        weight = np.prod(np.where(c == 1, t, 1.0 - t))
        total += weight * vol[tuple(lo + c)]
    return float(total)


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return np.random.default_rng(3).normal(size=(7, 9, 6)).astype(np.float32)


def test_nan_rule_inside_matches_the_definition_and_is_nan_outside(volume) -> None:
    rng = np.random.default_rng(4)
    upper = np.array(volume.shape) - 1.0
    for p in rng.uniform(0.0, 1.0, size=(300, 3)) * upper:
        assert trilinear_nan(volume, *p) == pytest.approx(_reference(volume, p), abs=1e-5)
    # exactly on the far faces and the corners: still inside
    assert trilinear_nan(volume, *upper) == pytest.approx(float(volume[-1, -1, -1]), abs=1e-6)
    assert trilinear_nan(volume, 0.0, 0.0, 0.0) == pytest.approx(float(volume[0, 0, 0]))
    for outside in ([-1e-3, 1, 1], [1, upper[1] + 1e-3, 1], [1, 1, np.nan]):
        assert np.isnan(trilinear_nan(volume, *outside))


def test_clamp_rule_takes_the_nearest_face_outside(volume) -> None:
    rng = np.random.default_rng(5)
    upper = np.array(volume.shape) - 1.0
    for p in rng.uniform(-3.0, 1.0, size=(300, 3)) * (upper + 3.0):
        clamped = np.clip(p, 0.0, upper)
        expected = _reference(volume.astype(np.float64), clamped)
        assert trilinear_clamp(volume.astype(np.float64), *p) == pytest.approx(expected, abs=1e-9)


def test_each_room_uses_its_rule() -> None:
    assert registration_kernels.trilinear is trilinear_nan
    assert sim_kernels.trilinear is trilinear_clamp
