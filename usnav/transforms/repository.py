"""A transform repository over the coordinate-frame tree (PLUS ``vtkPlusTransformRepository``).

Transforms are stored as edges ``From → To``; any transform between two frames connected by a
path is computed by composing stored edges, inverting where the path runs backwards, and the
result's status is the worst status along the path (INVALID beats MISSING beats OK).
"""

from __future__ import annotations

import builtins
import itertools
from collections import deque
from collections.abc import Iterable, Mapping

import numpy as np

from usnav.errors import TransformError
from usnav.frames import TrackedFrame, TrackedTransform, TransformStatus
from usnav.transforms.names import join_name, split_name


class TransformRepository:
    """Frame tree with composition, inversion and status propagation.

    Examples
    --------
    >>> repo = TransformRepository()
    >>> repo.set("ProbeToTracker", np.eye(4))
    >>> repo.set("ReferenceToTracker", np.eye(4))
    >>> repo.get("ProbeToReference").status
    <TransformStatus.OK: 'OK'>
    """

    def __init__(self, transforms: Mapping[str, TrackedTransform | np.ndarray] | None = None):
        self._edges: dict[tuple[str, str], TrackedTransform] = {}
        self._persistent: set[tuple[str, str]] = set()
        for name, value in (transforms or {}).items():
            if isinstance(value, TrackedTransform):
                self.set(name, value.matrix, value.status)
            else:
                self.set(name, value)

    @classmethod
    def from_frame(
        cls,
        frame: TrackedFrame | Mapping[str, TrackedTransform],
        *,
        calibration: Mapping[str, np.ndarray] | None = None,
        exclude: Iterable[str] = (),
    ) -> TransformRepository:
        """A repository holding what one frame carries (one row of a recording, or a frame
        from a device).

        Parameters
        ----------
        frame
            A :class:`~usnav.frames.TrackedFrame`, or its transforms (name → matrix + status).
        calibration
            Transforms stored first, as persistent (e.g. ``{"ImageToProbe": matrix}``); a
            frame's own copy of them is then skipped as redundant.
        exclude
            Names not to take from the frame (e.g. the ``ImageToReference`` a server embeds,
            when usnav's own calibration is to be used instead).

        Transforms whose frames are already connected (a PLUS server sends
        ``ProbeToTracker``, ``ReferenceToTracker`` *and* ``ProbeToReference``) or that are
        malformed are skipped: the first one to connect two frames wins, valid (OK) ones
        first, so a redundant transform that is MISSING or INVALID (``ProbeToReference``
        configured but never sent) does not hide a valid path (``ProbeToTracker`` +
        ``ReferenceToTracker``).
        """
        repo = cls()
        for name, matrix in (calibration or {}).items():
            repo.set(name, matrix, persistent=True)
        transforms = frame.transforms if isinstance(frame, TrackedFrame) else frame
        skip = set(exclude)
        ordered = sorted(transforms.items(), key=lambda item: not item[1].ok)  # stable
        for name, tt in ordered:
            if name in skip:
                continue
            try:
                repo.set(name, tt.matrix, tt.status)
            except TransformError:
                continue  # redundant (already connected) or malformed: the rest decides
        return repo

    # -- editing ---------------------------------------------------------------------------
    def set(
        self,
        name: str,
        matrix: np.ndarray,
        status: TransformStatus = TransformStatus.OK,
        *,
        persistent: bool = False,
    ) -> None:
        """Store ``name`` (``<From>To<To>``), replacing it or its inverse if present.

        Parameters
        ----------
        name
            Transform name, e.g. ``ImageToProbe``.
        matrix
            4×4 homogeneous matrix mapping *From* points to *To* points (mm).
        status
            Its status.
        persistent
            A calibration-like transform that :meth:`clear_frame_transforms` keeps.

        Raises
        ------
        TransformError
            If the name is malformed, the matrix is not 4×4 and finite, or the new edge would
            close a loop with transforms already stored (the tree would be ambiguous).
        """
        source, target = split_name(name)
        if source == target:
            raise TransformError(f"{name}: a transform from a frame to itself is not stored")
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape != (4, 4):
            raise TransformError(f"{name}: expected a 4×4 matrix, got shape {m.shape}")
        if status is TransformStatus.OK and not np.all(np.isfinite(m)):
            raise TransformError(f"{name}: matrix has NaN or infinite values")
        key, reverse = (source, target), (target, source)
        is_new = key not in self._edges and reverse not in self._edges
        if is_new and self._find_path(source, target) is not None:
            raise TransformError(
                f"{name}: {source} and {target} are already connected through other "
                "transforms; storing it would make the tree ambiguous"
            )
        self._edges.pop(reverse, None)
        self._persistent.discard(reverse)
        self._edges[key] = TrackedTransform(m.copy(), status)
        if persistent:
            self._persistent.add(key)
        else:
            self._persistent.discard(key)

    def set_status(self, name: str, status: TransformStatus) -> None:
        """Change the status of a stored transform (or of its stored inverse)."""
        source, target = split_name(name)
        for key in ((source, target), (target, source)):
            if key in self._edges:
                self._edges[key] = TrackedTransform(self._edges[key].matrix, status)
                return
        raise TransformError(f"{name} is not stored; stored: {', '.join(self.names()) or 'none'}")

    def remove(self, name: str) -> None:
        """Remove a stored transform (or its stored inverse); no error if absent."""
        source, target = split_name(name)
        for key in ((source, target), (target, source)):
            self._edges.pop(key, None)
            self._persistent.discard(key)

    def clear_frame_transforms(self) -> None:
        """Remove every transform not stored as persistent (e.g. before the next frame)."""
        for key in list(self._edges):
            if key not in self._persistent:
                del self._edges[key]

    def update_from_frame(self, frame: TrackedFrame, *, skip_redundant: bool = True) -> None:
        """Store every transform a frame carries.

        Frames from a PLUS server often carry redundant transforms (``ProbeToTracker``,
        ``ReferenceToTracker`` *and* ``ProbeToReference``); with ``skip_redundant`` a
        transform whose frames are already connected is skipped instead of raising.
        """
        for name, tt in frame.transforms.items():
            try:
                self.set(name, tt.matrix, tt.status)
            except TransformError:
                if not skip_redundant:
                    raise

    # -- queries ---------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Names of the stored transforms (not the ones that can be computed)."""
        return [join_name(a, b) for a, b in self._edges]

    def frames(self) -> builtins.set[str]:
        """All coordinate frames that appear in a stored transform."""
        return {f for key in self._edges for f in key}

    def has(self, name: str) -> bool:
        """True if ``name`` can be computed."""
        source, target = split_name(name)
        return source == target or self._find_path(source, target) is not None

    def get(self, name: str) -> TrackedTransform:
        """Compute ``name`` by composing along the tree.

        Returns
        -------
        TrackedTransform
            The matrix and the worst status along the path.

        Raises
        ------
        TransformError
            If no path connects the two frames.
        """
        source, target = split_name(name)
        if source == target:
            return TrackedTransform(np.eye(4), TransformStatus.OK)
        path = self._find_path(source, target)
        if path is None:
            known = ", ".join(sorted(self.names())) or "none"
            raise TransformError(
                f"cannot compute {name}: no chain of transforms connects {source} and "
                f"{target} (stored: {known})"
            )
        matrix = np.eye(4)
        status = TransformStatus.OK
        for a, b in itertools.pairwise(path):
            if (a, b) in self._edges:
                edge = self._edges[(a, b)]
                step = edge.matrix
            else:
                edge = self._edges[(b, a)]
                step = _safe_inverse(edge.matrix)
            matrix = step @ matrix
            status = status.combine(edge.status)
            if not np.all(np.isfinite(step)):
                status = TransformStatus.INVALID
        return TrackedTransform(matrix, status)

    def chain(self, name: str) -> list[str]:
        """The stored transforms :meth:`get` composes for ``name``, in order (each as
        stored: an inverse step is named as stored); [] when no path connects the frames."""
        source, target = split_name(name)
        path = self._find_path(source, target) if source != target else None
        if path is None:
            return []
        return [
            join_name(a, b) if (a, b) in self._edges else join_name(b, a)
            for a, b in itertools.pairwise(path)
        ]

    def matrix(self, name: str) -> np.ndarray:
        """The matrix of ``name`` regardless of status (see :meth:`get`)."""
        return self.get(name).matrix

    def _find_path(self, source: str, target: str) -> list[str] | None:
        neighbours: dict[str, list[str]] = {}
        for a, b in self._edges:
            neighbours.setdefault(a, []).append(b)
            neighbours.setdefault(b, []).append(a)
        if source not in neighbours or target not in neighbours:
            return None
        previous: dict[str, str | None] = {source: None}
        queue = deque([source])
        while queue:
            node = queue.popleft()
            if node == target:
                path = [node]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])  # type: ignore[arg-type]
                return path[::-1]
            for nxt in neighbours[node]:
                if nxt not in previous:
                    previous[nxt] = node
                    queue.append(nxt)
        return None

    def copy(self) -> TransformRepository:
        out = TransformRepository()
        out._edges = dict(self._edges)
        out._persistent = set(self._persistent)
        return out

    def __contains__(self, name: str) -> bool:
        return self.has(name)

    def __repr__(self) -> str:
        return f"TransformRepository({', '.join(self.names())})"


def _safe_inverse(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a matrix that may be garbage (an INVALID transform): never raises."""
    try:
        return np.linalg.inv(matrix)
    except np.linalg.LinAlgError:
        return np.full((4, 4), np.nan)


def compose(names_and_matrices: Iterable[np.ndarray]) -> np.ndarray:
    """Product of matrices applied right-to-left, as written (``A @ B @ C``)."""
    out = np.eye(4)
    for m in names_and_matrices:
        out = out @ np.asarray(m, dtype=np.float64)
    return out
