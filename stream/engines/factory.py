"""Which engine runs the network: :func:`build_engine` picks it for a device and runtime.

The CUDA engine's module imports CuPy only when its kernels are built, and the ONNX Runtime
engine's imports onnx and onnxruntime only when it is constructed, so a CPU machine without
either imports this module, and every engine, without them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from slsnet.generator import Generator
from slsnet.inference import MIRRORS
from stream.engines.base import PRECISIONS, RUNTIMES, Engine, load_weights
from stream.engines.cpu import CpuEngine
from stream.engines.cpu_choice import choose, pending
from stream.engines.cuda import CudaEngine
from stream.engines.mirror import MirrorEngine
from stream.engines.model_cache import default_cache_dir
from stream.engines.onnx_runtime import OnnxEngine, missing_packages, require_onnx
from stream.errors import EngineError


def build_engine(
    *,
    device: torch.device,
    weights: str | Path | None,
    precision: str = "auto",
    cuda_graph: bool = True,
    batch: int = 1,
    threads: int | None = None,
    runtime: str = "torch",
    progress: Callable[[str], None] | None = None,
    tta: bool = False,
) -> Engine:
    """The engine for ``device``, with ``weights`` (None: default file, else random + warning).

    Args:
        device: from :func:`resolve_device`.
        weights: a weights file, or None.
        precision: one of :data:`PRECISIONS`; "auto" is the fastest measured for the device.
        cuda_graph: GPU only: capture the model in a CUDA graph.
        batch: frames per ``infer`` call the pipeline will send (the GPU engine sizes its graph).
        threads: CPU only: intra-op threads (None: leave torch's setting; the ONNX engine
            uses :func:`default_threads`).
        runtime: "torch", "onnx" (ONNX Runtime, CPU fp32 only) or "auto": on the CPU, ONNX
            Runtime when onnx and onnxruntime are installed (else torch), and with precision
            "auto" the fastest form of the network that passed its accuracy check on this
            machine (:mod:`stream.engines.cpu_choice`; ``engine.choice`` says which and why).
        progress: called with one line before a first start builds cached models (exports,
            int8 forms), which takes a while.
        tta: the mean over each frame and its three mirror images (:class:`MirrorEngine`),
            at four times the network's time.

    Raises:
        EngineError: a precision or runtime the device cannot run, an unknown one, or
            ``runtime="onnx"`` without onnx/onnxruntime installed.
        WeightsError: ``weights`` names a file that is missing or not SLSNet weights.
    """
    if precision not in PRECISIONS:
        raise EngineError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if batch < 1:
        raise EngineError(f"--batch must be at least 1, got {batch}")
    choosing = runtime == "auto" and precision == "auto"
    runtime = _pick_runtime(runtime, device, precision)
    generator, untrained, _ = load_weights(weights)
    engine = _network_engine(generator, untrained, device=device, precision=precision,
                             cuda_graph=cuda_graph, batch=batch * (len(MIRRORS) if tta else 1),
                             threads=threads, runtime=runtime, choosing=choosing,
                             progress=progress)
    return MirrorEngine(engine) if tta else engine


def _network_engine(generator: Generator, untrained: bool, *, device: torch.device,
                    precision: str, cuda_graph: bool, batch: int, threads: int | None,
                    runtime: str, choosing: bool,
                    progress: Callable[[str], None] | None) -> Engine:
    """The engine that runs ``generator`` (see :func:`build_engine`)."""
    if device.type == "cuda":
        return CudaEngine(generator, device=device, precision=precision, cuda_graph=cuda_graph,
                          batch=batch, untrained=untrained)
    if device.type != "cpu":
        raise EngineError(f"no engine for device {device}")
    if runtime == "onnx" and choosing:
        todo = pending(default_cache_dir(), generator, untrained)
        if todo and progress is not None:
            progress(f"first start with these weights: {' and '.join(todo)} (once; later starts "
                     f"read them from {default_cache_dir()})")
        return choose(OnnxEngine(generator, untrained=untrained, threads=threads))
    if runtime == "onnx":
        return OnnxEngine(generator, precision=precision, untrained=untrained, threads=threads)
    return CpuEngine(generator, precision=precision, untrained=untrained, threads=threads)


def _pick_runtime(runtime: str, device: torch.device, precision: str) -> str:
    """``runtime`` resolved to "torch" or "onnx" for ``device`` (see :func:`build_engine`)."""
    if runtime not in RUNTIMES:
        raise EngineError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    if runtime == "onnx" and device.type != "cpu":
        raise EngineError(f"--runtime onnx runs on the CPU only, not on {device.type}; use "
                          "--runtime torch or auto there, or --device cpu")
    if runtime == "torch" or device.type != "cpu":
        return "torch"
    if runtime == "onnx":
        require_onnx()  # before the weights load; OnnxEngine refuses precisions but fp32
        return "onnx"
    return "onnx" if precision in ("auto", "fp32") and not missing_packages() else "torch"
