"""Bounded queues between pipeline threads, each with a named back-pressure policy.

``lossless`` (files): a full queue blocks the producer; nothing is ever dropped.
``latest`` (cameras, ``--realtime``): a full queue drops its oldest item so the newest wins;
every drop is counted. Every blocking call takes a timeout and a stop event, so no thread can
wait forever on a peer that has died. End of stream is one sentinel, ``EOS``.
"""

from __future__ import annotations

import collections
import threading
from typing import Literal

Policy = Literal["lossless", "latest"]
EOS = object()  # end-of-stream sentinel


class Stopped(Exception):
    """The stop event was set while waiting."""


class FrameQueue:
    """A bounded FIFO with a back-pressure policy and a drop counter."""

    def __init__(self, maxsize: int, policy: Policy, *, name: str = "queue") -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        if policy not in ("lossless", "latest"):
            raise ValueError(f"unknown queue policy {policy!r}")
        self.maxsize, self.policy, self.name = maxsize, policy, name
        self.dropped = 0
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()

    def put(self, item, stop: threading.Event, *, poll: float = 0.1) -> None:
        """Add ``item``; ``EOS`` is never dropped. Raises :class:`Stopped` if ``stop`` is set."""
        with self._cond:
            while len(self._items) >= self.maxsize:
                if self.policy == "latest":
                    # drop the oldest real frame, never a sentinel
                    for i, old in enumerate(self._items):
                        if old is not EOS:
                            del self._items[i]
                            self.dropped += 1
                            break
                    else:
                        break
                    continue
                if stop.is_set():
                    raise Stopped(self.name)
                self._cond.wait(poll)
            self._items.append(item)
            self._cond.notify_all()

    def get(self, stop: threading.Event, *, timeout: float | None = None, poll: float = 0.1):
        """Remove and return the oldest item; raises :class:`Stopped` or ``TimeoutError``."""
        waited = 0.0
        with self._cond:
            while not self._items:
                if stop.is_set():
                    raise Stopped(self.name)
                if timeout is not None and waited >= timeout:
                    raise TimeoutError(f"{self.name}: nothing arrived in {timeout:.1f} s")
                self._cond.wait(poll)
                waited += poll
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
