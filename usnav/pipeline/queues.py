"""Bounded hand-over between pipeline stages, with an explicit policy when a stage falls behind.

- :class:`LatestSlot` — *newest wins* (frames for display): a producer never waits; an unread
  item that is replaced is counted as dropped.
- :class:`RecordQueue` — *never dropped silently* (frames for recording): bounded by memory;
  when full the producer does not wait (the live path must not stall) but the loss is counted
  and reported, never hidden.
"""

from __future__ import annotations

import collections
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """A one-item mailbox where the newest item wins."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._cond = threading.Condition()
        self.put_count = 0
        self.dropped = 0
        self._closed = False

    def put(self, item: T) -> None:
        """Store ``item``; an unread previous item is dropped (and counted). Never blocks."""
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self.put_count += 1
            self._cond.notify()

    def get(self, timeout: float | None = None) -> T | None:
        """The newest item, waiting up to ``timeout`` s; None on timeout or when closed."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class RecordQueue(Generic[T]):
    """A FIFO bounded by item count; overflow is counted as dropped, never silent."""

    def __init__(self, max_items: int) -> None:
        self._items: collections.deque[T] = collections.deque()
        self._cond = threading.Condition()
        self.max_items = max_items
        self.dropped = 0
        self.put_count = 0
        self._closed = False

    def put(self, item: T) -> bool:
        """Append; returns False (and counts a drop) if the queue is full. Never blocks."""
        with self._cond:
            if len(self._items) >= self.max_items:
                self.dropped += 1
                return False
            self._items.append(item)
            self.put_count += 1
            self._cond.notify()
            return True

    def get(self, timeout: float | None = None) -> T | None:
        """Oldest item, waiting up to ``timeout`` s; None on timeout or when closed and empty."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
