"""``python -m stream.batch``: segment every recording under the inputs into ``OUT``.

Parses the flags, finds the recordings and their keys, skips those already done, runs the rest
(:mod:`stream.batch.runners`), then rebuilds the summary and the report. Exit status 0 when
every recording is ``ok``, 1 when any failed (the others still finish) or on a user error
(one ``error: ...`` line), 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from stream import interrupts
from stream.batch.plan import (
    OUTPUTS,
    PATTERN,
    Options,
    OutputFolder,
    find_recordings,
    is_done,
    read_result,
    weights_digest,
)
from stream.batch.report import load_results, write_html, write_summary
from stream.batch.runners import (
    InlineSlot,
    ProcessSlot,
    RaySlot,
    check_address,
    connect_ray,
    dispatch,
)
from stream.command import EXIT_ERROR, EXIT_INTERRUPTED, run_command
from stream.engines import DEVICES, PRECISIONS, RUNTIMES, default_threads, resolve_device
from stream.engines.base import find_default_weights
from stream.errors import ConfigError
from stream.smoothing import CHOICES, DEFAULT_MODE

CRASH_ENV = "SLSNET_BATCH_CRASH"  # KEY@FRAME: kill the worker there, first attempt (tests)


def _count(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _outputs(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in OUTPUTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown output {', '.join(unknown) or '(none)'}; "
                                         f"choose from {','.join(OUTPUTS)}")
    return names


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``python -m stream.batch``."""
    parser = argparse.ArgumentParser(
        prog=prog or "python -m stream.batch",
        description="Segment a library of recordings: per-recording outputs in OUT/<key>/, "
        "OUT/summary.csv and OUT/report.html. A rerun skips what is done.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="folders (searched recursively), files or globs")
    parser.add_argument("--out", required=True, metavar="OUT", help="output folder")
    parser.add_argument("--pattern", default=PATTERN,
                        help=f"file names to take from folders (default {PATTERN})")
    parser.add_argument("--outputs", type=_outputs, default=("video", "csv"),
                        metavar=",".join(OUTPUTS),
                        help="what to write per recording (default video,csv): overlay.mp4, "
                        "masks/ (PNG per frame), frames.csv, masks.mkv (lossless)")
    model = parser.add_argument_group("model and device")
    model.add_argument("--weights", metavar="PATH", help="generator weights (default: shipped)")
    model.add_argument("--device", choices=DEVICES, default="auto",
                       help="none: where every worker runs; Ray: cuda needs "
                       "--gpus-per-recording (auto: cuda exactly when it is given)")
    model.add_argument("--runtime", choices=RUNTIMES, default="auto", help="CPU: onnx or torch")
    model.add_argument("--precision", choices=PRECISIONS, default="auto")
    model.add_argument("--batch", type=_count(1), default=1, help="frames per network call")
    model.add_argument("--tta", action="store_true",
                       help="test-time augmentation: the mean of the network over each frame and "
                       "its three mirror images (better masks, 4x the network's time)")
    model.add_argument("--smooth", choices=CHOICES, default=DEFAULT_MODE,
                       help="temporal smoothing (recordings are files: auto = flow)")
    model.add_argument("--hud", action="store_true",
                       help="draw the HUD into overlay.mp4 (off: speeds differ run to run)")
    model.add_argument("--max-frames", type=_count(1), metavar="N",
                       help="at most N frames per recording")
    where = parser.add_argument_group("where it runs")
    where.add_argument("--address", default="none", metavar="none|local|auto|HOST:PORT",
                       help="none: this machine, no cluster (default); local: a private Ray "
                       "here; auto or HOST:PORT: join a running Ray cluster")
    where.add_argument("--workers", type=_count(1), metavar="N",
                       help="recordings at once (none: default 1, in this process; Ray: default "
                       "as many as the cluster's CPUs (GPUs) allow)")
    where.add_argument("--cpus-per-recording", type=_count(1), metavar="C",
                       help="CPU share of one recording, which sets its threads (none: cores "
                       "/ workers; Ray: 1)")
    where.add_argument("--gpus-per-recording", type=_share, default=0.0, metavar="G",
                       help="Ray: GPUs per recording (0.5: two share one); 0 runs on the CPU")
    where.add_argument("--retries", type=_count(0), default=2, metavar="R",
                       help="times a recording whose worker died is tried again (default 2)")
    where.add_argument("--force", action="store_true", help="redo recordings already done")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def _crash_hook() -> tuple[str, int] | None:
    spec = os.environ.get(CRASH_ENV, "").strip()
    if not spec:
        return None
    key, _, at = spec.rpartition("@")
    if not key or not at.isdigit():
        raise ConfigError(f"{CRASH_ENV}={spec!r}: expected KEY@FRAME")
    return key, int(at)


def _weights(args) -> Path:
    path = Path(args.weights).expanduser() if args.weights else find_default_weights()
    if path is None:
        raise ConfigError("no weights: the shipped file is missing; give --weights (a batch "
                          "never runs random weights)")
    if not path.is_file():
        raise ConfigError(f"weights {path}: no such file")
    return path.resolve()


def _device(args, ray: bool) -> str:
    if not ray and args.gpus_per_recording:
        raise ConfigError("--gpus-per-recording is for Ray; with --address none use --device")
    if not ray:
        return resolve_device(args.device).type
    if args.device == "cuda" and not args.gpus_per_recording:
        raise ConfigError("--device cuda on Ray needs --gpus-per-recording (e.g. 1)")
    if args.device == "cpu" and args.gpus_per_recording:
        raise ConfigError("--device cpu with --gpus-per-recording: choose one")
    return "cuda" if args.gpus_per_recording else "cpu"


def plan_options(args, *, ray: bool) -> Options:
    """The per-recording options of parsed ``args`` (weights hashed, device explicit)."""
    weights = _weights(args)
    workers = args.workers or 1
    threads = args.cpus_per_recording or (1 if ray else max(1, default_threads() // workers))
    crash = _crash_hook()
    return Options(outputs=args.outputs, weights=str(weights),
                   weights_sha256=weights_digest(weights), smooth=args.smooth,
                   runtime=args.runtime, precision=args.precision, device=_device(args, ray),
                   batch=args.batch, tta=args.tta, hud=args.hud, threads=threads,
                   max_frames=args.max_frames,
                   extra={"crash": crash} if crash else {})


def _slots(args, out: Path, options: Options, todo: int):
    """The slots for ``--address`` and whether Ray was started here (to shut down)."""
    if args.address == "none":
        workers = min(args.workers or 1, todo)
        if workers <= 1:
            return [InlineSlot(out, options)], None
        return [ProcessSlot(out, options) for _ in range(workers)], None
    cpus = args.cpus_per_recording or 1
    ray, started = connect_ray(args.address)
    resources = ray.cluster_resources()
    fit = int(resources.get("CPU", 1) // cpus)
    if args.gpus_per_recording:
        fit = min(fit, int(resources.get("GPU", 0) // args.gpus_per_recording))
        if fit < 1:
            raise ConfigError(f"the Ray cluster has {resources.get('GPU', 0):g} GPUs; "
                              f"--gpus-per-recording {args.gpus_per_recording:g} fits none")
    workers = max(1, min(args.workers or fit, todo))
    slots = [RaySlot(ray, out, options, cpus=cpus, gpus=args.gpus_per_recording)
             for _ in range(workers)]
    return slots, (ray if started else None)


def run(args, *, console: Console) -> int:
    """Run the batch for parsed ``args``; returns the exit status.

    Raises:
        StreamError: a user error (one line).
    """
    interrupts.check()
    check_address(args.address)
    options = plan_options(args, ray=args.address != "none")
    recordings = find_recordings(args.inputs, args.pattern)
    if not recordings:
        raise ConfigError(f"no recordings matching {args.pattern} in {' '.join(args.inputs)}")
    with OutputFolder(args.out) as folder:
        out = folder.path
        todo = [r for r in recordings
                if args.force or not is_done(read_result(out, r.key), r, options)]
        console.print(f"{len(recordings)} recordings: {len(recordings) - len(todo)} done "
                      f"already, {len(todo)} to do → {out} ({args.address})")
        failed = 0
        interrupted = False
        if todo:
            slots, ray = _slots(args, out, options, len(todo))
            try:
                failed, interrupted = _run_all(slots, todo, out, options, args, console)
            finally:
                if ray is not None:
                    ray.shutdown()
        results = load_results(out)
        written = write_summary(out, results)
        page = write_html(out, results)
        console.print(f"summary: {', '.join(str(p) for p in written)}; report: {page}")
    if interrupted:
        console.print("interrupted: queued recordings were not started; recordings in progress "
                      "were discarded and will be redone by the next run")
        return EXIT_INTERRUPTED
    wanted = {r.key for r in recordings}
    bad = [r for r in results if r.get("key") in wanted and r.get("status") != "ok"]
    for r in bad:
        console.print(f"[red]failed:[/] {r['key']}: {r.get('reason', '')}")
    return EXIT_ERROR if bad or failed else 0


def _run_all(slots, todo, out, options, args, console) -> tuple[int, bool]:
    progress = Progress(TextColumn("[bold]recordings"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[frames]} frames · {task.fields[fps]:.1f} FPS"),
                        TimeElapsedColumn(), console=console)
    task = progress.add_task("recordings", total=len(todo), frames=0, fps=0.0)
    t0 = time.perf_counter()
    totals = {"frames": 0, "failed": 0}

    def on_result(result: dict) -> None:
        totals["frames"] += result.get("frames_out", 0)
        totals["failed"] += result.get("status") != "ok"
        rate = totals["frames"] / max(time.perf_counter() - t0, 1e-9)
        progress.update(task, advance=1, frames=totals["frames"], fps=rate)

    try:
        with progress:
            dispatch(slots, todo, out=out, options=options, retries=args.retries,
                     on_result=on_result)
    except KeyboardInterrupt:
        interrupts.ignore()
        return totals["failed"], True
    return totals["failed"], False


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """Entry point: parse ``argv`` and run; user errors are one line, exit status non-zero."""
    args = build_parser(prog).parse_args(argv)
    console = Console(stderr=True)
    return run_command(lambda: run(args, console=console), debug=args.debug)
