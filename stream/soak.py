"""``python -m stream.soak``: run the pipeline for a long time and watch memory, speed and latency.

    python -m stream.soak --minutes 30 [--clip clip.mp4] [--interval 30] [--device auto]
        [--no-outputs] [--keep-outputs DIR] [--json soak.json] [--max-growth-mb 50]

A clip (default: the bundled sample) is played in a loop, frame indices and timestamps running
on across loops, through the whole pipeline: decode, engine, smoothing, render and, unless
``--no-outputs``, the video, mask video and CSV sinks (written to a temporary folder). Every
``--interval`` seconds a sample is taken: frames, FPS over the interval, end-to-end latency p50
and p95 (last frames), the process RSS and, on CUDA, the GPU memory held by torch and CuPy.

The verdict: RSS must not grow by more than ``--max-growth-mb`` over the RSS at the end of the
warm-up (the first sample: model loaded, encoders open, queues full). The exit status is 0 when
it holds, 1 when it does not, 130 after Ctrl-C (the samples so far are still reported).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from stream.assembly import Outputs, RunConfig, build_engine, build_pipeline, open_outputs
from stream.command import one_line
from stream.engines import DEVICES, RUNTIMES, resolve_device
from stream.errors import ConfigError, StreamError
from stream.smoothing import CHOICES, DEFAULT_MODE
from stream.sources import SAMPLE, LoopingSource
from stream.stats import E2E


@dataclass
class Sample:
    """The state of the run at one moment."""

    t_s: float  # since the pipeline started
    frames: int  # frames through every stage and sink
    fps: float  # over the interval before this sample
    latency_p50_ms: float  # end-to-end, last frames
    latency_p95_ms: float
    rss_mb: float
    gpu_mb: float | None  # torch + CuPy memory on the GPU; None on the CPU
    dropped: int


def rss_mb() -> float:
    """Resident memory of this process in MB (Linux /proc; the peak elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gpu_mb(device) -> float | None:
    """GPU memory this process holds through torch's and CuPy's allocators (None on the CPU)."""
    if device.type != "cuda":
        return None
    import torch

    held = torch.cuda.memory_reserved(device)
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        held += cupy.get_default_memory_pool().total_bytes()
    return held / 2**20


class Sampler:
    """The pipeline's progress callback: a sample per interval, and the stop at the deadline."""

    def __init__(self, pipeline, *, seconds: float, interval: float, device, console) -> None:
        self.pipeline, self.seconds, self.interval = pipeline, seconds, interval
        self.device, self.console = device, console
        self.samples: list[Sample] = []
        self.start = time.perf_counter()
        self._next, self._last = interval, (0.0, 0)
        self._stopped = False

    def __call__(self, stats) -> None:
        """Called by the pipeline about ten times a second with its live stats."""
        t = time.perf_counter() - self.start
        if t >= self._next:
            self._next += self.interval
            self.take(stats, t)
        if t >= self.seconds and not self._stopped:
            self._stopped = True
            self.pipeline.request_stop()

    def take(self, stats, t: float) -> None:
        """Record (and print) a sample at ``t`` seconds."""
        t0, n0 = self._last
        frames = stats.frames_out
        p50, p95 = stats.snapshot().latency.get(E2E, (float("nan"), float("nan")))
        sample = Sample(round(t, 1), frames, (frames - n0) / (t - t0) if t > t0 else 0.0,
                        p50, p95, rss_mb(), gpu_mb(self.device), stats.dropped)
        self._last = (t, frames)
        self.samples.append(sample)
        gpu = "" if sample.gpu_mb is None else f"  GPU {sample.gpu_mb:.0f} MB"
        self.console.print(f"{sample.t_s:7.0f} s  {frames:7d} frames  {sample.fps:5.1f} FPS  "
                           f"latency p50 {p50:6.0f} ms  RSS {sample.rss_mb:6.1f} MB{gpu}")


def verdict(samples: list[Sample], limit_mb: float) -> dict:
    """RSS growth after the warm-up (the first sample) against ``limit_mb``, and the RSS trend.

    The slope (MB per minute, least squares over all samples) shows a slow leak that a short
    run keeps under the limit.
    """
    if len(samples) < 2:
        return {"ok": None, "reason": "fewer than two samples: run longer or sample more often"}
    base, rest = samples[0], samples[1:]
    growth = max(s.rss_mb for s in rest) - base.rss_mb
    minutes, rss = [s.t_s / 60 for s in samples], [s.rss_mb for s in samples]
    slope = float(np.polyfit(minutes, rss, 1)[0]) if np.ptp(minutes) > 0 else 0.0
    return {"ok": growth <= limit_mb, "warmup_rss_mb": base.rss_mb, "max_rss_mb":
            max(s.rss_mb for s in samples), "growth_mb": growth, "limit_mb": limit_mb,
            "slope_mb_per_min": slope, "final_rss_mb": samples[-1].rss_mb}


def report_table(samples: list[Sample], result: dict, *, title: str) -> Table:
    """Samples as rows; the verdict as the caption."""
    table = Table(title=title, title_justify="left")
    for name in ("t (s)", "frames", "FPS", "p50 ms", "p95 ms", "RSS MB", "GPU MB", "dropped"):
        table.add_column(name, justify="right")
    for s in samples:
        table.add_row(f"{s.t_s:.0f}", str(s.frames), f"{s.fps:.1f}", f"{s.latency_p50_ms:.0f}",
                      f"{s.latency_p95_ms:.0f}", f"{s.rss_mb:.1f}",
                      "-" if s.gpu_mb is None else f"{s.gpu_mb:.0f}", str(s.dropped))
    if result.get("ok") is None:
        table.caption = result["reason"]
    else:
        table.caption = (f"RSS after warm-up {result['warmup_rss_mb']:.1f} MB, growth "
                         f"{result['growth_mb']:+.1f} MB (limit {result['limit_mb']:.0f}), "
                         f"slope {result['slope_mb_per_min']:+.2f} MB/min: "
                         + ("PASS" if result["ok"] else "FAIL"))
    return table


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stream.soak",
                                description=__doc__.split("\n\n")[0].strip("`: "))
    p.add_argument("--minutes", type=float, required=True, help="how long to run")
    p.add_argument("--clip", default=str(SAMPLE), help="video played in a loop (default: sample)")
    p.add_argument("--interval", type=float, default=30.0, help="seconds between samples")
    p.add_argument("--device", choices=DEVICES, default="auto")
    p.add_argument("--weights", help="generator weights (default file, else random)")
    p.add_argument("--threads", type=int, default=None, help="CPU intra-op threads")
    p.add_argument("--runtime", choices=RUNTIMES, default="auto",
                   help="CPU: network in ONNX Runtime or torch (auto: as demo.py)")
    p.add_argument("--smooth", choices=CHOICES, default=DEFAULT_MODE,
                   help="temporal smoothing, as demo.py's --smooth (auto: flow for a file)")
    p.add_argument("--no-outputs", action="store_true", help="no video, mask video and CSV")
    p.add_argument("--keep-outputs", metavar="DIR", help="write the outputs here and keep them")
    p.add_argument("--max-growth-mb", type=float, default=50.0,
                   help="RSS growth after warm-up that fails the run")
    p.add_argument("--json", metavar="PATH", help="write samples and verdict as JSON ('-': stdout)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the soak; see the module docstring."""
    args = _parser().parse_args(argv)
    console = Console(stderr=True)
    try:
        return _soak(args, console)
    except StreamError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1


def _soak(args, console: Console) -> int:
    if args.minutes <= 0 or args.interval <= 0:
        raise ConfigError("--minutes and --interval must be positive")
    device = resolve_device(args.device)
    folder = None if args.no_outputs else Path(args.keep_outputs or tempfile.mkdtemp("soak"))
    outputs = Outputs() if folder is None else Outputs(
        video=folder / "soak.mp4", mask_video=folder / "soak_masks.mkv", csv=folder / "soak.csv")
    config = RunConfig(device=device, source=args.clip, outputs=outputs,
                       weights=args.weights, threads=args.threads, runtime=args.runtime,
                       smooth=args.smooth)
    source = LoopingSource(args.clip)
    engine = build_engine(config)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    sinks = open_outputs(config, source.info)
    pipeline = build_pipeline(config, source, engine, sinks=sinks)
    smoother = pipeline.smoother
    console.print(f"soak: {args.clip} ({source.info.size_wh[0]}×{source.info.size_wh[1]}) in a "
                  f"loop for {args.minutes:g} min on {engine.name}, smoothing {smoother.mode}; "
                  f"RSS at start-up {rss_mb():.1f} MB; a sample every {args.interval:g} s")
    sampler = Sampler(pipeline, seconds=args.minutes * 60, interval=args.interval, device=device,
                      console=console)
    try:
        summary = pipeline.run(progress=sampler)
    finally:
        if folder is not None and not args.keep_outputs:
            shutil.rmtree(folder, ignore_errors=True)
    sampler.take(pipeline.stats, time.perf_counter() - sampler.start)  # the end state
    result = verdict(sampler.samples, args.max_growth_mb)
    title = (f"Soak: {summary.frames_out} frames, {source.passes} loops of {Path(args.clip).name}"
             f", {summary.wall_s / 60:.1f} min on {engine.name}")
    console.print(report_table(sampler.samples, result, title=title))
    if args.json:
        blob = {"clip": str(args.clip), "minutes": args.minutes, "device": engine.name,
                "outputs": folder is not None, "frames": summary.frames_out,
                "loops": source.passes, "interrupted": summary.interrupted,
                "samples": [asdict(s) for s in sampler.samples], "verdict": result}
        text = json.dumps(blob, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    if summary.interrupted:
        return 130
    return 0 if result.get("ok") is not False else 1


if __name__ == "__main__":
    sys.exit(main())
