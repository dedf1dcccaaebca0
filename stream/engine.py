"""Engine: frames in, probability maps and full-size masks out, on one device chosen once.

Everything above this module (pipeline, smoothing, render, sinks, web UI) talks to the
:class:`Engine` protocol only, so nothing there changes when the device changes.
:func:`build_engine` picks the implementation: :class:`CpuEngine` here, or
``stream.engine_cuda.CudaEngine``, imported lazily so that CuPy and CUDA are never touched on
the CPU path. A GPU engine is constructed as::

    CudaEngine(generator, device=device, precision=precision, cuda_graph=cuda_graph,
               batch=batch, untrained=untrained)

with a generator already in eval mode (on the CPU; the engine moves it), and implements the same
attributes and ``infer``.

CPU speed on a 2-core AMD EPYC (AVX2, no AVX-512), batch 1 (see docs/benchmarks.md): bf16
autocast is several times *slower* than fp32 there (no native bf16 arithmetic, so every op
converts), channels_last is a little faster than the default layout, and one intra-op thread
beats two as soon as anything else runs on the machine. Hence ``precision="auto"`` is fp32 with
channels_last on the CPU; ``"bf16"`` stays available for CPUs with AVX-512 BF16 or AMX. Faster
still is ``runtime="onnx"``: the same fp32 network in ONNX Runtime
(``stream.engine_onnx.OnnxEngine``, ~1.85× torch eager there), which ``runtime="auto"`` picks on
the CPU when onnx and onnxruntime are installed (the CLI's default; ``build_engine``'s is torch).
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from slsnet.export import WeightsError, load_generator
from slsnet.generator import Generator, build_generator
from stream.frame import Frame
from stream.postprocess import prob_to_mask
from stream.preprocess import to_input_tensor

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = Path("weights") / "slsnet_isic2017.pt"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
RUNTIMES = ("auto", "torch", "onnx")
DEVICES = ("auto", "cpu", "cuda")
UNTRAINED_WARNING = "UNTRAINED WEIGHTS"

__all__ = [
    "DEFAULT_WEIGHTS",
    "DEVICES",
    "PRECISIONS",
    "RUNTIMES",
    "CpuEngine",
    "Engine",
    "EngineError",
    "WeightsError",
    "build_engine",
    "default_threads",
    "find_default_weights",
    "load_weights",
    "resolve_device",
]


class EngineError(ValueError):
    """A device or precision that this machine cannot run (one-line message for the user)."""


@runtime_checkable
class Engine(Protocol):
    """What the pipeline needs from an inference engine, whatever the device."""

    device: torch.device
    size: int  # S: the network's square input size
    name: str  # shown in the HUD and the summary, e.g. "cpu fp32", "cuda fp16 graph"
    threshold: float  # probability → mask
    untrained: bool  # random weights: the HUD says so

    def infer(self, frames: list[Frame]) -> None:
        """Set ``frame.prob`` (S×S float32) and ``frame.mask`` (H×W uint8 0/1) for each frame.

        Records ``timings["preprocess"]``, ``["infer"]`` and ``["postprocess"]`` (ms) in each
        frame; a batch's stage time is recorded for every frame in it (the latency each saw).
        """
        ...


def resolve_device(spec: str) -> torch.device:
    """``--device auto|cpu|cuda`` → a ``torch.device``, decided once at the edge.

    Raises:
        EngineError: an unknown name, or ``cuda`` on a machine without a usable GPU.
    """
    if spec not in DEVICES:
        raise EngineError(f"unknown device {spec!r}; choose from {', '.join(DEVICES)}")
    if spec == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if spec == "cuda":
        raise EngineError("--device cuda: no CUDA GPU is available (use --device cpu or auto)")
    return torch.device("cpu")


def default_threads(cpu_count: int | None = None) -> int:
    """Intra-op threads for the CPU engine: all cores but one, which is left to decode/encode.

    Args:
        cpu_count: cores to plan for (default: the cores this process may run on).
    """
    if cpu_count is None:
        cpu_count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        cpu_count = cpu_count or os.cpu_count() or 1
    return max(1, min(cpu_count - 1, 8))


def find_default_weights(root: Path | None = None) -> Path | None:
    """``weights/slsnet_isic2017.pt`` in the working directory or the source tree, if present."""
    roots = [Path.cwd()] if root is None else [root]
    if root is None:
        roots.append(Path(__file__).resolve().parent.parent)
    for base in roots:
        path = base / DEFAULT_WEIGHTS
        if path.is_file():
            return path
    return None


def load_weights(weights: str | Path | None) -> tuple[Generator, bool, str]:
    """The generator to run, on the CPU in eval mode.

    Args:
        weights: a weights file; ``None`` for the default file, or random weights without one.

    Returns:
        (generator, untrained, description): ``untrained`` is True for random weights.

    Raises:
        WeightsError: an explicitly named file that is missing or not SLSNet weights.
    """
    path = Path(weights) if weights is not None else find_default_weights()
    if path is not None:
        return load_generator(path, device="cpu"), False, str(path)
    log.warning("no weights at %s: running with RANDOM weights (%s)", DEFAULT_WEIGHTS,
                UNTRAINED_WARNING)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the same random network every run, for comparable outputs
        generator = build_generator()
    return generator.eval(), True, "random (untrained)"


class CpuEngine:
    """The generator on the CPU under ``inference_mode``.

    Args:
        generator: in eval mode, on the CPU.
        precision: "fp32" or "bf16" (autocast); "auto" picks fp32 (measured fastest here).
        channels_last: run convolutions in NHWC layout.
        untrained: the generator has random weights.
        threads: intra-op threads to set (``torch.set_num_threads``); None leaves torch's own.
    """

    def __init__(
        self,
        generator: Generator,
        *,
        precision: str = "auto",
        channels_last: bool = True,
        untrained: bool = False,
        threads: int | None = None,
    ) -> None:
        if precision == "fp16":
            raise EngineError("--precision fp16 needs a CUDA GPU; on the CPU use fp32 or bf16")
        if precision not in ("auto", "fp32", "bf16"):
            raise EngineError(f"unknown precision {precision!r}; choose from fp32, bf16")
        self.precision = "fp32" if precision == "auto" else precision
        if threads is not None:
            torch.set_num_threads(max(1, int(threads)))
        self.threads = torch.get_num_threads()
        self.channels_last = channels_last
        self.device = torch.device("cpu")
        self.generator = generator.eval()
        if channels_last:
            self.generator = self.generator.to(memory_format=torch.channels_last)
        self.size = generator.config.input_size
        self.threshold = float(generator.config.threshold)
        self.untrained = untrained
        layout = " channels_last" if channels_last else ""
        plural = "s" if self.threads > 1 else ""
        self.name = f"cpu {self.precision}{layout}, {self.threads} thread{plural}"

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return nullcontext()

    def probabilities(self, x: torch.Tensor) -> np.ndarray:
        """Run the generator. Args: x: N×3×S×S normalised. Returns: N×S×S float32 numpy."""
        with torch.inference_mode(), self._autocast():
            prob = self.generator(x)
        return prob[:, 0].float().numpy()

    def infer(self, frames: list[Frame]) -> None:
        """Fill ``prob`` and ``mask`` of every frame (see :class:`Engine`)."""
        if not frames:
            return
        t0 = time.perf_counter()
        x = to_input_tensor([f.image for f in frames], self.size, channels_last=self.channels_last)
        t1 = time.perf_counter()
        probs = self.probabilities(x)
        t2 = time.perf_counter()
        for frame, prob in zip(frames, probs, strict=True):
            frame.prob = prob
            frame.mask = prob_to_mask(prob, frame.size_wh, self.threshold)
        t3 = time.perf_counter()
        for frame in frames:
            frame.timings["preprocess"] = (t1 - t0) * 1e3
            frame.timings["infer"] = (t2 - t1) * 1e3
            frame.timings["postprocess"] = (t3 - t2) * 1e3


def build_engine(
    *,
    device: torch.device,
    weights: str | Path | None,
    precision: str = "auto",
    cuda_graph: bool = True,
    batch: int = 1,
    threads: int | None = None,
    runtime: str = "torch",
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
        runtime: "torch", "onnx" (ONNX Runtime, CPU fp32 only) or "auto" (onnx on the CPU at
            fp32 when onnx and onnxruntime are installed, else torch).

    Raises:
        EngineError: a precision or runtime the device cannot run, an unknown one, or
            ``runtime="onnx"`` without onnx/onnxruntime installed.
        WeightsError: ``weights`` names a file that is missing or not SLSNet weights.
    """
    if precision not in PRECISIONS:
        raise EngineError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if batch < 1:
        raise EngineError(f"--batch must be at least 1, got {batch}")
    runtime = _pick_runtime(runtime, device, precision)
    generator, untrained, _ = load_weights(weights)
    if device.type == "cuda":
        from stream.engine_cuda import CudaEngine  # lazy: CuPy/CUDA only on the GPU path

        return CudaEngine(generator, device=device, precision=precision, cuda_graph=cuda_graph,
                          batch=batch, untrained=untrained)
    if device.type != "cpu":
        raise EngineError(f"no engine for device {device}")
    if runtime == "onnx":
        from stream.engine_onnx import OnnxEngine  # lazy: onnx/onnxruntime only on this path

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
    from stream.engine_onnx import missing_packages, require_onnx

    if runtime == "onnx":
        require_onnx()  # before the weights load; OnnxEngine refuses precisions but fp32
        return "onnx"
    return "onnx" if precision in ("auto", "fp32") and not missing_packages() else "torch"
