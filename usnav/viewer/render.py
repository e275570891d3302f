"""Rendering the surgeon's view: a pure function from :class:`ViewState` to BGR pixels.

Nothing here opens a window or touches a socket, so it runs headless (tests, ``--snapshot``,
CI) and its pixels can be checked. Layout: the ultrasound at isotropic mm scale on the left
(tumor filled translucent and outlined, cyst in another colour, the ultrasound-supported
margin where it differs, a mm scale bar, a state banner across the top), a panel of numbers
on the right.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from usnav.client import MarginMessage
from usnav.protocol.display import MEASURED_MARGIN_ERROR_MM
from usnav.viewer.mri import direction_letter
from usnav.viewer.state import (
    LIVE,
    STALE,
    UNCERTAIN,
    WAITING,
    Verdict,
    ViewerOptions,
    ViewState,
    assess,
    registration_age_s,
)

# BGR colours
SOLID_COLOUR = (60, 220, 60)  # green
CYST_COLOUR = (255, 170, 40)  # light blue
US_MARGIN_COLOUR = (0, 230, 255)  # yellow
STALE_GREY = (150, 150, 150)
BANNER_RED = (30, 30, 210)
BANNER_AMBER = (0, 165, 255)
BANNER_WAITING = (110, 80, 40)
LIVE_GREEN = (60, 200, 60)
PANEL_BG = (34, 30, 28)
TEXT = (235, 235, 235)
TEXT_DIM = (160, 160, 160)
TOOL_COLOUR = (255, 80, 255)
PLANE_COLOUR = (255, 230, 80)  # light cyan: the probe's image plane on the locators
#: the MRI pane's words when the frame's plane misses the MRI (its reslice is all black)
MRI_OUTSIDE_TEXT = "plane outside the MRI: wrong MRI or registration?"

FONT = cv2.FONT_HERSHEY_SIMPLEX
BANNER_HEIGHT = 46


@dataclass(frozen=True)
class Layout:
    """Where things are on the canvas (pixels), for drawing and for tests.

    Attributes
    ----------
    image_box
        (x0, y0, width, height) of the displayed ultrasound.
    banner_box
        (x0, y0, width, height) of the state banner (zero height when there is none).
    scale_bar
        (x0, y0, x1) of the scale bar's line, and its length in mm as 4th value (None if none).
    px_per_mm
        Display pixels per mm.
    mri_box
        (x0, y0, width, height) of the resliced MRI (same size as ``image_box``), or None.
    locator_boxes
        name → (x0, y0, width, height) of each locator drawn.
    legend
        The legend's entries, in order (only what the picture shows).
    panel_text
        The panel's lines, top to bottom, as drawn.
    """

    image_box: tuple[int, int, int, int]
    banner_box: tuple[int, int, int, int]
    scale_bar: tuple[int, int, int, float] | None
    px_per_mm: float
    mri_box: tuple[int, int, int, int] | None = None
    locator_boxes: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    legend: tuple[str, ...] = ()
    panel_text: tuple[str, ...] = ()


def _image_geometry(state: ViewState, area: int) -> tuple[int, int, float, float, float]:
    """(rows, cols, sx, sy, px_per_mm) of what is shown in a pane of ``area`` pixels."""
    rows = cols = 0
    if state.image is not None:
        rows, cols = state.image.shape[:2]
    elif state.margin is not None and state.margin.image_shape[0] > 0:
        rows, cols = state.margin.image_shape
    sx = sy = float("nan")
    if state.margin is not None:
        sx, sy = state.margin.spacing_mm
    if not (np.isfinite(sx) and np.isfinite(sy) and sx > 0 and sy > 0):
        sx = sy = 1.0  # unknown pixel size: show pixels square, no scale bar
    if rows == 0 or cols == 0:
        return 0, 0, sx, sy, 0.0
    px_per_mm = min(area / (cols * sx), area / (rows * sy))
    return rows, cols, sx, sy, px_per_mm


def render_view(state: ViewState, options: ViewerOptions | None = None) -> np.ndarray:
    """Draw the viewer's picture for ``state``.

    Returns
    -------
    numpy.ndarray
        uint8 (height, width, 3), BGR.
    """
    return render_with_layout(state, options)[0]


def render_with_layout(
    state: ViewState, options: ViewerOptions | None = None
) -> tuple[np.ndarray, Layout, Verdict]:
    """As :func:`render_view`, also returning the layout and the verdict drawn.

    Layout: the ultrasound pane, then (when the state has an MRI) the MRI resliced through the
    same plane with the same overlay, each ``height`` square; the panel of numbers, the
    locators and the legend on the right. The verdict comes from
    :func:`usnav.viewer.state.assess` only.
    """
    options = options or ViewerOptions()
    panes = 2 if state.mri is not None else 1
    width = options.canvas_width(panes)
    canvas = np.zeros((options.height, width, 3), np.uint8)
    area = max(80, min(options.height, (width - 240) // panes))
    panel_x = panes * area
    canvas[:, panel_x:] = PANEL_BG
    verdict = assess(state, options)
    legend: list[tuple[tuple[int, int, int], str]] = []

    rows, cols, sx, sy, px_per_mm = _image_geometry(state, area)
    image_box = (0, 0, 0, 0)
    mri_box = None
    scale_bar = None
    if rows and cols:
        w = max(1, round(cols * sx * px_per_mm))
        h = max(1, round(rows * sy * px_per_mm))
        x0 = (area - w) // 2
        y0 = (options.height - h) // 2
        image_box = (x0, y0, w, h)
        zoom = (w / cols, h / rows)
        view = canvas[y0 : y0 + h, x0 : x0 + w]
        if state.image is not None:
            _draw_grey(view, state.image)
        drawn = _draw_overlay(view, state, options, verdict, zoom)
        if state.mri is not None:
            mri_box = (area + x0, y0, w, h)
            mri_view = canvas[y0 : y0 + h, area + x0 : area + x0 + w]
            if state.mri_mismatch:
                # another file than the run's: its plane under the run's overlay would be
                # another patient's or series' anatomy, drawn as "MRI, same plane"
                _centred(mri_view, state.mri_mismatch, BANNER_RED)
            elif state.mri_outside:
                # a black pane labelled "MRI, same plane" read as anatomy without signal
                _centred(mri_view, MRI_OUTSIDE_TEXT, BANNER_AMBER)
            elif state.mri_plane is not None:
                _draw_grey(mri_view, state.mri_plane)
            else:
                _centred(mri_view, "no plane (no registration yet)", TEXT_DIM)
            if not state.mri_mismatch:
                _draw_overlay(mri_view, state, options, verdict, zoom, tool=False)
        for entry in (
            (SOLID_COLOUR, "tumor (MRI)", "solid"),
            (CYST_COLOUR, "cyst (MRI)", "cyst"),
            (STALE_GREY, "tumor (MRI), stale", "stale"),
            (US_MARGIN_COLOUR, "US differs from MRI", "us"),
            (TOOL_COLOUR, "tool tip", "tool"),
            (STALE_GREY, "tool tip, stale", "tool-stale"),
        ):
            if entry[2] in drawn:
                legend.append(entry[:2])
        spacing = state.margin.spacing_mm[0] if state.margin is not None else float("nan")
        if px_per_mm > 0 and np.isfinite(spacing) and spacing > 0:
            scale_bar = _draw_scale_bar(canvas, image_box, px_per_mm)
            _draw_depth_ruler(canvas, image_box, px_per_mm)
            if mri_box is not None:
                _draw_depth_ruler(canvas, mri_box, px_per_mm)
        _draw_sides(canvas, image_box, state.image_to_mri)
        if mri_box is not None and not state.mri_mismatch:
            _draw_sides(canvas, mri_box, state.image_to_mri)
            caption = "MRI: plane outside it" if state.mri_outside else "MRI, same plane"
            _label(canvas, caption, (mri_box[0] + 12, options.height - 14), 0.55, TEXT)
        if state.margin is not None and not state.margin.in_view:
            # a claim only when LIVE: UNCERTAIN means the tumor may lie just off this plane
            # (protocol.md), STALE that the frame is not the present; a frame that could not
            # be placed (tracking lost) says nothing about the tumor
            text, colour = {
                LIVE: ("no tumor in view", TEXT),
                UNCERTAIN: ("no tumor in view - uncertain", BANNER_AMBER),
            }.get(verdict.word, ("no tumor in view (stale)", TEXT_DIM))
            if not _placed(state.margin):
                text, colour = "tumor unknown: frame not placed", TEXT_DIM
            (tw, _), _ = cv2.getTextSize(text, FONT, 0.7, 2)
            _label(view, text, (max(4, w - tw - 40), h - 16), 0.7, colour, 2)
    if not (rows and cols):
        message = "no picture yet" if verdict.word == WAITING else "no ultrasound frame"
        _centred(canvas[:, :area], message, TEXT_DIM)
    banner_box = draw_banner(canvas, verdict, panel_x)
    panel_text: list[str] = []
    y = _draw_panel(canvas, state, options, verdict, panel_x, panel_text)
    locator_boxes: dict[str, tuple[int, int, int, int]] = {}
    if state.mri is not None and not state.mri_mismatch:
        locator_boxes, plane_shown, y = _draw_locators(canvas, state, verdict, panel_x, y)
        if locator_boxes and plane_shown:
            legend.append((PLANE_COLOUR, "image plane (locators)"))
    _draw_legend(canvas, legend, panel_x, y)
    layout = Layout(
        image_box,
        banner_box,
        scale_bar,
        px_per_mm,
        mri_box,
        locator_boxes,
        tuple(text for _, text in legend),
        tuple(panel_text),
    )
    return canvas, layout, verdict


# -- pieces ---------------------------------------------------------------------------------


def _draw_grey(view: np.ndarray, image: np.ndarray) -> None:
    """A grey image (uint8/uint16, or colour averaged) scaled into ``view``."""
    img = image
    if img.ndim == 3:
        img = img.mean(axis=2)
    if img.dtype != np.uint8:
        top = float(np.percentile(img, 99.5)) or 1.0
        img = np.clip(img.astype(np.float32) * (255.0 / top), 0, 255).astype(np.uint8)
    h, w = view.shape[:2]
    resized = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    cv2.cvtColor(resized, cv2.COLOR_GRAY2BGR, dst=view)


def _centred(view: np.ndarray, message: str, colour: tuple[int, int, int]) -> None:
    h, w = view.shape[:2]
    scale = 0.8
    (tw, _), _ = cv2.getTextSize(message, FONT, scale, 2)
    while tw > w - 20 and scale > 0.4:
        scale -= 0.05
        (tw, _), _ = cv2.getTextSize(message, FONT, scale, 2)
    cv2.putText(view, message, ((w - tw) // 2, h // 2), FONT, scale, colour, 2, cv2.LINE_AA)


def _to_display(points_px: np.ndarray, zoom: tuple[float, float]) -> np.ndarray:
    """Frame pixels (x, y) → display pixels, as int32 with 4 fractional bits (cv2 shift=4)."""
    d = (points_px + 0.5) * np.asarray(zoom) - 0.5
    return np.round(d * 16).astype(np.int32)


def _draw_overlay(
    view: np.ndarray,
    state: ViewState,
    options: ViewerOptions,
    verdict: Verdict,
    zoom: tuple[float, float],
    *,
    tool: bool = True,
) -> set[str]:
    """The margins (and the tool) on one pane; returns what was drawn (for the legend)."""
    drawn: set[str] = set()
    if state.margin is not None and state.margin.in_view:
        drawn |= _draw_margins(view, state, options, verdict, zoom)
    # a tool tip from stale data is where the tool was: grey, as the tumor is then
    stale = verdict.word not in (LIVE, UNCERTAIN)
    colour = STALE_GREY if stale else TOOL_COLOUR
    if tool and state.margin is not None and _draw_tool(view, state, zoom, colour):
        drawn.add("tool-stale" if stale else "tool")
    return drawn


def _draw_margins(
    view: np.ndarray,
    state: ViewState,
    options: ViewerOptions,
    verdict: Verdict,
    zoom: tuple[float, float],
) -> set[str]:
    margin = state.margin
    assert margin is not None
    drawn: set[str] = set()
    confident = verdict.confident
    uncertain = verdict.word == UNCERTAIN
    # fill: only when the data are current (LIVE, or UNCERTAIN at lower opacity)
    if margin.label_image is not None and (confident or uncertain) and options.fill_alpha > 0:
        _fill(view, margin, options.fill_alpha * (1.0 if confident else 0.5))
    for contour in margin.contours:
        colour = CYST_COLOUR if contour.structure == "cyst" else SOLID_COLOUR
        if not confident and not uncertain:
            colour = STALE_GREY  # the legend then shows the grey it is drawn in
            drawn.add("stale")
        else:
            drawn.add("cyst" if contour.structure == "cyst" else "solid")
        pts = _to_display(contour.predicted_px.astype(np.float64), zoom)
        if confident:
            cv2.polylines(view, [pts], True, colour, 2, cv2.LINE_AA, shift=4)
        else:
            _dashed(view, pts, colour, 2)
        if not confident and not uncertain:
            continue  # stale: no ultrasound-supported claims either
        # ultrasound-supported margin where it differs from the MRI-predicted one
        show = (
            (contour.confidence >= options.support_threshold)
            & (np.abs(contour.disagreement_mm) >= options.min_disagreement_mm)
            & contour.faces_tissue
        )
        if show.any():
            observed = _to_display(contour.observed_px.astype(np.float64), zoom)
            for run in _runs(show):
                if len(run) >= 2:
                    cv2.polylines(
                        view, [observed[run]], False, US_MARGIN_COLOUR, 2, cv2.LINE_AA, shift=4
                    )
                    drawn.add("us")
    return drawn


def _fill(view: np.ndarray, margin, alpha: float) -> None:
    """Tint the tumor (and cyst) translucent, working only on the labels' bounding box."""
    source = margin.label_image
    rows_any, cols_any = np.flatnonzero(source.any(axis=1)), np.flatnonzero(source.any(axis=0))
    if not len(rows_any):
        return
    h, w = view.shape[:2]
    rows, cols = source.shape
    # display pixels whose nearest frame pixel lies in the box (cv2's INTER_NEAREST rule)
    x0, x1 = int(cols_any[0] * w / cols), min(w, int(np.ceil((cols_any[-1] + 1) * w / cols)))
    y0, y1 = int(rows_any[0] * h / rows), min(h, int(np.ceil((rows_any[-1] + 1) * h / rows)))
    labels = cv2.resize(source, (w, h), interpolation=cv2.INTER_NEAREST)[y0:y1, x0:x1]
    part = view[y0:y1, x0:x1]
    cyst_value = _structure_label(margin, "cyst")
    if labels.dtype == np.uint8:
        lut = np.zeros((256, 3), np.uint8)
        lut[1:] = SOLID_COLOUR
        if cyst_value is not None and 0 < cyst_value < 256:
            lut[cyst_value] = CYST_COLOUR
        colour = lut[labels]
    else:
        colour = np.zeros(part.shape, np.uint8)
        colour[labels != 0] = SOLID_COLOUR
        if cyst_value is not None:
            colour[labels == cyst_value] = CYST_COLOUR
    blended = cv2.addWeighted(colour, alpha, part, 1.0 - alpha, 0.0)
    np.copyto(part, blended, where=(labels != 0)[..., None])


