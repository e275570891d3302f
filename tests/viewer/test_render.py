"""The renderer's pixels and the display verdicts, from real protocol messages (no window)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from usnav.client import parse
from usnav.frames import TrackedFrame
from usnav.protocol import wire as p
from usnav.publish.publisher import Publisher
from usnav.registration.estimate import RegistrationEstimate
from usnav.viewer.render import (
    BANNER_AMBER,
    BANNER_RED,
    BANNER_WAITING,
    render_with_layout,
)
from usnav.viewer.state import (
    LIVE,
    STALE,
    UNCERTAIN,
    WAITING,
    ViewerOptions,
    ViewModel,
    ViewState,
    assess,
)


class _Capture(Publisher):
    """A real Publisher whose encoded frames are also kept (to build states without waiting)."""

    def __init__(self) -> None:
        super().__init__("tcp://127.0.0.1:*")
        self.frames: list[list[bytes]] = []

    def _send(self, topic, header, buffers):  # type: ignore[override]
        ok = super()._send(topic, header, buffers)
        self.frames.append([bytes(x) for x in p.encode(topic, header, buffers)])
        return ok


def _messages(
    case,
    margins,
    *,
    uncertainty_mm=1.0,
    source="image",
    age_s=1.0,
    stale=False,
    stream=None,
    t_arrived=None,
    repeat=None,
):
    """A real publisher's frame, margin and registration messages, parsed as arrived at
    ``t_arrived`` (host time; now when None); ``repeat`` (``repeat_of``, ``image_age_s``)
    marks the frame's image as a repeat."""
    capture = _Capture()
    if stream is not None:  # one publisher instance across calls (a new one resets the view)
        capture.stream = stream
    try:
        reg = RegistrationEstimate(
            np.eye(4),
            quality=0.9,
            uncertainty_mm=uncertainty_mm,
            source=source,
            t_computed=time.time() - age_s,
        )
        frame = TrackedFrame(case.image, frame_number=margins.frame_number)
        arrival = {} if repeat is None else {"repeat_of": repeat[0], "image_age_s": repeat[1]}
        capture.publish_frame(frame, case.image_to_mri, reg, **arrival)
        capture.publish_margins(
            frame,
            margins,
            reg,
            stale=stale,
            stale_reason="probe link lost" if stale else "",
            **arrival,
        )
        capture.publish_registration(reg)
    finally:
        capture.close()
    now = time.time() if t_arrived is None else t_arrived
    out = {}
    for parts in capture.frames:
        message = parse(p.decode(parts), t_arrived=now)
        out[message.header.topic] = message
    return out


def _state(case, margins, *, connected=True, silent_s=0.0, **kwargs) -> ViewState:
    model = ViewModel("tcp://127.0.0.1:5556")
    now = time.time()
    return model.update(
        _messages(case, margins, **kwargs),
        connected=connected,
        last_message_s=now - silent_s,
        now=now,
    )


def _display_mask(layout, label_image: np.ndarray, value: int, shape) -> np.ndarray:
    """Canvas pixels whose frame pixel has ``value`` (eroded, away from outlines)."""
    from scipy import ndimage

    x0, y0, w, h = layout.image_box
    rows, cols = label_image.shape
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.clip(((yy + 0.5) * rows / h - 0.5).round().astype(int), 0, rows - 1)
    c = np.clip(((xx + 0.5) * cols / w - 0.5).round().astype(int), 0, cols - 1)
    inside = ndimage.binary_erosion(label_image == value, iterations=4)[r, c]
    mask = np.zeros(shape[:2], bool)
    mask[y0 : y0 + h, x0 : x0 + w] = inside
    return mask


