"""A freehand tracked sweep: hand motion of the probe, optical tracking with jitter, latency.

Frames (all rigid, mm): ``Transducer`` (centre of the array: x → marked side, y → depth,
z = x × y), ``Probe`` (the probe's marker), ``Reference`` (the patient's marker), ``Tracker``
(the camera), ``Spine`` (anatomy, :mod:`usnav.sim.anatomy`), ``Mri`` (RAS).

``ImageToProbe = TransducerToProbe · ImageToTransducer`` is fixed (one calibrated probe).
The true pose of the image of frame ``i`` (timestamp ``t_i``) is the hand pose at
``t_i + tracker_lag_s``; the recorded ``ProbeToTracker`` is the hand pose at ``t_i`` (plus
jitter) — so "the pose for an image stamped t is the tracker's pose at t + tracker_lag_s",
as :class:`usnav.config.calibration.TemporalCalibration` defines it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from usnav.sim.anatomy import SpineAnatomy
from usnav.sim.ultrasound import ProbeGeometry

#: TransducerToProbe of the simulated probe: the marker sits on the handle, ~12 cm above the
#: array, turned and tilted as a real clip-on marker is.
TRANSDUCER_TO_PROBE = np.eye(4)
TRANSDUCER_TO_PROBE[:3, :3] = Rotation.from_euler(
    "zyx", [91.5, -3.8, 176.2], degrees=True
).as_matrix()
TRANSDUCER_TO_PROBE[:3, 3] = [-6.4, 118.3, 9.7]


def image_to_probe(geometry: ProbeGeometry) -> np.ndarray:
    """The fixed calibration ``ImageToProbe`` (pixels → Probe mm) for an image geometry."""
    return TRANSDUCER_TO_PROBE @ geometry.image_to_transducer()


def rigid(rotvec: np.ndarray, translation: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    m[:3, 3] = translation
    return m


class SmoothNoise:
    """A random sum of sinusoids with unit RMS: slow, smooth hand variation."""

    def __init__(
        self, rng: np.random.Generator, f_lo: float = 0.1, f_hi: float = 1.0, terms: int = 4
    ):
        self.freq = rng.uniform(f_lo, f_hi, terms)
        self.phase = rng.uniform(0.0, 2 * np.pi, terms)
        amp = rng.uniform(0.5, 1.0, terms)
        self.amp = amp / np.sqrt(np.sum(amp**2) / 2.0)

    def __call__(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)[..., None]
        return np.sum(self.amp * np.sin(2 * np.pi * self.freq * t + self.phase), axis=-1)


class HandMotion:
    """The probe's path over the laminectomy: ``TransducerToSpine`` at any time (s).

    Speed varies (it may nearly stop), the probe drifts sideways and up and down, tilts a few
    degrees about every axis, follows the spine's curvature, and trembles (8-12 Hz).

    ``pattern`` is the sweep: ``transverse`` (image plane across the cord, sliding from
    ``z_start`` to ``z_end``; also used for ``partial``), ``sagittal`` (image plane along the
    cord, the array along z, sliding across it from ``x_range[0]`` to ``x_range[1]`` mm) or
    ``fan`` (a transverse plane rocked about the array's axis, from ``fan_range_deg[0]`` to
    ``fan_range_deg[1]``, the face staying where it is).
    """

    def __init__(
        self,
        anat: SpineAnatomy,
        rng: np.random.Generator,
        duration_s: float,
        z_start: float,
        z_end: float,
        height_mm: float,
        marked_right: bool = True,
        pattern: str = "transverse",
        x_range: tuple[float, float] = (0.0, 0.0),
        fan_range_deg: tuple[float, float] = (0.0, 0.0),
    ):
        self.anat = anat
        self.pattern = pattern
        self.x_range = x_range
        self.fan_range_deg = fan_range_deg
        self.duration = max(duration_s, 1e-3)
        self.z_start, self.z_end = z_start, z_end
        self.height = height_mm
        self.marked_right = marked_right
        self.speed = SmoothNoise(rng, 0.15, 0.8, 4)
        self.speed_amp = rng.uniform(0.25, 0.45)
        self.lateral = SmoothNoise(rng, 0.1, 0.6)
        self.lateral_amp = rng.uniform(0.6, 1.5)
        self.lateral_off = rng.uniform(-1.0, 1.0)
        self.vertical = SmoothNoise(rng, 0.1, 0.8)
        self.vertical_amp = rng.uniform(0.3, 0.7)
        self.tilts = [SmoothNoise(rng, 0.1, 0.9) for _ in range(3)]
        self.tilt_amp = rng.uniform([2.0, 1.5, 2.0], [4.0, 3.0, 4.0])  # deg: about x, y, z
        self.tilt_off = rng.uniform(-2.0, 2.0, 3)
        self.tremor_freq = rng.uniform(8.0, 12.0, 6)
        self.tremor_phase = rng.uniform(0, 2 * np.pi, 6)
        # progress s(t) along the sweep: integral of a positive, varying speed, s(0)=0, s(T)=1
        grid = np.linspace(-2.0, self.duration + 2.0, int((self.duration + 4.0) * 500) + 1)
        v = np.maximum(0.12, 1.0 + self.speed_amp * self.speed(grid))
        s = np.concatenate([[0.0], np.cumsum(0.5 * (v[1:] + v[:-1]) * np.diff(grid))])
        s0, s1 = np.interp([0.0, self.duration], grid, s)
        self._grid, self._s = grid, (s - s0) / (s1 - s0)

    def progress(self, t: np.ndarray) -> np.ndarray:
        return np.interp(t, self._grid, self._s)

    def pose(self, t: np.ndarray) -> np.ndarray:
        """TransducerToSpine, shape (n, 4, 4), at times ``t`` (s, sweep clock)."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        a = self.anat
        s = self.progress(t)
        z = self.z_start + (self.z_end - self.z_start) * s
        along_x = self.x_range[0] + (self.x_range[1] - self.x_range[0]) * s
        cx, cy = a.centre_offset(z)
        tremor = [
            0.04 * np.sin(2 * np.pi * self.tremor_freq[k] * t + self.tremor_phase[k])
            for k in range(6)
        ]
        pos = np.stack(
            [
                cx + along_x + self.lateral_off + self.lateral_amp * self.lateral(t) + tremor[0],
                cy
                + a.dura_posterior_y
                - self.height
                + self.vertical_amp * self.vertical(t)
                + tremor[1],
                z + tremor[2],
            ],
            axis=-1,
        )
        slope = z / a.kyphosis_radius  # d cy / dz: keep the beam perpendicular to the cord
        tilt = np.stack(
            [
                self.tilt_off[k] + self.tilt_amp[k] * self.tilts[k](t) + 1.5 * tremor[3 + k]
                for k in range(3)
            ],
            axis=-1,
        )
        base = np.eye(3) if self.marked_right else np.diag([-1.0, 1.0, -1.0])
        if self.pattern == "sagittal":  # the array along the cord: x -> superior, z -> left
            base = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]) @ base
        follow = Rotation.from_euler("x", -np.arctan(slope)[:, None])
        hand = Rotation.from_euler("yxz", tilt[:, [1, 0, 2]], degrees=True)
        rot = follow * Rotation.from_matrix(np.tile(base, (len(t), 1, 1)))
        if self.pattern == "fan":  # rock the plane about the array (the transducer's x axis)
            a0, a1 = self.fan_range_deg
            rot = rot * Rotation.from_euler("x", (a0 + (a1 - a0) * s)[:, None], degrees=True)
        rot = rot * hand
        out = np.tile(np.eye(4), (len(t), 1, 1))
        out[:, :3, :3] = rot.as_matrix()
        out[:, :3, 3] = pos
        return out


