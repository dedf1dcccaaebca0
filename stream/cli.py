"""Command line of the live demo, shared by ``demo.py`` and ``python -m stream``.

Parses the flags, resolves the device once, opens the source, builds the engine, opens the
outputs, and runs the :class:`~stream.pipeline.Pipeline`; a file run shows a progress bar and
ends with a summary table. Every user mistake is one ``error: ...`` line and exit status 1
(2 for bad flags); ``--debug`` shows tracebacks. Ctrl-C finishes the frame in hand, closes the
outputs, prints the summary and exits 130.
"""

from __future__ import annotations

import argparse
import logging
import math
import time

from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from stream import interrupts
from stream.assembly import (
    RunConfig,
    build_engine,
    build_pipeline,
    build_segmenter,
    open_input,
    open_outputs,
    release,
    untrained_notice,
)
from stream.command import EXIT_INTERRUPTED, run_command
from stream.engines import DEFAULT_WEIGHTS, DEVICES, PRECISIONS, RUNTIMES, Engine, default_threads
from stream.errors import StreamError
from stream.faults import fault_from_env
from stream.outputs import WindowSink, display_problem
from stream.smoothing import CHOICES, DEFAULT_MODE
from stream.sources import SAMPLE
from stream.stats import PipelineStats, Summary
from stream.web import run_web


def _camera(text: str) -> int | str:
    text = text.strip()
    if text.isdigit():
        return int(text)
    if text.startswith("/dev/video"):
        return text
    raise argparse.ArgumentTypeError(f"expected a camera index or /dev/videoN, got {text!r}")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``demo.py`` / ``python -m stream``."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Real-time skin-lesion segmentation (SLSNet) of dermatoscope video: a camera "
        "or a video file in; the masked video, masks and measurements out. With no source it "
        f"plays the bundled sample clip ({SAMPLE.name}).",
        epilog="Window keys: q/Esc quit, space pause, m mask on/off, h HUD on/off, s snapshot.",
    )
    source = parser.add_argument_group("source (one of --camera, --video)")
    src = source.add_mutually_exclusive_group()
    src.add_argument("--camera", type=_camera, nargs="?", const=0, metavar="INDEX|/dev/videoN",
                     help="live camera (default index 0 when given without a value)")
    src.add_argument("--video", metavar="PATH", help="video file to process")
    source.add_argument(
        "--video-stream", type=int, metavar="N", default=None,
        help="files: the index of the video stream to process (default: the longest real "
        "video stream; cover art never)")
    out = parser.add_argument_group("outputs (any combination)")
    out.add_argument("--output", metavar="PATH",
                     help="write the rendered video (mask overlay and HUD) as H.264 MP4")
    out.add_argument("--mask-dir", metavar="DIR", help="write one 0/255 PNG mask per frame")
    out.add_argument("--mask-video", metavar="PATH", help="write the masks as a lossless video")
    out.add_argument("--csv", metavar="PATH",
                     help="write per-frame measurements: lesion area, box, centroid, stage times")
    out.add_argument("--no-display", action="store_true",
                     help="no window (headless); without other outputs it just measures speed")
    out.add_argument("--no-hud", action="store_true",
                     help="hide the HUD (FPS, latency, drops, device) in window and --output")
    model = parser.add_argument_group("model and device")
    model.add_argument("--weights", metavar="PATH",
                       help=f"generator weights (default: the shipped {DEFAULT_WEIGHTS.name}, "
                       "found inside the installed package from any folder; without them, "
                       "random weights with a loud UNTRAINED WEIGHTS warning)")
    model.add_argument("--device", choices=DEVICES, default="auto",
                       help="where the network runs; auto picks CUDA when available")
    model.add_argument("--precision", choices=PRECISIONS, default="auto",
                       help="network precision; auto = fastest measured for the device (GPU: "
                       "fp16; CPU: see --runtime); fp32 keeps the exact network; fp16 needs CUDA")
    model.add_argument("--no-cuda-graph", action="store_true",
                       help="GPU: run eagerly instead of replaying a captured CUDA graph")
    model.add_argument("--batch", type=_positive, default=1,
                       help="frames per network call (more throughput on files, more latency)")
    model.add_argument("--threads", type=_positive, default=None,
                       help=f"CPU: intra-op threads (default: cores - 1 = {default_threads()})")
    model.add_argument("--runtime", choices=RUNTIMES, default="auto",
                       help="CPU: what runs the network; auto = ONNX Runtime (faster than torch at "
                       "fp32, docs/benchmarks.md) when onnx and onnxruntime are installed (pip "
                       "install \".[cpu]\"), else torch, and with --precision auto the fastest "
                       "form of the network (e.g. int8) whose masks agree with fp32 on 99.5 %% "
                       "of the pixels of bundled images, checked on the first start with given "
                       "weights and cached (the start-up line says which and why); onnx: ONNX "
                       "Runtime fp32; a GPU always runs torch")
    model.add_argument("--tta", action="store_true",
                       help="test-time augmentation: each frame's mask is the mean of the "
                       "network over the frame and its three mirror images; better masks at "
                       "4x the network's time (for files and batches; live, --smooth auto "
                       "then uses keyframes where the CPU cannot keep up)")
    run = parser.add_argument_group("run")
    run.add_argument("--max-frames", type=_positive, metavar="N", help="stop after N frames")
    run.add_argument("--realtime", action="store_true",
                     help="play a file at its own frame rate, dropping frames like a camera "
                     "when processing falls behind")
    run.add_argument("--smooth", choices=CHOICES, default=DEFAULT_MODE,
                     help="temporal smoothing of the masks between frames; auto: flow (every "
                     "frame through the network, blended with the previous mask moved along "
                     "optical flow) for files, on a GPU, and for a camera on the CPU when the "
                     "network, timed at start, keeps up with its frame rate; keyframe otherwise "
                     "(network on keyframes, optical flow between them, so the view keeps the "
                     "camera's rate)")
    run.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    web = parser.add_argument_group("web demo (python demo.py --gradio)")
    web.add_argument("--gradio", action="store_true",
                     help="serve the browser demo (Live webcam, Video and Image uploads; with "
                     "--camera also a Server camera tab) instead of running one source")
    web.add_argument("--host", default="127.0.0.1",
                     help="address to serve on (0.0.0.0: every interface)")
    web.add_argument("--port", type=_positive, default=7860, help="port to serve on")
    web.add_argument("--max-upload-mb", type=_positive, default=500, metavar="MB",
                     help="largest video or image the page accepts")
    web.add_argument("--auth", action="append", metavar="USER:PASSWORD",
                     help="a login the page asks for (repeat for more users); needed to serve "
                     "beyond this machine")
    web.add_argument("--auth-file", metavar="FILE",
                     help="logins, one user:password per line, in a file only its owner may "
                     "read (chmod 600)")
    web.add_argument("--no-auth", action="store_true",
                     help="serve a non-local --host without a login: anyone on the network sees "
                     "the video (the page and the console say so)")
    web.add_argument("--ssl-certfile", metavar="PEM", help="TLS certificate: serve https")
    web.add_argument("--ssl-keyfile", metavar="PEM", help="TLS private key of --ssl-certfile")
    return parser


