"""Synthetic N-wire recordings with known ground truth (for tests that need no outside data).

A phantom with the fCal 2.0 wire layout (3 Ns at z = 20, 10, 0 mm; widths 30, 30, 25 mm) is
imaged by a virtual probe at 0.1 × 0.095 mm/px (not PLUS's 0.078: the segmentation must follow
the XML). Every frame is a rigid pose of the image plane in the phantom; the dots are rendered
as Gaussian blobs at the exact wire/plane intersections, with speckle and a bright wall line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from usnav.frames import TrackedFrame, TrackedTransform, TransformStatus
from usnav.io.sequence import write_sequence

COLS, ROWS = 480, 400
SPACING = (0.1, 0.095)  # mm/px along image x, y

WIRES = [  # (name, front, back) — fCal 2.0 layout
    [
        ("7:G1_g1", (30, 0, 20), (30, 40, 20)),
        ("8:L1_h1", (55, 0, 20), (35, 40, 20)),
        ("9:M1_m1", (60, 0, 20), (60, 40, 20)),
    ],
    [
        ("4:G3_g3", (30, 0, 10), (30, 40, 10)),
        ("5:H3_l3", (35, 0, 10), (55, 40, 10)),
        ("6:M3_m3", (60, 0, 10), (60, 40, 10)),
    ],
    [
        ("1:H5_h5", (35, 0, 0), (35, 40, 0)),
        ("2:L5_i5", (55, 0, 0), (40, 40, 0)),
        ("3:M5_m5", (60, 0, 0), (60, 40, 0)),
    ],
]

PHANTOM_TO_REFERENCE = np.array(
    [
        [0.0, -1.0, 0.0, 12.0],
        [0.0, 0.0, -1.0, 40.0],
        [1.0, 0.0, 0.0, -90.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def image_to_probe_truth() -> np.ndarray:
    """A plausible ImageToProbe (rotation × mm/px + offset)."""
    r = Rotation.from_euler("xyz", [92.0, -3.0, 88.0], degrees=True).as_matrix()
    m = np.eye(4)
    s = np.array([SPACING[0], SPACING[1], (SPACING[0] + SPACING[1]) / 2])
    m[:3, :3] = r * s
    m[:3, 3] = [11.0, 40.0, -7.0]
    return m


def config_xml(
    path: Path,
    *,
    drop_wire: bool = False,
    with_phantom_to_reference: bool = True,
    max_candidates: int = 20,
) -> Path:
    """A PLUS-style device-set XML for the synthetic phantom."""
    patterns = []
    for k, pattern in enumerate(WIRES):
        wires = pattern[:2] if drop_wire and k == 1 else pattern
        lines = "\n".join(
            f'        <Wire Name="{n}" EndPointFront="{" ".join(map(str, f))}" '
            f'EndPointBack="{" ".join(map(str, b))}" />'
            for n, f, b in wires
        )
        patterns.append(f'      <Pattern Type="NWire">\n{lines}\n      </Pattern>')
    ptr = " ".join(f"{v:.9g}" for v in PHANTOM_TO_REFERENCE.ravel())
    coord = (
        f'    <Transform From="Phantom" To="Reference" Matrix="{ptr}" />'
        if with_phantom_to_reference
        else ""
    )
    text = f"""<PlusConfiguration version="2.1">
  <CoordinateDefinitions>
{coord}
  </CoordinateDefinitions>
  <Segmentation ApproximateSpacingMmPerPixel="0.1" MorphologicalOpeningCircleRadiusMm="0.2"
    MorphologicalOpeningBarSizeMm="2.0" ClipRectangleOrigin="30 30" ClipRectangleSize="420 340"
    MaxLinePairDistanceErrorPercent="10" AngleToleranceDegrees="10" MaxAngleDifferenceDegrees="10"
    MinThetaDegrees="-70" MaxThetaDegrees="70" MaxLineShiftMm="10.0" ThresholdImagePercent="10"
    CollinearPointsMaxDistanceFromLineMm="0.6" UseOriginalImageIntensityForDotIntensityScore="FALSE"
    NumberOfMaximumFiducialPointCandidates="{max_candidates}" />
  <PhantomDefinition>
    <Description Name="Synthetic" Type="Multi-N" Version="2.0" />
    <Geometry>
{chr(10).join(patterns)}
      <Landmarks><Landmark Name="#1" Position="104.3 5.0 20.0" /></Landmarks>
    </Geometry>
  </PhantomDefinition>
