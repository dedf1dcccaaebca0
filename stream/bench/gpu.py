"""The GPU half of ``python -m stream.bench``: networks, the 1080p frame path, preprocessing.

Imported only when the benchmark runs on a CUDA device (CuPy and CUDA stay off the CPU path).
Every number is a median over repeats after warm-up; latency is wall clock from the call to the
end of a stream synchronisation (never of the whole device), throughput is images per second
over back-to-back batches, kernel times come from CUDA graphs of many launches timed by events.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import torch
from torch import nn

from stream.bench.measure import Row, Timing, latencies, throughput
from stream.engines.cuda import CudaEngine
from stream.engines.gpu_kernels import CupyKernels
from stream.engines.resample import input_taps
from stream.engines.torch_kernels import TorchKernels
from stream.frame import Frame

MODES = (("fp32", False), ("fp16", False), ("fp16", True))  # (precision, graph)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


class _Segmenter(nn.Module):
    """A torchvision segmentation model as B×3×S×S → B×1×S×S probabilities, like SLSNet."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x)["out"])


def reference_models() -> tuple[dict[str, Callable[[], nn.Module]], str]:
    """Builders of the torchvision peers (random weights, nothing downloaded), or a note why not."""
    try:
        from torchvision.models.segmentation import fcn_resnet50, lraspp_mobilenet_v3_large
    except ImportError as exc:
        return {}, f"torchvision not importable ({exc}): reference networks skipped"
    return {
        "lraspp_mobilenet_v3": lambda: _Segmenter(
            lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=1)),
        "fcn_resnet50": lambda: _Segmenter(
            fcn_resnet50(weights=None, weights_backbone=None, num_classes=1, aux_loss=False)),
    }, ""


def _runner(model: nn.Module, batch: int, size: int, precision: str, graph: bool,
            device: torch.device) -> Callable[[], object]:
    """A no-argument call running ``model`` on a static random batch (eager or graph replay)."""
    dtype = DTYPES[precision]
    fmt = torch.channels_last if dtype == torch.float16 else torch.contiguous_format
    x = (torch.rand(batch, 3, size, size, device=device) * 2 - 1).to(dtype)
    x = x.contiguous(memory_format=fmt)

    def eager():
        with torch.inference_mode():
            return model(x)

    if not graph:
        return eager
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):  # warm-up on the capture stream: cuDNN choices, lazy state
            eager()
    torch.cuda.current_stream(device).wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(g):
        model(x)

    def replay():
        g.replay()
        return x  # the graph reads x's memory: x must live as long as the graph

    return replay


def model_rows(builders: dict[str, Callable[[], nn.Module]], *, size: int, device: torch.device,
               timing: Timing, batches: tuple[int, ...]) -> list[Row]:
    """Batch-1 latency and batched throughput of each network in each of :data:`MODES`."""
    stream = torch.cuda.current_stream(device)
    rows = []
    torch.backends.cudnn.benchmark = True
    for name, build in builders.items():
        for precision, graph in MODES:
            mode = f"{precision} {'graph' if graph else 'eager'}"
            model = build().eval().to(device, DTYPES[precision])
            if precision == "fp16":
                model = model.to(memory_format=torch.channels_last)
            run = _runner(model, 1, size, precision, graph, device)
            ms = latencies(run, stream.synchronize, timing.warmup, timing.iters)
            rows.append(Row("model", name, mode, 1, *np.percentile(ms, [50, 99])))
            for b in batches:
                try:
                    run = _runner(model, b, size, precision, graph, device)
                    ips = throughput(run, b, stream.synchronize, timing)
                    rows.append(Row("model", name, mode, b, images_per_s=ips))
                except torch.cuda.OutOfMemoryError:
                    rows.append(Row("model", name, mode, b, note="out of GPU memory"))
                del run
            del model
            torch.cuda.empty_cache()
    return rows


def _pinned_latencies(engine, image: np.ndarray, timing: Timing) -> list[float]:
    """Frame path when the frame already lies in the engine's pinned ring (no host copy)."""
    h, w = image.shape[:2]
    ms = []
    for i in range(timing.warmup + timing.iters):
        buf = engine.staging_buffer((w, h))  # where a decoder would have written the frame
        buf[...] = image
        frame = Frame(buf, i, i, Fraction(1, 30), 0.0)
        t0 = time.perf_counter()
        engine.infer([frame])
        if i >= timing.warmup:
            ms.append((time.perf_counter() - t0) * 1e3)
    return ms


def frame_rows(generator, *, device: torch.device, size_wh: tuple[int, int], timing: Timing,
               untrained: bool) -> list[Row]:
    """The frame path: frame on the host → mask on the host, through the CUDA engine."""
    w, h = size_wh
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    label = f"{w}×{h} frame → mask"
    rows = []
    for graph in (True, False):
        engine = CudaEngine(generator, device=device, cuda_graph=graph, untrained=untrained)
        engine.prepare(size_wh)
        mode = f"fp16 {'graph' if graph else 'eager'}"
        ms = _pinned_latencies(engine, image, timing)
        rows.append(Row("frame path", f"{label} (pinned)", mode, 1, *np.percentile(ms, [50, 99]),
                        note=engine.note))
        ms = latencies(lambda e=engine: e.infer([Frame(image, 0, 0, Fraction(1, 30), 0.0)]),
                       lambda: None, timing.warmup, timing.iters)
        rows.append(Row("frame path", f"{label} (numpy frame)", mode, 1,
                        *np.percentile(ms, [50, 99]), note="includes the copy into pinned memory"))
        engine.close()
    return rows


