"""Pixel access for sequence files: memory-mapped raw data, lazily inflated compressed data.

Raw (uncompressed) pixels are memory-mapped: opening costs nothing and a frame is a view
into the page cache, so a 2 GB recording opens in milliseconds and only the frames that
are looked at are read from disk.

Compressed pixels (MetaIO ``CompressedData = True``: one zlib stream across all frames;
NRRD ``encoding: gz``: one gzip stream) cannot be indexed directly. Nothing is inflated on
open. The first access to frame *i* inflates the stream up to frame *i* (output is bounded
to one frame at a time; memory stays O(frame)). While it goes, a checkpoint (the input
position and a copy of the inflater state, ~50 kB) is kept every ~32 MB of output, so a
later jump backwards restarts from the nearest checkpoint instead of the beginning, and a
sequential pass (playback, conversion) inflates each frame exactly once. The last few
frames are cached.
"""

from __future__ import annotations

import threading
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np

#: Bytes of compressed input read per step.
_CHUNK = 1 << 18
#: Output bytes between two inflater checkpoints.
_CHECKPOINT_BYTES = 32 << 20
#: Decoded frames kept for repeated access.
_CACHE_FRAMES = 4


class PixelError(Exception):
    """The pixel data cannot be decoded at frame ``frame`` (converted to InputError above)."""

    def __init__(self, frame: int, problem: str):
        self.frame = frame
        self.problem = problem
        super().__init__(problem)


class RawPixels:
    """Uncompressed frames, memory-mapped (read-only views)."""

    def __init__(
        self,
        path: Path,
        offset: int,
        n_frames: int,
        frame_shape: tuple[int, ...],
        dtype: np.dtype,
    ):
        self._shape = frame_shape
        self._dtype = np.dtype(dtype)
        self._map: np.memmap | None = None
        if n_frames > 0 and int(np.prod(frame_shape)) > 0:
            self._map = np.memmap(
                path, dtype=self._dtype, mode="r", offset=offset, shape=(n_frames, *frame_shape)
            )

    def frame(self, index: int) -> np.ndarray:
        if self._map is None:
            return np.zeros(self._shape, dtype=self._dtype)
        return self._map[index].view(np.ndarray)

    def close(self) -> None:
        self._map = None  # the mapping closes when the last view is gone


