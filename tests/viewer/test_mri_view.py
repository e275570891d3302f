"""The MRI pane, the locators, the orientation aids and the legend, from real protocol messages
(headless pixels)."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest
from _display_tools import mri_for
from scipy import ndimage
from test_render import _Capture, _display_mask, _messages

from usnav.client import parse
from usnav.frames import TrackedFrame
from usnav.protocol import wire as p
from usnav.registration.estimate import RegistrationEstimate
from usnav.viewer.mri import direction_letter
from usnav.viewer.render import (
    BANNER_AMBER,
    PLANE_COLOUR,
    _registration_note,
    render_with_layout,
)
from usnav.viewer.state import LIVE, STALE, ViewModel


def _mri_state(case, margins, messages=None):
    model = ViewModel("tcp://127.0.0.1:5556", mri=mri_for(case))
    now = time.time()
    return model.update(
        messages or _messages(case, margins), connected=True, last_message_s=now, now=now
    )


@pytest.fixture(scope="module")
def with_mri(viewer_case, viewer_margins):
    state = _mri_state(viewer_case, viewer_margins)
    return (state, *render_with_layout(state))


def test_mri_pane_shows_the_same_plane_under_the_same_overlay(with_mri, viewer_margins) -> None:
    state, picture, layout, verdict = with_mri
    assert verdict.word == LIVE and layout.mri_box is not None
    assert picture.shape == (720, 2 * 720 + 400, 3)
    x0, y0, w, h = layout.image_box
    mx, my, mw, mh = layout.mri_box
    assert (mw, mh) == (w, h) and my == y0 and mx == x0 + 720
    # the test MRI is bright where the label says tumor, brighter in the cyst: resliced through
    # the frame's plane, the bright regions must lie under the overlay's solid and cyst masks
    plane = state.mri_plane
    assert plane is not None
    labels = viewer_margins.label_image
    small = labels[:: labels.shape[0] // plane.shape[0], :: labels.shape[1] // plane.shape[1]]
    solid = ndimage.binary_erosion(small == 1, iterations=2)
    cyst = ndimage.binary_erosion(small == 2, iterations=2)
    background = ndimage.binary_erosion(small == 0, iterations=2)
    assert plane[cyst].mean() > plane[solid].mean() + 30 > plane[background].mean() + 60
    # and on the canvas: the MRI pane's solid region is green-tinted like the ultrasound's
    mask = _display_mask(layout, labels, 1, picture.shape)
    mri_mask = np.roll(mask, mx - x0, axis=1)
    b, g, r = picture[mri_mask].astype(float).mean(axis=0)
    assert g - (r + b) / 2 > 15


def test_locators_show_the_image_plane_and_the_distance(with_mri, viewer_case) -> None:
    _, picture, layout, _ = with_mri
    assert set(layout.locator_boxes) == {"sagittal", "axial"}
    for name, (x, y, w, h) in layout.locator_boxes.items():
        box = picture[y : y + h, x : x + w].astype(int)
        plane = np.all(np.abs(box - np.array(PLANE_COLOUR)) < 40, axis=2)
        assert plane.sum() > 20, f"no image plane drawn on the {name} locator"
        tumor = (box[..., 1] > 180) & (box[..., 0] < 120) & (box[..., 2] < 120)
        assert tumor.sum() > 5, f"no tumor outline on the {name} locator"
    assert "image plane (locators)" in layout.legend


def test_distance_from_the_image_to_the_tumor_matches_a_distance_transform(viewer_case) -> None:
    """Checked against scipy's Euclidean distance transform of the label, sampled over the
    image: an independent way to the same distance (to within a voxel)."""
    context = mri_for(viewer_case)
    label = viewer_case.label
    outside = np.asarray(label.data) == 0
    spacing = label.spacing_mm
    edt = ndimage.distance_transform_edt(outside, sampling=spacing)
    rows, cols = viewer_case.image.shape
    where = context.plane_to_tumor(viewer_case.image_to_mri, (rows, cols))
    assert where.cuts and where.distance_mm == 0.0
    m = viewer_case.image_to_mri.copy()
    normal = np.cross(m[:3, 0], m[:3, 1])
    normal /= np.linalg.norm(normal)
    to_voxel = np.linalg.inv(label.affine)
    for offset_mm in (8.0, 12.0):  # the tumor spans ±6 mm about the plane; the grid ±20
        moved = m.copy()
        moved[:3, 3] += offset_mm * normal
        where = context.plane_to_tumor(moved, (rows, cols))
        assert not where.cuts
        rr, cc = np.mgrid[0:rows:4, 0:cols:4]
        ras = cc[..., None] * moved[:3, 0] + rr[..., None] * moved[:3, 1] + moved[:3, 3]
        ijk = ras.reshape(-1, 3) @ to_voxel[:3, :3].T + to_voxel[:3, 3]
        inside = np.all((ijk >= 0) & (ijk <= np.array(label.shape) - 1), axis=1)
        assert inside.any(), "the test plane left the label grid"
        sampled = ndimage.map_coordinates(edt, ijk[inside].T, order=1)
        # the EDT measures to the nearest tumor voxel centre: within a voxel of each other
        assert where.distance_mm == pytest.approx(sampled.min(), abs=float(np.max(spacing)))


def test_depth_ruler_ticks_every_10_mm_from_the_probe_face(with_mri) -> None:
    _, picture, layout, _ = with_mri
    x0, y0, w, h = layout.image_box
    x = x0 + w - 8
    for k in (1, 2, 3):
        y = y0 + round(10 * k * layout.px_per_mm)
        if y >= y0 + h:
            break
        tick = picture[y, x - 11 : x + 1].astype(int)
        assert (tick.min(axis=1) > 200).all(), f"no {10 * k} mm tick"
        # between ticks (at 2.5 mm) the ruler has no tick
        between = picture[y - round(2.5 * layout.px_per_mm), x - 11 : x - 2].astype(int)
        assert (between.min(axis=1) > 200).sum() <= 1


def test_patient_sides_come_from_the_image_to_mri_matrix() -> None:
    assert direction_letter(np.array([1.0, 0.2, 0.0])) == "R"
    assert direction_letter(np.array([-1.0, 0.2, 0.0])) == "L"
    assert direction_letter(np.array([0.1, -0.9, 0.3])) == "P"
    assert direction_letter(np.array([0.1, 0.2, 0.9])) == "S"
    assert direction_letter(np.zeros(3)) == ""


def test_legend_lists_only_what_is_in_view(with_mri, viewer_case) -> None:
    from usnav.margins import MarginEstimator

    _, _, layout, _ = with_mri
    assert layout.legend[:3] == ("tumor (MRI)", "cyst (MRI)", "US differs from MRI")
    assert "tool tip" not in layout.legend
    away = viewer_case.image_to_mri.copy()
    away[:3, 3] += 60.0
    margins = MarginEstimator(viewer_case.label, warm_up=False).estimate(
        viewer_case.image, away, None
    )
    _, layout_away, _ = render_with_layout(_mri_state(viewer_case, margins))
    assert "tumor (MRI)" not in layout_away.legend and "cyst (MRI)" not in layout_away.legend
    assert "US differs from MRI" not in layout_away.legend


def _with_update(case, margins, *, accepted_age_s: float, update_age_s: float):
    """Margins under an accepted registration, then a rejected update of the given age."""
    capture = _Capture()
    now = time.time()
    try:
        accepted = RegistrationEstimate(
            np.eye(4),
            quality=0.9,
            accepted=True,
            t_computed=now - accepted_age_s,
            source="streaming window",
        )
        rejected = RegistrationEstimate(
            np.eye(4), quality=0.3, accepted=False, t_computed=now - update_age_s
        )
        frame = TrackedFrame(case.image, frame_number=margins.frame_number)
        capture.publish_frame(frame, case.image_to_mri, accepted)
        capture.publish_margins(frame, margins, accepted)
        capture.publish_registration(rejected)
    finally:
        capture.close()
    messages = {}
    for parts in capture.frames:
        message = parse(p.decode(parts), t_arrived=time.time())
        messages[message.header.topic] = message
    model = ViewModel("a")
    t = time.time()
    return model.update(messages, connected=True, last_message_s=t, now=t)


def test_a_rejected_update_that_confirmed_the_registration_is_not_a_warning(
    viewer_case, viewer_margins
) -> None:
    # the worker restarted the accepted estimate's age with this update: it confirmed it
    confirmed = _with_update(viewer_case, viewer_margins, accepted_age_s=0.2, update_age_s=0.4)
    text, colour = _registration_note(confirmed)
    assert text == "latest update confirmed it" and colour != BANNER_AMBER
    # an update newer than the accepted estimate that did not refresh it: a real rejection
    rejected = _with_update(viewer_case, viewer_margins, accepted_age_s=6.0, update_age_s=0.3)
    text, colour = _registration_note(rejected)
    assert text.startswith("latest update rejected")
    # a fact, not a warning: no amber under a green LIVE (the state word judges trust)
    assert colour != BANNER_AMBER


def test_a_plane_that_cannot_be_placed_shows_no_mri(viewer_case) -> None:
    """A frame without tracking has no ImageToMri; a NaN one (the pipeline's mark for it,
    or another publisher's) made the compiled reslice read out of bounds and killed
    ``usnav view --mri`` with a segmentation fault (session 36). It shows no MRI."""
    context = mri_for(viewer_case)
    shape = viewer_case.image.shape
    assert context.reslice(viewer_case.image_to_mri, shape).any()
    infinite = np.array(viewer_case.image_to_mri, np.float64)
    infinite[0, 1] = np.inf
    for bad in (np.full((4, 4), np.nan), infinite):
        plane = context.reslice(bad, shape)
        assert plane.shape == shape and not plane.any()


def test_reslice_matches_scipy_trilinear(viewer_case) -> None:
    """The display's reslice (the registration's compiled kernel) against scipy's
    map_coordinates, order 1, on the same pixel centres, inside the volume."""
    context = mri_for(viewer_case)
    rows, cols = viewer_case.image.shape
    for shape, matrix in (
        ((rows, cols), viewer_case.image_to_mri),
        ((3 * rows, 2 * cols), viewer_case.image_to_mri @ np.diag([0.5, 0.4, 1.0, 1.0])),
    ):
        plane = context.reslice(matrix, shape)
        step = int(np.ceil(max(shape) / 320))
        assert plane.shape == tuple(int(np.ceil(n / step)) for n in shape)
        rr, cc = np.mgrid[0 : plane.shape[0], 0 : plane.shape[1]]
        px = np.stack([(cc + 0.5) * step - 0.5, (rr + 0.5) * step - 0.5], axis=-1)
        ras = px[..., :1] * matrix[:3, 0] + px[..., 1:] * matrix[:3, 1] + matrix[:3, 3]
        reference = context.sample(ras)  # scipy.ndimage.map_coordinates, order 1
        to_voxel = np.linalg.inv(context.mri.affine)
        ijk = ras @ to_voxel[:3, :3].T + to_voxel[:3, 3]
        inside = np.all((ijk >= 1) & (ijk <= np.array(context.mri.shape) - 2), axis=-1)
        assert inside.sum() > 1000
        difference = np.abs(plane[inside].astype(int) - reference[inside].astype(int))
        assert difference.max() <= 1


def test_a_stale_overlay_is_grey_in_the_legend_and_absence_is_no_claim(
    viewer_case, viewer_margins
) -> None:
    """STALE: the outline is drawn grey, so the legend shows grey (it showed the green and
    blue swatches); and "no tumor in view" is white only when LIVE — it was printed in full
    white under a red STALE banner."""
    from usnav.margins import MarginEstimator

    model = ViewModel("tcp://127.0.0.1:5556", mri=mri_for(viewer_case))
    now = time.time()
    stale = model.update(
        _messages(viewer_case, viewer_margins), connected=False, last_message_s=now, now=now
    )
    _, layout, verdict = render_with_layout(stale)
    assert verdict.word == STALE
    assert "tumor (MRI), stale" in layout.legend
    assert "tumor (MRI)" not in layout.legend and "cyst (MRI)" not in layout.legend

    # 12 mm along the image's normal: off the tumor, inside the MRI (a plane outside the
    # display's MRI is UNCERTAIN: test_a_plane_outside_the_displays_mri_is_uncertain_...)
    away = viewer_case.image_to_mri.copy()
    normal = np.cross(away[:3, 0], away[:3, 1])
    away[:3, 3] += 12.0 * normal / np.linalg.norm(normal)
    absent = MarginEstimator(viewer_case.label, warm_up=False).estimate(
        viewer_case.image, away, None
    )
    assert not absent.in_view

    def white_and_dim(connected: bool) -> tuple[int, int]:
        model = ViewModel("tcp://127.0.0.1:5556", mri=mri_for(viewer_case))
        t = time.time()
        state = model.update(
            _messages(viewer_case, absent), connected=connected, last_message_s=t, now=t
        )
        picture, layout, _ = render_with_layout(state)
        x0, y0, w, h = layout.image_box
        corner = picture[y0 + h - 40 : y0 + h - 4, x0 + w // 2 : x0 + w - 30].astype(int)
        white = int((corner.min(axis=2) > 225).sum())
        dim = int(((corner.min(axis=2) >= 150) & (corner.max(axis=2) <= 170)).sum())
        return white, dim

    live_white, _ = white_and_dim(True)
    stale_white, stale_dim = white_and_dim(False)
    assert live_white > 30 and stale_white == 0 and stale_dim > 30


def test_the_latest_update_stays_said_through_the_re_sent_registration(
    viewer_case, viewer_margins
) -> None:
    """usnav run re-sends the estimate in use every 0.25 s; the note on the latest update
    was read from the newest registration message, so it vanished at each re-send and the
    line blinked at 4 Hz (session 43). Over a real socket: a rejected update, then re-sends
    of the estimate in use: the note stays."""
    from waiting import repeat_until

    from usnav.client import Subscriber
    from usnav.publish import Publisher

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    probe.close()
    now = time.time()
    accepted = RegistrationEstimate(
        np.eye(4), quality=0.9, accepted=True, t_computed=now - 6.0, source="image"
    )
    rejected = RegistrationEstimate(np.eye(4), quality=0.3, accepted=False, t_computed=now)
    frame = TrackedFrame(viewer_case.image, frame_number=viewer_margins.frame_number)
    model = ViewModel(address)
    with Publisher(address) as publisher, Subscriber(address) as sub:

        def turn():
            return model.update(
                sub.receive_latest(timeout_s=0.05),
                connected=sub.connected,
                last_message_s=sub.last_message_time,
            )

        def publish_update() -> None:
            publisher.publish_frame(frame, viewer_case.image_to_mri, accepted)
            publisher.publish_margins(frame, viewer_margins, accepted)
            publisher.publish_registration(rejected)

        assert repeat_until(
            publish_update, lambda: turn().registration_update is not None, 30, every_s=0.1
        )
        said = _registration_note(model.state)
        assert said is not None and said[0].startswith("latest update rejected")
        assert repeat_until(
            lambda: publisher.publish_registration(accepted, in_use=True, resent=True),
            lambda: (r := turn().registration) is not None and r.resent,
            30,
            every_s=0.1,
        )
    assert _registration_note(model.state) == said


def test_an_mri_that_is_not_the_runs_is_not_drawn(viewer_case, viewer_margins) -> None:
    """``usnav view --mri`` with another file than the run's (another patient, another
    series): its plane was drawn as "MRI, same plane" under the run's overlay, and its label
    placed the tumor on the locators (session 43). Over a real socket: the run's digests in
    its status; a display whose MRI differs draws neither, and says why."""
    from waiting import repeat_until

    from usnav.client import Subscriber
    from usnav.publish import Publisher

    context = mri_for(viewer_case)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    probe.close()
    estimate = RegistrationEstimate(
        np.eye(4), quality=0.9, uncertainty_mm=1.0, source="image", t_computed=time.time()
    )
    frame = TrackedFrame(viewer_case.image, frame_number=viewer_margins.frame_number)
    pictures = {}
    for run_mri in (context.digest, "0123456789abcdef"):
        model = ViewModel(address, mri=context)
        status = {"state": "streaming", "mri_digest": run_mri, "label_digest": context.label_digest}
        with Publisher(address) as publisher, Subscriber(address) as sub:

            def publish(publisher=publisher, status=status) -> None:
                publisher.publish_status(status)
                publisher.publish_frame(frame, viewer_case.image_to_mri, estimate)
                publisher.publish_margins(frame, viewer_margins, estimate)

            def shown(sub=sub, model=model, run_mri=run_mri) -> bool:
                s = model.update(
                    sub.receive_latest(timeout_s=0.05),
                    connected=sub.connected,
                    last_message_s=sub.last_message_time,
                )
                return s.margin is not None and s.status.get("mri_digest") == run_mri

            assert repeat_until(publish, shown, 30, every_s=0.1)
        pictures[run_mri] = render_with_layout(model.state)
    for run_mri, (picture, layout, _verdict) in pictures.items():
        x0, y0, w, h = layout.mri_box
        pane = picture[y0 : y0 + h, x0 : x0 + w].astype(int)
        grey = (np.ptp(pane, axis=-1) < 8) & (pane[..., 0] > 3)  # MRI voxels drawn
        if run_mri == context.digest:
            assert grey.mean() > 0.2 and layout.locator_boxes
            assert not any("NOT the run's" in t for t in layout.panel_text)
        else:
            assert grey.mean() < 0.01 and not layout.locator_boxes
            assert "MRI NOT the run's: check --mri/--label" in layout.panel_text


def test_a_plane_outside_the_mri_is_said_to_be_not_drawn_as_the_same_plane(
    viewer_case, with_mri
) -> None:
    """Another patient's sweep, or a registration far off, puts the frame's plane outside the
    MRI: its reslice is black, and the pane said "MRI, same plane" over it (session 43). It
    says the plane is outside the MRI."""
    from types import SimpleNamespace

    from usnav.margins import MarginEstimator

    far = np.array(viewer_case.image_to_mri, np.float64)
    far[:3, 3] += (0.0, 0.0, 400.0)
    margins = MarginEstimator(viewer_case.label).estimate(viewer_case.image, far, None)
    case = SimpleNamespace(image=viewer_case.image, image_to_mri=far)
    state = _mri_state(viewer_case, margins, _messages(case, margins))
    picture, layout, _ = render_with_layout(state)
    assert state.mri_outside and not state.mri_plane.any()
    x, y, w, h = layout.mri_box
    pane = picture[y : y + h, x : x + w]
    assert np.all(pane == BANNER_AMBER, axis=-1).sum() > 50  # the words, in amber
    inside_state, inside_picture = with_mri[0], with_mri[1]
    assert not inside_state.mri_outside
    x, y, w, h = with_mri[2].mri_box
    assert np.all(inside_picture[y : y + h, x : x + w] == BANNER_AMBER, axis=-1).sum() == 0


def test_a_plane_outside_the_displays_mri_is_uncertain_when_the_publisher_did_not_say(
    viewer_case,
) -> None:
    """A publisher before session 43 sends a frame lying entirely outside the MRI LIVE ("no
    tumor in view"); the display, holding the run's MRI, only labelled its pane. Its own
    verdict now turns UNCERTAIN, saying why: only downgraded — a STALE frame stays STALE, and
    a display whose MRI is not the run's (its extent says nothing of the run's) changes
    nothing."""
    from types import SimpleNamespace

    from usnav.margins import MarginEstimator
    from usnav.protocol.display import OUTSIDE_MRI_PREFIX
    from usnav.viewer.state import UNCERTAIN, ViewerOptions, assess

    far = np.array(viewer_case.image_to_mri, np.float64)
    far[:3, 3] += (0.0, 0.0, 400.0)
    margins = MarginEstimator(viewer_case.label, warm_up=False).estimate(
        viewer_case.image, far, None
    )
    assert not margins.in_view
    case = SimpleNamespace(image=viewer_case.image, image_to_mri=far)
    state = _mri_state(viewer_case, margins, _messages(case, margins))
    assert state.margin.header.display_state == LIVE and state.mri_outside
    picture, layout, verdict = render_with_layout(state)
    assert verdict.word == UNCERTAIN and verdict.reason.startswith(OUTSIDE_MRI_PREFIX)
    assert "this display's --mri" in verdict.reason
    assert "no tumor in view - uncertain" in layout.panel_text
    assert np.all(np.abs(picture[5, 5].astype(int) - np.array(BANNER_AMBER)) < 30)
    # STALE stays STALE
    stale = _mri_state(viewer_case, margins, _messages(case, margins, stale=True))
    assert stale.mri_outside and assess(stale, ViewerOptions()).word == STALE
    # the display's MRI is not the run's: its extent is not the run's MRI's
    state.mri_mismatch = "MRI NOT the run's: check --mri/--label"
    state.worse_seen = {}
    assert assess(state, ViewerOptions()).word == LIVE
    # inside the MRI: LIVE as published
    from dataclasses import replace

    placed = replace(margins, image_to_mri=viewer_case.image_to_mri)
    inside = _mri_state(viewer_case, placed, _messages(viewer_case, placed))
    assert not inside.mri_outside and assess(inside, ViewerOptions()).word == LIVE
