"""What every engine shares: the :class:`Engine` protocol, the device, threads and weights.

Everything above the engines (the segmenter, smoothing, render, outputs, web) talks to the
:class:`Engine` protocol only, so nothing there changes when the device changes. An engine
turns frames into S×S lesion probabilities (:meth:`Engine.predict`); it does not threshold them:
that happens once, after smoothing, in :class:`stream.segmenter.Segmenter`.
:meth:`Engine.infer` adds a mask at the engine's default threshold for callers that want a
one-shot answer (a still photo, the benchmarks).
"""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from slsnet import device as slsnet_device
from slsnet.checkpoint import SHIPPED_NAME, load_generator, shipped_weights
from slsnet.checkpoint import WeightsError as CheckpointError
from slsnet.generator import Generator, build_generator
from stream.errors import EngineError, WeightsError
from stream.frame import Frame

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = Path("weights") / SHIPPED_NAME  # in the checkout; slsnet/weights/ when installed
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
RUNTIMES = ("auto", "torch", "onnx")
DEVICES = slsnet_device.DEVICES
UNTRAINED_WARNING = "UNTRAINED WEIGHTS"
NET_STAGES = ("preprocess", "infer", "postprocess")  # the timings an engine records


@runtime_checkable
class Engine(Protocol):
    """What the pipeline needs from an inference engine, whatever the device."""

    device: torch.device
    size: int  # S: the network's square input size
    name: str  # shown in the HUD and the summary, e.g. "cpu fp32", "cuda fp16 graph"
    threshold: float  # the network's default probability → mask threshold
    untrained: bool  # random weights: the HUD says so

    def predict(self, frames: list[Frame]) -> None:
        """Set ``frame.prob`` (S×S float32 lesion probability) for each frame; no mask.

        Records ``timings["preprocess"]``, ``["infer"]`` and ``["postprocess"]`` (ms) in each
        frame; a batch's stage time is recorded for every frame in it (the latency each saw).
        """
        ...

    def infer(self, frames: list[Frame]) -> None:
        """:meth:`predict`, then ``frame.mask`` (H×W uint8 0/1) at :attr:`threshold`."""
        ...


def resolve_device(spec: str) -> torch.device:
    """``--device auto|cpu|cuda`` → a ``torch.device``, decided once at the edge.

    :func:`slsnet.device.resolve_device`, its error in this package's tree.

    Raises:
        EngineError: an unknown name, or ``cuda`` on a machine without a usable GPU.
    """
    try:
        return slsnet_device.resolve_device(spec)
    except slsnet_device.DeviceError as exc:
        raise EngineError(str(exc)) from exc


def default_threads(cpu_count: int | None = None) -> int:
    """Intra-op threads for the CPU engine: all cores but one, which is left to decode/encode.

    Args:
        cpu_count: cores to plan for (default: the cores this process may run on).
    """
    if cpu_count is None:
        cpu_count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        cpu_count = cpu_count or os.cpu_count() or 1
    return max(1, min(cpu_count - 1, 8))


def measure_network_ms(engine: Engine, size_wh: tuple[int, int] = (640, 480), *,
                       calls: int = 5, warmup: int = 2) -> float:
    """The engine's time per frame (the :data:`NET_STAGES` it records), measured now.

    A grey frame of ``size_wh`` goes through ``engine.predict`` ``warmup`` times untimed (the
    first calls pay for allocations and wake the runtime's threads: on 2 cores they took 29 ms
    where the steady state was 25), then ``calls`` times; the median counts.
    """
    width, height = size_wh
    image = np.full((height, width, 3), 128, np.uint8)
    spent = []
    for index in range(warmup + calls):
        frame = Frame(image, index, None, Fraction(1, 30), 0.0)
        engine.predict([frame])
        spent.append(sum(frame.timings.get(stage, 0.0) for stage in NET_STAGES))
    return float(np.median(spent[warmup:]))


def find_default_weights() -> Path | None:
    """The shipped weights (inside the installed package, or the checkout's ``weights/``).

    The working directory plays no part: a run finds the same weights from any folder.
    """
    return shipped_weights()


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
        try:
            return load_generator(path, device="cpu"), False, str(path)
        except CheckpointError as exc:
            raise WeightsError(str(exc)) from exc
    log.warning("no shipped weights (%s): running with RANDOM weights (%s)", DEFAULT_WEIGHTS.name,
                UNTRAINED_WARNING)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the same random network every run, for comparable outputs
        generator = build_generator()
    return generator.eval(), True, "random (untrained)"