class InflatePixels:
    """Frames of one zlib or gzip stream, inflated on demand (see module docstring).

    Parameters
    ----------
    path, offset, length
        Where the compressed stream is (``length`` None = to the end of the file).
    n_frames, frame_shape, dtype
        What it decodes to.
    wbits
        15 for a zlib stream (MetaIO), 31 for gzip (NRRD gz).
    """

    def __init__(
        self,
        path: Path,
        offset: int,
        length: int | None,
        n_frames: int,
        frame_shape: tuple[int, ...],
        dtype: np.dtype,
        wbits: int,
    ):
        self._path = path
        self._file = None  # opened for each decoding burst, so an unclosed Sequence leaks nothing
        self._start = offset
        file_size = path.stat().st_size
        self._end = min(file_size, offset + length) if length is not None else file_size
        self._n = n_frames
        self._shape = frame_shape
        self._dtype = np.dtype(dtype)
        self._frame_bytes = int(np.prod(frame_shape)) * self._dtype.itemsize
        self._wbits = wbits
        self._every = max(1, _CHECKPOINT_BYTES // max(self._frame_bytes, 1))
        self._lock = threading.Lock()
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._checkpoints: dict[int, tuple[int, zlib._Decompress]] = {}
        #: what :meth:`scan` found wrong after the last frame (the tolerant reader reports it):
        #: the last frame is then served as decoded, not refused again
        self._end_problem: str | None = None
        self._restart(0)

    @property
    def available_bytes(self) -> int:
        """Compressed bytes present in the file."""
        return self._end - self._start

    def _restart(self, index: int) -> None:
        if index == 0 or index not in self._checkpoints:
            self._pos = self._start
            self._inflater = zlib.decompressobj(self._wbits)
            self._next = 0
            self._checkpoints.setdefault(0, (self._pos, self._inflater.copy()))
        else:
            pos, inflater = self._checkpoints[index]
            self._pos, self._inflater, self._next = pos, inflater.copy(), index

    def _read_input(self) -> bytes:
        tail = self._inflater.unconsumed_tail
        if tail:
            return tail
        if self._pos >= self._end:
            return b""
        self._file.seek(self._pos)
        data = self._file.read(min(_CHUNK, self._end - self._pos))
        self._pos += len(data)
        return data

    def _decode_next(self) -> bytes:
        """Inflate the next frame's bytes; raises PixelError on a short or bad stream."""
        index = self._next
        need = self._frame_bytes
        parts: list[bytes] = []
        got = 0
        while got < need:
            if self._inflater.eof:
                raise PixelError(
                    index,
                    f"compressed data ends inside frame {index} "
                    f"({got} of {need} bytes): the header declares more "
                    "frames or larger frames than the data holds",
                )
            data = self._read_input()
            if not data:
                raise PixelError(
                    index,
                    f"compressed data is truncated inside frame {index} ({got} of {need} bytes)",
                )
            try:
                out = self._inflater.decompress(data, need - got)
            except zlib.error as exc:
                raise PixelError(
                    index, f"compressed data is corrupted in frame {index} (zlib: {exc})"
                ) from None
            parts.append(out)
            got += len(out)
        self._next += 1
        if self._next % self._every == 0 and self._next not in self._checkpoints:
            self._checkpoints[self._next] = (self._pos, self._inflater.copy())
        return b"".join(parts)

    def _check_end(self) -> None:
        """After the last frame: the stream must end, with nothing left over."""
        while not self._inflater.eof:
            data = self._read_input()
            if not data:
                raise PixelError(
                    self._n - 1,
                    "compressed data stops before the end of its stream (file truncated)",
                )
            try:
                out = self._inflater.decompress(data, 1)
            except zlib.error as exc:
                raise PixelError(
                    self._n - 1, f"compressed data is corrupted after the last frame (zlib: {exc})"
                ) from None
            if out:
                damage = self._damage_in_rest()
                if damage is not None:
                    # a damaged stream can inflate past the declared frames: that is damage,
                    # not a header that declares too few frames (session 40)
                    raise PixelError(
                        self._n - 1,
                        f"compressed data is corrupted (zlib: {damage}): it inflates past the "
                        f"{self._n} frames the header declares, so frames from the damage on "
                        "hold wrong pixels (which ones cannot be told)",
                    )
                raise PixelError(
                    self._n - 1,
                    f"compressed data holds more than the {self._n} frames the header declares",
                )

    def _damage_in_rest(self) -> str | None:
        """Inflate the rest of the stream, keeping nothing: zlib's error when it is damaged
        (a bad code, or a checksum that does not match), None when it is intact."""
        while not self._inflater.eof:
            data = self._read_input()
            if not data:
                return None  # cut short: no checksum to tell
            try:
                self._inflater.decompress(data, _CHUNK)
            except zlib.error as exc:
                return str(exc)
        return None

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as a read-only array (inflating up to it if needed)."""
        with self._lock, open(self._path, "rb") as self._file:
            cached = self._cache.get(index)
            if cached is not None:
                self._cache.move_to_end(index)
                return cached
            if index < self._next:
                start = max(k for k in self._checkpoints if k <= index)
                self._restart(start)
            elif index - self._next > self._every:
                ahead = [k for k in self._checkpoints if self._next < k <= index]
                if ahead:
                    self._restart(max(ahead))
            while True:
                current = self._next
                data = self._decode_next()
                if current == index:
                    break
            if index == self._n - 1 and self._end_problem is None:
                self._check_end()
            array = np.frombuffer(data, dtype=self._dtype).reshape(self._shape)
            self._cache[index] = array
            if len(self._cache) > _CACHE_FRAMES:
                self._cache.popitem(last=False)
            return array

    def scan(self) -> tuple[int, str | None]:
        """Inflate the whole stream once (no frames kept).

        Returns
        -------
        (complete frames, problem or None)
        """
        with self._lock, open(self._path, "rb") as self._file:
            self._restart(0)
            try:
                for _ in range(self._n):
                    self._decode_next()
                self._check_end()
            except PixelError as exc:
                done = exc.frame if exc.frame < self._n - 1 or self._next < self._n else self._n
                if done == self._n:
                    # every frame decoded, the trouble is after the last: reported once here,
                    # and the last frame is then served (it was refused, so `usnav convert
                    # --tolerant` failed, saying to use --tolerant)
                    self._end_problem = exc.problem
                return done, exc.problem
            finally:
                self._restart(0)
            return self._n, None

    def close(self) -> None:
        self._cache.clear()
        self._checkpoints.clear()


class InterleavedPixels:
    """Frames of a file whose frame axis is not the slowest (3D Slicer volume sequences).

    The first axis of a size line varies fastest, so with the frame axis first (``kinds: list
    domain domain domain``) pixel p of frame i is at ``p * n_frames + i``: a frame is a
    strided slice of all the data, not a run of bytes. Raw data is memory-mapped as a whole
    and each frame copied out of the strided view; compressed data is inflated once, whole
    (such files hold the frames of one volume sequence, which 3D Slicer also keeps in memory).

    Parameters
    ----------
    path, offset, length
        Where the pixels (or the compressed stream) are; ``length`` None = to the end.
    shape
        C-order shape of all the data (the size line reversed).
    permutation
        ``transpose`` of that array to (frame, z, y, x[, components]).
    frame_shape, dtype
        What one frame is.
    wbits
        None for raw data, 15 for a zlib stream (MetaIO), 31 for gzip (NRRD gz).
    """

    def __init__(
        self,
        path: Path,
        offset: int,
        length: int | None,
        shape: tuple[int, ...],
        permutation: tuple[int, ...],
        frame_shape: tuple[int, ...],
        dtype: np.dtype,
        wbits: int | None,
    ):
        self._shape = frame_shape
        self._dtype = np.dtype(dtype)
        total = int(np.prod(shape)) * self._dtype.itemsize
        if wbits is None:
            data: np.ndarray = np.memmap(
                path, dtype=self._dtype, mode="r", offset=offset, shape=shape
            )
        else:
            with open(path, "rb") as f:
                f.seek(offset)
                packed = f.read() if length is None else f.read(length)
            inflater = zlib.decompressobj(wbits)
            try:
                raw = inflater.decompress(packed, total)
            except zlib.error as exc:
                raise PixelError(0, f"compressed data is corrupted (zlib: {exc})") from None
            if len(raw) < total:
                raise PixelError(
                    0,
                    f"compressed data holds {len(raw)} bytes, the size line declares {total} "
                    "(the frames are interleaved, so none can be recovered on its own)",
                )
            data = np.frombuffer(raw, dtype=self._dtype).reshape(shape)
        self._data: np.ndarray | None = data.transpose(permutation)

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as a read-only contiguous array."""
        assert self._data is not None
        out = np.ascontiguousarray(self._data[index]).reshape(self._shape)
        out.flags.writeable = False
        return out

    def close(self) -> None:
        self._data = None