def _structure_label(margin, name: str) -> int | None:
    for contour in margin.contours:
        if contour.structure == name:
            return contour.label
    return None


def _runs(mask: np.ndarray) -> list[np.ndarray]:
    """Index runs of True along a closed contour (a run may wrap around the end)."""
    n = len(mask)
    if mask.all():
        return [np.r_[np.arange(n), 0]]
    start = int(np.argmin(mask))  # begin at a False so no run is split by the wrap
    order = (np.arange(n) + start) % n
    runs, current = [], []
    for index in order:
        if mask[index]:
            current.append(index)
        elif current:
            runs.append(np.array(current))
            current = []
    if current:
        runs.append(np.array(current))
    return runs


def _dashed(
    view: np.ndarray, pts: np.ndarray, colour: tuple[int, int, int], thickness: int, dash: int = 4
) -> None:
    """A closed polyline drawn as dashes of ``dash`` segments."""
    n = len(pts)
    for start in range(0, n, 2 * dash):
        idx = [(start + k) % n for k in range(dash + 1)]
        cv2.polylines(view, [pts[idx]], False, colour, thickness, cv2.LINE_AA, shift=4)


def _draw_tool(
    view: np.ndarray,
    state: ViewState,
    zoom: tuple[float, float],
    colour: tuple[int, int, int] = TOOL_COLOUR,
) -> bool:
    stylus = state.margin.stylus if state.margin is not None else None
    if not stylus:
        return False
    try:
        out_of_plane = float(stylus.get("out_of_plane_mm", np.inf))
        tip = np.asarray(stylus.get("tip_px"), dtype=np.float64)
    except (TypeError, ValueError):
        return False
    if tip.shape != (2,) or not np.all(np.isfinite(tip)) or abs(out_of_plane) > 5.0:
        return False
    x, y = ((tip + 0.5) * np.asarray(zoom) - 0.5).round().astype(int)
    cv2.drawMarker(view, (int(x), int(y)), colour, cv2.MARKER_CROSS, 18, 2, cv2.LINE_AA)
    return True


