"""Wire once: a frozen, validated run configuration, and what builds a run's parts from it.

:class:`RunConfig` is made from the command line's flags (:meth:`RunConfig.from_args`) or by a
caller directly (the web demo's Video tab, the soak, the benchmarks); the device is resolved
there, once. Then::

    engine = build_engine(config)                       # the network on its device
    source = open_input(config)                         # opened, not started
    sinks = open_outputs(config, source.info)           # opened files
    segmenter = build_segmenter(config, engine, source.info)   # schedule, smoother, renderer
    pipeline = build_pipeline(config, source, engine, sinks=sinks, segmenter=segmenter)

Each builder takes only what it needs, so a caller that shares one engine between many runs
(the web demo) builds the engine once and the rest per run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from stream.engines import (
    DEFAULT_WEIGHTS,
    DEVICES,
    PRECISIONS,
    RUNTIMES,
    Engine,
    default_threads,
    resolve_device,
)
from stream.engines import build_engine as _build_engine
from stream.errors import ConfigError
from stream.faults import Fault
from stream.frame import SourceInfo
from stream.outputs import Renderer, open_sinks
from stream.pipeline import Pipeline
from stream.segmenter import Segmenter
from stream.smoothing import CHOICES, DEFAULT_MODE
from stream.sources import SAMPLE, Source, open_source


@dataclass(frozen=True)
class Outputs:
    """Where a run writes (None: not written)."""

    video: Path | None = None  # --output: the rendered video
    mask_dir: Path | None = None  # --mask-dir: one PNG per frame
    mask_video: Path | None = None  # --mask-video: lossless mask video
    csv: Path | None = None  # --csv: per-frame measurements

    @property
    def any(self) -> bool:
        """Whether anything is written."""
        return any((self.video, self.mask_dir, self.mask_video, self.csv))


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides a run, checked once.

    ``device`` is a resolved ``torch.device``: build it with :meth:`from_args`, or pass one.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    source: int | str | None = None  # camera index, /dev/videoN or a file; None: the sample
    realtime: bool = False  # pace a file like a camera (drops frames when behind)
    video_stream: int | None = None  # a file's video stream (None: the longest real one)
    outputs: Outputs = Outputs()
    weights: str | None = None  # None: the default file, else random weights (flagged)
    precision: str = "auto"
    cuda_graph: bool = True
    batch: int = 1
    threads: int | None = None  # CPU intra-op threads (None: cores - 1 on the CPU)
    runtime: str = "auto"  # CPU: onnx or torch
    tta: bool = False  # the network on each frame and its 3 mirror images, their mean (4× time)
    smooth: str = DEFAULT_MODE
    hud: bool = True
    max_frames: int | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; choose from "
                              f"{', '.join(PRECISIONS)}")
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"unknown runtime {self.runtime!r}; choose from "
                              f"{', '.join(RUNTIMES)}")
        if self.smooth not in CHOICES:
            raise ConfigError(f"unknown smoothing mode {self.smooth!r}; choose from "
                              f"{', '.join(CHOICES)}")
        for name in ("batch", "threads", "max_frames"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")

    @classmethod
    def from_args(cls, args) -> RunConfig:
        """The configuration of ``demo.py`` / ``python -m stream``'s parsed flags.

        Raises:
            EngineError: ``--device cuda`` without a usable GPU, or an unknown device.
        """
        if args.device not in DEVICES:
            raise ConfigError(f"unknown device {args.device!r}; choose from {', '.join(DEVICES)}")
        return cls(
            device=resolve_device(args.device),
            source=args.camera if args.camera is not None else args.video,
            realtime=args.realtime,
            video_stream=getattr(args, "video_stream", None),
            outputs=Outputs(video=_path(args.output), mask_dir=_path(args.mask_dir),
                            mask_video=_path(args.mask_video), csv=_path(args.csv)),
            weights=args.weights, precision=args.precision, cuda_graph=not args.no_cuda_graph,
            batch=args.batch, threads=args.threads, runtime=args.runtime, tta=args.tta,
            smooth=args.smooth, hud=not args.no_hud, max_frames=args.max_frames)

    @property
    def source_spec(self) -> int | str:
        """What :func:`stream.sources.open_source` opens (the sample clip when none was named)."""
        return self.source if self.source is not None else str(SAMPLE)


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def untrained_notice(engine: Engine) -> str | None:
    """The warning a run with random weights must show, or None with trained weights."""
    if not engine.untrained:
        return None
    return (f"UNTRAINED WEIGHTS: the shipped weights ({DEFAULT_WEIGHTS.name}) are missing from "
            "this installation and no --weights was given; the network has random weights and "
            "its masks are meaningless.")


def build_engine(config: RunConfig, *, progress: Callable[[str], None] | None = None) -> Engine:
    """The engine for ``config`` (CPU threads default to all cores but one).

    ``runtime="auto"`` with ``precision="auto"`` on the CPU runs the fastest form of the
    network that passed its accuracy check here; ``engine.choice`` says which and why.

    Args:
        config: the run.
        progress: told, in one line, when a first start builds cached models (minutes at most).

    Raises:
        EngineError: a precision or runtime the device cannot run.
        WeightsError: the named weights file is missing or not SLSNet weights.
    """
    cpu = config.device.type == "cpu"
    threads = config.threads or (default_threads() if cpu else None)
    return _build_engine(device=config.device, weights=config.weights,
                         precision=config.precision, cuda_graph=config.cuda_graph,
                         batch=config.batch, threads=threads, runtime=config.runtime,
                         progress=progress, tta=config.tta)


def open_input(config: RunConfig, *, queue_size: int | None = None) -> Source:
    """The run's source, opened (not started); ``queue_size`` None: the source's default.

    Raises:
        SourceError: the input cannot be opened.
    """
    return open_source(config.source_spec, realtime=config.realtime, queue_size=queue_size,
                       video_stream=config.video_stream)


def open_outputs(config: RunConfig, info: SourceInfo) -> list:
    """The run's file outputs, opened.

    Raises:
        SinkError: an output cannot be opened.
    """
    out = config.outputs
    return open_sinks(info, output=out.video, mask_dir=out.mask_dir, mask_video=out.mask_video,
                      csv_path=out.csv)


def release(source: Source, segmenter: Segmenter | None, sinks: list) -> None:
    """Close what a run opened before its pipeline took it over (a start-up failure, Ctrl-C).

    Outputs that got no frame are removed.
    """
    source.close()
    if segmenter is not None:
        segmenter.close()
    for sink in sinks:
        sink.discard()


def is_live(config: RunConfig, info: SourceInfo) -> bool:
    """Frames may not wait: a camera, or a file played in real time (it drops like one)."""
    return info.live or config.realtime


def build_segmenter(config: RunConfig, engine: Engine, info: SourceInfo, *,
                    threshold: float | None = None, fault: Fault | None = None,
                    renderer: Renderer | None = None) -> Segmenter:
    """The per-frame step of a run: the smoother for ``config.smooth`` and a renderer.

    A live source's keyframe network runs on its own thread; files stay deterministic. With
    ``smooth="auto"`` on a live source on the CPU the network is timed first, on a frame of the
    source's size: every frame goes through it (``flow``) when that fits the source's rate,
    keyframes otherwise (``segmenter.choice`` says why).

    Args:
        config: the run.
        engine: its engine (possibly shared).
        info: the source's stream.
        threshold: probability above which a pixel is lesion (None: the network's).
        fault: a failure to inject into a stage (tests).
        renderer: the caller's renderer (None: the live HUD as ``config.hud`` says).
    """
    live = is_live(config, info)
    if renderer is None:
        renderer = Renderer(device=engine.name, untrained=engine.untrained, hud=config.hud)
    return Segmenter.build(engine, config.smooth, live=live, fps=info.fps, size_wh=info.size_wh,
                           threshold=threshold, threaded=live, renderer=renderer, fault=fault)


def build_pipeline(config: RunConfig, source: Source, engine: Engine, *, sinks=(),
                   window=None, segmenter: Segmenter | None = None,
                   fault: Fault | None = None) -> Pipeline:
    """The pipeline of a run; it closes the sinks, the window and the segmenter when it ends.

    Args:
        config: the run (batch, frame limit, smoothing, HUD).
        source: from :func:`open_input`.
        engine: from :func:`build_engine` (possibly shared).
        sinks: from :func:`open_outputs` (and any of the caller's own).
        window: a :class:`stream.outputs.WindowSink`, or None.
        segmenter: from :func:`build_segmenter` (default: built here).
        fault: a failure to inject into a stage (tests).
    """
    if segmenter is None:
        segmenter = build_segmenter(config, engine, source.info)
    return Pipeline(source, engine, sinks=sinks, window=window, segmenter=segmenter,
                    batch=config.batch, max_frames=config.max_frames, fault=fault)
