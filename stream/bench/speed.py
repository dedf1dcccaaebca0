"""``python -m stream.bench``: how fast SLSNet runs on this machine, in one run.

    python -m stream.bench [--device auto|cpu|cuda] [--size 128] [--json OUT] [--quick]

On a CUDA GPU: generator latency at batch 1 (p50/p99) and throughput at batch 64/512 in fp32
eager, fp16 eager and fp16 graph; the same for torchvision's LR-ASPP MobileNetV3 and FCN-ResNet50
(random weights, reference peers on the same card; skipped with a note without torchvision);
the 1080p frame path (frame on the host → mask on the host) p50/p99, also with ``--tta``'s mirror
mean; CuPy vs torch
preprocessing; and the app's file mode (``--output``) on a generated 1080p clip against a plain
PyAV decode + encode of the same clip. On the CPU: fp32 and bf16 at batch 1 and batch 8, every
ONNX Runtime form at batch 1 (the exact engine and the forms ``--runtime auto`` checks:
:mod:`stream.bench.cpu_forms`) timed in turn with torch fp32 (FPS and the ratio) and judged
against 30 FPS, the CPU frame path (also with ``--tta``) and the file-mode comparison.
``--quick`` is a short run (fewer repeats, smaller batches and clip). A rich table goes to the
screen, ``--json`` writes every number.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from slsnet.inference import MIRRORS
from stream.bench.cpu_forms import Form, cpu_targets, onnx_forms
from stream.bench.frame_path import pipeline_rows
from stream.bench.gpu import environment as gpu_environment
from stream.bench.gpu import frame_rows, model_rows, preprocess_rows, reference_models
from stream.bench.gpu import targets as gpu_targets
from stream.bench.measure import Row, Timing, latencies, throughput
from stream.engines import CpuEngine, default_threads, load_weights, resolve_device
from stream.engines.cuda import CudaEngine
from stream.engines.mirror import MirrorEngine
from stream.engines.onnx_runtime import INSTALL_HINT, missing_packages
from stream.errors import ConfigError, StreamError
from stream.frame import Frame
from stream.timing import alternating

SECTIONS = ("model", "frame", "preprocess", "file")


def cpu_model_rows(generator, *, size: int, timing: Timing, batch: int,
                   onnx: Sequence[Form] = ()) -> list[Row]:
    """fp32 and bf16 (autocast), channels_last as the CPU engine runs them.

    With ``onnx`` (:func:`stream.bench.cpu_forms.onnx_forms`) also each ONNX Runtime form at
    batch 1, timed in turn with torch fp32 (the ratios hold on a loaded machine), with FPS and
    the ratio.
    """
    model = generator.eval().to(memory_format=torch.channels_last)
    rows, onnx_rows = [], []
    for precision in ("fp32", "bf16"):
        autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16"
                    else nullcontext())

        def run(b, autocast=autocast):
            x = torch.rand(b, 3, size, size).mul_(2).sub_(1)
            with torch.inference_mode(), autocast:
                return model(x.contiguous(memory_format=torch.channels_last))

        if precision == "fp32" and onnx:
            x1 = torch.rand(1, 3, size, size).mul_(2).sub_(1)
            ms, *ort_ms = alternating(
                [lambda: run(1), *(lambda f=f, x=x1: f.run(x) for f in onnx)],
                timing.warmup, timing.iters)
            for form, times in zip(onnx, ort_ms, strict=True):
                ratio = float(np.median(ms) / np.median(times))
                onnx_rows.append(Row("model", "slsnet", form.mode, 1,
                                     *np.percentile(times, [50, 99]),
                                     note=f"{1e3 / np.median(times):.1f} FPS, {ratio:.2f}× "
                                     "torch fp32 eager (timed in turn)"))
        else:
            ms = latencies(lambda: run(1), lambda: None, timing.warmup, timing.iters)
        rows.append(Row("model", "slsnet", f"{precision} eager", 1, *np.percentile(ms, [50, 99]),
                        note=f"{1e3 / np.median(ms):.1f} FPS"))
        ips = throughput(lambda b=batch: run(b), batch, lambda: None, timing)
        rows.append(Row("model", "slsnet", f"{precision} eager", batch, images_per_s=ips))
    return rows + onnx_rows


def engine_frame_rows(engine, *, size_wh: tuple[int, int], timing: Timing) -> list[Row]:
    """``engine`` on one frame: resize + network + mask at the frame size."""
    w, h = size_wh
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ms = latencies(lambda: engine.infer([Frame(image, 0, 0, Fraction(1, 30), 0.0)]),
                   lambda: None, timing.warmup, timing.iters)
    return [Row("frame path", f"{w}×{h} frame → mask", engine.name, 1,
                *np.percentile(ms, [50, 99]))]


# -------------------------------------------------------------------------------------- output
def print_report(report: dict) -> None:
    """The rows, notes and targets as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # a log file: do not squeeze the table into 80 columns
        console = Console(width=180)
    env = report["env"]
    where = env.get("gpu") or env.get("cpu", "")
    table = Table(title=f"stream.bench on {report['device']} ({where}), weights: "
                  f"{report['weights']}")
    for col in ("section", "what", "mode", "batch", "p50 ms", "p99 ms", "images/s", "wall s",
                "note"):
        table.add_column(col, justify="right" if col in ("batch", "p50 ms", "p99 ms",
                                                         "images/s", "wall s") else "left")

    def fmt(v, digits):
        return "" if v is None else f"{v:,.{digits if v < 100 else 0}f}"

    for r in report["rows"]:
        table.add_row(r["section"], r["name"], r["mode"], fmt(r["batch"], 0),
                      fmt(r["p50_ms"], 3), fmt(r["p99_ms"], 3), fmt(r["images_per_s"], 1),
                      fmt(r["wall_s"], 2), r["note"])
    console.print(table)
    for t in report["targets"]:
        mark = "[green]met[/]" if t["ok"] else "[red]missed[/]"
        console.print(f"target {t['target']}: {t['value']} {mark}")
    for note in report["notes"]:
        console.print(f"[yellow]note:[/] {note}")


