"""The CPU engine: the generator in torch eager under ``inference_mode``.

``precision="auto"`` is fp32 with channels_last on the CPU (docs/benchmarks.md has the
measurements behind it); ``"bf16"`` stays available for CPUs with native bf16 arithmetic
(AVX-512 BF16 or AMX). :class:`stream.engines.onnx_runtime.OnnxEngine` runs the same network in
ONNX Runtime with this class's pre- and post-processing.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

import numpy as np
import torch

from slsnet.generator import Generator
from stream.engines.postprocess import fill_masks
from stream.engines.preprocess import to_input_tensor
from stream.errors import EngineError
from stream.frame import Frame


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

    def predict(self, frames: list[Frame]) -> None:
        """Fill ``prob`` of every frame (see :class:`stream.engines.Engine`)."""
        if not frames:
            return
        t0 = time.perf_counter()
        x = to_input_tensor([f.image for f in frames], self.size, channels_last=self.channels_last)
        t1 = time.perf_counter()
        probs = self.probabilities(x)
        t2 = time.perf_counter()
        for frame, prob in zip(frames, probs, strict=True):
            frame.prob = prob
        t3 = time.perf_counter()
        for frame in frames:
            frame.timings["preprocess"] = (t1 - t0) * 1e3
            frame.timings["infer"] = (t2 - t1) * 1e3
            frame.timings["postprocess"] = (t3 - t2) * 1e3

    def infer(self, frames: list[Frame]) -> None:
        """:meth:`predict`, then each frame's mask at the network's threshold."""
        self.predict(frames)
        fill_masks(frames, self.threshold)
