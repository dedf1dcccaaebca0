"""The blending smoothers: ``off`` (:class:`Identity`), ``ema`` and ``flow``.

Each takes ``frame.prob`` from the network, may replace it with a blend of it and the previous
output, and thresholds the result into ``frame.mask``.

Modes:
    ``off``: the network's probability as it is.
    ``ema``: blend each probability with the previous output, trusting the new value less where
        it is uncertain (MediaPipe's segmentation smoothing). Cheap; leaves a trail on motion.
    ``flow``: the same blend, but the previous output is first moved along dense optical flow,
        and pixels the flow cannot explain (occlusions, new skin) keep the new value.
    ``keyframe`` (:mod:`stream.smoothing.keyframe`) builds on ``flow``.
"""

from __future__ import annotations

import time

import numpy as np

from stream.engines.postprocess import prob_to_mask
from stream.frame import Frame
from stream.smoothing.optical_flow import FlowTracker, Motion, remap, thumbnail

# flow's blend (keyframe has its own, stream.smoothing.keyframe.KEYFRAME_DEFAULTS), chosen on
# training-image clips of the temporal benchmark: a long memory that still shows a confident
# change of the network's mind within 1/3 s at 30 FPS (tests/stream/smoothing/test_smoothing.py
# holds the bound)
FLOW_DEFAULTS = {"history": 0.97, "floor": 0.9, "hysteresis": 0.1, "sigma": 60.0}
MAX_GAP = 8  # a jump of more frames than this (a seek) is a cut
EPS = 1e-6


def certainty_weight(prob: np.ndarray) -> np.ndarray:
    """How much a new probability is trusted: 1 at 0 or 1, 0 at 0.5 (MediaPipe's rule).

    ``1 − H(p)`` with H the binary entropy in bits, then ``1 − (1 − c)²`` so that fairly sure
    values count as sure.
    """
    p = np.clip(prob, EPS, 1 - EPS)
    c = np.clip(1 + (p * np.log2(p) + (1 - p) * np.log2(1 - p)), 0, 1)
    return c * (2 - c)


class Identity:
    """``--smooth off``: every frame goes through the network; its probability is thresholded.

    Args:
        threshold: probability above which a pixel is lesion.
    """

    mode = "off"

    def __init__(self, *, threshold: float = 0.5) -> None:
        self.threshold = threshold

    def wants_inference(self, frame: Frame) -> bool:
        """Always run the network."""
        return True

    def __call__(self, frame: Frame) -> None:
        """Threshold the network's probability into ``frame.mask``."""
        t0 = time.perf_counter()
        frame.mask = prob_to_mask(frame.prob, frame.size_wh, self.threshold)
        frame.notes["smooth"] = self.mode
        frame.timings["smooth"] = (time.perf_counter() - t0) * 1e3

    def reset(self) -> None:
        """Nothing to forget."""

    def close(self) -> None:
        """Release threads or other resources (none here; see ``AsyncKeyframe``)."""


