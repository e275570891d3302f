"""Rendering the surgeon's view: a pure function from :class:`ViewState` to BGR pixels.

Nothing here opens a window or touches a socket, so it runs headless (tests, ``--snapshot``,
CI) and its pixels can be checked. Layout: the ultrasound at isotropic mm scale on the left
(tumor filled translucent and outlined, cyst in another colour, the ultrasound-supported
margin where it differs, a mm scale bar, a state banner across the top), a panel of numbers
on the right.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

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
    """

    image_box: tuple[int, int, int, int]
    banner_box: tuple[int, int, int, int]
    scale_bar: tuple[int, int, int, float] | None
    px_per_mm: float


def _image_geometry(
    state: ViewState, options: ViewerOptions
) -> tuple[int, int, float, float, float]:
    """(rows, cols, sx, sy, px_per_mm) of what is shown."""
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
    area = options.height
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
    """As :func:`render_view`, also returning the layout and the verdict drawn."""
    options = options or ViewerOptions()
    canvas = np.zeros((options.height, options.width, 3), np.uint8)
    area = options.height
    canvas[:, area:] = PANEL_BG
    verdict = assess(state, options)

    rows, cols, sx, sy, px_per_mm = _image_geometry(state, options)
    image_box = (0, 0, 0, 0)
    scale_bar = None
    if rows and cols:
        width = max(1, round(cols * sx * px_per_mm))
        height = max(1, round(rows * sy * px_per_mm))
        x0 = (area - width) // 2
        y0 = (area - height) // 2
        image_box = (x0, y0, width, height)
        view = canvas[y0 : y0 + height, x0 : x0 + width]
        if state.image is not None:
            _draw_ultrasound(view, state.image)
        # display pixel = (frame pixel + 0.5) * zoom - 0.5
        zoom = (width / cols, height / rows)
        if state.margin is not None and state.margin.in_view:
            _draw_margins(view, state, options, verdict, zoom)
        if state.margin is not None:
            _draw_tool(view, state, zoom)
            if state.margin.spacing_mm[0] > 0 and np.isfinite(state.margin.spacing_mm[0]):
                scale_bar = _draw_scale_bar(canvas, image_box, px_per_mm)
        if state.margin is not None and not state.margin.in_view:
            # bottom right: the scale bar owns the bottom left
            (tw, _), _ = cv2.getTextSize("no tumor in view", FONT, 0.7, 2)
            _label(view, "no tumor in view", (max(4, width - tw - 14), height - 16), 0.7, TEXT, 2)
    if not (rows and cols):
        message = "no picture yet" if verdict.word == WAITING else "no ultrasound frame"
        (tw, _), _ = cv2.getTextSize(message, FONT, 0.8, 2)
        cv2.putText(
            canvas, message, ((area - tw) // 2, area // 2), FONT, 0.8, TEXT_DIM, 2, cv2.LINE_AA
        )
    banner_box = _draw_banner(canvas, verdict, area)
    _draw_panel(canvas, state, options, verdict, area)
    return canvas, Layout(image_box, banner_box, scale_bar, px_per_mm), verdict


# -- pieces ---------------------------------------------------------------------------------


def _draw_ultrasound(view: np.ndarray, image: np.ndarray) -> None:
    img = image
    if img.ndim == 3:
        img = img.mean(axis=2)
    if img.dtype != np.uint8:
        top = float(np.percentile(img, 99.5)) or 1.0
        img = np.clip(img.astype(np.float32) * (255.0 / top), 0, 255).astype(np.uint8)
    h, w = view.shape[:2]
    resized = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    cv2.cvtColor(resized, cv2.COLOR_GRAY2BGR, dst=view)


def _to_display(points_px: np.ndarray, zoom: tuple[float, float]) -> np.ndarray:
    """Frame pixels (x, y) → display pixels, as int32 with 4 fractional bits (cv2 shift=4)."""
    d = (points_px + 0.5) * np.asarray(zoom) - 0.5
    return np.round(d * 16).astype(np.int32)


def _draw_margins(
    view: np.ndarray,
    state: ViewState,
    options: ViewerOptions,
    verdict: Verdict,
    zoom: tuple[float, float],
) -> None:
    margin = state.margin
    assert margin is not None
    h, w = view.shape[:2]
    confident = verdict.confident
    uncertain = verdict.word == UNCERTAIN
    # fill: only when the data are current (LIVE, or UNCERTAIN at lower opacity)
    if margin.label_image is not None and (confident or uncertain) and options.fill_alpha > 0:
        labels = cv2.resize(margin.label_image, (w, h), interpolation=cv2.INTER_NEAREST)
        layer = view.copy()
        cyst_value = _structure_label(margin, "cyst")
        if cyst_value is not None:
            solid_mask = (labels != 0) & (labels != cyst_value)
            layer[labels == cyst_value] = CYST_COLOUR
        else:
            solid_mask = labels != 0
        layer[solid_mask] = SOLID_COLOUR
        alpha = options.fill_alpha * (1.0 if confident else 0.5)
        cv2.addWeighted(layer, alpha, view, 1.0 - alpha, 0.0, dst=view)
    for contour in margin.contours:
        colour = CYST_COLOUR if contour.structure == "cyst" else SOLID_COLOUR
        if not confident and not uncertain:
            colour = STALE_GREY
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


def _draw_tool(view: np.ndarray, state: ViewState, zoom: tuple[float, float]) -> None:
    stylus = state.margin.stylus if state.margin is not None else None
    if not stylus:
        return
    try:
        out_of_plane = float(stylus.get("out_of_plane_mm", np.inf))
        tip = np.asarray(stylus.get("tip_px"), dtype=np.float64)
    except (TypeError, ValueError):
        return
    if tip.shape != (2,) or not np.all(np.isfinite(tip)) or abs(out_of_plane) > 5.0:
        return
    x, y = ((tip + 0.5) * np.asarray(zoom) - 0.5).round().astype(int)
    cv2.drawMarker(view, (int(x), int(y)), TOOL_COLOUR, cv2.MARKER_CROSS, 18, 2, cv2.LINE_AA)


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


def _draw_banner(canvas: np.ndarray, verdict: Verdict, area: int) -> tuple[int, int, int, int]:
    if verdict.word == LIVE:
        return (0, 0, area, 0)
    colour, text_colour = {
        STALE: (BANNER_RED, (255, 255, 255)),
        UNCERTAIN: (BANNER_AMBER, (0, 0, 0)),
        WAITING: (BANNER_WAITING, (255, 255, 255)),
    }[verdict.word]
    canvas[:BANNER_HEIGHT, :area] = colour
    text = verdict.reason if verdict.word == WAITING else f"{verdict.word}: {verdict.reason}"
    scale = 0.8
    (tw, _), _ = cv2.getTextSize(text, FONT, scale, 2)
    while tw > area - 24 and scale > 0.4:
        scale -= 0.05
        (tw, _), _ = cv2.getTextSize(text, FONT, scale, 2)
    cv2.putText(canvas, text, (12, 31), FONT, scale, text_colour, 2, cv2.LINE_AA)
    return (0, 0, area, BANNER_HEIGHT)


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    if value is None or not np.isfinite(value):
        return "-"
    return f"{value:{spec}}{unit}"


def _draw_panel(
    canvas: np.ndarray, state: ViewState, options: ViewerOptions, verdict: Verdict, x0: int
) -> None:
    x = x0 + 18
    y = 40
    width = canvas.shape[1] - x0

    def line(text: str, colour=TEXT, scale: float = 0.58, gap: int = 27, bold: int = 1) -> None:
        nonlocal y
        if y < canvas.shape[0] - 8:
            cv2.putText(canvas, text, (x, y), FONT, scale, colour, bold, cv2.LINE_AA)
        y += gap

    word_colour = {LIVE: LIVE_GREEN, STALE: BANNER_RED, UNCERTAIN: BANNER_AMBER}.get(
        verdict.word, TEXT_DIM
    )
    line("usnav", TEXT_DIM, 0.6, 34)
    line(verdict.word, word_colour, 1.1, 44, 3)

    margin = state.margin
    header = margin.header if margin is not None else None
    line("REGISTRATION", TEXT_DIM, 0.5, 24)
    if header is not None or state.registration is not None:
        h = header or state.registration.header
        checked = "image-checked" if h.registration_checked else "NOT checked"
        line(f"±{_fmt(h.uncertainty_mm, '.1f', ' mm')} (95 %)  {checked}")
        line(f"age {_fmt(registration_age_s(state), '.1f', ' s')}")
    else:
        line("none yet", TEXT_DIM)
    if state.registration is not None and not state.registration.in_use:
        line("last estimate not adopted", BANNER_AMBER, 0.5, 24)
    y += 8

    # numbers from stale data are dimmed: they describe the past
    value = TEXT if verdict.word != STALE else TEXT_DIM
    line("TUMOR IN THIS FRAME", TEXT_DIM, 0.5, 24)
    if margin is None:
        line("-", TEXT_DIM)
    elif not margin.in_view:
        line("no tumor in view", value)
    else:
        extent = margin.extent or {}
        line(
            f"size {_fmt(extent.get('lateral_mm'), '.1f')} x "
            f"{_fmt(extent.get('axial_mm'), '.1f', ' mm')}",
            value,
        )
        line(f"max diameter {_fmt(extent.get('max_diameter_mm'), '.1f', ' mm')}", value)
        line(f"depth from top {_fmt(margin.distance_to_top_mm, '.1f', ' mm')}", value)
        supported = margin.supported_fraction
        line(
            f"US vs MRI {_fmt(margin.median_abs_disagreement_mm, '.1f', ' mm')}"
            f" ({supported * 100:.0f}% seen)",
            value,
        )
    if margin is not None and margin.stylus:
        d = margin.stylus.get("signed_distance_mm")
        if d is not None and np.isfinite(d):
            where = "INSIDE tumor" if d < 0 else "from margin"
            line(f"tool {abs(d):.1f} mm {where}", TOOL_COLOUR if value is TEXT else TEXT_DIM)
    y += 8

    line("LINK", TEXT_DIM, 0.5, 24)
    line(f"latency {_fmt(state.latency_ms, '.0f', ' ms')}   fps {_fmt(state.fps, '.0f')}")
    frame_text = f"frame {state.image_frame_number}" if state.image_frame_number >= 0 else "frame -"
    line(f"{frame_text}   lost {state.gaps}  bad {state.skipped}", TEXT_DIM, 0.5, 24)
    y += 8

    # legend
    line("LEGEND", TEXT_DIM, 0.5, 24)
    for colour, text in (
        (SOLID_COLOUR, "tumor (MRI)"),
        (CYST_COLOUR, "cyst (MRI)"),
        (US_MARGIN_COLOUR, "margin seen on US"),
    ):
        if y < canvas.shape[0] - 8:
            cv2.rectangle(canvas, (x, y - 12), (x + 22, y + 2), colour, -1)
            cv2.putText(canvas, text, (x + 32, y), FONT, 0.5, TEXT, 1, cv2.LINE_AA)
        y += 24
    del width
