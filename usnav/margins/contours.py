"""Boundary contours of a structure in an image plane: tracing, resampling, normals.

Coordinates are image pixels, x = column, y = row (pixel centres at integers).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from usnav.margins import _kernels


@dataclass(frozen=True)
class TracedContour:
    """One closed boundary of a binary region.

    Attributes
    ----------
    points
        (N, 2) float64, pixels (x = col, y = row), evenly spaced, not repeating the first point.
    normals
        (N, 2) unit vectors pointing out of the region (into a hole for a hole's boundary).
    hole
        True for the boundary of a hole inside the region.
    """

    points: np.ndarray
    normals: np.ndarray
    hole: bool


def trace_regions(
    mask: np.ndarray, min_area_px: float, offset: tuple[int, int] = (0, 0)
) -> list[tuple[np.ndarray, bool]]:
    """Boundaries of the connected regions of ``mask`` and of their holes.

    Parameters
    ----------
    mask
        uint8 (rows, cols), non-zero inside.
    min_area_px
        Regions (and holes) with a smaller polygon area are dropped.
    offset
        (x = col, y = row) of ``mask[0, 0]`` in the image, pixels: ``mask`` may be a box cut
        out of the image's mask that holds all of the region (the boundaries are the same
        as traced on the whole image, and returned in image pixels).

    Returns
    -------
    list of (points (K, 2) float64 pixel centres of the boundary pixels, hole flag)
    """
    found, hierarchy = cv2.findContours(
        mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE, offset=(int(offset[0]), int(offset[1]))
    )
    out: list[tuple[np.ndarray, bool]] = []
    if hierarchy is None:
        return out
    for index, contour in enumerate(found):
        points = contour[:, 0, :].astype(np.float64)
        hole = bool(hierarchy[0][index][3] != -1)
        # a 1-pixel-wide region has zero polygon area: count its pixels instead
        area = max(abs(_signed_area(points)), float(len(points)) if not hole else 0.0)
        if len(points) >= 3 and area >= min_area_px:
            out.append((points, hole))
    return out


def _signed_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.dot(x, _next(y)) - np.dot(_next(x), y))


def _next(values: np.ndarray) -> np.ndarray:
    """Each element's successor along a closed polygon (``np.roll(values, -1, axis=0)``)."""
    return np.concatenate([values[1:], values[:1]])


def _previous(values: np.ndarray) -> np.ndarray:
    """Each element's predecessor along a closed polygon (``np.roll(values, 1, axis=0)``)."""
    return np.concatenate([values[-1:], values[:-1]])


def resample_closed(
    points: np.ndarray, spacing_px: float, max_points: int, smooth_px: float = 1.0
) -> np.ndarray:
    """Evenly spaced points along a closed polygon, lightly smoothed.

    Parameters
    ----------
    points
        (K, 2) polygon vertices (closed implicitly).
    spacing_px
        Target arc-length spacing, pixels (grows if ``max_points`` would be exceeded).
    max_points
        Upper bound on the number of points returned.
    smooth_px
        Half-width of a circular moving average applied first (removes the pixel staircase).

    Returns
    -------
    (N, 2) float64, N ≥ 4.
    """
    pts = np.asarray(points, dtype=np.float64)
    half = round(smooth_px)
    if half > 0 and len(pts) > 4 * half + 1:
        window = 2 * half + 1
        padded = np.concatenate([pts[-half:], pts, pts[:half]])
        kernel = np.full(window, 1.0 / window)
        pts = np.stack(
            [
                np.convolve(padded[:, 0], kernel, "valid"),
                np.convolve(padded[:, 1], kernel, "valid"),
            ],
            axis=1,
        )
    closed = np.vstack([pts, pts[:1]])
    seg = np.hypot(*np.diff(closed, axis=0).T)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    length = arc[-1]
    if length <= 0:
        return np.repeat(pts[:1], 4, axis=0)
    n = int(np.clip(round(length / spacing_px), 4, max_points))
    s = np.arange(n) * (length / n)
    return np.stack([np.interp(s, arc, closed[:, 0]), np.interp(s, arc, closed[:, 1])], axis=1)


def outward_normals(points: np.ndarray, hole: bool) -> np.ndarray:
    """Unit normals of a closed polygon pointing out of the region it bounds.

    For the outer boundary of a region that is away from the region's inside; for a hole's
    boundary it points into the hole (also out of the region).
    """
    tangent = _next(points) - _previous(points)
    normal = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1)
    norm = np.linalg.norm(normal, axis=1, keepdims=True)
    normal = normal / np.maximum(norm, 1e-12)
    # (t_y, -t_x) points outward for a counter-clockwise polygon (positive signed area)
    sign = 1.0 if _signed_area(points) > 0 else -1.0
    if hole:
        sign = -sign
    return normal * sign


def snap_to_level(
    fraction: np.ndarray, points: np.ndarray, normals: np.ndarray, reach_px: float = 2.0
) -> np.ndarray:
    """Move each point along its normal to where ``fraction`` crosses 0.5 (sub-pixel).

    ``fraction`` is the structure's partial-volume fraction (1 inside, 0 outside); the normal
    points outward so the fraction falls along it. Points with no crossing within
    ``reach_px`` (or where the image ends first) stay where they are.
    """
    step = 0.25
    offsets = np.arange(-reach_px, reach_px + step / 2, step)
    profiles = np.empty((len(points), len(offsets)), np.float32)
    _kernels.sample_profiles(fraction, points, normals, offsets, profiles)
    above = profiles >= 0.5
    # crossings: inside at q, outside at q + 1 (a sample off the image is NaN: no crossing,
    # or the point would move by NaN)
    crossing = above[:, :-1] & (profiles[:, 1:] < 0.5)
    centre = len(offsets) // 2
    distance = np.where(crossing, np.abs(np.arange(len(offsets) - 1) + 0.5 - centre), np.inf)
    q = np.argmin(distance, axis=1)
    found = np.isfinite(distance[np.arange(len(points)), q])
    rows = np.arange(len(points))
    f0 = profiles[rows, q].astype(np.float64)
    f1 = profiles[rows, q + 1].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(f0 != f1, (f0 - 0.5) / (f0 - f1), 0.5)
    along = np.where(found, offsets[q] + t * step, 0.0)
    moved = points + along[:, None] * normals
    return moved


def contours_of(
    mask: np.ndarray,
    fraction: np.ndarray | None,
    spacing_px: float,
    max_points: int,
    min_area_px: float,
    offset: tuple[int, int] = (0, 0),
) -> list[TracedContour]:
    """Traced, resampled, sub-pixel boundaries of the region ``mask``.

    Parameters
    ----------
    mask
        uint8 region: the image's (rows, cols), or a box of it holding all of the region
        (see ``offset``).
    fraction
        float32 (rows, cols) partial-volume fraction of the region over the whole image, or
        None (nearest-neighbour labels: the boundary stays at the pixel-centre contour).
    spacing_px, max_points, min_area_px, offset
        As in :func:`resample_closed` and :func:`trace_regions`. The boundaries are in image
        pixels.
    """
    traced: list[TracedContour] = []
    for raw, hole in trace_regions(mask, min_area_px, offset):
        points = resample_closed(raw, spacing_px, max_points)
        normals = outward_normals(points, hole)
        if fraction is not None:
            points = snap_to_level(fraction, points, normals)
        else:
            # the traced polygon joins boundary-pixel centres: the edge is half a pixel out
            points = points + 0.5 * normals
        traced.append(TracedContour(points, normals, hole))
    return traced