def summary_table(summary: Summary, *, title: str = "SLSNet live: summary") -> Table:
    """The end-of-run table: counts, FPS and per-stage latency percentiles."""
    table = Table(title=title, title_justify="left")
    table.add_column("stage")
    for name in ("p50 ms", "p95 ms", "p99 ms"):
        table.add_column(name, justify="right")
    for stage, values in summary.latency.items():
        table.add_row(stage, *("-" if math.isnan(v) else f"{v:.1f}" for v in values))
    table.caption = (f"device {summary.device}  ·  frames in {summary.frames_in}, out "
                     f"{summary.frames_out}, dropped {summary.dropped}  ·  {summary.fps:.1f} FPS"
                     f"  ·  wall {summary.wall_s:.1f} s"
                     + ("  ·  interrupted" if summary.interrupted else ""))
    return table


class _Progress:
    """A rich progress bar (frames, FPS, ETA) fed by the pipeline's stats."""

    def __init__(self, console: Console, total: int | None) -> None:
        self.bar = Progress(TextColumn("[bold]processing"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[fps]:.1f} FPS"), TimeRemainingColumn(),
                            console=console, transient=False)
        self.task = self.bar.add_task("frames", total=total, fps=0.0)

    def __call__(self, stats: PipelineStats) -> None:
        self.bar.update(self.task, completed=stats.frames_out, fps=stats.processed.rate())


def _pick_window(args, console: Console, has_outputs: bool):
    if args.no_display:
        return None
    problem = display_problem()
    if problem is None:
        return WindowSink()
    if has_outputs:
        console.print(f"[yellow]warning:[/] no display ({problem}); continuing headless")
        return None
    raise StreamError(f"no display ({problem}); use --no-display, or give an output "
                        "such as --output or --csv")


