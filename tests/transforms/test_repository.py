"""Transform repository: composition, inversion, status propagation, naming rules."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usnav.errors import TransformError
from usnav.frames import TrackedFrame, TrackedTransform, TransformStatus
from usnav.transforms import TransformRepository, check_frame_name, rigid_from_params, split_name

finite = st.floats(-200, 200, allow_nan=False, allow_infinity=False)
angle = st.floats(-3.0, 3.0, allow_nan=False, allow_infinity=False)
poses = st.tuples(finite, finite, finite, angle, angle, angle).map(
    lambda p: rigid_from_params(np.array(p) * [1, 1, 1, 0.5, 0.5, 0.5])
)
statuses = st.sampled_from(list(TransformStatus))


@settings(max_examples=60, deadline=None)
@given(probe=poses, reference=poses)
def test_compose_through_tracker(probe: np.ndarray, reference: np.ndarray) -> None:
    repo = TransformRepository({"ProbeToTracker": probe, "ReferenceToTracker": reference})
    expected = np.linalg.inv(reference) @ probe
    np.testing.assert_allclose(repo.matrix("ProbeToReference"), expected, atol=1e-9)
    # the inverse direction is the inverse matrix
    np.testing.assert_allclose(
        repo.matrix("ReferenceToProbe") @ repo.matrix("ProbeToReference"), np.eye(4), atol=1e-9
    )


@settings(max_examples=60, deadline=None)
@given(a=poses, b=poses, c=poses)
def test_chain_of_three_equals_product(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
    scale = np.diag([0.1, 0.12, 0.11, 1.0])
    repo = TransformRepository()
    repo.set("ImageToProbe", a @ scale)
    repo.set("ProbeToTracker", b)
    repo.set("ReferenceToTracker", c)
    repo.set("ReferenceToMri", a)
    expected = a @ np.linalg.inv(c) @ b @ a @ scale
    np.testing.assert_allclose(repo.matrix("ImageToMri"), expected, atol=1e-8)
    np.testing.assert_allclose(repo.matrix("ImageToImage"), np.eye(4))


@settings(max_examples=40, deadline=None)
@given(s1=statuses, s2=statuses)
def test_status_is_worst_along_path(s1: TransformStatus, s2: TransformStatus) -> None:
    repo = TransformRepository()
    repo.set("ProbeToTracker", np.eye(4), s1)
    repo.set("ReferenceToTracker", np.eye(4), s2)
    got = repo.get("ProbeToReference").status
    if TransformStatus.INVALID in (s1, s2):
        assert got is TransformStatus.INVALID
    elif TransformStatus.MISSING in (s1, s2):
        assert got is TransformStatus.MISSING
    else:
        assert got is TransformStatus.OK


def test_invalid_singular_inverse_does_not_raise() -> None:
    repo = TransformRepository()
    repo.set("ProbeToTracker", np.eye(4))
    repo.set("ReferenceToTracker", np.zeros((4, 4)), TransformStatus.INVALID)
    result = repo.get("ProbeToReference")
    assert result.status is TransformStatus.INVALID


def test_frame_names_with_to_are_rejected() -> None:
    with pytest.raises(TransformError, match="contains 'To'"):
        check_frame_name("Tool")
    with pytest.raises(TransformError, match="exactly one 'To'"):
        TransformRepository().set("TopToBottom", np.eye(4))
    with pytest.raises(TransformError, match="exactly one 'To'"):
        split_name("ProbeReference")


def test_missing_path_names_what_is_stored() -> None:
    repo = TransformRepository({"ProbeToTracker": np.eye(4)})
    with pytest.raises(TransformError, match="ProbeToTracker"):
        repo.get("ImageToMri")


def test_loop_is_refused_but_replacing_inverse_is_not() -> None:
    repo = TransformRepository({"ProbeToTracker": np.eye(4), "ReferenceToTracker": np.eye(4)})
    with pytest.raises(TransformError, match="ambiguous"):
        repo.set("ProbeToReference", np.eye(4))
    m = rigid_from_params([1, 2, 3, 0, 0, 0])
    repo.set("TrackerToProbe", m)  # replaces ProbeToTracker
    np.testing.assert_allclose(repo.matrix("ProbeToTracker"), np.linalg.inv(m))
    assert "ProbeToTracker" not in repo.names()


def test_update_from_frame_skips_redundant_and_keeps_persistent() -> None:
    repo = TransformRepository()
    repo.set("ImageToProbe", np.diag([0.1, 0.1, 0.1, 1]), persistent=True)
    frame = TrackedFrame(
        image=np.zeros((2, 3), np.uint8),
        transforms={
            "ProbeToTracker": TrackedTransform(rigid_from_params([1, 0, 0, 0, 0, 0])),
            "ReferenceToTracker": TrackedTransform(np.eye(4)),
            "ProbeToReference": TrackedTransform(np.eye(4)),  # redundant, PLUS sends it too
        },
    )
    repo.update_from_frame(frame)
    np.testing.assert_allclose(repo.matrix("ImageToReference")[:3, 3], [1, 0, 0])
    repo.clear_frame_transforms()
    assert repo.names() == ["ImageToProbe"]


def test_from_frame_composes_what_the_frame_carries_with_the_calibration() -> None:
    image_to_probe = np.diag([0.1, 0.2, 0.15, 1.0])
    probe_to_tracker = rigid_from_params([5, -3, 2, 0.1, 0.0, 0.3])
    reference_to_tracker = rigid_from_params([1, 1, 1, 0.0, 0.2, 0.0])
    frame = TrackedFrame(
        image=np.zeros((2, 3), np.uint8),
        transforms={
            "ProbeToTracker": TrackedTransform(probe_to_tracker),
            "ReferenceToTracker": TrackedTransform(reference_to_tracker, TransformStatus.INVALID),
            # redundant: among transforms of one status the first one wins (valid ones first)
            "ProbeToReference": TrackedTransform(np.eye(4), TransformStatus.INVALID),
            "ImageToReference": TrackedTransform(np.eye(4)),  # the server's own calibration
            "BadName": TrackedTransform(np.eye(4)),  # malformed: skipped
        },
    )
    repo = TransformRepository.from_frame(
        frame, calibration={"ImageToProbe": image_to_probe}, exclude=["ImageToReference"]
    )
    got = repo.get("ImageToReference")
    expected = np.linalg.inv(reference_to_tracker) @ probe_to_tracker @ image_to_probe
    np.testing.assert_allclose(got.matrix, expected, atol=1e-12)
    assert got.status is TransformStatus.INVALID  # the worst along the chain
    repo.clear_frame_transforms()
    assert repo.names() == ["ImageToProbe"]  # the calibration is persistent


def test_from_frame_takes_a_row_of_transforms_and_matches_set_one_by_one() -> None:
    row = {
        "StylusToTracker": TrackedTransform(rigid_from_params([0, 0, 9, 0, 0, 0])),
        "ReferenceToTracker": TrackedTransform(np.eye(4), TransformStatus.MISSING),
    }
    by_hand = TransformRepository()
    for name, tt in row.items():
        by_hand.set(name, tt.matrix, tt.status)
    repo = TransformRepository.from_frame(row)
    assert repo.names() == by_hand.names()
    got = repo.get("StylusToReference")
    np.testing.assert_allclose(got.matrix, by_hand.matrix("StylusToReference"))
    assert got.status is TransformStatus.MISSING


def test_a_redundant_transform_that_is_not_ok_does_not_hide_a_valid_path() -> None:
    """A frame listing a MISSING ProbeToReference before the valid ProbeToTracker +
    ReferenceToTracker: the valid chain places the probe."""
    from usnav.frames import TrackedFrame, TrackedTransform

    probe = np.eye(4)
    probe[:3, 3] = [1, 2, 3]
    frame = TrackedFrame(
        image=np.zeros((2, 2), np.uint8),
        transforms={
            "ProbeToReference": TrackedTransform(np.eye(4), TransformStatus.MISSING),
            "ProbeToTracker": TrackedTransform(probe),
            "ReferenceToTracker": TrackedTransform(np.eye(4)),
        },
    )
    got = TransformRepository.from_frame(frame).get("ProbeToReference")
    assert got.status is TransformStatus.OK
    np.testing.assert_allclose(got.matrix, probe)
