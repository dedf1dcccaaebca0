"""ONNX Runtime engine for the CPU: the same network, exported once, faster than torch eager.

:class:`OnnxEngine` is a :class:`~stream.engines.CpuEngine` whose network call runs in an ONNX
Runtime session instead of torch eager: preprocessing, masks and timings are CpuEngine's own.
The ONNX model is exported from the weights at start-up (:func:`slsnet.onnx_export.export_onnx`)
into the model cache (:mod:`stream.engines.model_cache`), keyed by the weights' content and the
torch / onnx / onnxruntime versions, so only the first start with given weights pays for the
export. :meth:`OnnxEngine.use_model` switches the session to another form of the same network
(the int8 one :mod:`stream.engines.cpu_choice` builds, checks and picks).

``onnx`` and ``onnxruntime`` (``pip install ".[cpu]"``) are imported here only, and only when
this engine is built (:func:`missing_packages` looks without importing them for good).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import time
from pathlib import Path

import numpy as np
import torch

from slsnet.generator import Generator
from slsnet.onnx_export import (
    ATTENTIONS,
    EXPORT_VERSION,
    INPUT_NAME,
    OPSET,
    OUTPUT_NAME,
    export_onnx,
    weights_digest,
)
from stream.engines.base import default_threads
from stream.engines.cpu import CpuEngine
from stream.engines.model_cache import KEEP, default_cache_dir, load_or_build
from stream.errors import EngineError

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install ".[cpu]"'
__all__ = ["KEEP", "INSTALL_HINT", "OnnxEngine", "cache_key", "default_cache_dir",
           "missing_packages", "require_onnx"]


def missing_packages() -> list[str]:
    """The packages of the ONNX path that cannot be imported here (empty: all present)."""
    missing = []
    for name in ("onnx", "onnxruntime"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def require_onnx() -> None:
    """Raise :class:`~stream.errors.EngineError` (with the install hint) if one is missing."""
    missing = missing_packages()
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise EngineError(f"--runtime onnx needs {' and '.join(missing)}, which {verb} not "
                          f"installed: {INSTALL_HINT}")


def cache_key(generator: Generator, attention: str = "ort") -> str:
    """What an exported model depends on: weights, form, exporter and runtime versions."""
    import onnx
    import onnxruntime

    parts = [weights_digest(generator), torch.__version__, onnx.__version__,
             onnxruntime.__version__, f"opset{OPSET}", f"export{EXPORT_VERSION}",
             f"attention-{attention}"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


class OnnxEngine(CpuEngine):
    """The generator in an ONNX Runtime CPU session (fp32, exact attention, sequential).

    Args:
        generator: in eval mode, on the CPU.
        precision: "auto" or "fp32" (the exported model is float32).
        untrained: the generator has random weights.
        threads: intra-op threads of the session (and of torch's preprocessing); None:
            :func:`stream.engines.default_threads`.
        cache_dir: where exported models are kept; None: :func:`default_cache_dir`.
        attention: the exported PAM form (:data:`slsnet.onnx_export.ATTENTIONS`): ``"ort"``,
            ONNX Runtime's fused attention, or ``"plain"``, for comparison.

    Attributes:
        onnx_path: the cached fp32 model file, or None when the cache folder was not writable.
        exported: whether this start exported the model (False: read from the cache).
        session: the ``onnxruntime.InferenceSession``.
        form: the network's form the session runs: ``"fp32"``, or the one :meth:`use_model`
            switched to.
        choice: why this form runs, when ``--runtime auto`` chose among forms (else None).

    Raises:
        EngineError: onnx/onnxruntime missing, or a precision other than fp32.
    """

    def __init__(
        self,
        generator: Generator,
        *,
        precision: str = "auto",
        untrained: bool = False,
        threads: int | None = None,
        cache_dir: str | Path | None = None,
        attention: str = "ort",
    ) -> None:
        require_onnx()
        if attention not in ATTENTIONS:
            raise EngineError(f"unknown attention form {attention!r}: {', '.join(ATTENTIONS)}")
        if precision not in ("auto", "fp32"):
            raise EngineError(f"--runtime onnx runs fp32 only, not {precision!r}; use "
                              "--precision fp32 (or auto), or --runtime torch")
        threads = default_threads() if threads is None else max(1, int(threads))
        super().__init__(generator, precision="fp32", channels_last=False, untrained=untrained,
                         threads=threads)
        cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.attention = attention
        key = cache_key(generator, attention)
        self.cache_dir = cache_dir
        self.choice: str | None = None
        self.session, self.exported, self.onnx_path = load_or_build(
            cache_dir / f"slsnet-{key}.onnx", self._export, self.session_of, what="ONNX model")
        self._name("fp32")

    def _name(self, form: str) -> None:
        self.form = self.precision = form
        plural = "s" if self.threads > 1 else ""
        attention = "" if self.attention == "ort" else f" ({self.attention} attention)"
        self.name = f"cpu {form} onnxruntime{attention}, {self.threads} thread{plural}"

    def use(self, session, form: str) -> None:
        """Run ``session`` (another form of this network, from :meth:`session_of`) from now on.

        Args:
            session: runs a model with this engine's input and output, e.g. its int8 form.
            form: what the engine's name says it runs (``"int8"``).
        """
        self.session = session
        self._name(form)

    def fp32_model(self) -> bytes:
        """The fp32 ONNX model this engine started with (the cached file, or exported again)."""
        if self.onnx_path is not None:
            try:
                return self.onnx_path.read_bytes()
            except OSError:  # pruned meanwhile by another process
                pass
        return self._export()

    def _export(self) -> bytes:
        t0 = time.perf_counter()
        model = export_onnx(self.generator, attention=self.attention)
        log.info("exported the generator to ONNX in %.1f s", time.perf_counter() - t0)
        return model

    def session_of(self, model: bytes | str):
        """An ONNX Runtime session for ``model`` (a path or bytes) with this engine's settings."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def probabilities(self, x: torch.Tensor) -> np.ndarray:
        """Run the session. Args: x: N×3×S×S normalised. Returns: N×S×S float32 numpy."""
        x = np.ascontiguousarray(x.numpy(), dtype=np.float32)
        (prob,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})
        return prob[:, 0]
