"""Engines: frames in, S×S lesion probabilities out, on one device chosen once.

``cpu`` (torch eager), ``onnx_runtime`` (the same network in ONNX Runtime), ``cuda`` (pinned
ring, CUDA graph, ``gpu_kernels``), the shared ``preprocess`` (frame → network input) and
``postprocess`` (probability → mask), and :func:`build_engine`, which picks one.
"""

from stream.engines.base import (
    DEFAULT_WEIGHTS,
    DEVICES,
    NET_STAGES,
    PRECISIONS,
    RUNTIMES,
    UNTRAINED_WARNING,
    Engine,
    default_threads,
    find_default_weights,
    load_weights,
    measure_network_ms,
    resolve_device,
)
from stream.engines.cpu import CpuEngine
from stream.engines.factory import build_engine
from stream.engines.postprocess import prob_to_mask
from stream.engines.preprocess import to_input_tensor
from stream.errors import EngineError, WeightsError

__all__ = [
    "DEFAULT_WEIGHTS",
    "DEVICES",
    "NET_STAGES",
    "PRECISIONS",
    "RUNTIMES",
    "UNTRAINED_WARNING",
    "CpuEngine",
    "Engine",
    "EngineError",
    "WeightsError",
    "build_engine",
    "default_threads",
    "find_default_weights",
    "load_weights",
    "measure_network_ms",
    "prob_to_mask",
    "resolve_device",
    "to_input_tensor",
]