class Ema(Identity):
    """``--smooth ema``: confidence-aware exponential blending of probabilities in place.

    Args:
        history: weight of the previous output where the new value is pure doubt (p = 0.5).
        floor: weight of the previous output even where the new value is certain.
        threshold: probability above which a pixel is lesion.
        hysteresis: a pixel changes side only when it crosses the threshold by this much.
        cut_change: mean grey change of a light-normalised 32×32 thumbnail that counts as a cut.
    """

    mode = "ema"

    def __init__(
        self,
        *,
        history: float = 0.8,
        floor: float = 0.3,
        threshold: float = 0.5,
        hysteresis: float = 0.0,
        cut_change: float = 15.0,
    ):
        self.history, self.floor, self.threshold = history, floor, threshold
        self.hysteresis, self.cut_change = hysteresis, cut_change
        self.prev: np.ndarray | None = None  # S×S previous output probability
        self.decided: np.ndarray | None = None  # S×S float32 {0, 1}: previous decision
        self.prev_index: int | None = None
        self.prev_shape: tuple[int, ...] | None = None
        self.thumb: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the previous output and frame."""
        self.prev = self.decided = None
        self.prev_index = None
        self.prev_shape = None
        self.thumb = None

    def _discontinuous(self, frame: Frame) -> bool:
        """A seek, a rewind or a new frame size: the history belongs to another scene."""
        jumped = self.prev_index is not None and not 0 < frame.index - self.prev_index <= MAX_GAP
        resized = self.prev_shape is not None and frame.image.shape != self.prev_shape
        self.prev_index, self.prev_shape = frame.index, frame.image.shape
        return jumped or resized

    def _weight(self, prob: np.ndarray) -> np.ndarray:
        """S×S weight of the history for each pixel of the new probability map."""
        return self.floor + (self.history - self.floor) * (1 - certainty_weight(prob))

    def _finish(self, frame: Frame, prob: np.ndarray, coords: np.ndarray | None = None) -> None:
        """Store ``prob`` as the output and derive the mask.

        With hysteresis, a pixel that was lesion needs ``hysteresis`` less probability to stay
        lesion, and one that was skin that much more to become lesion. ``coords`` (S×S×2)
        aligns the previous decision to this frame; None uses it as it is.
        """
        decide = prob
        if self.hysteresis > 0 and self.decided is not None and self.decided.shape == prob.shape:
            was = self.decided if coords is None else remap(self.decided, coords)
            decide = np.clip(prob + self.hysteresis * (2 * was - 1), 0, 1)
        self.prev = prob
        self.decided = (decide > self.threshold).astype(np.float32)
        frame.prob = prob.astype(np.float32, copy=False)
        frame.mask = prob_to_mask(decide, frame.size_wh, self.threshold)

    def __call__(self, frame: Frame) -> None:
        """Blend ``frame.prob`` with the previous output and re-derive ``frame.mask``."""
        t0 = time.perf_counter()
        thumb = thumbnail(frame.image, 32).astype(np.float32)
        cut = self._discontinuous(frame) or (
            self.thumb is not None and float(np.abs(thumb - self.thumb).mean()) > self.cut_change
        )
        self.thumb = thumb
        prev = (
            None if cut or self.prev is None or self.prev.shape != frame.prob.shape else self.prev
        )
        if prev is None:
            out = frame.prob
        else:
            w = self._weight(frame.prob)
            out = frame.prob + w * (prev - frame.prob)
        if prev is None:
            self.decided = None
        self._finish(frame, out)
        frame.notes["smooth"] = self.mode
        frame.notes["cut"] = cut
        frame.timings["smooth"] = (time.perf_counter() - t0) * 1e3


class FlowSmoother(Ema):
    """``--smooth flow``: the EMA blend against the previous output moved along optical flow.

    Args:
        size: S, the network's input side (flow is computed on S×S stretched thumbnails).
        preset: DIS optical flow preset.
        cut_residual: mean grey residual after warping above which the frame is a cut.
        **options: ``sigma``, the warp residual (grey levels) at which the history's weight
            falls to 1/e, so that pixels the flow cannot explain (occlusion, new skin) take the
            new value; the rest are passed to :class:`Ema`. ``history``, ``floor``,
            ``hysteresis`` and ``sigma`` default to ``FLOW_DEFAULTS`` (a longer memory than
            ``ema``'s, which would trail on motion).
    """

    mode = "flow"

    def __init__(
        self,
        *,
        size: int = 128,
        preset: str = "ultrafast",
        cut_residual: float = 12.0,
        **options,
    ):
        # Motion no longer argues against a long memory once the history moves with the scene:
        # these defaults were chosen on the temporal benchmark (docs/history.md).
        for key, value in FLOW_DEFAULTS.items():
            options.setdefault(key, value)
        sigma = options.pop("sigma")
        super().__init__(**options)
        self.tracker = FlowTracker(size, preset=preset, cut_residual=cut_residual, sigma=sigma)
        # Frame index → (its motion or None, whether it broke with the history, ms it took).
        # The pipeline may ask wants_inference of a whole batch before it smooths each frame.
        self.motions: dict[int, tuple[Motion | None, bool, float]] = {}

    def reset(self) -> None:
        """Forget the previous output and the previous frame of the flow."""
        super().reset()
        self.tracker.reset()
        self.motions.clear()

    def _track(self, frame: Frame) -> Motion | None:
        """Track a frame (once): its motion, or None where the history cannot be used."""
        if frame.index not in self.motions:
            t0 = time.perf_counter()
            jumped = self._discontinuous(frame)
            if jumped:
                self.reset()
                self.prev_index, self.prev_shape = frame.index, frame.image.shape
            motion = self.tracker.track(frame.image)
            cut = jumped or (motion is not None and motion.cut)
            usable = None if motion is None or motion.cut else motion
            self.motions[frame.index] = (usable, cut, (time.perf_counter() - t0) * 1e3)
        return self.motions[frame.index][0]

    def _tracked(self, frame: Frame) -> tuple[Motion | None, bool, float]:
        """This frame's (motion, cut, tracking ms), forgetting it and anything older."""
        self._track(frame)
        found = self.motions.pop(frame.index)
        for index in [i for i in self.motions if i < frame.index]:
            del self.motions[index]
        return found

    def _blend(self, frame: Frame, motion: Motion | None) -> None:
        """Blend ``frame.prob`` with the previous output pulled along ``motion``; set the mask."""
        if motion is None or self.prev is None or self.prev.shape != frame.prob.shape:
            self.decided = None
            self._finish(frame, frame.prob)
            return
        prev = remap(self.prev, motion.coords)
        w = self._weight(frame.prob) * motion.confidence  # occluded or new skin: trust the net
        self._finish(frame, frame.prob + w * (prev - frame.prob), motion.coords)

    def __call__(self, frame: Frame) -> None:
        """Blend ``frame.prob`` with the flow-warped previous output; re-derive ``frame.mask``."""
        motion, cut, track_ms = self._tracked(frame)
        t0 = time.perf_counter()
        self._blend(frame, motion)
        frame.notes["smooth"] = self.mode
        frame.notes["cut"] = cut
        frame.timings["smooth"] = track_ms + (time.perf_counter() - t0) * 1e3