def _tint(picture: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean (B, G, R) over a mask."""
    return picture[mask].astype(float).mean(axis=0)


@pytest.fixture(scope="module")
def live(viewer_case, viewer_margins):
    state = _state(viewer_case, viewer_margins)
    return (state, *render_with_layout(state))


def test_live_view_fills_and_outlines_tumor_and_cyst(live, viewer_margins) -> None:
    _, picture, layout, verdict = live
    assert verdict.word == LIVE and layout.banner_box[3] == 0
    assert picture.shape == (720, 1120, 3) and picture.dtype == np.uint8
    solid = _display_mask(layout, viewer_margins.label_image, 1, picture.shape)
    cyst = _display_mask(layout, viewer_margins.label_image, 2, picture.shape)
    assert solid.sum() > 500 and cyst.sum() > 200
    b, g, r = _tint(picture, solid)
    assert g - (r + b) / 2 > 15  # solid tumor: green fill
    b, g, r = _tint(picture, cyst)
    assert b - r > 25  # cyst: blue fill
    # away from the tumor the ultrasound stays grey
    background = np.zeros(picture.shape[:2], bool)
    background[60:160, 20:200] = True
    b, g, r = _tint(picture, background)
    assert abs(g - r) < 3 and abs(b - r) < 3
    # the top of the image is not covered by a banner
    top = picture[:40, 100:500].astype(int)
    assert np.abs(top[..., 2] - top[..., 0]).mean() < 3


def test_ultrasound_supported_margin_is_drawn_where_it_differs(live) -> None:
    _, picture, layout, _ = live
    x0, y0, w, h = layout.image_box
    view = picture[y0 : y0 + h, x0 : x0 + w].astype(int)
    yellow = (view[..., 2] > 200) & (view[..., 1] > 190) & (view[..., 0] < 90)
    assert yellow.sum() > 100


def test_scale_bar_has_the_right_length(live, viewer_case) -> None:
    _, picture, layout, _ = live
    bx0, by, bx1, length_mm = layout.scale_bar
    # 256 px of 0.15 mm fill the 720 px image area
    assert layout.px_per_mm == pytest.approx(720 / (256 * 0.15))
    assert bx1 - bx0 == round(length_mm * layout.px_per_mm)
    assert length_mm in (1, 2, 5, 10, 20)
    bar = picture[by, bx0 + 6 : bx1 - 6]
    assert (bar >= 240).all()
    # it sits inside the image, bottom-left
    x0, y0, w, h = layout.image_box
    assert x0 <= bx0 < x0 + w / 2 and y0 + h * 0.8 < by < y0 + h


def test_stale_data_red_banner_and_no_confident_fill(viewer_case, viewer_margins) -> None:
    state = _state(viewer_case, viewer_margins, stale=True)
    picture, layout, verdict = render_with_layout(state)
    assert verdict.word == STALE and "probe link lost" in verdict.reason
    x0, y0, w, h = layout.banner_box
    assert h > 0
    banner = picture[y0 + 2 : y0 + 6, x0 + 300 : x0 + w - 4].reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(banner, BANNER_RED, atol=2)
    solid = _display_mask(layout, viewer_margins.label_image, 1, picture.shape)
    b, g, r = _tint(picture, solid)
    assert abs(g - (r + b) / 2) < 4  # not filled
    view = picture[layout.image_box[1] :, : layout.image_box[2]].astype(int)
    yellow = (view[..., 2] > 200) & (view[..., 1] > 190) & (view[..., 0] < 90)
    assert yellow.sum() == 0  # no ultrasound claims from stale data


def test_connection_lost_is_stale(viewer_case, viewer_margins) -> None:
    state = _state(viewer_case, viewer_margins, connected=False)
    assert assess(state, ViewerOptions()).word == STALE
    state = _state(viewer_case, viewer_margins, silent_s=5.0)
    picture, _layout, verdict = render_with_layout(state)
    assert verdict.word == STALE and "no data" in verdict.reason
    banner = picture[2:6, 300:600].reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(banner, BANNER_RED, atol=2)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"uncertainty_mm": 3.0}, "±3.0 mm (95 %) exceeds 2 mm"),
        ({"source": "init"}, "not yet checked on the ultrasound"),
        ({"uncertainty_mm": float("nan")}, "uncertainty unknown"),
        ({"age_s": 120.0}, "not re-checked on the images for 120 s"),
    ],
)
def test_uncertain_banner(viewer_case, viewer_margins, live, kwargs, reason) -> None:
    state = _state(viewer_case, viewer_margins, **kwargs)
    picture, layout, verdict = render_with_layout(state)
    assert verdict.word == UNCERTAIN and reason in verdict.reason
    banner = picture[2:6, 300:600].reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(banner, BANNER_AMBER, atol=2)
    # the fill is still there but fainter than when live
    solid = _display_mask(layout, viewer_margins.label_image, 1, picture.shape)
    b, g, r = _tint(picture, solid)
    lb, lg, lr = _tint(live[1], solid)
    assert 3 < g - (r + b) / 2 < 0.75 * (lg - (lr + lb) / 2)


def test_waiting_before_any_publisher() -> None:
    state = ViewState(address="tcp://127.0.0.1:5999")
    picture, layout, verdict = render_with_layout(state)
    assert verdict.word == WAITING
    assert verdict.reason == "waiting for usnav on tcp://127.0.0.1:5999"
    banner = picture[2:6, 450:600].reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(banner, BANNER_WAITING, atol=2)
    assert layout.image_box[2] == 0 and layout.scale_bar is None


def test_no_tumor_in_view_draws_no_overlay(viewer_case) -> None:
    from usnav.margins import MarginEstimator

    away = viewer_case.image_to_mri.copy()
    away[:3, 3] += 60.0
    margins = MarginEstimator(viewer_case.label, warm_up=False).estimate(
        viewer_case.image, away, None
    )
    state = _state(viewer_case, margins)
    picture, layout, _verdict = render_with_layout(state)
    x0, y0, w, h = layout.image_box
    view = picture[y0 : y0 + h - 60, x0 : x0 + w].astype(int)  # above scale bar and label
    assert np.abs(view[..., 1] - view[..., 2]).max() <= 2  # grey: nothing coloured


def test_verdict_rules(viewer_case, viewer_margins) -> None:
    options = ViewerOptions(lost_after_s=1.0)
    state = ViewState(address="a")
    assert assess(state, options).word == WAITING
    state.last_message_s = state.now
    state.connected = True
    assert assess(state, options).word == UNCERTAIN  # data but no registration yet
    live = _state(viewer_case, viewer_margins)
    assert assess(live, options).word == LIVE
    # status still flowing, but the newest margins are 3 s old: the pipeline stalled
    live.now += 3.0
    live.last_message_s = live.now
    verdict = assess(live, options)
    assert verdict.word == STALE and "newest data 3.0 s old" in verdict.reason
    # the display can only make the publisher's state worse, never better
    unchecked = _state(viewer_case, viewer_margins, source="init")
    assert assess(unchecked, ViewerOptions(lost_after_s=100.0)).word == UNCERTAIN


def test_render_is_pure(live) -> None:
    state, picture, _, _ = live
    again, _, _ = render_with_layout(state)
    np.testing.assert_array_equal(picture, again)


def test_margins_marked_stale_by_the_pipeline_show_stale(viewer_case, viewer_margins) -> None:
    options = ViewerOptions(lost_after_s=1.0)
    state = _state(viewer_case, viewer_margins, stale=True)
    assert state.margin is not None and state.margin.header.stale
    verdict = assess(state, options)
    assert verdict.word == STALE and verdict.reason == "probe link lost"
    # and a pipeline whose probe has no signal makes the display stale even with fresh data
    fresh = _state(viewer_case, viewer_margins)
    fresh.status = {"state": "no-signal", "peer": "127.0.0.1:18944"}
    verdict = assess(fresh, options)
    assert verdict.word == STALE and "no signal from 127.0.0.1:18944" in verdict.reason
    # protocol.md: anything but "streaming" means the overlay is not live (only no-signal,
    # connecting and closed did until session 43)
    for state in ("idle", "stopped", "finished", "listening", "paused-by-a-newer-usnav"):
        fresh.status = {"state": state, "peer": "127.0.0.1:18944"}
        assert assess(fresh, options).word == STALE, state
    for status in ({"state": "streaming"}, {}):  # streaming, or a publisher that says nothing
        fresh.status = status
        assert assess(fresh, options).word == LIVE, status


def test_a_margin_is_drawn_over_its_own_frame_only(viewer_case, viewer_margins) -> None:
    # the pipeline publishes each margin just before its frame, so a display often holds a
    # margin whose frame has not arrived: it keeps the matched pair until it does
    from dataclasses import replace

    def messages(number):
        return _messages(viewer_case, replace(viewer_margins, frame_number=number), stream=7)

    model = ViewModel("tcp://127.0.0.1:5556")
    now = time.time()

    def update(msgs, t):
        return model.update(msgs, connected=True, last_message_s=t, now=t)

    s = update(messages(10), now)
    assert (s.margin.header.frame_number, s.image_frame_number) == (10, 10)
    eleven = messages(11)
    s = update({"margin": eleven["margin"]}, now + 0.01)  # its frame still on the wire
    assert (s.margin.header.frame_number, s.image_frame_number) == (10, 10)
    s = update({"frame": eleven["frame"]}, now + 0.02)
    assert (s.margin.header.frame_number, s.image_frame_number) == (11, 11)
    # a margin whose frame was lost is not held back for long: drawn over the newest frame
    twelve = messages(12)["margin"]
    s = update({"margin": twelve}, now + 0.03)
    assert s.margin.header.frame_number == 11
    s = update({}, twelve.header.t_arrived + ViewModel.PAIRING_WAIT_S)
    assert (s.margin.header.frame_number, s.image_frame_number) == (12, 11)
    # without a frame feed a margin is shown at once
    bare = ViewModel("tcp://127.0.0.1:5556")
    s = bare.update({"margin": messages(13)["margin"]}, connected=True, last_message_s=now, now=now)
    assert s.margin.header.frame_number == 13


def test_a_flagged_calibration_is_said_in_the_panel(viewer_case, viewer_margins, live) -> None:
    """The status of a run whose calibration usnav calibrate flagged: the panel says so in
    amber (the banner may name another reason for not being LIVE); without it, nothing."""
    assert not any("FLAGGED" in text for text in live[2].panel_text)
    assert any(text.startswith("REGISTRATION") for text in live[2].panel_text)
    state = _state(viewer_case, viewer_margins, uncertainty_mm=3.0)
    state.status = {"calibration_flagged": "probe.toml is a FLAGGED calibration: ..."}
    picture, layout, _ = render_with_layout(state)
    said = [text for text in layout.panel_text if "FLAGGED" in text]
    assert said == ["calibration FLAGGED: see usnav run's log"]
    panel = picture[:, layout.image_box[2] :].reshape(-1, 3).astype(int)
    amber = np.all(np.abs(panel - np.array(BANNER_AMBER)) < 40, axis=1)
    plain, _, _ = render_with_layout(_state(viewer_case, viewer_margins, uncertainty_mm=3.0))
    plain_panel = plain[:, layout.image_box[2] :].reshape(-1, 3).astype(int)
    assert amber.sum() > np.all(np.abs(plain_panel - np.array(BANNER_AMBER)) < 40, axis=1).sum()


def test_a_frame_not_placed_says_the_tumor_is_unknown_not_absent(viewer_case) -> None:
    """Tracking lost: the pipeline publishes the frame's margin with no ImageToMri and
    ``in_view`` false because nothing could be drawn; the panel said "no tumor in view"
    although where the frame lies, and so the tumor, is unknown (session 36)."""
    from usnav.margins.estimator import FrameMargins

    lost = FrameMargins(7, False, "tracking lost", (), None, np.full((4, 4), np.nan), (0.15, 0.15))
    state = _state(viewer_case, lost, stale=True)
    assert state.margin.header.image_to_mri is None
    _, layout, verdict = render_with_layout(state)
    assert verdict.word == STALE
    assert "unknown: frame not placed" in layout.panel_text
    assert not any("no tumor in view" in text for text in layout.panel_text)
    # a placed frame that misses the tumor still says so, with the image's words: LIVE says
    # it, UNCERTAIN qualifies it (the panel said the LIVE claim under an UNCERTAIN banner)
    placed = FrameMargins(8, False, "", (), None, viewer_case.image_to_mri, (0.15, 0.15))
    _, layout, verdict = render_with_layout(_state(viewer_case, placed))
    assert verdict.word == LIVE and "no tumor in view" in layout.panel_text
    _, layout, verdict = render_with_layout(_state(viewer_case, placed, uncertainty_mm=3.0))
    assert verdict.word == UNCERTAIN
    assert "no tumor in view - uncertain" in layout.panel_text
    assert "no tumor in view" not in layout.panel_text


def test_a_stale_tool_tip_is_drawn_grey(viewer_case) -> None:
    """The tracked tool's tip from stale data (connection lost, probe stopped, frozen image)
    was drawn in full magenta beside the greyed tumor: where the tool was, drawn as where it
    is (session 43). Stale, it is grey, as the tumor is, and so is its legend entry."""
    from usnav.margins import MarginEstimator
    from usnav.viewer.render import STALE_GREY, TOOL_COLOUR

    rows, cols = viewer_case.image.shape[:2]
    tip = viewer_case.image_to_mri @ np.array([cols / 2, rows / 2, 0.0, 1.0])
    margins = MarginEstimator(viewer_case.label, warm_up=False).estimate(
        viewer_case.image, viewer_case.image_to_mri, None, tip[:3], frame_number=3
    )
    assert margins.stylus
    for stale in (False, True):
        picture, layout, verdict = render_with_layout(_state(viewer_case, margins, stale=stale))
        x0, y0, w, h = layout.image_box
        view = picture[y0 : y0 + h, x0 : x0 + w].astype(int)
        magenta = np.all(np.abs(view - np.array(TOOL_COLOUR)) <= 12, axis=-1).sum()
        grey = np.all(np.abs(view - np.array(STALE_GREY)) <= 12, axis=-1).sum()
        tool = [text for text in layout.legend if text.startswith("tool tip")]
        if stale:
            assert verdict.word == STALE and magenta == 0 and grey > 20
            assert tool == ["tool tip, stale"]
        else:
            assert verdict.word == LIVE and magenta > 20
            assert tool == ["tool tip"]


def test_the_tool_distance_carries_its_whole_uncertainty(viewer_case) -> None:
    """Under an UNCERTAIN registration the panel said "tool 1.2 mm from margin" with the
    registration's ±2.5 mm two lines above: read as outside the tumor, where it may be inside
    (session 43). And the margin itself errs by 1.90 mm (95 %, measured with a perfect
    registration), LIVE or not: the ± is √(registration² + 1.90²) in every state, and within
    it the line says the tool may be on the other side, in amber (session 44)."""
    from usnav.margins import MarginEstimator
    from usnav.protocol.display import MEASURED_MARGIN_ERROR_MM

    rows, cols = viewer_case.image.shape[:2]
    tip = viewer_case.image_to_mri @ np.array([cols / 2, rows / 2, 0.0, 1.0])
    margins = MarginEstimator(viewer_case.label, warm_up=False).estimate(
        viewer_case.image, viewer_case.image_to_mri, None, tip[:3], frame_number=3
    )
    d = margins.stylus.signed_distance_mm
    assert np.isfinite(d)
    for bound, word in ((1.0, LIVE), (abs(d) + 2.0, UNCERTAIN), (max(abs(d) - 2.5, 0.1), LIVE)):
        _, layout, verdict = render_with_layout(_state(viewer_case, margins, uncertainty_mm=bound))
        assert verdict.word == word
        whole = np.hypot(bound, MEASURED_MARGIN_ERROR_MM)
        tool = [text for text in layout.panel_text if text.startswith("tool ")]
        assert len(tool) == 1 and f"±{whole:.1f} mm" in tool[0], tool
        assert tool[0].endswith(("may be inside", "may be outside")) == (abs(d) <= whole), tool


def test_a_plane_skimming_the_tumor_does_not_flip_the_banner(viewer_case, viewer_margins):
    """An imaging plane skimming the tumor: margins alternately LIVE and UNCERTAIN at 30 fps,
    each right on its own. The banner flipped with every frame (unreadable, and a LIVE frame
    between UNCERTAIN ones read as good). The worse state shows at once; LIVE again only once
    the margins have said LIVE for the hold (0.5 s), and no LIVE frame inside it is drawn
    LIVE (session 44)."""
    from dataclasses import replace

    model = ViewModel("tcp://127.0.0.1:5556")
    t0 = time.time()
    shown = []
    for k in range(60):  # ~1 s alternating, then ~1 s of LIVE, a frame every 31 ms
        t = t0 + k * 0.031
        bound = 3.0 if k < 30 and k % 2 else 1.0
        messages = _messages(
            viewer_case,
            replace(viewer_margins, frame_number=100 + k),
            uncertainty_mm=bound,
            stream=44,
            t_arrived=t,
        )
        state = model.update(messages, connected=True, last_message_s=t, now=t)
        assert state.margin.header.frame_number == 100 + k
        picture, layout, verdict = render_with_layout(state)
        shown.append(verdict.word)
        if bound > 2.0:  # an UNCERTAIN frame is never shown better than it is
            assert verdict.word == UNCERTAIN
        if k in (2, 30):  # a LIVE frame after an UNCERTAIN one: amber banner, no LIVE look
            assert state.margin.header.display_state == LIVE
            assert verdict.word == UNCERTAIN and "exceeds" in verdict.reason
            # the panel beside it shows this frame's ±1.0: the banner says when it was said
            assert verdict.reason.endswith("(in the last 0.5 s)")
            assert layout.banner_box[3] > 0
            banner = picture[5, 5].astype(int)
            assert np.all(np.abs(banner - np.array(BANNER_AMBER)) < 30)
    assert shown[0] == LIVE
    # the last UNCERTAIN frame (29) held for 0.5 s: 16 frames (0.496 s) after it, not 17
    assert shown[1:46] == [UNCERTAIN] * 45
    assert shown[46:] == [LIVE] * 14
    # the same state with no hold shows each frame's own word (the rule is the display's)
    state.worse_seen = {}
    assert assess(state, ViewerOptions()).word == LIVE


def test_the_hold_never_makes_stale_or_uncertain_look_live(viewer_case, viewer_margins) -> None:
    """The hold only makes the state worse: STALE and UNCERTAIN data show at once, whatever
    was shown before; STALE (the worst said within the hold) outranks UNCERTAIN."""
    from dataclasses import replace

    model = ViewModel("tcp://127.0.0.1:5556")
    t0 = time.time()

    def shown(k: int, **kwargs) -> str:
        t = t0 + k / 30
        messages = _messages(
            viewer_case, replace(viewer_margins, frame_number=k), stream=45, t_arrived=t, **kwargs
        )
        state = model.update(messages, connected=True, last_message_s=t, now=t)
        return assess(state, ViewerOptions()).word

    assert shown(0) == LIVE
    assert shown(1, uncertainty_mm=3.0) == UNCERTAIN
    assert shown(2, stale=True) == STALE
    assert shown(3) == STALE  # LIVE data within 0.5 s of a STALE one
    assert shown(4, uncertainty_mm=3.0) == STALE
    assert shown(18) == UNCERTAIN  # STALE 0.53 s ago, UNCERTAIN 0.47 s ago: held
    assert shown(20) == LIVE  # UNCERTAIN 0.53 s ago


def test_a_repeated_image_is_said_in_the_panel(viewer_case, viewer_margins, live) -> None:
    """A slow scanner behind a frame grabber: the frame's image repeats an earlier frame's
    (``repeat_of``, ``image_age_s`` since session 43), and ``usnav view`` said nothing. The
    panel says it discreetly (grey, small), with the image's age; nothing for a new image."""
    from usnav.viewer.render import TEXT_DIM

    assert not any("repeated" in text for text in live[2].panel_text)
    state = _state(viewer_case, viewer_margins, repeat=(viewer_margins.frame_number - 2, 0.12))
    assert state.margin.header.repeat_of == viewer_margins.frame_number - 2
    picture, layout, verdict = render_with_layout(state)
    assert verdict.word == LIVE  # a repeat is drawn at its image's own pose: no doubt
    said = [text for text in layout.panel_text if "repeated" in text]
    assert said == ["image repeated, 0.12 s old"]
    # grey, like the latency line, not a warning colour
    panel = picture[:, layout.image_box[0] + layout.image_box[2] :].reshape(-1, 3).astype(int)
    plain = live[1][:, layout.image_box[0] + layout.image_box[2] :].reshape(-1, 3).astype(int)
    grey = np.all(panel == np.array(TEXT_DIM), axis=1).sum()
    assert grey > np.all(plain == np.array(TEXT_DIM), axis=1).sum()
    # an unknown age: the repeat alone
    state = _state(viewer_case, viewer_margins, repeat=(viewer_margins.frame_number - 1, None))
    _, layout, _ = render_with_layout(state)
    assert [text for text in layout.panel_text if "repeated" in text] == ["image repeated"]


def test_the_first_live_margin_is_not_held_behind_knowing_nothing(viewer_case, viewer_margins):
    """Before any state came from the publisher (a frame alone), the display is UNCERTAIN
    ("no registration state received yet"): that says nothing is known, as WAITING does, and
    is not held — the first LIVE margin shows LIVE at once (`usnav view --snapshot` after a
    few updates showed the start's UNCERTAIN)."""
    model = ViewModel("tcp://127.0.0.1:5556")
    t = time.time()
    messages = _messages(viewer_case, viewer_margins, stream=46, t_arrived=t)
    state = model.update({"frame": messages["frame"]}, connected=True, last_message_s=t, now=t)
    assert assess(state, ViewerOptions()).reason == "no registration state received yet"
    state = model.update(
        {"margin": messages["margin"]}, connected=True, last_message_s=t + 0.05, now=t + 0.05
    )
    assert assess(state, ViewerOptions()).word == LIVE