</PlusConfiguration>
"""
    path.write_text(text, encoding="utf-8")
    return path


def image_pose(rng: np.random.Generator, smooth_t: float | None = None) -> np.ndarray:
    """Rigid pose (image mm frame → Phantom) of a plausible calibration frame: random, or at
    time ``smooth_t`` (s) of a smooth hand-held sweep (each parameter a sinusoid)."""
    # image x → phantom −x, image y (depth) → phantom −z, normal → phantom ±y
    base = np.array([[-1.0, 0, 0], [0, 0, -1.0], [0, -1.0, 0]]).T
    g = np.eye(4)
    if smooth_t is None:
        tilt = Rotation.from_euler("xyz", rng.uniform(-6, 6, 3), degrees=True).as_matrix()
        g[:3, :3] = base @ tilt
        g[:3, 3] = [69.0 + rng.uniform(-2, 2), rng.uniform(12, 28), 28.5 + rng.uniform(-1, 1)]
        return g
    # periods 2.3-5.9 s, as a hand rocks and slides the probe over the phantom
    u = np.sin(2 * np.pi * smooth_t / np.array([3.1, 4.3, 5.9, 2.3, 3.7, 4.9]) + np.arange(6))
    g[:3, :3] = base @ Rotation.from_euler("xyz", 6 * u[:3], degrees=True).as_matrix()
    g[:3, 3] = [69.0 + 2 * u[3], 20.0 + 8 * u[4], 28.5 + u[5]]
    return g


def wire_pixels(image_to_phantom: np.ndarray) -> np.ndarray:
    """Exact (u, v) px of every wire's intersection with the image plane: (3, 3, 2)."""
    inv = np.linalg.inv(image_to_phantom)  # phantom → image (px, z in px-ish units)
    out = np.zeros((3, 3, 2))
    for k, pattern in enumerate(WIRES):
        for w, (_, front, back) in enumerate(pattern):
            f = inv @ np.array([*front, 1.0])
            b = inv @ np.array([*back, 1.0])
            t = f[2] / (f[2] - b[2])
            p = f + t * (b - f)
            out[k, w] = p[:2]
    return out


def render(points: np.ndarray, rng: np.random.Generator, *, noise: float = 12.0) -> np.ndarray:
    """uint8 frame with Gaussian dots at ``points`` (n, 2), speckle and a wall line."""
    yy, xx = np.mgrid[0:ROWS, 0:COLS].astype(np.float64)
    img = rng.uniform(0, noise, (ROWS, COLS))
    for u, v in points.reshape(-1, 2):
        img += 200.0 * np.exp(-(((xx - u) / 1.8) ** 2 + ((yy - v) / 1.4) ** 2) / 2)
    img[352:356, 60:420] += 180.0  # a long bright structure the bar top-hat must remove
    return np.clip(img, 0, 255).astype(np.uint8)


@dataclass
class SynthRecording:
    path: Path
    image_to_probe: np.ndarray
    wire_pixels: np.ndarray  # (frames, 3, 3, 2) truth, MF image


