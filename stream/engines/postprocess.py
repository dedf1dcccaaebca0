"""Postprocess: the S×S probability map → a binary mask at the frame's own size.

The probability is resized first (bilinear) and thresholded after, so the mask's edge follows the
0.5 iso-line of the interpolated probability instead of the staircase of a 128×128 mask.
Smoothers call :func:`prob_to_mask` too, so every mask in the product is made the same way.
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from stream.frame import Frame


def prob_to_mask(prob: np.ndarray, size_wh: tuple[int, int], threshold: float) -> np.ndarray:
    """Resize a probability map to (W, H) and threshold it.

    Args:
        prob: S×S (or any h×w) float probabilities in [0, 1].
        size_wh: (width, height) of the frame the mask belongs to.
        threshold: probabilities strictly above it are lesion.

    Returns:
        H×W uint8 in {0, 1}.
    """
    width, height = int(size_wh[0]), int(size_wh[1])
    if width < 1 or height < 1:
        raise ValueError(f"mask size must be positive, got (W, H) = {size_wh}")
    prob = np.asarray(prob, dtype=np.float32)
    if prob.ndim != 2:
        raise ValueError(f"probability map must be 2-D, got shape {prob.shape}")
    if prob.shape != (height, width):
        prob = cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR)
    # one comparison pass; a bool array viewed as uint8 is already {0, 1}, no second pass
    return (prob > threshold).view(np.uint8)


def fill_masks(frames: list[Frame], threshold: float) -> None:
    """Each frame's ``mask`` from its ``prob`` at ``threshold``, the time in ``postprocess``.

    What an engine's ``infer`` adds to its ``predict`` (each frame's share of the time).
    """
    t0 = time.perf_counter()
    for frame in frames:
        frame.mask = prob_to_mask(frame.prob, frame.size_wh, threshold)
    spent = (time.perf_counter() - t0) * 1e3 / max(1, len(frames))
    for frame in frames:
        frame.timings["postprocess"] = frame.timings.get("postprocess", 0.0) + spent
