"""How long a smoothing mode takes to show a confident change of the network's mind.

The other side of a long memory: a smoother that steadies the mask also delays it. On a still
scene whose network output turns from surely-skin to surely-lesion (the skin was covered, or the
network recovers from a miss), the flow cannot help; only the blend decides when the mask
follows. :func:`change_of_mind` makes that scene; the temporal benchmark replays it through the
same smoother objects as its clips (``stream.temporal_bench.delays``), and :func:`frames_to_show`
counts the frames until the mask shows the lesion.
"""

from __future__ import annotations

import cv2
import numpy as np

from stream.bench import synth
from stream.bench.temporal_metrics import iou

LEAD = 10  # frames of "no lesion" before the change
SHOWN_IOU = 0.85  # the mask shows the lesion once its IoU with the truth stays above this
SURE = 0.98  # the network's probability inside the lesion after the change (1 − SURE outside)


def change_of_mind(image_rgb: np.ndarray, mask: np.ndarray, size: int, *, frames: int,
                   size_wh: tuple[int, int], fps: float) -> tuple[list, np.ndarray]:
    """A still clip of ``image_rgb`` and the network outputs of the change of mind.

    Returns:
        (``frames`` (frame, truth) pairs of :func:`stream.bench.synth.sweep` with a still camera,
        ``frames``×S×S probabilities: ``1 − SURE`` everywhere for ``LEAD`` frames, then ``SURE``
        on the truth).
    """
    clip = list(synth.sweep(image_rgb, mask, motion="static", size_wh=size_wh, fps=fps,
                            seconds=frames / fps))[:frames]
    truth = cv2.resize(clip[0][1].astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    lesion = np.where(truth > 0.5, SURE, 1 - SURE).astype(np.float32)
    probs = np.stack([np.full_like(lesion, 1 - SURE)] * LEAD + [lesion] * (len(clip) - LEAD))
    return clip, probs


def frames_to_show(masks: list[np.ndarray], truths: list[np.ndarray]) -> float:
    """Frames after the change until the mask shows the lesion for good (``inf``: never).

    The first changed frame counts 1; "shows" is an IoU with the truth above ``SHOWN_IOU`` on
    that frame and every later one.
    """
    shown = [iou(m, t) > SHOWN_IOU for m, t in zip(masks, truths, strict=True)][LEAD:]
    for i in range(len(shown)):
        if all(shown[i:]):
            return float(i + 1)
    return float("inf")
