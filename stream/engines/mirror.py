"""Test-time augmentation for any engine: each frame and its three mirror images (``--tta``).

:class:`MirrorEngine` hands the engine it wraps every frame four times (as it is, flipped
up–down, left–right, and both) in one call, mirrors the four probability maps back and keeps
their mean (:func:`slsnet.inference.mirror_mean`, the same arithmetic ``slsnet.evaluate --tta``
scores). The masks are steadier and a little better (docs/benchmarks.md) at four times the
network's time, which suits files and batches; the live view's ``--smooth auto`` measures the
slower network and picks keyframes on a CPU that cannot keep up.
"""

from __future__ import annotations

import time

import numpy as np

from slsnet.inference import MIRRORS, mirror_mean
from stream.engines.base import NET_STAGES, Engine
from stream.engines.postprocess import fill_masks
from stream.frame import Frame


class MirrorEngine:
    """``inner`` run on each frame and its mirror images; the mean of the four maps.

    Args:
        inner: the engine that runs the network; it receives 4× as many frames per call.
    """

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.device, self.size, self.threshold = inner.device, inner.size, inner.threshold
        self.untrained = inner.untrained
        self.name = f"{inner.name}, mirror mean of {len(MIRRORS)}"
        self.choice = getattr(inner, "choice", None)  # --runtime auto's reason, if it made one

    def prepare(self, size_wh: tuple[int, int]) -> None:
        """Let the wrapped engine get ready for (W, H) frames now, if it does (a GPU's graphs).

        The mirror images of a frame have its size, so what it prepares serves them.
        """
        prepare = getattr(self.inner, "prepare", None)
        if prepare is not None:
            prepare(size_wh)

    def close(self) -> None:
        """Close the wrapped engine, if it holds anything to close."""
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()

    def predict(self, frames: list[Frame]) -> None:
        """Fill ``prob`` of every frame (see :class:`stream.engines.Engine`).

        A frame's stage times are its views' (they ran in one batch); making the views and
        averaging the maps count in ``preprocess``.
        """
        if not frames:
            return
        views: list[Frame] = []

        def run(images: list[np.ndarray]) -> list[np.ndarray]:
            views.extend(Frame(image, f.index, f.pts, f.time_base, f.capture_time)
                         for image, f in zip(images, frames * len(MIRRORS), strict=True))
            self.inner.predict(views)
            return [view.prob for view in views]

        t0 = time.perf_counter()
        probs = mirror_mean(run, [frame.image for frame in frames])
        total = (time.perf_counter() - t0) * 1e3
        net = {stage: views[0].timings.get(stage, 0.0) for stage in NET_STAGES}
        net["preprocess"] += max(0.0, total - sum(net.values()))
        for frame, prob in zip(frames, probs, strict=True):
            frame.prob = prob
            frame.timings.update(net)

    def infer(self, frames: list[Frame]) -> None:
        """:meth:`predict`, then each frame's mask at the network's threshold."""
        self.predict(frames)
        fill_masks(frames, self.threshold)
