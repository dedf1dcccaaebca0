"""How fast each smoothing mode runs the live loop on this machine, in wall time and CPU time.

    python -m stream.temporal_speed [--video stream/assets/sample.mp4] [--frames 120] \
        [--modes off,flow,keyframe,async] [--weights PATH] [--threads 1] [--json OUT]

For each mode, the decoded frames go through the pipeline's per-frame step
(:class:`stream.segmenter.Segmenter`): schedule → network (when wanted) → smoother → render.
Synchronous modes run as fast as they can (their FPS is what they could sustain); ``async``
(keyframe with the network on its own thread) is fed at the clip's frame rate, as a camera
would, and reports how many frames it finished late. CPU time is reported next to wall time
because on a shared machine wall time mostly measures the neighbours: ``loop CPU`` is the
processing thread's CPU time per frame without the network (flow, warp, mask, render), ``net
CPU`` the network's, amortised over all frames (on the worker thread for ``async``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import av
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from stream.engines import build_engine
from stream.errors import EngineError, WeightsError
from stream.frame import Frame
from stream.outputs import Renderer
from stream.segmenter import Segmenter
from stream.smoothing import MODES
from stream.sources import SAMPLE


def decode(path: str | Path, limit: int) -> tuple[list[Frame], float]:
    """The first ``limit`` frames of a video (PyAV) and its frame rate."""
    frames: list[Frame] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 30)
        for i, vf in enumerate(container.decode(stream)):
            if i >= limit:
                break
            frames.append(Frame(vf.to_ndarray(format="bgr24"), i, vf.pts, stream.time_base, 0.0))
    if not frames:
        raise ValueError(f"{path} has no decodable video frames")
    return frames, fps


class CpuTimed:
    """An engine that adds up the CPU time its calls take on the calling thread."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.device, self.size, self.name = engine.device, engine.size, engine.name
        self.threshold, self.untrained = engine.threshold, engine.untrained
        self.cpu, self.frames = 0.0, 0

    def predict(self, frames: list[Frame]) -> None:
        """``engine.predict``, timed."""
        t0 = time.thread_time()
        self.engine.predict(frames)
        self.cpu += time.thread_time() - t0
        self.frames += len(frames)


def measure(mode: str, frames: list[Frame], fps: float, engine, renderer: Renderer) -> dict:
    """Run one mode over the frames; returns its speed numbers."""
    live = mode == "async"
    timed = CpuTimed(engine)
    segmenter = Segmenter.build(timed, "keyframe" if live else mode, live=False, fps=fps,
                                threaded=live, renderer=renderer)
    inferred, late, intervals = 0, 0, []
    loop_cpu = 0.0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        for i, src in enumerate(frames):
            if live:
                due = wall0 + i / fps
                time.sleep(max(0.0, due - time.perf_counter()))
            t_cpu = time.thread_time()
            frame = Frame(src.image, src.index, src.pts, src.time_base, time.perf_counter())
            segmenter.step([frame])
            loop_cpu += time.thread_time() - t_cpu
            if live and time.perf_counter() - due > 1.0 / fps:
                late += 1
            intervals.append(frame.notes.get("keyframe_interval", 1))
            inferred += live and bool(frame.notes.get("keyframe"))
    finally:
        segmenter.close()
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    if live:  # the worker's (and any other thread's) CPU time
        net_cpu = cpu - loop_cpu
    else:
        net_cpu, inferred = timed.cpu, timed.frames
        loop_cpu -= net_cpu
    n = len(frames)
    return {
        "mode": mode,
        "frames": n,
        "fps": n / wall,
        "loop_cpu_ms": loop_cpu / n * 1e3,
        "net_cpu_ms": net_cpu / n * 1e3,
        "process_cpu_ms": cpu / n * 1e3,
        "network_share": inferred / n,
        "interval": float(np.mean(intervals)),
        "late": late if live else None,
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m stream.temporal_speed", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--video", default=str(SAMPLE), help="clip to play (default: the sample)")
    p.add_argument("--frames", type=int, default=120, help="frames to time per mode")
    p.add_argument(
        "--modes",
        default="off,flow,keyframe,async",
        help=f"comma list of {', '.join(MODES)}, async",
    )
    p.add_argument("--weights", help="weights file (default: as the app; random if none)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of the network")
    p.add_argument("--json", metavar="OUT", help="write the numbers as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    console = Console(width=150) if not sys.stdout.isatty() else Console()
    try:
        bad = [m for m in modes if m not in (*MODES, "async")]
        if bad:
            raise ValueError(f"unknown mode {bad[0]!r}; choose from {', '.join(MODES)}, async")
        if not Path(args.video).is_file():
            raise FileNotFoundError(f"video not found: {args.video}")
        frames, fps = decode(args.video, args.frames)
        engine = build_engine(
            device=torch.device("cpu"), weights=args.weights, threads=args.threads
        )
    except (FileNotFoundError, ValueError, WeightsError, EngineError, av.FFmpegError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # no HUD: the loop is timed without the numbers a live view would draw
    renderer = Renderer(device=engine.name, untrained=engine.untrained, hud=False)
    engine.infer([frames[0]])  # warm-up
    rows = [measure(mode, frames, fps, engine, renderer) for mode in modes]
    table = Table(
        title=f"Live loop speed — {args.video}, {len(frames)} frames at {fps:g} fps, {engine.name}"
    )
    for col in ("mode", "FPS", "loop CPU ms/frame", "net CPU ms/frame", "network on", "k", "late"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    for r in rows:
        table.add_row(
            r["mode"],
            f"{r['fps']:.1f}",
            f"{r['loop_cpu_ms']:.1f}",
            f"{r['net_cpu_ms']:.1f}",
            f"{r['network_share']:.0%}",
            f"{r['interval']:.1f}",
            "—" if r["late"] is None else str(r["late"]),
        )
    console.print(table)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"video": args.video, "engine": engine.name, "fps": fps, "rows": rows}, indent=1
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
