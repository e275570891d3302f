"""An image whose field of view lies entirely outside the MRI (session 43): another patient's
images or MRI, a registration far off, or a probe far from the imaged region. Nothing there
can check the registration or support "no tumor in view": UNCERTAIN, never LIVE."""

from __future__ import annotations

import numpy as np
import pytest

from usnav.protocol.display import (
    LIVE,
    OUTSIDE_MRI_DOUBT,
    OUTSIDE_MRI_PREFIX,
    UNCERTAIN,
    DisplayRules,
    VolumeExtent,
    publisher_state,
)

#: 10 × 10 × 10 voxels of 1 mm at the origin: the box spans −0.5 … 9.5 mm on each axis
BOX = VolumeExtent(np.eye(4), (10, 10, 10))


def _image(origin, along_cols, along_rows) -> np.ndarray:
    """ImageToMri of a 1 × 1 px image whose field of view (pixel edges) starts at ``origin``
    and spans ``along_cols`` and ``along_rows`` (mm vectors)."""
    m = np.eye(4)
    m[:3, 0] = along_cols
    m[:3, 1] = along_rows
    m[:3, 2] = np.cross(along_cols, along_rows)
    m[:3, 3] = np.asarray(origin, float) + 0.5 * (np.asarray(along_cols) + along_rows)
    return m


def test_an_image_in_beside_or_across_the_box() -> None:
    across = _image((-20, 4, -20), (50, 0, 0), (0, 0, 50))  # no corner inside, crosses it
    assert not BOX.misses(across, (1, 1))
    touching = _image((9.5, 0, 0), (5, 0, 0), (0, 5, 0))  # its edge on the box's face
    assert not BOX.misses(touching, (1, 1))
    beside = _image((9.6, 0, 0), (5, 0, 0), (0, 5, 0))
    assert BOX.misses(beside, (1, 1))
    far = _image((300, 0, 0), (40, 0, 0), (0, 0, 40))
    assert BOX.misses(far, (1, 1))


def test_an_oblique_plane_past_the_corner_misses_although_its_bounds_overlap() -> None:
    """The plane x + y = c (vertical): past the box's corner (x + y = 19) at c = 21, though the
    image's bounding box [0, 21]² covers the box's; across it at c = 18."""
    for c, misses in ((21.0, True), (18.0, False)):
        image = _image((0, c, 0), (c, -c, 0), (0, 0, 9))
        assert BOX.misses(image, (1, 1)) is misses, c


def test_the_image_size_scales_the_pixels_and_a_rotated_mri_is_its_own_box() -> None:
    # 0.5 mm pixels, 40 × 60 px: 20 × 30 mm from (12, 0, 0): beside the 1 mm box
    pixels = _image((12, 0, 0), (0.5, 0, 0), (0, 0.5, 0))
    assert BOX.misses(pixels, (60, 40))
    assert not BOX.misses(pixels + _shift((-5, 0, 0)), (60, 40))
    # an MRI turned 30° about z, 2 mm voxels, placed at (100, 50, 0)
    turn = np.radians(30)
    affine = np.eye(4)
    affine[:3, :3] = 2 * np.array(
        [[np.cos(turn), -np.sin(turn), 0], [np.sin(turn), np.cos(turn), 0], [0, 0, 1]]
    )
    affine[:3, 3] = (100, 50, 0)
    mri = VolumeExtent(affine, (20, 20, 20))
    centre = affine @ [9.5, 9.5, 9.5, 1]
    image = _image(centre[:3] - (5, 0, 5), (10, 0, 0), (0, 0, 10))
    assert not mri.misses(image, (1, 1))
    # the unturned box's far corner (x = 140) lies outside the turned one's
    assert mri.misses(_image((137, 49, 0), (1, 0, 0), (0, 1, 0)), (1, 1))


def _shift(mm) -> np.ndarray:
    m = np.zeros((4, 4))
    m[:3, 3] = mm
    return m


def test_the_separating_axes_agree_with_the_plane_sampled_densely() -> None:
    """Random planes near a turned box: wherever a sample of the image lies in the box, it
    does not miss; where it misses, no sample lies in it; and the exact test finds overlaps a
    test of the corners alone does not."""
    rng = np.random.default_rng(9137)
    turn = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    affine = np.eye(4)
    affine[:3, :3] = turn * [0.8, 0.9, 1.1]
    mri = VolumeExtent(affine, (30, 40, 20))
    to_voxel = np.linalg.inv(affine)
    s = np.linspace(0, 1, 60)
    grid = np.stack(np.meshgrid(s, s), -1).reshape(-1, 2)
    no_corner_inside = 0
    for _ in range(400):
        a, b = rng.normal(size=(2, 3)) * 25
        origin = rng.uniform(-40, 60, 3)
        image = _image(origin, a, b)
        points = origin + grid[:, :1] * a + grid[:, 1:] * b
        voxels = (np.c_[points, np.ones(len(points))] @ to_voxel.T)[:, :3]
        inside = np.all((voxels >= -0.5) & (voxels <= np.array([30, 40, 20]) - 0.5), axis=1)
        misses = mri.misses(image, (1, 1))
        if inside.any():
            assert not misses
            no_corner_inside += not inside[[0, 59, -60, -1]].any()
    assert no_corner_inside >= 5  # overlaps the corners alone would have called misses


def test_an_image_that_cannot_be_placed_is_not_judged() -> None:
    image = _image((300, 0, 0), (5, 0, 0), (0, 5, 0))
    image[0, 0] = np.nan
    assert not BOX.misses(image, (1, 1))
    assert not BOX.misses(_image((300, 0, 0), (5, 0, 0), (0, 5, 0)), (0, 4))


@pytest.mark.parametrize("uncertainty", [0.5, 4.0])
def test_outside_the_mri_is_never_live_and_says_what_to_check(uncertainty: float) -> None:
    rules = DisplayRules(live_max_uncertainty_mm=5.0)
    good = dict(checked=True, uncertainty_mm=uncertainty, checked_age_s=1.0, rules=rules)
    assert publisher_state(**good).state == LIVE
    told = publisher_state(**good, doubt=OUTSIDE_MRI_DOUBT)
    assert told.state == UNCERTAIN and told.reason.startswith(OUTSIDE_MRI_PREFIX)
    assert "this patient's" in told.reason and "registration" in told.reason
    assert "; " not in OUTSIDE_MRI_DOUBT  # reasons are joined with it
