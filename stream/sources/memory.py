"""Pictures already in memory, played as a file (lossless, as fast as taken) or a camera.

The benchmarks drive the application's own path (capture thread → pool → queue → pipeline)
with it where decoding is not what is measured, or where PyAV is absent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from stream.errors import SourceError
from stream.frame import Frame, SourceInfo
from stream.sources.base import Source


class MemorySource(Source):
    """``count`` frames cycling through ``images`` (H×W×3 uint8 BGR, all of one size).

    Args:
        images: the pictures, shown in turn.
        count: frames to deliver, then end of stream.
        fps: the nominal rate; with ``live`` the frames are also paced at it.
        live: paced and ``latest`` (a slow consumer loses frames, as with a camera); otherwise
            ``lossless`` and as fast as the consumer takes them.
        queue_size: bound of the frame queue.
        name: how messages name it.
    """

    def __init__(self, images: Sequence[np.ndarray], *, count: int, fps: float = 30.0,
                 live: bool = False, queue_size: int = 8, name: str = "memory") -> None:
        if not images:
            raise SourceError(f"{name}: no pictures")
        shapes = {image.shape for image in images}
        if len(shapes) != 1 or any(im.dtype != np.uint8 or im.ndim != 3 for im in images):
            raise SourceError(f"{name}: pictures must be H×W×3 uint8 of one size, got {shapes}")
        if count < 1 or fps <= 0:
            raise SourceError(f"{name}: count and fps must be positive (got {count}, {fps})")
        h, w = images[0].shape[:2]
        self.images, self.count, self.fps = list(images), count, fps
        self.time_base = Fraction(1, 1000)
        info = SourceInfo(name=name, size_wh=(w, h), fps=fps, time_base=self.time_base,
                          frame_count=count, live=live)
        super().__init__(info, "latest" if live else "lossless", queue_size)

    def _run(self, stop: threading.Event) -> None:
        t_start = time.perf_counter()
        for index in range(self.count):
            if self.info.live:
                due = t_start + index / self.fps
                if stop.wait(max(0.0, due - time.perf_counter())):
                    return
            elif stop.is_set():
                return
            image = self.images[index % len(self.images)]
            self._decoded += 1
            frame = Frame(image=image, index=index, pts=round(index * 1000 / self.fps),
                          time_base=self.time_base, capture_time=time.perf_counter())
            self._put(frame, stop)

    def _release(self) -> None:
        pass  # nothing to close