def _nice_length_mm(target_mm: float) -> float:
    for value in (1, 2, 5, 10, 20, 50, 100):
        if value >= target_mm:
            return float(value)
    return 100.0


def _draw_scale_bar(
    canvas: np.ndarray, image_box: tuple[int, int, int, int], px_per_mm: float
) -> tuple[int, int, int, float] | None:
    x0, y0, w, h = image_box
    if px_per_mm <= 0 or w < 60:
        return None
    length_mm = _nice_length_mm(0.18 * w / px_per_mm)
    length_px = round(length_mm * px_per_mm)
    bx0 = x0 + 16
    by = y0 + h - 22
    bx1 = bx0 + length_px
    cv2.line(canvas, (bx0, by), (bx1, by), (0, 0, 0), 7)
    cv2.line(canvas, (bx0, by), (bx1, by), (255, 255, 255), 3)
    for x in (bx0, bx1):
        cv2.line(canvas, (x, by - 7), (x, by + 7), (0, 0, 0), 5)
        cv2.line(canvas, (x, by - 6), (x, by + 6), (255, 255, 255), 2)
    _label(canvas, f"{length_mm:g} mm", (bx1 + 10, by + 7), 0.6, (255, 255, 255), 2)
    return (bx0, by, bx1, length_mm)


