"""ONNX Runtime engine for the CPU: the same network, exported once, faster than torch eager.

:class:`OnnxEngine` is a :class:`~stream.engines.CpuEngine` whose network call runs in an ONNX
Runtime session instead of torch eager: preprocessing, masks and timings are CpuEngine's own.
The ONNX model is exported from the weights at start-up (:func:`slsnet.onnx_export.export_onnx`)
into a cache, ``$XDG_CACHE_HOME/slsnet`` (default ``~/.cache/slsnet``), keyed by the weights'
content and the torch / onnx / onnxruntime versions, so only the first start with given weights
pays for the export. A cache file that cannot be loaded is rebuilt; a cache folder that cannot
be written only costs the export at every start.

``onnx`` and ``onnxruntime`` (``pip install ".[cpu]"``) are imported here only, and only when
this engine is built (:func:`missing_packages` looks without importing them for good).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
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
    write_atomically,
)
from stream.engines.base import default_threads
from stream.engines.cpu import CpuEngine
from stream.errors import EngineError

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install ".[cpu]"'
KEEP = 4  # cached models kept, the most recently used (~9 MB each): checkpoints come and go


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


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/slsnet``, or ``~/.cache/slsnet`` without that variable."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "slsnet"


def cache_key(generator: Generator, attention: str = "ort") -> str:
    """What an exported model depends on: weights, form, exporter and runtime versions."""
    import onnx
    import onnxruntime

    parts = [weights_digest(generator), torch.__version__, onnx.__version__,
             onnxruntime.__version__, f"opset{OPSET}", f"export{EXPORT_VERSION}",
             f"attention-{attention}"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def _prune(folder: Path, keep: int = KEEP) -> None:
    """Delete all but the ``keep`` most recently used models in ``folder`` (best effort)."""
    def used(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:  # deleted meanwhile by another process
            return 0.0

    for old in sorted(folder.glob("slsnet-*.onnx"), key=used, reverse=True)[keep:]:
        old.unlink(missing_ok=True)


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
        onnx_path: the cached model file, or None when the cache folder was not writable.
        exported: whether this start exported the model (False: read from the cache).
        session: the ``onnxruntime.InferenceSession``.

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
        self.onnx_path: Path | None = cache_dir / f"slsnet-{key}.onnx"
        self.exported = False
        self.session = self._load_or_export()
        plural = "s" if self.threads > 1 else ""
        form = "" if attention == "ort" else f" ({attention} attention)"
        self.name = f"cpu fp32 onnxruntime{form}, {self.threads} thread{plural}"

    def _session(self, model: bytes | str):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def _load_or_export(self):
        path = self.onnx_path
        if path is not None and path.is_file():
            try:
                session = self._session(str(path))
                os.utime(path)  # most recently used: the last to be pruned
                return session
            except Exception as exc:  # onnxruntime raises its own types for a damaged file
                log.warning("cached ONNX model %s cannot be loaded (%s); rebuilding it", path,
                            str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        t0 = time.perf_counter()
        model = export_onnx(self.generator, attention=self.attention)
        self.exported = True
        log.info("exported the generator to ONNX in %.1f s", time.perf_counter() - t0)
        try:
            write_atomically(path, model)
            _prune(path.parent)
        except OSError as exc:
            log.warning("cannot cache the ONNX model in %s (%s); it is exported again at every "
                        "start", path.parent, exc)
            self.onnx_path = None
        return self._session(model)

    def probabilities(self, x: torch.Tensor) -> np.ndarray:
        """Run the session. Args: x: N×3×S×S normalised. Returns: N×S×S float32 numpy."""
        x = np.ascontiguousarray(x.numpy(), dtype=np.float32)
        (prob,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})
        return prob[:, 0]
