"""Synthetic sweeps with network-like probability maps, and the pipeline's per-frame loop.

The "network" here is the warped truth, blurred, pushed through a logistic with spatially smooth
noise that changes every frame plus a global per-frame offset: the boundary wobbles and whole
regions flip from frame to frame, which is the flicker a smoother must remove.
"""

from fractions import Fraction

import cv2
import numpy as np

from stream.bench.synth import sweep, synthetic_still
from stream.engines.postprocess import prob_to_mask
from stream.frame import Frame

S = 128
SIZE_WH = (160, 120)


def net_like(truth: np.ndarray, rng: np.random.Generator, noise: float = 1.5) -> np.ndarray:
    """An S×S probability map that a flickering network might give for this truth."""
    t = cv2.resize(truth.astype(np.float32), (S, S), interpolation=cv2.INTER_AREA)
    signed = cv2.GaussianBlur(t, (0, 0), 2.0) - 0.5
    field = cv2.GaussianBlur(rng.standard_normal((S, S)).astype(np.float32), (0, 0), 4.0) * 4
    logit = 12 * signed + noise * field + 0.3 * rng.standard_normal()
    return (1 / (1 + np.exp(-logit))).astype(np.float32)


def make_clip(motion: str, seconds: float = 1.0, seed: int = 0):
    still = synthetic_still((256, 256), seed=seed)
    clip = list(sweep(*still, motion=motion, size_wh=SIZE_WH, seconds=seconds, seed=seed))
    rng = np.random.default_rng(seed + 100)
    return [(img, truth, net_like(truth, rng)) for img, truth in clip]


def new_frame(image: np.ndarray, index: int) -> Frame:
    return Frame(image, index, index, Fraction(1, 30), 0.0)


def run(smoother, clip, start: int = 0, net_ms: float = 0.0) -> list[Frame]:
    """What the pipeline does per frame: ask, run the 'network' if wanted, smooth."""
    out = []
    for i, (image, _, prob) in enumerate(clip):
        frame = new_frame(image, start + i)
        if smoother.wants_inference(frame):
            frame.prob = prob
            frame.mask = prob_to_mask(prob, frame.size_wh, 0.5)
            frame.timings["infer"] = net_ms
        smoother(frame)
        out.append(frame)
    return out


def raw_masks(clip):
    return [prob_to_mask(p, SIZE_WH, 0.5) for _, _, p in clip]
