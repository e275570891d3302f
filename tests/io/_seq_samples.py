"""Synthetic tracked frames for sequence-file tests (deterministic, no shared data needed)."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from usnav.frames import TrackedFrame, TrackedTransform, TransformStatus


def pose(i: int) -> np.ndarray:
    """A rigid pose that changes with ``i`` (mm)."""
    m = np.eye(4)
    m[:3, :3] = Rotation.from_rotvec([0.01 * i, -0.02 * i, 0.3]).as_matrix()
    m[:3, 3] = [10.5 + i, -3.25 * i, 100.0 / (abs(i) + 3)]
    return m


def image(i: int, shape: tuple[int, ...], dtype: str = "uint8") -> np.ndarray:
    """Pixels that differ per frame and per position (and compress a little)."""
    size = int(np.prod(shape))
    top = np.iinfo(dtype).max
    values = (np.arange(size, dtype=np.int64) * 7 + i * 131) % (top + 1)
    values[: size // 3] = i % 5  # a flat part, as the dark area of an ultrasound frame
    return values.astype(dtype).reshape(shape)


def frames(
    n: int, shape: tuple[int, ...] = (24, 32), dtype: str = "uint8", start_time: float = 100.0
) -> list[TrackedFrame]:
    """``n`` frames with ProbeToTracker (OK), ReferenceToTracker (INVALID every 3rd) and a
    custom field, 50 ms apart."""
    out = []
    for i in range(n):
        out.append(
            TrackedFrame(
                image=image(i, shape, dtype),
                transforms={
                    "ProbeToTracker": TrackedTransform(pose(i)),
                    "ReferenceToTracker": TrackedTransform(
                        pose(-i), TransformStatus.INVALID if i % 3 == 2 else TransformStatus.OK
                    ),
                },
                t_device=start_time + 0.05 * i + 1e-7 * i,
                t_received=start_time + 0.05 * i,
                frame_number=1000 + i,
                orientation="MF",
                fields={"UnfilteredTimestamp": f"{start_time + 0.05 * i:.6f}", "Depth": "40"},
            )
        )
    return out


def oblique_itk_image(sitk):
    """A 13 × 11 × 7 SimpleITK image (int16) with spacing, origin and a rotated direction."""
    image = sitk.GetImageFromArray(np.arange(7 * 11 * 13, dtype=np.int16).reshape(7, 11, 13))
    image.SetSpacing((0.7, 1.1, 2.3))
    image.SetOrigin((12.5, -40.25, 7.0))
    c, s = np.cos(0.6), np.sin(0.6)
    image.SetDirection([c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0])
    return image
