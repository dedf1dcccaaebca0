"""Where frames come from: a camera or a video file, each read by its own capture thread.

``open_source(spec)`` opens the input at once, so that every user mistake (missing file, no
video stream, camera not found) is a :class:`~stream.errors.SourceError` before any thread
starts, and ``source.info`` is known. ``source.start(stop)`` then starts the capture thread,
which puts :class:`~stream.frame.Frame` objects (BGR uint8 H×W×3) into ``source.queue`` and
finally the ``EOS`` sentinel, whatever happens. A failure inside the thread is kept in
``source.error`` for the pipeline to report.

Back-pressure is named per source: a camera uses ``latest`` (a slow consumer loses old frames,
counted in ``stats()["dropped"]``), a file ``lossless`` (the decoder waits), or ``latest`` with
``realtime=True`` (the file is paced at its own rate, like a camera).

A source given a :class:`~stream.sources.pool.FramePool` (``source.pool``, before ``start``)
lands every picture in the pool's buffers on its capture thread: pinned memory for a GPU engine.
"""

from __future__ import annotations

import re
import threading

from stream.frame import Frame, SourceInfo
from stream.queues import EOS, FrameQueue, Policy, Stopped
from stream.sources.pool import FramePool

CAMERA_PATH = re.compile(r"^/dev/video\d+$")


class Source:
    """A capture thread feeding a bounded :class:`FrameQueue`; subclasses implement ``_run``.

    Attributes:
        info: what is known about the stream, filled at open time.
        queue: frames, then ``EOS``.
        error: the exception that ended the capture thread early, or None.
        status: a short live state for an overlay, e.g. "camera lost, reconnecting (attempt 2)";
            None while frames flow normally.
        warnings: one-line notes for the user found while opening (settings a camera ignored,
            options that do not apply to this kind of source).
    """

    # counters; class defaults so a subclass may count while it opens, before __init__ runs
    _decoded = 0
    _unreadable = 0
    _reconnects = 0

    def __init__(self, info: SourceInfo, policy: Policy, queue_size: int) -> None:
        self.info = info
        self.queue = FrameQueue(queue_size, policy, name=f"{info.name} queue")
        self.error: BaseException | None = None
        self.status: str | None = None
        self.warnings: list[str] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self.pool: FramePool | None = None  # where pictures land (set before start), or None

    def _put(self, frame: Frame, stop: threading.Event) -> None:
        """Queue ``frame``, its picture first copied into the pool's memory when there is one.

        The copy happens here, on the capture thread, so that the consumer (a GPU engine
        uploading from pinned memory) does not pay it.
        """
        if self.pool is not None:
            frame.image = self.pool.land(frame.image)
        self.queue.put(frame, stop)

    def start(self, stop: threading.Event) -> None:
        """Start the capture thread; it ends at end of input, on error, or when ``stop`` is set."""
        if self._thread is not None:
            raise RuntimeError(f"{self.info.name}: already started")
        if self._closed:
            raise RuntimeError(f"{self.info.name}: already closed")
        self._thread = threading.Thread(
            target=self._main, args=(stop,), name=f"capture {self.info.name}", daemon=True
        )
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the capture thread; True when it has ended (or never started)."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stats(self) -> dict[str, int]:
        """Counters: frames decoded, dropped by the queue, unreadable, camera reconnects."""
        return {
            "decoded": self._decoded,
            "dropped": self.queue.dropped,
            "unreadable": self._unreadable,
            "reconnects": self._reconnects,
        }

    def close(self) -> None:
        """Release the file or device of a source that was never started (idempotent)."""
        if self._thread is None and not self._closed:
            self._closed = True
            self._release()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _main(self, stop: threading.Event) -> None:
        try:
            self._run(stop)
        except Stopped:
            pass  # the consumer asked us to stop while we waited on a full queue
        except BaseException as exc:  # kept for the pipeline; the thread must still end with EOS
            self.error = exc
        finally:
            self._closed = True
            try:
                self._release()
            finally:
                try:
                    self.queue.put(EOS, stop)
                except Stopped:
                    pass

    def _run(self, stop: threading.Event) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError


def is_camera_spec(spec: int | str) -> bool:
    """True for a camera index (``0``, ``"0"``) or a V4L2 device path (``/dev/video2``)."""
    if isinstance(spec, int):
        return True
    text = str(spec).strip()
    return text.isdigit() or bool(CAMERA_PATH.match(text))
