"""The per-frame step every caller shares: schedule → engine → smoother (mask) → render → stats.

::

    frames ──▶ smoother.wants_inference ──▶ engine.predict (probabilities only, the frames
               (every frame, or keyframes)       the schedule picked; or an EngineThread beside
                                                 the caller for a live source on the CPU)
           ──▶ smoother(frame): smoothed frame.prob, thresholded once into frame.mask
           ──▶ renderer(frame): frame.rendered (overlay, HUD)
           ──▶ stats.processed_frame: the numbers the HUD, the summary and the CSV read

The pipeline's processing thread, the web demo's Live tab, the soak and both temporal
benchmarks call :meth:`Segmenter.step`, or its two halves :meth:`Segmenter.start` and
:meth:`Segmenter.finish` (the pipeline, to keep the GPU busy on frame n+1 while the host
smooths, renders and writes frame n); each stage's failure is a :class:`StageError` naming
it, and a :class:`~stream.faults.Fault` passed in makes a named stage fail on purpose.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from stream.engines import Engine, measure_network_ms
from stream.engines.thread import EngineThread
from stream.errors import StageError
from stream.faults import Fault
from stream.frame import Frame
from stream.outputs.render import Renderer
from stream.queues import Stopped
from stream.smoothing import Identity, auto_reason, build_smoother, resolve_mode
from stream.stats import PipelineStats, Snapshot

HUD_REFRESH_S = 0.1  # how often the HUD's numbers are recomputed


def run_stage(name: str, fn: Callable, *args, fault: Fault | None = None, **kwargs) -> object:
    """``fn(*args, **kwargs)`` as the stage ``name``: any failure becomes a :class:`StageError`.

    Args:
        name: the stage, as messages and :class:`~stream.faults.Fault` name it.
        fn: the stage's work; its first argument (a Frame or a list of them) is what a fault
            checks.
        fault: a failure to inject (tests), or None.
    """
    try:
        if fault is not None:
            fault.check(name, args[0] if args else None)
        return fn(*args, **kwargs)
    except (Stopped, StageError):
        raise
    except Exception as exc:
        raise StageError(name, exc) from exc


@dataclass(frozen=True)
class Started:
    """A batch between :meth:`Segmenter.start` and :meth:`Segmenter.finish`."""

    frames: list[Frame]
    wanted: list[Frame]  # the frames the network runs on
    in_flight: object | None  # the engine's handle (``collect()``), or None: run in finish


class Segmenter:
    """One stream's per-frame step: the engine, its schedule, smoothing, render and stats.

    Args:
        engine: the network (shared with other segmenters if the caller serialises it).
        smoother: decides the schedule and makes the mask (default: ``off`` at the engine's
            threshold).
        renderer: draws ``frame.rendered``; None: no picture (benchmarks that score masks).
        stats: where processed frames are counted; None: a fresh :class:`PipelineStats`.
        network: the engine's worker thread that ``smoother`` submits to; this object owns it
            and closes it.
        fault: a failure to inject into a stage (tests), or None.
    """

    def __init__(
        self,
        engine: Engine,
        smoother=None,
        *,
        renderer: Renderer | None = None,
        stats: PipelineStats | None = None,
        network: EngineThread | None = None,
        fault: Fault | None = None,
    ) -> None:
        self.engine = engine
        self.smoother = smoother if smoother is not None else Identity(threshold=engine.threshold)
        self.renderer, self.network, self.fault = renderer, network, fault
        self.stats = stats if stats is not None else PipelineStats()
        self._snapshot: Snapshot | None = None
        self._snapshot_t = 0.0
        self.choice: str | None = None  # why ``auto`` chose the mode, when it measured

    @classmethod
    def build(
        cls,
        engine: Engine,
        mode: str,
        *,
        live: bool,
        fps: float | None,
        size_wh: tuple[int, int] | None = None,
        net_ms: float | None = None,
        threshold: float | None = None,
        threaded: bool = False,
        renderer: Renderer | None = None,
        stats: PipelineStats | None = None,
        fault: Fault | None = None,
        **options,
    ) -> Segmenter:
        """A segmenter with the smoother for ``--smooth mode`` and its schedule.

        Args:
            engine: the network.
            mode: one of :data:`stream.smoothing.CHOICES`.
            live: frames come from a camera (or a file paced like one): for ``auto``.
            fps: the source's frame rate (the keyframe interval follows it).
            size_wh: the source's frame size, at which ``auto`` times the network.
            net_ms: the network's time per frame, for ``auto`` on a live source on the CPU;
                None: measured here (:func:`stream.engines.measure_network_ms`), so that
                ``auto`` runs every frame through the network when that fits ``fps``.
            threshold: probability above which a pixel is lesion (None: the network's).
            threaded: run a keyframe schedule's network on its own thread, so that no frame
                waits for it (live sources; files stay deterministic without it).
            renderer, stats, fault: as the constructor's.
            **options: further smoother options (``interval``, ``history``, …).

        Raises:
            ConfigError: an unknown mode or smoother option.
        """
        cpu = engine.device.type == "cpu"
        measured = mode == "auto" and live and cpu
        if measured and net_ms is None:
            net_ms = measure_network_ms(engine, size_wh or (640, 480))
        resolved = resolve_mode(mode, live=live, cpu=cpu, net_ms=net_ms, fps=fps)
        network = EngineThread(engine) if threaded and resolved == "keyframe" else None
        try:
            smoother = build_smoother(
                resolved, size=engine.size, fps=fps, network=network,
                threshold=engine.threshold if threshold is None else float(threshold), **options)
        except BaseException:
            if network is not None:
                network.close()
            raise
        segmenter = cls(engine, smoother, renderer=renderer, stats=stats, network=network,
                        fault=fault)
        if measured:
            segmenter.choice = auto_reason(net_ms, fps)
        return segmenter

    @property
    def mode(self) -> str:
        """The smoothing mode in force (``auto`` resolved)."""
        return self.smoother.mode

    @property
    def threshold(self) -> float:
        """The probability above which a pixel is lesion."""
        return getattr(self.smoother, "threshold", self.engine.threshold)

    def _stage(self, name: str, fn: Callable, *args, **kwargs) -> object:
        return run_stage(name, fn, *args, fault=self.fault, **kwargs)

    def hud_snapshot(self) -> Snapshot:
        """The stats for the HUD, recomputed at most ten times a second (cheap at GPU rates)."""
        now = time.perf_counter()
        if self._snapshot is None or now - self._snapshot_t >= HUD_REFRESH_S:
            self._snapshot, self._snapshot_t = self.stats.snapshot(), now
        return self._snapshot

    def step(self, frames: list[Frame], *, status: str | None = None,
             snapshot: Snapshot | None = None) -> list[Frame]:
        """Segment, render and count ``frames`` (consecutive frames of one stream).

        ``step(frames)`` is ``finish(start(frames))``.

        Args:
            frames: a batch; the network sees those the schedule picks, in one call.
            status: a source's live state for the HUD ("camera lost, reconnecting").
            snapshot: the numbers the HUD shows (default: :meth:`hud_snapshot`).

        Returns:
            ``frames``, each with ``prob``, ``mask``, ``rendered`` (with a renderer) and timings.

        Raises:
            StageError: a stage failed; its message starts with the stage's name.
        """
        return self.finish(self.start(frames), status=status, snapshot=snapshot)

    @property
    def overlaps(self) -> bool:
        """Whether :meth:`start` sets the network going and returns before it is done."""
        return callable(getattr(self.engine, "predict_async", None))

    def start(self, frames: list[Frame]) -> Started:
        """The first half of :meth:`step`: the schedule picks frames, the network starts on them.

        With an engine that runs beside the host (the CUDA engine's ``predict_async``) this
        returns while the GPU works, so a caller can start batch n+1 before it finishes batch n;
        otherwise the network runs in :meth:`finish`. Batches must be finished in the order they
        were started.
        """
        wanted = [f for f in frames if self._stage("smoothing", self.smoother.wants_inference, f)]
        in_flight = None
        if wanted and self.overlaps:
            in_flight = self._stage("engine", self.engine.predict_async, wanted)
        return Started(frames, wanted, in_flight)

    def finish(self, started: Started, *, status: str | None = None,
               snapshot: Snapshot | None = None) -> list[Frame]:
        """The second half of :meth:`step`: the network's result, smoothing, render, stats."""
        frames, wanted = started.frames, started.wanted
        if started.in_flight is not None:
            self._stage("engine", lambda _wanted: started.in_flight.collect(), wanted)
        elif wanted:
            self._stage("engine", self.engine.predict, wanted)
        for frame in frames:
            self._stage("smoothing", self.smoother, frame)
            if self.renderer is not None:
                shown = snapshot if snapshot is not None else self.hud_snapshot()
                self._stage("render", self.renderer, frame, shown, status=status)
            self.stats.processed_frame(frame.timings, frame.capture_time)
        return frames

    def reset(self) -> None:
        """Forget the smoothing history (a seek, another scene, a restarted stream)."""
        self.smoother.reset()

    def close(self) -> None:
        """Release the smoother and stop the network's thread, if this segmenter has one."""
        try:
            self.smoother.close()
        finally:
            if self.network is not None:
                self.network.close()