def preprocess_rows(*, device: torch.device, size_wh: tuple[int, int], size: int) -> list[Row]:
    """GPU time of one frame's preprocessing, timed as CUDA graphs of 50 launches.

    The CuPy kernel, the same taps as torch matmuls, and a plain torch ``interpolate(area)`` chain.
    """
    w, h = size_wh
    src = torch.randint(0, 256, (1, h, w, 3), dtype=torch.uint8, device=device)
    out = torch.empty((1, 3, size, size), dtype=torch.float16, device=device)
    out = out.contiguous(memory_format=torch.channels_last)
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))  # src and out were made there
    variants: dict[str, Callable[[], None]] = {}
    notes = {}
    with torch.cuda.stream(stream):
        try:
            ck = CupyKernels(device)
            ctaps, csrc, cout = ck.upload(*input_taps(size_wh, size)), ck.view(src), ck.view(out)
            variants["cupy (one kernel)"] = lambda: ck.preprocess(
                csrc, ctaps, cout, out.dtype, frames=1, stream=stream)
        except ImportError as exc:
            notes["cupy (one kernel)"] = f"CuPy not importable: {exc}"
        tk = TorchKernels(device)
        ttaps = tk.upload(*input_taps(size_wh, size))
        variants["torch (same taps, matmuls)"] = lambda: tk.preprocess(
            src, ttaps, out, out.dtype, frames=1)

        def plain():
            x = src.permute(0, 3, 1, 2).flip(1).float()
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="area")
            out.copy_(x.mul_(2 / 255).sub_(1))

        variants["torch interpolate(area)"] = plain
        notes["torch interpolate(area)"] = "adaptive-pool bins, not OpenCV-exact"
    rows = [Row("preprocess", name, "fp16 out", 1, note=note) for name, note in notes.items()
            if name not in variants]
    for name, fn in variants.items():
        with torch.cuda.stream(stream):
            for _ in range(3):
                fn()  # compile / warm up before capturing
        stream.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, stream=stream):
            for _ in range(50):
                fn()
        per = []
        for _ in range(20):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            with torch.cuda.stream(stream):
                start.record(stream)
                g.replay()
                end.record(stream)
            end.synchronize()
            per.append(start.elapsed_time(end) / 50)
        rows.append(Row("preprocess", f"{w}×{h} → {size}² {name}", "fp16 out", 1,
                        float(np.median(per)), float(np.percentile(per, 99)),
                        note=notes.get(name, "")))
    return rows


def environment(device: torch.device) -> dict:
    """Card, driver, CUDA, torch and CuPy versions."""
    import subprocess

    props = torch.cuda.get_device_properties(device)
    query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=20).stdout.split()
        driver = out[0] if out else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        driver = "unknown"
    try:
        import cupy

        cupy_version = cupy.__version__
    except ImportError:
        cupy_version = "not installed"
    return {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "sm_count": props.multi_processor_count, "driver": driver, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "cupy": cupy_version}


def targets(rows: list[Row]) -> list[dict]:
    """The GPU targets (docs/benchmarks.md), checked against this run's rows (those measured)."""
    def find(section, name, mode, batch=1):
        return next((r for r in rows if r.section == section and r.name.startswith(name)
                     and r.mode == mode and r.batch == batch and r.p50_ms is not None), None)

    out = []

    def add(what, value, limit, ok):
        out.append({"target": what, "value": round(value, 4), "limit": limit, "ok": bool(ok)})

    ours = find("model", "slsnet", "fp16 graph")
    if ours:
        add("generator fp16 graph b1 p50 ms ≤ 1.5", ours.p50_ms, 1.5, ours.p50_ms <= 1.5)
        best = max((r.images_per_s for r in rows if r.section == "model" and r.name == "slsnet"
                    and r.mode == "fp16 graph" and r.images_per_s), default=0.0)
        add("generator batched images/s ≥ 10000", best, 10000, best >= 10000)
        peer = find("model", "lraspp", "fp16 graph")
        if peer:
            add("generator b1 / LR-ASPP b1 ≤ 2", ours.p50_ms / peer.p50_ms, 2,
                ours.p50_ms <= 2 * peer.p50_ms)
    # judged on the application's own path: capture thread, pinned pool, pipeline, full mask
    frame = next((r for r in rows if r.section == "frame path" and r.p50_ms is not None
                  and r.name.startswith("1920×1080 frame → mask (pipeline, paced")), None)
    if frame:
        add("1080p frame path p50 ms ≤ 2.5", frame.p50_ms, 2.5, frame.p50_ms <= 2.5)
        add("1080p frame path p99/p50 ≤ 1.2", frame.p99_ms / frame.p50_ms, 1.2,
            frame.p99_ms <= 1.2 * frame.p50_ms)
    plain = next((r for r in rows if r.section == "file" and r.name.startswith("plain")), None)
    apps = [r for r in rows if r.section == "file" and r.name.startswith("app") and r.wall_s]
    if plain and apps and "cuda" in apps[0].mode:
        ratio = min(r.wall_s for r in apps) / plain.wall_s
        add("file mode wall / plain decode+encode ≤ 1.25", ratio, 1.25, ratio <= 1.25)
    return out