def _label(
    img: np.ndarray,
    text: str,
    org: tuple[int, int],
    scale: float,
    colour: tuple[int, int, int],
    thickness: int = 1,
) -> None:
    """Text with a dark outline, readable on any background."""
    cv2.putText(img, text, org, FONT, scale, (0, 0, 0), thickness + 3, cv2.LINE_AA)
    cv2.putText(img, text, org, FONT, scale, colour, thickness, cv2.LINE_AA)


def draw_banner(canvas: np.ndarray, verdict: Verdict, area: int) -> tuple[int, int, int, int]:
    """The state banner across the top ``area`` columns of ``canvas`` (nothing when LIVE);
    returns the rectangle it covers."""
    if verdict.word == LIVE:
        return (0, 0, area, 0)
    colour, text_colour = {
        STALE: (BANNER_RED, (255, 255, 255)),
        UNCERTAIN: (BANNER_AMBER, (0, 0, 0)),
        WAITING: (BANNER_WAITING, (255, 255, 255)),
    }[verdict.word]
    banner = canvas[:BANNER_HEIGHT, :area]  # text is drawn here only: it never spills over
    banner[:] = colour
    text = verdict.reason if verdict.word == WAITING else f"{verdict.word}: {verdict.reason}"
    lines, scale = _banner_lines(text, area - 24)
    baselines = (31,) if len(lines) == 1 else (19, 40)
    for line, y in zip(lines, baselines, strict=True):
        cv2.putText(
            banner, line, (12, y), FONT, scale, text_colour, 1 + (scale >= 0.5), cv2.LINE_AA
        )
    return (0, 0, area, BANNER_HEIGHT)