def environment(device: torch.device, threads: int) -> dict:
    """Versions and the machine, for the JSON and for docs/benchmarks.md."""
    import cv2

    try:
        import av

        av_version = av.__version__
    except ImportError:
        av_version = None
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "numpy": np.__version__, "opencv": cv2.__version__, "pyav": av_version, "cpu": cpu,
           "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
           else os.cpu_count(), "torch_threads": threads}
    if device.type == "cuda":
        env |= gpu_environment(device)
    return env


# ------------------------------------------------------------------------------------------ CLI
def _size_wh(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH such as 1920x1080, got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return w, h


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags."""
    summary = __doc__.split("\n\n")[0].replace("``", "")
    p = argparse.ArgumentParser(prog="python -m stream.bench", description=summary,
                                epilog="Numbers of record: docs/benchmarks.md.")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--size", type=int, default=128, help="network input size S (multiple of 8)")
    p.add_argument("--json", metavar="OUT", help="also write every number to this JSON file")
    p.add_argument("--quick", action="store_true", help="a short run: fewer repeats, small batches")
    p.add_argument("--weights", metavar="PATH", help="generator weights (default: the shipped "
                   "file if present, else random weights; speed does not depend on them)")
    p.add_argument("--threads", type=int, help="CPU: intra-op threads (default: as the app)")
    p.add_argument("--frame-size", type=_size_wh, default=(1920, 1080), metavar="WxH",
                   help="frame size of the frame-path and preprocessing rows")
    p.add_argument("--clip-size", type=_size_wh, metavar="WxH",
                   help="file-mode clip size (default: 1920x1080 on a GPU, 640x360 on the CPU)")
    p.add_argument("--clip-frames", type=int, metavar="N", help="file-mode clip length")
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"comma-separated sections to run, of {', '.join(SECTIONS)}")
    return p


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    """Measure what ``args`` asks for; returns the report (rows, targets, notes, environment)."""
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(unknown)}; choose from "
                          f"{', '.join(SECTIONS)}")
    for flag, value in (("--threads", args.threads), ("--clip-frames", args.clip_frames)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be at least 1, got {value}")
    if args.size < 8 or args.size % 8:
        raise ConfigError(f"--size must be a positive multiple of 8, got {args.size}")
    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise ConfigError(f"--json {args.json}: folder {Path(args.json).parent} does not exist")
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    generator, untrained, weights = load_weights(args.weights)
    if args.size != generator.config.input_size:  # fully convolutional: any multiple of 8
        generator.config = dataclasses.replace(generator.config, input_size=args.size)
    threads = None
    if not gpu:
        threads = args.threads or default_threads()
        torch.set_num_threads(threads)
    quick = args.quick
    if gpu:
        timing = Timing(5, 30, 3, 2, 1) if quick else Timing(20, 200, 5, 3, 2)
    else:  # the batch-1 calls have warmed the model up already
        timing = Timing(1, 2, 1, 1, 0) if quick else Timing(3, 20, 3, 1, 0)
    clip_size = args.clip_size or ((1920, 1080) if gpu else ((160, 120) if quick else (640, 360)))
    clip_frames = args.clip_frames or ((60 if quick else 300) if gpu else (8 if quick else 60))
    rows: list[Row] = []
    runs: list[str] = []  # the ONNX Runtime form --runtime auto runs here, once timed
    notes = ["random weights (no weights file): the speed is the same, the masks meaningless"
             ] if untrained else []

    def models() -> list[Row]:
        if not gpu:
            missing = missing_packages()
            notes.extend([f"no ONNX Runtime row: {', '.join(missing)} not installed "
                          f"({INSTALL_HINT})"] if missing else [])
            onnx: list[Form] = []
            if not missing:
                onnx, form_notes = onnx_forms(generator, untrained=untrained, threads=threads)
                notes.extend(form_notes)
                runs.extend(f.mode for f in onnx if f.runs)
            return cpu_model_rows(copy.deepcopy(generator), size=args.size, timing=timing,
                                  batch=2 if quick else 8, onnx=onnx)
        builders = {"slsnet": lambda: copy.deepcopy(generator)}
        peers, note = reference_models()
        notes.extend([note] if note else [])
        return model_rows(builders | peers, size=args.size, device=device, timing=timing,
                          batches=(64,) if quick else (64, 512))

    def frames() -> list[Row]:
        if gpu:
            rows = frame_rows(generator, device=device, size_wh=args.frame_size, timing=timing,
                              untrained=untrained)
            engine = CudaEngine(generator, device=device, untrained=untrained)
            paced = dict(frames=60 if quick else 300, fps=60.0)
        else:
            engine = CpuEngine(copy.deepcopy(generator), untrained=untrained)
            rows = engine_frame_rows(engine, size_wh=args.frame_size, timing=timing)
            paced = dict(frames=10 if quick else 40, fps=5.0)
        # --tta: the same engine kind, sized for the four mirror images of each frame
        tta = MirrorEngine(CudaEngine(generator, device=device, untrained=untrained,
                                      batch=len(MIRRORS)) if gpu else
                           CpuEngine(copy.deepcopy(generator), untrained=untrained))
        try:
            rows += engine_frame_rows(tta, size_wh=args.frame_size, timing=timing)
            return rows + pipeline_rows(engine, size_wh=args.frame_size, **paced)
        finally:
            for each in (engine, tta):
                getattr(each, "close", lambda: None)()

    def preprocessing() -> list[Row]:  # the CPU path has no separate preprocessing to compare
        return preprocess_rows(device=device, size_wh=args.frame_size, size=args.size)

    def files() -> list[Row]:
        # encoding needs PyAV: imported for this section only, so that a GPU machine without
        # PyAV measures the others
        from stream.bench.file_mode import file_section

        return file_section(generator, device=device, untrained=untrained, size_wh=clip_size,
                            frames=clip_frames, quick=quick, notes=notes)

    def report() -> dict:
        return {
            "command": " ".join(["python -m stream.bench", *argv]),
            "device": str(device),
            "quick": quick,
            "size": args.size,
            "weights": weights,
            "env": environment(device, torch.get_num_threads()),
            "rows": [dataclasses.asdict(r) for r in rows],
            "targets": gpu_targets(rows) if gpu else cpu_targets(rows, next(iter(runs), None)),
            "notes": notes,
        }

    steps = {"model": models, "frame": frames, "preprocess": preprocessing, "file": files}
    for name in SECTIONS:
        if name not in sections or (name == "preprocess" and not gpu):
            continue
        t0 = time.perf_counter()
        rows += steps[name]()
        seconds = time.perf_counter() - t0
        print(f"bench: {name} done in {seconds:.1f} s", file=sys.stderr, flush=True)
        if args.json:  # a run cut short still leaves what it measured
            Path(args.json).write_text(json.dumps(report(), indent=2) + "\n")
    return report()


def main(argv: list[str] | None = None) -> int:
    """Entry point: user mistakes end with one ``error:`` line and exit code 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        report = run(args, argv)
    except StreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