@dataclass
class TrackedSweep:
    """Everything about the sweep except the images.

    Attributes
    ----------
    timestamps_s
        (n,) frame timestamps (PLUS relative clock), s.
    frame_numbers
        (n,) frame counter.
    image_poses
        (n, 4, 4) true TransducerToSpine at which each image is simulated (t_i + lag).
    probe_to_tracker, reference_to_tracker
        (n, 4, 4) recorded poses (with jitter).
    reference_to_mri
        Ground truth ReferenceToMri.
    image_to_probe
        The calibration.
    tracker_lag_s
        Simulated lag (0 if none).
    true_image_to_mri
        (n, 4, 4) the true ImageToMri of each frame (with pixel scaling).
    """

    timestamps_s: np.ndarray
    frame_numbers: np.ndarray
    image_poses: np.ndarray
    probe_to_tracker: np.ndarray
    reference_to_tracker: np.ndarray
    reference_to_mri: np.ndarray
    image_to_probe: np.ndarray
    tracker_lag_s: float
    true_image_to_mri: np.ndarray
    sweep_z: tuple[float, float]
    height_mm: float
    pattern: str = "transverse"


def plan_sweep(
    anat: SpineAnatomy,
    geometry: ProbeGeometry,
    rng: np.random.Generator,
    *,
    n_frames: int,
    frame_rate_hz: float,
    sweep_length_mm: float | None,
    tracker_lag_s: float,
    jitter_mm: float,
    jitter_deg: float,
    pattern: str = "transverse",
    coverage: float = 1.0,
    coverage_centre: float = 0.5,
    fan_half_angle_deg: float = 20.0,
    sagittal_half_width_mm: float = 8.0,
) -> TrackedSweep:
    """Plan the sweep, the tracker and the patient reference; simulate the tracking.

    ``pattern`` (see :class:`HandMotion`): ``transverse`` slides ``sweep_length_mm`` (default
    the window less 6 mm) centred on the tumor; ``partial`` slides ``coverage`` of the window
    centred at ``coverage_centre`` of it (wherever the tumor is); ``sagittal`` slides
    ± ``sagittal_half_width_mm`` across the cord over the tumor; ``fan`` rocks
    ± ``fan_half_angle_deg`` over the tumor. The random draws are the same for every pattern.
    """
    lo, hi = anat.window
    window = hi - lo
    length = min(sweep_length_mm if sweep_length_mm is not None else window - 6.0, window)
    if pattern == "partial":
        length = coverage * window
    elif pattern in ("sagittal", "fan"):
        length = 0.0
    tz = float(anat.tumor.center[2])
    if pattern == "partial":
        centre = lo + float(np.clip(coverage_centre, 0.0, 1.0)) * window
        centre = float(np.clip(centre, lo + length / 2, hi - length / 2))
    else:
        centre = (
            float(np.clip(tz, lo + length / 2 + 1.0, hi - length / 2 - 1.0))
            if length + 2.0 < window
            else (lo + hi) / 2
        )
    forward = rng.random() < 0.5
    z0, z1 = (
        (centre - length / 2, centre + length / 2)
        if forward
        else (centre + length / 2, centre - length / 2)
    )
    sign = 1.0 if forward else -1.0
    x_range = (
        (-sign * sagittal_half_width_mm, sign * sagittal_half_width_mm)
        if pattern == "sagittal"
        else (0.0, 0.0)
    )
    fan_range = (
        (-sign * fan_half_angle_deg, sign * fan_half_angle_deg) if pattern == "fan" else (0.0, 0.0)
    )
    height = rng.uniform(10.0, 13.0)
    duration = (n_frames - 1) / frame_rate_hz
    hand = HandMotion(
        anat,
        rng,
        duration,
        z0,
        z1,
        height,
        marked_right=bool(rng.random() < 0.5),
        pattern=pattern,
        x_range=x_range,
        fan_range_deg=fan_range,
    )

    t0 = rng.uniform(5.0, 60.0)
    tau = np.arange(n_frames) / frame_rate_hz + rng.normal(0.0, 3e-4, n_frames)
    tau[0] = 0.0
    tau = np.maximum.accumulate(tau + np.arange(n_frames) * 1e-9)
    tracked_poses = hand.pose(tau)
    image_poses = hand.pose(tau + tracker_lag_s)

    # patient reference marker: clamped beside the wound, caudal, above the skin
    side = 1.0 if rng.random() < 0.5 else -1.0
    ref_pos = np.array(
        [
            side * rng.uniform(20.0, 35.0),
            anat.skin_y0 - rng.uniform(30.0, 50.0),
            lo - rng.uniform(25.0, 45.0),
        ]
    )
    ref_to_spine = np.eye(4)
    ref_to_spine[:3, :3] = Rotation.random(random_state=rng).as_matrix()
    ref_to_spine[:3, 3] = ref_pos
    # camera ~1.7 m away, posterior, superior and to one side, looking at the field
    look = np.array([rng.uniform(-0.5, 0.5), -1.0, rng.uniform(0.2, 0.8)])
    look /= np.linalg.norm(look)
    field_centre = np.array([0.0, anat.dura_posterior_y - 20.0, (lo + hi) / 2])
    z_axis = -look
    x_axis = np.cross(z_axis, rng.normal(size=3))
    x_axis /= np.linalg.norm(x_axis)
    tracker_to_spine = np.eye(4)
    tracker_to_spine[:3, :3] = np.column_stack([x_axis, np.cross(z_axis, x_axis), z_axis])
    tracker_to_spine[:3, 3] = field_centre + rng.uniform(1500.0, 1900.0) * look
    spine_to_tracker = np.linalg.inv(tracker_to_spine)

    probe_to_transducer = np.linalg.inv(TRANSDUCER_TO_PROBE)
    true_probe_to_tracker = spine_to_tracker @ tracked_poses @ probe_to_transducer
    true_ref_to_tracker = spine_to_tracker @ ref_to_spine

    def jitter(m: np.ndarray) -> np.ndarray:
        n = len(m)
        rot = rng.normal(0.0, np.radians(jitter_deg) / np.sqrt(3.0), (n, 3))
        tr = rng.normal(0.0, jitter_mm / np.sqrt(3.0), (n, 3))
        d = np.tile(np.eye(4), (n, 1, 1))
        d[:, :3, :3] = Rotation.from_rotvec(rot).as_matrix()
        d[:, :3, 3] = tr
        return m @ d

    ref_seq = jitter(np.broadcast_to(true_ref_to_tracker, (n_frames, 4, 4)).copy())
    probe_seq = jitter(true_probe_to_tracker)
    i2p = image_to_probe(geometry)
    reference_to_mri = anat.spine_to_mri @ ref_to_spine
    true_image_to_mri = anat.spine_to_mri @ image_poses @ geometry.image_to_transducer()
    first = int(rng.integers(100, 5000))
    return TrackedSweep(
        timestamps_s=t0 + tau,
        frame_numbers=first + np.arange(n_frames),
        image_poses=image_poses,
        probe_to_tracker=probe_seq,
        reference_to_tracker=ref_seq,
        reference_to_mri=reference_to_mri,
        image_to_probe=i2p,
        tracker_lag_s=tracker_lag_s,
        true_image_to_mri=true_image_to_mri,
        sweep_z=(z0, z1),
        height_mm=height,
        pattern=pattern,
    )
