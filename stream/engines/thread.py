"""An engine on its own thread: hand it a frame now, collect the frame's probability later.

Live sources on the CPU cannot wait for the network on every frame; the keyframe smoother hands
frames to an :class:`EngineThread` and carries each result forward when it arrives. The thread
belongs to whoever built it (:class:`stream.segmenter.Segmenter`), which closes it.
"""

from __future__ import annotations

import queue
import threading
import weakref

from stream.engines.base import Engine
from stream.frame import Frame


def _work(engine: Engine, jobs: queue.Queue, results: queue.Queue, stop: threading.Event) -> None:
    """Worker: run the engine on each job until ``stop``; results keep the job's tag."""
    while not stop.is_set():
        try:
            tag, frame = jobs.get(timeout=0.2)
        except queue.Empty:
            continue
        try:
            engine.predict([frame])
            results.put((tag, frame, None))
        except Exception as exc:  # handed to the caller's thread, which raises it
            results.put((tag, frame, exc))


class EngineThread:
    """One job at a time for ``engine`` on a worker thread.

    Args:
        engine: only this thread calls it (its ``predict``: probabilities only).
        timeout: seconds a ``submit`` may wait for room, and ``collect(block=True)`` for a result.
    """

    def __init__(self, engine: Engine, *, timeout: float = 30.0) -> None:
        self.engine, self.timeout = engine, timeout
        self.size, self.threshold, self.name = engine.size, engine.threshold, engine.name
        self.jobs: queue.Queue = queue.Queue(maxsize=1)
        self.results: queue.Queue = queue.Queue(maxsize=1)
        self.stop = threading.Event()
        self.worker = threading.Thread(
            target=_work, args=(engine, self.jobs, self.results, self.stop),
            name="keyframe-network", daemon=True)
        self.worker.start()
        weakref.finalize(self, self.stop.set)  # the worker holds no reference to this object

    def submit(self, tag: int, frame: Frame) -> None:
        """Give the worker ``frame`` (tagged); waits while it still holds an earlier job."""
        self.jobs.put((tag, frame), timeout=self.timeout)

    def collect(self, *, block: bool) -> tuple[int, Frame, Exception | None] | None:
        """The next (tag, frame, error), or None when none is ready (``block``: up to timeout).

        Raises:
            RuntimeError: ``block`` and no result came within the timeout.
        """
        try:
            return self.results.get(timeout=self.timeout) if block else self.results.get_nowait()
        except queue.Empty:
            if block:
                raise RuntimeError(
                    f"keyframe network gave no result in {self.timeout:g} s") from None
            return None

    def close(self) -> None:
        """Stop the worker (it finishes the job in hand)."""
        self.stop.set()
        self.worker.join(timeout=self.timeout)
