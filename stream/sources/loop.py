"""A video file played again and again: the endless source of the soak test."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from stream.errors import SourceError
from stream.frame import SourceInfo
from stream.queues import EOS
from stream.sources.base import Source
from stream.sources.file import FileSource


class LoopingSource(Source):
    """A video file played again and again (lossless queue): a stream that never ends.

    Each pass is a fresh :class:`~stream.sources.file.FileSource`; frames are renumbered and their
    PTS shifted by the length of the passes before, so indices and timestamps keep increasing.

    Args:
        path: the clip.
        queue_size: bound of the frame queue (small: frames waiting in it count as latency).
    """

    def __init__(self, path: str | Path, *, queue_size: int = 2) -> None:
        self._open_pass = lambda: FileSource(path, queue_size=queue_size)
        first = self._open_pass()
        info = first.info
        first.close()
        self.passes = 0
        super().__init__(
            SourceInfo(name=f"loop:{Path(path).name}", size_wh=info.size_wh, fps=info.fps,
                       time_base=info.time_base, frame_count=None, live=False, path=None),
            "lossless", queue_size)
        self._step = max(1, round(1 / (info.fps * info.time_base)))  # one frame, in PTS units

    def _run(self, stop: threading.Event) -> None:
        index, offset = 0, 0
        while not stop.is_set():
            inner = self._open_pass()
            inner.start(stop)
            first = last = None
            try:
                while True:
                    item = inner.queue.get(stop, timeout=30.0)
                    if item is EOS:
                        break
                    first = item.pts if first is None else first
                    last = item.pts
                    item.index, item.pts = index, offset + item.pts - first
                    item.capture_time = time.perf_counter()
                    self._put(item, stop)
                    self._decoded += 1
                    index += 1
            finally:
                stop_inner = stop.is_set()
                if not inner.join(5.0) and not stop_inner:
                    raise SourceError(f"{self.info.name}: a decoding pass did not end")
            if inner.error is not None:
                raise inner.error
            if last is None:
                if stop.is_set():  # stopped as this pass began: the end, not a broken clip
                    break
                raise SourceError(f"{self.info.name}: a pass gave no frame")
            offset += last - first + self._step
            self.passes += 1

    def _release(self) -> None:
        pass  # every pass closes its own file
