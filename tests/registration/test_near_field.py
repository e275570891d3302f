"""The anechoic near field (the saline of an open wound) excluded on the ultrasound side
(:func:`usnav.registration.similarity.anechoic_near_field`, option ``near_field_mask``)."""

from __future__ import annotations

import numpy as np
import pytest

from usnav.registration.options import RegistrationOptions
from usnav.registration.similarity import anechoic_near_field

PIXEL_MM = (0.5, 0.5)  # (column, row)


def _wound_frame(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 40×30 px frame: tissue speckle everywhere, except columns 10-19, saline (0-ish) down
    to row 12, where a bright dura echo lies. Returns the frame, its field of view and the
    expected layer before widening."""
    rng = np.random.default_rng(seed)
    us = rng.uniform(40.0, 120.0, (40, 30)).astype(np.float32)
    layer = np.zeros(us.shape, bool)
    layer[:12, 10:20] = True
    us[layer] = rng.uniform(0.0, 3.0, layer.sum())
    us[12, 10:20] = 200.0
    return us, np.ones(us.shape, np.uint8), layer


def test_the_layer_runs_from_the_face_to_the_first_echo_and_is_widened_sideways():
    us, fov, layer = _wound_frame()
    no_margin = anechoic_near_field(
        us, fov, PIXEL_MM, fraction=0.1, min_depth_mm=3.0, margin_mm=0.0
    )
    np.testing.assert_array_equal(no_margin, layer)
    assert not no_margin[12, 10:20].any(), "the first echo (the dura) must stay compared"
    widened = anechoic_near_field(us, fov, PIXEL_MM, fraction=0.1, min_depth_mm=3.0, margin_mm=1.0)
    expected = np.zeros_like(layer)
    expected[:12, 8:22] = True  # 1 mm = 2 px on each side, the layer's rows only
    np.testing.assert_array_equal(widened, expected)


def test_a_thin_layer_gel_or_skin_and_a_dark_patch_below_the_first_echo_are_not_the_wound():
    us, fov, _ = _wound_frame()
    us[:4, 0:5] = 1.0  # 2 mm of gel: thinner than min_depth_mm
    us[25:35, 22:28] = 1.0  # a cyst below tissue: not connected to the face
    mask = anechoic_near_field(us, fov, PIXEL_MM, fraction=0.1, min_depth_mm=3.0, margin_mm=0.0)
    assert not mask[:, 0:5].any()
    assert not mask[:, 22:28].any()
    assert mask[:12, 10:20].all()


def test_the_field_of_view_bounds_the_layer_and_a_blank_frame_masks_nothing():
    us, fov, _ = _wound_frame()
    fov[:, :12] = 0  # a fan: the left of the frame is outside
    mask = anechoic_near_field(us, fov, PIXEL_MM, fraction=0.1, min_depth_mm=3.0, margin_mm=1.0)
    assert not mask[:, :12].any()
    assert mask[:12, 12:20].all()
    blank = np.zeros_like(us)
    assert not anechoic_near_field(
        blank, fov, PIXEL_MM, fraction=0.1, min_depth_mm=3.0, margin_mm=1.0
    ).any()


def test_the_option_is_validated_and_can_be_turned_off():
    assert RegistrationOptions().frame_mask_arguments()["near_field_fraction"] == 0.1
    off = RegistrationOptions(near_field_mask=False, near_field_fraction=0.2)
    assert off.frame_mask_arguments()["near_field_fraction"] is None
    on = RegistrationOptions(near_field_fraction=0.2)
    assert on.frame_mask_arguments()["near_field_fraction"] == 0.2
    with pytest.raises(ValueError):
        RegistrationOptions(near_field_fraction=1.5)


def test_the_mask_reaches_the_comparison_and_takes_the_saline_out_of_it(
    small_case, small_case_dirs
):
    """The simulated wound's saline lies where the removed-tissue label does. With the near
    field excluded, most of the label's pixels are out of the comparison, every excluded pixel
    is dark, and filling the removed tissue with fluid in the MRI changes the score at the
    truth clearly less than without the mask (what is left: the MRI next to the kept first
    echo, the dura). Fails if the mask does not reach the similarity or masks tissue."""
    from usnav.io.volume import load_volume
    from usnav.registration.operated import operated_mri
    from usnav.registration.search import SweepRegistration

    mri, sweep, _, truth = small_case
    operated = operated_mri(mri, load_volume(small_case_dirs[7] / "removed_label.nii.gz"))
    pose = truth.reference_to_mri

    def change(opts: RegistrationOptions) -> float:
        before = SweepRegistration(mri, sweep, pose, opts).level(-1)
        after = SweepRegistration(operated, sweep, pose, opts).level(-1)
        return after.similarity(pose) - before.similarity(pose)

    masked_options = RegistrationOptions(near_field_mask=True)
    plain_options = RegistrationOptions(near_field_mask=False)
    plain, masked = change(plain_options), change(masked_options)
    assert plain > 0.005
    assert masked < 0.8 * plain, (plain, masked)
    frames = SweepRegistration(mri, sweep, pose, masked_options).level(-1).frames
    unmasked = SweepRegistration(mri, sweep, pose, plain_options).level(-1).frames
    excluded = (unmasked.valid > 0) & (frames.valid == 0)
    assert 0.05 < excluded.sum() / (unmasked.valid > 0).sum() < 0.6
    level = np.percentile(unmasked.us[unmasked.valid > 0], 99)
    assert np.percentile(unmasked.us[excluded], 90) < 0.1 * level


def test_sizes_differing_in_their_last_bits_give_the_same_mask_and_the_same_grid():
    """Session 36: a calibration written with fewer digits made a 1.5 mm pixel
    1.4999999999999993 or 1.5000000000010885 mm, and the 3 mm near-field depth took 3 rows
    or 2; an MRI's spacing noise of 1e-8 mm made (79 − 1) / 1.5 fall on either side of 52,
    and its coarse level 52 or 53 voxels long. Both are decided within a tolerance now."""
    from usnav.io.volume import Volume
    from usnav.registration.similarity import _near_field_extent, build_mri_levels

    extents = {
        _near_field_extent(200, (px, px), 3.0, 3.0)
        for px in (1.5, 1.4999999999999993, 1.5000000000010885)
    }
    assert extents == {(2, 2)}
    rng = np.random.default_rng(0)
    data = rng.random((79, 12, 10)).astype(np.float32)
    shapes = set()
    for noise in (0.0, -1e-8, 1e-8):
        affine = np.diag([1.0 + noise, 1.0, 1.0, 1.0])
        level = build_mri_levels(Volume(data, affine), [1.5])[0]
        shapes.add(level.vol2.shape[:3])
    assert len(shapes) == 1 and next(iter(shapes))[0] == 53
