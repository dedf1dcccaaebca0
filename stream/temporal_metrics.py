"""Temporal segmentation metrics: per-frame accuracy and frame-to-frame flicker of mask sequences.

Flicker is the mean of ``1 − IoU`` between consecutive masks. A lesion that moves makes even the
truth flicker, so the number that a smoother should cut is the *excess* flicker: that of the
predictions minus that of the truth over the same frames. Two empty masks agree perfectly
(IoU 1), as in ``slsnet.metrics``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from slsnet.metrics import confusion, scores

CLIP_METRICS = ("jsc", "dsc", "flicker", "truth_flicker", "excess_flicker")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two H×W masks (non-zero = lesion); 1 when both are empty."""
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} and {b.shape}")
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def flicker(masks: Sequence[np.ndarray]) -> float:
    """Mean ``1 − IoU`` of consecutive masks (T×H×W or a list); 0 for fewer than two frames."""
    if len(masks) < 2:
        return 0.0
    return float(np.mean([1.0 - iou(masks[t - 1], masks[t]) for t in range(1, len(masks))]))


def score_clip(preds: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> dict[str, float]:
    """Scores of one clip.

    Args:
        preds: T predicted H×W masks (non-zero = lesion).
        truths: T truth masks of the same sizes.

    Returns:
        ``jsc`` and ``dsc`` (means over frames), ``flicker`` of the predictions,
        ``truth_flicker``, ``excess_flicker`` (their difference) and ``frames``.
    """
    if len(preds) != len(truths):
        raise ValueError(f"{len(preds)} predictions for {len(truths)} truth masks")
    if not preds:
        raise ValueError("an empty clip has no scores")
    per_frame = [
        scores(confusion(np.asarray(p) > 0, np.asarray(t) > 0))
        for p, t in zip(preds, truths, strict=True)
    ]
    f_pred, f_truth = flicker(preds), flicker(truths)
    return {
        "jsc": float(np.mean([s["jsc"] for s in per_frame])),
        "dsc": float(np.mean([s["dsc"] for s in per_frame])),
        "flicker": f_pred,
        "truth_flicker": f_truth,
        "excess_flicker": f_pred - f_truth,
        "frames": float(len(preds)),
    }


def mean_rows(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean of each of ``CLIP_METRICS`` over clips (each clip weighs the same); ``clips`` counts."""
    if not rows:
        return {**dict.fromkeys(CLIP_METRICS, float("nan")), "clips": 0.0}
    out = {k: float(np.mean([r[k] for r in rows])) for k in CLIP_METRICS}
    out["clips"] = float(len(rows))
    return out


def flicker_reduction(smoothed: dict[str, float], raw: dict[str, float]) -> float:
    """Fraction of the raw excess flicker that smoothing removed (1: all of it; <0: worse).

    Where the raw predictions flicker no more than the truth there is nothing to remove: 0.
    """
    if raw["excess_flicker"] <= 0:
        return 0.0
    return 1.0 - smoothed["excess_flicker"] / raw["excess_flicker"]