def write_recording(
    path: Path,
    n: int,
    *,
    seed: int = 0,
    invalid: frozenset[int] = frozenset(),
    no_image: frozenset[int] = frozenset(),
    flip: str | None = None,
    orientation: str = "MF",
    smooth: bool = False,
    tracker_lag_s: float = 0.0,
    header_fields: dict[str, str] | None = None,
) -> SynthRecording:
    """Write ``n`` synthetic N-wire frames; ``invalid`` frames get INVALID ProbeToTracker;
    ``flip`` ("lr", "ud") mirrors the stored pixels; ``orientation`` is what the file says;
    ``smooth``: the poses follow a smooth sweep (10 frames/s) rather than random jumps;
    ``tracker_lag_s``: each frame stamped t stores the pose of t + this (a smooth sweep's)."""
    rng = np.random.default_rng(seed)
    itp = image_to_probe_truth()
    scale = np.diag([SPACING[0], SPACING[1], (SPACING[0] + SPACING[1]) / 2, 1.0])
    rigid_c = itp @ np.linalg.inv(scale)  # ImageMm → Probe (rigid)
    reference_to_tracker = np.eye(4)
    reference_to_tracker[:3, :3] = Rotation.from_euler("z", 30, degrees=True).as_matrix()
    reference_to_tracker[:3, 3] = [100.0, -20.0, 300.0]
    frames, truth = [], []
    for i in range(n):
        g = image_pose(rng, 0.1 * i if smooth else None)
        image_to_phantom = g @ scale
        pix = wire_pixels(image_to_phantom)
        truth.append(pix)
        stored = image_pose(rng, 0.1 * i + tracker_lag_s) if tracker_lag_s else g
        probe_to_phantom = stored @ np.linalg.inv(rigid_c)
        probe_to_tracker = reference_to_tracker @ PHANTOM_TO_REFERENCE @ probe_to_phantom
        img = render(pix, rng)
        if flip == "lr":
            img = img[:, ::-1]
        elif flip == "ud":
            img = img[::-1]
        status = TransformStatus.INVALID if i in invalid else TransformStatus.OK
        frames.append(
            TrackedFrame(
                image=np.ascontiguousarray(img),
                transforms={
                    "ProbeToTracker": TrackedTransform(probe_to_tracker, status),
                    "ReferenceToTracker": TrackedTransform(reference_to_tracker),
                },
                t_device=10.0 + 0.1 * i,
                frame_number=i,
                orientation=orientation,
                image_ok=i not in no_image,
            )
        )
    write_sequence(path, frames, orientation=orientation, header_fields=header_fields or {})
    return SynthRecording(path, itp, np.array(truth))


def segmented_sweep(
    n: int,
    config,
    *,
    seed: int = 0,
    speed: float = 1.0,
    tracker_lag_s: float = 0.0,
    t0_s: float = 10.0,
    dot_noise_px: float = 0.0,
    jitter_deg: float = 0.0,
    jitter_mm: float = 0.0,
):
    """A segmented smooth sweep (``SegmentedSequence``) straight from the truth, no images.

    Frames at 10/s from ``t0_s``; the sweep runs ``speed`` times as fast as
    :func:`image_pose`'s; each stored pose is the true one at t + ``tracker_lag_s`` (as in
    :func:`write_recording`) times an independent tracker jitter (``jitter_deg``,
    ``jitter_mm``: SD per axis); ``dot_noise_px``: SD of every dot, px. ``config`` is the
    :class:`CalibrationConfig` of :func:`config_xml`.
    """
    from usnav.calibration.segmentation import FrameSegmentation, FrameStatus, middle_ratios
    from usnav.calibration.spatial import SegmentedSequence

    rng = np.random.default_rng(seed)
    scale = np.diag([SPACING[0], SPACING[1], (SPACING[0] + SPACING[1]) / 2, 1.0])
    rigid_c = image_to_probe_truth() @ np.linalg.inv(scale)
    times = t0_s + 0.1 * np.arange(n)
    wires, middles, ptps = [], [], []
    for t in times:
        pix = wire_pixels(image_pose(rng, speed * t) @ scale)
        pix = pix + rng.normal(0.0, dot_noise_px, pix.shape) if dot_noise_px else pix
        alpha = middle_ratios(pix)
        middles.append(
            [p.middle_points(alpha[j : j + 1])[0] for j, p in enumerate(config.patterns)]
        )
        jitter = np.eye(4)
        jitter[:3, :3] = Rotation.from_rotvec(np.radians(rng.normal(0, jitter_deg, 3))).as_matrix()
        jitter[:3, 3] = rng.normal(0.0, jitter_mm, 3)
        stored = image_pose(rng, speed * (t + tracker_lag_s))
        ptps.append(np.linalg.inv(stored @ np.linalg.inv(rigid_c) @ jitter))
        wires.append(pix)
    w, ph, ptp = np.array(wires), np.array(middles), np.array(ptps)
    probe = np.einsum("nij,nkj->nki", ptp[:, :3, :3], ph) + ptp[:, None, :3, 3]
    return SegmentedSequence(
        "synthetic sweep",
        "MF",
        [FrameSegmentation(FrameStatus.OK) for _ in range(n)],
        np.arange(n),
        w[:, :, 1, :],
        w,
        ph,
        probe,
        ptp,
        frame_times_s=times,
        frame_phantom_to_probe=ptp,
        frame_pose_ok=np.ones(n, dtype=bool),
        image_size=(COLS, ROWS),
    )
