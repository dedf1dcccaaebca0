"""Frame buffers that a source decodes into, handed out again only when nothing holds them.

On a GPU the engine uploads a frame straight from page-locked ("pinned") host memory, so a
source that lands its pictures in pinned buffers saves the processing thread a copy of every
frame (6 MB at 1080p). Pinned memory is costly to allocate, so buffers are reused; a buffer is
reused only when no frame, queue, renderer, sink or caller's variable refers to it any more.

How "nothing holds it" is known: every picture handed out is a numpy view of one of the pool's
arrays, and every view of a view refers to that array (numpy keeps the owner as ``base``), so the
array's reference count rises by one for each holder, whatever holds it and however it was
sliced. The pool counts that number once, when nothing is handed out, and reuses a buffer only
when it is back to it. Nobody has to give a frame back; a frame that is dropped, written or
forgotten frees its buffer by itself.

When every buffer is held (a sink that keeps frames, a stalled consumer) the pool does not
wait and does not grow past ``limit``: the picture stays where it was decoded (``missed`` counts
them) and the engine copies it into its own staging memory as it would without a pool.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Allocate = Callable[[tuple[int, ...]], np.ndarray]


def _host_array(shape: tuple[int, ...]) -> np.ndarray:
    return np.empty(shape, dtype=np.uint8)


@dataclass(eq=False)
class _Buffer:
    array: np.ndarray  # what views are cut from; views keep it alive (``view.base``)
    free_refs: int = 0  # its reference count when nothing outside the pool holds it


class FramePool:
    """Reusable uint8 frame buffers of any shape, at most ``limit`` of them in all.

    Args:
        allocate: makes one buffer of a shape (default: ordinary numpy memory; the CUDA engine's
            ``pinned_array`` gives page-locked memory).
        limit: buffers kept at most, all shapes together.
    """

    def __init__(self, allocate: Allocate | None = None, *, limit: int = 32) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self._allocate = allocate or _host_array
        self.limit = limit
        self._buffers: list[_Buffer] = []
        self._lock = threading.Lock()
        self.allocated = 0  # buffers made
        self.reused = 0  # pictures landed in a buffer made before
        self.missed = 0  # pictures left where they were: every buffer was held

    def _refs(self, buffer: _Buffer) -> int:
        return sys.getrefcount(buffer.array)

    def _take(self, shape: tuple[int, ...]) -> _Buffer | None:
        """A free buffer of ``shape`` (made if the limit allows), or None."""
        for buffer in self._buffers:
            if buffer.array.shape == shape and self._refs(buffer) <= buffer.free_refs:
                self.reused += 1
                return buffer
        if len(self._buffers) >= self.limit:  # make room: forget a free buffer of another shape
            spare = next((b for b in self._buffers
                          if b.array.shape != shape and self._refs(b) <= b.free_refs), None)
            if spare is None:
                return None
            self._buffers.remove(spare)
        buffer = _Buffer(self._allocate(shape))
        self._buffers.append(buffer)
        buffer.free_refs = self._refs(buffer)  # counted in the same way as every check above
        self.allocated += 1
        return buffer

    def land(self, image: np.ndarray) -> np.ndarray:
        """``image`` copied into a free buffer: a view the caller owns until it drops it.

        Returns ``image`` itself when every buffer of its shape is held and the pool is full.
        """
        shape = tuple(image.shape)
        with self._lock:
            buffer = self._take(shape)
            if buffer is None:
                self.missed += 1
                return image
            view = buffer.array[...]  # held from here on: the buffer is not free
        np.copyto(view, image)
        return view

    def held(self) -> int:
        """Buffers that something outside the pool still refers to."""
        with self._lock:
            return sum(self._refs(b) > b.free_refs for b in self._buffers)

    def __len__(self) -> int:
        return len(self._buffers)
