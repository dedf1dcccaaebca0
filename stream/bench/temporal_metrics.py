"""Temporal segmentation metrics: per-frame accuracy and frame-to-frame flicker of mask sequences.

Flicker is the mean of ``1 − IoU`` between consecutive masks. A lesion that moves makes even the
truth flicker, so the number that a smoother should cut is the *excess* flicker: that of the
predictions minus that of the truth over the same frames. Two empty masks agree perfectly
(IoU 1), as in ``slsnet.metrics``.

That difference assumes the prediction is about the truth's size: a stable mask much smaller
than the lesion, carried along by a fast pan, overlaps itself less from frame to frame than the
large truth does, and its motion alone counts as excess. Where the camera's motion is known
(synthetic sweeps), the *residual* flicker undoes it: each mask is compared with the one before
it moved to where this frame sees the same skin, so a mask that only moves scores 0.

The known motion also splits the excess itself in two. The *shape* part is the excess that the
predicted masks would show if each one were carried to the next frame exactly by the camera:
``moved_flicker(preds) − moved_flicker(truths)``. It depends on the masks' sizes and outlines
only, so no smoother that keeps them can remove it. The rest, the *unsteady* part, is what the
predictions change from frame to frame beyond the motion: the share of it that a smoother
removes is its ``unsteady_cut``.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from slsnet.metrics import confusion, scores

CLIP_METRICS = (
    "jsc",
    "dsc",
    "flicker",
    "truth_flicker",
    "excess_flicker",
    "residual_flicker",
    "truth_residual_flicker",
    "shape_excess",
    "unsteady_excess",
)


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


def frame_steps(views: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Camera motion between frames, from each frame's view (2×3, frame pixel → scene point).

    Returns:
        T − 1 2×3 affines: entry ``t − 1`` takes a pixel of frame ``t`` to the pixel of frame
        ``t − 1`` that shows the same scene point (a ``cv2.WARP_INVERSE_MAP`` matrix).
    """
    square = [np.vstack([np.asarray(v, np.float64), [0.0, 0.0, 1.0]]) for v in views]
    return [(np.linalg.inv(square[t - 1]) @ square[t])[:2] for t in range(1, len(square))]


def _carry(mask: np.ndarray, step: np.ndarray) -> np.ndarray:
    """``mask`` (non-zero = lesion) as uint8 {0, 1}, moved along ``step`` into the next frame.

    Pixels the previous frame did not see come out 0.
    """
    m = (np.asarray(mask) > 0).astype(np.uint8)
    h, w = m.shape
    return cv2.warpAffine(m, np.asarray(step, np.float64), (w, h),
                          flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderValue=0)


def _check_steps(masks: Sequence[np.ndarray], steps: Sequence[np.ndarray]) -> None:
    if len(steps) != len(masks) - 1:
        raise ValueError(f"{len(steps)} steps for {len(masks)} masks (need one fewer)")


def residual_flicker(masks: Sequence[np.ndarray], steps: Sequence[np.ndarray]) -> float:
    """Mean ``1 − IoU`` of each mask and the previous one moved along ``steps`` (frame_steps).

    Only the pixels that both frames see count (skin that enters the view has no past).
    """
    _check_steps(masks, steps)
    values = []
    for t in range(1, len(masks)):
        now = np.asarray(masks[t]) > 0
        before = _carry(masks[t - 1], steps[t - 1]) > 0
        seen = _carry(np.ones_like(now), steps[t - 1]) > 0
        values.append(1.0 - iou(before & seen, now & seen))
    return float(np.mean(values)) if values else 0.0


def moved_flicker(masks: Sequence[np.ndarray], steps: Sequence[np.ndarray]) -> float:
    """Mean ``1 − IoU`` of each mask and itself carried into the next frame along ``steps``.

    The flicker that the masks' shapes would show if each one moved exactly with the camera;
    skin that enters the view counts as not lesion, for predictions and truth alike.
    """
    _check_steps(masks, steps)
    values = [
        1.0 - iou(np.asarray(masks[t - 1]) > 0, _carry(masks[t - 1], steps[t - 1]))
        for t in range(1, len(masks))
    ]
    return float(np.mean(values)) if values else 0.0


def score_clip(
    preds: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    steps: Sequence[np.ndarray] | None = None,
) -> dict[str, float]:
    """Scores of one clip.

    Args:
        preds: T predicted H×W masks (non-zero = lesion).
        truths: T truth masks of the same sizes.
        steps: the camera's motion between frames (:func:`frame_steps`), where it is known.

    Returns:
        ``jsc`` and ``dsc`` (means over frames), ``flicker`` of the predictions,
        ``truth_flicker``, ``excess_flicker`` (their difference), ``residual_flicker`` and
        ``truth_residual_flicker``, the excess split into ``shape_excess`` and
        ``unsteady_excess`` (these four NaN without ``steps``) and ``frames``.
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
    nan = float("nan")
    shape = nan if steps is None else moved_flicker(preds, steps) - moved_flicker(truths, steps)
    return {
        "jsc": float(np.mean([s["jsc"] for s in per_frame])),
        "dsc": float(np.mean([s["dsc"] for s in per_frame])),
        "flicker": f_pred,
        "truth_flicker": f_truth,
        "excess_flicker": f_pred - f_truth,
        "residual_flicker": nan if steps is None else residual_flicker(preds, steps),
        "truth_residual_flicker": nan if steps is None else residual_flicker(truths, steps),
        "shape_excess": shape,
        "unsteady_excess": f_pred - f_truth - shape,
        "frames": float(len(preds)),
    }


def mean_rows(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean of each of ``CLIP_METRICS`` over clips (each clip weighs the same); ``clips`` counts."""
    if not rows:
        return {**dict.fromkeys(CLIP_METRICS, float("nan")), "clips": 0.0}
    out = {k: float(np.mean([r.get(k, np.nan) for r in rows])) for k in CLIP_METRICS}
    out["clips"] = float(len(rows))
    return out


def _share_removed(smoothed: dict[str, float], raw: dict[str, float], key: str) -> float:
    """1 − smoothed / raw of ``key``: 0 where raw has nothing to remove, NaN where unknown."""
    if not raw[key] > 0:
        return float("nan") if np.isnan(raw[key]) else 0.0
    return 1.0 - smoothed[key] / raw[key]


def flicker_reduction(smoothed: dict[str, float], raw: dict[str, float]) -> float:
    """Fraction of the raw excess flicker that smoothing removed (1: all of it; <0: worse).

    Where the raw predictions flicker no more than the truth there is nothing to remove: 0.
    """
    return _share_removed(smoothed, raw, "excess_flicker")


def unsteady_cut(smoothed: dict[str, float], raw: dict[str, float]) -> float:
    """Fraction of the raw unsteady excess that smoothing removed (NaN where it is unknown)."""
    return _share_removed(smoothed, raw, "unsteady_excess")
