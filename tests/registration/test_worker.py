"""The streaming worker in a real thread: improves, never publishes a rejected estimate as the
accepted one, keeps serving after bad input, stops."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from waiting import wait_until

from usnav.errors import InputError
from usnav.frames import TrackedFrame, TrackedTransform
from usnav.registration.worker import RegistrationWorker, WorkerOptions


def feed(worker, sweep, passes=2, order=None):
    order = order if order is not None else list(range(len(sweep)))
    for p in range(passes):
        seq = order if p % 2 == 0 else order[::-1]
        for i in seq:
            worker.submit(sweep.images[i], sweep.image_to_reference[i], float(i))


def wait_for(condition, timeout=60.0):
    return wait_until(condition, timeout)


def test_worker_improves_and_publishes(small_case):
    mri, sweep, cal, truth = small_case
    seen = []
    worker = RegistrationWorker(
        mri,
        cal,
        truth.init_reference_to_mri,
        WorkerOptions(min_frames=40, min_new_frames=20),
        on_estimate=seen.append,
    )
    first = worker.latest_accepted()
    assert first.source == "init" and first.accepted
    np.testing.assert_array_equal(first.reference_to_mri, truth.init_reference_to_mri)
    with worker:
        for n in range(3):  # three passes over the region, each waited for
            feed(worker, sweep, passes=1, order=list(range(len(sweep)))[:: 1 if n % 2 else -1])
            assert wait_for(lambda n=n: worker.stats.updates >= n + 1), worker.stats
    assert worker.stats.failed == 0, worker.stats.last_error
    best = worker.latest_accepted()
    assert best.source == "image" and best.accepted
    assert truth.mtre(best.reference_to_mri) < 1.5 < truth.mtre(truth.init_reference_to_mri)
    assert np.isfinite(best.uncertainty_mm) and 0 < best.quality <= 1
    assert [e.sequence for e in seen] == sorted(e.sequence for e in seen)


def test_rejected_estimates_never_replace_the_accepted_one(small_case):
    mri, sweep, cal, truth = small_case
    rng = np.random.default_rng(9)
    speckle = rng.integers(1, 255, size=sweep.images.shape, dtype=np.uint8)
    worker = RegistrationWorker(
        mri, cal, truth.init_reference_to_mri, WorkerOptions(min_frames=40, min_new_frames=30)
    )
    for i in range(len(sweep)):
        worker.submit(speckle[i], sweep.image_to_reference[i], float(i))
    window = [(speckle[i], sweep.image_to_reference[i], float(i)) for i in range(len(sweep))]
    estimate = worker.update(window)  # in this thread: deterministic
    assert estimate is not None and not estimate.accepted
    assert worker.latest() is estimate
    accepted = worker.latest_accepted()
    assert accepted.source == "init"
    np.testing.assert_array_equal(accepted.reference_to_mri, truth.init_reference_to_mri)
    # the navigation registration is still in use, but no longer "not yet checked": it says
    # how many image-based tries failed to confirm it and why the latest did
    why = estimate.reason.removeprefix("rejected: ")
    assert accepted.unconfirmed.startswith("1 image-based try rejected (latest: ")
    assert why[:20] in accepted.unconfirmed
    worker.update(window)
    assert worker.latest_accepted().unconfirmed.startswith("2 image-based tries rejected")
    assert worker.latest_accepted().t_computed == accepted.t_computed


def test_submit_never_waits_for_the_optimiser(small_case):
    mri, sweep, cal, truth = small_case
    worker = RegistrationWorker(
        mri, cal, truth.init_reference_to_mri, WorkerOptions(min_frames=20, min_new_frames=5)
    ).start()
    try:
        feed(worker, sweep, passes=1)
        assert wait_for(lambda: worker.stats.updates >= 1)
        # while it registers, submitting stays a lock-protected append (no wait, no error)
        for i in range(len(sweep)):
            worker.submit(sweep.images[i], sweep.image_to_reference[i], float(i))
        assert worker.stats.submitted == 2 * len(sweep)
    finally:
        worker.stop()
    assert worker._thread is None  # stopped
    assert not any(t.name == "usnav-registration" for t in threading.enumerate())


def test_bad_frames_are_dropped_and_frame_input(small_case):
    mri, sweep, cal, truth = small_case
    worker = RegistrationWorker(mri, cal, truth.init_reference_to_mri)
    worker.submit(np.zeros((4, 4, 4)), np.eye(4), 0.0)  # not 2D
    worker.submit(sweep.images[0], np.full((4, 4), np.nan), 0.0)  # NaN pose
    worker.submit(sweep.images[0], np.eye(3), 0.0)  # not 4×4
    assert worker.stats.submitted == 0
    assert worker.stats.bad_frames == 3  # dropped, but counted as the docstring says
    frame = TrackedFrame(
        image=sweep.images[0],
        transforms={"ImageToReference": TrackedTransform(sweep.image_to_reference[0])},
    )
    assert worker.submit_frame(frame)
    assert worker.stats.submitted == 1


def test_bad_construction_inputs(small_case):
    mri, _, cal, truth = small_case
    with pytest.raises(InputError, match="ImageToProbe"):
        RegistrationWorker(mri, np.zeros((4, 4)), truth.init_reference_to_mri)
    with pytest.raises(InputError, match="rigid"):
        RegistrationWorker(mri, cal, np.diag([2, 2, 2, 1.0]))


def _skewed(cal: np.ndarray, deg: float) -> np.ndarray:
    """``cal`` with its image y axis turned ``deg`` towards x (a real calibration's skew)."""
    out = np.array(cal, dtype=np.float64)
    x, y = out[:3, 0], out[:3, 1]
    ux = x / np.linalg.norm(x)
    out[:3, 1] = np.cos(np.radians(deg)) * y + np.sin(np.radians(deg)) * np.linalg.norm(y) * ux
    return out


def test_a_calibration_the_loader_accepts_is_not_refused_by_the_worker(small_case):
    """Session 43: PLUS's own SpinePhantom calibration (axes 2.7° off perpendicular) loads
    (:data:`usnav.transforms.matrices.MAX_AXIS_SKEW_DEG`, 5°) but the worker allowed 1°, so
    ``usnav run`` failed at start; beyond the common limit both refuse it."""
    from usnav.config.calibration import SpatialCalibration
    from usnav.transforms.matrices import MAX_AXIS_SKEW_DEG

    mri, _, cal, truth = small_case
    plus_like = _skewed(cal, 2.74)
    SpatialCalibration(image_to_probe=plus_like.tolist())  # the loader's rule
    RegistrationWorker(mri, plus_like, truth.init_reference_to_mri)  # no error
    too_skewed = _skewed(cal, MAX_AXIS_SKEW_DEG + 1.0)
    with pytest.raises(InputError, match=r"ImageToProbe: axes are not perpendicular") as info:
        RegistrationWorker(mri, too_skewed, truth.init_reference_to_mri)
    assert str(info.value).count("rigid-times-scale") == 1, str(info.value)
    assert "usnav calibrate spatial" in str(info.value)


def test_an_update_that_agrees_confirms_the_accepted_estimate(small_case):
    """Scanning on over the same anatomy: updates that land on the accepted pose are rejected
    as 'not clearly better' but confirm it, so its age restarts (a display would otherwise
    call a correct registration stale); one that disagrees does not."""
    from dataclasses import replace

    mri, sweep, cal, truth = small_case
    worker = RegistrationWorker(
        mri, cal, truth.init_reference_to_mri, WorkerOptions(min_frames=20, min_new_frames=10)
    )
    window = [(sweep.images[i], sweep.image_to_reference[i], float(i)) for i in range(len(sweep))]
    first = worker.update(window)
    assert first is not None and first.accepted, first.reason
    accepted = worker.latest_accepted()
    # pretend it was accepted half a minute ago
    long_ago = accepted.t_computed - 30.0
    worker._accepted = replace(accepted, t_computed=long_ago)
    again = worker.update(window)  # the same frames: nothing clearly better to find
    assert again is not None and not again.accepted
    confirmed = worker.latest_accepted()
    assert worker.stats.confirmed == 1 and "confirmed by image" in confirmed.reason
    np.testing.assert_array_equal(confirmed.reference_to_mri, accepted.reference_to_mri)
    assert confirmed.t_computed > long_ago + 20.0  # its time restarted
    # speckle (the anatomy no longer agrees): no confirmation, the age keeps growing
    worker._accepted = replace(confirmed, t_computed=long_ago)
    speckle = np.random.default_rng(3).integers(1, 255, size=sweep.images.shape, dtype=np.uint8)
    noise = [(speckle[i], sweep.image_to_reference[i], float(i)) for i in range(len(sweep))]
    worker.update(noise)
    assert worker.stats.confirmed == 1
    assert worker.latest_accepted().t_computed == long_ago


def _first_from_a_short_window(small_case, **options):
    """A worker whose first image-based estimate came from 40 of the case's 60 frames (its
    window holds 60), and the full 60-frame window."""
    mri, sweep, cal, truth = small_case
    worker = RegistrationWorker(
        mri,
        cal,
        truth.init_reference_to_mri,
        WorkerOptions(window_frames=len(sweep), min_frames=20, min_new_frames=10, **options),
    )
    window = [(sweep.images[i], sweep.image_to_reference[i], float(i)) for i in range(len(sweep))]
    first = worker.update(window[:40])
    assert first is not None and first.accepted, first.reason
    return worker, window, first


def _correction_mm(reason: str) -> float:
    import re

    found = re.search(r"correction (\d+\.\d+) mm", reason)
    assert found, reason
    return float(found.group(1))


def test_a_first_estimate_from_a_short_window_is_judged_again_on_the_full_one(small_case):
    *_, truth = small_case
    worker, window, _ = _first_from_a_short_window(small_case)
    again = worker.update(window)  # full: a cold try from the navigation registration
    assert again is not None and again.accepted, again.reason
    # the navigation estimate is 4-8 mm off: a warm update would move ~0, this one moved it all
    assert _correction_mm(again.reason) > 2.0
    assert worker.latest_accepted() is again and again.source == "image"
    assert truth.mtre(again.reference_to_mri) < 1.5
    # only once: the next full window is an ordinary warm update from the estimate in use
    third = worker.update(window)
    assert third is not None and (not third.accepted or _correction_mm(third.reason) < 2.0)


def test_a_first_estimate_the_full_window_does_not_bear_out_is_withdrawn(small_case):
    *_, truth = small_case
    worker, window, _ = _first_from_a_short_window(small_case)
    # the full window's cold verdict refuses (no gain can be that consistent)
    worker.options = worker.options.model_copy(
        update={"full": worker.options.full.model_copy(update={"min_paired_t": 1e9})}
    )
    again = worker.update(window)
    assert again is not None and not again.accepted
    assert "withdrawn" in again.reason
    in_use = worker.latest_accepted()
    assert in_use.source == "init"  # the navigation registration again: never LIVE
    np.testing.assert_array_equal(in_use.reference_to_mri, truth.init_reference_to_mri)
    assert "withdrawn" in in_use.unconfirmed
    # and the next window is a cold try again (from the navigation registration)
    worker.options = worker.options.model_copy(
        update={"full": worker.options.full.model_copy(update={"min_paired_t": 3.0})}
    )
    cold = worker.update(window)
    assert cold is not None and cold.accepted and _correction_mm(cold.reason) > 2.0


def test_without_the_rejudgment_the_first_estimate_stays(small_case):
    worker, window, _ = _first_from_a_short_window(small_case, rejudge_first=False)
    again = worker.update(window)
    assert again is not None
    assert not again.accepted or _correction_mm(again.reason) < 2.0  # a warm update
    assert worker.latest_accepted().source == "image"


def _tie_on_the_full_window(worker: RegistrationWorker) -> None:
    """The full window's cold verdict finds every distinct probe optimum a tie (a lead no
    similarity reaches, as tests/registration/test_across_sweep.py does)."""
    worker.options = worker.options.model_copy(
        update={"full": worker.options.full.model_copy(update={"ambiguity_min_gain": 1.0})}
    )


def test_a_tie_on_the_full_window_at_the_first_estimate_keeps_it(small_case):
    """The full window's own optimum lies by the first estimate and is rejected only for a
    tie with another pose: the full window finds the same pose, so it stays."""
    worker, window, first = _first_from_a_short_window(small_case)
    _tie_on_the_full_window(worker)
    again = worker.update(window)
    assert again is not None and not again.accepted
    assert "first image-based estimate kept" in again.reason and "ambiguous" in again.reason
    assert worker.latest_accepted() is first and first.source == "image"
    # the re-judgment is done: the next window is a warm update from the first estimate
    assert not worker._rejudge_due
    third = worker.update(window)
    assert third is not None and (not third.accepted or _correction_mm(third.reason) < 2.0)


def test_a_tie_on_the_full_window_elsewhere_withdraws_the_first_estimate(small_case):
    """The same tie, but the first estimate lies 4 mm from the full window's optimum: the full
    window does not find it, so it is withdrawn."""
    from dataclasses import replace

    *_, truth = small_case
    worker, window, first = _first_from_a_short_window(small_case)
    moved = first.reference_to_mri.copy()
    moved[:3, 3] += (0.0, 0.0, 4.0)  # 4 mm along the MRI's S axis (along the spine)
    worker._accepted = replace(first, reference_to_mri=moved)
    _tie_on_the_full_window(worker)
    again = worker.update(window)
    assert again is not None and not again.accepted
    assert "withdrawn" in again.reason and "ambiguous" in again.reason
    in_use = worker.latest_accepted()
    assert in_use.source == "init"
    np.testing.assert_array_equal(in_use.reference_to_mri, truth.init_reference_to_mri)


def test_a_clearly_better_pose_elsewhere_is_not_a_tie(small_case):
    """The same re-judgment, but a distinct pose scored better than the full window's try by
    more than the verdict's lead (the live cold search does not climb to it): the full window
    does not find the first estimate's pose as its optimum, so it is withdrawn."""
    from dataclasses import replace

    from usnav.registration.search import SweepRegistration

    mri, sweep, _, truth = small_case
    worker, window, first = _first_from_a_short_window(small_case)
    _tie_on_the_full_window(worker)
    full = worker.options.full
    problem = SweepRegistration(mri, sweep, truth.init_reference_to_mri, full)
    result = problem.run(truth.init_reference_to_mri)
    assert result.only_tied, result.reason
    keep, why = worker._rejudged(problem, result, first, len(window))
    assert keep, why  # as the worker decides it on these frames
    better = dict(result.diagnostics, ambiguity_margin=-2.0 * full.ambiguity_min_gain)
    keep, why = worker._rejudged(problem, replace(result, diagnostics=better), first, len(window))
    assert not keep and "withdrawn" in why


def test_the_worker_refuses_search_axes_it_would_not_apply():
    """The streaming worker searches along the MRI's world axes; a ``search_axes`` set in its
    options used to be silently ignored."""
    from pydantic import ValidationError

    from usnav.registration.options import RegistrationOptions
    from usnav.registration.worker import live_cold_registration_options

    WorkerOptions(full=live_cold_registration_options())  # the default axes are fine
    sweep_axes = live_cold_registration_options().model_copy(update={"search_axes": "sweep"})
    with pytest.raises(ValidationError, match="full.search_axes = 'sweep'.*usnav register"):
        WorkerOptions(full=sweep_axes)
    assert RegistrationOptions(search_axes="sweep").search_axes == "sweep"  # batch keeps it


def _bumped(window, truth, mm=3.0, deg=2.0):
    """The window as the tracker reports it after the patient reference was bumped: the true
    ReferenceToMri becomes D @ T (D: ``deg`` about the tumor, then ``mm``), the images stay."""
    from scipy.spatial.transform import Rotation

    centre = np.asarray(truth.landmarks["tumor_centroid"], float).reshape(3)
    d = np.eye(4)
    d[:3, :3] = Rotation.from_rotvec(np.radians(deg) * np.array([0.6, 0.0, 0.8])).as_matrix()
    d[:3, 3] = centre - d[:3, :3] @ centre + mm * np.array([0.0, 0.8, 0.6])
    t = truth.reference_to_mri
    move = np.linalg.inv(t) @ np.linalg.inv(d) @ t
    return [(image, move @ pose, stamp) for image, pose, stamp in window]


def test_an_estimate_the_newest_frames_contradict_is_marked_until_confirmed(small_case):
    """The patient reference is bumped after an estimate was accepted: a later update finds a
    pose clearly better on the same frames but is not adopted (here: its correction exceeds
    what the warm options allow). The estimate in use stays (margins are still drawn with it)
    but is marked contradicted, so a display shows it UNCERTAIN; the reference put back, an
    update confirms it and the mark goes (session 37)."""
    from usnav.protocol.display import UNCERTAIN, DisplayRules, publisher_state

    truth = small_case[3]
    # an image-based estimate in use (the true pose), as a first update would have left it
    worker, in_use, window = _in_use_at_the_truth(small_case, False, max_warm_correction_mm=1.0)
    after = worker.update(_bumped(window, truth))
    assert after is not None and not after.accepted, after.reason
    assert "implausible correction" in after.reason
    marked = worker.latest_accepted()
    np.testing.assert_array_equal(marked.reference_to_mri, in_use.reference_to_mri)
    assert marked.t_computed == in_use.t_computed  # not a confirmation
    assert worker.stats.contradicted == 1
    assert "scores clearly better on the newest frames" in marked.contradicted
    assert "implausible correction" in marked.contradicted
    state = publisher_state(
        checked=True,
        uncertainty_mm=1.0,
        checked_age_s=1.0,
        rules=DisplayRules(),
        contradicted=marked.contradicted,
    )
    assert state.state == UNCERTAIN and "contradicted by the newest frames" in state.reason
    back = worker.update(window)  # the reference put back: the frames agree with it again
    assert back is not None and not back.accepted
    assert worker.stats.confirmed == 1 and worker.latest_accepted().contradicted == ""


@pytest.mark.parametrize("recover", [False, True])
def test_a_contradicted_estimate_is_corrected_by_a_cold_try_from_it(small_case, recover):
    """The patient reference bumped, the estimate in use (the pose before the bump) is
    contradicted by a warm update that may not move far enough. With
    ``recover_when_contradicted`` the next update is a cold try from it, adopted on the same
    frames: the overlay is corrected (the moved truth, within 1.5 mm), not only demoted; without
    it the warm update is refused again and the wrong estimate stays (session 37)."""

    truth = small_case[3]
    worker, in_use, window = _in_use_at_the_truth(small_case, recover, max_warm_correction_mm=1.0)
    bumped = _bumped(window, truth)
    worker.update(bumped)
    assert worker.latest_accepted().contradicted  # the estimate in use is contradicted
    again = worker.update(bumped)
    assert again is not None
    # the true ReferenceToMri of the bumped window: T @ move⁻¹ (move as _bumped applies it)
    moved = truth.reference_to_mri @ np.linalg.inv(bumped[0][1] @ np.linalg.inv(window[0][1]))
    used = worker.latest_accepted()
    points = np.asarray(truth.landmarks["tumor_centroid"], float).reshape(1, 3)

    def off_mm(reference_to_mri):
        change = reference_to_mri @ np.linalg.inv(moved)
        return float(np.linalg.norm(points @ change[:3, :3].T + change[:3, 3] - points))

    if recover:
        assert again.accepted and "cold try from the contradicted" in again.reason, again.reason
        assert used.sequence == again.sequence and used.contradicted == ""
        assert off_mm(used.reference_to_mri) < 1.5 < off_mm(in_use.reference_to_mri)
        # the reference put back: contradicted again, and the pose left before (in the
        # no-return history) is adopted again
        worker.update(window)
        assert worker.latest_accepted().contradicted
        back = worker.update(window)
        assert back is not None and back.accepted, back.reason
        assert truth.mtre(worker.latest_accepted().reference_to_mri) < 1.5
    else:
        assert not again.accepted and "cold try" not in again.reason
        np.testing.assert_array_equal(used.reference_to_mri, in_use.reference_to_mri)
        assert used.contradicted


def test_a_recovery_correction_within_its_own_uncertainty_is_adopted(small_case):
    """A small bump (1.2 mm, 0.8°): the cold try's correction (~1.4 mm) lies within twice its
    resolution, which the first registration's verdict refuses (``min_correction_to_uncertainty``);
    a recovery, like a warm update, is adopted when clearly better on the same frames."""

    truth = small_case[3]
    worker, _in_use, window = _in_use_at_the_truth(small_case, True, max_warm_correction_mm=0.8)
    bumped = _bumped(window, truth, mm=1.2, deg=0.8)
    worker.update(bumped)
    assert worker.latest_accepted().contradicted
    again = worker.update(bumped)
    assert again is not None and again.accepted, again.reason
    full = worker.options.full  # what the first registration's verdict would refuse:
    floor = full.min_correction_to_uncertainty * full.uncertainty_floor_mm
    assert _correction_mm(again.reason) < floor, again.reason
    assert worker.latest_accepted().sequence == again.sequence


def _in_use_at_the_truth(
    small_case, recover: bool, max_warm_correction_mm: float, **options: object
):
    """A worker whose image-based estimate in use is the truth, its warm search capped at
    ``max_warm_correction_mm`` (so a bump needs more than a warm update can reach), and the
    case's whole sweep as a window of (image, ImageToReference, t)."""
    from usnav.registration.estimate import RegistrationEstimate

    mri, sweep, cal, truth = small_case
    worker = RegistrationWorker(
        mri,
        cal,
        truth.init_reference_to_mri,
        WorkerOptions(
            min_frames=20, min_new_frames=10, recover_when_contradicted=recover, **options
        ),
    )
    worker.options = worker.options.model_copy(
        update={
            "warm": worker.options.warm.model_copy(
                update={"max_correction_mm": max_warm_correction_mm}
            )
        }
    )
    in_use = RegistrationEstimate(truth.reference_to_mri.copy(), uncertainty_mm=1.0, source="image")
    worker._accepted, worker._image_accepted = in_use, True
    window = [(sweep.images[i], sweep.image_to_reference[i], float(i)) for i in range(len(sweep))]
    return worker, in_use, window


def _bump_move(small_case) -> np.ndarray:
    """The ImageToReference change of :func:`_bumped` (after = move @ before)."""
    truth = small_case[3]
    before = [(None, np.eye(4), 0.0)]
    return _bumped(before, truth)[0][1]


def test_a_pose_that_follows_a_moved_reference_is_adopted_when_the_images_choose_it(small_case):
    """The pipeline saw the reference move against the tracker and proposes the estimate in
    use composed with that move; on the frames since the move the images choose it over the
    estimate in use (session 38): the registration follows a bump at once, with no search."""
    truth = small_case[3]
    worker, in_use, window = _in_use_at_the_truth(small_case, False, 1.0, test_moved_reference=True)
    move = _bump_move(small_case)
    # Reference after -> before, as inv(ReferenceToTracker before) @ ReferenceToTracker after
    assert worker.propose_moved_reference(np.linalg.inv(move), 0.0, 3.2)
    estimate = worker.update(_bumped(window, truth))
    assert estimate is not None and estimate.accepted, estimate and estimate.reason
    assert "the patient reference moved 3.2 mm" in estimate.reason
    adopted = worker.latest_accepted()
    assert adopted.sequence == estimate.sequence and adopted.checked_since_t == 0.0
    after = truth.reference_to_mri @ np.linalg.inv(move)  # the truth once the reference moved
    np.testing.assert_allclose(adopted.reference_to_mri, after, atol=1e-9)
    assert adopted.uncertainty_mm == in_use.uncertainty_mm
    assert worker.stats.moved_adopted == 1


def test_a_pose_that_follows_a_moved_camera_is_not_adopted(small_case):
    """The same proposal when the reference and the probe moved together (the camera moved,
    or the patient with the reference): the frames still agree with the estimate in use, so
    the proposal is dropped and the estimate stays."""
    worker, in_use, window = _in_use_at_the_truth(small_case, False, 1.0, test_moved_reference=True)
    assert worker.propose_moved_reference(np.linalg.inv(_bump_move(small_case)), 0.0, 3.2)
    worker.update(window)
    assert worker.stats.moved_adopted == 0 and worker.stats.moved_dropped == 1
    np.testing.assert_array_equal(
        worker.latest_accepted().reference_to_mri, in_use.reference_to_mri
    )


def test_a_moved_reference_is_not_taken_up_unless_asked_or_checked(small_case):
    worker, _, _ = _in_use_at_the_truth(small_case, False, 1.0)  # the option off
    assert not worker.propose_moved_reference(np.eye(4), 0.0, 3.0)
    on, _, _ = _in_use_at_the_truth(small_case, False, 1.0, test_moved_reference=True)
    assert not on.propose_moved_reference(np.diag([2.0, 1, 1, 1]), 0.0, 3.0)  # not rigid
    mri, _, cal, truth = small_case
    fresh = RegistrationWorker(  # the navigation registration in use: nothing to follow
        mri, cal, truth.init_reference_to_mri, WorkerOptions(test_moved_reference=True)
    )
    assert not fresh.propose_moved_reference(np.eye(4), 0.0, 3.0)