def _banner_lines(text: str, room: int) -> tuple[list[str], float]:
    """The banner's text in one line, or in two when one would not fit at a readable size
    (a long reason, e.g. a CURVE or protocol-version hint, ran on over the panel)."""

    def width(line: str, scale: float) -> int:
        return cv2.getTextSize(line, FONT, scale, 2)[0][0]

    scale = 0.8
    while width(text, scale) > room and scale > 0.5:
        scale -= 0.05
    words = text.split(" ")
    if width(text, scale) <= room or len(words) < 2:
        return [text], scale
    # two lines, split where the longer of the two is shortest
    best = min(
        range(1, len(words)),
        key=lambda k: max(width(" ".join(words[:k]), 0.5), width(" ".join(words[k:]), 0.5)),
    )
    lines = [" ".join(words[:best]), " ".join(words[best:])]
    scale = 0.55
    while max(width(line, scale) for line in lines) > room and scale > 0.35:
        scale -= 0.05
    return lines, scale


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    if value is None or not np.isfinite(value):
        return "-"
    return f"{value:{spec}}{unit}"


def _registration_note(state: ViewState) -> tuple[str, tuple[int, int, int]] | None:
    """What to say about the newest registration update, if anything.

    A rejected update that lands on the accepted estimate confirms it (the worker restarts
    the accepted estimate's age then): the accepted estimate was computed at or after that
    update, so the display says "latest update confirmed it". One that did not is said as a
    fact, not a warning: the accepted registration is still in use, and whether it may be
    trusted is the state word's job (UNCERTAIN, STALE), never an amber line under a LIVE.
    Read from the newest update itself, not from the estimate in use re-sent every 0.25 s
    (until session 43 the note was up only until that re-send: it blinked at 4 Hz).
    """
    reg = state.registration_update
    if reg is None or reg.in_use:
        return None
    accepted_age = registration_age_s(state)
    update_age = state.now - reg.t_computed if np.isfinite(reg.t_computed) else None
    if accepted_age is not None and update_age is not None and accepted_age <= update_age + 0.5:
        return "latest update confirmed it", TEXT_DIM
    if accepted_age is None:  # the navigation registration (never checked: no age)
        return "latest update rejected; navigation registration kept", TEXT_DIM
    return "latest update rejected; accepted one kept", TEXT_DIM


