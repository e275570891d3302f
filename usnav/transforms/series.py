"""Timed pose series and interpolation (PLUS ``vtkPlusBuffer`` interpolation).

Rotation by spherical linear interpolation (scipy's ``Slerp``), translation linear. A pose is
never extrapolated more than ``max_gap_s`` beyond the first or last sample, nor interpolated
across a gap between samples longer than ``max_gap_s``: that raises
:class:`~usnav.errors.ExtrapolationError` saying how far the nearest sample is.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from usnav.errors import ExtrapolationError
from usnav.frames import TrackedTransform, TransformStatus

#: A time within this of a sample's is that sample, s: its own pose and status, not an
#: interpolation with its neighbour (the live probe client and the lag search pair so).
SAME_SAMPLE_S = 1e-6


class PoseSeries:
    """Rigid poses (4×4, mm) at increasing timestamps (s), with per-sample status.

    Parameters
    ----------
    times_s
        Sample times, s, strictly increasing (duplicates are removed, keeping the last).
    matrices
        Shape (n, 4, 4). Scaled matrices are not supported: interpolate rigid poses only.
    statuses
        Per-sample status (defaults to all OK).
    name
        Transform name, for messages.
    """

    def __init__(
        self,
        times_s: np.ndarray,
        matrices: np.ndarray,
        statuses: list[TransformStatus] | None = None,
        name: str = "transform",
    ):
        t = np.asarray(times_s, dtype=np.float64).ravel()
        m = np.asarray(matrices, dtype=np.float64).reshape(-1, 4, 4)
        if len(t) != len(m):
            raise ValueError(f"{name}: {len(t)} times but {len(m)} matrices")
        st = list(statuses) if statuses is not None else [TransformStatus.OK] * len(t)
        if len(st) != len(t):
            raise ValueError(f"{name}: {len(t)} times but {len(st)} statuses")
        order = np.argsort(t, kind="stable")
        t, m, st = t[order], m[order], [st[i] for i in order]
        keep = np.ones(len(t), dtype=bool)
        keep[:-1] = np.diff(t) > 0  # keep the last of equal timestamps
        self.times_s = t[keep]
        self.matrices = m[keep]
        self.statuses = [s for s, k in zip(st, keep, strict=True) if k]
        self.name = name
        self._rotations: Rotation | None = None

    def __len__(self) -> int:
        return len(self.times_s)

    def _rot(self) -> Rotation:
        if self._rotations is None:
            mats = self.matrices[:, :3, :3].copy()
            bad = ~np.all(np.isfinite(mats), axis=(1, 2)) | (np.abs(np.linalg.det(mats)) < 1e-9)
            mats[bad] = np.eye(3)
            self._rotations = Rotation.from_matrix(mats)
        return self._rotations

    def at(self, t_s: float, max_gap_s: float = 0.1) -> TrackedTransform:
        """Interpolated pose at ``t_s``.

        Parameters
        ----------
        t_s
            Time, s, on the series' clock.
        max_gap_s
            Longest allowed distance to a sample when extrapolating (the pose is then held at
            the nearest sample) and longest gap between the two samples bracketing ``t_s``.

        Returns
        -------
        TrackedTransform
            The pose. At a sample's own time (within :data:`SAME_SAMPLE_S`) that sample, with its
            own status; between two samples, INVALID if either is not OK (PLUS does the same).

        Raises
        ------
        ExtrapolationError
            If ``t_s`` is more than ``max_gap_s`` outside the samples or inside a longer gap.
        """
        n = len(self.times_s)
        if n == 0:
            raise ExtrapolationError(f"{self.name}: no samples to interpolate from")
        t = self.times_s
        k = int(np.searchsorted(t, t_s))
        for i in (k - 1, k):
            if 0 <= i < n and abs(t[i] - t_s) <= SAME_SAMPLE_S:
                return TrackedTransform(self.matrices[i].copy(), self.statuses[i])
        if t_s <= t[0] or t_s >= t[-1] or n == 1:
            i = 0 if t_s <= t[0] else n - 1
            distance = abs(t_s - t[i])
            if distance > max_gap_s:
                side = "before the first" if t_s < t[0] else "after the last"
                raise ExtrapolationError(
                    f"{self.name}: {t_s:.3f} s is {distance:.3f} s {side} tracked sample; "
                    f"refusing to extrapolate more than {max_gap_s:.3f} s"
                )
            return TrackedTransform(self.matrices[i].copy(), self.statuses[i])
        j = int(np.searchsorted(t, t_s, side="right"))
        i = j - 1
        gap = t[j] - t[i]
        if gap > max_gap_s:
            raise ExtrapolationError(
                f"{self.name}: {t_s:.3f} s falls in a {gap:.3f} s gap between tracked samples "
                f"(longer than {max_gap_s:.3f} s); refusing to interpolate"
            )
        w = (t_s - t[i]) / gap
        status = self.statuses[i].combine(self.statuses[j])
        rots = self._rot()
        r = _slerp(rots[i], rots[j], w)
        out = np.eye(4)
        out[:3, :3] = r.as_matrix()
        out[:3, 3] = (1 - w) * self.matrices[i, :3, 3] + w * self.matrices[j, :3, 3]
        return TrackedTransform(out, status)


def _slerp(r0: Rotation, r1: Rotation, w: float) -> Rotation:
    """Slerp between two rotations, ``w`` in [0, 1]."""
    delta = r0.inv() * r1
    return r0 * Rotation.from_rotvec(delta.as_rotvec() * w)