def run(args: argparse.Namespace, *, console: Console | None = None) -> int:
    """Wire and run everything for parsed ``args``; returns the exit status.

    Raises:
        StreamError: a problem the user can fix (the message is one line).
    """
    interrupts.check()  # a Ctrl-C that an import swallowed
    console = console or Console(stderr=True)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.ERROR,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.gradio:  # the browser demo serves many sources; stream.web wires it
        return run_web(args, console=console)
    web_only = [flag for flag, value in (
        ("--auth", args.auth), ("--auth-file", args.auth_file), ("--no-auth", args.no_auth),
        ("--ssl-certfile", args.ssl_certfile), ("--ssl-keyfile", args.ssl_keyfile)) if value]
    if web_only:
        raise StreamError(f"{', '.join(web_only)} only apply to the web demo (--gradio)")
    fault = fault_from_env()  # SLSNET_FAIL_STAGE: a failure the reliability tests inject
    config = RunConfig.from_args(args)
    if config.source is None:
        console.print(f"no source given: playing the sample clip {SAMPLE}")
    window = _pick_window(args, console, config.outputs.any)
    source = open_input(config)
    sinks: list = []
    segmenter = None
    try:
        for note in getattr(source, "warnings", []):
            console.print(f"[yellow]warning:[/] {note}")
        engine = load_engine(config, console)
        notice = untrained_notice(engine)
        if notice is not None:
            console.print(Panel(notice, style="bold red"))
        segmenter = build_segmenter(config, engine, source.info)
        sinks = open_outputs(config, source.info)
        for sink in sinks:
            for note in getattr(sink, "warnings", []):
                console.print(f"[yellow]warning:[/] {note}")
        shown = {id(sink): len(getattr(sink, "warnings", [])) for sink in sinks}
        interrupts.check()  # pressed while the engine was built: nothing written yet
    except BaseException:
        release(source, segmenter, sinks)
        raise
    pipeline = build_pipeline(config, source, engine, sinks=sinks, window=window,
                              segmenter=segmenter, fault=fault)
    console.print(f"{source.info.name}: {source.info.size_wh[0]}×{source.info.size_wh[1]} at "
                  f"{source.info.fps:.2f} fps → {engine.name}"
                  + f", smoothing {segmenter.mode}"
                  + (f" ({args.smooth}" if args.smooth != segmenter.mode else "")
                  + (f": {segmenter.choice})" if segmenter.choice
                     else ")" if args.smooth != segmenter.mode else ""))
    total = source.info.frame_count
    if args.max_frames is not None and total is not None:
        total = min(total, args.max_frames)
    progress = None if source.info.live else _Progress(console, total)
    warned = len(source.warnings)
    try:
        if progress is not None:
            with progress.bar:
                summary = pipeline.run(progress=progress)
                progress(pipeline.stats)
        else:
            summary = pipeline.run()
    except StreamError as exc:
        summary = getattr(exc, "summary", None)
        if summary is not None:
            console.print(summary_table(summary, title="SLSNet live: summary (failed)"))
        _report_losses(source, sinks, console, warned=warned, cut_short=True)
        raise
    console.print(summary_table(summary))
    for sink in sinks:
        for note in getattr(sink, "warnings", [])[shown[id(sink)]:]:  # those not said at start
            console.print(f"[yellow]warning:[/] {note}")
    _report_losses(source, sinks, console, warned=warned, cut_short=summary.interrupted)
    return EXIT_INTERRUPTED if summary.interrupted else 0


def load_engine(config: RunConfig, console: Console) -> Engine:
    """:func:`stream.assembly.build_engine` under a spinner; a first start's build is said.

    The engine's choice among the network's forms (``--runtime auto``), when it made one, is
    printed in one line.
    """
    said: list[str] = []

    def progress(line: str) -> None:
        said.append(line)
        console.print(line)

    t0 = time.perf_counter()
    with console.status("loading the network"):
        engine = build_engine(config, progress=progress)
    if said:
        console.print(f"built in {time.perf_counter() - t0:.0f} s")
    choice = getattr(engine, "choice", None)
    if choice:
        console.print(f"runtime auto: {engine.name} ({choice})")
    return engine


def _report_losses(source, sinks, console: Console, *, warned: int, cut_short: bool) -> None:
    """Say what the outputs lack: frames the input could not give, or the end of a cut run."""
    for note in source.warnings[warned:]:  # found while reading, e.g. where a damaged file ends
        console.print(f"[yellow]warning:[/] {note}")
    unreadable = source.stats().get("unreadable", 0)
    note = source.damage_note() if hasattr(source, "damage_note") else None
    if note:
        console.print(f"[yellow]warning:[/] {note}")
    elif unreadable:
        console.print(f"[yellow]warning:[/] {source.info.name}: {unreadable} unreadable frame(s) "
                      "skipped (damaged data); every readable frame was processed")
    if cut_short:
        for sink in sinks:
            if getattr(sink, "broken", None):
                continue  # its error line says what the file holds
            console.print(f"[yellow]warning:[/] {sink.path} is incomplete: the first "
                          f"{sink.written} frames were written to it")


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """Entry point: parse ``argv`` and run; user errors are one line, exit status non-zero."""
    args = build_parser(prog).parse_args(argv)
    console = Console(stderr=True)
    return run_command(lambda: run(args, console=console), debug=args.debug)