def _tool_distance_line(
    signed_mm: float, verdict: Verdict, bound_mm: float | None, value: tuple
) -> tuple[str, tuple]:
    """The panel's tool line: its distance to the tumor's margin (negative: inside), mm, with
    that distance's 95 % uncertainty.

    The distance is measured to a margin drawn through the registration, whose error at the
    tumor is bounded by ``bound_mm`` (95 %, the panel's "±… mm" above), and the margin itself
    errs by :data:`~usnav.protocol.display.MEASURED_MARGIN_ERROR_MM` (1.90 mm, 95 %, measured
    with a perfect registration: the label's resolution and segmentation). The two are
    independent and add in quadrature: the ± is √(bound² + 1.90²), in every state — LIVE too,
    where a tool 1.2 mm from a margin that may be 2 mm off may be inside (until session 44
    LIVE showed the distance alone, and not LIVE carried the registration's bound alone:
    session 43). A tool that close is said to be possibly on the other side, in amber. The
    stylus's own tracking error (about 0.5 mm for an optical tracker) is not included: it is
    not on the wire. With no known bound: the distance, and "± unknown" when not LIVE."""
    where = "INSIDE tumor" if signed_mm < 0 else "from margin"
    colour = TOOL_COLOUR if value is TEXT else TEXT_DIM
    if bound_mm is None or not np.isfinite(bound_mm):
        unknown = "" if verdict.word == LIVE else " (± unknown)"
        return f"tool {abs(signed_mm):.1f} mm {where}{unknown}", colour
    whole = float(np.hypot(bound_mm, MEASURED_MARGIN_ERROR_MM))
    text = f"tool {abs(signed_mm):.1f} ±{whole:.1f} mm {where}"
    if abs(signed_mm) <= whole and verdict.word != STALE:
        other = "outside" if signed_mm < 0 else "inside"
        return f"{text}: may be {other}", BANNER_AMBER
    return text, colour


def _draw_panel(
    canvas: np.ndarray,
    state: ViewState,
    options: ViewerOptions,
    verdict: Verdict,
    x0: int,
    said: list[str],
) -> int:
    """The numbers (each line drawn is appended to ``said``); returns the first free row
    below them."""
    x = x0 + 18
    y = 44

    def line(text: str, colour=TEXT, scale: float = 0.58, gap: int = 25, bold: int = 1) -> None:
        nonlocal y
        if y < canvas.shape[0] - 8:
            cv2.putText(canvas, text, (x, y), FONT, scale, colour, bold, cv2.LINE_AA)
            said.append(text)
        y += gap

    word_colour = {LIVE: LIVE_GREEN, STALE: BANNER_RED, UNCERTAIN: BANNER_AMBER}.get(
        verdict.word, TEXT_DIM
    )
    line(verdict.word, word_colour, 1.1, 40, 3)

    margin = state.margin
    header = margin.header if margin is not None else None
    line("REGISTRATION", TEXT_DIM, 0.5, 22)
    if header is not None or state.registration is not None:
        h = header or state.registration.header
        checked = "image-checked" if h.registration_checked else "NOT checked"
        bound = h.uncertainty_mm
        known = bound is not None and bool(np.isfinite(bound))
        line(f"±{bound:.1f} mm (95 %)  {checked}" if known else f"error unknown  {checked}")
        line(f"age {_fmt(registration_age_s(state), '.1f', ' s')}")
    else:
        line("none yet", TEXT_DIM)
    note = _registration_note(state)
    if note is not None:
        line(note[0], note[1], 0.5, 22)
    if state.status.get("calibration_flagged"):
        # the run's calibration was flagged by usnav calibrate: the publisher keeps every
        # overlay from LIVE, and this says why on a picture whose banner names another reason
        line("calibration FLAGGED: see usnav run's log", BANNER_AMBER, 0.5, 22)
    if state.mri_mismatch:
        line(state.mri_mismatch, BANNER_RED, 0.5, 22)
    y += 6

    # numbers from stale data are dimmed: they describe the past
    value = TEXT if verdict.word != STALE else TEXT_DIM
    line("TUMOR IN THIS FRAME", TEXT_DIM, 0.5, 22)
    if margin is None:
        line("-", TEXT_DIM)
    elif not _placed(margin):
        # tracking lost: where this frame lies is unknown, so is the tumor in it (the margin
        # says "not in view" only because nothing could be drawn)
        line("unknown: frame not placed", TEXT_DIM)
    elif not margin.in_view:
        # the same claim, in the same words and colour, as on the image: a claim only when
        # LIVE (UNCERTAIN: the tumor may lie just off this plane)
        if verdict.word == UNCERTAIN:
            line("no tumor in view - uncertain", BANNER_AMBER)
        else:
            line("no tumor in view", value)
    else:
        extent = margin.extent or {}
        line(
            f"size {_fmt(extent.get('lateral_mm'), '.1f')} x "
            f"{_fmt(extent.get('axial_mm'), '.1f', ' mm')}",
            value,
        )
        line(f"max diameter {_fmt(extent.get('max_diameter_mm'), '.1f', ' mm')}", value)
        line(f"depth below probe face {_fmt(margin.distance_to_top_mm, '.1f', ' mm')}", value)
        seen = margin.supported_fraction
        seen_text = f"{seen * 100:.0f}% seen" if np.isfinite(seen) else "not seen"
        line(
            f"US vs MRI {_fmt(margin.median_abs_disagreement_mm, '.1f', ' mm')} ({seen_text})",
            value,
        )
    if margin is not None and margin.stylus:
        d = margin.stylus.get("signed_distance_mm")
        if d is not None and np.isfinite(d):
            line(*_tool_distance_line(float(d), verdict, margin.header.uncertainty_mm, value))
    y += 4
    frame_text = f"frame {state.image_frame_number}" if state.image_frame_number >= 0 else "frame -"
    line(
        f"latency {_fmt(state.latency_ms, '.0f', ' ms')}  {_fmt(state.fps, '.0f')} fps  "
        f"{frame_text}  lost {state.gaps}  bad {state.skipped}",
        TEXT_DIM,
        0.45,
        22,
    )
    repeat = _repeat_note(margin)
    if repeat:
        line(repeat, TEXT_DIM, 0.45, 22)
    return y


