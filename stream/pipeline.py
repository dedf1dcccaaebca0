"""The pipeline: source → preprocess → engine → smoothing → render → sinks, on four threads.

Threads and the queues between them (every get/put/join has a timeout and a stop event)::

    capture (the source's)  --source.queue (latest|lossless)-->  processing
    processing  --writer queue (lossless)-->  writer (file sinks)
    processing  --display queue (latest, 1)-->  main thread (window, progress bar)

Two events stop it. ``request_stop()`` (q in the window, Ctrl-C, ``--max-frames``) is the soft
one: the source stops reading, the frame being processed finishes, frames already processed are
written, and every output is closed properly. Any exception in any thread is the hard one: it is
kept as a :class:`StageError` that names the stage ("sink mask dir failed: ..."), every thread
ends within a few seconds, outputs are closed, and :meth:`Pipeline.run` raises it.

The processing thread's work per batch is :meth:`stream.segmenter.Segmenter.step`, in its two
halves: with a GPU engine it starts batch n+1 (upload and network, asynchronously) before it
finishes batch n (smoothing, render, output), whenever batch n+1 is already waiting, and the
source lands its pictures in the engine's pinned memory (:class:`stream.sources.FramePool`),
so the upload reads them where they were decoded. The window gets the pipeline's
:class:`~stream.outputs.window.Controls`, not the pipeline.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from stream.controls import PipelineControls
from stream.engines import Engine
from stream.errors import StageError
from stream.faults import Fault, FaultyQueue
from stream.frame import Frame
from stream.outputs.render import Renderer
from stream.queues import EOS, FrameQueue, Stopped
from stream.segmenter import Segmenter, Started, run_stage
from stream.sources.pool import FramePool
from stream.stats import PipelineStats, Summary

POLL_S = 0.1  # how often blocked threads look at the stop events
JOIN_S = 5.0  # how long a thread may take to end once stopped


class Pipeline:
    """Wires a started-nowhere source, the per-frame step, open sinks and a window.

    Args:
        source: from :func:`stream.sources.open_source` (opened, not started).
        engine: from :func:`stream.engines.build_engine`.
        sinks: open sinks (:func:`stream.outputs.open_sinks`); the pipeline closes them.
        window: a :class:`stream.outputs.WindowSink`, driven on the thread that calls ``run``.
        smoother: from :func:`stream.smoothing.build_smoother` (default: off).
        renderer: draws mask and HUD (default: a :class:`Renderer` for the engine).
        segmenter: the per-frame step, built by the caller (instead of ``smoother`` and
            ``renderer``); the pipeline closes it.
        batch: frames per engine call (files wait for a full batch; live sources never wait).
        max_frames: stop after this many frames (None: the whole input).
        writer_queue: bound of the queue to the writer thread.
        fault: a failure to inject into a stage (the reliability tests), or None.
    """

    def __init__(
        self,
        source,
        engine: Engine,
        *,
        sinks: Sequence = (),
        window=None,
        smoother=None,
        renderer: Renderer | None = None,
        segmenter: Segmenter | None = None,
        batch: int = 1,
        max_frames: int | None = None,
        writer_queue: int = 8,
        fault: Fault | None = None,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be >= 1")
        self.source, self.engine = source, engine
        self.sinks, self.window = list(sinks), window
        if segmenter is None:
            renderer = renderer or Renderer(device=engine.name, untrained=engine.untrained)
            segmenter = Segmenter(engine, smoother, renderer=renderer)
        self.segmenter = segmenter
        segmenter.fault = fault
        self.batch, self.max_frames = batch, max_frames
        self.stats = segmenter.stats
        self.paused = threading.Event()
        self._stop = threading.Event()  # hard: everything ends now
        self._source_stop = threading.Event()  # soft: no new frames; the rest drains
        self._done = threading.Event()  # the writer has seen end of stream
        self._errors: list[StageError] = []
        self._lock = threading.Lock()
        self._writer_q = FrameQueue(max(writer_queue, batch), "lossless", name="writer queue")
        self._display_q = FrameQueue(1, "latest", name="display queue")
        self.interrupted = False
        self._input_ended = False
        self._threads: list[threading.Thread] = []
        self._fault = fault
        if fault is not None and fault.stage == "source":
            source.queue = FaultyQueue(source.queue, fault)
        self.controls = PipelineControls(self)

    @property
    def smoother(self):
        """The smoothing stage of the per-frame step."""
        return self.segmenter.smoother

    @property
    def renderer(self) -> Renderer:
        """The renderer of the per-frame step (the window's toggles change it)."""
        return self.segmenter.renderer

    # ---- control, from any thread ----------------------------------------------------------

    def request_stop(self, *, interrupted: bool = False) -> None:
        """Soft stop: stop reading, finish the current frame, write and close outputs."""
        self.interrupted = self.interrupted or interrupted
        self._source_stop.set()
        self.paused.clear()

    def toggle_pause(self) -> bool:
        """Pause or resume processing; returns True when now paused."""
        if self.paused.is_set():
            self.paused.clear()
        else:
            self.paused.set()
        return self.paused.is_set()

    @property
    def stop_requested(self) -> bool:
        """Whether a soft or hard stop has been asked for."""
        return self._source_stop.is_set()

    @property
    def error(self) -> StageError | None:
        """The first failure, or None."""
        with self._lock:
            return self._errors[0] if self._errors else None

    def _fail(self, stage: str, exc: BaseException) -> None:
        error = exc if isinstance(exc, StageError) else StageError(stage, exc)
        with self._lock:
            self._errors.append(error)
        self._stop.set()
        self._source_stop.set()

    # ---- processing thread --------------------------------------------------------------------

    def _get(self) -> object:
        """The next item from the source: a Frame, EOS, or None once a soft stop was asked."""
        while True:
            if self._source_stop.is_set():
                return None
            try:
                return self.source.queue.get(self._stop, timeout=POLL_S)
            except TimeoutError:
                continue

    def _next_batch(self) -> tuple[list[Frame], bool]:
        """Up to ``batch`` frames, and whether the input has ended."""
        frames: list[Frame] = []
        live = self.source.info.live
        while len(frames) < self.batch:
            if frames and live and len(self.source.queue) == 0:
                break  # a live source never waits to fill a batch
            item = self._get()
            if item is EOS:
                self._input_ended = True  # the source's own end, not a stop request
            if item is None or item is EOS:
                return frames, True
            frames.append(item)
        return frames, False

    def _stage(self, name: str, fn: Callable, *args, **kwargs) -> object:
        return run_stage(name, fn, *args, fault=self._fault, **kwargs)

    def _finish(self, started: Started) -> None:
        frames = self.segmenter.finish(started, status=getattr(self.source, "status", None))
        for frame in frames:
            self._writer_q.put(frame, self._stop)
            if self.window is not None:
                self._display_q.put(frame, self._stop)

    def _keep_in_flight(self, in_flight: deque, ended: bool) -> bool:
        """Whether the newest started batch may wait while the next one is started.

        Only when the network runs beside the host and the next frame is already waiting: a
        live camera whose next frame is not there yet gets its result at once.
        """
        return (len(in_flight) == 1 and not ended and self.segmenter.overlaps
                and len(self.source.queue) > 0 and not self.paused.is_set())

    def _process_loop(self) -> None:
        count = 0
        in_flight: deque[Started] = deque()  # started, not finished: at most two
        try:
            while not self._stop.is_set():
                while self.paused.is_set() and not self._stop.is_set():
                    time.sleep(0.02)
                frames, ended = self._next_batch()
                if self.max_frames is not None:
                    frames = frames[: self.max_frames - count]
                count += len(frames)
                self.stats.received(len(frames))
                if self.max_frames is not None and count >= self.max_frames:
                    self._source_stop.set()
                    ended = True
                if frames:
                    in_flight.append(self.segmenter.start(frames))
                while in_flight and not self._keep_in_flight(in_flight, ended):
                    self._finish(in_flight.popleft())
                self._update_capture()
                if ended:
                    break
            self._check_source()
            self._writer_q.put(EOS, self._stop)
            if self.window is not None:
                self._display_q.put(EOS, self._stop)
        except Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - kept and re-raised by run()
            self._fail("processing", exc)

    def _update_capture(self) -> None:
        counters = self.source.stats() if hasattr(self.source, "stats") else {}
        decoded = int(counters.get("decoded", self.stats.frames_in))
        self.stats.captured(decoded, int(counters.get("dropped", self.source.queue.dropped)))

    def _check_source(self) -> None:
        error = getattr(self.source, "error", None)
        if error is not None:
            raise StageError(f"source {self.source.info.name}", error)

    # ---- writer thread ------------------------------------------------------------------------

    def _write_loop(self) -> None:
        try:
            while True:
                try:
                    item = self._writer_q.get(self._stop, timeout=POLL_S)
                except TimeoutError:
                    continue
                if item is EOS:
                    break
                for sink in self.sinks:
                    self._stage(f"sink {sink.name}", sink.write, item)
                self.stats.written()
        except Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - kept and re-raised by run()
            self._fail("writer", exc)
        finally:
            self._done.set()

    # ---- main thread --------------------------------------------------------------------------

    def _sigint(self, signum, frame) -> None:
        if self._source_stop.is_set():  # a second Ctrl-C: stop without draining
            self._stop.set()
        self.request_stop(interrupted=True)

    def _main_loop(self, progress: Callable[[PipelineStats], None] | None) -> None:
        showing = self.window is not None
        next_progress = 0.0
        while not self._done.is_set() and not self._stop.is_set():
            if showing:
                try:
                    item = self._display_q.get(self._stop, timeout=0.03)
                except TimeoutError:
                    item = None
                except Stopped:
                    break
                try:
                    if item is EOS:
                        showing = False
                    elif item is not None:
                        self.window.show(item)
                    if showing:
                        self.window.poll(self.controls)
                except Exception as exc:
                    self._fail("window", exc)
                    break
            else:
                self._done.wait(POLL_S)
            if progress is not None and time.monotonic() >= next_progress:
                next_progress = time.monotonic() + POLL_S
                progress(self.stats)

    def run(
        self,
        *,
        progress: Callable[[PipelineStats], None] | None = None,
        handle_sigint: bool = True,
    ) -> Summary:
        """Run to the end of the input, a stop request, or the first error.

        Args:
            progress: called about ten times a second on this thread with the live stats.
            handle_sigint: on the main thread, make Ctrl-C a soft stop (a second one a hard stop).

        Returns:
            The whole-run :class:`Summary` (``interrupted`` after Ctrl-C).

        Raises:
            StageError: a stage failed; its ``summary`` holds the numbers up to the failure.
        """
        old_handler = None
        if handle_sigint and threading.current_thread() is threading.main_thread():
            old_handler = signal.signal(signal.SIGINT, self._sigint)
        self.stats = self.segmenter.stats = PipelineStats()
        try:
            if self.window is not None:
                self._stage("window", self.window.open, self.source.info)
            prepare = getattr(self.engine, "prepare", None)
            if prepare is not None:  # buffers and CUDA graphs now, not in front of the first frame
                run_stage("engine", prepare, self.source.info.size_wh)
            self._land_in_engine_memory()
            self.source.start(self._source_stop)
            for name, target in (("processing", self._process_loop), ("writer", self._write_loop)):
                thread = threading.Thread(target=target, name=name, daemon=True)
                thread.start()
                self._threads.append(thread)
            self._main_loop(progress)
        except StageError as exc:
            self._fail("window", exc)
        except BaseException as exc:
            self._fail("pipeline", exc)
            raise
        finally:
            self._shutdown()
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
        summary = self.stats.summary(device=self.engine.name, interrupted=self.interrupted)
        if self.error is not None:
            self.error.summary = summary
            raise self.error
        return summary

    def _land_in_engine_memory(self) -> None:
        """Give the source a pool of the engine's pinned memory, if the engine has such memory.

        Enough buffers for every frame that can be held at once (the source's queue, two
        batches in flight, the writer's queue, the window); beyond that the pool lets frames
        stay where they were decoded rather than wait.
        """
        allocate = getattr(self.engine, "pinned_array", None)
        if allocate is None or getattr(self.source, "pool", False) is not None:
            return
        limit = self.source.queue.maxsize + self._writer_q.maxsize + 3 * self.batch + 4
        self.source.pool = FramePool(allocate, limit=limit)

    def _shutdown(self) -> None:
        if self.error is not None or not self._done.is_set():
            self._stop.set()
        self._source_stop.set()
        deadline = time.monotonic() + JOIN_S
        if not self.source.join(max(0.1, deadline - time.monotonic())):
            self._fail("source", TimeoutError(f"capture thread did not stop within {JOIN_S:.0f} s"))
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
            if thread.is_alive():
                self._fail(thread.name, TimeoutError(f"thread did not stop within {JOIN_S:.0f} s"))
        try:
            self.segmenter.close()  # e.g. the keyframe network's worker thread
        except Exception as exc:
            self._fail("smoothing", exc)
        source_failed = getattr(self.source, "error", None) is not None
        whole = self._input_ended and self.error is None and not source_failed
        for sink in self.sinks:
            sink.input_complete = whole
            try:
                sink.close()
            except Exception as exc:
                self._fail(f"sink {sink.name}", exc)
        if self.window is not None:
            try:
                self.window.close()
            except Exception as exc:
                self._fail("window", exc)
        if hasattr(self.source, "close"):
            self.source.close()