def _repeat_note(margin: MarginMessage | None) -> str:
    """The panel's words for a frame whose image repeats an earlier frame's ("" for a new
    image, or a publisher before session 43): a slow scanner behind a frame grabber sends
    each image 2-4 times. Said as a fact, in grey: the overlay is that image's own (drawn at
    the pose its first frame came with), and the image is ``image_age_s`` old."""
    if margin is None or margin.header.repeat_of is None:
        return ""
    age = margin.header.image_age_s
    if age is None or not np.isfinite(age):
        return "image repeated"
    return f"image repeated, {age:.2f} s old"


def _draw_depth_ruler(canvas: np.ndarray, box: tuple[int, int, int, int], px_per_mm: float) -> None:
    """Depth ticks down the image's right edge: every 5 mm, numbered every 10 mm from the top
    row (the probe face)."""
    x0, y0, w, h = box
    if px_per_mm <= 0 or h < 60:
        return
    x = x0 + w - 8
    depth_mm = h / px_per_mm
    step = 5.0 if 5.0 * px_per_mm >= 12 else 10.0
    cv2.line(canvas, (x, y0), (x, y0 + h - 1), (0, 0, 0), 3)
    cv2.line(canvas, (x, y0), (x, y0 + h - 1), (220, 220, 220), 1)
    k = 1
    while k * step < depth_mm:
        mm = k * step
        y = y0 + round(mm * px_per_mm)
        major = abs(mm % 10.0) < 1e-6
        length = 12 if major else 6
        cv2.line(canvas, (x - length, y), (x, y), (0, 0, 0), 3)
        cv2.line(canvas, (x - length, y), (x, y), (235, 235, 235), 1)
        if major and y < y0 + h - 10:
            text = f"{mm:g}"
            (tw, _), _ = cv2.getTextSize(text, FONT, 0.45, 1)
            _label(canvas, text, (x - length - tw - 4, y + 5), 0.45, (235, 235, 235))
        k += 1


def _draw_sides(
    canvas: np.ndarray, box: tuple[int, int, int, int], image_to_mri: np.ndarray | None
) -> None:
    """The patient side (R/L, A/P, S/I) at the image's left and right edges, from ImageToMri."""
    if image_to_mri is None:
        return
    column = np.asarray(image_to_mri, np.float64)[:3, 0]
    right, left = direction_letter(column), direction_letter(-column)
    if not right:
        return
    x0, y0, w, _ = box
    y = max(y0, BANNER_HEIGHT) + 30
    _label(canvas, left, (x0 + 10, y), 0.8, (255, 255, 255), 2)
    (tw, _), _ = cv2.getTextSize(right, FONT, 0.8, 2)
    _label(canvas, right, (x0 + w - tw - 30, y), 0.8, (255, 255, 255), 2)


def _placed(margin: MarginMessage) -> bool:
    """Whether the margin's frame was placed in the MRI (its ``ImageToMri`` known): a frame
    whose tracking was lost goes out with none, and says nothing about the tumor."""
    return margin.header.image_to_mri is not None


def _draw_locators(
    canvas: np.ndarray, state: ViewState, verdict: Verdict, x0: int, y: int
) -> tuple[dict[str, tuple[int, int, int, int]], bool, int]:
    """The sagittal and axial locators side by side from row ``y``.

    Returns (boxes, whether the image plane was drawn, the first free row below)."""
    mri = state.mri
    assert mri is not None
    boxes: dict[str, tuple[int, int, int, int]] = {}
    gap = 12
    side = (canvas.shape[1] - x0 - 36 - gap) // 2
    if side < 60 or y + 20 + side > canvas.shape[0] - 60:
        return boxes, False, y
    cv2.putText(canvas, "LOCATORS (bars: 10 mm)", (x0 + 18, y), FONT, 0.5, TEXT_DIM, 1, cv2.LINE_AA)
    top = y + 10
    corners = None
    shape = None
    if state.image_to_mri is not None:
        if state.image is not None:
            shape = state.image.shape[:2]
        elif state.margin is not None:
            shape = state.margin.image_shape
    if shape is not None and shape[0] > 0:
        rows, cols = shape
        px = np.array(
            [[-0.5, -0.5], [cols - 0.5, -0.5], [cols - 0.5, rows - 0.5], [-0.5, rows - 0.5]]
        )
        m = np.asarray(state.image_to_mri, np.float64)
        corners = px[:, :1] * m[:3, 0] + px[:, 1:] * m[:3, 1] + m[:3, 3]
    current = verdict.word in (LIVE, UNCERTAIN)
    plane_colour = PLANE_COLOUR if current else STALE_GREY
    for k, locator in enumerate(mri.locators):
        bx = x0 + 18 + k * (side + gap)
        canvas[top : top + side, bx : bx + side] = (0, 0, 0)
        section, scale = mri.locator_picture(locator, side)
        h, w = section.shape[:2]
        ox, oy = bx + (side - w) // 2, top + (side - h) // 2
        view = canvas[oy : oy + h, ox : ox + w]
        view[:] = section
        if corners is not None:
            pts = (locator.to_px(corners) + 0.5) * scale - 0.5
            poly = np.round(pts * 16).astype(np.int32)
            cv2.polylines(view, [poly], True, plane_colour, 1, cv2.LINE_AA, shift=4)
            cv2.polylines(view, [poly[:2]], False, plane_colour, 3, cv2.LINE_AA, shift=4)
        left, right, up, down = locator.edges
        for text, org in (
            (left, (ox + 3, oy + h // 2 + 5)),
            (right, (ox + w - 13, oy + h // 2 + 5)),
            (up, (ox + w // 2 - 5, oy + 15)),
            (down, (ox + w // 2 - 5, oy + h - 5)),
        ):
            _label(canvas, text, org, 0.45, TEXT_DIM)
        # a 10 mm bar at the bottom left of the section
        bar = round(10.0 / locator.mm_per_px * scale)
        if 8 <= bar < w - 20:
            cv2.line(canvas, (ox + 4, oy + h - 6), (ox + 4 + bar, oy + h - 6), (255, 255, 255), 2)
        cv2.putText(
            canvas, locator.name, (bx, top + side + 16), FONT, 0.45, TEXT_DIM, 1, cv2.LINE_AA
        )
        boxes[locator.name] = (ox, oy, w, h)
    y = top + side + 40
    if corners is not None and shape is not None:
        where = mri.plane_to_tumor(state.image_to_mri, shape)
        if where.cuts:
            text = "image plane cuts the tumor"
        elif np.isfinite(where.distance_mm):
            text = f"image plane {where.distance_mm:.1f} mm from the tumor"
        else:
            text = "no tumor label given"
        colour = TEXT if current else TEXT_DIM
        cv2.putText(canvas, text, (x0 + 18, y), FONT, 0.55, colour, 1, cv2.LINE_AA)
    return boxes, corners is not None, y + 16


def _draw_legend(
    canvas: np.ndarray,
    legend: list[tuple[tuple[int, int, int], str]],
    x0: int,
    y: int,
) -> None:
    """Only what the picture shows, in two columns from row ``y`` (or at the panel's bottom
    when there is no room below ``y``)."""
    if not legend:
        return
    rows = (len(legend) + 1) // 2
    x = x0 + 18
    column = (canvas.shape[1] - x - 18) // 2
    y = min(y + 14, canvas.shape[0] - 12 - 22 * (rows - 1))
    for k, (colour, text) in enumerate(legend):
        cx = x + (k % 2) * column
        cy = y + (k // 2) * 22
        cv2.rectangle(canvas, (cx, cy - 12), (cx + 18, cy + 2), colour, -1)
        cv2.putText(canvas, text, (cx + 26, cy), FONT, 0.47, TEXT, 1, cv2.LINE_AA)
